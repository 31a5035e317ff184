"""Process helpers of the lab: reachability for the unprivileged user, spawn/terminate."""

from __future__ import annotations

import stat
import sys
import time
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
