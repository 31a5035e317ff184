"""ServiceControl.kill(): what a drill outside the lab injects. Locally a kill -9 of the
pid in the pid file; on Kubernetes the Deployment's pods deleted with no grace period
(checked against a stand-in for the official client: no cluster here)."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from payapi.servers.service import ServiceProcess
from payapi.systems.services import KubernetesServiceControl, LocalServiceControl


def test_local_kill_is_a_kill_9_of_the_pid_file(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pidfile = tmp_path / "eapi.pid"
        pidfile.write_text(f"{proc.pid}\n")
        control = LocalServiceControl(
            ServiceProcess(
                name="eapi",
                config=tmp_path / "c.toml",
                port=1,
                health_url="http://127.0.0.1:1/",
                pidfile=pidfile,
                logfile=tmp_path / "eapi.log",
            )
        )
        assert control.kill() == 1
        assert proc.wait(timeout=10) == -9
        assert control.kill() == 0  # nothing left to kill
    finally:
        proc.kill()


def test_kubernetes_kill_deletes_the_deployments_pods_with_no_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deleted: list[tuple[str, str, int]] = []
    listed: list[str] = []

    class Apps:
        def read_namespaced_deployment(self, name: str, namespace: str) -> Any:
            labels = {"app": name, "tier": "api"}
            return SimpleNamespace(
                spec=SimpleNamespace(selector=SimpleNamespace(match_labels=labels))
            )

        def read_namespaced_deployment_status(self, name: str, namespace: str) -> Any:
            return SimpleNamespace(status=SimpleNamespace(ready_replicas=0))

    class Core:
        def list_namespaced_pod(self, namespace: str, label_selector: str) -> Any:
            listed.append(label_selector)
            pods = [SimpleNamespace(metadata=SimpleNamespace(name=f"eapi-{i}")) for i in (1, 2)]
            return SimpleNamespace(items=pods)

        def delete_namespaced_pod(
            self, name: str, namespace: str, *, grace_period_seconds: int
        ) -> None:
            deleted.append((name, namespace, grace_period_seconds))

    fake = types.ModuleType("kubernetes")
    fake.config = SimpleNamespace(load_config=lambda: None)  # type: ignore[attr-defined]
    fake.client = SimpleNamespace(AppsV1Api=Apps, CoreV1Api=Core)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "kubernetes", fake)
    control = KubernetesServiceControl("payment-system", "payment-eapi")
    assert control.kill() == 2
    assert listed == ["app=payment-eapi,tier=api"]
    assert deleted == [("eapi-1", "payment-system", 0), ("eapi-2", "payment-system", 0)]
