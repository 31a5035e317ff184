"""The configuration backup's names, its error, and the typed metadata of its manifest."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict

from payapi.backup.errors import RepositoryError
from payapi.backup.manifest import BackupMeta

COMPONENT = "configuration"  # the plan's component (alias: config)
TYPE = "git"  # the plan's backup type for it (retention: indefinite)
OBJECT = "export.tar"
EXPORT_FILE = "payapi-export.yaml"
FORMAT = 1


class ConfigBackupError(RepositoryError):
    """A configuration export or restore failed; one line for the operator."""


class ConfigMeta(BackupMeta):
    """What a configuration backup's manifest records: the Git commit and branch of the
    export, a hash of its tree (an unchanged configuration is not stored twice), counts,
    the id of the key its secret values are encrypted under, and the Kubernetes source."""

    model_config = ConfigDict(frozen=True, extra="allow")

    commit: str | None = None
    branch: str | None = None
    tree_sha256: str | None = None
    files: int = 0
    secret_values_encrypted: int = 0
    secret_files_referenced: int = 0
    secrets_key_id: str | None = None
    kubernetes: dict[str, Any] | None = None
