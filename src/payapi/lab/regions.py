"""The two-region lab: ``payapi lab up --dir DIR --regions primary,dr``.

Two regions (:mod:`payapi.lab.region`) on loopback, a Route53 API (moto's server) holding
the DNS record that names the serving region, and the global endpoint that forwards to
it. Layout, besides the one-region lab's (secrets, backups, audit)::

    DIR/payapi.toml              the operator's config: the active region's, plus [regions]
    DIR/regions/NAME/payapi.toml the config the region's own services run with
    DIR/regions/NAME/...         etcd, pg1, pg2, redis1, sentinel1, logs, run
    DIR/dns/                     moto's server (Route53)
    DIR/lab.json                 ports, the regions, the active region (no secrets)

Which region is active is decided by the DNS record and Patroni, and recorded in
``lab.json`` (``active_region``) by the commands that change it, so that the configs point
at it. A region that is not active is started *fenced*: its Patroni cluster comes up as a
standby cluster of the active one and its SAPI/EAPI stay at zero replicas — never two
writable regions.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from payapi.core.journal import Journal
from payapi.lab.platform import ACCOUNT, ADMIN_LOGIN, Lab, LabError, _toml_str, prepare_dirs
from payapi.lab.region import DR, PRIMARY, REGIONS, SENTINEL_MASTER, LabRegion, allocate_ports, url
from payapi.servers.moto import MotoServer
from payapi.servers.patroni import StandbyOf
from payapi.servers.procs import ServerError, free_port, wait_for
from payapi.servers.service import ServiceProcess

DNS_ZONE = "payments.lab"
DNS_RECORD = f"api.{DNS_ZONE}"
DNS_TTL_SECONDS = 5
ENDPOINT_REFRESH_SECONDS = 1.0
# The plan's communication channels, as file channels (no server needed): the primary
# one (the plan's Slack channel) and a backup one (its "secondary chat platform").
CHANNELS = {"primary": "dr-channel", "backup": "secondary-chat"}


@dataclass
class TwoRegionLab(Lab):
    """The lab with a primary and a DR region. ``Lab``'s backup repository, secrets and
    vault bootstrap are shared by both regions (the vault's data key is the same key)."""

    journal: Journal = field(default_factory=Journal)

    # -- state ---------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        if self.state_path.exists():
            data: dict[str, Any] = json.loads(self.state_path.read_text())
            if "regions" in data:
                return data
            raise LabError(
                f"the lab in {self.dir} has one region: bring it down and use another --dir "
                "for two (payapi lab down --dir ...)"
            )
        taken: set[int] = set()
        regions = {name: allocate_ports(name, taken) for name in REGIONS}
        extra = {}
        for key in ("dns", "endpoint"):
            port = free_port()
            while port in taken:
                port = free_port()
            taken.add(port)
            extra[key] = port
        data = {"regions": regions, "ports": extra, "active_region": PRIMARY}
        self._write_state(data)
        return data

    @property
    def active_region(self) -> str:
        return str(self._state()["active_region"])

    def set_active(self, name: str) -> None:
        """Record that ``name`` serves now (after a regional failover or failback) and
        point the operator's config at it."""
        if name not in REGIONS:
            raise LabError(f"unknown region {name!r}; one of {', '.join(REGIONS)}")
        data = self._state()
        data["active_region"] = name
        self._write_state(data)
        self.write_configs()

    def region(self, name: str) -> LabRegion:
        if name not in REGIONS:
            raise LabError(f"unknown region {name!r}; one of {', '.join(REGIONS)}")
        state = self._state()
        active = state["active_region"]
        # A region that does not serve streams from the one that does.
        standby_of = None
        if name != active:
            other_ports = state["regions"][active]
            hosts = tuple(
                ("127.0.0.1", other_ports[k]) for k in sorted(other_ports) if _is_pg_port(k)
            )
            standby_of = StandbyOf(hosts, restore_command=self._restore_command(name))
        return LabRegion(
            name=name,
            dir=self.region_dir(name),
            ports=dict(state["regions"][name]),
            standby_of=standby_of,
            archive=self._archive(name),
        )

    def region_dir(self, name: str) -> Path:
        return self.dir / "regions" / name

    def channel_dir(self, tier: str) -> Path:
        """The folder of the lab's ``tier`` incident channel (see :data:`CHANNELS`)."""
        return self.dir / "channels" / CHANNELS[tier]

    @property
    def dns_server(self) -> MotoServer:
        return MotoServer(self.dir / "dns", int(self._state()["ports"]["dns"]))

    @property
    def endpoint_url(self) -> str:
        return url(int(self._state()["ports"]["endpoint"]))

    @property
    def endpoint(self) -> ServiceProcess:
        port = int(self._state()["ports"]["endpoint"])
        return ServiceProcess(
            name="endpoint",
            config=self.config_path,
            port=port,
            health_url=url(port) + "/api/health",
            pidfile=self.dir / "run" / "endpoint.pid",
            logfile=self.dir / "logs" / "endpoint.log",
        )

    def _archive(self, name: str) -> dict[str, str]:
        from payapi.backup.wal import archive_command

        return {
            "archive_mode": "on",
            "archive_command": archive_command(self.region_dir(name) / "payapi.toml"),
            "archive_timeout": "60",
        }

    def _restore_command(self, name: str) -> str:
        from payapi.backup.wal import restore_command

        return restore_command(self.region_dir(name) / "payapi.toml")

    # -- config --------------------------------------------------------------------

    def write_configs(self) -> None:
        """Each region's service config, and the operator's (the active region's)."""
        active = self.active_region
        for name in REGIONS:
            text = self.config_text(name)
            path = self.region_dir(name) / "payapi.toml"
            path.parent.mkdir(parents=True, exist_ok=True)
            _write(path, text)
            if name == active:
                _write(self.config_path, text)

    def write_config(self) -> None:  # Lab.up() and friends call this name
        self.write_configs()

    def config_text(self, name: str) -> str:
        r = self.region(name)
        p = r.ports
        vault_attrs = "read-write" if name == self.active_region else "any"
        vault_urls = [url(p[f"vault{i}"]) for i in range(1, r.shape["vault"] + 1)]
        redis_section = f"url = {_toml_str(r.redis_servers[0].url)}\n"
        if r.sentinels:
            redis_section += (
                f"sentinels = {json.dumps(r.sentinel_addrs())}\n"
                f"sentinel_master = {_toml_str(SENTINEL_MASTER)}\n"
            )
        else:  # one Redis, seeded from snapshots: restores in place stop and start it
            redis_section += (
                f'control = "local"\ndata_dir = {_toml_str(r.redis_servers[0].workdir)}\n'
            )
        vault1, sapi, eapi = r.vaults()[0], r.service("sapi"), r.service("eapi")

        def control(svc: ServiceProcess) -> str:
            # payapi recover component NAME restarts this region's process
            return (
                f'control = "local"\npid_file = {_toml_str(svc.pidfile)}\n'
                f"log_file = {_toml_str(svc.logfile)}"
            )

        text = f"""# payapi two-region lab, region {name!r}: written by `payapi lab up`. A
# development setup: PostgreSQL trusts loopback and Redis has no password. No secret
# is stored here.
environment = "lab"

[vault]
url = {_toml_str(vault_urls[0])}
urls = {json.dumps(vault_urls)}
host = "127.0.0.1"
port = {p["vault1"]}
{control(vault1)}
account = {_toml_str(ACCOUNT)}
admin_login = {_toml_str(ADMIN_LOGIN)}
admin_api_key_file = {_toml_str(self.key_file("admin.api_key"))}
dsn = {_toml_str(r.dsn("vault_db", vault_attrs))}
data_key_file = {_toml_str(self.key_file("vault-data.key"))}

[sapi]
url = {_toml_str(url(p["sapi"]))}
host = "127.0.0.1"
port = {p["sapi"]}
{control(sapi)}
dsn = {_toml_str(r.dsn("payment_db"))}
vault_api_key_file = {_toml_str(self.key_file("sapi.api_key"))}

[eapi]
url = {_toml_str(url(p["eapi"]))}
host = "127.0.0.1"
port = {p["eapi"]}
{control(eapi)}
vault_api_key_file = {_toml_str(self.key_file("eapi.api_key"))}

[postgres]
payment_dsn = {_toml_str(r.dsn("payment_db"))}
vault_dsn = {_toml_str(r.dsn("vault_db"))}

[redis]
{redis_section}
[audit]
head_file = {_toml_str(self.dir / "audit" / "head.json")}

[backup]
repository = {_toml_str(self.repository_url)}
key_file = {_toml_str(self.repository_key_file)}
work_dir = {_toml_str(self.backup_work_dir)}

[topology]
endpoint = {_toml_str(self.endpoint_url)}
dns_record = {_toml_str(DNS_RECORD)}
dns_zone = {_toml_str(DNS_ZONE)}
dns_ttl_seconds = {DNS_TTL_SECONDS}
endpoint_refresh_seconds = {ENDPOINT_REFRESH_SECONDS}
dns_endpoint_url = {_toml_str(self.dns_server.url)}

# What the HA engines run with (plan check --feasibility reads these).
[patroni]
ttl = 20
loop_wait = 2
retry_timeout = 3
synchronous_mode = true
archive_timeout = 60

[sentinel]
down_after_milliseconds = 2000
failover_timeout = 10000

[failover]
detection_seconds = 15
service_startup_seconds = 10
vault_takeover_seconds = 15
redis_restore_seconds = 5
"""
        for tier, channel in CHANNELS.items():
            text += (
                f'\n[[incident.channels]]\nname = {_toml_str(channel)}\nkind = "file"\n'
                f"tier = {_toml_str(tier)}\ndir = {_toml_str(self.channel_dir(tier))}\n"
            )
        for region_name in REGIONS:
            text += self._region_section(self.region(region_name))
        local = self.dir / "payapi.local.toml"
        if local.exists():
            text += f"\n# --- from {local.name} (operator overrides, kept across lab up) ---\n"
            text += local.read_text()
        return text

    def _region_section(self, r: LabRegion) -> str:
        # Roles follow the serving region, so that after a regional failover `plan check`
        # and `health check` (whose default is the primary) judge the region that serves.
        primary = r.name == self.active_region
        out = [f"\n[regions.{r.name}]\nrole = {_toml_str(PRIMARY if primary else 'standby')}"]
        out.append(f"etcd = {json.dumps([r.etcd.url])}")
        if r.sentinels:
            out.append(f"sentinels = {json.dumps(r.sentinel_addrs())}")
            out.append(f"sentinel_master = {_toml_str(SENTINEL_MASTER)}")
        for service, attrs in (("eapi", "eapi"), ("sapi", "sapi")):
            svc = r.service(service)
            out.append(
                f"\n[regions.{r.name}.{attrs}]\nurl = {_toml_str(url(svc.port))}\n"
                f"replicas = {1 if primary else 0}\n"
                f'control = "local"\nconfig_file = {_toml_str(r.config_path)}\n'
                f"pid_file = {_toml_str(svc.pidfile)}\nlog_file = {_toml_str(svc.logfile)}"
            )
        for i, m in enumerate(r.members):
            lead, other = ("leader", "sync_standby") if primary else ("standby_leader", "replica")
            role = lead if i == 0 else other
            out.append(
                f"\n[[regions.{r.name}.postgres]]\nname = {_toml_str(m.name)}\n"
                f"role = {_toml_str(role)}\nurl = {_toml_str(m.dsn('payment_db'))}\n"
                f"patroni_url = {_toml_str(m.rest_url)}"
            )
        for i, redis in enumerate(r.redis_servers):
            role = "leader" if i == 0 else "replica"
            out.append(
                f"\n[[regions.{r.name}.redis]]\nname = {_toml_str(f'{r.name}-redis{i + 1}')}\n"
                f"role = {_toml_str(role)}\nurl = {_toml_str(redis.url)}"
            )
        for i, vault in enumerate(r.vaults()):
            role = ("leader" if i == 0 else "standby") if primary else "replica"
            out.append(
                f"\n[[regions.{r.name}.vault]]\nname = {_toml_str(f'{r.name}-vault{i + 1}')}\n"
                f"role = {_toml_str(role)}\nurl = {_toml_str(url(vault.port))}"
            )
        return "\n".join(out) + "\n"

    # -- start, stop ---------------------------------------------------------------

    def up(self) -> dict[str, Any]:
        """Start both regions, the DNS and the endpoint (idempotent)."""
        step = self.journal.step
        prepare_dirs(self.dir, self.secrets_dir)
        self._state()
        self.write_configs()
        with step("backup repository"):
            self.ensure_backup_repository()
        active = self.active_region
        with step("dns"):
            self.dns_server.start()
            # moto keeps its zones in memory: after its restart the record is re-created
            # naming the region that serves (lab.json), wherever it pointed before.
            self.ensure_dns(active, only_if_missing=True)
        self.start_region(active)
        for name in REGIONS:
            if name != active:
                self.start_region(name)
        with step("endpoint"):
            self.endpoint.start()
        return self.status()

    def ensure_dns(self, region: str, *, only_if_missing: bool = False) -> None:
        from payapi.lab.dns_seed import ensure_record

        ensure_record(self, region, only_if_missing=only_if_missing)

    def start_region(self, name: str) -> None:
        """Start every server of region ``name``: as the serving region if it is the
        active one, else fenced (a standby cluster of the active region, no SAPI/EAPI)."""
        step = self.journal.step
        r = self.region(name)
        serving = name == self.active_region
        with step(f"{name}: etcd"):
            r.etcd.start()
            if not serving:
                self._fence_dcs(r)
        with step(f"{name}: postgres"):
            members = r.members
            for m in members:
                m.start()
            self._wait_members(r, serving)
            if serving:
                from payapi.servers.postgres import psql

                leader_dsn = r.dsn("postgres")
                for db in ("payment_db", "vault_db"):
                    rows = psql(leader_dsn, f"SELECT 1 FROM pg_database WHERE datname = '{db}'")  # noqa: S608
                    if not rows:
                        psql(leader_dsn, f'CREATE DATABASE "{db}"')
        with step(f"{name}: redis"):
            for redis in r.redis_servers:
                redis.start()
            for sentinel in r.sentinels:
                sentinel.start()
        with step(f"{name}: vault"):
            if serving:
                self._ensure_vault_bootstrap(r.dsn("vault_db"))
            for vault in r.vaults():
                vault.start(timeout=90)
            if serving:
                asyncio.run(self._ensure_platform(url(r.ports["vault1"])))
        if serving:
            with step(f"{name}: sapi"):
                r.service("sapi").start()
            with step(f"{name}: eapi"):
                r.service("eapi").start()

    def _fence_dcs(self, r: LabRegion) -> None:
        """Before a non-serving region's Patroni starts, make its cluster a standby of
        the serving region *in the DCS*. Patroni takes its dynamic configuration from
        etcd, where the old "a normal cluster" state survived the outage (the YAML's
        ``bootstrap.dcs`` counts only at the very first start): without this, the region
        would come back writable next to the one that took over. Dropping the keys
        instead is not enough either: members with data take the cluster over as a
        normal one (found by trying)."""
        from payapi.servers.etcd import etcd_get, etcd_put

        key = f"/payapi/{r.scope}/config"
        raw = etcd_get(r.etcd, key)
        if raw is None or r.standby_of is None:
            return  # never bootstrapped: the YAML's bootstrap.dcs names the upstream
        config = json.loads(raw)
        config["standby_cluster"] = {
            "host": ",".join(h for h, _ in r.standby_of.hosts),
            "port": ",".join(str(p) for _, p in r.standby_of.hosts),
            "create_replica_methods": ["basebackup"],
        }
        if r.standby_of.restore_command:
            config["standby_cluster"]["restore_command"] = r.standby_of.restore_command
        etcd_put(r.etcd, key, json.dumps(config, separators=(",", ":")))

    def _wait_members(self, r: LabRegion, serving: bool, timeout: float = 120.0) -> None:
        from payapi.systems.patroni import PatroniClient, PatroniError

        client = PatroniClient([m.rest_url for m in r.members])
        want = {"leader", "sync_standby"} if serving and len(r.members) > 1 else None

        def ready() -> bool:
            try:
                view = client.cluster()
            except PatroniError:
                return False
            roles = {m.role for m in view.members if m.state in ("running", "streaming")}
            if want is not None:
                return want <= roles
            lead = "leader" if serving else "standby_leader"
            return lead in roles

        started = time.monotonic()
        try:
            wait_for(ready, timeout=timeout, what=f"region {r.name}'s PostgreSQL", interval=0.3)
        except ServerError:
            took = time.monotonic() - started
            raise LabError(
                f"region {r.name}'s PostgreSQL is not ready after {took:.0f}s;"
                f" see {r.dir}/pg*/patroni.log"
            ) from None

    def stop_region(self, name: str) -> list[int]:
        """A region outage: kill -9 of every process of the region."""
        return self.region(name).kill()

    def down(self) -> None:
        self.endpoint.stop()
        for name in REGIONS:
            r = self.region(name)
            for svc in (r.service("eapi"), r.service("sapi"), *r.vaults()):
                svc.stop()
            for sentinel in r.sentinels:
                sentinel.stop()
            for redis in r.redis_servers:
                redis.stop()
            for m in r.members:
                m.stop()
            r.etcd.stop()
        self.dns_server.stop()

    def running(self, component: str) -> bool:
        r = self.region(self.active_region)
        if component == "postgres":
            return any(m.postmaster_pid for m in r.members)
        if component == "redis":
            return any(s.is_running() for s in r.redis_servers)
        if component == "vault":
            return any(v.is_running() for v in r.vaults())
        return r.service(component).is_running()

    def start(
        self, component: str, *, timeout: float = 60.0, env: Mapping[str, str] | None = None
    ) -> None:
        raise LabError(
            "the two-region lab starts and stops whole regions: "
            "payapi lab start --region NAME / lab stop --region NAME"
        )

    def stop(self, component: str) -> None:
        self.start(component)

    # -- status --------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        from payapi.systems.patroni import PatroniClient, PatroniError

        active = self.region(self.active_region)
        regions = {}
        for name in REGIONS:
            r = self.region(name)
            roles: dict[str, tuple[str, int | None]] = {}
            try:
                view = PatroniClient([m.rest_url for m in r.members], timeout=1.0).cluster()
                roles = {m.name: (m.role, m.lag_bytes) for m in view.members}
            except PatroniError:
                pass
            regions[name] = r.describe(roles)
        status: dict[str, Any] = {
            "config": str(self.config_path),
            "dir": str(self.dir),
            "active_region": active.name,
            "eapi": url(active.ports["eapi"]),
            "sapi": url(active.ports["sapi"]),
            "vault": {
                "url": url(active.ports["vault1"]),
                "account": ACCOUNT,
                "admin_login": ADMIN_LOGIN,
                "admin_api_key_file": str(self.key_file("admin.api_key")),
            },
            "postgres": {
                "payment_dsn": active.dsn("payment_db"),
                "vault_dsn": active.dsn("vault_db"),
            },
            "redis": active.redis_servers[0].url,
            "backup": {
                "repository": self.repository_url,
                "key_file": str(self.repository_key_file),
            },
            "components": {
                c: ("running" if self.running(c) else "stopped")
                for c in ("postgres", "redis", "vault", "sapi", "eapi")
            },
            "endpoint": self.endpoint_url,
            "regions": regions,
            "dns": {
                "endpoint_url": self.dns_server.url,
                "zone_id": self._zone_id(),
                "record": DNS_RECORD,
            },
        }
        return status

    def _zone_id(self) -> str | None:
        from payapi.lab.dns_seed import zone_id

        return zone_id(self)


def _is_pg_port(key: str) -> bool:
    return key.startswith("pg") and key[2:].isdigit()


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def is_two_region(dir: Path) -> bool:
    """Whether the lab in ``dir`` was brought up with two regions."""
    state = dir.expanduser().resolve() / "lab.json"
    try:
        return "regions" in json.loads(state.read_text())
    except (OSError, ValueError):
        return False


def lab_dir_of(config: Path | None) -> Path | None:
    """The two-region lab folder a config file belongs to, if it does (the lab's own
    config, or a region's beside it)."""
    if config is None:
        return None
    for folder in (config.parent, *config.parents[:3]):
        if is_two_region(folder):
            return folder
    return None


__all__ = ["DR", "PRIMARY", "REGIONS", "TwoRegionLab", "is_two_region", "lab_dir_of"]
