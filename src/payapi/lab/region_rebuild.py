"""A lost region of the two-region lab rebuilt from backups: ``payapi recover system
--from-backups --region dr``.

The seed's "Complete System Recovery" for one region: the region's servers are gone
and their data folders empty (:func:`check_region` refuses anything else), the other
region serves. The region is rebuilt from the backup repository alone, the way the lab
builds it (:meth:`TwoRegionLab.start_region`), with the database seeded from the newest
backup instead of cloned from the serving region. Steps, each timed:

1. **configuration**: the newest configuration export is checked out into
   ``regions/NAME/restored-config/`` (for the operator to compare); the region is
   re-registered in ``lab.json`` (new ports if its entry was lost too) and its
   ``payapi.toml`` written anew.
2. **database**: the newest full (+ incrementals) is extracted into the data folder of
   the region's first Patroni member; etcd is started and told that the region's cluster
   is a *standby cluster* of the serving region (before Patroni starts, see
   :meth:`TwoRegionLab._fence_dcs`); Patroni then recovers the backup through every
   archived WAL segment (``payapi wal fetch`` from the repository) and streams from the
   serving region. A non-serving region is never writable, so a rebuilt region is a
   standby again: ``payapi region failover`` makes it serve.
3. **vault**: the region's vault on the standby's ``vault_db`` (the data key is the
   lab's, shared by both regions).
4. **redis**: the newest Redis snapshot (tokens dropped), or empty.
5. **services**: SAPI and EAPI are configured with zero replicas (fenced), as the lab
   keeps a standby region.
6. **verify**: the region's health (PostgreSQL a streaming standby leader, Redis PING,
   vault), the payments of the newest backup and WAL present, the seed's curls through
   the lab's endpoint (authenticate, a payment) and that payment replicated into the
   rebuilt region.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import redis as redis_client

from payapi.core.errors import UsageError
from payapi.core.journal import Journal
from payapi.lab.platform import LabError
from payapi.lab.rebuild import (
    CONFIG_DIR,
    RebuildResult,
    StepTime,
    _check,
    drive_stage,
    functional_checks,
    restore_redis_or_rebuild,
    timed_step,
)
from payapi.lab.region import REGIONS, LabRegion, allocate_ports
from payapi.lab.regions import TwoRegionLab
from payapi.servers.procs import wait_for

__all__ = ["RegionRebuildRequest", "check_region", "fresh_region_result", "run_region_stage"]


@dataclass
class RegionRebuildRequest:
    lab: TwoRegionLab
    region: str
    redis_rebuild: bool = False
    verify: bool = True
    catch_up_timeout: float = 120.0
    journal: Journal = field(default_factory=Journal)


def _data(r: LabRegion) -> list[Path]:
    """What of the region's data is still on disk (etcd's, PostgreSQL's, Redis's)."""
    found = [p for p in (r.etcd.workdir / "data", *(m.datadir for m in r.members)) if _full(p)]
    for s in r.redis_servers:
        if s.workdir.is_dir():
            found += [p for p in s.workdir.iterdir() if p.suffix == ".rdb" or "append" in p.name]
    return found


def _full(path: Path) -> bool:
    return path.exists() and (not path.is_dir() or any(path.iterdir()))


def check_region(lab: TwoRegionLab, name: str) -> None:
    """:class:`UsageError` (exit 2, nothing done) unless ``name`` is a region of this
    two-region lab that does not serve and is empty: none of its processes alive and
    its etcd, PostgreSQL and Redis folders empty or absent."""
    lab.require_existing()
    if name not in REGIONS:
        raise UsageError(f"--region {name}: the lab has no such region ({', '.join(REGIONS)})")
    if name == lab.active_region:
        raise UsageError(
            f"--region {name}: it is the active, writable region (a rebuild is for a lost "
            "region that does not serve; never two writable regions)"
        )
    if name not in lab._state()["regions"]:
        return  # lost with its entry in lab.json: re-registered by the rebuild
    r = lab.region(name)
    if not r.stopped():
        raise UsageError(
            f"--region {name}: not empty, its servers are running (stop it first: payapi "
            f"lab stop --region {name})"
        )
    full = _data(r)
    if full:
        raise UsageError(
            f"--region {name}: not empty, {full[0]} holds data (a rebuild starts from nothing)"
        )


class _RegionRun:
    def __init__(self, req: RegionRebuildRequest) -> None:
        self.req = req
        self.lab = req.lab
        self.journal = req.journal
        self.name = req.region
        d = self.lab.region_dir(self.name)
        self.result = RebuildResult(into=d, config=d / "payapi.toml", region=self.name)

    def step(self, name: str) -> contextlib.AbstractContextManager[StepTime]:
        return timed_step(self.journal, self.result, name)

    @property
    def r(self) -> LabRegion:
        return self.lab.region(self.name)

    def open_repository(self) -> Any:
        from payapi.backup.repository import Repository

        return Repository.open_configured(
            self.lab.repository_url,
            key_file=self.lab.repository_key_file,
            key_env="",
            create=False,
        )

    STAGES: ClassVar[dict[str, tuple[str, ...]]] = {
        n: (n,) for n in ("configuration", "database", "vault", "redis", "services", "verify")
    }

    # -- steps ---------------------------------------------------------------------

    def configuration(self, repo: Any) -> None:
        from payapi.backup.config_format import COMPONENT
        from payapi.backup.config_restore import restore_config
        from payapi.backup.engines import restore_lock

        with self.step("configuration") as s:
            register_region(self.lab, self.name)
            out = self.lab.region_dir(self.name) / CONFIG_DIR
            if not repo.list_backups(COMPONENT):
                self.result.configuration = {"backup_id": None}
                s.detail = "no configuration backup: the lab's configuration"
            else:
                shutil.rmtree(out, ignore_errors=True)  # a killed attempt's
                with restore_lock(repo, COMPONENT, f"region rebuild (pid {os.getpid()})"):
                    restored = restore_config(repo, None, out)
                self.result.configuration = restored.to_json()
                s.detail = f"export {restored.backup_id} into {out}"
            self.lab.write_configs()
            self.result.config = self.r.config_path

    def database(self, repo: Any) -> None:
        from payapi.backup.materialize import materialize, own
        from payapi.backup.postgres import COMPONENT, PgMeta
        from payapi.backup.restore_plan import Target, backup_chain, choose_base
        from payapi.backup.service import component_lock
        from payapi.servers.postgres import client_bindir, server_bindir

        r = self.r
        first = r.members[0]
        with self.step("database") as s:
            if any(_full(p) for p in (r.etcd.workdir / "data", *(m.datadir for m in r.members))):
                r.kill()  # what a killed attempt of this run left: restored again
                wait_for(r.stopped, timeout=30, what=f"region {self.name}'s processes to die")
                shutil.rmtree(r.etcd.workdir / "data", ignore_errors=True)
                for m in r.members:
                    shutil.rmtree(m.datadir, ignore_errors=True)
            with component_lock(repo, COMPONENT, "region rebuild"):
                backups = repo.list_backups(COMPONENT)
                base = choose_base(backups, Target())
                chain = backup_chain(backups, base)
                major = PgMeta.of(base).pg_major or 0
                bindir = server_bindir(major) if major else client_bindir()
                first.workdir.mkdir(parents=True, exist_ok=True)
                materialize(repo, chain, first.datadir, bindir=bindir, journal=self.journal)
            for name in ("postmaster.pid", "recovery.signal", "standby.signal"):
                (first.datadir / name).unlink(missing_ok=True)
            own(first.datadir)
            r.etcd.start()
            seed_standby_dcs(r)
            for m in r.members:
                m.start()
            self.lab._wait_members(r, serving=False, timeout=self.req.catch_up_timeout)
            self.result.payments = _count_payments(r)
            self.result.database = {
                "backup_id": base.backup_id,
                "chain": [b.backup_id for b in chain],
                "role": "standby_leader",
                "standby_of": self.lab.active_region,
                "dsn": r.dsn("payment_db", "any"),
            }
            s.detail = (
                f"backup {base.backup_id} + WAL; a standby of {self.lab.active_region}; "
                f"{self.result.payments} payments"
            )

    def vault(self, repo: Any = None) -> None:
        with self.step("vault") as s:
            for v in self.r.vaults():
                v.start(timeout=90)
            self.result.vault = {"source": "database", "why": "the standby's vault_db"}
            s.detail = "on the standby's vault_db (reads until the region is promoted)"

    def redis(self, repo: Any) -> None:
        r = self.r
        with self.step("redis") as s:
            for server in r.redis_servers:
                server.start()
            for sentinel in r.sentinels:
                sentinel.start()
            self.result.redis, s.detail = restore_redis_or_rebuild(
                repo, r.config_path, rebuild=self.req.redis_rebuild, journal=self.journal
            )

    def services(self, repo: Any = None) -> None:
        from payapi.lab.region import url

        r = self.r
        with self.step("services") as s:
            s.detail = "sapi, eapi: configured, 0 replicas (fenced: payapi region failover)"
        self.result.services = {
            "vault": url(r.ports["vault1"]),
            "sapi": url(r.ports["sapi"]),
            "eapi": url(r.ports["eapi"]),
        }

    def verify(self, repo: Any = None) -> None:
        with self.step("verify") as s:
            checks = self._health() + functional_checks(self.lab.config_path, self.lab.endpoint_url)
            checks.append(self._replicated())
            self.result.checks = checks
            self.result.verified = all(c["ok"] for c in checks)
            bad = [c["name"] for c in checks if not c["ok"]]
            s.status = "ok" if not bad else "failed"
            s.detail = "all checks pass" if not bad else "failed: " + ", ".join(bad)

    def _health(self) -> list[dict[str, Any]]:
        import httpx

        from payapi.servers.postgres import psql
        from payapi.systems.patroni import PatroniClient, PatroniError

        r = self.r
        out = []
        try:
            view = PatroniClient([m.rest_url for m in r.members], timeout=2.0).cluster()
            roles = sorted(f"{m.name}={m.role}/{m.state}" for m in view.members)
            ok = any(m.role == "standby_leader" and m.state == "streaming" for m in view.members)
            out.append(_check("health.postgres", ok, ", ".join(roles) or "no member"))
        except PatroniError as exc:
            out.append(_check("health.postgres", False, str(exc)))
        try:
            ok = bool(psql(r.dsn("payment_db", "any"), "SELECT 1"))
            out.append(_check("health.postgres.query", ok, 'psql -c "SELECT 1"'))
        except Exception as exc:  # a check, not an error
            out.append(_check("health.postgres.query", False, type(exc).__name__))
        try:
            with redis_client.Redis.from_url(r.redis_servers[0].url, socket_timeout=2) as c:
                out.append(_check("health.redis", bool(c.ping()), "redis-cli PING"))
        except redis_client.RedisError as exc:
            out.append(_check("health.redis", False, type(exc).__name__))
        for v in r.vaults():
            try:
                ok = httpx.get(v.health_url, timeout=2.0, trust_env=False).status_code == 200
            except httpx.HTTPError:
                ok = False
            out.append(_check(f"health.vault:{v.port}", ok, f"GET {v.health_url}"))
        return out

    def _replicated(self) -> dict[str, Any]:
        """The serving region's payments (the verification payment included) all in the
        rebuilt region: it streams."""
        from payapi.servers.postgres import psql

        active = self.lab.region(self.lab.active_region)
        try:
            want = int(psql(active.dsn("payment_db"), "SELECT count(*) FROM payments")[0][0])
        except Exception as exc:  # a check, not an error
            return _check("replication.payments", False, f"serving region: {exc}"[:200])
        deadline = time.monotonic() + self.req.catch_up_timeout
        have = -1
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                have = _count_payments(self.r)
                if have >= want:
                    break
            time.sleep(0.5)
        self.result.payments = max(have, self.result.payments or 0)
        return _check(
            "replication.payments",
            have >= want,
            f"{have} of the serving region's {want} payments in {self.name}",
        )


def _count_payments(r: LabRegion) -> int:
    from payapi.servers.postgres import psql

    return int(psql(r.dsn("payment_db", "any"), "SELECT count(*) FROM payments")[0][0])


def register_region(lab: TwoRegionLab, name: str) -> None:
    """Give ``name`` its entry in ``lab.json`` again (new free ports) if it was lost."""
    state = lab._state()
    if name in state["regions"]:
        return
    taken = {p for ports in state["regions"].values() for p in ports.values()}
    taken |= set(state["ports"].values())
    state["regions"][name] = allocate_ports(name, taken)
    lab._write_state(state)


def seed_standby_dcs(r: LabRegion) -> None:
    """Before Patroni starts on restored data: the region's cluster configuration in its
    (empty) etcd, naming the serving region as upstream. Patroni reads the
    ``standby_cluster`` from the DCS, not from its YAML, when it takes over a data
    folder it did not bootstrap; without this the restored member would come up as a
    normal, writable leader."""
    from payapi.servers.etcd import etcd_get, etcd_put

    key = f"/payapi/{r.scope}/config"
    if etcd_get(r.etcd, key) is not None:
        return
    config = r.members[0].config()
    dcs = config["bootstrap"]["dcs"]
    if "standby_cluster" not in dcs:
        raise LabError(f"region {r.name} has no upstream: it would come up writable")
    etcd_put(r.etcd, key, json.dumps(dcs, separators=(",", ":")))


def fresh_region_result(req: RegionRebuildRequest) -> RebuildResult:
    """What a rebuild of ``req.region`` has found before its first step: nothing."""
    return _RegionRun(req).result


def run_region_stage(req: RegionRebuildRequest, stage: str, result: RebuildResult) -> RebuildResult:
    """One step of the runbook for region ``req.region``, continuing ``result``
    (:func:`fresh_region_result` for the first, after :func:`check_region`). The active
    region is refused at every step: never two writable regions."""
    if req.region == req.lab.active_region:
        check_region(req.lab, req.region)
    run = _RegionRun(req)
    run.result = result
    return drive_stage(run, stage, run.open_repository())
