"""A platform rebuilt from backups: the seed's "Complete System Recovery" on loopback.

``rebuild(RebuildRequest(into=DIR, repository=URL, key_file=F, vault_key_file=K))``
builds a working platform in an EMPTY folder from the backup repository alone, plus the
two secrets no backup holds by design (the repository key, and the vault's escrowed data
key: vault backups carry only its check value). ``DIR`` gets the layout of a one-region
lab (:class:`payapi.lab.platform.Lab`: ``payapi.toml``, ``lab.json``, ``secrets/`` …),
so ``payapi lab status|down --dir DIR`` work on it. The steps, each timed:

1. **configuration**: the newest configuration export is checked out into
   ``DIR/restored-config/``; its ``payapi.local.toml`` (the operator's overrides) is
   carried over. The config itself is written anew for the new site (new ports, new
   paths): the old one names the dead site's.
2. **backup repository**: a NEW repository in ``DIR/backups`` (new key) that the
   rebuilt database archives into. The rebuilt site never writes WAL into the repository
   it was restored from (its new timeline would be mixed with the old site's, which may
   not be dead after all); switch ``[backup]`` back once the old site is known gone.
3. **database**: newest full (+ incrementals) and every archived WAL segment (the PITR
   restore of :mod:`payapi.backup.restore`, target ``latest``), started, promoted, then
   restarted as the lab's server with archiving on.
   **audit**: the chain's head file (kept outside the database, in no backup) is
   re-anchored at the restored log's newest event, and that is audited
   (``system.recovered``); with the old site's head (``--audit-head-file``) the events
   lost with the data window are counted, and a contradicting log fails verification.
4. **vault**: the restored cluster already holds ``vault_db`` as of the end of the WAL.
   :func:`decide_vault` says whether the newest vault backup is newer (then it is
   restored in place with :mod:`payapi.backup.vault_restore`) or not (then the
   database's copy is kept: restoring an older backup over it would lose secrets). The
   data key is checked against the restored vault either way. The admin's and the
   services' API keys exist only as digests and their files are not backed up: they are
   re-issued (the old site's keys stop working).
5. **redis**: the newest snapshot (:mod:`payapi.backup.redis_restore`; tokens are
   dropped, clients re-authenticate), or empty when there is none or on request.
6. **sapi**, **eapi**: started as the lab starts them.
7. **verify**: each component's health, then the seed's curls with a new client
   (authenticate, a payment through EAPI).

A failure before the platform is built stops what was started (nothing keeps running
half-built) and keeps the folder for inspection. A failed verification leaves the
platform running (``payapi lab down --dir DIR`` stops it) and says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

import httpx

from payapi.core.errors import UsageError
from payapi.core.journal import Journal
from payapi.lab.platform import ACCOUNT, ADMIN_LOGIN, Lab, LabError

__all__ = [
    "RebuildRequest",
    "RebuildResult",
    "check_request",
    "decide_vault",
    "drive_stage",
    "fresh_result",
    "preflight",
    "run_stage",
]

VaultMode = Literal["auto", "backup", "database"]
VERIFY_CLIENT = "dr-recovery-check"
CONFIG_DIR = "restored-config"


# --------------------------------------------------------------------------- request


@dataclass
class RebuildRequest:
    into: Path
    repository: str  # the backup repository's URL
    key_file: Path  # its key (the operator brings it)
    vault_key_file: Path  # the vault's escrowed data key (the operator brings it)
    audit_head_file: Path | None = None  # the old site's audit head (its WORM copy), if any
    vault: VaultMode = "auto"
    redis_rebuild: bool = False  # start Redis empty even when a snapshot exists
    verify: bool = True
    service_timeout: float = 60.0
    recovery_timeout: float = 600.0
    journal: Journal = field(default_factory=Journal)


@dataclass
class StepTime:
    name: str
    status: str
    seconds: float
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "detail": self.detail,
        }


@dataclass
class RebuildResult:
    into: Path
    config: Path
    steps: list[StepTime] = field(default_factory=list)
    total_seconds: float = 0.0
    payments: int | None = None
    verified: bool = False
    database: dict[str, Any] = field(default_factory=dict)
    vault: dict[str, Any] = field(default_factory=dict)
    redis: dict[str, Any] = field(default_factory=dict)
    configuration: dict[str, Any] = field(default_factory=dict)
    audit: dict[str, Any] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    reissued: list[str] = field(default_factory=list)
    services: dict[str, str] = field(default_factory=dict)
    region: str | None = None  # a region of the two-region lab rebuilt (else a folder)

    def to_json(self) -> dict[str, Any]:
        return {
            "into": str(self.into),
            "config": str(self.config),
            "steps": [s.to_json() for s in self.steps],
            "total_seconds": round(self.total_seconds, 3),
            "payments": self.payments,
            "verified": self.verified,
            "database": self.database,
            "vault": self.vault,
            "redis": self.redis,
            "configuration": self.configuration,
            "audit": self.audit,
            "checks": self.checks,
            "reissued": self.reissued,
            "services": self.services,
            "region": self.region,
        }


def result_from_json(d: dict[str, Any]) -> RebuildResult:
    """A :class:`RebuildResult` back from its ``to_json()`` (the run's state file)."""
    steps = [StepTime(s["name"], s["status"], s["seconds"], s["detail"]) for s in d["steps"]]
    return RebuildResult(
        into=Path(d["into"]),
        config=Path(d["config"]),
        steps=steps,
        total_seconds=d["total_seconds"],
        payments=d["payments"],
        verified=d["verified"],
        database=d["database"],
        vault=d["vault"],
        redis=d["redis"],
        configuration=d["configuration"],
        audit=d["audit"],
        checks=d["checks"],
        reissued=d["reissued"],
        services=d["services"],
        region=d["region"],
    )


def check_request(req: RebuildRequest) -> None:
    """:class:`UsageError` (exit 2, nothing done) for a folder that is not empty or a
    secret the operator did not bring."""
    into = req.into.expanduser()
    if into.exists() and (not into.is_dir() or any(into.iterdir())):
        raise UsageError(f"--into {into}: not an empty folder (a rebuild starts from nothing)")
    if not req.repository:
        raise UsageError("no backup repository: give --repository URL (or configure [backup])")
    for option, path, what in (
        ("--key-file", req.key_file, "the backup repository's key"),
        ("--vault-key-file", req.vault_key_file, "the vault's escrowed data key"),
    ):
        if not path.is_file():
            raise UsageError(f"{option} {path}: no such file ({what} must be brought)")
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise UsageError(f"{option} {path}: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------- decide


def decide_vault(
    mode: VaultMode,
    *,
    in_database: bool,
    recovered_until: datetime | None,
    newest_backup_at: datetime | None,
) -> tuple[Literal["backup", "database"], str]:
    """Where the rebuilt vault comes from, and why (pure).

    The database restore brings ``vault_db`` as of the end of the archived WAL; a vault
    backup is newer only when it was taken after the last archived commit. Replacing a
    newer vault with an older backup would lose secrets (clients created since), so
    ``auto`` takes the backup only when it is newer, or when the database has no vault.
    """
    if mode == "database" or (mode == "auto" and newest_backup_at is None):
        if not in_database:
            raise LabError("the restored database holds no vault and there is no vault backup")
        return "database", "the vault as the database restore left it (end of the WAL)"
    if newest_backup_at is None:
        raise LabError("--vault backup: the repository holds no vault backup")
    if mode == "backup":
        return "backup", "the newest vault backup (asked for)"
    if not in_database:
        return "backup", "the restored database holds no vault"
    if recovered_until is None:
        return "database", "the database's vault (how far the WAL reached is unknown)"
    if newest_backup_at > recovered_until:
        return "backup", (
            f"the vault backup ({newest_backup_at.isoformat()}) is newer than the end of "
            f"the WAL ({recovered_until.isoformat()})"
        )
    return "database", (
        f"the database's vault (WAL until {recovered_until.isoformat()}) is newer than the "
        f"newest vault backup ({newest_backup_at.isoformat()})"
    )


# --------------------------------------------------------------------------- doing


@contextlib.contextmanager
def timed_step(journal: Journal, result: RebuildResult, name: str) -> Iterator[StepTime]:
    """One timed step of a rebuild, journaled and appended to ``result.steps`` (a
    failure marks it failed with one line and re-raises)."""
    timing = StepTime(name, "running", 0.0)
    start = time.monotonic()
    try:
        with journal.step(name):
            yield timing
    except BaseException as exc:
        timing.status = "failed"
        timing.detail = timing.detail or " ".join(str(exc).split())[:200]
        raise
    else:
        timing.status = "ok" if timing.status == "running" else timing.status
    finally:
        timing.seconds = time.monotonic() - start
        result.steps.append(timing)


class _Run:
    """One rebuild: the lab being built, the source repository, the timed steps."""

    def __init__(self, req: RebuildRequest) -> None:
        self.req = req
        self.journal = req.journal
        self.lab = Lab(req.into, journal=req.journal)
        self.result = RebuildResult(into=self.lab.dir, config=self.lab.config_path)
        self.source_key = self.lab.key_file("source-repository.key")

    def step(self, name: str) -> contextlib.AbstractContextManager[StepTime]:
        return timed_step(self.journal, self.result, name)

    def open_source(self) -> Any:
        from payapi.backup.errors import WrongKey
        from payapi.backup.repository import Repository

        try:
            return Repository.open_configured(
                self.req.repository, key_file=self.req.key_file, key_env="", create=False
            )
        except WrongKey:
            raise UsageError(
                f"--key-file {self.req.key_file}: not the key of {self.req.repository}; "
                "nothing was done"
            ) from None

    def check_vault_key(self, repo: Any) -> None:
        """Before anything is created: the data key the operator brought must be the one
        the newest vault backup was sealed under (its check value is in the manifest)."""
        from payapi.backup.vault_format import COMPONENT, VaultMeta
        from payapi.core.settings import ConfigError, VaultSettings
        from payapi.vault.crypto import key_check_value, load_data_key

        try:
            key = load_data_key(VaultSettings(data_key_file=self.req.vault_key_file))
        except ConfigError as exc:
            raise UsageError(f"--vault-key-file: {exc}") from None
        backups = repo.list_backups(COMPONENT)
        expected = VaultMeta.of(backups[-1]).key_check if backups else None
        if expected and expected != key_check_value(key):
            raise UsageError(
                f"--vault-key-file {self.req.vault_key_file}: not the data key vault backup "
                f"{backups[-1].backup_id} was sealed with (bring the escrowed key); nothing "
                "was done"
            )

    # -- steps ---------------------------------------------------------------------

    # The steps of the ``system-recovery`` runbook: each a group of the timed steps
    # below, every one of which can run again from its start (a resume re-runs a killed
    # step).
    STAGES: ClassVar[dict[str, tuple[str, ...]]] = {
        "configuration": ("check_vault_key", "prepare", "configuration", "repository"),
        "database": ("database", "audit"),
        "vault": ("vault",),
        "redis": ("redis",),
        "services": ("services",),
        "verify": ("verify",),
    }

    def prepare(self, repo: Any = None) -> None:
        lab = self.lab
        lab.dir.mkdir(parents=True, exist_ok=True)
        lab.secrets_dir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(lab.secrets_dir, 0o700)
        (lab.dir / "audit").mkdir(exist_ok=True)
        lab.key_file("vault-data.key").unlink(missing_ok=True)  # a killed attempt's
        _copy_private(self.req.vault_key_file, lab.key_file("vault-data.key"))

    def configuration(self, repo: Any) -> None:
        from payapi.backup.config_format import COMPONENT
        from payapi.backup.config_restore import restore_config
        from payapi.backup.engines import restore_lock

        with self.step("configuration") as s:
            if not repo.list_backups(COMPONENT):
                s.status, s.detail = "skipped", "no configuration backup: the lab's defaults"
                self.result.configuration = {"backup_id": None}
            else:
                out = self.lab.dir / CONFIG_DIR
                shutil.rmtree(out, ignore_errors=True)  # a killed attempt's
                with restore_lock(repo, COMPONENT, f"system recovery (pid {os.getpid()})"):
                    restored = restore_config(repo, None, out)
                self.result.configuration = restored.to_json()
                self.result.configuration.update(_carry_over(out, self.lab))
                s.detail = f"export {restored.backup_id} into {out}"
            self.lab.write_config()

    def repository(self, repo: Any = None) -> None:
        with self.step("backup repository") as s:
            self.lab.ensure_backup_repository()
            s.detail = f"a new repository for the rebuilt site: {self.lab.repository_url}"

    def database(self, repo: Any) -> None:
        from payapi.backup.postgres import COMPONENT
        from payapi.backup.restore import RestoreRequest, restore
        from payapi.backup.service import component_lock
        from payapi.backup.wal import restore_command
        from payapi.servers.postgres import stop_server

        pg = self.lab.pg
        with self.step("database") as s:
            if pg.datadir.exists():  # what a killed attempt left: restored again
                with contextlib.suppress(Exception):
                    stop_server(pg.datadir, mode="immediate")
                shutil.rmtree(pg.datadir)
            self.source_key.unlink(missing_ok=True)
            _copy_private(self.req.key_file, self.source_key, lab_user=True)
            try:
                req = RestoreRequest(
                    to=pg.datadir,
                    restore_command=restore_command(
                        None, repository=self.req.repository, key_file=self.source_key
                    ),
                    port=pg.port,
                    start=True,
                    recovery_timeout=self.req.recovery_timeout,
                    journal=self.journal,
                )
                with component_lock(repo, COMPONENT, "system recovery"):
                    restored = restore(repo, req)
            finally:
                self.source_key.unlink(missing_ok=True)  # used by recovery only
            # Production now: the lab's settings (archiving into the new repository).
            stop_server(pg.datadir)
            _lab_user_file(pg.logfile)
            pg.start()
            pg.create_database("payment_db")
            pg.create_database("vault_db")
            self.result.payments = int(pg.psql("SELECT count(*) FROM payments", "payment_db"))
            recovered = restored.recovered or {}
            self.result.database = {
                "backup_id": restored.backup_id,
                "chain": restored.chain,
                "timeline": recovered.get("timeline"),
                "recovered_until": _iso(_recovered_until(recovered)),
                "dsn": pg.dsn("payment_db"),
            }
            s.detail = f"backup {restored.backup_id} + WAL; {self.result.payments} payments"

    def audit(self, repo: Any = None) -> None:
        with self.step("audit") as s:
            self.result.audit = asyncio.run(
                _reanchor_audit(self.lab, self.req.audit_head_file, self.result.database)
            )
            a = self.result.audit
            s.detail = f"{a['restored_events']} events restored; head re-anchored, event {a['seq']}"

    def vault(self, repo: Any) -> None:
        from payapi.backup.engines import restore_lock
        from payapi.backup.vault_format import COMPONENT, VaultMeta
        from payapi.backup.vault_restore import restore_vault
        from payapi.core.settings import load_settings

        lab = self.lab
        with self.step("vault") as s:
            backups = repo.list_backups(COMPONENT)
            newest = backups[-1] if backups else None
            source, why = decide_vault(
                self.req.vault,
                in_database=_has_vault(lab),
                recovered_until=_parse(self.result.database.get("recovered_until")),
                newest_backup_at=VaultMeta.of(newest).snapshot_time if newest else None,
            )
            self.journal.note(f"vault: {why}")
            self.result.vault = {"source": source, "why": why, "backup_id": None}
            if source == "backup":
                settings = load_settings(lab.config_path)
                with restore_lock(repo, COMPONENT, f"system recovery (pid {os.getpid()})"):
                    out = restore_vault(repo, settings, journal=self.journal, health_timeout=None)
                self.result.vault["backup_id"] = out.backup_id
                self.result.vault["warnings"] = out.warnings
            lab._ensure_vault_bootstrap()  # checks the data key against the restored vault
            asyncio.run(_reissue_admin_key(lab))
            self.result.reissued.append("vault admin API key")
            lab.start("vault", timeout=self.req.service_timeout)
            asyncio.run(lab._ensure_platform())
            self.result.reissued += ["EAPI host API key", "SAPI host API key"]
            s.detail = f"{source}: {why}"

    def redis(self, repo: Any) -> None:
        with self.step("redis") as s:
            self.lab.redis.start()
            self.result.redis, s.detail = restore_redis_or_rebuild(
                repo, self.lab.config_path, rebuild=self.req.redis_rebuild, journal=self.journal
            )

    def services(self, repo: Any = None) -> None:
        for name in ("postgres", "redis", "vault"):  # running unless someone stopped them
            self.lab.start(name, timeout=self.req.service_timeout)
        for name in ("sapi", "eapi"):
            with self.step(name) as s:
                self.lab.start(name, timeout=self.req.service_timeout)
                s.detail = self.lab.url(name)
        self.result.services = {n: self.lab.url(n) for n in ("vault", "sapi", "eapi")}

    def verify(self, repo: Any = None) -> None:
        with self.step("verify") as s:
            checks = _health(self.lab) + functional_checks(
                self.lab.config_path, self.lab.url("eapi")
            )
            if self.result.audit.get("head_matches") is False:
                checks.append(_check("audit.head", False, self.result.audit["head_detail"]))
            self.result.checks = checks
            self.result.verified = all(c["ok"] for c in checks)
            bad = [c["name"] for c in checks if not c["ok"]]
            s.status = "ok" if not bad else "failed"
            s.detail = "all checks pass" if not bad else "failed: " + ", ".join(bad)


def restore_redis_or_rebuild(
    repo: Any, config: Path, *, rebuild: bool, journal: Journal
) -> tuple[dict[str, Any], str]:
    """The running Redis of ``config`` restored from the newest snapshot (tokens
    dropped), or left empty (``rebuild``, or no snapshot): what was done, and one line."""
    from payapi.backup.redis_backup import COMPONENT
    from payapi.backup.redis_restore import restore_redis
    from payapi.backup.service import component_lock
    from payapi.core.settings import load_settings
    from payapi.systems.redis import redis_control

    if rebuild or not repo.list_backups(COMPONENT):
        why = "asked for" if rebuild else "no Redis snapshot"
        return {"mode": "rebuild", "backup_id": None}, f"empty ({why}): clients re-authenticate"
    settings = load_settings(config)
    with component_lock(repo, COMPONENT, "system recovery"):
        out = restore_redis(repo, settings.redis, redis_control(settings.redis), journal=journal)
    keys = sum(out.final_keys.values())
    done = {"mode": out.mode, "backup_id": out.backup_id, "keys": keys, "tokens": out.tokens}
    return done, f"snapshot {out.backup_id}: {keys} keys"


def preflight(req: RebuildRequest) -> None:
    """Everything that refuses a rebuild before anything is made (exit 2): the folder,
    the keys' files, the repository's key, the vault's data key."""
    check_request(req)
    run = _Run(req)
    repo = run.open_source()
    try:
        run.check_vault_key(repo)
    finally:
        repo.close()


def fresh_result(req: RebuildRequest) -> RebuildResult:
    """What a rebuild into ``req.into`` has found before its first step: nothing."""
    return _Run(req).result


def run_stage(req: RebuildRequest, stage: str, result: RebuildResult) -> RebuildResult:
    """One step of the runbook: ``stage`` of the rebuild into ``req.into``, continuing
    ``result`` (what the earlier steps found; :func:`fresh_result` for the first, after
    :func:`preflight`)."""
    run = _Run(req)
    run.result = result
    return drive_stage(run, stage, run.open_source())


def drive_stage(run: Any, stage: str, repo: Any) -> RebuildResult:
    """Run the methods ``run.STAGES[stage]`` names (each given ``repo``), then close
    ``repo``; ``run.result``'s total is the sum of its steps' times (a resumed run's
    pauses do not count)."""
    names = run.STAGES.get(stage)
    try:
        if names is None:
            raise LabError(f"no step {stage!r} in a system recovery")
        for name in names:
            getattr(run, name)(repo)
    finally:
        repo.close()
        run.result.total_seconds = sum(s.seconds for s in run.result.steps)
    result: RebuildResult = run.result
    return result


# --------------------------------------------------------------------------- helpers


def _copy_private(src: Path, dest: Path, *, lab_user: bool = False) -> None:
    """Copy a key file (0600); ``lab_user``: owned by the lab user, who reads it (the WAL
    fetcher during recovery). Never printed, never logged."""
    from payapi.servers.procs import ensure_lab_user, is_root

    data = src.read_bytes()
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    if lab_user and is_root():
        user = ensure_lab_user()
        os.chown(dest, user.pw_uid, user.pw_gid)


def _lab_user_file(path: Path) -> None:
    from payapi.servers.procs import chown_to_lab_user

    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(exist_ok=True)
    chown_to_lab_user(path)


def _carry_over(restored: Path, lab: Lab) -> dict[str, Any]:
    """What of the backed-up configuration the rebuilt site takes: the operator's
    overrides (``payapi.local.toml``). The rest names the old site (ports, paths) and is
    rewritten; its vault account and admin login must be the lab's."""
    files = restored / "files"
    out: dict[str, Any] = {"overrides": False}
    local = files / "payapi.local.toml"
    if local.is_file():
        shutil.copyfile(local, lab.dir / "payapi.local.toml")
        out["overrides"] = True
    old = files / "payapi.toml"
    if old.is_file():
        try:
            vault = tomllib.loads(old.read_text(encoding="utf-8")).get("vault", {})
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):
            raise LabError(f"the backed-up configuration {old} does not parse") from None
        account, login = vault.get("account", ACCOUNT), vault.get("admin_login", ADMIN_LOGIN)
        if (account, login) != (ACCOUNT, ADMIN_LOGIN):
            raise LabError(
                f"the backed-up configuration names vault account {account!r} / admin "
                f"{login!r}; the lab rebuilds {ACCOUNT!r} / {ADMIN_LOGIN!r} only"
            )
    export = restored / "payapi-export.yaml"
    if export.is_file():
        import yaml

        meta = yaml.safe_load(export.read_text(encoding="utf-8")) or {}
        out["not_exported"] = [r.get("path") for r in meta.get("not_exported", [])]
    return out


def _has_vault(lab: Lab) -> bool:
    from payapi.servers.procs import ServerError

    try:
        return int(lab.pg.psql("SELECT count(*) FROM accounts", "vault_db")) > 0
    except (ServerError, ValueError):
        return False


async def _reissue_admin_key(lab: Lab) -> None:
    """A new API key for the vault's admin, written straight into the restored vault
    database (its old key exists only as a digest, and its file died with the old site)."""
    import asyncpg

    from payapi.credentials.platform import write_private
    from payapi.vault import ids
    from payapi.vault.service import rotate_api_key

    conn = await asyncpg.connect(lab.pg.dsn("vault_db"))
    try:
        key = await rotate_api_key(conn, role_id=ids.full_id(ACCOUNT, "user", ADMIN_LOGIN))
    finally:
        await conn.close()
    write_private(lab.key_file("admin.api_key"), key)


async def _reanchor_audit(
    lab: Lab, brought: Path | None, database: dict[str, Any]
) -> dict[str, Any]:
    """The audit head lives outside the database (WORM in production) and is not in any
    backup: the rebuilt site's head is re-anchored at the restored log's newest event,
    and the re-anchoring is itself an audit event. With the old site's head
    (``brought``): events it counts beyond the recovery point were lost with the data
    window (reported); a head that the restored log contradicts is reported as such."""
    import asyncpg

    from payapi.audit import Head, append, read_head, write_head

    head_file = lab.dir / "audit" / "head.json"
    out: dict[str, Any] = {"restored_events": 0, "head_brought": brought is not None}
    conn = await asyncpg.connect(lab.pg.dsn("payment_db"))
    try:
        row = await conn.fetchrow("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
        if row is not None:
            out["restored_events"] = int(row["seq"])
            write_head(head_file, Head(int(row["seq"]), str(row["hash"])))
        old = read_head(brought) if brought is not None else None
        if old is not None:
            at = await conn.fetchval("SELECT hash FROM audit_events WHERE seq = $1", old.seq)
            if at is None:
                out["events_after_recovery_point"] = old.seq - out["restored_events"]
                out["head_matches"] = True
            else:
                out["head_matches"] = at == old.hash
            if not out["head_matches"]:
                out["head_detail"] = (
                    f"the restored audit log's event {old.seq} is not the one the old "
                    f"site's head names: the log was altered"
                )
        event = await append(
            conn,
            type="system.recovered",
            actor="payapi recover system",
            subject=str(lab.dir),
            details={
                "backup_id": database.get("backup_id"),
                "recovered_until": database.get("recovered_until"),
                "restored_events": out["restored_events"],
                "events_after_recovery_point": out.get("events_after_recovery_point"),
            },
            head_file=head_file,
        )
        out["seq"] = event.seq
    finally:
        await conn.close()
    return out


def _recovered_until(recovered: dict[str, Any]) -> datetime | None:
    value = recovered.get("stopped_at_commit_time") or recovered.get("last_transaction_at")
    return value if isinstance(value, datetime) else _parse(value)


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _check(name: str, ok: bool, detail: str) -> dict[str, Any]:
    return {"name": name, "ok": ok, "detail": detail}


def _health(lab: Lab) -> list[dict[str, Any]]:
    from payapi.servers.procs import ServerError

    out = []
    try:
        ok = lab.pg.psql("SELECT 1", "payment_db") == "1"
        out.append(_check("health.postgres", ok, 'psql -c "SELECT 1"'))
    except ServerError as exc:
        out.append(_check("health.postgres", False, str(exc)))
    import redis

    try:
        with redis.Redis.from_url(lab.redis.url, socket_timeout=2) as r:
            out.append(_check("health.redis", bool(r.ping()), "redis-cli PING"))
    except redis.RedisError as exc:
        out.append(_check("health.redis", False, type(exc).__name__))
    for name in ("vault", "sapi", "eapi"):
        url = lab._health_url(name)
        out.append(_check(f"health.{name}", lab._healthy(name), f"GET {url}"))
    return out


def functional_checks(config: Path, eapi_url: str) -> list[dict[str, Any]]:
    """The seed's curls against ``eapi_url``: authenticate with a new client's headers
    (made with the platform of ``config``), then a payment."""
    from payapi.core.settings import load_settings
    from payapi.credentials.service import Platform, create_client

    async def new_client() -> tuple[str, str]:
        p = Platform.from_settings(load_settings(config))
        try:
            stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
            made = await create_client(p, name=f"{VERIFY_CLIENT}-{stamp}")
            return made.client_id, made.client_secret.get_secret_value()
        finally:
            await p.aclose()

    try:
        client_id, secret = asyncio.run(new_client())
    except Exception as exc:  # the vault's, a missing key: reported, not raised
        return [_check("functional.client", False, f"{type(exc).__name__}: {exc}"[:200])]
    headers = {"X-Client-ID": client_id, "X-Client-Secret": secret}
    out = [_check("functional.client", True, "a verification client created")]
    with httpx.Client(base_url=eapi_url, timeout=15, trust_env=False) as http:
        try:
            r = http.post("/api/v1/authenticate", headers=headers)
            ok = r.status_code == 200 and bool(r.json().get("access_token"))
            out.append(_check("functional.authenticate", ok, f"HTTP {r.status_code}"))
            body = {"amount": "100.00", "currency": "USD", "reference": "TEST-12345"}
            r = http.post("/api/v1/payments", headers=headers, json=body)
            detail = f"HTTP {r.status_code}" + (
                f", payment {r.json().get('id')}" if r.status_code == 201 else ""
            )
            out.append(_check("functional.payment", r.status_code == 201, detail))
        except (httpx.HTTPError, ValueError) as exc:
            out.append(_check("functional", False, type(exc).__name__))
    return out
