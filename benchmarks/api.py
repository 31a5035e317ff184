"""`make bench`: payments through EAPI → SAPI → PostgreSQL, against the naive one-hop
service and PostgreSQL alone, measured in the same run.

A benchmark, not a test: it prints figures and ratios against peers measured in the same
run, on the same machine, against the same database; it asserts nothing about speed and
fails only on errors (non-2xx answers, socket errors).

One run:

1. start a lab (``payapi.lab.platform.Lab``) in the production configuration: rate limits
   **on**, set high enough not to throttle the benchmark client (``payapi.local.toml``,
   written before ``up``; ``--no-rate-limits`` turns them off);
2. create a client (through the credentials service, as ``payapi clients create`` does);
3. start the peer, ``benchmarks/naive_service.py`` (one FastAPI app, one POST route, an
   asyncpg pool, SAPI's INSERT of the same row into the same table; no auth, no
   idempotency, no audit), under uvicorn with as many workers as cores;
4. ``--rounds`` rounds (the order of payapi and the naive service alternates): **wrk** with
   ``benchmarks/payments.lua`` — ``POST /api/v1/payments`` with the seed's
   ``X-Client-ID`` / ``X-Client-Secret`` headers (the headline), the same POST with a
   bearer token, and a ``GET`` of one payment (payapi only: the naive service has no GET)
   — each after a short warm-up, ``--connections`` clients for ``--duration`` seconds;
   then **pgbench** inserting the same row with the same statement (the ceiling);
5. print per workload req/s, p50, p99, CPU ms per request per process, and the ratios
   payapi ÷ naive and payapi ÷ pgbench, as medians over rounds with min..max.

Everything listens on 127.0.0.1; every wait is bounded. The lab goes down at the end
unless ``--keep``. ``--profile DIR`` additionally records py-spy profiles of EAPI and SAPI
during an extra header-auth run (py-spy steals CPU, so that run's figures are not used).
Smoke run: ``--duration 3 --rounds 1 --warmup 1``.
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
import statistics
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
from payapi.servers.procs import free_port

HERE = Path(__file__).resolve().parent
LUA = HERE / "payments.lua"
# The production configuration: limits on, set high enough never to throttle the benchmark
# client (every request still pays for the counters); --no-rate-limits turns them off.
RATE_LIMIT_HIGH = (
    "[eapi.rate_limit]\nenabled = true\nper_client_per_minute = 100000000\n"
    "per_ip_per_minute = 100000000\nauthenticate_per_ip_per_minute = 100000000\n"
)
RATE_LIMIT_OFF = "[eapi.rate_limit]\nenabled = false\n"
NAIVE_APP = "naive_service:app"
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


def _prepare_local_config(lab: Lab, rate_limits: bool = True) -> bool:
    """Rate limits on but high (or off), in ``payapi.local.toml``, before ``up``. True if
    changed."""
    lab.dir.mkdir(parents=True, exist_ok=True)
    local = lab.dir / "payapi.local.toml"
    text = local.read_text() if local.exists() else ""
    if "[eapi.rate_limit]" in text:
        return False  # checked after up
    with local.open("a") as fh:
        section = RATE_LIMIT_HIGH if rate_limits else RATE_LIMIT_OFF
        fh.write(("\n" if text and not text.endswith("\n") else "") + section)
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


# -- the peer: the naive one-hop service ---------------------------------------------------


class NaiveService:
    """``benchmarks/naive_service.py`` under uvicorn (``workers`` processes) on loopback."""

    def __init__(self, dsn: str, *, workers: int) -> None:
        self.dsn = dsn
        self.workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(tempfile.mkstemp(prefix="payapi-bench-naive-", suffix=".log")[1])

    def start(self, timeout: float = 60.0) -> None:
        argv = [
            sys.executable, "-m", "uvicorn", NAIVE_APP, "--app-dir", str(HERE),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers),
            "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
        env = {**os.environ, "NAIVE_DSN": self.dsn}
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        body = {"amount": "1.00", "currency": "USD", "reference": "NAIVE-READY"}
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"naive service exited: {self.log.read_text()[-1000:]}")
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.post(self.url + "/api/v1/payments", json=body, timeout=2)
                if r.status_code == 201:
                    return
            time.sleep(0.3)
        raise RuntimeError(f"naive service not ready in {timeout:.0f}s: {self.log}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.unlink(missing_ok=True)


# -- rounds ----------------------------------------------------------------------------------

WORKLOADS = {
    # key: (label, wrk mode, path on payapi, path on the naive service or None)
    "post_headers": ("POST /payments, client headers", "post-headers", "/api/v1/payments", True),
    "post_bearer": ("POST /payments, bearer token", "post-bearer", "/api/v1/payments", True),
    "get_bearer": ("GET /payments/{id}, bearer token", "get-bearer", None, False),
}


def _median_range(values: list[float]) -> tuple[float, list[float]]:
    return statistics.median(values), [min(values), max(values)]


def _aggregate(results: list[LoadResult]) -> dict[str, Any]:
    """Medians over rounds (with min..max) of one target's runs of one workload."""
    rps, rps_r = _median_range([r.rps for r in results])
    p50, p50_r = _median_range([r.p50_ms for r in results])
    p99s = [r.p99_ms for r in results if r.p99_ms is not None]
    out: dict[str, Any] = {
        "rps": round(rps, 1),
        "rps_range": [round(x, 1) for x in rps_r],
        "p50_ms": round(p50, 2),
        "p50_ms_range": [round(x, 2) for x in p50_r],
    }
    if p99s:
        p99, p99_r = _median_range(p99s)
        out |= {"p99_ms": round(p99, 2), "p99_ms_range": [round(x, 2) for x in p99_r]}
    keys = sorted({k for r in results for k in r.cpu_ms_per_request})
    out["cpu_ms_per_request"] = {
        k: round(statistics.median([r.cpu_ms_per_request.get(k, 0.0) for r in results]), 3)
        for k in keys
    }
    out["other_cores"] = round(statistics.median([r.cpu.get("other", 0.0) for r in results]), 2)
    return out


def _run_rounds(
    args: argparse.Namespace,
    lab: Lab,
    status: dict[str, Any],
    creds: dict[str, str],
    naive: NaiveService,
) -> tuple[dict[str, Any], list[tuple[int, str, str, LoadResult]]]:
    """``--rounds`` rounds; in each, every workload on payapi and on the naive service (the
    order alternates from round to round), then pgbench. Medians over rounds."""
    bench = Bench(args, lab, status, {**_roots(lab), "naive": naive.pid})
    run_id = secrets.token_hex(3)
    keys = ["post_headers"] if args.skip_token else list(WORKLOADS)
    rows: list[tuple[int, str, str, LoadResult]] = []  # (round, workload, target, result)
    for rnd in range(1, args.rounds + 1):
        targets = ("payapi", "naive") if rnd % 2 else ("naive", "payapi")
        for key in keys:
            label, mode, path, on_naive = WORKLOADS[key]
            path = path or f"/api/v1/payments/{creds['payment_id']}"
            for target in targets:
                if target == "naive" and not on_naive:
                    continue
                base = status["eapi"] if target == "payapi" else naive.url
                env = {
                    "BENCH_MODE": mode,
                    "BENCH_CLIENT_ID": creds["client_id"],
                    "BENCH_CLIENT_SECRET": creds["client_secret"],
                    "BENCH_TOKEN": creds["token"],
                    "BENCH_REF_PREFIX": f"W{run_id}{rnd}{target[0]}{mode[:6]}",
                }
                with console.status(f"round {rnd}: warm-up {target}: {label}"):
                    bench.wrk("warm-up", base + path, env, duration=args.warmup, record=False)
                env["BENCH_REF_PREFIX"] = f"B{run_id}{rnd}{target[0]}{mode[:6]}"
                with console.status(
                    f"round {rnd}: {target}: {label}: {args.connections} clients, "
                    f"{args.duration:.0f} s"
                ):
                    r = bench.wrk(f"{target}: {label}", base + path, env, duration=args.duration)
                rows.append((rnd, key, target, r))
                console.print(
                    f"[dim]round {rnd} {target:7s} {key:12s} {r.rps:8,.0f} req/s  "
                    f"p50 {r.p50_ms:6.1f} ms  p99 {r.p99_ms or float('nan'):6.1f} ms[/dim]"
                )
                if not r.clean:
                    console.print(
                        f"[bold red]ERRORS in round {rnd} {target} '{label}': {r.non_2xx} "
                        f"non-2xx responses, {r.socket_errors} socket errors[/bold red]"
                    )
        with console.status(f"round {rnd}: pgbench: {args.connections} clients"):
            pg = bench.pgbench(args.duration)
        rows.append((rnd, "pgbench", "pgbench", pg))
        console.print(f"[dim]round {rnd} pgbench {pg.rps:8,.0f} tps[/dim]")
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

    def of(key: str, target: str) -> list[LoadResult]:
        return [r for _rnd, k, t, r in rows if k == key and t == target]

    def per_round(key: str, target: str) -> dict[int, LoadResult]:
        return {rnd: r for rnd, k, t, r in rows if k == key and t == target}

    pg_by_round = per_round("pgbench", "pgbench")
    workloads: dict[str, Any] = {}
    for key in keys:
        pay = per_round(key, "payapi")
        nav = per_round(key, "naive")
        entry: dict[str, Any] = {
            "label": WORKLOADS[key][0],
            "payapi": _aggregate(of(key, "payapi")),
        }
        tps, tps_r = _median_range([r.rps for r in pg_by_round.values()])
        entry["pgbench"] = {"tps": round(tps, 1), "tps_range": [round(x, 1) for x in tps_r]}
        ratios_pg = [pay[n].rps / pg_by_round[n].rps for n in pay if pg_by_round[n].rps]
        if nav:
            entry["naive"] = _aggregate(of(key, "naive"))
            ratios = [pay[n].rps / nav[n].rps for n in pay if nav[n].rps]
            med, rng = _median_range(ratios)
            entry["ratio_naive"] = round(med, 3)
            entry["ratio_naive_range"] = [round(x, 3) for x in rng]
        else:
            entry["naive"] = None
            entry["ratio_naive"] = None
        med, rng = _median_range(ratios_pg)
        entry["ratio_pgbench"] = round(med, 3)
        entry["ratio_pgbench_range"] = [round(x, 3) for x in rng]
        workloads[key] = entry
    summary: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "cpu_model": _cpu_model()},
        "rounds": args.rounds,
        "rate_limits": bool(args.rate_limits),
        "connections": args.connections,
        "duration_seconds": args.duration,
        "naive_workers": naive.workers,
        "workloads": workloads,
        "per_round": [
            {"round": rnd, "workload": key, "target": target, **asdict(r)}
            for rnd, key, target, r in rows
        ],
        "errors": any(not r.clean for _rnd, _k, t, r in rows if t != "pgbench")
        or any(r.non_2xx > 0 for _rnd, _k, t, r in rows if t == "pgbench"),
        "profiles": profiles,
    }
    return summary, rows


def _print_summary(
    out: Console, summary: dict[str, Any], rows: list[tuple[int, str, str, LoadResult]]
) -> None:
    def rng(values: list[float], fmt: str = "{:,.0f}") -> str:
        return f"{fmt.format(values[0])}..{fmt.format(values[1])}"

    t = Table(
        title=f"medians over {summary['rounds']} round(s) (min..max); rate limits "
        f"{'on' if summary['rate_limits'] else 'off'}; {summary['connections']} connections",
        title_justify="left",
    )
    for col in ("workload", "target", "req/s", "p50 ms", "p99 ms", "CPU ms/req", "÷ naive",
                "÷ pgbench"):  # fmt: skip
        t.add_column(
            col, justify="left" if col in ("workload", "target", "CPU ms/req") else "right"
        )
    for key, w in summary["workloads"].items():
        for target in ("payapi", "naive"):
            a = w.get(target)
            if not a:
                continue
            cpu = ", ".join(
                f"{k} {v:.2f}" for k, v in a["cpu_ms_per_request"].items() if v >= 0.005
            )
            t.add_row(
                key if target == "payapi" else "",
                target,
                f"{a['rps']:,.0f} ({rng(a['rps_range'])})",
                f"{a['p50_ms']:.1f} ({rng(a['p50_ms_range'], '{:.1f}')})",
                f"{a['p99_ms']:.1f} ({rng(a['p99_ms_range'], '{:.1f}')})" if "p99_ms" in a else "—",
                cpu,
                (f"{w['ratio_naive']:.2f} ({rng(w['ratio_naive_range'], '{:.2f}')})"
                 if target == "payapi" and w["ratio_naive"] is not None else ""),
                (f"{w['ratio_pgbench']:.3f} ({rng(w['ratio_pgbench_range'], '{:.3f}')})"
                 if target == "payapi" else ""),
            )  # fmt: skip
        t.add_row("", "pgbench", f"{w['pgbench']['tps']:,.0f} tps", "", "", "", "", "",
                  end_section=True)  # fmt: skip
    out.print(t)
    r = Table(title="every run", title_justify="left")
    for col in ("round", "workload", "target", "req/s", "p50 ms", "p99 ms", "errors", "other"):
        r.add_column(col, justify="right" if col not in ("workload", "target") else "left")
    for rnd, key, target, res in rows:
        errs = res.non_2xx + res.socket_errors
        r.add_row(
            str(rnd), key, target, f"{res.rps:,.0f}", f"{res.p50_ms:.1f}",
            f"{res.p99_ms:.1f}" if res.p99_ms is not None else "—",
            f"[bold red]{errs}[/bold red]" if errs else "0", f"{res.cpu.get('other', 0):.2f}",
        )  # fmt: skip
    out.print(r)
    head = summary["workloads"]["post_headers"]
    if head.get("ratio_naive") is not None:
        out.print(
            f"payapi ÷ naive (POST, client headers, rate limits "
            f"{'on' if summary['rate_limits'] else 'off'}): [bold]{head['ratio_naive']:.2f}[/bold]"
            f"; p99 {head['payapi'].get('p99_ms', float('nan')):.1f} ms against "
            f"{head['naive'].get('p99_ms', float('nan')):.1f} ms; payapi ÷ pgbench "
            f"{head['ratio_pgbench']:.3f}"
        )
    out.print(
        f"[dim]{os.cpu_count()} CPUs ({_cpu_model()}); naive service: uvicorn, "
        f"{summary['naive_workers']} workers; 'other' = cores used outside the lab, the naive "
        "service and the load generator.[/dim]"
    )
    busy = max((res.cpu.get("other", 0.0) for _r, _k, _t, res in rows), default=0.0)
    if busy > BUSY_OTHER_CORES:
        out.print(
            f"[yellow]other processes used up to {busy:.2f} cores during the runs: "
            "figures are understated (CPU ms per request less so)[/yellow]"
        )
    if summary["errors"]:
        out.print("[bold red]THIS RUN HAD ERRORS: see the errors column[/bold red]")
    for p in summary["profiles"]:
        out.print(f"profile: {p}")


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
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (payapi, naive)")
    ap.add_argument(
        "--no-rate-limits",
        dest="rate_limits",
        action="store_false",
        help="EAPI's rate limits off (default: on, set high enough not to throttle)",
    )
    args = ap.parse_args(argv)
    if not 1 <= args.rounds <= 20:
        ap.error("--rounds must be between 1 and 20")
    if not Path(args.wrk).exists():
        console.print("[red]wrk not found[/red]: `apt-get install -y wrk` (make bench does it)")
        return 2
    if not 1 <= args.duration <= 600:
        ap.error("--duration must be between 1 and 600 seconds")

    own_dir = args.dir is None
    lab_dir = Path(tempfile.mkdtemp(prefix="payapi-bench-")) if own_dir else args.dir
    lab = Lab(lab_dir)
    changed = _prepare_local_config(lab, args.rate_limits)
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
        rl = settings.eapi.rate_limit
        if rl.enabled != args.rate_limits or (
            rl.enabled and min(rl.per_client_per_minute, rl.per_ip_per_minute) < 10_000_000
        ):
            want = RATE_LIMIT_HIGH if args.rate_limits else RATE_LIMIT_OFF
            console.print(
                f"[red]{lab.dir / 'payapi.local.toml'} has other rate limits[/red]; "
                f"this benchmark needs:\n{want}"
            )
            return 2
        creds = asyncio.run(_provision(lab.config_path, status["eapi"]))
        naive = NaiveService(status["postgres"]["payment_dsn"], workers=os.cpu_count() or 1)
        naive.start()
        try:
            summary, rows = _run_rounds(args, lab, status, creds, naive)
        finally:
            naive.stop()
        summary["lab"] = str(lab.dir) if args.keep else None
        out = Console() if sys.stdout.isatty() else Console(width=150)
        if args.save is not None:
            args.save.write_text(json.dumps(summary, indent=2) + "\n")
        if args.json:
            print(json.dumps(summary, indent=2))
        else:
            _print_summary(out, summary, rows)
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
