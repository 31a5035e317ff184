"""A whole lab (real processes) shared by the scenario tests of one session.

Tests that stop a component start it again before they finish (in ``finally``), so the
next test finds the lab whole.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from payapi.lab.platform import Lab
from payapi.lab.regions import TwoRegionLab


def run_cli(
    *args: str, config: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "payapi"]
    if config is not None:
        argv += ["--config", str(config)]
    res = subprocess.run(argv + list(args), capture_output=True, text=True, timeout=120)
    if check and res.returncode != 0:
        raise AssertionError(f"payapi {' '.join(args)} failed ({res.returncode}): {res.stderr}")
    return res


@dataclass
class Client:
    name: str
    client_id: str
    client_secret: str

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Client-ID": self.client_id, "X-Client-Secret": self.client_secret}


@dataclass
class LabHandle:
    lab: Lab
    status: dict[str, Any]

    @property
    def config(self) -> Path:
        return Path(self.status["config"])

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.status["eapi"], timeout=15, trust_env=False)

    def create_client(self, name: str) -> Client:
        res = run_cli("clients", "create", name, "--json", config=self.config)
        data = json.loads(res.stdout)
        return Client(name, data["client_id"], data["client_secret"])

    def ensure_running(self) -> None:
        for c in ("postgres", "redis", "vault", "sapi", "eapi"):
            self.lab.start(c)


@pytest.fixture
def outside_tmp() -> Iterator[Path]:
    """A temp folder for a lab, not under pytest's temp root: pytest re-tightens that
    root to 0700 whenever a pytest session starts, which would lock the unprivileged
    PostgreSQL user out of a lab that runs while another session starts."""
    root = Path(tempfile.mkdtemp(prefix="payapi-lab-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def lab() -> Iterator[LabHandle]:
    root = Path(tempfile.mkdtemp(prefix="payapi-lab-"))  # see outside_tmp
    lab = Lab(root / "lab")
    try:  # down() also when up() fails halfway: no server outlives the session
        yield LabHandle(lab, lab.up())
    finally:
        lab.down()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def two_region_lab() -> Iterator[TwoRegionLab]:
    """The two-region lab, once per session (start-up is the expensive part): the drill
    tests and the regional failover tests share it, each leaving the primary serving."""
    root = Path(tempfile.mkdtemp(prefix="payapi-2r-"))  # see outside_tmp
    lab = TwoRegionLab(root / "lab")
    try:
        started = time.monotonic()
        lab.up()
        print(f"two-region lab up in {time.monotonic() - started:.1f}s")
        yield lab
    finally:
        if os.environ.get("PAYAPI_KEEP_LAB"):  # a debugging aid: inspect the lab afterwards
            print(f"lab kept in {lab.dir}")
        else:
            # kill -9 first: a graceful stop of two Patroni clusters takes ~10 s, and the
            # lab's folder is removed right after (lab down is tested on its own).
            for name in ("primary", "dr"):
                lab.stop_region(name)
            lab.down()
            shutil.rmtree(root, ignore_errors=True)
