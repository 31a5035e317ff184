"""deploy/kubernetes/cronjobs.yaml runs exactly the schedule `payapi schedule run` runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from payapi.core.plan import load_plan
from payapi.ops.schedule import jobs_from_plan

MANIFEST = Path(__file__).parents[2] / "deploy" / "kubernetes" / "cronjobs.yaml"
CONFIG = ["--config", "/etc/payapi/config/payapi.toml"]


def cronjobs() -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    assert all(d["kind"] == "CronJob" and d["apiVersion"] == "batch/v1" for d in docs)
    return {d["metadata"]["labels"]["payapi/job"]: d for d in docs}


def container(doc: dict[str, Any]) -> dict[str, Any]:
    containers = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]  # type: ignore[no-any-return]


def test_every_scheduled_job_is_a_cronjob_with_the_same_slot_and_command() -> None:
    schedule = jobs_from_plan(load_plan())
    found = cronjobs()
    for job in schedule.jobs:
        assert job.name in found, f"no CronJob for {job.name}"
        doc = found[job.name]
        assert doc["spec"]["schedule"] == job.cron, job.name
        assert doc["spec"]["timeZone"] == "Etc/UTC"
        assert doc["spec"]["concurrencyPolicy"] == "Forbid"
        c = container(doc)
        assert c["command"] == ["payapi"]
        assert c["args"] == [*CONFIG, *job.args], job.name
    extra = set(found) - {j.name for j in schedule.jobs}
    assert extra == {"rpo-check"}
    assert container(found["rpo-check"])["args"] == [*CONFIG, "plan", "check", "--json"]


def test_secrets_are_mounted_by_reference_never_inlined() -> None:
    text = MANIFEST.read_text()
    assert "kind: Secret" not in text
    assert "stringData" not in text
    for doc in cronjobs().values():
        pod = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["config"]["secret"]["secretName"] == "payapi-config"
        assert volumes["backup-key"]["secret"]["secretName"] == "payapi-backup-key"
        c = container(doc)
        # Plain values are paths and log levels only; the key is a mounted file.
        plain = {e["name"] for e in c.get("env", []) if "value" in e}
        assert plain <= {"PAYAPI_BACKUP__KEY_FILE", "PAYAPI_BACKUP__WORK_DIR", "PAYAPI_LOG_LEVEL"}
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert "REPLACE_WITH_VERSION" in c["image"]  # a placeholder, not a real image
