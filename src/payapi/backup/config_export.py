"""Configuration backups: the deployment's configuration exported into a Git repository
(pushed to every configured remote) and into the backup repository.

What is exported (one *export*, a tree of files):

    payapi-export.yaml                  what the export holds, how secrets are encrypted,
                                        which secret files were referenced, not exported
    files/<source name>/...             the configured sources, byte for byte (the plan,
                                        deploy/, the lab's payapi.toml...)
    kubernetes/<namespace>/<kind>/<name>.yaml
                                        the namespace's resources (official ``kubernetes``
                                        client, only when a kube context is configured),
                                        without status, uid, resourceVersion,
                                        managedFields and the other fields the cluster sets

Secrets never reach Git in clear. This is where we differ from the seed, whose
``kubectl get secrets -o yaml`` committed base64 (i.e. plaintext) Secrets to a repository
that is cloned to many places and whose history is forever:

- every value under ``data``/``stringData`` of a Kubernetes ``Secret`` (from the cluster, or
  in a YAML file of a source) becomes an AES-256-GCM envelope
  ``ENC[AES256_GCM,data:…,iv:…,tag:…,type:str]`` (the shape sops uses), one per value, so a
  diff shows which key changed and nothing else. The key is derived from the backup
  repository key (HKDF-SHA256, info ``payapi-config-export/secret-values/v1``); the value's
  place (file, document, field, key) is the associated data, so envelopes cannot be moved.
  The IV is an HMAC of place and value (a synthetic IV), so an unchanged value encrypts to
  the same envelope and an unchanged configuration makes no commit; what this reveals is
  only *whether* a value changed, which the diff shows anyway;
- files that are secrets themselves (anything under a ``secrets`` folder, key-like names
  such as ``*.key`` or ``*.api_key``, files only their owner may read) are never exported,
  not even encrypted: ``payapi-export.yaml`` names them with a keyed fingerprint (an HMAC,
  so a change is visible, the value is not). Their home is the vault or their key file;
  the ``kubectl.kubernetes.io/last-applied-configuration`` annotation is dropped (for a
  Secret it holds the values in clear).

Invariants:
- The export is deterministic (sorted keys, stable YAML, no timestamps in the tree): an
  unchanged configuration makes no commit and no new backup.
- A commit only when something changed; every configured remote is pushed every time (so
  a remote that missed a push catches up), and a failed push is reported, not hidden.
- Each new export is also stored in the backup repository (component ``configuration``,
  type ``git``, object ``export.tar``) so a region can be rebuilt from the repository alone.
- Git runs with a fixed author, without the user's or system's Git config (no hooks, no
  signing, no credential helpers) and talks to no host but the configured remotes.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import os
import re
import stat
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import yaml

from payapi.backup.config_format import (
    EXPORT_FILE,
    FORMAT,
    ConfigBackupError,
)
from payapi.backup.config_secrets import (
    HKDF_INFO,
    SecretBox,
    dump_yaml,
    dump_yaml_all,
    encrypt_secret_doc,
    is_secret_doc,
)
from payapi.core.settings import (
    DEFAULT_NAMESPACE,
    DEFAULT_SECRET_PATTERNS,
)
from payapi.systems.kubernetes import KubeSource, clean_resource

MAX_FILE_BYTES = 16 << 20  # configuration, not data: anything larger is a mistake

SECRET_DIRS = frozenset({"secrets", ".secrets", "secret"})

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


# --------------------------------------------------------------------------- the export


@dataclass
class Export:
    files: dict[str, bytes] = field(default_factory=dict)
    referenced: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    secret_values: int = 0
    kube: dict[str, Any] | None = None

    def tree_sha256(self) -> str:
        h = hashlib.sha256()
        for path in sorted(self.files):
            h.update(path.encode("utf-8") + b"\x00")
            h.update(hashlib.sha256(self.files[path]).digest())
        return h.hexdigest()


def _secret_reason(rel: PurePosixPath, mode: int, patterns: Sequence[str]) -> str | None:
    if any(part.lower() in SECRET_DIRS for part in rel.parts[:-1]):
        return "under a secrets folder"
    if any(fnmatch.fnmatch(rel.name.lower(), p.lower()) for p in patterns):
        return "its name says it is a key or credential"
    if mode & 0o077 == 0:
        return "only its owner may read it"
    return None


def _yaml_secret_file(content: bytes, place: str, box: SecretBox) -> tuple[bytes, int] | None:
    """If a YAML file holds a Kubernetes Secret: its documents with every secret value
    encrypted (re-serialized, deterministically). None if it holds no Secret."""
    if b"Secret" not in content:
        return None
    try:
        docs = list(yaml.safe_load_all(content.decode("utf-8")))
    except (yaml.YAMLError, UnicodeDecodeError):
        if re.search(rb"(?m)^\s*kind:\s*['\"]?Secret\b", content):
            raise _Unparseable() from None
        return None
    if not any(is_secret_doc(d) for d in docs):
        return None
    n = 0
    for i, doc in enumerate(docs):
        if is_secret_doc(doc):
            n += encrypt_secret_doc(doc, f"{place}#{i}", box)
    return dump_yaml_all(docs), n


class _Unparseable(Exception):
    """A file that looks like a Secret manifest but does not parse: treat it as secret."""


def _add_file(
    export: Export,
    tree_path: str,
    path: Path,
    rel: PurePosixPath,
    box: SecretBox,
    patterns: Sequence[str],
) -> None:
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        kind = "symlink" if stat.S_ISLNK(st.st_mode) else "not a regular file"
        export.skipped.append({"path": tree_path, "reason": kind})
        return
    if st.st_size > MAX_FILE_BYTES:
        raise ConfigBackupError(
            f"{path} is {st.st_size} bytes: configuration sources hold configuration"
        )
    reason = _secret_reason(rel, st.st_mode, patterns)
    content = path.read_bytes()  # a secret file too: only for its keyed fingerprint
    if reason is None and path.suffix.lower() in (".yaml", ".yml"):
        try:
            converted = _yaml_secret_file(content, tree_path, box)
        except _Unparseable:
            reason = "a Secret manifest that does not parse"
        else:
            if converted is not None:
                content, n = converted
                export.secret_values += n
    if reason is not None:
        export.referenced.append(
            {
                "path": tree_path,
                "reason": reason,
                "fingerprint": box.fingerprint(tree_path, content),
            }
        )
        return
    export.files[tree_path] = content


def file_name(name: str) -> str:
    """A resource name as a file name: itself when safe (DNS names are), else a safe form
    with a hash of the original so that two names never collide."""
    if _NAME.match(name):
        return name
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "_"
    return f"{safe[:100]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def _source_list(sources: Sequence[Path | tuple[str, Path]]) -> list[tuple[str, Path]]:
    out: list[tuple[str, Path]] = []
    seen: set[str] = set()
    for src in sources:
        name, path = src if isinstance(src, tuple) else (Path(src).name, Path(src))
        if not _NAME.match(name) or name == "..":
            raise ConfigBackupError(f"invalid source name {name!r}")
        if name in seen:
            raise ConfigBackupError(f"two sources are named {name!r}: name them apart")
        seen.add(name)
        if not path.exists():
            raise ConfigBackupError(f"configuration source {path} does not exist")
        out.append((name, path))
    return out


def build_export(
    sources: Sequence[Path | tuple[str, Path]],
    box: SecretBox,
    *,
    kube: KubeSource | None = None,
    namespace: str = DEFAULT_NAMESPACE,
    secret_patterns: Sequence[str] = DEFAULT_SECRET_PATTERNS,
) -> Export:
    """The export as ``{tree path: bytes}`` (deterministic for the same inputs)."""
    export = Export()
    listed: list[dict[str, str]] = []
    for name, path in _source_list(sources):
        if path.is_dir():
            listed.append({"name": name, "kind": "folder"})
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames.sort()
                for fname in sorted(filenames):
                    full = Path(dirpath) / fname
                    rel = PurePosixPath(name) / full.relative_to(path).as_posix()
                    _add_file(export, f"files/{rel}", full, rel, box, secret_patterns)
                for dname in list(dirnames):  # symlinked folders are not followed
                    if (Path(dirpath) / dname).is_symlink():
                        rel = PurePosixPath(name) / (Path(dirpath) / dname).relative_to(path)
                        export.skipped.append(
                            {"path": f"files/{rel.as_posix()}", "reason": "symlink"}
                        )
                        dirnames.remove(dname)
        else:
            listed.append({"name": name, "kind": "file"})
            rel = PurePosixPath(name)
            # A source named explicitly is followed if it is a symlink (folders are not).
            _add_file(export, f"files/{name}", path.resolve(), rel, box, secret_patterns)
    if kube is not None:
        counts: dict[str, int] = {}
        for raw in kube.resources(namespace):
            doc = clean_resource(raw)
            if doc is None:
                continue
            kind = str(doc.get("kind", "Unknown"))
            name = str((doc.get("metadata") or {}).get("name", ""))
            ns_dir = file_name(namespace)
            tree_path = f"kubernetes/{ns_dir}/{file_name(kind.lower())}/{file_name(name)}.yaml"
            if kind == "Secret":
                export.secret_values += encrypt_secret_doc(doc, f"{tree_path}#0", box)
            export.files[tree_path] = dump_yaml(doc)
            counts[kind] = counts.get(kind, 0) + 1
        export.kube = {
            "namespace": namespace,
            "resources": dict(sorted(counts.items())),
        }
    header: dict[str, Any] = {
        "format": FORMAT,
        "generator": "payapi config export",
        "sources": listed,
        "secrets": {
            "cipher": "AES256_GCM",
            "kdf": "HKDF-SHA256 of the backup repository key",
            "info": HKDF_INFO.decode(),
            "key_id": box.key_id,
            "associated_data": "<file>#<document>/<data|stringData>/<key>",
            "encrypted_values": export.secret_values,
        },
        "not_exported": sorted(export.referenced, key=lambda r: r["path"]),
        "skipped": sorted(export.skipped, key=lambda r: r["path"]),
        "kubernetes": export.kube,
    }
    export.files[EXPORT_FILE] = (
        b"# Written by `payapi backup run --component config`. Secret values are encrypted;\n"
        b"# secret files are listed under not_exported and live in the vault / key files.\n"
        + dump_yaml(header)
    )
    return export


def tar_files(files: Mapping[str, bytes], out: BinaryIO) -> None:
    """A deterministic tar: sorted, mtime 0, root-owned, mode 0644."""
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(files):
            data = files[path]
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
