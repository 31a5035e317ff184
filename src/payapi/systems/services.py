"""Scaling and restarting payapi's services (SAPI, EAPI, and the vault server).

The seed activates the DR region with ``kubectl scale deployment/payment-sapi
--replicas=3``; fencing a region that must stop writing is the same call with 0. One
interface, :class:`ServiceControl`, two implementations picked by ``[regions.NAME.SERVICE]
control``: ``local`` (a ``payapi serve`` process on this host, as the lab runs them) and
``kubernetes`` (the Deployment's scale subresource through the official client, imported
only when used). ``none`` means someone else scales: payapi refuses to pretend it did.
The same controls, configured in ``[eapi]``/``[sapi]``/``[vault]`` themselves
(:func:`listen_control`), restart a service that failed (``payapi recover component``).
"""

from __future__ import annotations

import importlib
import os
import signal
import time
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from payapi.core.errors import PayapiError
from payapi.core.settings import RegionServiceSettings, ServiceListen
from payapi.servers.procs import ServerError, pid_alive, read_pid
from payapi.servers.service import ServiceProcess

HEALTH_PATHS = {"sapi": "/api/internal-health", "eapi": "/api/health", "vault": "/health"}


class ServiceControlError(PayapiError):
    """A service could not be scaled; one line for the operator."""


class ServiceControl(Protocol):
    def scale(self, replicas: int, *, timeout: float = 60.0) -> None:
        """Set the number of running replicas and wait until they are ready (or gone)."""
        ...

    def running(self) -> int:
        """How many replicas run now."""
        ...

    def restart(self, *, timeout: float = 60.0) -> None:
        """Replace the running replicas with new ones (``kubectl rollout restart``) and
        wait until they are ready."""
        ...

    def describe(self) -> str:
        """What is controlled, in a few words (for a dry run)."""
        ...

    def kill(self) -> int:
        """Kill every replica at once, with no grace (a drill's failure: ``kill -9``,
        or pods deleted with a grace period of 0); how many were killed."""
        ...


class LocalServiceControl:
    """One ``payapi serve NAME`` process: replicas is 0 or 1."""

    def __init__(self, process: ServiceProcess) -> None:
        self.process = process

    def scale(self, replicas: int, *, timeout: float = 60.0) -> None:
        try:
            if replicas > 0:
                self.process.start(timeout=timeout)
            else:
                self.process.stop()
        except ServerError as exc:
            raise ServiceControlError(f"{self.process.name}: {exc}") from None

    def running(self) -> int:
        return 1 if self.process.is_running() else 0

    def restart(self, *, timeout: float = 60.0) -> None:
        """Stop the process (if its pid is alive) and start a new one."""
        self.scale(0, timeout=timeout)
        self.scale(1, timeout=timeout)

    def describe(self) -> str:
        p = self.process
        return f"the local {p.name} process (pid file {p.pidfile}, port {p.port})"

    def kill(self) -> int:
        pid = read_pid(self.process.pidfile)
        if pid is None or not pid_alive(pid):
            return 0
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return 0
        return 1


class KubernetesServiceControl:
    """A Deployment scaled through its scale subresource; ready when its ready replicas
    reach the target."""

    def __init__(self, namespace: str, deployment: str) -> None:
        try:
            k8s: Any = importlib.import_module("kubernetes")
        except ImportError:
            raise ServiceControlError(
                "control = kubernetes needs the official client (pip install kubernetes)"
            ) from None
        k8s.config.load_config()
        self._apps = k8s.client.AppsV1Api()
        self.namespace = namespace
        self.deployment = deployment

    def scale(self, replicas: int, *, timeout: float = 60.0) -> None:
        self._apps.patch_namespaced_deployment_scale(
            self.deployment, self.namespace, {"spec": {"replicas": replicas}}
        )
        deadline = time.monotonic() + timeout
        while self.running() != replicas:
            if time.monotonic() > deadline:
                raise ServiceControlError(
                    f"deployment {self.deployment}: {self.running()} of {replicas} ready "
                    f"after {timeout:.0f}s"
                )
            time.sleep(1.0)

    def running(self) -> int:
        status = self._apps.read_namespaced_deployment_status(self.deployment, self.namespace)
        return int(status.status.ready_replicas or 0)

    def restart(self, *, timeout: float = 60.0) -> None:
        from datetime import UTC, datetime

        current = self._apps.read_namespaced_deployment(self.deployment, self.namespace)
        replicas = int(current.spec.replicas or 0)
        stamp = datetime.now(UTC).isoformat()
        patch = {
            "spec": {
                "template": {
                    "metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": stamp}}
                }
            }
        }
        self._apps.patch_namespaced_deployment(self.deployment, self.namespace, patch)
        deadline = time.monotonic() + timeout
        time.sleep(1.0)  # let the controller start the rollout before counting ready pods
        while self.running() < replicas:
            if time.monotonic() > deadline:
                raise ServiceControlError(
                    f"deployment {self.deployment}: {self.running()} of {replicas} ready "
                    f"{timeout:.0f}s after the restart"
                )
            time.sleep(1.0)

    def describe(self) -> str:
        return f"deployment {self.namespace}/{self.deployment}"

    def kill(self) -> int:
        k8s: Any = importlib.import_module("kubernetes")
        core = k8s.client.CoreV1Api()
        current = self._apps.read_namespaced_deployment(self.deployment, self.namespace)
        labels = current.spec.selector.match_labels or {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        if not selector:
            raise ServiceControlError(f"deployment {self.deployment}: no label selector")
        pods = core.list_namespaced_pod(self.namespace, label_selector=selector).items
        for pod in pods:
            core.delete_namespaced_pod(pod.metadata.name, self.namespace, grace_period_seconds=0)
        return len(pods)


def service_control(name: str, conf: RegionServiceSettings) -> ServiceControl:
    """The control of service ``name`` (sapi, eapi) as configured for a region."""
    if conf.control == "kubernetes":
        return KubernetesServiceControl(conf.namespace, conf.deployment or f"payment-{name}")
    if conf.control == "local":
        missing = [k for k in ("url", "config_file", "pid_file") if getattr(conf, k) is None]
        if missing:
            raise ServiceControlError(
                f"{name}: control = local needs {', '.join(missing)} in its region's settings"
            )
        assert conf.url is not None and conf.config_file is not None
        assert conf.pid_file is not None
        port = urlsplit(conf.url).port
        if port is None:
            raise ServiceControlError(f"{name}: its url has no port")
        log = conf.log_file or Path(conf.pid_file).with_suffix(".log")
        return LocalServiceControl(
            ServiceProcess(
                name=name,
                config=Path(conf.config_file),
                port=port,
                health_url=conf.url.rstrip("/") + HEALTH_PATHS[name],
                pidfile=Path(conf.pid_file),
                logfile=Path(log),
            )
        )
    raise ServiceControlError(
        f"{name}: no control is configured for its region (control = local or kubernetes)"
    )


def listen_control(name: str, section: ServiceListen, config_file: Path | None) -> ServiceControl:
    """The control ``[NAME] control`` names for the service itself (vault, sapi, eapi);
    ``config_file`` is the config a local process runs with (the caller's own)."""
    url = section.url or (f"http://{section.host}:{section.port}" if section.port else None)
    conf = RegionServiceSettings(
        url=url,
        control=section.control,
        config_file=config_file,
        pid_file=section.pid_file,
        log_file=section.log_file,
        namespace=section.namespace,
        deployment=section.deployment,
    )
    if section.control == "none":
        raise ServiceControlError(
            f"{name}: no control is configured: set [{name}] control (local or kubernetes; "
            "the lab's config has control = local)"
        )
    return service_control(name, conf)
