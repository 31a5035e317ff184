"""A plain (non-editable) wheel in a fresh venv runs the lab by absolute path, from
outside the checkout, with that venv not on PATH: every asset ships in the wheel and
whatever a server calls back into payapi uses absolute paths.

To stay offline and fast, the fresh venv borrows the *dependencies* from the test venv
through a path entry (not processed as a site dir, so the editable payapi there is not
activated); payapi itself comes only from the wheel, which the test asserts.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(argv, capture_output=True, text=True, timeout=300, **kw)  # type: ignore[call-overload]
    assert res.returncode == 0, f"{argv[:4]} failed: {res.stderr[-2000:]}"
    return res  # type: ignore[no-any-return]


def test_wheel_in_fresh_venv_runs_the_lab(tmp_path: Path, outside_tmp: Path) -> None:
    wheels = tmp_path / "wheels"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(ROOT),
        ]
    )
    wheel = next(wheels.glob("payapi-*.whl"))
    venv = tmp_path / "fresh"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    py = venv / "bin" / "python"
    fresh_site = Path(
        _run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
        ).stdout.strip()
    )
    (fresh_site / "borrowed-deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    _run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)]
    )

    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PAYAPI_", "VIRTUAL_ENV", "PYTHON"))
    }
    env["PATH"] = "/usr/bin:/bin:/usr/sbin:/sbin"
    payapi = str(venv / "bin" / "payapi")
    where = _run([str(py), "-c", "import payapi; print(payapi.__file__)"], env=env, cwd="/").stdout
    assert where.startswith(str(venv)), where

    lab_dir = outside_tmp / "somewhere else" / "lab"
    try:
        status = json.loads(
            _run([payapi, "lab", "up", "--dir", str(lab_dir), "--json"], env=env, cwd="/").stdout
        )
        assert all(v == "running" for v in status["components"].values())
        plan = json.loads(
            _run(
                [payapi, "--config", status["config"], "plan", "show", "--json"], env=env, cwd="/"
            ).stdout
        )
        assert plan
        created = json.loads(
            _run(
                [
                    payapi,
                    "--config",
                    status["config"],
                    "clients",
                    "create",
                    "wheel-check",
                    "--json",
                ],
                env=env,
                cwd="/",
            ).stdout
        )
        assert created["client_id"]
    finally:
        subprocess.run(
            [payapi, "lab", "down", "--dir", str(lab_dir)], env=env, cwd="/", timeout=120
        )
