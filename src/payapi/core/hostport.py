"""``host:port`` addresses (a Redis Sentinel, an etcd peer) parsed in one place.

Configuration lists such addresses as strings; every reader parses them with
:func:`parse_hostport`, so ``[::1]:26379`` and a missing port get the same answer everywhere.
"""

from __future__ import annotations

__all__ = ["parse_hostport"]


def parse_hostport(text: str) -> tuple[str, int]:
    """``"127.0.0.1:26379"`` → ``("127.0.0.1", 26379)``; ``"[::1]:26379"`` → ``("::1", 26379)``.

    ValueError, with one line naming the input, when it is not host:port.
    """
    raw = text.strip()
    host, sep, port = raw.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:  # an IPv6 address must be bracketed, or its port is ambiguous
        host = ""
    if not sep or not host or any(c.isspace() for c in host):
        raise ValueError(f"{raw!r} is not host:port")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{raw!r} is not host:port (the port must be 1..65535)")
    return host, int(port)
