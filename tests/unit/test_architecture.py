"""The layout of docs/architecture.md, enforced: the dependency direction (import-linter's
layers contract in pyproject.toml) and "a big module has one job"."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "payapi"
CONFIG = ROOT / "pyproject.toml"

_LINT = (
    "import sys; from importlinter.cli import lint_imports; "
    "sys.exit(lint_imports(config_filename=sys.argv[1], no_cache=True, no_logo=True))"
)


def _lint(pythonpath: Path | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [sys.executable, "-c", _LINT, str(CONFIG)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
        check=False,
    )


def test_every_package_imports_only_the_layers_below_it() -> None:
    res = _lint()
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_contract_catches_the_backup_engine_importing_the_lab(tmp_path: Path) -> None:
    # The same check on a copy of the package with one forbidden import added: it must fail.
    copy = tmp_path / "payapi"
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__"))
    init = copy / "backup" / "__init__.py"
    init.write_text(init.read_text() + "\nfrom payapi.lab import platform  # noqa: F401\n")
    res = _lint(pythonpath=tmp_path, cwd=tmp_path)
    assert res.returncode != 0, res.stdout
    assert "payapi.backup is not allowed to import payapi.lab" in res.stdout


MAX_LINES = 750  # "about 700": a module past it is split, or says its one job


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_a_long_module_says_its_one_job(path: Path) -> None:
    text = path.read_text()
    if text.count("\n") <= MAX_LINES:
        return
    doc = ast.get_docstring(ast.parse(text)) or ""
    assert "One job:" in doc, f"{path.name}: over {MAX_LINES} lines; split it or say its one job"
