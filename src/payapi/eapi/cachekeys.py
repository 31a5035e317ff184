"""EAPI's key layout in Redis, and the rule that makes a restored snapshot safe to serve.

One job: say what each key EAPI keeps in Redis means, so that EAPI's cache
(:mod:`payapi.eapi.cache`), the RDB scanner's key classes and a Redis restore
(:mod:`payapi.backup.redis_restore`) all read the same layout:

- ``payapi:tok:<sha256 of token>`` → client id (an opaque token, hashed);
- ``payapi:ctok:<client id>`` → set of that client's token digests;
- ``payapi:ver:<client id>`` → verification cache (keyed hashes of a valid secret);
- ``payapi:rl:<scope>:<id>:<minute>`` → rate-limit counters;
- ``payapi:gen`` → the revocation generation, bumped by every revocation; a verification
  is cached only if the generation did not move while it was looked up.

The restore-safety rule (:func:`make_restore_safe`) is EAPI's, not the backup's: a
snapshot remembers verifications and tokens that may have been revoked since it was
taken. Verifications are always dropped (the secret may have been rotated); tokens are
dropped all at once, or per client that revoked one; and the generation is moved above
every value handed out before, so that no verification looked up before the restore can
be cached after it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis as redis_sync

PREFIX = "payapi:"
GEN_KEY = f"{PREFIX}gen"
# Containment of a security breach: client ids whose credentials EAPI refuses at once,
# ALL_CLIENTS for every client (payapi recover breach sets it, then lifts it).
BLOCKED_KEY = f"{PREFIX}blocked"
ALL_CLIENTS = "*"

# What the RDB scanner counts, first matching prefix wins.
KEY_CLASSES: tuple[tuple[str, bytes], ...] = (
    ("tokens", f"{PREFIX}tok:".encode()),
    ("token_sets", f"{PREFIX}ctok:".encode()),
    ("verifications", f"{PREFIX}ver:".encode()),
    ("rate_limits", f"{PREFIX}rl:".encode()),
)
GENERATION_KEY = GEN_KEY.encode()

TOKEN_PATTERN = f"{PREFIX}tok:*"
TOKEN_SET_PATTERN = f"{PREFIX}ctok:*"
VERIFICATION_PATTERN = f"{PREFIX}ver:*"


def token_key(digest: str) -> str:
    return f"{PREFIX}tok:{digest}"


def client_tokens_key(client_id: str) -> str:
    return f"{PREFIX}ctok:{client_id}"


def verification_key(client_id: str) -> str:
    return f"{PREFIX}ver:{client_id}"


def rate_key(scope: str, window: int) -> str:
    return f"{PREFIX}rl:{scope}:{window}"


def classify_key(key: bytes) -> str:
    """The class of one key, as a snapshot's summary counts it."""
    if key == GENERATION_KEY:
        return "generation"
    for name, prefix in KEY_CLASSES:
        if key.startswith(prefix):
            return name
    return "other"


# --------------------------------------------------------------------------- restore rule


@dataclass(frozen=True)
class Dropped:
    verifications: int = 0
    tokens: int = 0
    token_sets: int = 0

    def __add__(self, other: Dropped) -> Dropped:
        return Dropped(
            self.verifications + other.verifications,
            self.tokens + other.tokens,
            self.token_sets + other.token_sets,
        )

    def to_json(self) -> dict[str, int]:
        return {
            "verifications": self.verifications,
            "tokens": self.tokens,
            "token_sets": self.token_sets,
        }


def _scan_delete(client: redis_sync.Redis, pattern: str) -> int:
    total = 0
    batch: list[Any] = []
    for key in client.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 500:
            total += int(client.delete(*batch))
            batch = []
    if batch:
        total += int(client.delete(*batch))
    return total


def _drop_client_tokens(client: redis_sync.Redis, client_ids: frozenset[str]) -> tuple[int, int]:
    """Delete the tokens (``tok:<digest>`` → client id) and token sets of ``client_ids``."""
    wanted = {c.encode() for c in client_ids}
    tokens = 0
    batch: list[Any] = []

    def flush() -> int:
        values = client.mget(batch)
        doomed = [k for k, v in zip(batch, values, strict=True) if v in wanted]
        return int(client.delete(*doomed)) if doomed else 0

    for key in client.scan_iter(match=TOKEN_PATTERN, count=1000):
        batch.append(key)
        if len(batch) >= 500:
            tokens += flush()
            batch = []
    if batch:
        tokens += flush()
    sets = 0
    ids = sorted(client_ids)
    for i in range(0, len(ids), 500):
        keys = [client_tokens_key(c) for c in ids[i : i + 500]]
        sets += int(client.delete(*keys))
    return tokens, sets


def make_restore_safe(
    client: redis_sync.Redis, *, drop_all_tokens: bool, client_ids: frozenset[str]
) -> Dropped:
    """Apply the rule to one database of a Redis that no client reads yet (a private one
    loaded from the snapshot): drop every verification, and every token
    (``drop_all_tokens``) or those of ``client_ids``. The generation is
    :func:`new_generation`'s job."""
    verifications = _scan_delete(client, VERIFICATION_PATTERN)
    if drop_all_tokens:
        tokens = _scan_delete(client, TOKEN_PATTERN)
        sets = _scan_delete(client, TOKEN_SET_PATTERN)
    elif client_ids:
        tokens, sets = _drop_client_tokens(client, client_ids)
    else:
        tokens = sets = 0
    return Dropped(verifications, tokens, sets)


def read_generation(client: redis_sync.Redis) -> int | None:
    raw = client.get(GEN_KEY)
    try:
        return int(raw) if raw is not None else None
    except (TypeError, ValueError):
        return None


def new_generation(*known: int | None) -> int:
    """Above every generation handed out before: generations grow by one per revocation,
    far slower than a nanosecond clock, so a clock reading beats any earlier value that
    was itself a clock reading plus a count; ``known`` values are beaten by one."""
    return max([time.time_ns(), *[k + 1 for k in known if k is not None]])


# --------------------------------------------------------------------------- invalidation


def invalidate_verifications(client: redis_sync.Redis) -> int:
    """Drop every cached verification from a live Redis that EAPI reads (after the vault
    was restored: a secret put back to an older version must be checked against the vault
    at once, not answered from the cache). The generation is bumped before and after the
    scan, as a revocation does, so a verification looked up while the entries go is not
    cached afterwards. Tokens stay: they are EAPI's own, not the vault's. Returns the
    number of clients whose cached verifications were dropped."""
    client.incr(GEN_KEY)
    dropped = _scan_delete(client, VERIFICATION_PATTERN)
    client.incr(GEN_KEY)
    return dropped
