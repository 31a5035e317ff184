"""``payapi retention lifecycle`` against a real S3-compatible server (moto): the rules the
plan implies are put on the bucket, read back unchanged, re-applied without a write, and
the bucket's other rules (another repository's, another team's) are kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from payapi.backup.crypto import load_repository_key, write_key_file
from payapi.backup.lifecycle import (
    apply_rules,
    current_rules,
    diff_rules,
    lifecycle_plan,
    normalize,
)
from payapi.backup.repository import Repository
from payapi.core.plan import load_plan
from payapi.systems.objectstore import open_store
from payapi.systems.objectstore.s3 import S3Store
from tests.integration.moto_s3 import moto_s3

BUCKET = "payapi-lifecycle"
PLAN = load_plan()


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_s3(tmp_path_factory.mktemp("moto"), (BUCKET,)) as url:
        yield url


@pytest.fixture
def bucket(endpoint: str) -> Iterator[Any]:
    """A clean lifecycle configuration for each test (the bucket is shared)."""
    client = boto3.client("s3", endpoint_url=endpoint)
    client.delete_bucket_lifecycle(Bucket=BUCKET)
    yield client
    client.close()


def _store(endpoint: str, prefix: str) -> S3Store:
    store = open_store(f"s3://{BUCKET}/{prefix}", endpoint_url=endpoint)
    assert isinstance(store, S3Store)
    return store


def test_apply_read_back_and_reapply(endpoint: str, bucket: Any) -> None:
    store = _store(endpoint, "prod")
    planned = lifecycle_plan(PLAN, store.prefix).rules
    assert current_rules(store) == []
    first = apply_rules(store, planned)
    assert sorted(first.added) == sorted(r["ID"] for r in planned) and not first.in_sync
    back = current_rules(store)
    assert sorted(map(json.dumps, map(normalize, back))) == sorted(
        map(json.dumps, map(normalize, planned))
    )
    raw = bucket.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]
    data = next(r for r in raw if r["ID"] == "payapi:prod/:database/full:data")
    assert [t["StorageClass"] for t in data["Transitions"]] == ["STANDARD_IA", "GLACIER_IR"]

    again = apply_rules(store, planned)  # idempotent: nothing differs, nothing is written
    assert again.in_sync and sorted(again.unchanged) == sorted(r["ID"] for r in planned)

    # A wider margin changes the expiring rules, and only those.
    wider = lifecycle_plan(PLAN, store.prefix, margin_days=365).rules
    diff = apply_rules(store, wider)
    expiring = {r["ID"] for r in wider if "Days" in r.get("Expiration", {})}
    assert set(diff.changed) == expiring and diff.added == diff.removed == []
    assert diff_rules(current_rules(store), wider, store.prefix).in_sync
    store.close()


def test_other_rules_of_the_bucket_are_kept(endpoint: str, bucket: Any) -> None:
    foreign = {"ID": "team-logs", "Status": "Enabled", "Filter": {"Prefix": "logs/"},
               "Expiration": {"Days": 10}}  # fmt: skip
    bucket.put_bucket_lifecycle_configuration(
        Bucket=BUCKET, LifecycleConfiguration={"Rules": [foreign]}
    )
    prod, dr = _store(endpoint, "prod"), _store(endpoint, "dr/eu-west-2")
    apply_rules(prod, lifecycle_plan(PLAN, prod.prefix).rules)
    diff = apply_rules(dr, lifecycle_plan(PLAN, dr.prefix).rules)
    assert "team-logs" in diff.foreign and diff.overlapping == []
    ids = {r["ID"] for r in current_rules(prod)}
    assert "team-logs" in ids
    assert any(i.startswith("payapi:prod/:") for i in ids)
    assert any(i.startswith("payapi:dr/eu-west-2/:") for i in ids)
    # Re-planning one repository with fewer rules removes only its own stale rules.
    fewer = [r for r in lifecycle_plan(PLAN, dr.prefix).rules if "redis" not in r["ID"]]
    diff = apply_rules(dr, fewer)
    assert diff.removed and all(i.startswith("payapi:dr/eu-west-2/:redis") for i in diff.removed)
    after = {r["ID"] for r in current_rules(prod)}
    assert after == ids - set(diff.removed)
    prod.close()
    dr.close()


# --- the CLI -----------------------------------------------------------------------------


def _config(tmp: Path, endpoint: str) -> Path:
    key_file = tmp / "k"
    key = write_key_file(key_file)
    url = f"s3://{BUCKET}/cli-{uuid.uuid4().hex[:8]}"
    with Repository.open(url, key, s3_endpoint_url=endpoint) as repo:
        repo.init()
    (tmp / "dr").mkdir()
    with Repository.open(f"file://{tmp / 'dr'}", load_repository_key(key_file)) as repo:
        repo.init()
    config = tmp / "payapi.toml"
    config.write_text(
        f'[backup]\nrepository = "{url}"\nkey_file = "{key_file}"\n'
        f's3_endpoint_url = "{endpoint}"\n\n'
        f'[backup.secondary.folder]\nurl = "file://{tmp / "dr"}"\n\n'
        f'[backup.secondary.bucket]\nurl = "s3://{BUCKET}/cli-dr-{uuid.uuid4().hex[:8]}"\n'
        f's3_endpoint_url = "{endpoint}"\n'
    )
    return config


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "payapi", "--config", str(config), "retention", "lifecycle",
         *args],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip


def test_cli_shows_applies_and_is_idempotent(endpoint: str, bucket: Any, tmp_path: Path) -> None:
    config = _config(tmp_path, endpoint)
    shown = _cli(config, "--json")
    assert shown.returncode == 0, shown.stderr
    out = json.loads(shown.stdout)
    assert out["s3"] and not out["applied"] and out["bucket"] == BUCKET
    assert not out["diff"]["in_sync"] and len(out["diff"]["added"]) == len(out["rules"])
    assert current_rules(_store(endpoint, out["prefix"])) == []  # showing changes nothing

    human = _cli(config)
    assert human.returncode == 0 and "run with --apply" in human.stdout
    assert "database/full" in human.stdout and "GLACIER_IR at 97 d" in human.stdout

    applied = json.loads(_cli(config, "--apply", "--json").stdout)
    assert applied["applied"] and len(applied["diff"]["added"]) == len(out["rules"])
    again = _cli(config, "--apply")
    assert again.returncode == 0 and "is in sync" in again.stdout

    # A secondary in another bucket prefix gets its own rules beside the primary's.
    dr = json.loads(_cli(config, "--repository", "bucket", "--apply", "--json").stdout)
    assert dr["applied"] and dr["prefix"] != out["prefix"]
    assert set(dr["diff"]["foreign"]) >= set(out["diff"]["added"])


def test_cli_on_a_folder_has_nothing_to_do(endpoint: str, tmp_path: Path) -> None:
    config = _config(tmp_path, endpoint)
    res = _cli(config, "--repository", "folder", "--apply")
    assert res.returncode == 0
    assert "lifecycle rules apply to S3 repositories only" in res.stdout
    out = json.loads(_cli(config, "--repository", "folder", "--json").stdout)
    assert out == {"repository": f"file://{tmp_path / 'dr'}", "s3": False, "applied": False,
                   "rules": []}  # fmt: skip
    bad = _cli(config, "--repository", "nope")  # a typo never opens a folder called so
    assert bad.returncode == 2 and "no backup repository named 'nope'" in bad.stderr
