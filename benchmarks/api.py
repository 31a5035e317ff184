"""`make bench`: payments through EAPI → SAPI → PostgreSQL, against PostgreSQL alone.

A benchmark, not a test: it prints figures and a ratio against a peer measured in the same
run, on the same machine, against the same database; it asserts nothing about speed.

One run:

1. start a lab (``payapi.lab.platform.Lab``) with rate limits out of the way
   (``payapi.local.toml``: ``[eapi.rate_limit] enabled = false``, written before ``up``);
2. create a client (through the credentials service, as ``payapi clients create`` does);
3. **wrk** with ``benchmarks/payments.lua``: ``POST /api/v1/payments`` with the seed's
   ``X-Client-ID`` / ``X-Client-Secret`` headers, a unique reference per request,
   ``--connections`` concurrent clients for ``--duration`` seconds (after a short warm-up
   that fills the verification cache and the connection pools);
4. the same with a bearer token (authenticate once): ``POST`` and ``GET`` of one payment;
5. **pgbench** inserting the same row with the same statement SAPI uses into the same
   ``payments`` table of the same PostgreSQL (the ceiling);
6. print req/s, p50, p99, the ratio API ÷ pgbench, and the CPU each process used.

Everything listens on 127.0.0.1; every wait is bounded. The lab goes down at the end
unless ``--keep``. ``--profile DIR`` additionally records py-spy profiles of EAPI and SAPI
during an extra header-auth run (py-spy steals CPU, so that run's figures are not used).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from payapi.core.journal import note_sink
from payapi.core.money import format_amount, parse_amount
from payapi.core.settings import load_settings
from payapi.credentials.service import Platform, create_client
from payapi.lab.platform import Lab
from payapi.servers.postgres import pg_bin

HERE = Path(__file__).resolve().parent
LUA = HERE / "payments.lua"
RATE_LIMIT_OFF = "[eapi.rate_limit]\nenabled = false\n"
TARGET_RATIO = 0.5
TARGET_P99_MS = 25.0
PGBENCH_CLIENT = "bench-pgbench"
BUSY_OTHER_CORES = 0.25

console = Console(stderr=True)


# -- CPU accounting (from /proc: no dependency, and it sees every process) ---------------

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds used so far) of ``pid``, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            rest = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # Fields after the command: state(3) ppid(4) ... utime(14) stime(15).
    return int(rest[1]), (int(rest[11]) + int(rest[12])) / _CLK_TCK


def _all_stats() -> dict[int, tuple[int, float]]:
    out = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            s = _stat(int(entry.name))
            if s is not None:
                out[int(entry.name)] = s
    return out


def _machine_busy() -> float:
    """Busy CPU seconds of the whole machine since boot (all cores)."""
    with open("/proc/stat", encoding="ascii") as fh:
        parts = [int(x) for x in fh.readline().split()[1:]]
    idle = parts[3] + parts[4]  # idle + iowait
    return (sum(parts[:8]) - idle) / _CLK_TCK


class CpuSampler:
    """CPU used per named process tree while a load runs (sampled every 0.2 s).

    A process that starts during the run (a pgbench backend) counts from zero; one that
    dies counts up to its last sample, so the figures are within one sample of the truth.
    """

    def __init__(self, roots: dict[str, int]) -> None:
        self.roots = roots
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._group: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = 0.0
        self._busy0 = 0.0
        self.result: dict[str, float] = {}
        self.raw: dict[str, float] = {}

    def _sample(self, first: bool) -> None:
        stats = _all_stats()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in stats.items():
            children.setdefault(ppid, []).append(pid)
        for name, root in self.roots.items():
            todo = [root]
            while todo:
                pid = todo.pop()
                if pid not in stats:
                    continue
                cpu = stats[pid][1]
                if pid not in self._first:
                    self._first[pid] = cpu if first else 0.0
                    self._group[pid] = name
                self._last[pid] = cpu
                todo.extend(children.get(pid, []))

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self._sample(first=False)

    def __enter__(self) -> CpuSampler:
        self._t0 = time.monotonic()
        self._busy0 = _machine_busy()
        self._sample(first=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample(first=False)
        wall = max(time.monotonic() - self._t0, 1e-6)
        busy1 = _machine_busy()
        used: dict[str, float] = dict.fromkeys(self.roots, 0.0)
        for pid, last in self._last.items():
            used[self._group[pid]] += last - self._first[pid]
        # In cores (1.0 = one core fully busy), averaged over the run.
        self.raw = {k: v / wall for k, v in used.items()}
        self.raw["machine"] = (busy1 - self._busy0) / wall
        self.raw["other"] = self.raw["machine"] - sum(used.values()) / wall
        self.result = {k: round(v, 2) for k, v in self.raw.items()}
        self.result["cores"] = float(os.cpu_count() or 1)


# -- wrk -----------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass
class LoadResult:
    name: str
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float | None
    p99_ms: float | None
    non_2xx: int
    socket_errors: int
    cpu: dict[str, float] = field(default_factory=dict)
    cpu_ms_per_request: dict[str, float] = field(default_factory=dict)

    def account(self, sampler: CpuSampler) -> None:
        """Attach the CPU figures, also per request: other load on the machine changes
        them less than it changes req/s (though a busy machine still inflates them)."""
        self.cpu = sampler.result
        if self.rps > 0:
            self.cpu_ms_per_request = {
                k: round(1000 * v / self.rps, 3)
                for k, v in sampler.raw.items()
                if k not in ("machine", "other")
            }

    @property
    def clean(self) -> bool:
        return self.non_2xx == 0 and self.socket_errors == 0 and self.requests > 0


def parse_wrk(text: str) -> LoadResult:
    """wrk's ``--latency`` output (plus our Lua ``done`` line when present)."""
    rps_m = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    total_m = re.search(r"^\s*(\d+) requests in ([\d.]+\w+),", text, re.M)
    if not rps_m or not total_m:
        raise ValueError("wrk output without a summary:\n" + text[-2000:])
    pct = {
        m.group(1): _ms(m.group(2))
        for m in re.finditer(r"^\s+(50|75|90|99)(?:\.000)?%\s+(\S+)", text, re.M)
    }
    non2xx_m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sock_m = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    result = LoadResult(
        name="",
        requests=int(total_m.group(1)),
        seconds=_ms(total_m.group(2)) / 1000.0,
        rps=float(rps_m.group(1)),
        p50_ms=pct.get("50", float("nan")),
        p90_ms=pct.get("90"),
        p99_ms=pct.get("99"),
        non_2xx=int(non2xx_m.group(1)) if non2xx_m else 0,
        socket_errors=sum(int(x) for x in sock_m.groups()) if sock_m else 0,
    )
    exact = re.search(r"^BENCH_JSON (\{.*\})$", text, re.M)
    if exact:
        data = json.loads(exact.group(1))
        lat = data["latency_us"]
        err = data["errors"]
        result.p50_ms = lat["p50"] / 1000.0
        result.p90_ms = lat["p90"] / 1000.0
        result.p99_ms = lat["p99"] / 1000.0
        result.non_2xx = int(err["status"])
        result.socket_errors = sum(int(err[k]) for k in ("connect", "read", "write", "timeout"))
    return result


@dataclass
class Bench:
    args: argparse.Namespace
    lab: Lab
    status: dict[str, Any]
    roots: dict[str, int]

    def wrk(
        self, name: str, url: str, env: dict[str, str], *, duration: float, record: bool = True
    ) -> LoadResult:
        argv = [
            self.args.wrk,
            "--latency",
            "--timeout",
            "5s",
            "-t",
            str(self.args.threads),
            "-c",
            str(self.args.connections),
            "-d",
            f"{max(1, round(duration))}s",
            "-s",
            str(LUA),
            url,
        ]
        full_env = {**os.environ, **env}
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env
        )
        with CpuSampler({**self.roots, "wrk": proc.pid}) as cpu:
            try:
                out, err = proc.communicate(timeout=duration + 60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                raise RuntimeError(f"wrk ({name}) did not finish in time") from None
        if proc.returncode != 0:
            raise RuntimeError(f"wrk ({name}) failed ({proc.returncode}): {err.strip()}")
        result = parse_wrk(out)
        result.name = name
        result.account(cpu)
        if record and self.args.verbose:
            console.print(out)
        return result

    def pgbench(self, duration: float) -> LoadResult:
        """The same INSERT SAPI runs (``payapi.sapi.service._INSERT``), straight to PostgreSQL."""
        from payapi.sapi.service import _INSERT

        amount = parse_amount("100.00")
        canonical = json.dumps(
            {"amount": format_amount(amount), "currency": "USD", "reference": "PGB"},
            sort_keys=True,
            separators=(",", ":"),
        )
        fingerprint = hashlib.sha256(canonical.encode()).hexdigest()
        # SAPI's statement with its parameters inlined: $1 client id, $2 amount,
        # $3 currency, $4 reference (unique per transaction), $5 idempotency key (NULL:
        # the wrk run sends none), $6 request hash. -M prepared mirrors asyncpg, which
        # prepares every statement.
        sql = (
            _INSERT.replace("$1", f"'{PGBENCH_CLIENT}'")
            .replace("$2", "100.00")
            .replace("$3", "'USD'")
            .replace("$4", "'PGB-' || :client_id || '-' || :r")
            .replace("$5", "NULL")
            .replace("$6", f"'{fingerprint}'")
        )
        sql = " ".join(sql.split())
        script = f"\\set r random(1, 2000000000)\n{sql};\n"
        tmp = Path(tempfile.mkdtemp(prefix="payapi-pgbench-"))
        try:
            script_file = tmp / "insert_payment.sql"
            script_file.write_text(script)
            argv = [
                pg_bin("pgbench"),
                "-n",
                "-M",
                "prepared",
                "-c",
                str(self.args.connections),
                "-j",
                "2",
                "-T",
                str(max(1, round(duration))),
                "-f",
                str(script_file),
                "-l",
                "--log-prefix",
                str(tmp / "tx"),
                self.status["postgres"]["payment_dsn"],
            ]
            proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp
            )
            with CpuSampler({**self.roots, "pgbench": proc.pid}) as cpu:
                try:
                    out, err = proc.communicate(timeout=duration + 60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.communicate()
                    raise RuntimeError("pgbench did not finish in time") from None
            latencies = sorted(_pgbench_latencies_ms(tmp))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if proc.returncode != 0:
            raise RuntimeError(f"pgbench failed ({proc.returncode}): {err.strip()[-500:]}")
        if self.args.verbose:
            console.print(out)
        tps_m = re.search(r"^tps = ([\d.]+)", out, re.M)
        lat_m = re.search(r"^latency average = ([\d.]+) ms", out, re.M)
        n_m = re.search(r"^number of transactions actually processed: (\d+)", out, re.M)
        failed_m = re.search(r"^number of failed transactions: (\d+)", out, re.M)
        if not tps_m or not n_m:
            raise RuntimeError("pgbench output without tps:\n" + out[-2000:])
        tps = float(tps_m.group(1))
        result = LoadResult(
            name="pgbench INSERT (same row, same table)",
            requests=int(n_m.group(1)),
            seconds=duration,
            rps=tps,
            p50_ms=_pct(latencies, 50) if latencies else float(lat_m.group(1) if lat_m else "nan"),
            p90_ms=_pct(latencies, 90) if latencies else None,
            p99_ms=_pct(latencies, 99) if latencies else None,
            non_2xx=int(failed_m.group(1)) if failed_m else 0,
            socket_errors=0,
        )
        result.account(cpu)
        return result


def _pgbench_latencies_ms(folder: Path) -> list[float]:
    """Per-transaction latencies from pgbench -l logs (third column, microseconds)."""
    out: list[float] = []
    for log in folder.glob("tx*"):
        for line in log.read_text().splitlines():
            cols = line.split()
            if len(cols) >= 3 and cols[2].isdigit():
                out.append(int(cols[2]) / 1000.0)
    return out


def _pct(sorted_values: list[float], p: float) -> float:
    i = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[i]


# -- the lab -------------------------------------------------------------------------------


def _prepare_local_config(lab: Lab) -> bool:
    """Rate limits out of the way, in ``payapi.local.toml``, before ``up``. True if changed."""
    lab.dir.mkdir(parents=True, exist_ok=True)
    local = lab.dir / "payapi.local.toml"
    text = local.read_text() if local.exists() else ""
    if "[eapi.rate_limit]" in text:
        return False  # checked after up: it must say enabled = false
    with local.open("a") as fh:
        fh.write(("\n" if text and not text.endswith("\n") else "") + RATE_LIMIT_OFF)
    return True


def _roots(lab: Lab) -> dict[str, int]:
    roots: dict[str, int] = {}
    for service in ("eapi", "sapi", "vault"):
        pid = _read_int(lab.pidfile(service))
        if pid:
            roots[service] = pid
    pg = _read_int(lab.dir / "postgres" / "data" / "postmaster.pid")
    if pg:
        roots["postgres"] = pg
    rd = _read_int(lab.redis.pidfile)
    if rd:
        roots["redis"] = rd
    return roots


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


async def _provision(config: Path, eapi: str) -> dict[str, str]:
    settings = load_settings(config)
    p = Platform.from_settings(settings)
    try:
        c = await create_client(p, name=f"bench-{secrets.token_hex(3)}")
    finally:
        await p.aclose()
    creds = {"X-Client-ID": c.client_id, "X-Client-Secret": c.client_secret.get_secret_value()}
    async with httpx.AsyncClient(base_url=eapi, timeout=10, trust_env=False) as http:
        r = await http.post("/api/v1/authenticate", headers=creds)
        r.raise_for_status()
        token = r.json()["access_token"]
        r = await http.post(
            "/api/v1/payments",
            headers={"Authorization": f"Bearer {token}"},
            json={"amount": "1.00", "currency": "USD", "reference": "BENCH-GET-TARGET"},
        )
        r.raise_for_status()
        payment_id = r.json()["id"]
    return {
        "client_id": c.client_id,
        "client_secret": c.client_secret.get_secret_value(),
        "token": token,
        "payment_id": payment_id,
    }


def _profile(bench: Bench, env: dict[str, str], out_dir: Path, duration: float) -> list[str]:
    """Record py-spy profiles (collapsed stacks) of EAPI and SAPI during an extra run."""
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(pyspy).exists():
        return ["py-spy not found: `.venv/bin/pip install py-spy` (not a project dependency)"]
    out_dir.mkdir(parents=True, exist_ok=True)
    procs: list[tuple[Path, subprocess.Popen[bytes]]] = []
    for name in ("eapi", "sapi"):
        pid = bench.roots.get(name)
        if pid is None:
            continue
        target = out_dir / f"{name}.collapsed.txt"
        argv = [
            pyspy, "record", "--pid", str(pid), "--duration", str(max(1, round(duration))),
            "--rate", "200", "--subprocesses", "--format", "raw", "-o", str(target),
        ]  # fmt: skip
        procs.append((target, subprocess.Popen(argv, stdout=subprocess.DEVNULL)))
    time.sleep(0.5)  # let py-spy attach
    url = bench.status["eapi"] + "/api/v1/payments"
    bench.wrk("profiled run", url, env, duration=duration, record=False)
    notes = []
    for target, p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
        if target.exists():
            (target.with_suffix(".top.txt")).write_text(summarize_profile(target))
            notes += [str(target), str(target.with_suffix(".top.txt"))]
    return notes


def summarize_profile(path: Path, top: int = 40) -> str:
    """Inclusive and self share of samples per function, from py-spy's collapsed stacks."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        n = int(count_s)
        total += n
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        for f in set(frames):
            inclusive[f] = inclusive.get(f, 0) + n
        own[frames[-1]] = own.get(frames[-1], 0) + n
    lines = [f"{total} samples", "", "inclusive %  function"]
    for f, n in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{100 * n / total:10.1f}  {f}")
    lines += ["", "self %  function"]
    for f, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{100 * n / total:7.1f}  {f}")
    return "\n".join(lines) + "\n"


def _tables(rows: list[LoadResult]) -> tuple[Table, Table]:
    t = Table(title="payapi: payments through EAPI → SAPI → PostgreSQL", title_justify="left")
    for col in ("run", "req/s", "p50 ms", "p99 ms", "requests", "errors"):
        t.add_column(col, justify="left" if col == "run" else "right")
    for r in rows:
        errs = r.non_2xx + r.socket_errors
        t.add_row(
            r.name,
            f"{r.rps:,.0f}",
            f"{r.p50_ms:.2f}",
            f"{r.p99_ms:.2f}" if r.p99_ms is not None else "—",
            f"{r.requests:,}",
            f"[bold red]{errs}[/bold red]" if errs else "0",
        )
    groups = ("eapi", "sapi", "postgres", "redis", "vault", "load gen", "other", "machine")
    c = Table(
        title="CPU in cores, averaged over the run (CPU ms per request)", title_justify="left"
    )
    c.add_column("run")
    for g in groups:
        c.add_column(g, justify="right")
    for r in rows:
        cells = []
        for g in groups:
            keys = ("wrk", "pgbench") if g == "load gen" else (g,)
            key = next((k for k in keys if k in r.cpu), None)
            if key is None:
                cells.append("—")
                continue
            per = r.cpu_ms_per_request.get(key)
            cells.append(f"{r.cpu[key]:.2f}" + (f" ({per:.2f})" if per is not None else ""))
        c.add_row(r.name, *cells)
    return t, c


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, help="lab folder (default: a new temporary folder)")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per measured run")
    ap.add_argument("--connections", type=int, default=32, help="concurrent clients")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per mode")
    ap.add_argument("--keep", action="store_true", help="leave the lab running")
    ap.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    ap.add_argument("--save", type=Path, help="also write the results as JSON to this file")
    ap.add_argument("--profile", type=Path, help="also record py-spy profiles into this folder")
    ap.add_argument("--skip-token", action="store_true", help="header-auth run only")
    ap.add_argument("--wrk", default=shutil.which("wrk") or "/usr/bin/wrk")
    ap.add_argument("--verbose", action="store_true", help="show wrk and pgbench output")
    args = ap.parse_args(argv)
    if not Path(args.wrk).exists():
        console.print("[red]wrk not found[/red]: `apt-get install -y wrk` (make bench does it)")
        return 2
    if not 1 <= args.duration <= 600:
        ap.error("--duration must be between 1 and 600 seconds")

    own_dir = args.dir is None
    lab_dir = Path(tempfile.mkdtemp(prefix="payapi-bench-")) if own_dir else args.dir
    lab = Lab(lab_dir)
    changed = _prepare_local_config(lab)
    eapi_was_running = lab.running("eapi")
    try:
        with console.status("starting the lab") as spinner:
            lab.journal.add_sink(
                note_sink(
                    lambda m: console.print(f"[dim]{m}[/dim]"),
                    started=lambda c: spinner.update(f"starting {c}"),
                )
            )
            status = lab.up()
        if changed and eapi_was_running:  # a running EAPI must read the new config
            lab.stop("eapi")
            lab.start("eapi")
        settings = load_settings(lab.config_path)
        if settings.eapi.rate_limit.enabled:
            console.print(
                f"[red]rate limits are enabled in {lab.dir / 'payapi.local.toml'}[/red]; "
                "the benchmark needs `[eapi.rate_limit] enabled = false`"
            )
            return 2
        creds = asyncio.run(_provision(lab.config_path, status["eapi"]))
        bench = Bench(args, lab, status, _roots(lab))
        run_id = secrets.token_hex(3)
        eapi = status["eapi"]
        modes = [
            ("POST /payments, client headers", "post-headers", "/api/v1/payments"),
        ]
        if not args.skip_token:
            modes += [
                ("POST /payments, bearer token", "post-bearer", "/api/v1/payments"),
                (
                    "GET /payments/{id}, bearer token",
                    "get-bearer",
                    f"/api/v1/payments/{creds['payment_id']}",
                ),
            ]
        results: list[LoadResult] = []
        for label, mode, path in modes:
            env = {
                "BENCH_MODE": mode,
                "BENCH_CLIENT_ID": creds["client_id"],
                "BENCH_CLIENT_SECRET": creds["client_secret"],
                "BENCH_TOKEN": creds["token"],
                "BENCH_REF_PREFIX": f"W{run_id}{mode[:6]}",
            }
            with console.status(f"warm-up: {label}"):
                bench.wrk("warm-up", eapi + path, env, duration=args.warmup, record=False)
            env["BENCH_REF_PREFIX"] = f"B{run_id}{mode[:6]}"
            with console.status(f"{label}: {args.connections} clients, {args.duration:.0f} s"):
                r = bench.wrk(label, eapi + path, env, duration=args.duration)
            results.append(r)
            if not r.clean:
                console.print(
                    f"[bold red]ERRORS in '{label}': {r.non_2xx} non-2xx responses, "
                    f"{r.socket_errors} socket errors — the figures are not valid[/bold red]"
                )
        with console.status(f"pgbench: {args.connections} clients, {args.duration:.0f} s"):
            pg = bench.pgbench(args.duration)
        profiles: list[str] = []
        if args.profile is not None:
            env = {
                "BENCH_MODE": "post-headers",
                "BENCH_CLIENT_ID": creds["client_id"],
                "BENCH_CLIENT_SECRET": creds["client_secret"],
                "BENCH_REF_PREFIX": f"P{run_id}",
            }
            with console.status("profiling EAPI and SAPI with py-spy"):
                profiles = _profile(bench, env, args.profile, args.duration)

        head = results[0]
        ratio = head.rps / pg.rps if pg.rps else 0.0
        summary: dict[str, Any] = {
            "machine": {"cpus": os.cpu_count(), "cpu_model": _cpu_model()},
            "connections": args.connections,
            "duration_seconds": args.duration,
            "runs": [asdict(r) for r in results],
            "pgbench": asdict(pg),
            "ratio": round(ratio, 3),
            "token_post_ratio": round(results[1].rps / pg.rps, 3) if len(results) > 1 else None,
            "target": {"ratio": TARGET_RATIO, "p99_ms": TARGET_P99_MS},
            "target_met": bool(
                ratio >= TARGET_RATIO
                and head.p99_ms is not None
                and head.p99_ms < TARGET_P99_MS
                and head.clean
            ),
            "errors": any(not r.clean for r in results) or pg.non_2xx > 0,
            "profiles": profiles,
            "lab": str(lab.dir) if args.keep else None,
        }
        out = Console()
        if args.save is not None:
            args.save.write_text(json.dumps(summary, indent=2) + "\n")
        if args.json:
            print(json.dumps(summary, indent=2))
        else:
            for table in _tables([*results, pg]):
                out.print(table)
            out.print(
                f"ratio API ÷ pgbench (header auth): [bold]{ratio:.3f}[/bold]"
                + (
                    f"   (bearer POST: {summary['token_post_ratio']:.3f})"
                    if summary["token_post_ratio"] is not None
                    else ""
                )
            )
            verdict = "[green]MET[/green]" if summary["target_met"] else "[yellow]NOT MET[/yellow]"
            out.print(
                f"target: ratio ≥ {TARGET_RATIO} and p99 < {TARGET_P99_MS:.0f} ms → {verdict}"
            )
            out.print(
                f"[dim]{os.cpu_count()} CPUs ({_cpu_model()}); CPU in cores averaged over each "
                "run; 'other' = processes outside the lab and the load generator.[/dim]"
            )
            busy = max(r.cpu.get("other", 0.0) for r in [*results, pg])
            if busy > BUSY_OTHER_CORES:
                out.print(
                    f"[yellow]other processes used up to {busy:.2f} cores during the runs: "
                    "the lab had less than the whole machine; req/s and latency are "
                    "understated (CPU ms per request less so)[/yellow]"
                )
            if summary["errors"]:
                out.print("[bold red]THIS RUN HAD ERRORS: see the errors column[/bold red]")
            for p in profiles:
                out.print(f"profile: {p}")
        return 1 if summary["errors"] else 0
    finally:
        if args.keep:
            console.print(f"lab kept in {lab.dir} (payapi lab down --dir {lab.dir})")
        else:
            lab.down()
            if own_dir:
                shutil.rmtree(lab.dir, ignore_errors=True)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    sys.exit(main())
