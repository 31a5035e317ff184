"""`payapi security check`: the verdicts (pure). :mod:`payapi.ops.security_scan` reads
the platform and hands what it read to the functions here.

The seed's "Security Verification" (``security-scan.sh --comprehensive``,
``verify-security-config.sh``) as checks, each ``{"name", "ok", "detail"}``; the command
passes only when every check does.

Invariants:

- A secret is never printed, logged or put in a check's detail: a :class:`Secret` has a
  label ("client secret of shop", "SAPI service token") and a value whose ``repr`` is
  hidden; a leak is reported by label and place (a file, a Redis key, a table and
  column), never by value. A place whose own name holds a secret (a Redis key named
  after one) is described without its name.
- Equality with a known value (a default credential) is compared in constant time
  (:func:`hmac.compare_digest`). Looking for a secret *inside* bytes is a substring
  search: its timing tells nothing to anyone who could not already read those bytes.
- Secrets shorter than :data:`MIN_SECRET_BYTES` are not searched for (they would match
  by chance); every secret payapi generates is 32 bytes of randomness or more.
"""

from __future__ import annotations

import hmac
import ipaddress
import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_VALUES",
    "Check",
    "Listener",
    "Secret",
    "SecretSet",
    "SecurityReport",
    "age_check",
    "defaults_in_use",
    "leak_check",
    "listener_check",
    "mode_problem",
    "parse_proc_net_tcp",
    "readable_by",
]

MIN_SECRET_BYTES = 12
# Credentials nobody should still be using: the seed's example and the usual suspects.
DEFAULT_VALUES: tuple[bytes, ...] = (
    b"test-client-secret",
    b"changeme",
    b"change-me",
    b"password",
    b"secret",
    b"admin",
    b"default",
)
SHOWN_PLACES = 5  # a detail names at most this many places, then "and N more"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass(frozen=True)
class SecurityReport:
    checks: tuple[Check, ...]
    comprehensive: bool = False

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "comprehensive": self.comprehensive,
            "failed": [c.name for c in self.checks if not c.ok],
            "checks": [c.to_json() for c in self.checks],
        }


# --------------------------------------------------------------------------- secrets


@dataclass(frozen=True)
class Secret:
    """A known secret value: what it is (``label``) and its bytes (never shown)."""

    label: str
    value: bytes = field(repr=False)

    def __str__(self) -> str:
        return self.label


class SecretSet:
    """The secrets to look for, deduplicated by value (the first label wins)."""

    def __init__(self, secrets: Iterable[Secret] = ()) -> None:
        self._by_value: dict[bytes, Secret] = {}
        for s in secrets:
            self.add(s)

    def add(self, secret: Secret) -> None:
        if len(secret.value) >= MIN_SECRET_BYTES:
            self._by_value.setdefault(secret.value, secret)

    def __len__(self) -> int:
        return len(self._by_value)

    def __iter__(self) -> Iterator[Secret]:
        return iter(self._by_value.values())

    def __repr__(self) -> str:
        return f"SecretSet({len(self)} secrets)"

    @property
    def longest(self) -> int:
        return max((len(v) for v in self._by_value), default=0)

    def found_in(self, data: bytes) -> list[str]:
        """Labels of the secrets that occur in ``data`` (sorted, each once)."""
        return sorted({s.label for v, s in self._by_value.items() if v in data})

    def equals(self, data: bytes) -> list[str]:
        """Labels of the secrets equal to ``data``, compared in constant time."""
        return sorted({s.label for v, s in self._by_value.items() if hmac.compare_digest(v, data)})

    def scan(self, chunks: Iterable[bytes]) -> list[str]:
        """:meth:`found_in` over a stream: consecutive chunks overlap by the longest
        secret minus one byte, so a secret split across two chunks is still found."""
        keep = max(self.longest - 1, 0)
        found: set[str] = set()
        tail = b""
        for chunk in chunks:
            if not chunk:
                continue
            window = tail + chunk
            found.update(self.found_in(window))
            tail = window[-keep:] if keep else b""
        return sorted(found)


def _places(places: Sequence[str]) -> str:
    shown = ", ".join(places[:SHOWN_PLACES])
    more = len(places) - SHOWN_PLACES
    return shown + (f" and {more} more" if more > 0 else "")


def leak_check(
    name: str, what: str, leaks: Mapping[str, Sequence[str]], scanned: int, unit: str
) -> Check:
    """The verdict of one scan: ``leaks`` maps a place to the labels of the secrets found
    there (never the values)."""
    if not leaks:
        return Check(name, True, f"no known secret in {scanned} {unit} of {what}")
    places = [f"{place} ({', '.join(labels)})" for place, labels in sorted(leaks.items())]
    return Check(name, False, f"secret found in {what}: {_places(places)}")


def defaults_in_use(secrets: SecretSet, defaults: Iterable[bytes] = DEFAULT_VALUES) -> list[str]:
    """Labels of the secrets whose value is a well-known default (constant time)."""
    hits: set[str] = set()
    for d in defaults:
        hits.update(secrets.equals(d))
    return sorted(hits)


def age_check(ages_days: Mapping[str, float], max_days: float | None) -> list[str]:
    """The credentials older than ``max_days`` (none when the plan sets no period)."""
    if max_days is None:
        return []
    return sorted(f"{who} ({age:.0f} days)" for who, age in ages_days.items() if age > max_days)


# --------------------------------------------------------------------------- files


def mode_problem(what: str, mode: int) -> str | None:
    """A credential file must be readable by its owner only (0600 or 0400)."""
    if mode & 0o077:
        return f"{what} is mode {stat.S_IMODE(mode):04o} (group or others have access; want 0600)"
    return None


def readable_by(mode: int, owner: int, group: int, uid: int, gids: Iterable[int]) -> bool:
    """Whether the permission bits let ``uid`` (in groups ``gids``) read a file; root is
    not asked (it reads everything)."""
    if uid == owner:
        return bool(mode & stat.S_IRUSR)
    if group in set(gids):
        return bool(mode & stat.S_IRGRP)
    return bool(mode & stat.S_IROTH)


# --------------------------------------------------------------------------- listeners


@dataclass(frozen=True)
class Listener:
    """A listening TCP socket (a row of /proc/net/tcp or tcp6 in state LISTEN)."""

    address: str
    port: int
    inode: int

    @property
    def every_interface(self) -> bool:
        return ipaddress.ip_address(self.address).is_unspecified

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


_LISTEN = "0A"


def _ipv4(hexaddr: str) -> str:
    return str(ipaddress.IPv4Address(bytes.fromhex(hexaddr)[::-1]))


def _ipv6(hexaddr: str) -> str:
    raw = bytes.fromhex(hexaddr)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    addr = ipaddress.IPv6Address(words)
    return str(addr.ipv4_mapped) if addr.ipv4_mapped else str(addr)


def parse_proc_net_tcp(text: str) -> list[Listener]:
    """The LISTEN rows of /proc/net/tcp (IPv4) or /proc/net/tcp6 (IPv6)."""
    out: list[Listener] = []
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 10 or cols[3] != _LISTEN:
            continue
        hexaddr, hexport = cols[1].split(":")
        address = _ipv4(hexaddr) if len(hexaddr) == 8 else _ipv6(hexaddr)
        out.append(Listener(address, int(hexport, 16), int(cols[9])))
    return out


def listener_check(
    listeners: Mapping[str, Sequence[Listener]], expected: Mapping[str, frozenset[str]]
) -> Check:
    """Every listener of every component is on the interface its configuration names.

    ``listeners``: component → its listening sockets (those on its configured port and
    every other one its processes hold); ``expected``: component → the addresses it may
    listen on. A socket on every interface (0.0.0.0, ::) is never expected.
    """
    problems: list[str] = []
    shown: list[str] = []
    for component, socks in sorted(listeners.items()):
        allowed = expected.get(component, frozenset())
        for s in socks:
            if s.every_interface:
                problems.append(f"{component} listens on every interface ({s})")
            elif s.address not in allowed:
                want = ", ".join(sorted(allowed)) or "nothing"
                problems.append(f"{component} listens on {s} (expected {want})")
            else:
                shown.append(f"{component} {s}")
    if problems:
        return Check("listeners", False, _places(problems))
    if not shown:
        return Check("listeners", True, "no listener of a configured component on this host")
    return Check("listeners", True, _places(shown))
