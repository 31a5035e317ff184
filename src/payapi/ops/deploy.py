"""Clean deployment from verified artifacts (the seed's ``./scripts/deploy.sh --version V
--clean-deployment``, step 3 of its Security Breach Recovery).

A release is recorded once, when it is built and trusted: its version, the SHA-256 of its
wheel and, for Kubernetes, its image pinned by digest (``payapi release record``). A clean
deployment of version V then refuses anything that does not match the record:

- a wheel whose SHA-256 differs from the recorded one (compared in constant time);
- an installed payapi whose version is not V, or whose installed files differ from the
  hashes in its own ``RECORD`` (pip writes them at install; a file changed on disk since
  is what an intruder leaves behind);
- Kubernetes manifests are rendered with the recorded image digest, never a tag: a tag
  can be moved to another image, a digest cannot.

The restart itself (new processes from the verified install) is the caller's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from payapi.core.errors import PayapiError, UsageError

__all__ = [
    "DeployError",
    "Release",
    "installed_check",
    "load_releases",
    "record_release",
    "render_deployments",
    "verify_wheel",
    "wheel_sha256",
]

_WHEEL = re.compile(r"^(?P<name>[A-Za-z0-9_.]+)-(?P<version>[^-]+)-.+\.whl$")
_DIGEST = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")


class DeployError(PayapiError):
    """A deployment artifact does not match its release record (exit 1)."""


@dataclass(frozen=True)
class Release:
    version: str
    wheel: str
    sha256: str
    image: str | None  # REPO@sha256:DIGEST
    recorded_at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "wheel": self.wheel,
            "sha256": self.sha256,
            "image": self.image,
            "recorded_at": self.recorded_at,
        }


def wheel_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def load_releases(path: Path) -> dict[str, Release]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        return {v: Release(**r) for v, r in data["releases"].items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"release file {path} is not readable: {exc}") from None


def record_release(path: Path, wheel: Path, image: str | None = None) -> Release:
    """Record ``wheel`` (and its image, pinned by digest) as a trusted release; refuses to
    change the record of a version already recorded (a release is immutable)."""
    m = _WHEEL.match(wheel.name)
    if m is None:
        raise UsageError(f"{wheel.name} is not a wheel file name (NAME-VERSION-…whl)")
    if image is not None and not _DIGEST.match(image):
        raise UsageError(f"image {image!r} is not pinned by digest (REPO@sha256:<64 hex>)")
    if not wheel.is_file():
        raise UsageError(f"no wheel at {wheel}")
    releases = load_releases(path)
    release = Release(
        m["version"], wheel.name, wheel_sha256(wheel), image, datetime.now(UTC).isoformat()
    )
    old = releases.get(release.version)
    if old is not None and (old.sha256, old.image) != (release.sha256, release.image):
        raise UsageError(f"release {release.version} is recorded already, with other artifacts")
    releases[release.version] = release
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    body = {"releases": {v: r.to_json() for v, r in sorted(releases.items())}}
    tmp.write_text(json.dumps(body, indent=2) + "\n")
    tmp.replace(path)
    return release


def release_of(releases: dict[str, Release], version: str) -> Release:
    if version not in releases:
        known = ", ".join(sorted(releases)) or "none recorded"
        raise UsageError(f"version {version} is not a recorded release (recorded: {known})")
    return releases[version]


def verify_wheel(release: Release, wheel: Path) -> str:
    actual = wheel_sha256(wheel)
    if not hmac.compare_digest(actual, release.sha256):
        raise DeployError(f"{wheel.name}: SHA-256 differs from release {release.version}'s")
    return f"{wheel.name}: SHA-256 matches release {release.version}"


def _record_hash(raw: str) -> tuple[str, str] | None:
    algo, _, value = raw.partition("=")
    return (algo, value) if algo and value else None


def installed_check(version: str, dist: str = "payapi") -> str:
    """The installed ``dist`` is ``version`` and its files match their RECORD hashes."""
    d = metadata.distribution(dist)
    if d.version != version:
        raise DeployError(
            f"installed {dist} is {d.version}, not {version}: install the verified wheel first"
        )
    checked = 0
    changed: list[str] = []
    for f in d.files or ():
        if f.hash is None:
            continue
        path = Path(str(f.locate()))
        try:
            data = path.read_bytes()
        except OSError:
            changed.append(str(f))
            continue
        digest = hashlib.new(f.hash.mode, data).digest()
        encoded = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        checked += 1
        if not hmac.compare_digest(encoded, f.hash.value):
            changed.append(str(f))
    if changed:
        raise DeployError(
            f"{len(changed)} installed files differ from their RECORD hashes "
            f"(first: {changed[0]}): reinstall the verified wheel"
        )
    return f"{dist} {version}: {checked} installed files match their RECORD hashes"


_DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {namespace}
  labels: {{app: {name}, payapi-version: "{version}"}}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}, payapi-version: "{version}"}}
    spec:
      automountServiceAccountToken: false
      securityContext: {{runAsNonRoot: true}}
      containers:
        - name: {name}
          image: {image}
          imagePullPolicy: IfNotPresent
          args: ["serve", "{service}"]
          securityContext: {{readOnlyRootFilesystem: true, allowPrivilegeEscalation: false}}
"""


def render_deployments(release: Release, *, namespace: str, replicas: int) -> dict[str, str]:
    """The EAPI and SAPI Deployments of ``release``, the image pinned by its digest."""
    if release.image is None:
        raise UsageError(f"release {release.version} has no image recorded (--image REPO@sha256:…)")
    return {
        f"payment-{service}.yaml": _DEPLOYMENT.format(
            name=f"payment-{service}",
            namespace=namespace,
            version=release.version,
            replicas=replicas,
            image=release.image,
            service=service,
        )
        for service in ("eapi", "sapi")
    }
