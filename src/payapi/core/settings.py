"""One typed configuration for every payapi process.

Settings come from a TOML file (``--config PATH`` or ``PAYAPI_CONFIG``) and may be
overridden by environment variables (``PAYAPI_EAPI__PORT=8080``). The file never holds a
secret value: it names *where* a secret is (a key file, an API-key file, an environment
variable), because secrets have one home, the vault.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from payapi.core.errors import PayapiError
from payapi.core.hostport import parse_hostport

CONFIG_ENV = "PAYAPI_CONFIG"


class ConfigError(PayapiError):
    """The configuration is missing or invalid; the message is one line for the operator."""


class ServiceListen(BaseModel):
    host: str = "127.0.0.1"
    port: int = 0
    url: str = ""
    # How payapi restarts and scales this service when it recovers it (``payapi recover
    # component``): "none" (someone else does), "local" (a `payapi serve` process on this
    # host, run with this config file: the lab), or "kubernetes" (its Deployment).
    control: Literal["none", "local", "kubernetes"] = "none"
    pid_file: Path | None = None  # local
    log_file: Path | None = None  # local
    namespace: str = "payment-system"  # kubernetes
    deployment: str | None = None  # kubernetes; default: payment-<service>


class VaultSettings(ServiceListen):
    """Where the vault is, and (for the vault server itself) how it stores secrets."""

    port: int = 8200
    account: str = "payapi"
    admin_login: str = "admin"
    admin_api_key_file: Path | None = None
    # Server side: the database and the data key that encrypts secrets at rest.
    dsn: str = ""
    data_key_file: Path | None = None
    data_key_env: str = "PAYAPI_VAULT_DATA_KEY"
    token_ttl_seconds: int = 480
    versions_kept: int = 20
    # Client side, more vaults than ``url`` (standbys, another region's): clients try
    # them in order when one cannot serve a call (see payapi.vault.client).
    urls: list[str] = Field(default_factory=list)

    def endpoints(self) -> list[str]:
        """Every vault a client may call, in order: ``url`` (or host:port), then ``urls``."""
        listed = [u for u in [self.url, *self.urls] if u.strip()]
        if not listed:  # neither is set: the vault this process would serve itself
            listed = [f"http://{self.host}:{self.port}"]
        return list(dict.fromkeys(u.rstrip("/") for u in listed))


class SapiSettings(ServiceListen):
    port: int = 8100
    dsn: str = ""
    vault_login: str = "host/payment-system/payment-sapi"
    vault_api_key_file: Path | None = None
    service_token_id: str = "payment-system/sapi/service-token"  # noqa: S105 - a vault id
    pool_min: int = 2
    pool_max: int = 10


class RateLimitSettings(BaseModel):
    """Fixed-window limits per minute. Defaults never throttle a few hundred sequential calls."""

    enabled: bool = True
    per_client_per_minute: int = 3000
    per_ip_per_minute: int = 6000
    authenticate_per_ip_per_minute: int = 1200


class EapiSettings(ServiceListen):
    port: int = 8000
    vault_login: str = "host/payment-system/payment-eapi"
    vault_api_key_file: Path | None = None
    cache_key_id: str = "payment-system/eapi/cache-key"
    token_ttl_seconds: int = 900
    verification_cache_seconds: int = 300
    sapi_timeout_seconds: float = 10.0
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)


class PostgresSettings(BaseModel):
    payment_dsn: str = ""
    vault_dsn: str = ""
    # How payapi controls the server of payment_dsn for restores in place: "none", or
    # "local" (a cluster on this host: data_dir, run with pg_ctl as the lab user).
    control: Literal["none", "local"] = "none"
    data_dir: Path | None = None
    log_file: Path | None = None


class RedisSettings(BaseModel):
    url: str = "redis://127.0.0.1:6379/0"
    socket_timeout_seconds: float = 0.5
    # How payapi controls the server of ``url`` for restores in place: "none", or "local"
    # (a redis-server on this host started as the lab starts it, data in data_dir).
    control: Literal["none", "local"] = "none"
    data_dir: Path | None = None
    # Redis HA: with both set, clients ask these Sentinels (host:port) for the primary of
    # ``sentinel_master`` instead of using url's host and port (url still gives the db
    # number and the credentials); after a failover they follow the promoted replica.
    sentinels: list[str] = Field(default_factory=list)
    sentinel_master: str | None = None

    @field_validator("sentinels")
    @classmethod
    def _check_sentinels(cls, value: list[str]) -> list[str]:
        for addr in value:
            parse_hostport(addr)  # ValueError names the bad entry
        return value

    @model_validator(mode="after")
    def _sentinels_and_master_together(self) -> RedisSettings:
        if bool(self.sentinels) != bool(self.sentinel_master):
            raise ValueError("[redis] sentinels and sentinel_master must be set together")
        return self

    @property
    def uses_sentinel(self) -> bool:
        return bool(self.sentinels and self.sentinel_master)


PRIMARY = "primary"  # the name of ``[backup] repository`` among the repositories
_REPOSITORY_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}\Z")
WalCopyMode = Literal["push", "require", "copy"]


class SecondaryRepository(BaseModel):
    """``[backup.secondary.NAME]``: another repository (another folder, another bucket,
    the DR region's) that receives a copy of every backup and WAL segment.

    The key is the primary's unless ``key_file`` or ``key_env`` names another one.
    ``wal`` says how WAL reaches it: ``push`` (``wal push`` also pushes there; a failure
    is reported but does not fail the archive), ``require`` (a failure fails the archive,
    so PostgreSQL retries), ``copy`` (only ``backup copy`` and ``backup run`` copy it).
    """

    model_config = ConfigDict(extra="forbid")

    url: str
    key_file: Path | None = None
    key_env: str | None = None
    s3_endpoint_url: str | None = None
    s3_sse: str | None = "AES256"
    s3_region: str | None = None
    wal: WalCopyMode = "push"


@dataclass(frozen=True)
class RepositoryLocation:
    """One repository, resolved: where it is and where its key comes from (never the key)."""

    name: str
    url: str
    key_file: Path | None
    key_env: str
    s3_endpoint_url: str | None = None
    s3_sse: str | None = "AES256"
    s3_region: str | None = None
    wal: WalCopyMode = "push"

    @property
    def primary(self) -> bool:
        return self.name == PRIMARY


class BackupSettings(BaseModel):
    """The backup repository. The key is referenced (file or env var), never stored here
    and never in the repository."""

    repository: str = ""
    key_file: Path | None = None
    key_env: str = "PAYAPI_BACKUP_KEY"  # the same default as payapi.backup.crypto
    s3_endpoint_url: str | None = None
    s3_sse: str | None = "AES256"
    # Scratch space for restore tests and staging (defaults to a temp dir).
    work_dir: Path | None = None
    # [backup.secondary.NAME] tables: copies of every backup and WAL segment.
    secondaries: dict[str, SecondaryRepository] = Field(
        default_factory=dict, validation_alias=AliasChoices("secondary", "secondaries")
    )

    @field_validator("secondaries")
    @classmethod
    def _check_names(cls, value: dict[str, SecondaryRepository]) -> dict[str, SecondaryRepository]:
        for name in value:
            if name == PRIMARY or not _REPOSITORY_NAME.match(name):
                raise ValueError(
                    f"secondary repository name {name!r}: lowercase letters, digits, - and _ "
                    f"(and not {PRIMARY!r})"
                )
        return value

    def location(self, name: str | None = None) -> RepositoryLocation:
        """The primary repository (``name`` None or ``primary``) or a secondary by name;
        :class:`ConfigError` for a name that is not configured."""
        if name is None or name == PRIMARY:
            return RepositoryLocation(
                PRIMARY,
                self.repository,
                self.key_file,
                self.key_env,
                self.s3_endpoint_url,
                self.s3_sse,
            )
        found = self.secondaries.get(name)
        if found is None:
            known = ", ".join([PRIMARY, *sorted(self.secondaries)])
            raise ConfigError(f"no backup repository named {name!r} (configured: {known})")
        own_key = found.key_file is not None or found.key_env is not None
        return RepositoryLocation(
            name,
            found.url,
            found.key_file if own_key else self.key_file,
            (found.key_env or self.key_env) if own_key else self.key_env,
            found.s3_endpoint_url,
            found.s3_sse,
            found.s3_region,
            found.wal,
        )

    def locations(self) -> list[RepositoryLocation]:
        """The primary, then every secondary (by name)."""
        return [self.location(), *(self.location(n) for n in sorted(self.secondaries))]


DEFAULT_NAMESPACE = "payment-system"

DEFAULT_SECRET_PATTERNS: tuple[str, ...] = (
    "*.key",
    "*.api_key",
    "*.pem",
    "*.p12",
    "*.pfx",
    "*.jks",
    "*.keystore",
    "*.secret",
    "*.secrets",
    ".env",
    "*.env",
    "id_rsa*",
    "id_ecdsa*",
    "id_ed25519*",
    "*.kubeconfig",
    "kubeconfig",
)


class ConfigBackupSettings(BaseModel):
    """``[config_backup]``: where exports are committed and pushed, and what they hold.

    Remote URLs should not embed credentials (use SSH keys or the environment): this file
    never holds a secret. Reported URLs are shown without their user-info part anyway.
    """

    git_dir: Path | None = None  # the local working repository the exports are committed in
    remotes: dict[str, str] = Field(default_factory=dict)  # name -> URL; all are pushed
    branch: str = "main"
    sources: list[Path] = Field(default_factory=list)  # more files/folders to export
    deploy_dir: Path | None = None  # deploy/ (Kubernetes manifests, alert rules)
    kube_context: str | None = None  # export the namespace's resources when set
    kube_config_file: Path | None = None  # default: $KUBECONFIG or ~/.kube/config
    kube_namespace: str = DEFAULT_NAMESPACE
    secret_patterns: list[str] = Field(default_factory=lambda: list(DEFAULT_SECRET_PATTERNS))
    author_name: str = "payapi config export"
    author_email: str = "payapi-config-export@localhost"


class AuditSettings(BaseModel):
    # The chain head is kept outside the database it protects (a file here; WORM storage
    # in production), so deleting the newest events is detectable.
    head_file: Path | None = None


class SecuritySettings(BaseModel):
    """``[security]``: what ``payapi security check`` scans and judges.

    ``log_paths`` are log files or folders (their ``*.log`` files, recursively); empty:
    every ``*.log`` under the config file's folder (the lab's layout) plus
    ``postgres.log_file``. ``max_credential_age_days``: API keys not rotated for longer
    fail the stale-credentials check (None: the plan sets no rotation period; ages are
    reported only).
    """

    log_paths: list[Path] = Field(default_factory=list)
    max_credential_age_days: float | None = Field(default=None, gt=0)


# The role names a config may give; payapi.core.topology's enums have the same values.
RegionRoleName = Literal["primary", "standby"]
MemberRoleName = Literal["leader", "sync_standby", "replica", "standby", "standby_leader"]
_REGION_NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


class TopologySettings(BaseModel):
    """``[topology]``: the global endpoint clients use, whatever region serves it, and the
    DNS record (in a Route53 hosted zone) that points it at the serving region."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str | None = None  # e.g. http://127.0.0.1:8443 (the lab's loopback forwarder)
    dns_record: str | None = None  # e.g. api.payments.example.com
    dns_zone: str | None = None  # e.g. payments.example.com (the hosted zone)
    dns_ttl_seconds: int = Field(default=60, ge=0)
    # How often the global endpoint re-reads the record (it also honours the TTL).
    endpoint_refresh_seconds: float = Field(default=5.0, ge=0)
    # The Route53 API: None is AWS's own; the lab points it at moto's server. Credentials
    # come from boto3's usual chain (environment, profile, instance role), never from here.
    dns_endpoint_url: str | None = None
    # How long `dns set` (the UPSERT) waits for Route53 to report the change INSYNC.
    dns_sync_timeout_seconds: float = Field(default=120.0, gt=0)
    # The global endpoint gives up connecting to a region's EAPI after this long.
    endpoint_connect_timeout_seconds: float = Field(default=2.0, gt=0)


class RegionMemberSettings(BaseModel):
    """``[[regions.NAME.postgres]]`` (or ``redis``, ``vault``): one server of a region.

    ``role`` is the role it is configured for; which member actually leads is observed at
    run time (after a failover the two can differ).
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    role: MemberRoleName
    url: str  # a DSN (postgres), a redis:// URL, the vault's http(s):// URL
    patroni_url: str | None = None  # postgres only: the member's Patroni REST API


class RegionServiceSettings(BaseModel):
    """``[regions.NAME.eapi]`` / ``[regions.NAME.sapi]``: a stateless service of a region."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = None
    replicas: int = Field(default=1, ge=0)
    # How payapi scales it during a regional failover: "none" (someone else does),
    # "local" (a `payapi serve` process on this host: the lab), or "kubernetes" (the
    # Deployment's scale subresource, as the seed's `kubectl scale`).
    control: Literal["none", "local", "kubernetes"] = "none"
    config_file: Path | None = None  # local: the config the process runs with
    pid_file: Path | None = None  # local
    log_file: Path | None = None  # local
    namespace: str = "payment-system"  # kubernetes
    deployment: str | None = None  # kubernetes; default: payment-<service>


class RegionSettings(BaseModel):
    """``[regions.NAME]``: one region of the platform and its members per service."""

    model_config = ConfigDict(extra="forbid")

    role: RegionRoleName
    postgres: list[RegionMemberSettings] = Field(default_factory=list)
    redis: list[RegionMemberSettings] = Field(default_factory=list)
    vault: list[RegionMemberSettings] = Field(default_factory=list)
    etcd: list[str] = Field(default_factory=list)  # etcd client URLs (Patroni's DCS)
    sentinels: list[str] = Field(default_factory=list)  # host:port of each Redis Sentinel
    sentinel_master: str | None = None  # the master name the Sentinels monitor
    eapi: RegionServiceSettings = Field(default_factory=RegionServiceSettings)
    sapi: RegionServiceSettings = Field(default_factory=RegionServiceSettings)


class PatroniSettings(BaseModel):
    """``[patroni]``: what the PostgreSQL clusters' Patroni is configured with (its dynamic
    configuration), for :mod:`payapi.ops.feasibility`. The defaults are Patroni's own.

    ``promote_seconds`` (a member from "won the race" to read-write) and
    ``write_rate_bytes_per_second`` (the peak WAL rate, which turns a lag in bytes into
    seconds) are payapi's estimates, not Patroni settings; ``archive_timeout`` is the
    ``postgresql.parameters.archive_timeout`` Patroni sets (PostgreSQL's default 0: off).
    """

    model_config = ConfigDict(extra="forbid")

    ttl: int = Field(default=30, ge=1)
    loop_wait: int = Field(default=10, ge=1)
    retry_timeout: int = Field(default=10, ge=1)
    maximum_lag_on_failover: int = Field(default=1_048_576, ge=0)  # bytes
    synchronous_mode: bool = False
    promote_seconds: float = Field(default=10.0, ge=0)
    write_rate_bytes_per_second: float | None = Field(default=None, gt=0)
    archive_timeout: int = Field(default=0, ge=0)  # seconds; 0 = never forced


class SentinelSettings(BaseModel):
    """``[sentinel]``: what the Redis Sentinels and the Redis primary are configured with.
    The defaults are Redis's own (``down-after-milliseconds`` 30000, ``failover-timeout``
    180000, ``min-replicas-to-write`` 0, ``min-replicas-max-lag`` 10)."""

    model_config = ConfigDict(extra="forbid")

    down_after_milliseconds: int = Field(default=30_000, ge=1)
    failover_timeout: int = Field(default=180_000, ge=1)  # milliseconds
    min_replicas_to_write: int = Field(default=0, ge=0)
    min_replicas_max_lag: int = Field(default=10, ge=0)  # seconds


class FailoverSettings(BaseModel):
    """``[failover]``: the durations of the steps no engine setting fixes, as estimated or
    measured for this platform (payapi's defaults; measure yours with a drill)."""

    model_config = ConfigDict(extra="forbid")

    # How long the primary region must be unreachable before it is declared lost.
    detection_seconds: float = Field(default=300.0, ge=0)
    # SAPI/EAPI in the DR region from 0 replicas to ready.
    service_startup_seconds: float = Field(default=60.0, ge=0)
    # The standby vault server serving writes once the active one is gone (detection too).
    vault_takeover_seconds: float = Field(default=30.0, ge=0)
    # Redis in the DR region: restore the newest snapshot (or start empty).
    redis_restore_seconds: float = Field(default=60.0, ge=0)
    # The DR standby cluster's expected worst replay lag (alerted on); None: unknown.
    dr_lag_seconds: float | None = Field(default=None, ge=0)


class RecoverySettings(BaseModel):
    """``[recovery]``: where operators keep their own runbooks (YAML files, beside the ones
    shipped in the wheel), where each run's journal is written (one file per run), and
    ``baseline_file``, the performance baseline of ``payapi verify system`` (written by its
    first run; default ``verify-baseline.json`` beside the config file)."""

    model_config = ConfigDict(extra="forbid")

    runbook_dirs: list[Path] = Field(default_factory=list)
    # None: ``runbooks/`` beside the config file (the lab's folder), else in the cwd.
    journal_dir: Path | None = None
    baseline_file: Path | None = None
    # Access control (payapi.recovery.access): true refuses runbook operations that name
    # no operator (``payapi --as LOGIN``); false keeps the OS user as the requester and
    # checks only operators that are named.
    require_operator: bool = False
    # Groups whose members may approve their own runs' steps with --yes (automation).
    self_approve_roles: list[str] = Field(default_factory=list)


ChannelKind = Literal["file", "smtp", "slack", "webhook"]
_CHANNEL_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}\Z")


class IncidentChannelSettings(BaseModel):
    """``[[incident.channels]]``: one way an incident message reaches people.

    ``credential`` is a vault variable id (the SMTP password, or the webhook URL, which is
    a secret: whoever has it can post). This file never holds the secret itself. ``order``
    sorts the channels within a ``tier``; the backup tier is tried when a primary fails
    (payapi.incident.notify).
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: ChannelKind
    order: int = 0
    tier: Literal["primary", "backup"] = "primary"
    credential: str | None = None
    timeout_seconds: float = Field(default=10.0, gt=0)
    # smtp
    host: str | None = None
    port: int = Field(default=25, ge=1, le=65535)
    from_address: str | None = Field(
        default=None, validation_alias=AliasChoices("from", "from_address")
    )
    username: str | None = None
    to: list[str] = Field(default_factory=list)  # distribution lists, beside the recipients
    starttls: Literal["auto", "require"] = "auto"
    ca_file: Path | None = None  # a private CA for the SMTP server's certificate
    # file
    dir: Path | None = None  # default: outbox/ beside the config file

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _CHANNEL_NAME.match(value):
            raise ValueError(f"channel name {value!r}: lowercase letters, digits, - and _")
        return value

    @model_validator(mode="after")
    def _kind_fields(self) -> IncidentChannelSettings:
        if self.kind == "smtp" and not (self.host and self.from_address):
            raise ValueError(f"channel {self.name}: smtp needs host and from")
        if self.kind in ("slack", "webhook") and not self.credential:
            raise ValueError(f"channel {self.name}: {self.kind} needs credential (its URL)")
        if self.kind == "smtp" and self.username and not self.credential:
            raise ValueError(f"channel {self.name}: smtp username needs credential")
        return self


class IncidentSettings(BaseModel):
    """``[incident]``: the channels incident messages go through (none: one file outbox),
    how long a page may stay unacknowledged before the secondary contact is paged, where
    the incident journal lives (local disk, so that it can be read and written with every
    server down; default ``incidents/`` beside the config file) and an optional folder of
    the operator's own message templates (``declaration.txt``, ``status-update.txt``,
    ``recovery-complete.txt``; a file missing there is taken from the wheel's)."""

    channels: list[IncidentChannelSettings] = Field(default_factory=list)
    escalation_minutes: float = Field(default=15.0, gt=0)
    journal_dir: Path | None = None
    templates: Path | None = None

    @field_validator("channels")
    @classmethod
    def _unique(cls, value: list[IncidentChannelSettings]) -> list[IncidentChannelSettings]:
        names = [c.name for c in value]
        if len(set(names)) != len(names):
            raise ValueError("[[incident.channels]]: two channels have the same name")
        return value


class DrillSettings(BaseModel):
    """``[drills]``: where drills keep their files (each drill's journal and probe
    samples, the improvement actions; local disk, so they can be read with every server
    down; default ``drills/`` beside the config file), where their reports go by default
    (a subfolder per drill in that folder, beside the drill's journal), and the
    operator's own drill specs (YAML files, beside the ones shipped in the wheel)."""

    model_config = ConfigDict(extra="forbid")

    journal_dir: Path | None = None
    report_dir: Path | None = None
    spec_dirs: list[Path] = Field(default_factory=list)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PAYAPI_",
        env_nested_delimiter="__",
        extra="ignore",
        # A validation error names the key, never its value (a DSN may hold a password).
        hide_input_in_errors=True,
    )

    config_path: Path | None = None
    environment: str = "lab"
    plan_file: Path | None = None
    eapi: EapiSettings = Field(default_factory=EapiSettings)
    sapi: SapiSettings = Field(default_factory=SapiSettings)
    vault: VaultSettings = Field(default_factory=VaultSettings)
    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    backup: BackupSettings = Field(default_factory=BackupSettings)
    config_backup: ConfigBackupSettings = Field(default_factory=ConfigBackupSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    recovery: RecoverySettings = Field(default_factory=RecoverySettings)
    # The platform's regions (payapi.core.topology); none: the settings above are one region.
    topology: TopologySettings = Field(default_factory=TopologySettings)
    regions: dict[str, RegionSettings] = Field(default_factory=dict)
    # What the HA engines are configured with (payapi.ops.feasibility reads them).
    patroni: PatroniSettings = Field(default_factory=PatroniSettings)
    sentinel: SentinelSettings = Field(default_factory=SentinelSettings)
    failover: FailoverSettings = Field(default_factory=FailoverSettings)
    incident: IncidentSettings = Field(default_factory=IncidentSettings)
    drills: DrillSettings = Field(default_factory=DrillSettings)

    @field_validator("regions")
    @classmethod
    def _check_region_names(cls, value: dict[str, RegionSettings]) -> dict[str, RegionSettings]:
        for name in value:
            if not _REGION_NAME.match(name):
                raise ValueError(
                    f"region name {name!r}: a lowercase letter, then up to 31 lowercase "
                    "letters, digits or -"
                )
        return value

    def runbook_journal_dir(self) -> Path:
        """``[recovery] journal_dir``, else ``runbooks/`` in the config file's folder (a
        lab's folder: its runs stay with it), else in the current directory."""
        if self.recovery.journal_dir is not None:
            return self.recovery.journal_dir
        base = self.config_path.parent if self.config_path is not None else Path.cwd()
        return base / "runbooks"

    def incident_journal_dir(self) -> Path:
        """``[incident] journal_dir``, else ``incidents/`` in the config file's folder,
        else in the current directory."""
        if self.incident.journal_dir is not None:
            return self.incident.journal_dir
        base = self.config_path.parent if self.config_path is not None else Path.cwd()
        return base / "incidents"

    def drill_journal_dir(self) -> Path:
        """``[drills] journal_dir``, else ``drills/`` in the config file's folder, else
        in the current directory."""
        if self.drills.journal_dir is not None:
            return self.drills.journal_dir
        base = self.config_path.parent if self.config_path is not None else Path.cwd()
        return base / "drills"

    def drill_report_dir(self, drill_id: str) -> Path:
        """Where a drill's reports go unless a command names a folder: a subfolder per
        drill of ``[drills] report_dir``, else of the drills folder (beside the drill's
        journal, where ``drill run`` writes them too)."""
        return (self.drills.report_dir or self.drill_journal_dir()) / drill_id

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _toml_path_in_context()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


_context_path: Path | None = None


def _toml_path_in_context() -> Path | None:
    return _context_path


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Load settings from ``path``, else ``$PAYAPI_CONFIG``, else defaults only.

    Relative paths inside the file are resolved against the file's folder, so a config
    works whatever the caller's working directory is.
    """
    global _context_path
    raw = path if path is not None else os.environ.get(CONFIG_ENV)
    resolved: Path | None = None
    if raw:
        resolved = Path(raw).expanduser().resolve()
        if not resolved.is_file():
            raise ConfigError(f"config file not found: {resolved}")
    _context_path = resolved
    try:
        settings = Settings(**overrides)
    except Exception as exc:  # pydantic's ValidationError, TOML decode errors
        first = str(exc).splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise ConfigError(f"invalid config {resolved}: {detail}") from None
    finally:
        _context_path = None
    settings.config_path = resolved
    if resolved is not None:
        _resolve_relative_paths(settings, resolved.parent)
    return settings


def _resolve_relative_paths(settings: Settings, base: Path) -> None:
    def fix(p: Path | None) -> Path | None:
        if p is None or p.is_absolute():
            return p
        return (base / p).resolve()

    settings.plan_file = fix(settings.plan_file)
    settings.postgres.data_dir = fix(settings.postgres.data_dir)
    settings.postgres.log_file = fix(settings.postgres.log_file)
    settings.redis.data_dir = fix(settings.redis.data_dir)
    for listen in (settings.vault, settings.sapi, settings.eapi):
        listen.pid_file = fix(listen.pid_file)
        listen.log_file = fix(listen.log_file)
    settings.vault.admin_api_key_file = fix(settings.vault.admin_api_key_file)
    settings.vault.data_key_file = fix(settings.vault.data_key_file)
    settings.sapi.vault_api_key_file = fix(settings.sapi.vault_api_key_file)
    settings.eapi.vault_api_key_file = fix(settings.eapi.vault_api_key_file)
    settings.audit.head_file = fix(settings.audit.head_file)
    settings.backup.key_file = fix(settings.backup.key_file)
    settings.backup.work_dir = fix(settings.backup.work_dir)
    for secondary in settings.backup.secondaries.values():
        secondary.key_file = fix(secondary.key_file)
    settings.recovery.journal_dir = fix(settings.recovery.journal_dir)
    settings.recovery.runbook_dirs = [
        p for p in (fix(d) for d in settings.recovery.runbook_dirs) if p is not None
    ]
    settings.security.log_paths = [
        p for p in (fix(x) for x in settings.security.log_paths) if p is not None
    ]
    settings.recovery.baseline_file = fix(settings.recovery.baseline_file)
    for channel in settings.incident.channels:
        channel.dir = fix(channel.dir)
        channel.ca_file = fix(channel.ca_file)
    settings.incident.journal_dir = fix(settings.incident.journal_dir)
    settings.incident.templates = fix(settings.incident.templates)
    settings.drills.journal_dir = fix(settings.drills.journal_dir)
    settings.drills.report_dir = fix(settings.drills.report_dir)
    settings.drills.spec_dirs = [p for p in (fix(d) for d in settings.drills.spec_dirs) if p]
    cb = settings.config_backup
    cb.git_dir = fix(cb.git_dir)
    cb.deploy_dir = fix(cb.deploy_dir)
    cb.kube_config_file = fix(cb.kube_config_file)
    cb.sources = [p for p in (fix(s) for s in cb.sources) if p is not None]


def read_secret_file(path: Path | None, what: str) -> SecretStr:
    """Read a bootstrap credential (an API key file); never echo its content in errors."""
    if path is None:
        raise ConfigError(f"{what}: no key file configured")
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path}: {exc.strerror}") from None
    if not value:
        raise ConfigError(f"{what}: {path} is empty")
    return SecretStr(value)
