"""An ASGI app under uvicorn in a daemon thread, on a loopback port (tests and tools).

The official Conjur client and the services' own tests need a real URL; this serves an app
in-process and ``start`` returns once it listens.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn

from payapi.servers.procs import ServerError, free_port


class ServerThread:
    """An ASGI app under uvicorn in a daemon thread; ``start`` waits until it listens."""

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        config = uvicorn.Config(
            app,
            host=host,
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=2,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, name=f"uvicorn-{self.port}", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> str:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise ServerError("the server thread failed to start (see its log)")
            if time.monotonic() > deadline:
                self.stop()
                raise ServerError(f"the server thread did not start within {timeout:.0f}s")
            time.sleep(0.02)
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(timeout)
