"""The lab survives repeated up/down, and `lab down` leaves no process behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

from payapi.servers.procs import port_open
from tests.scenarios.conftest import run_cli


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().split(") ", 1)[1][0]
        except (OSError, IndexError):
            continue
        if text in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids


def test_up_down_twice_leaves_nothing(outside_tmp: Path) -> None:
    lab_dir = outside_tmp / "cycle"
    lab_dir.mkdir()
    (lab_dir / "unrelated.txt").write_text("kept")
    try:
        first = None
        for _ in range(2):
            res = run_cli("lab", "up", "--dir", str(lab_dir), "--json")
            status = json.loads(res.stdout)
            first = first or status
            assert status["eapi"] == first["eapi"]  # ports are stable across restarts
            assert all(v == "running" for v in status["components"].values())
            run_cli("lab", "stop", "sapi", "--dir", str(lab_dir))
            run_cli("lab", "start", "sapi", "--dir", str(lab_dir))
            run_cli("lab", "down", "--dir", str(lab_dir))
            assert _processes_mentioning(str(lab_dir)) == []
            # redis-server rewrites its process title, so check the ports as well.
            ports = json.loads((lab_dir / "lab.json").read_text())["ports"]
            assert [c for c, p in ports.items() if port_open(p)] == []
            status = json.loads(run_cli("lab", "status", "--dir", str(lab_dir), "--json").stdout)
            assert all(v == "stopped" for v in status["components"].values())
    finally:  # a failed assertion must not leave servers running
        run_cli("lab", "down", "--dir", str(lab_dir), check=False)
    assert (lab_dir / "unrelated.txt").read_text() == "kept"
