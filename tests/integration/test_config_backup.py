"""Configuration exports end to end: real ``git``, two local bare remotes, a file repository.

What is proven here:
- two exports with one change between them make exactly one new commit, on every remote;
  an unchanged export makes no commit and no new backup;
- no planted secret value (a Kubernetes Secret's data and stringData, the last-applied
  annotation, an API-key file under a secrets folder) appears anywhere in the Git history
  of the work tree or the remotes, nor in the backup repository's bytes, nor in a restore;
- a change to one secret value changes one line of one file (per-value envelopes);
- ``restore_config`` gives back the exported files, byte for byte, and can decrypt them;
- a failed push is reported and caught up by the next run; a new exporter continues the
  remotes' history; a foreign Git repository is never overwritten.
"""

from __future__ import annotations

import base64
import importlib.util
import os
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from payapi.backup.config_backup import ConfigBackupResult, default_sources, run_config_backup
from payapi.backup.config_format import COMPONENT, EXPORT_FILE, OBJECT, TYPE, ConfigBackupError
from payapi.backup.config_restore import restore_config
from payapi.backup.config_secrets import SecretBox
from payapi.backup.crypto import generate_key
from payapi.backup.repository import Repository
from payapi.core.plan import default_plan_text
from payapi.core.settings import ConfigBackupSettings, Settings
from payapi.systems.kubernetes import clean_resource

API_KEY = "apikey-PLANTED-1f3a9c5e7b"
DB_PASSWORD = "dbpass-PLANTED-8d2e4f6a0c"
STRING_DATA = "stringdata-PLANTED-5b7d9f1e3a"
DEPLOY_SECRET = "deploysecret-PLANTED-0a2c4e6b8d"
PLANTED = (API_KEY, DB_PASSWORD, STRING_DATA, DEPLOY_SECRET)
NS = "payment-system"

BACKUP_JSON_FIELDS = {
    "backup_id",
    "component",
    "type",
    "started_at",
    "finished_at",
    "bytes",
    "stored_bytes",
    "objects",
}


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def git(*args: str, cwd: Path | None = None) -> str:
    res = subprocess.run(
        ["git", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"},
    )
    return res.stdout


class FakeCluster:
    """What the official client would return for the namespace (already serialized)."""

    def __init__(self) -> None:
        self.db_password = DB_PASSWORD
        self.replicas = 2

    @property
    def description(self) -> str:
        return "a test cluster"

    def resources(self, namespace: str) -> Iterable[Mapping[str, Any]]:
        assert namespace == NS
        last_applied = (
            '{"apiVersion":"v1","kind":"Secret","stringData":{"password":"'
            + self.db_password
            + '"}}'
        )
        meta = {
            "namespace": NS,
            "uid": "0b7e-uid",
            "resourceVersion": "12345",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
        }
        return [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "uid": "x"}},
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {**meta, "name": "payment-eapi", "generation": 4},
                "spec": {"replicas": self.replicas, "template": {"spec": {}}},
                "status": {"readyReplicas": 2, "observedGeneration": 4},
            },
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    **meta,
                    "name": "payment-db",
                    "annotations": {
                        "kubectl.kubernetes.io/last-applied-configuration": last_applied,
                        "team": "payments",
                    },
                },
                "type": "Opaque",
                "data": {"password": _b64(self.db_password), "user": _b64("payapi")},
                "stringData": {"note": STRING_DATA},
            },
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {**meta, "name": "default-token-abcde"},
                "type": "kubernetes.io/service-account-token",
                "data": {"token": _b64("sa-token-should-not-be-exported")},
            },
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {**meta, "name": "kube-root-ca.crt"},
                "data": {"ca.crt": "..."},
            },
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {**meta, "name": "eapi-config"},
                "data": {"LOG_LEVEL": "info"},
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {**meta, "name": "payment-eapi"},
                "spec": {"clusterIP": "10.0.0.12", "clusterIPs": ["10.0.0.12"], "ports": []},
            },
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {
                    **meta,
                    "name": "nightly-123",
                    "ownerReferences": [{"kind": "CronJob", "name": "nightly"}],
                },
            },
        ]


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repository]:
    r = Repository.open(f"file://{tmp_path / 'repo'}", generate_key())
    r.init()
    yield r
    r.close()


@pytest.fixture
def remotes(tmp_path: Path) -> dict[str, str]:
    out = {}
    for name in ("origin", "dr"):
        path = tmp_path / "remotes" / f"{name}.git"
        git("init", "-q", "--bare", "-b", "main", str(path))
        out[name] = str(path)
    return out


@pytest.fixture
def sources(tmp_path: Path) -> list[Path | tuple[str, Path]]:
    src = tmp_path / "src"
    (src / "deploy" / "kubernetes").mkdir(parents=True)
    (src / "deploy" / "prometheus").mkdir()
    (src / "dr-plan.yaml").write_text(default_plan_text())
    (src / "deploy" / "kubernetes" / "eapi.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: payment-eapi\n"
        "spec:\n  replicas: 2\n"
    )
    (src / "deploy" / "kubernetes" / "secrets.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  a: b\n---\n"
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: sapi\n"
        f"stringData:\n  token: {DEPLOY_SECRET}\n  other: fixed-value\n"
    )
    (src / "deploy" / "prometheus" / "rules.yaml").write_text("groups: []\n")
    lab = src / "lab"
    (lab / "secrets").mkdir(parents=True)
    (lab / "payapi.toml").write_text(
        'environment = "lab"\n[eapi]\nvault_api_key_file = "secrets/eapi.api_key"\n'
    )
    (lab / "lab.json").write_text('{"ports": {"redis": 6379}}\n')
    key = lab / "secrets" / "eapi.api_key"
    key.write_text(API_KEY + "\n")
    key.chmod(0o600)
    (lab / "admin.api_key").write_text(API_KEY + "-2\n")  # a key-like name, anywhere
    return [src / "dr-plan.yaml", src / "deploy", ("lab", lab)]


def _run(
    repo: Repository,
    sources: list[Path | tuple[str, Path]],
    git_dir: Path,
    remotes: dict[str, str],
    cluster: FakeCluster | None = None,
) -> ConfigBackupResult:
    return run_config_backup(
        repo,
        ConfigBackupSettings(kube_namespace=NS),
        sources=sources,
        git_dir=git_dir,
        remotes=remotes,
        kube_source=cluster,
    )


def _remote_head(path: str) -> str:
    return git("--git-dir", path, "rev-parse", "refs/heads/main").strip()


def test_one_change_makes_exactly_one_commit_on_every_remote(
    repo: Repository,
    sources: list[Path | tuple[str, Path]],
    remotes: dict[str, str],
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    cluster = FakeCluster()
    first = _run(repo, sources, work, remotes, cluster)
    assert first.ok and first.changed and first.stored
    assert sorted(first.pushed) == ["dr", "origin"]
    assert first.commit == first.head
    for path in remotes.values():
        assert _remote_head(path) == first.commit
    assert set(first.to_json()) >= BACKUP_JSON_FIELDS
    assert first.backup.component == COMPONENT == "configuration"
    assert first.backup.type == TYPE == "git"

    # Unchanged: no commit, no new backup, remotes unchanged.
    again = _run(repo, sources, work, remotes, cluster)
    assert again.ok and not again.changed and not again.stored
    assert again.commit is None and again.head == first.commit
    assert again.backup.backup_id == first.backup.backup_id
    assert len(repo.list_backups(COMPONENT)) == 1

    # One change (a replica count in the cluster) -> exactly one new commit everywhere.
    cluster.replicas = 3
    second = _run(repo, sources, work, remotes, cluster)
    assert second.ok and second.changed and second.stored
    for path in remotes.values():
        assert _remote_head(path) == second.commit
        count = git("--git-dir", path, "rev-list", "--count", f"{first.commit}..{second.commit}")
        assert count.strip() == "1"
        assert git("--git-dir", path, "rev-list", "--count", "main").strip() == "2"
    changed = git("show", "--name-only", "--format=", second.head, cwd=work).split()
    assert changed == [f"kubernetes/{NS}/deployment/payment-eapi.yaml"]
    author = git("log", "-1", "--format=%an <%ae>", cwd=work).strip()
    assert author == "payapi config export <payapi-config-export@localhost>"
    assert len(repo.list_backups(COMPONENT)) == 2


def _history(path: Path, *, bare: bool) -> str:
    """Every patch of every ref, and every object Git stores (blobs, trees, commits)."""
    where = ["--git-dir", str(path)] if bare else ["-C", str(path)]
    log = git(*where, "log", "-p", "--all", "--full-history", "--format=%H %s%n%b")
    objects = subprocess.run(
        ["git", *where, "cat-file", "--batch-all-objects", "--batch"],
        capture_output=True,
        check=True,
    ).stdout.decode("latin-1")  # lossless: tree objects hold binary ids
    return log + objects


def test_no_plaintext_secret_in_git_history_repository_or_restore(
    repo: Repository,
    sources: list[Path | tuple[str, Path]],
    remotes: dict[str, str],
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    cluster = FakeCluster()
    first = _run(repo, sources, work, remotes, cluster)
    assert first.secret_values_encrypted == 5  # 3 from the cluster, 2 from deploy/
    assert first.secret_files_referenced == 2  # secrets/eapi.api_key, admin.api_key
    cluster.db_password = "dbpass-PLANTED-rotated-77"
    second = _run(repo, sources, work, remotes, cluster)
    assert second.changed

    planted = [*PLANTED, "dbpass-PLANTED-rotated-77"]
    needles = planted + [_b64(p) for p in planted] + ["sa-token-should-not-be-exported"]
    texts = {"work": _history(work, bare=False)}
    for name, path in remotes.items():
        texts[name] = _history(Path(path), bare=True)
    for where, text in texts.items():
        for needle in needles:
            assert needle not in text, f"{needle} found in {where}"
    # The working tree, and every byte of the backup repository.
    for root in (work, Path(repo.store.root)):  # type: ignore[attr-defined]
        for p in root.rglob("*"):
            if p.is_file():
                data = p.read_bytes()
                for needle in needles:
                    assert needle.encode() not in data, f"{needle} in {p}"
    # A restore (without decryption) holds no secret either.
    out = tmp_path / "restored"
    restore_config(repo, None, out)
    for p in out.rglob("*"):
        if p.is_file():
            for needle in needles:
                assert needle.encode() not in p.read_bytes()
    # What is there instead: envelopes, references, and no last-applied annotation.
    secret = yaml.safe_load((work / f"kubernetes/{NS}/secret/payment-db.yaml").read_text())
    assert secret["data"]["password"].startswith("ENC[AES256_GCM,data:")
    assert secret["metadata"]["annotations"] == {"team": "payments"}
    assert not (work / f"kubernetes/{NS}/secret/default-token-abcde.yaml").exists()
    header = yaml.safe_load((work / EXPORT_FILE).read_text())
    refs = {r["path"]: r["reason"] for r in header["not_exported"]}
    assert refs == {
        "files/lab/secrets/eapi.api_key": "under a secrets folder",
        "files/lab/admin.api_key": "its name says it is a key or credential",
    }
    assert not (work / "files/lab/secrets").exists()
    assert (work / "files/lab/payapi.toml").exists()


def test_one_secret_value_change_is_one_line(
    repo: Repository,
    sources: list[Path | tuple[str, Path]],
    remotes: dict[str, str],
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    cluster = FakeCluster()
    _run(repo, sources, work, remotes, cluster)
    cluster.db_password = "another-password"
    result = _run(repo, sources, work, remotes, cluster)
    diff = git("show", "--format=", "--unified=0", result.head, cwd=work)
    changed = [
        ln for ln in diff.splitlines() if ln[:1] in "+-" and not ln.startswith(("+++", "---"))
    ]
    # The password's envelope (old and new line) and nothing else: the last-applied
    # annotation that would have changed too is not exported.
    assert len(changed) == 2 and all("password: ENC[AES256_GCM," in ln for ln in changed)


def test_restore_gives_back_the_exported_files(
    repo: Repository,
    sources: list[Path | tuple[str, Path]],
    remotes: dict[str, str],
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    cluster = FakeCluster()
    first = _run(repo, sources, work, remotes, cluster)
    cluster.replicas = 5
    second = _run(repo, sources, work, remotes, cluster)

    out = tmp_path / "out1"
    res = restore_config(repo, first.backup.backup_id, out)
    assert res.commit == first.commit
    tracked = git("ls-tree", "-r", "--name-only", first.commit or "", cwd=work).split()
    assert res.files == sorted(tracked)
    for rel in tracked:
        shown = subprocess.run(
            ["git", "-C", str(work), "show", f"{first.commit}:{rel}"],
            capture_output=True,
            check=True,
        ).stdout
        assert (out / rel).read_bytes() == shown, rel
    src_plan = sources[0]
    assert isinstance(src_plan, Path)
    assert (out / "files/dr-plan.yaml").read_bytes() == src_plan.read_bytes()
    deployment = yaml.safe_load((out / f"kubernetes/{NS}/deployment/payment-eapi.yaml").read_text())
    assert deployment["spec"]["replicas"] == 2  # the first export, not the newest
    assert "status" not in deployment
    assert set(deployment["metadata"]) == {"name", "namespace"}

    # The newest by default; decrypting on request gives the values back (mode 0600).
    out2 = tmp_path / "out2"
    res2 = restore_config(repo, None, out2, decrypt_secrets=True)
    assert res2.backup_id == second.backup.backup_id and res2.decrypted == 5
    secret_path = out2 / f"kubernetes/{NS}/secret/payment-db.yaml"
    secret = yaml.safe_load(secret_path.read_text())
    assert base64.b64decode(secret["data"]["password"]).decode() == DB_PASSWORD
    assert secret["stringData"]["note"] == STRING_DATA
    assert secret_path.stat().st_mode & 0o777 == 0o600
    docs = list(yaml.safe_load_all((out2 / "files/deploy/kubernetes/secrets.yaml").read_text()))
    assert docs[1]["stringData"] == {"token": DEPLOY_SECRET, "other": "fixed-value"}
    assert docs[0]["data"] == {"a": "b"}

    with pytest.raises(ConfigBackupError, match="not an empty folder"):
        restore_config(repo, None, out2)


def test_failed_push_is_reported_then_caught_up(
    repo: Repository,
    sources: list[Path | tuple[str, Path]],
    remotes: dict[str, str],
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    missing = tmp_path / "remotes" / "later.git"
    all_remotes = {**remotes, "later": str(missing)}
    first = _run(repo, sources, work, all_remotes)
    assert not first.ok and set(first.push_errors) == {"later"}
    assert sorted(first.pushed) == ["dr", "origin"]
    git("init", "-q", "--bare", "-b", "main", str(missing))
    again = _run(repo, sources, work, all_remotes)
    assert again.ok and not again.changed
    assert _remote_head(str(missing)) == first.head


def test_new_exporter_continues_the_remote_history(
    repo: Repository,
    sources: list[Path | tuple[str, Path]],
    remotes: dict[str, str],
    tmp_path: Path,
) -> None:
    first = _run(repo, sources, tmp_path / "work", remotes)
    rebuilt = _run(repo, sources, tmp_path / "work-in-dr", remotes)
    assert rebuilt.ok and not rebuilt.changed and rebuilt.head == first.head


def test_foreign_directories_are_never_overwritten(
    repo: Repository, sources: list[Path | tuple[str, Path]], tmp_path: Path
) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(ConfigBackupError, match="not empty and not a Git repository"):
        _run(repo, sources, foreign, {})
    git("init", "-q", "-b", "main", cwd=foreign)
    git("add", "keep.txt", cwd=foreign)
    git("-c", "user.name=x", "-c", "user.email=x@y", "commit", "-q", "-m", "mine", cwd=foreign)
    with pytest.raises(ConfigBackupError, match="not payapi exports"):
        _run(repo, sources, foreign, {})
    assert (foreign / "keep.txt").read_text() == "mine"


def test_clean_resource_strips_what_the_cluster_sets() -> None:
    obj = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "s",
            "namespace": NS,
            "uid": "u",
            "resourceVersion": "1",
            "managedFields": [],
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
        },
        "spec": {"clusterIP": "10.1.2.3", "clusterIPs": ["10.1.2.3"], "ports": [{"port": 80}]},
        "status": {"loadBalancer": {}},
    }
    assert clean_resource(obj) == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s", "namespace": NS},
        "spec": {"ports": [{"port": 80}]},
    }
    headless = {"kind": "Service", "metadata": {"name": "h"}, "spec": {"clusterIP": "None"}}
    assert clean_resource(headless) == headless
    owned = {"kind": "Pod", "metadata": {"name": "p", "ownerReferences": [{"kind": "RS"}]}}
    assert clean_resource(owned) is None


def test_secret_box_is_deterministic_and_bound_to_its_place() -> None:
    box = SecretBox(generate_key())
    a = box.encrypt("f#0/data/k", "value")
    assert a == box.encrypt("f#0/data/k", "value")
    assert a != box.encrypt("f#0/data/other", "value")
    assert a != box.encrypt("f#0/data/k", "value2")
    assert box.decrypt("f#0/data/k", a) == "value"
    with pytest.raises(ConfigBackupError, match="does not decrypt"):
        box.decrypt("f#0/data/other", a)
    with pytest.raises(ConfigBackupError, match="does not decrypt"):
        SecretBox(generate_key()).decrypt("f#0/data/k", a)


def test_default_sources(tmp_path: Path) -> None:
    cfg = tmp_path / "lab" / "payapi.toml"
    cfg.parent.mkdir()
    cfg.write_text('environment = "lab"\n')
    (tmp_path / "lab" / "lab.json").write_text("{}")
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    settings = Settings()
    settings.config_path = cfg
    got = default_sources(settings, deploy_dir=deploy)
    assert [name for name, _ in got] == ["dr-plan.yaml", "deploy", "payapi.toml", "lab.json"]
    assert got[0][1].read_text() == default_plan_text()


def test_stored_object_is_a_tar_of_the_tree(
    repo: Repository, sources: list[Path | tuple[str, Path]], tmp_path: Path
) -> None:
    result = _run(repo, sources, tmp_path / "work", {})
    manifest = repo.read_manifest(result.backup.backup_id)
    assert [o.name for o in manifest.objects] == [OBJECT]
    assert manifest.meta["commit"] == result.head
    assert manifest.meta["files"] == result.files


@pytest.mark.skipif(
    importlib.util.find_spec("kubernetes") is not None,
    reason="the kubernetes client is installed",
)
def test_kube_context_without_the_client_is_one_clear_error(
    repo: Repository, sources: list[Path | tuple[str, Path]], tmp_path: Path
) -> None:
    with pytest.raises(ConfigBackupError, match="kubernetes client is not installed"):
        run_config_backup(
            repo,
            ConfigBackupSettings(),
            sources=sources,
            git_dir=tmp_path / "work",
            remotes={},
            kube_context="prod",
        )


@pytest.mark.skipif(
    importlib.util.find_spec("kubernetes") is None
    or not os.environ.get("PAYAPI_TEST_KUBE_CONTEXT"),
    reason="needs the kubernetes client and PAYAPI_TEST_KUBE_CONTEXT (a reachable cluster)",
)
def test_export_from_a_real_cluster(
    repo: Repository, sources: list[Path | tuple[str, Path]], tmp_path: Path
) -> None:  # pragma: no cover - only where a cluster is configured
    context = os.environ["PAYAPI_TEST_KUBE_CONTEXT"]
    namespace = os.environ.get("PAYAPI_TEST_KUBE_NAMESPACE", NS)
    result = run_config_backup(
        repo,
        ConfigBackupSettings(kube_namespace=namespace),
        sources=sources,
        git_dir=tmp_path / "work",
        remotes={},
        kube_context=context,
    )
    assert result.files > 0
    for p in (tmp_path / "work" / "kubernetes" / namespace).rglob("*.yaml"):
        doc = yaml.safe_load(p.read_text())
        assert "status" not in doc
        assert "managedFields" not in doc["metadata"]


def test_odd_resource_names_become_safe_distinct_file_names() -> None:
    from payapi.backup.config_export import file_name as _file_name

    assert _file_name("payment-eapi") == "payment-eapi"
    a, b = _file_name("system:deployers"), _file_name("system;deployers")
    assert a != b and a.startswith("system_deployers-") and "/" not in a
    assert not _file_name("../../etc").startswith(".")
    assert "/" not in _file_name("../../etc")
