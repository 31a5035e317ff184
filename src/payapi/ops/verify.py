"""`payapi verify system`: the verdicts of the seed's "Recovery Verification" (pure).

:mod:`payapi.ops.verify_run` runs the steps (component health, the seed's functional
curls, a short performance run, the security check) and hands the figures here. Checks
are :class:`payapi.ops.security.Check` values; the system is verified when all pass.

The performance check compares the p99 latency of a few hundred sequential payments with
the baseline recorded by the first run (``[recovery] baseline_file``): it fails when p99
is more than :data:`MAX_P99_RATIO` times the baseline's. The ratios are reported; nothing
here asserts a speed, it compares the platform with itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from payapi.ops.security import Check

__all__ = ["MAX_P99_RATIO", "Latency", "VerifyReport", "percentile", "performance_check"]

MAX_P99_RATIO = 3.0


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by the nearest-rank method; 0 for no samples."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True)
class Latency:
    """Latencies of one run, in milliseconds."""

    count: int
    p50_ms: float
    p99_ms: float

    @classmethod
    def of(cls, samples_ms: Sequence[float]) -> Latency:
        return cls(len(samples_ms), percentile(samples_ms, 50), percentile(samples_ms, 99))

    def to_json(self) -> dict[str, Any]:
        return {
            "payments": self.count,
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Latency | None:
        try:
            return cls(int(data["payments"]), float(data["p50_ms"]), float(data["p99_ms"]))
        except (KeyError, TypeError, ValueError):
            return None


def performance_check(
    now: Latency, baseline: Latency | None, *, failures: int = 0, max_ratio: float = MAX_P99_RATIO
) -> Check:
    """p99 against the baseline (None: this run becomes the baseline)."""
    shown = f"{now.count} payments, p50 {now.p50_ms:.1f} ms, p99 {now.p99_ms:.1f} ms"
    if failures:
        return Check(
            "performance", False, f"{failures} of {now.count + failures} payments failed; {shown}"
        )
    if now.count == 0:
        return Check("performance", False, "no payment succeeded")
    if baseline is None:
        return Check("performance", True, f"{shown}; recorded as the baseline")
    p50 = now.p50_ms / baseline.p50_ms if baseline.p50_ms > 0 else math.inf
    p99 = now.p99_ms / baseline.p99_ms if baseline.p99_ms > 0 else math.inf
    ratios = f"p50 x{p50:.2f}, p99 x{p99:.2f} the baseline's ({baseline.p99_ms:.1f} ms)"
    if p99 > max_ratio:
        return Check("performance", False, f"{shown}: {ratios}, beyond x{max_ratio:g}")
    return Check("performance", True, f"{shown}: {ratios}")


@dataclass(frozen=True)
class VerifyReport:
    environment: str
    checks: tuple[Check, ...]
    comprehensive: bool = False
    performance: Latency | None = None
    baseline: Latency | None = None

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def to_json(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "ok": self.ok,
            "comprehensive": self.comprehensive,
            "failed": [c.name for c in self.checks if not c.ok],
            "checks": [c.to_json() for c in self.checks],
            "performance": None if self.performance is None else self.performance.to_json(),
            "baseline": None if self.baseline is None else self.baseline.to_json(),
        }
