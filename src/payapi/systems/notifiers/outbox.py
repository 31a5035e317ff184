"""The file outbox: one file per message, written atomically (a temporary file in the
same folder, fsynced, then renamed), so a reader never sees half a message and a crash
leaves at most a stray ``.tmp-`` file. It needs no server: it works when everything else
is down, which is why it is the default channel."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

from payapi.systems.notifiers.base import Note, Notifier, NotifierError

__all__ = ["FileOutbox"]


class FileOutbox(Notifier):
    kind = "file"

    @property
    def folder(self) -> Path:
        return self.channel.dir if self.channel.dir is not None else self.default_dir

    def render(self, note: Note) -> bytes:
        lines = [f"To: {a.role} <{a.contact}>" for a in note.to]
        lines += [f"Subject: {note.subject}", f"Drill: {'yes' if note.drill else 'no'}", ""]
        return ("\n".join(lines) + "\n" + note.body.rstrip("\n") + "\n").encode()

    def send(self, note: Note, payload: bytes, credential: str | None) -> None:
        folder = self.folder
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        digest = hashlib.sha256(payload).hexdigest()[:12]
        final = folder / f"{stamp}-{self.channel.name}-{digest}.txt"
        tmp = folder / f".tmp-{secrets.token_hex(6)}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            try:
                os.write(fd, payload)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, final)
            dir_fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            # A folder that is a file (or gone) makes the unlink fail too: the channel
            # failed, and the fallback to the backup channels must still happen.
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise NotifierError(
                f"outbox {folder}: cannot write: {exc.strerror or type(exc).__name__}"
            ) from None
