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

import base64
import contextlib
import fnmatch
import hashlib
import hmac
import importlib
import io
import os
import re
import shutil
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Protocol
from urllib.parse import urlsplit, urlunsplit

import yaml
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from payapi.backup.errors import NotFound, RepositoryError
from payapi.backup.lock import (
    DEFAULT_LEASE,
    Lock,
    LockError,
    lock_name,
)
from payapi.backup.manifest import BackupInfo
from payapi.backup.repository import Repository
from payapi.core.logs import get_logger
from payapi.core.settings import (
    DEFAULT_NAMESPACE,
    DEFAULT_SECRET_PATTERNS,
    ConfigBackupSettings,
)

__all__ = [
    "COMPONENT",
    "DEFAULT_SECRET_PATTERNS",
    "OBJECT",
    "TYPE",
    "ConfigBackupError",
    "ConfigBackupResult",
    "ConfigBackupSettings",
    "ConfigRestoreResult",
    "KubeSource",
    "OfficialKubeSource",
    "SecretBox",
    "clean_resource",
    "default_sources",
    "restore_config",
    "run_config_backup",
]

COMPONENT = "configuration"  # the plan's component (alias: config)
TYPE = "git"  # the plan's backup type for it (retention: indefinite)
OBJECT = "export.tar"
EXPORT_FILE = "payapi-export.yaml"
FORMAT = 1
MAX_FILE_BYTES = 16 << 20  # configuration, not data: anything larger is a mistake

SECRET_DIRS = frozenset({"secrets", ".secrets", "secret"})

_ENVELOPE = re.compile(
    r"^ENC\[AES256_GCM,data:([A-Za-z0-9+/=]*),iv:([A-Za-z0-9+/=]+),"
    r"tag:([A-Za-z0-9+/=]+),type:str\]$"
)
_HKDF_INFO = b"payapi-config-export/secret-values/v1"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_REMOTE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

# Metadata the cluster sets, which must not be re-applied (and churns on every export).
_DROP_METADATA = (
    "uid",
    "resourceVersion",
    "managedFields",
    "creationTimestamp",
    "generation",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)
_DROP_ANNOTATIONS = (
    "kubectl.kubernetes.io/last-applied-configuration",  # holds a Secret's values in clear
    "deployment.kubernetes.io/revision",
)

Progress = Callable[[str], None]
log = get_logger("payapi.backup.config")


class ConfigBackupError(RepositoryError):
    """A configuration export or restore failed; one line for the operator."""


def _note(progress: Progress | None, message: str) -> None:
    log.info("config_backup", step=message)
    if progress is not None:
        progress(message)


def redact_url(url: str) -> str:
    """A remote URL without its user-info (``https://user:token@host`` → ``https://host``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.netloc and "@" in parts.netloc:
        host = parts.netloc.rsplit("@", 1)[1]
        return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return url


# --------------------------------------------------------------------------- secret values


class SecretBox:
    """Per-value AES-256-GCM envelopes under a key derived from the repository key."""

    def __init__(self, repository_key: bytes) -> None:
        material = HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=_HKDF_INFO).derive(
            repository_key
        )
        self._aead = AESGCM(material[:32])
        self._mac_key = material[32:]
        self.key_id = hmac.new(self._mac_key, b"key-id", hashlib.sha256).hexdigest()[:16]

    def _iv(self, context: str, plaintext: bytes) -> bytes:
        msg = b"iv\x00" + context.encode("utf-8") + b"\x00" + plaintext
        return hmac.new(self._mac_key, msg, hashlib.sha256).digest()[:12]

    def fingerprint(self, context: str, content: bytes) -> str:
        msg = b"fingerprint\x00" + context.encode("utf-8") + b"\x00" + content
        return hmac.new(self._mac_key, msg, hashlib.sha256).hexdigest()[:32]

    def encrypt(self, context: str, value: str) -> str:
        plaintext = value.encode("utf-8")
        iv = self._iv(context, plaintext)
        sealed = self._aead.encrypt(iv, plaintext, context.encode("utf-8"))
        data, tag = sealed[:-16], sealed[-16:]

        def b64(b: bytes) -> str:
            return base64.b64encode(b).decode("ascii")

        return f"ENC[AES256_GCM,data:{b64(data)},iv:{b64(iv)},tag:{b64(tag)},type:str]"

    def decrypt(self, context: str, envelope: str) -> str:
        m = _ENVELOPE.match(envelope)
        if not m:
            raise ConfigBackupError(f"{context}: not an encrypted value")
        data, iv, tag = (base64.b64decode(g) for g in m.groups())
        try:
            plain = self._aead.decrypt(iv, data + tag, context.encode("utf-8"))
        except InvalidTag:
            raise ConfigBackupError(
                f"{context}: the value does not decrypt (wrong repository key, or moved)"
            ) from None
        return plain.decode("utf-8")


def is_envelope(value: object) -> bool:
    return isinstance(value, str) and _ENVELOPE.match(value) is not None


def _is_secret_doc(doc: object) -> bool:
    return isinstance(doc, dict) and doc.get("kind") == "Secret"


def _secret_values(doc: dict[str, Any], place: str, fn: Callable[[str, str], str]) -> int:
    """Apply ``fn(context, value)`` to every value of ``data``/``stringData``; count them."""
    n = 0
    for fld in ("data", "stringData"):
        values = doc.get(fld)
        if not isinstance(values, dict):
            continue
        for key in sorted(values):
            value = values[key]
            if isinstance(value, str):
                values[key] = fn(f"{place}/{fld}/{key}", value)
                n += 1
    return n


def encrypt_secret_doc(doc: dict[str, Any], place: str, box: SecretBox) -> int:
    def enc(context: str, value: str) -> str:
        return value if is_envelope(value) else box.encrypt(context, value)

    return _secret_values(doc, place, enc)


def decrypt_secret_doc(doc: dict[str, Any], place: str, box: SecretBox) -> int:
    def dec(context: str, value: str) -> str:
        return box.decrypt(context, value) if is_envelope(value) else value

    return _secret_values(doc, place, dec)


def _dump_yaml(doc: Any) -> bytes:
    text = yaml.safe_dump(
        doc, sort_keys=True, default_flow_style=False, allow_unicode=True, width=4096
    )
    return text.encode("utf-8")


def _dump_yaml_all(docs: Sequence[Any]) -> bytes:
    text = yaml.safe_dump_all(
        docs, sort_keys=True, default_flow_style=False, allow_unicode=True, width=4096
    )
    return text.encode("utf-8")


# --------------------------------------------------------------------------- kubernetes


def clean_resource(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """A resource as it can be re-applied: without ``status`` and what the cluster sets.

    None for what the cluster makes by itself (objects owned by a controller, service
    account tokens, the ``kube-root-ca.crt`` ConfigMap): restoring those would fight it.
    """
    doc: dict[str, Any] = {k: v for k, v in obj.items() if k != "status"}
    meta = dict(doc.get("metadata") or {})
    if meta.get("ownerReferences"):
        return None
    kind = doc.get("kind")
    if kind == "Secret" and doc.get("type") == "kubernetes.io/service-account-token":
        return None
    if kind == "ConfigMap" and meta.get("name") == "kube-root-ca.crt":
        return None
    for key in _DROP_METADATA:
        meta.pop(key, None)
    annotations = {
        k: v for k, v in (meta.get("annotations") or {}).items() if k not in _DROP_ANNOTATIONS
    }
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    doc["metadata"] = meta
    if kind == "Service" and isinstance(doc.get("spec"), dict):
        spec = dict(doc["spec"])
        if spec.get("clusterIP") not in (None, "None"):  # assigned by the cluster
            spec.pop("clusterIP", None)
            spec.pop("clusterIPs", None)
        doc["spec"] = spec
    return doc


class KubeSource(Protocol):
    """Where the namespace's resources come from (the cluster, or a test double)."""

    @property
    def description(self) -> str: ...

    def resources(self, namespace: str) -> Iterable[Mapping[str, Any]]: ...


# (apiVersion, kind, API class, list method) for what a namespace's configuration is.
_KINDS: tuple[tuple[str, str, str, str], ...] = (
    ("v1", "ConfigMap", "CoreV1Api", "list_namespaced_config_map"),
    ("v1", "Secret", "CoreV1Api", "list_namespaced_secret"),
    ("v1", "Service", "CoreV1Api", "list_namespaced_service"),
    ("v1", "ServiceAccount", "CoreV1Api", "list_namespaced_service_account"),
    ("v1", "PersistentVolumeClaim", "CoreV1Api", "list_namespaced_persistent_volume_claim"),
    ("apps/v1", "Deployment", "AppsV1Api", "list_namespaced_deployment"),
    ("apps/v1", "StatefulSet", "AppsV1Api", "list_namespaced_stateful_set"),
    ("apps/v1", "DaemonSet", "AppsV1Api", "list_namespaced_daemon_set"),
    ("batch/v1", "CronJob", "BatchV1Api", "list_namespaced_cron_job"),
    ("batch/v1", "Job", "BatchV1Api", "list_namespaced_job"),
    ("networking.k8s.io/v1", "Ingress", "NetworkingV1Api", "list_namespaced_ingress"),
    (
        "networking.k8s.io/v1",
        "NetworkPolicy",
        "NetworkingV1Api",
        "list_namespaced_network_policy",
    ),
    ("rbac.authorization.k8s.io/v1", "Role", "RbacAuthorizationV1Api", "list_namespaced_role"),
    (
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        "RbacAuthorizationV1Api",
        "list_namespaced_role_binding",
    ),
    (
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        "AutoscalingV2Api",
        "list_namespaced_horizontal_pod_autoscaler",
    ),
    ("policy/v1", "PodDisruptionBudget", "PolicyV1Api", "list_namespaced_pod_disruption_budget"),
)


class OfficialKubeSource:
    """The namespace's resources through the official ``kubernetes`` client (imported only
    here, when a context is configured; it is an optional dependency)."""

    def __init__(self, context: str, config_file: Path | None = None) -> None:
        try:
            k8s: Any = importlib.import_module("kubernetes")
        except ImportError:
            raise ConfigBackupError(
                "a kube context is configured but the kubernetes client is not installed "
                "(pip install kubernetes)"
            ) from None
        self._k8s = k8s
        self.context = context
        try:
            self._api = k8s.config.new_client_from_config(
                config_file=str(config_file) if config_file else None,
                context=context,
                persist_config=False,  # a backup never rewrites the operator's kubeconfig
            )
        except Exception as exc:  # ConfigException and friends
            raise ConfigBackupError(f"kube context {context!r}: {exc}") from None
        self.skipped: list[str] = []

    @property
    def description(self) -> str:
        return f"kube context {self.context}"

    def resources(self, namespace: str) -> Iterable[Mapping[str, Any]]:
        k8s = self._k8s
        api_exc = k8s.client.exceptions.ApiException
        core = k8s.client.CoreV1Api(self._api)
        try:
            ns = core.read_namespace(namespace)
        except api_exc as exc:
            raise ConfigBackupError(f"namespace {namespace}: {exc.status} {exc.reason}") from None
        doc = self._api.sanitize_for_serialization(ns)
        doc.update(apiVersion="v1", kind="Namespace")
        yield doc
        for api_version, kind, api_class, method in _KINDS:
            api = getattr(k8s.client, api_class)(self._api)
            try:
                listing = getattr(api, method)(namespace)
            except api_exc as exc:
                if exc.status in (403, 404):  # not allowed, or not served by this cluster
                    self.skipped.append(f"{kind}: {exc.status} {exc.reason}")
                    continue
                raise ConfigBackupError(f"listing {kind}: {exc.status} {exc.reason}") from None
            for item in listing.items:
                doc = self._api.sanitize_for_serialization(item)
                doc.update(apiVersion=api_version, kind=kind)
                yield doc


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
    if not any(_is_secret_doc(d) for d in docs):
        return None
    n = 0
    for i, doc in enumerate(docs):
        if _is_secret_doc(doc):
            n += encrypt_secret_doc(doc, f"{place}#{i}", box)
    return _dump_yaml_all(docs), n


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


def _file_name(name: str) -> str:
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
            ns_dir = _file_name(namespace)
            tree_path = f"kubernetes/{ns_dir}/{_file_name(kind.lower())}/{_file_name(name)}.yaml"
            if kind == "Secret":
                export.secret_values += encrypt_secret_doc(doc, f"{tree_path}#0", box)
            export.files[tree_path] = _dump_yaml(doc)
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
            "info": _HKDF_INFO.decode(),
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
        + _dump_yaml(header)
    )
    return export


def _tar(files: Mapping[str, bytes], out: BinaryIO) -> None:
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


# --------------------------------------------------------------------------- git


class _Git:
    """The ``git`` CLI on one working tree, isolated from user and system config."""

    def __init__(self, work: Path, name: str, email: str) -> None:
        self.work = work
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("GIT_") or k in ("GIT_SSH", "GIT_SSH_COMMAND", "GIT_SSL_CAINFO")
        }
        env.update(
            GIT_CONFIG_NOSYSTEM="1",
            GIT_CONFIG_GLOBAL=os.devnull,
            GIT_TERMINAL_PROMPT="0",
            GIT_AUTHOR_NAME=name,
            GIT_AUTHOR_EMAIL=email,
            GIT_COMMITTER_NAME=name,
            GIT_COMMITTER_EMAIL=email,
            LC_ALL="C",
        )
        self.env = env

    def __call__(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 120.0,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        argv = [
            "git",
            "-C",
            str(self.work),
            "-c",
            "core.hooksPath=" + os.devnull,
            "-c",
            "commit.gpgsign=false",
            "-c",
            "core.autocrlf=false",
            "-c",
            "core.quotepath=off",
            "-c",
            "credential.helper=",
            "-c",
            "protocol.ext.allow=never",
            *args,
        ]
        try:
            res = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                env={**self.env, **(env or {})},
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError:
            raise ConfigBackupError("git is not installed") from None
        except subprocess.TimeoutExpired:
            raise ConfigBackupError(f"git {args[0]} timed out after {timeout:.0f} s") from None
        if check and res.returncode != 0:
            raise ConfigBackupError(f"git {args[0]} failed: {_git_error(res.stderr)}")
        return res


def _git_error(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    text = " ".join(lines[-3:]) or "no detail"
    return re.sub(r"(\w+://)[^/@\s]+@", r"\1", text)  # drop user-info from URLs


def _prepare_repo(
    git: _Git, branch: str, remotes: Mapping[str, str], progress: Progress | None
) -> None:
    work = git.work
    fresh = not (work / ".git").exists()
    if fresh:
        if work.exists() and any(work.iterdir()):
            raise ConfigBackupError(
                f"{work} is not empty and not a Git repository; refusing to export into it"
            )
        work.mkdir(parents=True, exist_ok=True)
        git("init", "-q", "-b", branch)
    current = {
        ln.split()[0]: ln.split()[1]
        for ln in git("remote", "-v").stdout.splitlines()
        if ln.endswith("(push)")
    }
    for name, url in sorted(remotes.items()):
        if not _REMOTE.match(name):
            raise ConfigBackupError(f"invalid remote name {name!r}")
        if name not in current:
            git("remote", "add", name, url)
        elif current[name] != url:
            git("remote", "set-url", name, url)
    has_head = git("rev-parse", "-q", "--verify", "HEAD", check=False).returncode == 0
    if not has_head:
        # A new exporter (a rebuilt region): continue the history a remote already has,
        # so that pushes fast-forward instead of being refused.
        for name in sorted(remotes):
            res = git("fetch", "-q", name, branch, check=False)
            if res.returncode == 0:
                git("checkout", "-q", "-B", branch, "FETCH_HEAD")
                _note(progress, f"continuing the history of {name}/{branch}")
                break
    else:
        tracked = git("ls-tree", "--name-only", "HEAD").stdout.split()
        if EXPORT_FILE not in tracked:
            raise ConfigBackupError(
                f"{work} holds a Git history that is not payapi exports; refusing to "
                "replace its files"
            )


def _write_tree(work: Path, files: Mapping[str, bytes]) -> None:
    for entry in work.iterdir():
        if entry.name == ".git":
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    for path, data in files.items():
        dest = work / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)


# --------------------------------------------------------------------------- run


@dataclass
class ConfigBackupResult:
    """One export: the backup (new, or the existing one of an unchanged configuration),
    the new commit (None when nothing changed) and how each remote's push went."""

    backup: BackupInfo
    stored: bool
    commit: str | None
    head: str
    pushed: list[str] = field(default_factory=list)
    push_errors: dict[str, str] = field(default_factory=dict)
    files: int = 0
    secret_values_encrypted: int = 0
    secret_files_referenced: int = 0

    @property
    def changed(self) -> bool:
        return self.commit is not None

    @property
    def ok(self) -> bool:
        return not self.push_errors

    def to_json(self) -> dict[str, Any]:
        b = self.backup
        return {
            "backup_id": b.backup_id,
            "component": b.component,
            "type": b.type,
            "started_at": b.started_at.isoformat(),
            "finished_at": b.finished_at.isoformat(),
            "bytes": b.bytes,
            "stored_bytes": b.stored_bytes,
            "objects": b.objects,
            "stored": self.stored,
            "changed": self.changed,
            "commit": self.commit,
            "head": self.head,
            "pushed": list(self.pushed),
            "push_errors": dict(self.push_errors),
            "files": self.files,
            "secret_values_encrypted": self.secret_values_encrypted,
            "secret_files_referenced": self.secret_files_referenced,
        }


def default_sources(settings: Any, *, deploy_dir: Path | None = None) -> list[tuple[str, Path]]:
    """What a configuration export holds by default, from :class:`payapi.core.settings.Settings`:
    the DR plan, ``deploy/`` (if given and present), the config file and, beside it, the
    lab's ``payapi.local.toml`` and ``lab.json`` when they exist, plus
    ``config_backup.sources`` when the settings have that section."""
    from importlib import resources

    out: list[tuple[str, Path]] = []
    plan = getattr(settings, "plan_file", None)
    if plan is None:
        packaged = resources.files("payapi").joinpath("data", "dr-plan.yaml")
        plan = Path(str(packaged))
    out.append(("dr-plan.yaml", Path(plan)))
    section = getattr(settings, "config_backup", None)
    deploy = deploy_dir or (section.deploy_dir if section is not None else None)
    if deploy is not None and Path(deploy).is_dir():
        out.append(("deploy", Path(deploy)))
    config_path = getattr(settings, "config_path", None)
    if config_path is not None:
        config_path = Path(config_path)
        out.append((config_path.name, config_path))
        for sibling in ("payapi.local.toml", "lab.json"):
            p = config_path.parent / sibling
            if p.is_file() and p.name != config_path.name:
                out.append((sibling, p))
    if section is not None:
        out.extend((Path(p).name, Path(p)) for p in section.sources)
    return out


def run_config_backup(
    repo: Repository,
    settings: ConfigBackupSettings,
    *,
    sources: Sequence[Path | tuple[str, Path]],
    git_dir: Path,
    remotes: Mapping[str, str],
    kube_context: str | None = None,
    kube_source: KubeSource | None = None,
    progress: Progress | None = None,
) -> ConfigBackupResult:
    """Export the configuration, commit it if it changed, store it, push every remote.

    ``sources`` are files or folders (optionally ``(name, path)``); each lands under
    ``files/<name>``. ``kube_context`` exports the namespace ``settings.kube_namespace``
    through the official client; ``kube_source`` replaces that client (tests, or another
    way to reach the cluster). Holds the ``configuration`` component's repository lock.

    A failed push does not raise: ``result.push_errors`` names it (``result.ok`` is
    False) and the next run pushes again. Everything else raises
    :class:`ConfigBackupError` (or a repository error).
    """
    repo.require_config()
    if kube_source is None and kube_context:
        kube_source = OfficialKubeSource(kube_context, settings.kube_config_file)
    holder = f"configuration backup (pid {os.getpid()})"
    try:
        with Lock(repo.lock_store()).hold(lock_name(COMPONENT), holder, DEFAULT_LEASE):
            return _run(repo, settings, sources, Path(git_dir), remotes, kube_source, progress)
    except LockError as exc:
        raise ConfigBackupError(f"configuration backup: {exc}") from None


def _run(
    repo: Repository,
    settings: ConfigBackupSettings,
    sources: Sequence[Path | tuple[str, Path]],
    git_dir: Path,
    remotes: Mapping[str, str],
    kube: KubeSource | None,
    progress: Progress | None,
) -> ConfigBackupResult:
    box = SecretBox(repo.key)
    if kube is not None:
        _note(progress, f"exporting namespace {settings.kube_namespace} ({kube.description})")
    export = build_export(
        sources,
        box,
        kube=kube,
        namespace=settings.kube_namespace,
        secret_patterns=settings.secret_patterns,
    )
    tree = export.tree_sha256()
    _note(
        progress,
        f"export: {len(export.files)} files, {export.secret_values} secret values encrypted, "
        f"{len(export.referenced)} secret files referenced",
    )

    git = _Git(git_dir, settings.author_name, settings.author_email)
    _prepare_repo(git, settings.branch, remotes, progress)
    _write_tree(git_dir, export.files)
    git("add", "-A")
    commit: str | None = None
    if git("diff", "--cached", "--quiet", check=False).returncode != 0:
        changes = git("diff", "--cached", "--name-status").stdout.strip().splitlines()
        now = repo.now().astimezone(UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        message = f"config export {stamp}: {len(changes)} file(s) changed\n\n" + "\n".join(
            changes[:200]
        )
        if len(changes) > 200:
            message += f"\n... and {len(changes) - 200} more"
        date = now.isoformat()
        git(
            "commit",
            "-q",
            "--no-verify",
            "-m",
            message,
            env={"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date},
        )
        commit = git("rev-parse", "HEAD").stdout.strip()
        _note(progress, f"committed {commit[:12]} ({len(changes)} file(s) changed)")
    else:
        _note(progress, "configuration unchanged: no commit")
    head = git("rev-parse", "HEAD").stdout.strip()

    backup, stored = _store(repo, export, tree, head, settings, box.key_id, progress)

    pushed: list[str] = []
    errors: dict[str, str] = {}
    for name in sorted(remotes):
        res = git("push", "--porcelain", name, f"HEAD:refs/heads/{settings.branch}", check=False)
        if res.returncode == 0:
            pushed.append(name)
        else:
            errors[name] = _git_error(res.stderr)
            log.error("config_push_failed", remote=name, url=redact_url(remotes[name]))
    if pushed:
        _note(progress, f"pushed to {', '.join(pushed)}")
    return ConfigBackupResult(
        backup=backup,
        stored=stored,
        commit=commit,
        head=head,
        pushed=pushed,
        push_errors=errors,
        files=len(export.files),
        secret_values_encrypted=export.secret_values,
        secret_files_referenced=len(export.referenced),
    )


def _store(
    repo: Repository,
    export: Export,
    tree: str,
    head: str,
    settings: ConfigBackupSettings,
    key_id: str,
    progress: Progress | None,
) -> tuple[BackupInfo, bool]:
    """Store the export unless the newest backup already holds exactly this tree."""
    backups = repo.list_backups(COMPONENT)
    if backups and backups[-1].meta.get("tree_sha256") == tree:
        _note(progress, f"the repository already holds this export ({backups[-1].backup_id})")
        return backups[-1], False
    with (
        tempfile.SpooledTemporaryFile(max_size=8 << 20) as spool,
        repo.begin_backup(COMPONENT, TYPE, None) as writer,
    ):
        _tar(export.files, spool)  # type: ignore[arg-type]
        spool.seek(0)
        writer.add_object(OBJECT, spool)
        writer.set_meta(
            commit=head,
            branch=settings.branch,
            tree_sha256=tree,
            files=len(export.files),
            secret_values_encrypted=export.secret_values,
            secret_files_referenced=len(export.referenced),
            secrets_key_id=key_id,
            kubernetes=export.kube,
        )
        info = writer.commit()
    _note(progress, f"stored {info.backup_id}")
    return info, True


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
    commit = info.meta.get("commit")
    return ConfigRestoreResult(
        backup_id=info.backup_id,
        commit=commit if isinstance(commit, str) else None,
        dir=to,
        files=sorted(files),
        decrypted=decrypted,
    )


def _decrypt_tree(to: Path, files: Iterable[str], box: SecretBox, info: BackupInfo) -> int:
    expected = info.meta.get("secrets_key_id")
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
            if _is_secret_doc(doc):
                n += decrypt_secret_doc(doc, f"{rel}#{i}", box)
        if n:
            os.chmod(path, 0o600)
            data = _dump_yaml(docs[0]) if len(docs) == 1 else _dump_yaml_all(docs)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            total += n
    return total
