"""The S3 lifecycle rules the plan implies (pure: ``payapi.backup.lifecycle``), and the
series tag every stored object carries (``payapi.backup.repository.object_tags``)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from payapi.backup.lifecycle import (
    ABORT_MULTIPART_DAYS,
    DATA_AFTER_MANIFEST_DAYS,
    DEFAULT_MARGIN_DAYS,
    diff_rules,
    lifecycle_plan,
    normalize,
    rule_prefix,
    rules_from_plan,
)
from payapi.backup.repository import SERIES_TAG, object_tags
from payapi.core.plan import Plan, default_plan_text, load_plan, parse_plan

PLAN = load_plan()
SEVEN_YEARS = 2557  # 7 * 365.25 days, rounded up


def _by_id(rules: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["ID"]: r for r in rules}


def _plan(old: str, new: str) -> Plan:
    text = default_plan_text()
    assert old in text
    return parse_plan(text.replace(old, new))


def test_the_packaged_plan() -> None:
    lp = lifecycle_plan(PLAN, "backups/")
    series = {s.series: s for s in lp.series}
    assert list(series) == [
        "vault/full",
        "vault/incremental",
        "database/full",
        "database/wal",
        "redis/snapshot",
        "configuration/git",
    ]
    # Full backups: the window and the GFS tiers; the longest tier decides.
    assert series["database/full"].keep_days == SEVEN_YEARS
    assert series["vault/full"].keep_days == SEVEN_YEARS
    # Kept backups keep their WAL ranges: WAL lives as long as the longest database backup.
    assert series["database/wal"].keep_days == SEVEN_YEARS
    assert series["vault/incremental"].keep_days == 7
    assert series["redis/snapshot"].keep_days == 7
    assert series["configuration/git"].keep_days is None  # indefinite: never expires
    # Colder storage once only the longer tiers' backups remain (daily 30 d, weekly 90 d).
    moves = ((37, "STANDARD_IA"), (97, "GLACIER_IR"))
    for name in ("database/full", "vault/full", "database/wal", "configuration/git"):
        assert series[name].transitions == moves, name
    assert series["redis/snapshot"].transitions == ()  # gone long before: stays hot
    assert any("kubernetes/export: not stored in the backup repository" in n for n in lp.notes)
    assert any("container-images/registry" in n for n in lp.notes)

    rules = _by_id(lp.rules)
    assert len(rules) == len(lp.rules)  # unique IDs
    assert all(rid.startswith("payapi:backups/:") for rid in rules)
    data = rules["payapi:backups/:database/full:data"]
    assert data["Filter"] == {
        "And": {"Prefix": "backups/data/", "Tags": [{"Key": SERIES_TAG, "Value": "database/full"}]}
    }
    assert data["Transitions"] == [
        {"Days": 37, "StorageClass": "STANDARD_IA"},
        {"Days": 97, "StorageClass": "GLACIER_IR"},
    ]
    expires = SEVEN_YEARS + DEFAULT_MARGIN_DAYS
    assert data["Expiration"] == {"Days": expires + DATA_AFTER_MANIFEST_DAYS}
    assert rules["payapi:backups/:database/full:manifests"]["Expiration"] == {"Days": expires}
    assert rules["payapi:backups/:database/full:verified"]["Expiration"] == {"Days": expires}
    assert "Transitions" not in rules["payapi:backups/:database/full:manifests"]
    wal = rules["payapi:backups/:database/wal:wal"]
    assert wal["Filter"]["And"]["Prefix"] == "backups/wal/"
    assert wal["Expiration"] == {"Days": expires + DATA_AFTER_MANIFEST_DAYS}
    assert rules["payapi:backups/:database/wal:wal-index"]["Expiration"] == {"Days": expires}
    assert rules["payapi:backups/:redis/snapshot:data"] == {
        "ID": "payapi:backups/:redis/snapshot:data",
        "Status": "Enabled",
        "Filter": {
            "And": {
                "Prefix": "backups/data/",
                "Tags": [{"Key": SERIES_TAG, "Value": "redis/snapshot"}],
            }
        },
        "Expiration": {"Days": 7 + DEFAULT_MARGIN_DAYS + DATA_AFTER_MANIFEST_DAYS},
    }
    # The configuration is kept forever: moved to colder storage, never expired.
    config = rules["payapi:backups/:configuration/git:data"]
    assert "Expiration" not in config and config["Transitions"]
    assert "payapi:backups/:configuration/git:manifests" not in rules
    assert rules["payapi:backups/:housekeeping"] == {
        "ID": "payapi:backups/:housekeeping",
        "Status": "Enabled",
        "Filter": {"Prefix": "backups/"},
        "Expiration": {"ExpiredObjectDeleteMarker": True},
        "NoncurrentVersionExpiration": {"NoncurrentDays": 30},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": ABORT_MULTIPART_DAYS},
    }


def test_nothing_expires_before_retention_lets_it_go_and_manifests_go_first() -> None:
    for margin in (0, 30, 90):
        lp = lifecycle_plan(PLAN, "", margin_days=margin)
        keep = {s.series: s.keep_days for s in lp.series}
        for rule in lp.rules:
            days = rule.get("Expiration", {}).get("Days")
            if days is None:
                continue
            series = rule["Filter"]["And"]["Tags"][0]["Value"]
            assert keep[series] is not None and days >= keep[series] + margin
            part = rule["ID"].rsplit(":", 1)[1]
            if part in ("data", "wal"):
                first = "wal-index" if part == "wal" else "manifests"
                small = next(
                    r["Expiration"]["Days"]
                    for r in lp.rules
                    if r["ID"].endswith(f":{first}")
                    and r["Filter"]["And"]["Tags"][0]["Value"] == series
                )
                assert days > small  # the manifest (index entry) expires before the data


def test_s3_constraints_on_transitions() -> None:
    # STANDARD_IA not before 30 days; GLACIER_IR at least 30 days after STANDARD_IA.
    short = _plan("  - name: daily\n    keep: 30d", "  - name: daily\n    keep: 7d")
    lp = lifecycle_plan(short)
    full = next(s for s in lp.series if s.series == "database/full")
    assert full.transitions == ((30, "STANDARD_IA"), (97, "GLACIER_IR"))
    close = _plan("  - name: weekly\n    keep: 90d", "  - name: weekly\n    keep: 40d")
    full = next(s for s in lifecycle_plan(close).series if s.series == "database/full")
    assert full.transitions == ((37, "STANDARD_IA"), (67, "GLACIER_IR"))
    for rule in rules_from_plan(close):
        days = [t["Days"] for t in rule.get("Transitions", [])]
        assert days == sorted(days) and all(d >= 30 for d in days)


def test_a_series_kept_forever_keeps_its_wal_forever() -> None:
    plan = _plan(
        "  - component: database\n    type: full\n    description: Full backup\n"
        "    frequency: daily\n    retention: 30d",
        "  - component: database\n    type: full\n    description: Full backup\n"
        "    frequency: daily\n    retention: indefinite",
    )
    series = {s.series: s for s in lifecycle_plan(plan).series}
    assert series["database/full"].keep_days is None
    assert series["database/wal"].keep_days is None
    ids = {r["ID"] for r in rules_from_plan(plan)}
    assert "payapi:/:database/wal:wal-index" not in ids  # nothing to expire
    assert "payapi:/:database/wal:wal" in ids  # still moved to colder storage


def test_without_tiers_a_full_backup_keeps_its_window() -> None:
    text = default_plan_text()
    start = text.index("retention_tiers:")
    end = text.index("\n\n", start)
    plan = parse_plan(text[:start] + "retention_tiers: []" + text[end:])
    series = {s.series: s for s in lifecycle_plan(plan).series}
    assert series["database/full"].keep_days == 30
    assert series["database/full"].transitions == ()


def test_prefixes_and_margins() -> None:
    assert rule_prefix("") == "payapi:/:"
    assert lifecycle_plan(PLAN, "a/b").prefix == "a/b/"
    root = _by_id(rules_from_plan(PLAN, ""))
    assert root["payapi:/:housekeeping"]["Filter"] == {"Prefix": ""}
    assert root["payapi:/:redis/snapshot:manifests"]["Filter"]["And"]["Prefix"] == "manifests/"
    zero = _by_id(rules_from_plan(PLAN, "", margin_days=0))
    assert zero["payapi:/:redis/snapshot:manifests"]["Expiration"] == {"Days": 7}
    with pytest.raises(ValueError, match="margin"):
        lifecycle_plan(PLAN, margin_days=-1)
    # IDs are valid S3 rule IDs (<= 255 characters).
    assert all(len(r["ID"]) <= 255 for r in rules_from_plan(PLAN, "x" * 100 + "/"))


def test_diff_keeps_foreign_rules_and_names_changes() -> None:
    planned = rules_from_plan(PLAN, "repo/")
    foreign = {"ID": "team-logs", "Status": "Enabled", "Filter": {"Prefix": "logs/"},
               "Expiration": {"Days": 10}}  # fmt: skip
    wide = {"ID": "everything", "Status": "Enabled", "Filter": {"Prefix": ""},
            "Expiration": {"Days": 3650}}  # fmt: skip
    other_repo = rules_from_plan(PLAN, "other/")
    stale = {**planned[0], "Expiration": {"Days": 1}}
    gone = {"ID": "payapi:repo/:old/series:data", "Status": "Enabled",
            "Filter": {"Prefix": "repo/data/"}, "Expiration": {"Days": 5}}  # fmt: skip
    current = [foreign, wide, *other_repo, stale, *planned[1:], gone]
    diff = diff_rules(current, planned, "repo/")
    assert diff.changed == [planned[0]["ID"]]
    assert diff.removed == ["payapi:repo/:old/series:data"]
    assert diff.added == []
    assert len(diff.unchanged) == len(planned) - 1
    assert set(diff.foreign) == {"team-logs", "everything", *(r["ID"] for r in other_repo)}
    assert diff.overlapping == ["everything"]  # covers repo/; logs/ and other/ do not
    assert not diff.in_sync
    assert diff_rules(planned, planned, "repo/").in_sync


def test_normalize_reads_rules_as_s3_echoes_them() -> None:
    ours = {"ID": "x", "Status": "Enabled", "Filter": {"Prefix": "p/"},
            "Transitions": [{"Days": 97, "StorageClass": "GLACIER_IR"},
                            {"Days": 37, "StorageClass": "STANDARD_IA"}]}  # fmt: skip
    echoed = {**ours, "Transitions": list(reversed(ours["Transitions"])), "Expiration": None}
    assert normalize(echoed) == normalize(ours)
    legacy = {"ID": "y", "Status": "Enabled", "Prefix": "p/"}
    assert normalize(legacy)["Filter"] == {"Prefix": "p/"}
    tag_only = {"ID": "z", "Filter": {"And": {"Prefix": "", "Tags": [{"Key": "k", "Value": "v"}]}}}
    assert normalize(tag_only)["Filter"] == {"Tag": {"Key": "k", "Value": "v"}}


def test_every_object_is_tagged_with_its_series() -> None:
    bid = "20261127T014500Z-database-full-a1b2c3"
    assert object_tags(f"data/{bid}/base.tar") == {SERIES_TAG: "database/full"}
    assert object_tags(f"data/{bid}/sub/dir/x") == {SERIES_TAG: "database/full"}
    assert object_tags(f"manifests/{bid}") == {SERIES_TAG: "database/full"}
    assert object_tags("verified/20261127T014500Z-vault-incremental-000000") == {
        SERIES_TAG: "vault/incremental"
    }
    assert object_tags("wal/000000010000000000000001") == {SERIES_TAG: "database/wal"}
    assert object_tags("wal-index/00000002.history") == {SERIES_TAG: "database/wal"}
    for key in ("config", "locks/component-database", "data/not-an-id/x", "wal/"):
        assert object_tags(key) == {}, key
    for tags in (object_tags(f"data/{bid}/x"), object_tags("wal/x")):
        # S3 tag values: letters, digits, spaces and + - = . _ : / @ only.
        assert all(re.fullmatch(r"[\w +\-=.:/@]*", v) for v in tags.values())
