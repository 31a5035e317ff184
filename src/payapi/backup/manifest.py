"""What the repository records about backups: the manifest and the views built on it.

A manifest is immutable once written, and it is written *last*: a backup exists (is
listed, restorable, counted by retention) exactly when its manifest does. Anything that
changes later (the last verification) lives in a separate small object and is merged into
:class:`BackupInfo` when backups are listed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from payapi.backup.errors import RepositoryError

# Plain dataclasses (wal push reads them without pydantic); re-exported from here.
from payapi.backup.records import RepositoryConfig as RepositoryConfig
from payapi.backup.records import WalEntry as WalEntry

MANIFEST_FORMAT = 1


class BackupMeta(BaseModel):
    """The typed view of one engine's ``meta`` (each engine subclasses it).

    On disk and in ``backup list --json`` ``meta`` stays a JSON object, so manifests
    written before a field existed still read; in code an engine never indexes the raw
    dict: it writes ``XMeta(...).dump()`` into the manifest and reads ``XMeta.of(info)``.
    Unknown keys are kept (a newer payapi may have written them).
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    @classmethod
    def of(cls, backup: BackupInfo | Manifest) -> Self:
        try:
            return cls.model_validate(backup.meta)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "meta"
            raise RepositoryError(
                f"backup {backup.backup_id}: unreadable metadata ({where}: {first['msg']})"
            ) from None

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True)


class ObjectEntry(BaseModel):
    """One stored object: sizes and SHA-256 of the plaintext and of the stored bytes."""

    model_config = ConfigDict(frozen=True)

    name: str
    size: int
    stored_size: int
    sha256: str
    stored_sha256: str
    chunks: int = 0


class BackupInfo(BaseModel):
    """A committed backup as listed: the manifest without its object list."""

    model_config = ConfigDict(frozen=True)

    backup_id: str
    component: str
    type: str
    parent: str | None = None
    started_at: datetime
    finished_at: datetime
    verified_at: datetime | None = None
    bytes: int = 0
    stored_bytes: int = 0
    objects: int = 0
    wal_start: str | None = None
    wal_end: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)
    tool_version: str = ""


class Manifest(BaseModel):
    model_config = ConfigDict(frozen=True)

    format_version: int = MANIFEST_FORMAT
    repository_id: str
    backup_id: str
    component: str
    type: str
    parent: str | None = None
    started_at: datetime
    finished_at: datetime
    wal_start: str | None = None
    wal_end: str | None = None
    tool_version: str
    meta: dict[str, Any] = Field(default_factory=dict)
    objects: list[ObjectEntry] = Field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(o.size for o in self.objects)

    @property
    def stored_bytes(self) -> int:
        return sum(o.stored_size for o in self.objects)

    def entry(self, name: str) -> ObjectEntry | None:
        return next((o for o in self.objects if o.name == name), None)

    def info(self, verified_at: datetime | None = None) -> BackupInfo:
        return BackupInfo(
            backup_id=self.backup_id,
            component=self.component,
            type=self.type,
            parent=self.parent,
            started_at=self.started_at,
            finished_at=self.finished_at,
            verified_at=verified_at,
            bytes=self.bytes,
            stored_bytes=self.stored_bytes,
            objects=len(self.objects),
            wal_start=self.wal_start,
            wal_end=self.wal_end,
            meta=self.meta,
            tool_version=self.tool_version,
        )


class VerificationRecord(BaseModel):
    """The last successful verification of one backup (``verified/<backup id>``)."""

    backup_id: str
    verified_at: datetime
    details: dict[str, Any] = Field(default_factory=dict)


class VerifyProblem(BaseModel):
    """One finding of :meth:`Repository.verify`; ``backup_id`` is None for WAL objects."""

    backup_id: str | None
    object: str
    kind: str  # missing | corrupt | checksum | size | unlisted | manifest
    detail: str

    def __str__(self) -> str:
        where = f"backup {self.backup_id}" if self.backup_id else "WAL"
        return f"{where}: {self.object}: {self.kind}: {self.detail}"


class VerifyReport(BaseModel):
    started_at: datetime
    finished_at: datetime | None = None
    backups: list[str] = Field(default_factory=list)
    objects_checked: int = 0
    bytes_checked: int = 0
    wal_checked: int = 0
    problems: list[VerifyProblem] = Field(default_factory=list)
    orphans: list[str] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def backup_ok(self, backup_id: str) -> bool:
        return backup_id in self.backups and not any(
            p.backup_id == backup_id for p in self.problems
        )

    def problems_for(self, backup_id: str | None) -> list[VerifyProblem]:
        return [p for p in self.problems if p.backup_id == backup_id]
