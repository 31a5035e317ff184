"""Send a chunked body on a raw socket and watch for an early answer.

An HTTP client library writes the whole body before it reads the answer, which hides
whether the server refused the body while it streamed in. Here each 1 MiB chunk is
followed by a look at the socket: a server that enforces its limit while reading answers
413 long before the last chunk; one that buffers the body first answers only after it.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Mapping
from urllib.parse import urlsplit

CHUNK = 1 << 20


def send_chunked(
    base_url: str, path: str, headers: Mapping[str, str], *, chunks: int
) -> tuple[str | None, int]:
    """The status line's code and reason (``"413 Request Entity Too Large"``), or None
    without an answer, and how many of the ``chunks`` MiB were sent before it came."""
    url = urlsplit(base_url)
    with socket.create_connection((url.hostname or "127.0.0.1", url.port or 80), 10) as sock:
        head = [f"POST {path} HTTP/1.1", f"Host: {url.netloc}", "Transfer-Encoding: chunked"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        payload = b"%x\r\n" % CHUNK + b"x" * CHUNK + b"\r\n"
        sent = 0
        for _ in range(chunks):
            readable, _, _ = select.select([sock], [], [], 0.05)
            if readable:
                return _status(sock), sent
            try:
                sock.sendall(payload)
            except OSError:  # the server closed after answering: read what it said
                break
            sent += 1
        else:
            sock.sendall(b"0\r\n\r\n")
        readable, _, _ = select.select([sock], [], [], 10.0)
        return (_status(sock) if readable else None), sent


def _status(sock: socket.socket) -> str | None:
    try:
        answer = sock.recv(65536).decode("latin-1")
    except OSError:
        return None
    return answer.split("\r\n", 1)[0].split(" ", 1)[1] if answer else None
