"""The pure parts of the A/B harness (benchmarks/ab.py): arguments, order, summary math;
and the lab hook it relies on (extra environment for a service process)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from payapi.servers import service as service_mod
from payapi.servers.service import ServiceProcess

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _ab() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_ab", BENCH / "ab.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_ab"] = mod
    spec.loader.exec_module(mod)
    return mod


ab = _ab()


def test_defaults() -> None:
    args = ab.parse_args([])
    assert (args.a, args.workload, args.rounds) == ("main", "post_headers", 5)
    assert (args.duration, args.warmup, args.connections) == (8.0, 2.0, 32)
    assert args.rate_limits is True and args.json is False


def test_choices_and_bounds() -> None:
    args = ab.parse_args(["--a", "HEAD~2", "--workload", "get_bearer", "--rounds", "3"])
    assert (args.a, args.workload, args.rounds) == ("HEAD~2", "get_bearer", 3)
    assert ab.parse_args(["--no-rate-limits"]).rate_limits is False
    for bad in (
        ["--rounds", "2"],
        ["--workload", "nope"],
        ["--duration", "0"],
        ["--threads", "4", "--connections", "2"],
    ):
        with pytest.raises(SystemExit):
            ab.parse_args(bad)


def test_order_alternates() -> None:
    assert [ab.order(n) for n in (1, 2, 3)] == [("A", "B"), ("B", "A"), ("A", "B")]


def _run(rnd: int, variant: str, rps: float, p99: float, eapi: float, **kw: Any) -> dict[str, Any]:
    return {
        "round": rnd,
        "variant": variant,
        "rps": rps,
        "p50_ms": p99 / 3,
        "p99_ms": p99,
        "cpu_ms_per_request": {"eapi": eapi, "sapi": 0.4},
        "other_cores": 0.1,
        "non_2xx": kw.get("non_2xx", 0),
        "socket_errors": 0,
    }


def test_summary_medians_and_ratios() -> None:
    runs = [
        _run(1, "A", 1000, 60, 0.6),
        _run(1, "B", 1200, 54, 0.5),
        _run(2, "B", 1100, 50, 0.4),
        _run(2, "A", 1000, 50, 0.5),
        _run(3, "A", 800, 80, 0.8),
        _run(3, "B", 1200, 60, 0.6),
    ]
    s = ab.summarize(runs)
    a, b = s["variants"]["A"], s["variants"]["B"]
    assert a["rps"] == {"median": 1000, "min": 800, "max": 1000}
    assert b["rps"] == {"median": 1200, "min": 1100, "max": 1200}
    assert a["cpu_ms_per_request"]["eapi"]["median"] == 0.6
    assert a["cpu_ms_per_request"]["redis"]["median"] == 0.0  # absent counts as 0
    # req/s: median of the per-round ratios 1.2, 1.1, 1.5 (not 1200 / 1000 by chance).
    assert s["ratio_b_a"]["rps"] == {"median": 1.2, "min": 1.1, "max": 1.5}
    assert s["ratio_b_a"]["p99_ms"]["median"] == 0.9  # 0.9, 1.0, 0.75
    # CPU: ratio of the medians (0.5 / 0.6); redis absent from A: no ratio.
    assert s["ratio_b_a"]["cpu_ms_per_request"] == {"eapi": 0.833, "sapi": 1.0}
    assert s["errors"] is False


def test_summary_flags_errors_and_formats() -> None:
    runs = [
        _run(1, "A", 1000, 60, 0.6),
        _run(1, "B", 900, 70, 0.7, non_2xx=3),
        _run(2, "B", 900, 70, 0.7),
        _run(2, "A", 1000, 60, 0.6),
        _run(3, "A", 1000, 60, 0.6),
        _run(3, "B", 900, 70, 0.7),
    ]
    s = ab.summarize(runs)
    assert s["errors"] is True
    s |= {
        "a": "main (abc)",
        "workload": "post_headers",
        "rate_limits": True,
        "rounds": 3,
        "duration_seconds": 8.0,
        "connections": 32,
        "per_run": runs,
    }
    text = ab.format_summary(s)
    assert "B / A: req/s 0.900" in text
    assert "THIS RUN HAD ERRORS" in text


def test_service_start_passes_extra_env_but_never_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    def fake_spawn(argv: list[str], **kw: Any) -> int:
        seen.update(kw)
        return 12345

    monkeypatch.setattr(service_mod, "spawn", fake_spawn)
    monkeypatch.setattr(service_mod, "port_open", lambda port: False)
    monkeypatch.setenv("PAYAPI_CONFIG", "/elsewhere.toml")
    proc = ServiceProcess(
        name="eapi",
        config=tmp_path / "payapi.toml",
        port=1,
        health_url="http://127.0.0.1:1/",
        pidfile=tmp_path / "eapi.pid",
        logfile=tmp_path / "eapi.log",
    )
    proc.start(wait=False, env={"PYTHONPATH": "/a/src", "PAYAPI_X": "no"})
    assert seen["env"]["PYTHONPATH"] == "/a/src"
    assert not any(k.startswith("PAYAPI_") for k in seen["env"])
