"""Checking a configuration export out of the backup repository into a folder, its
secret values decrypted only when asked."""

from __future__ import annotations

import contextlib
import os
import shutil
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from payapi.backup.config_format import (
    COMPONENT,
    EXPORT_FILE,
    OBJECT,
    ConfigBackupError,
    ConfigMeta,
)
from payapi.backup.config_secrets import (
    SecretBox,
    decrypt_secret_doc,
    dump_yaml,
    dump_yaml_all,
    is_secret_doc,
)
from payapi.backup.errors import NotFound
from payapi.backup.manifest import BackupInfo
from payapi.backup.repository import Repository

# --------------------------------------------------------------------------- restore


@dataclass
class ConfigRestoreResult:
    backup_id: str
    commit: str | None
    dir: Path
    files: list[str]
    decrypted: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "component": COMPONENT,
            "backup_id": self.backup_id,
            "commit": self.commit,
            "dir": str(self.dir),
            "files": len(self.files),
            "decrypted_values": self.decrypted,
        }


def _safe_member(name: str) -> PurePosixPath:
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or not p.parts or name.startswith("/"):
        raise ConfigBackupError(f"unsafe path {name!r} in the export")
    return p


def restore_config(
    repo: Repository,
    backup_id: str | None,
    to: Path,
    *,
    decrypt_secrets: bool = False,
) -> ConfigRestoreResult:
    """Check out one export (the newest if ``backup_id`` is None) into ``to``, which must
    not exist or be empty. Secret values stay encrypted unless ``decrypt_secrets`` (then
    the Secret files are written with mode 0600)."""
    if backup_id is None:
        backups = repo.list_backups(COMPONENT)
        if not backups:
            raise NotFound(f"no configuration backup in {repo.url}")
        info = backups[-1]
    else:
        info = repo.get_backup(backup_id)
        if info.component != COMPONENT:
            raise ConfigBackupError(
                f"backup {backup_id} is a {info.component} backup, not configuration"
            )
    to = Path(to)
    if to.exists() and (not to.is_dir() or any(to.iterdir())):
        raise ConfigBackupError(f"{to} exists and is not an empty folder")
    to.mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    with (
        repo.open_object(info.backup_id, OBJECT) as raw,
        tarfile.open(fileobj=raw, mode="r|") as tar,
    ):
        for member in tar:
            rel = _safe_member(member.name)
            if not member.isfile():
                raise ConfigBackupError(f"{member.name} in the export is not a regular file")
            src = tar.extractfile(member)
            if src is None:  # pragma: no cover - regular files always have content
                continue
            dest = to.joinpath(*rel.parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(dest, "xb") as out:
                shutil.copyfileobj(src, out)
            files.append(rel.as_posix())
    decrypted = 0
    if decrypt_secrets:
        decrypted = _decrypt_tree(to, files, SecretBox(repo.key), info)
    return ConfigRestoreResult(
        backup_id=info.backup_id,
        commit=ConfigMeta.of(info).commit,
        dir=to,
        files=sorted(files),
        decrypted=decrypted,
    )


def _decrypt_tree(to: Path, files: Iterable[str], box: SecretBox, info: BackupInfo) -> int:
    expected = ConfigMeta.of(info).secrets_key_id
    if expected and expected != box.key_id:
        raise ConfigBackupError(
            f"backup {info.backup_id}: secret values were encrypted under another repository key"
        )
    total = 0
    for rel in files:
        if not rel.endswith((".yaml", ".yml")) or rel == EXPORT_FILE:
            continue
        path = to / rel
        content = path.read_bytes()
        if b"ENC[AES256_GCM," not in content:
            continue
        docs = list(yaml.safe_load_all(content.decode("utf-8")))
        n = 0
        for i, doc in enumerate(docs):
            if is_secret_doc(doc):
                n += decrypt_secret_doc(doc, f"{rel}#{i}", box)
        if n:
            os.chmod(path, 0o600)
            data = dump_yaml(docs[0]) if len(docs) == 1 else dump_yaml_all(docs)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            total += n
    return total
