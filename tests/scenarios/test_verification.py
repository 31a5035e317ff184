"""Recovery verification on the shared lab: `state document|compare`, `security check`,
`verify system` (the seed's "Recovery Verification" and `document-state.sh`)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.scenarios.conftest import LabHandle, run_cli


def _document(lab: LabHandle, path: Path) -> dict[str, object]:
    res = run_cli("state", "document", "--output", str(path), "--json", config=lab.config)
    printed = json.loads(res.stdout)
    written = json.loads(path.read_text())
    assert printed["document"] == written
    return written


def test_state_documents_of_an_unchanged_platform_agree(lab: LabHandle, tmp_path: Path) -> None:
    a = _document(lab, tmp_path / "a.json")
    b = _document(lab, tmp_path / "b.json")
    for key in ("taken_at", "payments", "vault", "redis", "components", "audit", "versions"):
        assert key in a
    assert all(c["healthy"] for c in a["components"].values())  # type: ignore[attr-defined]
    assert a["payments"] == b["payments"] and a["vault"] == b["vault"]
    res = run_cli("state", "compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--json")
    assert json.loads(res.stdout)["same"] is True


def test_one_payment_changes_the_count_and_the_checksum(lab: LabHandle, tmp_path: Path) -> None:
    before = _document(lab, tmp_path / "before.json")
    client = lab.create_client("state-pay")
    with lab.http() as http:
        r = http.post(
            "/api/v1/payments",
            headers=client.headers,
            json={"amount": "12.30", "currency": "USD", "reference": "STATE-1"},
        )
        assert r.status_code == 201, r.text
    after = _document(lab, tmp_path / "after.json")
    p0, p1 = before["payments"], after["payments"]
    assert p1["count"] == p0["count"] + 1  # type: ignore[index]
    assert p1["checksum"] != p0["checksum"]  # type: ignore[index]
    assert after["vault"]["variables"] == before["vault"]["variables"] + 4  # type: ignore[index]
    res = run_cli(
        "state",
        "compare",
        str(tmp_path / "before.json"),
        str(tmp_path / "after.json"),
        "--json",
        check=False,
    )
    assert res.returncode == 1, res.stderr
    paths = {d["path"] for d in json.loads(res.stdout)["differences"] if not d["allowed"]}
    assert {"payments.count", "payments.checksum", "vault.variables"} <= paths
