"""The platform as a client and an operator see it, on a real lab."""

from __future__ import annotations

import json
import threading
import time
from decimal import Decimal
from pathlib import Path

import httpx

from tests.scenarios.conftest import LabHandle, run_cli


def test_lab_status_contract(lab: LabHandle) -> None:
    res = run_cli("lab", "status", "--dir", str(lab.lab.dir), "--json")
    status = json.loads(res.stdout)
    assert set(status) >= {"config", "eapi", "sapi", "vault", "postgres", "redis"}
    assert status["eapi"].startswith("http://127.0.0.1:")
    assert status["sapi"].startswith("http://127.0.0.1:")
    assert set(status["vault"]) >= {"url", "account", "admin_login", "admin_api_key_file"}
    assert status["redis"].startswith("redis://127.0.0.1:")
    assert status["postgres"]["payment_dsn"].startswith("postgresql://")
    assert all(v == "running" for v in status["components"].values())
    assert Path(status["config"]).is_file()


def test_seed_functional_verification_curls(lab: LabHandle) -> None:
    """Section "Recovery Verification", step 2, against the lab."""
    client = lab.create_client("seed-curl")
    with lab.http() as http:
        r = http.post("/api/v1/authenticate", headers=client.headers)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["token_type"] == "Bearer" and body["expires_in"] > 0
        assert len(body["access_token"]) >= 43  # 256 bits, URL-safe base64

        r = http.post(
            "/api/v1/payments",
            headers={**client.headers, "Content-Type": "application/json"},
            content='{"amount": 100.00, "currency": "USD", "reference": "TEST-12345"}',
        )
        assert r.status_code == 201, r.text
        p = r.json()
        assert set(p) >= {"id", "amount", "currency", "reference", "status", "created_at"}
        assert p["amount"] == "100.00" and Decimal(p["amount"]) == Decimal("100")
        assert p["currency"] == "USD" and p["reference"] == "TEST-12345"


def test_token_and_ownership(lab: LabHandle) -> None:
    a = lab.create_client("owner-a")
    b = lab.create_client("owner-b")
    with lab.http() as http:
        token = http.post("/api/v1/authenticate", headers=a.headers).json()["access_token"]
        bearer = {"Authorization": f"Bearer {token}"}
        r = http.post(
            "/api/v1/payments",
            headers=bearer,
            json={"amount": "12.34", "currency": "EUR", "reference": "A-1"},
        )
        assert r.status_code == 201
        pid = r.json()["id"]
        assert http.get(f"/api/v1/payments/{pid}", headers=bearer).json()["id"] == pid
        other = http.get(f"/api/v1/payments/{pid}", headers=b.headers)
        assert other.status_code == 404
        assert other.json()["error"]["request_id"] == other.headers["x-request-id"]
        bad = http.get(f"/api/v1/payments/{pid}", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401 and bad.json()["error"]["type"] == "authentication_error"


def test_error_envelopes(lab: LabHandle) -> None:
    c = lab.create_client("envelopes")
    with lab.http() as http:
        for content, status in (
            ("{not json", 400),
            ('{"amount": -1, "currency": "USD", "reference": "X"}', 422),
            ('{"amount": 1.001, "currency": "USD", "reference": "X"}', 422),
            ('{"amount": 1, "currency": "XXY", "reference": "X"}', 422),
            ('{"amount": 1, "currency": "USD", "reference": "bad ref!"}', 422),
        ):
            r = http.post(
                "/api/v1/payments",
                headers={**c.headers, "Content-Type": "application/json"},
                content=content,
            )
            assert r.status_code == status, (content, r.text)
            err = r.json()["error"]
            assert set(err) == {"type", "code", "message", "param", "request_id"}
        r = http.post("/api/v1/payments", json={"amount": 1, "currency": "USD", "reference": "X"})
        assert r.status_code == 401


def test_token_revocation_and_security_events_are_audited(lab: LabHandle) -> None:
    c = lab.create_client("audited")
    with lab.http() as http:
        token = http.post("/api/v1/authenticate", headers=c.headers).json()["access_token"]
        bearer = {"Authorization": f"Bearer {token}"}
        assert http.post("/api/v1/revoke", headers=bearer).json() == {"revoked": True}
        assert http.get("/api/v1/payments/x", headers=bearer).status_code == 401
        bad = {"X-Client-ID": c.client_id, "X-Client-Secret": "not-the-secret"}
        assert http.post("/api/v1/authenticate", headers=bad).status_code == 401
    events: list[dict[str, object]] = []
    for _ in range(50):  # EAPI sends audit events off the request path
        events = json.loads(
            run_cli("audit", "list", "--json", "--limit", "200", config=lab.config).stdout
        )
        types = {(e["type"], e["actor"]) for e in events}
        if ("token.revoked", c.client_id) in types and ("auth.failure", c.client_id) in types:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"audit events missing: {events[-5:]}")
    assert json.loads(run_cli("audit", "verify", "--json", config=lab.config).stdout)["ok"]
    assert "not-the-secret" not in json.dumps(events)


def test_idempotent_replay_through_eapi(lab: LabHandle) -> None:
    c = lab.create_client("idem")
    body = {"amount": "5.00", "currency": "USD", "reference": "IDEM-1"}
    with lab.http() as http:
        h = {**c.headers, "Idempotency-Key": "order-42"}
        first = http.post("/api/v1/payments", headers=h, json=body)
        again = http.post("/api/v1/payments", headers=h, json=body)
        assert first.status_code == 201 and again.status_code == 200
        assert first.json() == again.json()
        other = http.post("/api/v1/payments", headers=h, json={**body, "amount": "6.00"})
        assert other.status_code == 409


def test_graceful_rotation_keeps_old_secret_for_the_grace(lab: LabHandle) -> None:
    c = lab.create_client("graceful")
    res = run_cli(
        "credentials",
        "rotate",
        "--client",
        "graceful",
        "--grace",
        "1h",
        "--json",
        config=lab.config,
    )
    new_secret = json.loads(res.stdout)["client_secret"]
    assert new_secret != c.client_secret
    with lab.http() as http:
        old = http.post("/api/v1/authenticate", headers=c.headers)
        new = http.post(
            "/api/v1/authenticate",
            headers={"X-Client-ID": c.client_id, "X-Client-Secret": new_secret},
        )
        assert old.status_code == 200 and new.status_code == 200


def test_emergency_rotation_kills_old_tokens_and_secrets_at_once(lab: LabHandle) -> None:
    clients = [lab.create_client(f"breach-{i}") for i in range(3)]
    with lab.http() as http:
        tokens = [
            http.post("/api/v1/authenticate", headers=c.headers).json()["access_token"]
            for c in clients
        ]
        # Warm the verification cache so that a stale cache would be caught too.
        for c in clients:
            assert (
                http.post(
                    "/api/v1/payments",
                    headers=c.headers,
                    json={"amount": 1, "currency": "USD", "reference": "WARM"},
                ).status_code
                == 201
            )
        refused = run_cli(
            "credentials",
            "rotate",
            "emergency",
            "--all-clients",
            "--reason",
            "x",
            config=lab.config,
            check=False,
        )
        assert refused.returncode != 0 and "--force" in refused.stderr
        res = run_cli(
            "credentials",
            "rotate",
            "emergency",
            "--all-clients",
            "--force",
            "--reason",
            "Security breach recovery",
            "--json",
            config=lab.config,
        )
        out = json.loads(res.stdout)
        assert out["rotated"] >= 3 and out["redis_cleared"] and out["audited"]
        for c, t in zip(clients, tokens, strict=True):
            assert http.post("/api/v1/authenticate", headers=c.headers).status_code == 401
            r = http.post(
                "/api/v1/payments",
                headers={"Authorization": f"Bearer {t}"},
                json={"amount": 1, "currency": "USD", "reference": "AFTER"},
            )
            assert r.status_code == 401
            r = http.post(
                "/api/v1/payments",
                headers=c.headers,
                json={"amount": 1, "currency": "USD", "reference": "AFTER"},
            )
            assert r.status_code == 401
    verify = run_cli("credentials", "verify", "--all-clients", "--json", config=lab.config)
    report = json.loads(verify.stdout)
    assert report["ok"] and len(report["clients"]) >= 3
    audit = run_cli("audit", "verify", "--json", config=lab.config)
    assert json.loads(audit.stdout)["ok"]


def _traffic(
    lab: LabHandle, headers: dict[str, str], stop: threading.Event, results: list[int]
) -> None:
    with lab.http() as http:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                r = http.post(
                    "/api/v1/payments",
                    headers=headers,
                    json={"amount": "1.00", "currency": "USD", "reference": f"FLOW-{i}"},
                )
                results.append(r.status_code)
            except httpx.HTTPError:
                results.append(0)
            time.sleep(0.02)


def test_redis_down_mid_traffic_payments_continue(lab: LabHandle) -> None:
    c = lab.create_client("redis-outage")
    with lab.http() as http:
        token = http.post("/api/v1/authenticate", headers=c.headers).json()["access_token"]
    stop, results = threading.Event(), []
    t = threading.Thread(target=_traffic, args=(lab, c.headers, stop, results))
    t.start()
    try:
        time.sleep(0.5)
        lab.lab.stop("redis")
        before = len(results)
        time.sleep(1.5)
        during = results[before:]
        with lab.http() as http:
            r = http.post(
                "/api/v1/payments",
                headers={"Authorization": f"Bearer {token}"},
                json={"amount": 1, "currency": "USD", "reference": "TOK"},
            )
            assert r.status_code == 503, r.text  # never 401 for a valid token
            assert r.json()["error"]["code"] == "dependency_unavailable"
            assert http.get("/api/health").json()["checks"]["redis"] == "down"
    finally:
        stop.set()
        t.join()
        lab.ensure_running()
    assert during and all(s == 201 for s in during), during
    assert all(s == 201 for s in results), results


def test_vault_down_cached_verifications_keep_working(lab: LabHandle) -> None:
    c = lab.create_client("vault-outage")
    stranger = lab.create_client("vault-outage-2")
    body = {"amount": 1, "currency": "USD", "reference": "V"}
    with lab.http() as http:
        assert http.post("/api/v1/payments", headers=c.headers, json=body).status_code == 201
        lab.lab.stop("vault")
        try:
            assert http.post("/api/v1/payments", headers=c.headers, json=body).status_code == 201
            # Never verified before: cannot be decided without the vault → 503, not 401.
            r = http.post("/api/v1/payments", headers=stranger.headers, json=body)
            assert r.status_code == 503
            lab.lab.stop("redis")
            r = http.post("/api/v1/payments", headers=c.headers, json=body)
            assert r.status_code == 503
            assert set(r.json()["error"]) == {"type", "code", "message", "param", "request_id"}
            assert http.get("/api/health").status_code == 503
        finally:
            lab.ensure_running()
        assert http.post("/api/v1/payments", headers=stranger.headers, json=body).status_code == 201


def test_no_secret_in_any_log(lab: LabHandle) -> None:
    c = lab.create_client("log-check")
    with lab.http() as http:
        token = http.post("/api/v1/authenticate", headers=c.headers).json()["access_token"]
        http.post(
            "/api/v1/payments",
            headers={**c.headers, "X-Client-Secret": "wrong-secret-xyz"},
            json={"amount": 1, "currency": "USD", "reference": "L"},
        )
        http.post(
            "/api/v1/payments",
            headers={"Authorization": f"Bearer {token}"},
            json={"amount": 1, "currency": "USD", "reference": "L"},
        )
    secrets = [c.client_secret, token, "wrong-secret-xyz"]
    for key_file in (lab.lab.secrets_dir).iterdir():
        if key_file.suffix in (".api_key", ".key"):
            secrets.append(key_file.read_text().strip())
    logs = [*list((lab.lab.dir / "logs").glob("*.log")), lab.lab.dir / "postgres" / "postgres.log"]
    logs.append(lab.config)
    for path in logs:
        text = path.read_text(errors="replace")
        for s in secrets:
            assert s not in text, f"a secret leaked into {path.name}"
