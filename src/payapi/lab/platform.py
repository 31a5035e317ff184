"""The local platform: PostgreSQL, Redis, the vault, SAPI and EAPI on loopback.

``Lab(DIR)`` owns one folder. Ports are chosen once (free ports at the first ``up``) and
kept in ``DIR/lab.json``, so a restarted lab keeps its URLs and ``payapi.toml`` stays
valid. Every operation is idempotent: ``up`` on a running lab changes nothing, ``down``
on a stopped one is fine, and ``down`` leaves no process behind.

Layout::

    DIR/payapi.toml        the config every other command takes (--config / PAYAPI_CONFIG)
    DIR/payapi.local.toml  optional overrides appended to payapi.toml (e.g. rate limits)
    DIR/lab.json           ports (no secrets)
    DIR/secrets/           0700: vault data key, admin / EAPI / SAPI API keys (0600 each),
                           the DR team operators' keys (dr-coordinator.api_key, …);
                           repository.key, the backup repository's key (0600)
    DIR/postgres/          data directory and log (owned by the unprivileged lab user)
    DIR/backups/           the backup repository (file://), initialized at the first up
    DIR/backup-work/       scratch space for restore tests
    DIR/redis/  DIR/logs/  DIR/run/  DIR/audit/

PostgreSQL archives every WAL segment through ``payapi wal push`` (``archive_mode = on``,
``archive_timeout = 60``; ``summarize_wal = on`` from the first start, so incremental
backups work). When the lab runs as root, PostgreSQL — and so its archive_command — runs
as the unprivileged lab user, which therefore must read the config and the repository
key, and write WAL into the repository. The choice made here:

- ``DIR/backups/`` is owned by the lab user (re-applied at every ``up``). Backups taken
  by root write root-owned objects there; the lab user only ever writes ``wal/`` and
  ``wal-index/`` and reads ``config``.
- ``repository.key`` is owned by the lab user, mode 0600, and ``DIR/secrets/`` is
  ``root:<lab group>`` 0710: the lab user can reach its key by name but cannot list the
  folder, and every other key there stays root's (0600).
- The Python interpreter (and the venv) must be reachable by the lab user: only the
  search bit (o+x) is added to their parent folders (see ``make_reachable``), and
  ``up`` checks that the lab user can actually open the repository.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from payapi.core.journal import Journal
from payapi.servers.postgres import PgCluster
from payapi.servers.procs import (
    ServerError,
    free_port,
    pid_alive,
    read_pid,
)
from payapi.servers.redis import RedisServer
from payapi.servers.service import ServiceProcess

COMPONENTS = ("postgres", "redis", "vault", "sapi", "eapi")
SERVICES = ("vault", "sapi", "eapi")
ACCOUNT = "payapi"
ADMIN_LOGIN = "admin"


class LabError(ServerError):
    """A lab operation was refused or failed; one line for the operator."""


def _toml_str(value: str | Path) -> str:
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def prepare_dirs(lab_dir: Path, secrets_dir: Path) -> None:
    """A lab's folder, its secrets folder (0700, also when it existed with other modes)
    and the audit chain's head folder."""
    lab_dir.mkdir(parents=True, exist_ok=True)
    secrets_dir.mkdir(mode=0o700, exist_ok=True)
    os.chmod(secrets_dir, 0o700)
    (lab_dir / "audit").mkdir(exist_ok=True)


@dataclass
class Lab:
    dir: Path
    journal: Journal = field(default_factory=Journal)

    def __post_init__(self) -> None:
        self.dir = self.dir.expanduser().resolve()

    # -- layout --------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.dir / "payapi.toml"

    @property
    def state_path(self) -> Path:
        return self.dir / "lab.json"

    @property
    def secrets_dir(self) -> Path:
        return self.dir / "secrets"

    def key_file(self, name: str) -> Path:
        return self.secrets_dir / name

    @property
    def backups_dir(self) -> Path:
        return self.dir / "backups"

    @property
    def repository_url(self) -> str:
        return f"file://{self.backups_dir}"

    @property
    def repository_key_file(self) -> Path:
        return self.key_file("repository.key")

    @property
    def backup_work_dir(self) -> Path:
        return self.dir / "backup-work"

    def archive_settings(self) -> dict[str, str]:
        """PostgreSQL settings that archive every WAL segment into the lab's repository."""
        from payapi.backup.service import archive_settings

        return archive_settings(self.config_path)

    def require_existing(self) -> None:
        """:class:`LabError` unless ``lab up`` has been run in this folder (a typo in
        ``--dir`` must not look like a stopped lab, nor create a new one)."""
        if not self.state_path.is_file():
            raise LabError(f"no lab in {self.dir} (start one with: payapi lab up --dir {self.dir})")

    def _ports(self) -> dict[str, int]:
        if self.state_path.exists():
            data = json.loads(self.state_path.read_text())
            ports: dict[str, int] = data["ports"]
            return ports
        ports = {}
        for c in COMPONENTS:
            p = free_port()
            while p in ports.values():
                p = free_port()
            ports[c] = p
        self._write_state({"ports": ports})
        return ports

    def _write_state(self, data: dict[str, Any]) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(self.state_path)

    @property
    def ports(self) -> dict[str, int]:
        return self._ports()

    def url(self, component: str) -> str:
        return f"http://127.0.0.1:{self.ports[component]}"

    @property
    def pg(self) -> PgCluster:
        return PgCluster(
            datadir=self.dir / "postgres" / "data",
            port=self.ports["postgres"],
            logfile=self.dir / "postgres" / "postgres.log",
            settings=self.archive_settings(),
            note=self.journal.note,
        )

    @property
    def redis(self) -> RedisServer:
        return RedisServer(workdir=self.dir / "redis", port=self.ports["redis"])

    def status(self) -> dict[str, Any]:
        """The contract of ``payapi lab status --json`` (plus per-component state)."""
        pg = self.pg
        return {
            "config": str(self.config_path),
            "dir": str(self.dir),
            "eapi": self.url("eapi"),
            "sapi": self.url("sapi"),
            "vault": {
                "url": self.url("vault"),
                "account": ACCOUNT,
                "admin_login": ADMIN_LOGIN,
                "admin_api_key_file": str(self.key_file("admin.api_key")),
            },
            "postgres": {
                "payment_dsn": pg.dsn("payment_db"),
                "vault_dsn": pg.dsn("vault_db"),
            },
            "redis": self.redis.url,
            "backup": {
                "repository": self.repository_url,
                "key_file": str(self.repository_key_file),
            },
            "components": {c: ("running" if self.running(c) else "stopped") for c in COMPONENTS},
        }

    # -- config --------------------------------------------------------------------

    def write_config(self) -> None:
        p = self.ports
        pg = self.pg
        text = f"""# payapi lab configuration, written by `payapi lab up`. A development setup:
# PostgreSQL trusts local connections and Redis has no password; both listen on 127.0.0.1.
# No secret is stored here: key files hold them (mode 0600) and the vault holds the rest.
environment = "lab"

[vault]
url = {_toml_str(self.url("vault"))}
host = "127.0.0.1"
port = {p["vault"]}
# payapi recover component vault restarts this process (pid and log below)
control = "local"
pid_file = {_toml_str(self.pidfile("vault"))}
log_file = {_toml_str(self.dir / "logs" / "vault.log")}
account = {_toml_str(ACCOUNT)}
admin_login = {_toml_str(ADMIN_LOGIN)}
admin_api_key_file = {_toml_str(self.key_file("admin.api_key"))}
dsn = {_toml_str(pg.dsn("vault_db"))}
data_key_file = {_toml_str(self.key_file("vault-data.key"))}

[sapi]
url = {_toml_str(self.url("sapi"))}
host = "127.0.0.1"
port = {p["sapi"]}
# payapi recover component sapi restarts this process (pid and log below)
control = "local"
pid_file = {_toml_str(self.pidfile("sapi"))}
log_file = {_toml_str(self.dir / "logs" / "sapi.log")}
dsn = {_toml_str(pg.dsn("payment_db"))}
vault_api_key_file = {_toml_str(self.key_file("sapi.api_key"))}

[eapi]
url = {_toml_str(self.url("eapi"))}
host = "127.0.0.1"
port = {p["eapi"]}
# payapi recover component eapi restarts this process (pid and log below)
control = "local"
pid_file = {_toml_str(self.pidfile("eapi"))}
log_file = {_toml_str(self.dir / "logs" / "eapi.log")}
vault_api_key_file = {_toml_str(self.key_file("eapi.api_key"))}

[postgres]
payment_dsn = {_toml_str(pg.dsn("payment_db"))}
vault_dsn = {_toml_str(pg.dsn("vault_db"))}
# restores in place stop, replace and start this cluster with pg_ctl
control = "local"
data_dir = {_toml_str(pg.datadir)}
log_file = {_toml_str(pg.logfile)}

[redis]
url = {_toml_str(self.redis.url)}
# restores in place stop, replace and start this server
control = "local"
data_dir = {_toml_str(self.redis.workdir)}

[audit]
head_file = {_toml_str(self.dir / "audit" / "head.json")}

[backup]
repository = {_toml_str(self.repository_url)}
key_file = {_toml_str(self.repository_key_file)}
work_dir = {_toml_str(self.backup_work_dir)}
"""
        local = self.dir / "payapi.local.toml"
        if local.exists():
            text += f"\n# --- from {local.name} (operator overrides, kept across lab up) ---\n"
            text += local.read_text()
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.config_path)

    # -- components ----------------------------------------------------------------

    def pidfile(self, service: str) -> Path:
        return self.dir / "run" / f"{service}.pid"

    def running(self, component: str) -> bool:
        if component == "postgres":
            return self.pg.is_running()
        if component == "redis":
            return self.redis.is_running()
        pid = read_pid(self.pidfile(component))
        return pid is not None and pid_alive(pid)

    def service(self, name: str) -> ServiceProcess:
        return ServiceProcess(
            name=name,
            config=self.config_path,
            port=self.ports[name],
            health_url=self._health_url(name),
            pidfile=self.pidfile(name),
            logfile=self.dir / "logs" / f"{name}.log",
        )

    def _health_url(self, service: str) -> str:
        path = {"vault": "/health", "sapi": "/api/internal-health", "eapi": "/api/health"}
        return self.url(service) + path[service]

    def _healthy(self, service: str) -> bool:
        try:
            return httpx.get(self._health_url(service), timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def start(
        self, component: str, *, timeout: float = 60.0, env: Mapping[str, str] | None = None
    ) -> None:
        """Start one component; ``env`` adds environment variables to a service's process
        (vault, SAPI, EAPI; see ``ServiceProcess.start``)."""
        if component not in COMPONENTS:
            raise LabError(f"unknown component {component!r}; one of {', '.join(COMPONENTS)}")
        if component == "postgres":
            self.pg.start()
            return
        if component == "redis":
            self.redis.start()
            return
        try:
            self.service(component).start(timeout=timeout, env=env)
        except LabError:
            raise
        except ServerError as exc:
            raise LabError(str(exc)) from None

    def stop(self, component: str) -> None:
        if component not in COMPONENTS:
            raise LabError(f"unknown component {component!r}; one of {', '.join(COMPONENTS)}")
        if component == "postgres":
            self.pg.stop()
        elif component == "redis":
            self.redis.stop()
        else:
            self.service(component).stop()

    # -- whole lab -----------------------------------------------------------------

    def up(self) -> dict[str, Any]:
        """Start everything (idempotent); one journal step per component."""
        step = self.journal.step
        prepare_dirs(self.dir, self.secrets_dir)
        self.write_config()
        with step("backup repository"):
            self.ensure_backup_repository()
        with step("postgres"):
            pg = self.pg
            pg.init()
            pg.start()
            pg.create_database("payment_db")
            pg.create_database("vault_db")
        with step("redis"):
            self.redis.start()
        with step("vault"):
            self._ensure_vault_bootstrap()
            self.start("vault")
            asyncio.run(self._ensure_platform())
        with step("sapi"):
            self.start("sapi")
        with step("eapi"):
            self.start("eapi")
        return self.status()

    def down(self) -> None:
        for component in reversed(COMPONENTS):
            self.stop(component)

    def ensure_backup_repository(self) -> None:
        """Key (generated once), repository (initialized once), and the permissions the
        archiver needs when it runs as the lab user (see the module docstring)."""
        from payapi.backup.crypto import write_key_file
        from payapi.backup.repository import Repository
        from payapi.servers.procs import (
            as_lab_user,
            chown_to_lab_user,
            ensure_lab_user,
            is_root,
            make_reachable,
        )

        self.backups_dir.mkdir(exist_ok=True)
        self.backup_work_dir.mkdir(exist_ok=True)
        key_file = self.repository_key_file
        if not key_file.exists():
            write_key_file(key_file)
        Repository.open_configured(
            self.repository_url, key_file=key_file, key_env="", create=True
        ).close()
        for sub in ("wal", "wal-index"):
            (self.backups_dir / sub).mkdir(exist_ok=True)
        if not is_root():
            return
        user = ensure_lab_user()
        chown_to_lab_user(self.backups_dir)
        chown_to_lab_user(self.backup_work_dir)
        os.chown(key_file, user.pw_uid, user.pw_gid)
        key_file.chmod(0o600)
        os.chown(self.secrets_dir, 0, user.pw_gid)
        self.secrets_dir.chmod(0o710)
        for path in (self.backups_dir, self.backup_work_dir, key_file, self.config_path):
            make_reachable(path, self.journal.note)
        python = Path(sys.executable).absolute()
        make_reachable(python, self.journal.note)
        make_reachable(python.resolve(), self.journal.note)
        # Can the archiver (the lab user) run, read its config and key, open the
        # repository? A fetch of a name that is never archived answers 1 when it can.
        probe = subprocess.run(
            as_lab_user(
                [
                    str(python),
                    "-m",
                    "payapi",
                    "--config",
                    str(self.config_path),
                    "wal",
                    "fetch",
                    "--abort-on-damage",
                    "payapi-preflight",
                    str(self.backup_work_dir / "preflight"),
                ]
            ),
            capture_output=True,
            text=True,
            check=False,
            cwd="/",
            timeout=60,
        )
        if probe.returncode != 1:
            why = (probe.stderr.strip().splitlines() or [f"exit {probe.returncode}"])[-1]
            raise LabError(
                f"the WAL archiver (user {user.pw_name}) cannot use the backup repository: {why}"
            )

    def _ensure_vault_bootstrap(self, dsn: str | None = None) -> None:
        from payapi.core.settings import load_settings
        from payapi.credentials.platform import write_private
        from payapi.vault.bootstrap import bootstrap, generate_data_key_file, load_data_key

        key_file = self.key_file("vault-data.key")
        if not key_file.exists():
            generate_data_key_file(key_file)
        settings = load_settings(self.config_path)
        data_key = load_data_key(settings.vault)
        admin_key = asyncio.run(
            bootstrap(dsn or self.pg.dsn("vault_db"), ACCOUNT, ADMIN_LOGIN, data_key=data_key)
        )
        if admin_key is not None:
            write_private(self.key_file("admin.api_key"), admin_key)

    async def _ensure_platform(self, vault_url: str | None = None) -> None:
        from payapi.core.settings import load_settings, read_secret_file
        from payapi.credentials.platform import ensure_platform
        from payapi.recovery.access import ensure_team
        from payapi.recovery.catalogue import discover
        from payapi.vault.client import VaultClient

        settings = load_settings(self.config_path)
        key = read_secret_file(settings.vault.admin_api_key_file, "vault admin API key")
        async with VaultClient(vault_url or self.url("vault"), ACCOUNT, ADMIN_LOGIN, key) as admin:
            for line in await ensure_platform(
                admin,
                eapi_key_file=self.key_file("eapi.api_key"),
                sapi_key_file=self.key_file("sapi.api_key"),
            ):
                self.journal.note(line)
            # The DR team as vault operators, and who may execute which runbook.
            for line in await ensure_team(
                admin,
                secrets_dir=self.secrets_dir,
                runbooks=[e.runbook.name for e in discover([])],
            ):
                self.journal.note(line)
