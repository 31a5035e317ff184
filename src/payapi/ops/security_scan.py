"""Reading the platform for `payapi security check` (acting; the verdicts are
:mod:`payapi.ops.security`'s).

The known secrets are gathered once, in memory: every vault variable that holds one
(client secrets, previous secrets, the SAPI service token, the EAPI cache key; with
``comprehensive`` every kept version too), read as the vault admin, and the bootstrap
credentials kept in files (the admin's, EAPI's and SAPI's API keys, the vault data key,
the backup repository key). Then each place a secret must never be is searched for them:

- ``secrets.logs``: ``[security] log_paths`` (files, or folders of ``*.log``), by default
  every ``*.log`` under the config file's folder and ``postgres.log_file``;
- ``secrets.redis``: every key name and value of every Redis member that answers;
- ``secrets.database``: the plaintext columns of ``payments`` and ``audit_events``;
- ``secrets.backups``: the backup repository's object bytes (all objects with
  ``comprehensive``, of every configured repository; otherwise the manifests and
  verification records of the primary), which are encrypted and must stay so;
- ``secrets.configuration``: the config file and the configuration backup's git
  repository (its work tree and every object, ``git cat-file --batch-all-objects``).

And the configuration: ``listeners`` and ``data_key`` (:mod:`payapi.ops.security_host`),
``audit_chain`` (:func:`payapi.audit.verify`), ``credentials`` (key files 0600, no
default value in use, API keys younger than ``[security] max_credential_age_days``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from payapi.core.naming import CLIENTS_PREFIX, EAPI_CACHE_KEY, SAPI_SERVICE_TOKEN
from payapi.core.settings import Settings, read_secret_file
from payapi.core.topology import Service, topology_from_settings
from payapi.ops import security_host
from payapi.ops.security import (
    Check,
    Secret,
    SecretSet,
    SecurityReport,
    age_check,
    defaults_in_use,
    leak_check,
    mode_problem,
)
from payapi.systems.objectstore import Store

__all__ = ["check", "known_secrets"]

CHUNK = 1 << 20
MAX_FILES = 20_000
TIMEOUT = 5.0
NOT_SECRET_SUFFIXES = ("/client-id", "/previous-valid-until")  # ids and deadlines


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:200]


# --------------------------------------------------------------------------- known secrets


def _label(variable: str) -> str:
    if variable == SAPI_SERVICE_TOKEN:
        return "SAPI service token"
    if variable == EAPI_CACHE_KEY:
        return "EAPI cache key"
    if variable.startswith(CLIENTS_PREFIX + "/"):
        name, _, kind = variable[len(CLIENTS_PREFIX) + 1 :].rpartition("/")
        return f"{kind.replace('-', ' ')} of client {name}"
    return f"vault variable {variable}"


def _with_decoded(secrets: SecretSet, label: str, raw: bytes) -> None:
    """A key as stored (base64 text) and as the bytes it encodes."""
    text = raw.strip()
    secrets.add(Secret(label, text))
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return
    secrets.add(Secret(f"{label} (decoded)", decoded))


def _file_secrets(settings: Settings, secrets: SecretSet) -> None:
    files: list[tuple[str, Path | None, bool]] = [
        ("vault admin API key", settings.vault.admin_api_key_file, False),
        ("EAPI API key", settings.eapi.vault_api_key_file, False),
        ("SAPI API key", settings.sapi.vault_api_key_file, False),
        ("vault data key", settings.vault.data_key_file, True),
        ("backup repository key", settings.backup.key_file, True),
    ]
    for label, path, is_key in files:
        if path is None:
            continue
        try:
            raw = path.read_bytes()
        except OSError:
            continue  # a missing key file is the credentials check's business
        if is_key:
            _with_decoded(secrets, label, raw)
        else:
            secrets.add(Secret(label, raw.strip()))


async def _vault_secrets(settings: Settings, secrets: SecretSet, comprehensive: bool) -> int:
    from payapi.vault.client import VaultClient

    key = read_secret_file(settings.vault.admin_api_key_file, "vault admin API key")
    vault = settings.vault
    async with VaultClient(vault.endpoints(), vault.account, vault.admin_login, key) as v:
        resources = await v.list_resources(kind="variable")
        wanted: dict[str, list[int]] = {}
        for r in resources:
            rid = str(r.get("id", "")).split(":", 2)[-1]
            kept = [int(s["version"]) for s in r.get("secrets") or [] if "version" in s]
            if kept and not rid.endswith(NOT_SECRET_SUFFIXES):
                wanted[rid] = kept
        ids = sorted(wanted)
        for i in range(0, len(ids), 100):
            batch = await v.get_secrets(ids[i : i + 100])
            for rid, value in batch.items():
                secrets.add(Secret(_label(rid), value.get_secret_value().encode()))
                if rid == EAPI_CACHE_KEY:
                    _with_decoded(secrets, _label(rid), value.get_secret_value().encode())
        if comprehensive:
            for rid in ids:
                for version in wanted[rid][:-1]:
                    old = await v.get_secret(rid, version)
                    secrets.add(Secret(f"old {_label(rid)}", old.get_secret_value().encode()))
    return len(ids)


def known_secrets(settings: Settings, *, comprehensive: bool = False) -> tuple[SecretSet, Check]:
    """The secrets to look for, and a check saying whether the vault's could be read."""
    secrets = SecretSet()
    _file_secrets(settings, secrets)
    try:
        variables = asyncio.run(_vault_secrets(settings, secrets, comprehensive))
    except Exception as exc:  # the vault client's, httpx's, a missing key file
        why = _one_line(exc)
        return secrets, Check("secrets.known", False, f"cannot read the vault's secrets: {why}")
    detail = f"{len(secrets)} known secrets ({variables} vault variables and the key files)"
    return secrets, Check("secrets.known", True, detail)


# --------------------------------------------------------------------------- files, logs


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while block := fh.read(CHUNK):
            yield block


def _log_files(settings: Settings) -> list[Path]:
    roots = list(settings.security.log_paths)
    if not roots:
        if settings.config_path is not None:
            roots.append(settings.config_path.parent)
        if settings.postgres.log_file is not None:
            roots.append(settings.postgres.log_file)
    found: dict[Path, None] = {}
    for root in roots:
        if root.is_file():
            found[root] = None
        elif root.is_dir():
            for p in root.rglob("*.log"):
                if p.is_file():
                    found[p] = None
                if len(found) >= MAX_FILES:
                    break
    return sorted(found)


def _scan_files(paths: list[Path], secrets: SecretSet) -> tuple[dict[str, list[str]], int]:
    leaks: dict[str, list[str]] = {}
    scanned = 0
    for path in paths:
        try:
            labels = secrets.scan(_chunks(path))
        except OSError:
            continue  # rotated away meanwhile
        scanned += 1
        if labels:
            leaks[str(path)] = labels
    return leaks, scanned


def check_logs(settings: Settings, secrets: SecretSet) -> Check:
    leaks, scanned = _scan_files(_log_files(settings), secrets)
    return leak_check("secrets.logs", "the log files", leaks, scanned, "files")


# --------------------------------------------------------------------------- redis


def _redis_values(conn: Any, key: bytes) -> list[bytes]:
    kind = conn.type(key)
    kind = kind.decode() if isinstance(kind, bytes) else str(kind)
    if kind == "string":
        value = conn.get(key)
        return [value] if value is not None else []
    if kind == "hash":
        return [b for kv in conn.hgetall(key).items() for b in kv]
    if kind == "set":
        return list(conn.smembers(key))
    if kind == "list":
        return list(conn.lrange(key, 0, -1))
    if kind == "zset":
        return [m for m, _ in conn.zrange(key, 0, -1, withscores=True)]
    return []


def _scan_redis(name: str, url: str, secrets: SecretSet, leaks: dict[str, list[str]]) -> int:
    from payapi.systems.redis import client

    keys = 0
    conn = client(url, TIMEOUT)
    try:
        dbs = [int(k[2:]) for k in conn.info("keyspace") if str(k).startswith("db")]
    finally:
        conn.close()
    for db in dbs:
        conn = client(url, TIMEOUT, db=db)
        try:
            for key in conn.scan_iter(count=1000):
                keys += 1
                if secrets.found_in(key):
                    leaks[f"{name} db {db}: a key name"] = secrets.found_in(key)
                    continue
                labels = sorted(
                    {lb for v in _redis_values(conn, key) for lb in secrets.found_in(v)}
                )
                if labels:
                    leaks[f"{name} db {db} key {key.decode(errors='replace')!r}"] = labels
        finally:
            conn.close()
    return keys


def check_redis(settings: Settings, secrets: SecretSet) -> Check:
    topology = topology_from_settings(settings)
    leaks: dict[str, list[str]] = {}
    keys = 0
    unreachable: list[str] = []
    for region in topology.regions:
        for member in region.members_of(Service.REDIS):
            try:
                keys += _scan_redis(member.name, member.url, secrets, leaks)
            except Exception as exc:  # redis' ConnectionError, TimeoutError
                unreachable.append(f"{member.name} ({type(exc).__name__})")
    result = leak_check("secrets.redis", "Redis", leaks, keys, "keys")
    if unreachable and result.ok:
        return Check(result.name, True, f"{result.detail}; not reachable: {', '.join(unreachable)}")
    return result


# --------------------------------------------------------------------------- database

_COLUMNS = {
    "payments": ("client_id", "reference", "idempotency_key", "request_hash"),
    "audit_events": ("type", "actor", "subject", "details::text"),
}


async def _scan_database(dsn: str, secrets: SecretSet) -> tuple[dict[str, list[str]], int]:
    import asyncpg

    leaks: dict[str, set[str]] = {}
    rows = 0
    conn = await asyncpg.connect(dsn, timeout=TIMEOUT, command_timeout=300)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            for table, columns in _COLUMNS.items():
                sql = f"SELECT {', '.join(columns)} FROM {table}"  # noqa: S608 - constants
                try:
                    async for row in conn.cursor(sql, prefetch=2000):
                        rows += 1
                        for col, value in zip(columns, row, strict=True):
                            if value is None:
                                continue
                            found = secrets.found_in(str(value).encode())
                            if found:
                                place = f"{table}.{col.removesuffix('::text')}"
                                leaks.setdefault(place, set()).update(found)
                except asyncpg.UndefinedTableError:
                    continue
    finally:
        await conn.close()
    return {k: sorted(v) for k, v in leaks.items()}, rows


def check_database(settings: Settings, secrets: SecretSet) -> Check:
    dsn = settings.postgres.payment_dsn or settings.sapi.dsn
    if not dsn:
        return Check("secrets.database", True, "no payment database configured")
    try:
        leaks, rows = asyncio.run(_scan_database(dsn, secrets))
    except Exception as exc:  # asyncpg's errors, OSError
        return Check(
            "secrets.database", False, f"cannot read the payment database: {_one_line(exc)}"
        )
    what = "the payment database (payments, audit_events)"
    return leak_check("secrets.database", what, leaks, rows, "rows")


# --------------------------------------------------------------------------- backups

_SAMPLED = ("manifests/", "verified/", "config")


def _object_chunks(store: Store, key: str) -> Iterator[bytes]:
    with store.open(key) as fh:
        while block := fh.read(CHUNK):
            yield block


def check_backups(settings: Settings, secrets: SecretSet, *, comprehensive: bool) -> Check:
    from payapi.backup.repository import Repository

    if not settings.backup.repository:
        return Check("secrets.backups", True, "no backup repository configured")
    locations = settings.backup.locations() if comprehensive else [settings.backup.location()]
    leaks: dict[str, list[str]] = {}
    objects = 0
    for loc in locations:
        try:
            repo = Repository.open_configured(
                loc.url,
                key_file=loc.key_file,
                key_env=loc.key_env,
                s3_endpoint_url=loc.s3_endpoint_url,
                s3_sse=loc.s3_sse,
                s3_region=loc.s3_region,
            )
        except Exception as exc:  # the repository's errors, a missing key
            return Check("secrets.backups", False, f"cannot open {loc.name}: {_one_line(exc)}")
        with repo:
            for entry in repo.store.list(""):
                if entry.key.startswith("locks/"):
                    continue
                if not comprehensive and not entry.key.startswith(_SAMPLED):
                    continue
                objects += 1
                labels = secrets.scan(_object_chunks(repo.store, entry.key))
                if labels:
                    leaks[f"{loc.name}:{entry.key}"] = labels
    what = "the backup repository" + (" (every object)" if comprehensive else " (manifests)")
    return leak_check("secrets.backups", what, leaks, objects, "objects")


# --------------------------------------------------------------------------- configuration


def _git_objects(git_dir: Path) -> bytes:
    from payapi.systems.git import Git

    env = Git(git_dir, "payapi", "payapi@localhost").env
    res = subprocess.run(
        ["git", "-C", str(git_dir), "cat-file", "--batch-all-objects", "--batch"],
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )
    return res.stdout if res.returncode == 0 else b""


def check_configuration(settings: Settings, secrets: SecretSet) -> Check:
    files: list[Path] = []
    if settings.config_path is not None:
        files.append(settings.config_path)
        local = settings.config_path.with_name("payapi.local.toml")
        if local.is_file():
            files.append(local)
    leaks, scanned = _scan_files(files, secrets)
    git_dir = settings.config_backup.git_dir
    if git_dir is not None and git_dir.is_dir():
        tree = [p for p in git_dir.rglob("*") if p.is_file() and ".git" not in p.parts]
        more, n = _scan_files(tree[:MAX_FILES], secrets)
        leaks.update(more)
        scanned += n
        labels = secrets.found_in(_git_objects(git_dir))
        if labels:
            leaks[f"{git_dir} (git history)"] = labels
        scanned += 1
    what = "the configuration" + (" and its git repository" if git_dir else "")
    return leak_check("secrets.configuration", what, leaks, scanned, "files")


# --------------------------------------------------------------------------- audit


def check_audit(settings: Settings) -> Check:
    from payapi import audit

    dsn = settings.postgres.payment_dsn or settings.sapi.dsn
    if not dsn:
        return Check("audit_chain", True, "no payment database configured")

    async def run() -> audit.VerifyResult:
        import asyncpg

        conn = await asyncpg.connect(dsn, timeout=TIMEOUT)
        try:
            return await audit.verify(conn, settings.audit.head_file)
        finally:
            await conn.close()

    try:
        result = asyncio.run(run())
    except Exception as exc:  # asyncpg's errors, AuditError
        return Check("audit_chain", False, f"cannot verify: {_one_line(exc)}")
    if not result.ok:
        line = result.problem.line() if result.problem else "broken"
        return Check("audit_chain", False, line)
    return Check("audit_chain", True, f"intact: {result.events_checked} events")


# --------------------------------------------------------------------------- credentials


async def _key_ages(dsn: str) -> dict[str, float]:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=TIMEOUT)
    try:
        rows = await conn.fetch("SELECT role_id, rotated_at FROM credentials")
    finally:
        await conn.close()
    now = datetime.now(UTC)
    return {str(r["role_id"]): (now - r["rotated_at"]).total_seconds() / 86400 for r in rows}


def check_credentials(settings: Settings, secrets: SecretSet) -> Check:
    problems: list[str] = []
    notes: list[str] = []
    key_files = {
        "vault admin API key file": settings.vault.admin_api_key_file,
        "EAPI API key file": settings.eapi.vault_api_key_file,
        "SAPI API key file": settings.sapi.vault_api_key_file,
        "backup repository key file": settings.backup.key_file,
    }
    for what, path in key_files.items():
        if path is None:
            continue
        try:
            mode = path.stat().st_mode
        except OSError:
            problems.append(f"{what} {path} is missing")
            continue
        problem = mode_problem(f"{what} {path}", mode)
        if problem:
            problems.append(problem)
    defaults = defaults_in_use(secrets)
    if defaults:
        problems.append(f"default values in use: {', '.join(defaults)}")
    if settings.vault.dsn or settings.postgres.vault_dsn:
        try:
            ages = asyncio.run(_key_ages(settings.vault.dsn or settings.postgres.vault_dsn))
        except Exception as exc:  # asyncpg's errors, OSError
            notes.append(f"API key ages unknown ({type(exc).__name__})")
        else:
            max_days = settings.security.max_credential_age_days
            stale = age_check(ages, max_days)
            if stale:
                problems.append(f"API keys older than {max_days:g} days: {', '.join(stale)}")
            elif ages:
                oldest = max(ages.values())
                limit = f"limit {max_days:g} days" if max_days else "no rotation period set"
                notes.append(f"oldest API key {oldest:.1f} days ({limit})")
    if problems:
        return Check("credentials", False, "; ".join(problems))
    return Check("credentials", True, "; ".join(["key files 0600, no default value", *notes]))


# --------------------------------------------------------------------------- all

Runner = Callable[[], Check]


def _guarded(name: str, fn: Runner) -> Check:
    try:
        return fn()
    except Exception as exc:  # a check that crashes fails, it does not stop the others
        return Check(name, False, f"could not run: {_one_line(exc)}")


def check(settings: Settings, *, comprehensive: bool = False) -> SecurityReport:
    """Every check, in order; a check that cannot run fails with why."""
    secrets, known = known_secrets(settings, comprehensive=comprehensive)
    runners: list[tuple[str, Runner]] = [
        ("secrets.logs", lambda: check_logs(settings, secrets)),
        ("secrets.redis", lambda: check_redis(settings, secrets)),
        ("secrets.database", lambda: check_database(settings, secrets)),
        (
            "secrets.backups",
            lambda: check_backups(settings, secrets, comprehensive=comprehensive),
        ),
        ("secrets.configuration", lambda: check_configuration(settings, secrets)),
        ("listeners", lambda: security_host.check_listeners(settings)),
        ("audit_chain", lambda: check_audit(settings)),
        ("credentials", lambda: check_credentials(settings, secrets)),
        ("data_key", lambda: security_host.check_data_key(settings)),
    ]
    checks = [known, *(_guarded(name, fn) for name, fn in runners)]
    return SecurityReport(tuple(checks), comprehensive)
