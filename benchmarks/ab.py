"""A/B of two code versions of EAPI and SAPI on one lab, in alternating rounds.

A benchmark, not a test: it prints figures and the B ÷ A ratios, asserts nothing about
speed, and fails only on errors (non-2xx answers, socket errors).

- Variant **A** is a git revision (``--a``, default ``main``), checked out into a
  temporary ``git worktree``; variant **B** is this working tree. Both run on the same
  venv: the service processes get the variant's ``src`` first on ``PYTHONPATH``
  (``Lab.start(..., env=...)``), so only payapi's own code differs.
- ONE lab (``benchmarks/api.py``'s configuration: rate limits on, set high enough never to
  throttle the client; or ``--no-rate-limits``), one client, one payment to GET.
- ``--rounds`` rounds (default 5); in each, for each variant (which goes first alternates
  per round): SAPI and EAPI restarted on that variant's code, a ``--warmup`` run that is
  not measured, then wrk (``benchmarks/payments.lua``) for ``--duration`` seconds with
  ``--connections`` clients, sampling /proc for the CPU of eapi, sapi, postgres, redis.
- It prints, per variant, the medians over rounds (min..max) of req/s, p50, p99 and CPU
  ms per request, and the B ÷ A ratios (req/s and p99: medians of the per-round ratios;
  CPU: ratio of the medians). ``--json``: one object on stdout.

    flock /tmp/payapi-heavy.lock .venv/bin/python benchmarks/ab.py            # main vs tree
    .venv/bin/python benchmarks/ab.py --a HEAD~1 --workload post_bearer --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import api  # benchmarks/api.py: the lab set-up, wrk, CPU sampling

from payapi.lab.platform import Lab

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VARIANTS = ("A", "B")
CPU_KEYS = ("eapi", "sapi", "postgres", "redis")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", default="main", help="git revision of variant A (default: main)")
    ap.add_argument(
        "--workload", choices=sorted(api.WORKLOADS), default="post_headers", help="what to drive"
    )
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds (at least 3)")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per measured run")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per run")
    ap.add_argument("--connections", type=int, default=32, help="concurrent clients")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads")
    ap.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    ap.add_argument("--wrk", default=shutil.which("wrk") or "/usr/bin/wrk")
    ap.add_argument("--verbose", action="store_true", help="show wrk's output")
    ap.add_argument(
        "--no-rate-limits",
        dest="rate_limits",
        action="store_false",
        help="EAPI's rate limits off (default: on, set high enough not to throttle)",
    )
    args = ap.parse_args(argv)
    if not 3 <= args.rounds <= 20:
        ap.error("--rounds must be between 3 and 20")
    if not 1 <= args.duration <= 600:
        ap.error("--duration must be between 1 and 600 seconds")
    if not 0 < args.warmup <= 60:
        ap.error("--warmup must be between 0 and 60 seconds")
    if args.connections < 1 or args.threads < 1 or args.threads > args.connections:
        ap.error("need 1 <= --threads <= --connections")
    return args


def order(rnd: int) -> tuple[str, str]:
    """Which variant goes first in round ``rnd`` (1-based): A in odd rounds, B in even."""
    return ("A", "B") if rnd % 2 else ("B", "A")


def _median_range(values: list[float]) -> dict[str, Any]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians (min..max) per variant, and B ÷ A.

    ``runs``: one dict per measured run with ``round``, ``variant``, ``rps``, ``p50_ms``,
    ``p99_ms``, ``cpu_ms_per_request`` ({process: ms}), ``other_cores``, ``non_2xx``,
    ``socket_errors``. req/s and p99 ratios are medians of the per-round ratios (runs made
    seconds apart); the CPU ratios are ratios of the medians.
    """
    out: dict[str, Any] = {"variants": {}, "ratio_b_a": {}}
    by: dict[str, dict[int, dict[str, Any]]] = {v: {} for v in VARIANTS}
    for r in runs:
        by[r["variant"]][r["round"]] = r
    for v in VARIANTS:
        rs = list(by[v].values())
        if not rs:
            continue
        entry: dict[str, Any] = {
            "runs": len(rs),
            "rps": _median_range([r["rps"] for r in rs]),
            "p50_ms": _median_range([r["p50_ms"] for r in rs]),
            "p99_ms": _median_range([r["p99_ms"] for r in rs]),
            "cpu_ms_per_request": {
                k: _median_range([r["cpu_ms_per_request"].get(k, 0.0) for r in rs])
                for k in CPU_KEYS
            },
            "other_cores": _median_range([r.get("other_cores", 0.0) for r in rs]),
        }
        out["variants"][v] = entry
    both = sorted(set(by["A"]) & set(by["B"]))
    if both:
        ratios = out["ratio_b_a"]
        rps = [by["B"][n]["rps"] / by["A"][n]["rps"] for n in both if by["A"][n]["rps"]]
        p99 = [by["B"][n]["p99_ms"] / by["A"][n]["p99_ms"] for n in both if by["A"][n]["p99_ms"]]
        if rps:
            ratios["rps"] = _median_range(rps)
        if p99:
            ratios["p99_ms"] = _median_range(p99)
        cpu_a = out["variants"]["A"]["cpu_ms_per_request"]
        cpu_b = out["variants"]["B"]["cpu_ms_per_request"]
        ratios["cpu_ms_per_request"] = {
            k: round(cpu_b[k]["median"] / cpu_a[k]["median"], 3)
            for k in CPU_KEYS
            if cpu_a[k]["median"] > 0
        }
    out["errors"] = any(r["non_2xx"] or r["socket_errors"] for r in runs)
    return out


def format_summary(summary: dict[str, Any]) -> str:
    def mr(d: dict[str, Any], fmt: str) -> str:
        return f"{fmt.format(d['median'])} ({fmt.format(d['min'])}..{fmt.format(d['max'])})"

    lines = [
        f"A/B, {summary['workload']}, rate limits {'on' if summary['rate_limits'] else 'off'}, "
        f"{summary['rounds']} rounds x {summary['duration_seconds']:g} s, "
        f"{summary['connections']} connections; A = {summary['a']}, B = working tree",
        "",
    ]
    for v in VARIANTS:
        e = summary["variants"].get(v)
        if not e:
            continue
        cpu = ", ".join(f"{k} {mr(e['cpu_ms_per_request'][k], '{:.3f}')}" for k in CPU_KEYS)
        lines.append(
            f"{v}: {mr(e['rps'], '{:,.0f}')} req/s  p50 {mr(e['p50_ms'], '{:.1f}')} ms  "
            f"p99 {mr(e['p99_ms'], '{:.1f}')} ms  other {e['other_cores']['median']:.2f} cores"
        )
        lines.append(f"   CPU ms/request: {cpu}")
    ratios = summary["ratio_b_a"]
    if ratios:
        lines.append("")
        parts = []
        if "rps" in ratios:
            parts.append(f"req/s {mr(ratios['rps'], '{:.3f}')}")
        if "p99_ms" in ratios:
            parts.append(f"p99 {mr(ratios['p99_ms'], '{:.3f}')}")
        cpu = ", ".join(f"{k} {v:.3f}" for k, v in ratios["cpu_ms_per_request"].items())
        lines.append("B / A: " + "; ".join(parts) + f"; CPU ms/request: {cpu}")
    lines.append("")
    lines.append("every run (round, variant, req/s, p99 ms, errors, other cores):")
    for r in summary["per_run"]:
        lines.append(
            f"  {r['round']:2d} {r['variant']} {r['rps']:8,.0f} {r['p99_ms']:7.1f} "
            f"{r['non_2xx'] + r['socket_errors']:6d} {r['other_cores']:.2f}"
        )
    if summary["errors"]:
        lines.append("THIS RUN HAD ERRORS (non-2xx answers or socket errors)")
    return "\n".join(lines)


# -- the variants' code ------------------------------------------------------------------


def _git(*argv: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), *argv], check=True, capture_output=True, text=True
    ).stdout.strip()


def checkout_a(rev: str, into: Path) -> str:
    """Variant A's code in a detached temporary worktree; returns its commit."""
    commit = _git("rev-parse", "--verify", f"{rev}^{{commit}}")
    _git("worktree", "add", "--detach", str(into), commit)
    return commit


def remove_worktree(path: Path) -> None:
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)],
        capture_output=True,
        check=False,
    )
    shutil.rmtree(path, ignore_errors=True)
    subprocess.run(["git", "-C", str(REPO), "worktree", "prune"], capture_output=True, check=False)


def restart(lab: Lab, src: Path) -> None:
    """SAPI and EAPI on the code in ``src`` (first on PYTHONPATH)."""
    lab.stop("eapi")
    lab.stop("sapi")
    env = {"PYTHONPATH": str(src)}
    lab.start("sapi", env=env)
    lab.start("eapi", env=env)


def _fresh_token(eapi: str, creds: dict[str, str]) -> str:
    r = httpx.post(
        eapi + "/api/v1/authenticate",
        headers={"X-Client-ID": creds["client_id"], "X-Client-Secret": creds["client_secret"]},
        timeout=10,
        trust_env=False,
    )
    r.raise_for_status()
    return str(r.json()["access_token"])


def run(args: argparse.Namespace) -> dict[str, Any]:
    # Two folders: the lab's own (as benchmarks/api.py makes it), and variant A's worktree.
    tmp = Path(tempfile.mkdtemp(prefix="payapi-ab-a-"))
    a_tree = tmp / "variant-a"
    lab_dir = Path(tempfile.mkdtemp(prefix="payapi-ab-lab-"))
    lab = Lab(lab_dir)
    try:
        a_commit = checkout_a(args.a, a_tree)
        sources = {"A": a_tree / "src", "B": REPO / "src"}
        api._prepare_local_config(lab, args.rate_limits)
        api.console.print("[dim]starting the lab[/dim]")
        status = lab.up()
        creds = asyncio.run(api._provision(lab.config_path, status["eapi"]))
        label, mode, path, _naive = api.WORKLOADS[args.workload]
        url = status["eapi"] + (path or f"/api/v1/payments/{creds['payment_id']}")
        runs: list[dict[str, Any]] = []
        for rnd in range(1, args.rounds + 1):
            for variant in order(rnd):
                restart(lab, sources[variant])
                bench = api.Bench(args, lab, status, api._roots(lab))
                env = {
                    "BENCH_MODE": mode,
                    "BENCH_CLIENT_ID": creds["client_id"],
                    "BENCH_CLIENT_SECRET": creds["client_secret"],
                    "BENCH_TOKEN": _fresh_token(status["eapi"], creds) if "bearer" in mode else "",
                    "BENCH_REF_PREFIX": f"AW{rnd}{variant}{os.getpid()}",
                }
                bench.wrk("warm-up", url, env, duration=args.warmup, record=False)
                env["BENCH_REF_PREFIX"] = f"AB{rnd}{variant}{os.getpid()}"
                r = bench.wrk(f"{variant}: {label}", url, env, duration=args.duration)
                runs.append(
                    {
                        "round": rnd,
                        "variant": variant,
                        "rps": r.rps,
                        "p50_ms": r.p50_ms,
                        "p99_ms": r.p99_ms if r.p99_ms is not None else float("nan"),
                        "cpu_ms_per_request": r.cpu_ms_per_request,
                        "other_cores": r.cpu.get("other", 0.0),
                        "non_2xx": r.non_2xx,
                        "socket_errors": r.socket_errors,
                    }
                )
                api.console.print(
                    f"[dim]round {rnd} {variant} {r.rps:8,.0f} req/s  p99 "
                    f"{r.p99_ms or float('nan'):6.1f} ms  eapi "
                    f"{r.cpu_ms_per_request.get('eapi', 0):.3f} ms/req  errors "
                    f"{r.non_2xx + r.socket_errors}[/dim]"
                )
        summary = summarize(runs)
        summary.update(
            {
                "a": f"{args.a} ({a_commit[:10]})",
                "workload": args.workload,
                "rate_limits": bool(args.rate_limits),
                "rounds": args.rounds,
                "duration_seconds": args.duration,
                "connections": args.connections,
                "per_run": runs,
            }
        )
        return summary
    finally:
        lab.down()
        remove_worktree(a_tree)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(lab_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not Path(args.wrk).exists():
        api.console.print("[red]wrk not found[/red]: `apt-get install -y wrk`")
        return 2
    summary = run(args)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_summary(summary))
    return 1 if summary["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
