"""The two-region lab as the system a drill acts on (:class:`payapi.drills.runner.DrillSystem`).

Injections are the real failures: ``kill -9`` of processes the lab started, a whole
region's processes at once, the backup repository or a communication channel taken
away. Everything an operator would do (the health check, a recovery runbook, the
regional failover and failback, a corruption recovery) is the ``payapi`` command itself
(:class:`payapi.drills.cli_system.CliDrillSystem`). Restore-normal is idempotent: it starts
whatever of the serving region is not running and waits until the roles are the lab's
normal ones, so it can be run again after a runner was killed.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from payapi.drills.cli_system import CliDrillError, CliDrillSystem
from payapi.drills.spec import DrillSpec
from payapi.lab.regions import CHANNELS, TwoRegionLab
from payapi.servers.postgres import psql
from payapi.servers.procs import ServerError, read_pid, wait_for

__all__ = ["LabDrillError", "LabDrillSystem"]

PRIMARY = "primary"
ASIDE = ".drill-unreachable"  # where an outage puts the repository or a channel's folder
DRAIN_TIMEOUT = 90.0


class LabDrillError(CliDrillError):
    """A lab action of a drill failed (one line)."""


class LabDrillSystem(CliDrillSystem):
    restore_what = "start what was killed; fail back if DR serves; wait for the normal roles"

    def __init__(self, lab: TwoRegionLab, environment: str = "lab") -> None:
        super().__init__(lab.config_path, environment)
        self.lab = lab
        self._corrupted_at: datetime | None = None
        self._leaked: tuple[str, str, SecretStr, SecretStr] | None = None
        self._archiver_before: int | None = None

    @property
    def endpoint_url(self) -> str:
        return self.lab.endpoint_url

    def payment_dsn(self) -> str:
        return self.lab.region(self._active()).dsn("payment_db")

    def _active(self) -> str:
        return self.lab.active_region

    # -- DrillSystem ---------------------------------------------------------------

    def inject(self, spec: DrillSpec) -> str:
        done = self._inject(spec)
        if spec.injection.channel_down:
            done += "; " + self._channel_down()
        return done

    def _inject(self, spec: DrillSpec) -> str:
        inj = spec.injection
        if inj.kind == "store-outage":
            return self._store_outage()
        if inj.kind == "kill":
            assert inj.component is not None
            return self._kill(inj.component)
        if inj.kind == "region-outage":
            if self._active() != PRIMARY:
                raise LabDrillError(
                    "the primary region does not serve: run payapi drill restore-normal"
                )
            killed = self.lab.stop_region(PRIMARY)
            return f"region {PRIMARY} down: kill -9 of {len(killed)} processes"
        if inj.kind == "corrupt-payments":
            return self._corrupt(inj.updated, inj.deleted)
        if inj.kind == "leak-credentials":
            return self._leak()
        raise LabDrillError(f"no injection {inj.kind!r} in the lab")

    def _kill(self, component: str) -> str:
        r = self.lab.region(self._active())
        if component in ("eapi", "sapi"):
            pids = [p for p in [read_pid(r.service(component).pidfile)] if p is not None]
        elif component == "vault":
            pids = [p for v in r.vaults() if (p := read_pid(v.pidfile)) is not None]
        elif component == "redis":
            master = self._redis_master()
            pids = [master.pid] if master is not None and master.pid is not None else []
        else:  # db: the Patroni leader and its postmaster
            leader = self._db_leader()
            if leader is None:
                raise LabDrillError("no database leader to kill")
            leader.kill()
            return f"kill -9 of the database leader {leader.name} (Patroni and PostgreSQL)"
        if not pids:
            raise LabDrillError(f"no running {component} process in region {r.name}")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
        return f"kill -9 of {component} in region {r.name} (pid {', '.join(map(str, pids))})"

    def _redis_master(self) -> Any:
        from payapi.systems.redis import replication_info

        for server in self.lab.region(self._active()).redis_servers:
            try:
                if server.is_running() and replication_info(server.url)["role"] == "master":
                    return server
            except Exception:  # noqa: S112 (a server going down is no master)
                continue
        return None

    def _db_leader(self) -> Any:
        roles = self._db_roles()
        r = self.lab.region(self._active())
        return next((m for m in r.members if roles.get(m.name) == "leader"), None)

    def _db_roles(self) -> dict[str, str]:
        from payapi.systems.patroni import PatroniClient, PatroniError

        r = self.lab.region(self._active())
        try:
            view = PatroniClient([m.rest_url for m in r.members]).cluster()
        except PatroniError:
            return {}
        return {m.name: m.role for m in view.members if m.state in ("running", "streaming")}

    def _corrupt(self, updated: int, deleted: int) -> str:
        """Change the amounts of ``updated`` recent payments and delete ``deleted`` others,
        as a faulty deployment would; the time is the drill's ``injected_at``."""
        dsn = self.lab.region(self._active()).dsn("payment_db")
        newest = f"SELECT id FROM payments ORDER BY created_at DESC LIMIT {updated + deleted:d}"  # noqa: S608
        rows = psql(dsn, newest)
        ids = [r[0] for r in rows]
        if len(ids) < updated + deleted:
            raise LabDrillError(f"only {len(ids)} payments to corrupt")
        self._corrupted_at = datetime.now(UTC)
        up, down = ids[:updated], ids[updated:]
        if up:
            listed = ",".join(f"'{i}'" for i in up)
            psql(dsn, f"UPDATE payments SET amount = amount * 100 WHERE id IN ({listed})")  # noqa: S608 (ids read from the table)
        if down:
            listed = ",".join(f"'{i}'" for i in down)
            psql(dsn, f"DELETE FROM payments WHERE id IN ({listed})")  # noqa: S608 (ids read from the table)
        return f"corrupted {len(up)} payments (amounts changed) and deleted {len(down)}"

    def _leak(self) -> str:
        """A client made for the drill, whose secret and one bearer token are "leaked"
        (kept in this process's memory only)."""
        import httpx

        name = f"leak-{os.urandom(3).hex()}"
        client = self.cli("clients", "create", name)
        secret = SecretStr(str(client.pop("client_secret")))
        client_id = str(client["client_id"])
        headers = {"X-Client-ID": client_id, "X-Client-Secret": secret.get_secret_value()}
        with httpx.Client(base_url=self.lab.endpoint_url, timeout=10, trust_env=False) as http:
            r = http.post("/api/v1/authenticate", headers=headers)
        if r.status_code != 200:
            raise LabDrillError(f"the client to leak cannot authenticate ({r.status_code})")
        self._leaked = (name, client_id, secret, SecretStr(str(r.json()["access_token"])))
        return f"client {name}: its secret and a bearer token are taken as leaked"

    def _breach(self, spec: DrillSpec) -> str:
        import httpx

        if self._leaked is None:
            raise LabDrillError("nothing was leaked: no breach to recover from")
        name, client_id, secret, token = self._leaked
        out = self.cli("recover", "breach", "--reason", f"drill {spec.name}: leaked credentials",
                       "--clients", name, "--yes")  # fmt: skip
        headers = {"X-Client-ID": client_id, "X-Client-Secret": secret.get_secret_value()}
        bearer = {"Authorization": f"Bearer {token.get_secret_value()}"}
        with httpx.Client(base_url=self.lab.endpoint_url, timeout=10, trust_env=False) as http:
            by_secret = http.post("/api/v1/authenticate", headers=headers).status_code
            by_token = http.get(f"/api/v1/payments/{uuid.uuid4()}", headers=bearer).status_code
        if by_secret == 200:
            raise LabDrillError("containment failed: the leaked secret still authenticates")
        if by_token not in (401, 403):
            raise LabDrillError(f"containment failed: the leaked token answers {by_token}")
        steps = len(out.get("steps", []))
        return (
            f"recover breach of {name}: {steps} steps; the leaked secret is refused"
            f" ({by_secret}) and the leaked token too ({by_token})"
        )

    def recover(self, spec: DrillSpec) -> str:
        done = self._recover(spec)
        if spec.recovery.component_failure is not None:
            done += "; " + self._component_failure(spec.recovery.component_failure)
        if spec.injection.channel_down:
            done += "; " + self._status_update(spec)
        return done

    def _recover(self, spec: DrillSpec) -> str:
        rec = spec.recovery
        if rec.kind == "store-return":
            return self._store_return()
        if rec.kind == "breach":
            return self._breach(spec)
        if rec.kind == "region-failover":
            out = self.cli("region", "failover", "--to", "dr", "--yes")
            return f"region failover to dr in {out.get('total_seconds', '?')}s"
        if rec.runbook == "corruption-db":
            since = self._corrupted_at or datetime.now(UTC)
            plan_file = self.lab.dir / "drills" / f"correction-plan-{since:%Y%m%dT%H%M%SZ}.json"
            out = self.cli(
                *("recover", "corruption", "--component", "db", "--since", since.isoformat()),
                *("--plan-file", str(plan_file), "--apply", "--yes"),
            )
            return (
                f"corruption-db: {out.get('deleted_rows_restored', 0)} deleted rows restored,"
                f" {out.get('restored_rows', 0)} rows restored, {out.get('kept_rows', 0)} kept"
            )
        return self.run_runbook(spec)

    def restore_normal(self, spec: DrillSpec) -> str:
        """Idempotent: the primary region serves, every server of it runs, the roles are
        the lab's normal ones (leader + sync standby; a Redis master with a replica)."""
        done: list[str] = []
        if self._put_back(self.lab.backups_dir):
            done.append("the backup repository is reachable again")
        if self._put_back(self.lab.channel_dir("primary")):
            done.append("the primary communication channel is up again")
        if self._active() != PRIMARY:
            self.lab.start_region(PRIMARY)  # comes back fenced: a standby of DR
            self.cli("region", "failback", "--to", PRIMARY, "--yes")
            done.append("started the primary region and failed back to it")
        elif self.lab.region(PRIMARY).stopped():
            self.lab.start_region(PRIMARY)
            done.append("started the primary region")
        r = self.lab.region(PRIMARY)
        for m in r.members:
            if not m.is_running():
                m.start()
                done.append(f"started {m.name}")
        dead = [s for s in r.redis_servers if not s.is_running()]
        if dead and r.sentinels and len(dead) < len(r.redis_servers):
            # A Redis started again before Sentinel promoted its replica comes back empty
            # (no persistence) as the master, and the replica resyncs from it: every
            # token gone. Wait for the promotion first (it then rejoins as a replica).
            self._wait_promoted(r)
        for server in dead:
            server.start()
            done.append(f"started redis :{server.port}")
        for sentinel in r.sentinels:
            if not sentinel.is_running():
                sentinel.start()
        for svc in (*r.vaults(), r.service("sapi"), r.service("eapi")):
            if not svc.is_running():
                try:
                    svc.start(timeout=90)
                except ServerError as exc:
                    raise LabDrillError(f"cannot start {svc.name}: {exc}") from None
                done.append(f"started {svc.name}")
        self._wait_normal()
        return "; ".join(done) or "nothing to do: the lab was normal"

    def _wait_promoted(self, r: Any, timeout: float = 60.0) -> None:
        from payapi.lab.region import SENTINEL_MASTER
        from payapi.systems.redis import replication_info, sentinel_master

        def promoted() -> bool:
            try:
                addr = sentinel_master(r.sentinel_addrs(), SENTINEL_MASTER, 0.5)
            except Exception:  # Sentinels not answering yet
                return False
            if addr is None:
                return False
            server = next((s for s in r.redis_servers if s.port == int(addr[1])), None)
            if server is None or not server.is_running():
                return False
            try:
                return replication_info(server.url)["role"] == "master"
            except Exception:  # going down or not up yet
                return False

        try:
            wait_for(promoted, timeout=timeout, what="Sentinel promoting a running Redis replica")
        except ServerError as exc:
            raise LabDrillError(str(exc)) from None

    def _wait_normal(self, timeout: float = 120.0) -> None:
        def db_ok() -> bool:
            return sorted(self._db_roles().values()) == ["leader", "sync_standby"]

        def redis_ok() -> bool:
            from payapi.systems.redis import replication_info

            roles = []
            for s in self.lab.region(PRIMARY).redis_servers:
                try:
                    roles.append(str(replication_info(s.url)["role"]))
                except Exception:  # not up yet
                    return False
            return sorted(roles) == ["master", "replica"]

        try:
            wait_for(db_ok, timeout=timeout, what="the database leader with its sync standby")
            wait_for(redis_ok, timeout=60, what="a Redis master with its replica")
            # Normal means healthy: after a failback the vault may still be taking over
            # (CI caught the next drill's steady state refused on it).
            wait_for(lambda: self.health()[0], timeout=90, what="payapi health check passing",
                     interval=1.0)  # fmt: skip
        except ServerError as exc:
            raise LabDrillError(str(exc)) from None

    # -- vendor outages, communication channels, a second failure ------------------------

    def _take_away(self, path: Path, what: str) -> Path:
        """Move ``path`` aside, as a store or channel that cannot be reached: nothing is
        deleted, and :meth:`_put_back` (restore-normal) brings it back."""
        aside = path.with_name(path.name + ASIDE)
        if aside.exists():
            raise LabDrillError(f"{what} is already down: run payapi drill restore-normal")
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.rename(aside)
        else:
            aside.mkdir()
        return aside

    def _put_back(self, path: Path) -> bool:
        """Idempotent: True when ``path`` was down and is back."""
        aside = path.with_name(path.name + ASIDE)
        if not aside.exists():
            return False
        if path.is_file() or path.is_symlink():
            path.unlink()  # a channel's folder replaced by a file
        elif path.is_dir():
            if any(p.is_file() for p in path.rglob("*")):
                raise LabDrillError(
                    f"{path} was written while it was down; compare it with {aside} by hand"
                )
            import shutil

            shutil.rmtree(path)
        aside.rename(path)
        return True

    def _archiver(self) -> tuple[int, str]:
        """pg_stat_archiver of the serving leader: failed attempts, last archived WAL."""
        dsn = self.lab.region(self._active()).dsn("postgres")
        rows = psql(dsn, "SELECT failed_count, coalesce(last_archived_wal, '')"
                         " FROM pg_stat_archiver")  # fmt: skip
        return int(rows[0][0]), rows[0][1]

    def _switch_wal(self) -> str:
        """Close the current WAL segment (so that the archiver has one to push); its name."""
        dsn = self.lab.region(self._active()).dsn("postgres")
        return psql(dsn, "SELECT pg_walfile_name(pg_switch_wal())")[0][0]

    def _store_outage(self) -> str:
        repo = self.lab.backups_dir
        if not repo.is_dir():
            raise LabDrillError(f"no backup repository at {repo}")
        self._archiver_before = self._archiver()[0]
        self._take_away(repo, "the backup repository")
        self._switch_wal()
        return f"the backup repository {repo} is unreachable (taken away, like an unmounted store)"

    def _store_return(self) -> str:
        """While the store is down, PostgreSQL must keep the WAL it cannot archive and a
        backup must fail cleanly; once it is back, the WAL drains and a backup succeeds."""
        failed_before = self._archiver_before or 0

        def refused() -> bool:
            return self._archiver()[0] > failed_before

        try:
            wait_for(refused, timeout=30, what="the archiver reporting a refused push")
        except ServerError:
            raise LabDrillError("no archive attempt failed while the store was down") from None
        code, _, why = self._run_cli("backup", "run", "--component", "db", timeout=120)
        if code == 0:
            raise LabDrillError("a backup succeeded into an unreachable repository")
        refused_backup = f"a backup during the outage failed cleanly (exit {code}: {why})"
        failed_during = self._archiver()[0] - failed_before
        self._put_back(self.lab.backups_dir)
        back = time.monotonic()
        segment = self._switch_wal()

        def drained() -> bool:
            last = self._archiver()[1]
            return bool(last) and last[:24] >= segment[:24]

        try:
            wait_for(drained, timeout=DRAIN_TIMEOUT, what="the WAL draining", interval=0.5)
        except ServerError:
            raise LabDrillError(
                f"the WAL kept during the outage did not drain in {DRAIN_TIMEOUT:g}s"
            ) from None
        took = time.monotonic() - back
        done = self.cli("backup", "run", "--component", "db", timeout=300)
        backup = done.get("backup_id", done.get("id", "a backup"))
        return (
            f"{failed_during} archive pushes refused while the store was down and PostgreSQL"
            f" kept the WAL; {refused_backup}; the store is back: the WAL drained in"
            f" {took:.1f}s (up to {segment}) and {backup} was accepted"
        )

    def _channel_down(self) -> str:
        folder = self.lab.channel_dir("primary")
        self._take_away(folder, "the primary communication channel")
        folder.write_text("down for a drill: payapi drill restore-normal brings it back\n")
        return f"the primary communication channel ({folder.name}) is down"

    def _component_failure(self, component: str) -> str:
        region = self._active()
        killed = self._kill(component)
        started = time.monotonic()
        out = self.cli("recover", "component", component, "--region", region, "--yes")
        outcome = out.get("outcome", out.get("status", "done"))
        return (
            f"then {killed}; payapi recover component {component} --region {region}:"
            f" {outcome} in {time.monotonic() - started:.1f}s"
        )

    def _status_update(self, spec: DrillSpec) -> str:
        if self.incident_id is None:
            raise LabDrillError("no drill incident: the status update cannot be sent")
        code, data, why = self._run_cli(
            *("incident", "update", self.incident_id, "--status", "recovering"),
            *("--progress", f"{spec.title}: the recovery is done"),
            timeout=120,
        )
        sent = data.get("sent", []) if isinstance(data, dict) else []
        through = sorted({s["channel"] for s in sent if s.get("ok")})
        failed = sorted({s["channel"] for s in sent if not s.get("ok")})
        if code != 0 or not through:
            raise LabDrillError(f"the status update reached no channel: {why}")
        if CHANNELS["primary"] in through:
            raise LabDrillError("the status update went through the channel that is down")
        return (
            f"status update of {self.incident_id} sent through {', '.join(through)}"
            f" (down: {', '.join(failed) or 'none'})"
        )
