"""Redis backup and restore on the whole lab: real EAPI tokens, a revocation after the
snapshot, revocations read back from the audit chain."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from pathlib import Path

from payapi.backup.crypto import generate_key
from payapi.backup.redis_backup import run_redis_backup
from payapi.backup.redis_restore import Revocations, restore_redis, revocations_from_audit
from payapi.backup.repository import Repository
from payapi.core.settings import load_settings
from payapi.systems.redis import redis_control
from tests.scenarios.conftest import LabHandle, run_cli


def _wait_audited(lab: LabHandle, type_: str, actor: str) -> None:
    for _ in range(100):  # EAPI sends audit events off the request path
        events = json.loads(
            run_cli("audit", "list", "--json", "--limit", "200", config=lab.config).stdout
        )
        if any(e["type"] == type_ and e["actor"] == actor for e in events):
            return
        time.sleep(0.1)
    raise AssertionError(f"no {type_} event for {actor}")


def test_restore_in_the_lab_keeps_revoked_tokens_revoked(lab: LabHandle, outside_tmp: Path) -> None:
    settings = load_settings(lab.config)
    alice = lab.create_client("redis-restore-alice")
    bob = lab.create_client("redis-restore-bob")
    repo = Repository.open(f"file://{outside_tmp / 'repo'}", generate_key())
    repo.init()
    try:
        with lab.http() as http:
            token_a = http.post("/api/v1/authenticate", headers=alice.headers).json()[
                "access_token"
            ]
            token_b = http.post("/api/v1/authenticate", headers=bob.headers).json()["access_token"]
            info = run_redis_backup(repo, settings.redis)
            assert info.meta["key_classes"]["tokens"] >= 2
            # After the snapshot, alice logs out.
            bearer_a = {"Authorization": f"Bearer {token_a}"}
            assert http.post("/api/v1/revoke", headers=bearer_a).json() == {"revoked": True}
        _wait_audited(lab, "token.revoked", alice.client_id)

        def from_audit(since: datetime) -> Revocations:
            return asyncio.run(revocations_from_audit(settings.postgres.payment_dsn, since))

        result = restore_redis(
            repo, settings.redis, redis_control(settings.redis), revocations=from_audit
        )
        assert result.verified and result.tokens == "partially dropped"
        assert result.dropped["tokens"] >= 1
        assert lab.lab.running("redis")

        payment = {"amount": "1.00", "currency": "USD", "reference": "after-restore"}
        with lab.http() as http:
            # EAPI's breaker skips Redis for a moment after the restart failed its calls:
            # until then a token cannot be checked, which is a 503, never a wrong answer.
            deadline = time.monotonic() + 20
            while True:
                r = http.post("/api/v1/payments", headers=bearer_a, json=payment)
                if r.status_code != 503 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert r.status_code == 401, r.text  # revoked after the snapshot: stays revoked
            bearer_b = {"Authorization": f"Bearer {token_b}"}
            r = http.post("/api/v1/payments", headers=bearer_b, json=payment)
            assert r.status_code == 201, r.text  # bob's token came back with the snapshot
            r = http.post("/api/v1/payments", headers=alice.headers, json=payment)
            assert r.status_code == 201, r.text  # alice re-authenticates with her secret
            assert http.get("/api/health").json()["checks"]["redis"] == "ok"
    finally:
        repo.close()
        lab.ensure_running()
