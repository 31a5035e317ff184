"""Process helpers of the lab: reachability for the unprivileged user, spawn/terminate."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from payapi.servers.procs import is_root, make_reachable, pid_alive, spawn, terminate


@pytest.mark.skipif(not is_root(), reason="only root needs to open a path to the lab user")
def test_make_reachable_adds_only_search_bits(tmp_path: Path) -> None:
    private = tmp_path / "private"
    target = private / "deeper" / "lab"
    target.mkdir(parents=True)
    private.chmod(0o700)
    notes: list[str] = []
    make_reachable(target, notes.append)
    mode = private.stat().st_mode
    assert mode & stat.S_IXOTH and not mode & stat.S_IROTH
    assert any(str(private) in n for n in notes)
    notes.clear()
    make_reachable(target, notes.append)  # idempotent
    assert notes == []


def test_spawn_and_terminate_the_whole_group(tmp_path: Path) -> None:
    # A parent that starts a child: terminating the group must reach both.
    child_pidfile = tmp_path / "child.pid"
    script = (
        "import subprocess,sys,time,pathlib;"
        "c=subprocess.Popen([sys.executable,'-c','import time; time.sleep(60)']);"
        f"pathlib.Path({str(child_pidfile)!r}).write_text(str(c.pid));"
        "time.sleep(60)"
    )
    pid = spawn([sys.executable, "-c", script], log=tmp_path / "x.log", pidfile=tmp_path / "x.pid")
    for _ in range(100):
        if child_pidfile.exists() and child_pidfile.read_text():
            break
        time.sleep(0.05)
    child = int(child_pidfile.read_text())
    assert pid_alive(pid) and pid_alive(child)
    terminate(pid, timeout=5)
    assert not pid_alive(pid)
    for _ in range(100):
        if not pid_alive(child):
            break
        time.sleep(0.05)
    assert not pid_alive(child)
    assert (tmp_path / "x.pid").read_text().strip() == str(pid)


_CREATE_USER = """
import sys
from payapi.servers import procs
procs.LAB_USER = sys.argv[1]
print(procs.ensure_lab_user().pw_uid)
"""


@pytest.mark.skipif(
    not is_root() or shutil.which("useradd") is None, reason="creates a system user"
)
def test_processes_creating_the_lab_user_at_once_all_get_it() -> None:
    # Before the lock, one of two processes failed about every third try ("useradd ...
    # exit status 9"), or chowned to an owner initdb could not use.
    name = "payapi-t" + uuid.uuid4().hex[:8]
    try:
        for _ in range(3):
            procs = [
                subprocess.Popen(
                    [sys.executable, "-c", _CREATE_USER, name],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for _ in range(4)
            ]
            results = [p.communicate(timeout=60) for p in procs]
            assert [p.returncode for p in procs] == [0] * 4, [err for _, err in results]
            assert len({out.strip() for out, _ in results}) == 1
            subprocess.run(["userdel", name], check=True, capture_output=True)
    finally:
        subprocess.run(["userdel", name], capture_output=True)
        subprocess.run(["groupdel", name], capture_output=True)
