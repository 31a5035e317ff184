"""The restore's tar extractor: what tarfile writes comes out the same, whatever the
chunking; what a restore must not write is refused."""

from __future__ import annotations

import io
import os
import random
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from payapi.backup.untar import UntarError, _number, extract


def _archive(fmt: int, *, extra: list[tarfile.TarInfo] | None = None) -> bytes:
    rnd = random.Random(fmt)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:

        def add_dir(name: str, mode: int = 0o700) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, 1_700_000_000
            tar.addfile(info)

        def add_file(name: str, data: bytes, mode: int = 0o600) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 1_700_000_123
            tar.addfile(info, io.BytesIO(data))

        add_dir(".")
        add_dir("base")
        add_dir("base/1")
        for n in (0, 1, 511, 512, 513, 8192, 100_000):
            add_file(f"base/1/{n}", rnd.randbytes(n))
        add_file("PG_VERSION", b"15\n", 0o640)
        add_dir("pg_wal", 0o750)
        add_file("pg_wal/000000010000000000000002", rnd.randbytes(64 * 1024))
        long_dir = "pg_logical/" + "d" * 120
        add_dir("pg_logical")
        add_dir(long_dir)
        add_file(f"{long_dir}/{'f' * 150}", b"long name")
        add_file("undeclared/parent/file", b"x")
        link = tarfile.TarInfo("pg_tblspc_link")
        link.type, link.linkname = tarfile.SYMTYPE, "/somewhere/else"
        tar.addfile(link)
        add_file("backup_label", b"START WAL LOCATION: 0/2000028\n")
        for info in extra or []:
            tar.addfile(info, io.BytesIO(b"z" * info.size) if info.size else None)
    return buf.getvalue() + b"\0" * 4096  # trailing zero blocks, as pg_basebackup pads


def _chunks(data: bytes, seed: int) -> Iterator[bytes]:
    rnd = random.Random(seed)
    pos = 0
    while pos < len(data):
        n = rnd.choice([1, 7, 511, 512, 513, 4096, 65536, 1 << 20])
        yield data[pos : pos + n]
        pos += n


def _tree(root: Path) -> dict[str, tuple[str, int, bytes | str]]:
    out: dict[str, tuple[str, int, bytes | str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            rel = str(p.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", 0, os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), b"")
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), p.read_bytes())
    return out


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
@pytest.mark.parametrize("seed", range(3))
def test_same_tree_as_tarfile_whatever_the_chunking(tmp_path: Path, fmt: int, seed: int) -> None:
    data = _archive(fmt)
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    closed: list[int] = []

    def on_file(fd: int) -> None:
        closed.append(fd)
        os.close(fd)

    files = extract(_chunks(data, seed), ours, on_file=on_file)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(theirs, filter="tar")
    assert _tree(ours) == _tree(theirs)
    assert files == len(closed) == 12
    assert (ours / "base" / "1" / "100000").stat().st_mtime == 1_700_000_123


def test_every_chunk_is_consumed_after_the_end(tmp_path: Path) -> None:
    data = _archive(tarfile.GNU_FORMAT)
    consumed = []

    def chunks() -> Iterator[bytes]:
        yield from _chunks(data, 1)
        consumed.append(True)  # the reader behind checks its final chunk only here

    extract(chunks(), tmp_path / "x")
    assert consumed == [True]


def _member(name: str, type_: bytes = tarfile.REGTYPE, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size = type_, size
    return info


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (_member("../escape", size=3), "not a relative path"),
        (_member("base/../../escape", size=3), "not a relative path"),
        (_member("pg_tblspc_link/evil", size=3), "under a symbolic link"),
        (_member("hard", tarfile.LNKTYPE), "type '1'"),
        (_member("fifo", tarfile.FIFOTYPE), "type '6'"),
    ],
)
def test_refuses_what_a_restore_must_not_write(
    tmp_path: Path, member: tarfile.TarInfo, message: str
) -> None:
    data = _archive(tarfile.GNU_FORMAT, extra=[member])
    with pytest.raises(UntarError, match=message):
        extract(_chunks(data, 0), tmp_path / "x")
    assert not (tmp_path / "escape").exists()
    assert not Path("/somewhere/else/evil").exists()


def test_absolute_names_are_refused(tmp_path: Path) -> None:
    info = _member("placeholder-name", size=1)
    raw = bytearray(info.tobuf(format=tarfile.GNU_FORMAT))
    raw[:100] = b"/etc/evil".ljust(100, b"\0")
    raw[148:156] = b" " * 8
    raw[148:156] = f"{sum(raw):06o}\0 ".encode()
    data = bytes(raw) + b"z".ljust(512, b"\0") + b"\0" * 1024
    with pytest.raises(UntarError, match="not a relative path"):
        extract([data], tmp_path / "x")


def test_damage_and_truncation_are_errors(tmp_path: Path) -> None:
    data = bytearray(_archive(tarfile.GNU_FORMAT))
    data[1] ^= 0xFF  # inside the first header
    with pytest.raises(UntarError, match="checksum"):
        extract([bytes(data)], tmp_path / "a")
    good = _archive(tarfile.GNU_FORMAT)
    cut = good.index(b"base/1/100000") + 512 + 50_000  # inside that file's data
    with pytest.raises(UntarError, match="ends inside a member"):
        extract([good[:cut]], tmp_path / "b")


def test_existing_entries_are_never_overwritten(tmp_path: Path) -> None:
    dest = tmp_path / "x"
    (dest / "base" / "1").mkdir(parents=True)
    (dest / "base" / "1" / "8192").write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        extract(_chunks(_archive(tarfile.GNU_FORMAT), 2), dest)
    assert (dest / "base" / "1" / "8192").read_bytes() == b"precious"


def test_numbers_octal_and_base_256() -> None:
    assert _number(b"00000001750\x00") == 0o1750
    assert _number(b"      1750 \x00") == 0o1750
    assert _number(b"\x80" + (9 << 30).to_bytes(11, "big")) == 9 << 30
    with pytest.raises(UntarError):
        _number(b"12x\x00")
