"""The file outbox: one file per message, ``<journal_dir>/outbox/<incident>-<n>.txt``.

The channel of last resort, and the one used while no other channel exists: it needs no
network and no credential, so a declaration is never lost for want of a reachable
server. The file holds the subject and the body only (no addresses, no secrets).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from payapi.incident.render import Rendered
from payapi.incident.service import Addressee

__all__ = ["Delivery", "write_outbox"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """The same fields as ``notify.SendResult``."""

    channel: str
    kind: str
    role: str
    ok: bool
    sha256: str
    error: str | None
    fallback: bool


def write_outbox(
    directory: Path,
    incident_id: str,
    n: int,
    message: Rendered,
    to: Sequence[Addressee],
    *,
    fallback: bool = True,
) -> list[Delivery]:
    """Write the message once; one result per recipient role (``all`` when none)."""
    content = f"Subject: {message.subject}\n\n{message.text}"
    digest = hashlib.sha256(message.text.encode()).hexdigest()
    roles = [a.role for a in to] or ["all"]
    path = directory / f"{incident_id}-{n}.txt"
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        error = f"cannot write {path}: {exc.strerror or exc}"
        return [Delivery("file", "file", r, False, digest, error, fallback) for r in roles]
    return [Delivery("file", "file", r, True, digest, None, fallback) for r in roles]
