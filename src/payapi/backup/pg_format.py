"""PostgreSQL's own formats, read without a server: LSNs and WAL segment names,
``backup_label``, ``backup_manifest``, and a tar watcher that keeps those two members as a
``pg_basebackup`` stream goes by. Pure (no I/O beyond the bytes handed in)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from payapi.core.errors import PayapiError


class PgBackupError(PayapiError):
    """A PostgreSQL backup or restore step failed; the message is one line."""


def parse_lsn(text: str) -> int:
    """``"0/2000028"`` → 33554472. Raises ValueError on anything else."""
    m = re.fullmatch(r"\s*([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})\s*", text)
    if not m:
        raise ValueError(f"not an LSN: {text!r} (expected e.g. 0/3000060)")
    return (int(m.group(1), 16) << 32) | int(m.group(2), 16)


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:08X}"


def _segs_per_xlogid(seg_size: int) -> int:
    return 0x100000000 // seg_size


def segment_name(timeline: int, segno: int, seg_size: int) -> str:
    """The file name of WAL segment ``segno`` on ``timeline`` (24 hex digits)."""
    per = _segs_per_xlogid(seg_size)
    return f"{timeline:08X}{segno // per:08X}{segno % per:08X}"


def lsn_segment(lsn: int, timeline: int, seg_size: int) -> str:
    """The segment that holds the byte at ``lsn``."""
    return segment_name(timeline, lsn // seg_size, seg_size)


def parse_segment(name: str, seg_size: int) -> tuple[int, int] | None:
    """``(timeline, segno)`` of a plain segment file name; None for other WAL files
    (``.history``, ``.backup``, ``.partial``)."""
    if not re.fullmatch(r"[0-9A-F]{24}", name):
        return None
    tli, hi, lo = int(name[:8], 16), int(name[8:16], 16), int(name[16:], 16)
    return tli, hi * _segs_per_xlogid(seg_size) + lo


def history_name(timeline: int) -> str:
    return f"{timeline:08X}.history"


@dataclass(frozen=True)
class BackupLabel:
    """What ``backup_label`` says (the server writes it; we only read it)."""

    start_lsn: int
    checkpoint_lsn: int
    timeline: int
    start_time: str
    label: str
    incremental_from_lsn: int | None = None


def parse_backup_label(text: str) -> BackupLabel:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            fields[key.strip()] = value.strip()
    try:
        start = parse_lsn(fields["START WAL LOCATION"].split()[0])
        checkpoint = parse_lsn(fields["CHECKPOINT LOCATION"])
        timeline = int(fields["START TIMELINE"])
    except (KeyError, ValueError, IndexError):
        raise PgBackupError("backup_label is incomplete or unreadable") from None
    incr = fields.get("INCREMENTAL FROM LSN")
    return BackupLabel(
        start_lsn=start,
        checkpoint_lsn=checkpoint,
        timeline=timeline,
        start_time=fields.get("START TIME", ""),
        label=fields.get("LABEL", ""),
        incremental_from_lsn=parse_lsn(incr) if incr else None,
    )


@dataclass(frozen=True)
class ManifestSummary:
    """The parts of a ``backup_manifest`` the repository records. ``system_identifier`` is
    empty for a version 1 manifest (PostgreSQL 13-16 do not write one)."""

    system_identifier: str
    timeline: int
    start_lsn: int
    end_lsn: int
    files: int


def parse_manifest(data: bytes) -> ManifestSummary:
    try:
        doc = json.loads(data)
        ranges = doc["WAL-Ranges"]
        # Ranges are listed newest timeline first; the backup ends on the first one.
        end = ranges[0]
        start = ranges[-1]
        return ManifestSummary(
            system_identifier=str(doc.get("System-Identifier", "")),
            timeline=int(end["Timeline"]),
            start_lsn=parse_lsn(start["Start-LSN"]),
            end_lsn=parse_lsn(end["End-LSN"]),
            files=len(doc.get("Files", [])),
        )
    except (ValueError, KeyError, IndexError, TypeError):
        raise PgBackupError("backup_manifest is incomplete or unreadable") from None


def wal_range(summary: ManifestSummary, start_timeline: int, seg_size: int) -> tuple[str, str]:
    """First and last WAL segment a backup needs to become consistent."""
    first = lsn_segment(summary.start_lsn, start_timeline, seg_size)
    last = lsn_segment(max(summary.end_lsn - 1, summary.start_lsn), summary.timeline, seg_size)
    return first, last


class TarTap:
    """Watch a tar stream go by and keep copies of a few small members.

    ``feed`` takes the stream in pieces of any size; memory is what the kept members
    need, never the stream. Understands ustar, GNU long names and pax path records
    (PostgreSQL writes plain ustar; the rest costs nothing).
    """

    def __init__(self, wanted: Sequence[str], limit: int = 256 << 20) -> None:
        self.wanted = {w.lstrip("./") for w in wanted}
        self.limit = limit
        self.captured: dict[str, bytes] = {}
        self.members = 0
        self.ended = False
        self._header = bytearray()
        self._remaining = 0  # bytes of member data (plus padding) still to pass
        self._data_left = 0  # of which data (not padding)
        self._keep: bytearray | None = None
        self._keep_name = ""
        self._meta_kind = ""  # "L" (GNU long name) or "x" (pax) being collected
        self._next_name: str | None = None

    def feed(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view and not self.ended:
            if self._remaining:
                take = min(self._remaining, len(view))
                data_take = min(self._data_left, take)
                if data_take and self._keep is not None:
                    self._keep += view[:data_take]
                self._data_left -= data_take
                self._remaining -= take
                view = view[take:]
                if not self._remaining:
                    self._member_done()
                continue
            need = 512 - len(self._header)
            self._header += view[:need]
            view = view[need:]
            if len(self._header) == 512:
                self._start_member(bytes(self._header))
                self._header.clear()

    @staticmethod
    def _size(field: bytes) -> int:
        if field[0] & 0x80:  # base-256 (GNU) for members over 8 GiB
            return int.from_bytes(field[1:], "big")
        text = field.rstrip(b"\0 ").lstrip(b" ")
        return int(text, 8) if text else 0

    def _start_member(self, header: bytes) -> None:
        if header == b"\0" * 512:
            self.ended = True
            return
        name = header[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
        if header[257:262] == b"ustar":
            prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "replace")
            if prefix:
                name = f"{prefix}/{name}"
        typeflag = chr(header[156]) if header[156] else "0"
        try:
            size = self._size(header[124:136])
        except ValueError:
            raise PgBackupError("the backup stream is not a tar archive") from None
        self._data_left = size
        self._remaining = size + (-size % 512)
        self._keep = None
        self._meta_kind = ""
        if typeflag in ("L", "x"):
            self._meta_kind = typeflag
            self._keep = bytearray()
        else:
            if self._next_name is not None:
                name, self._next_name = self._next_name, None
            self.members += 1
            clean = name.lstrip("./") if name.startswith("./") else name
            if clean in self.wanted and typeflag in ("0", "\0") and size <= self.limit:
                self._keep = bytearray()
                self._keep_name = clean
        if not self._remaining:
            self._member_done()

    def _member_done(self) -> None:
        keep, self._keep = self._keep, None
        if keep is None:
            return
        if self._meta_kind == "L":
            self._next_name = bytes(keep).split(b"\0", 1)[0].decode("utf-8", "replace")
        elif self._meta_kind == "x":
            for record in bytes(keep).decode("utf-8", "replace").split("\n"):
                _length, _sp, kv = record.partition(" ")
                key, eq, value = kv.partition("=")
                if eq and key == "path":
                    self._next_name = value
        else:
            self.captured[self._keep_name] = bytes(keep)
        self._meta_kind = ""
