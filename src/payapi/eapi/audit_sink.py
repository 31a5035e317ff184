"""Security events from EAPI go to the audit chain through SAPI, off the request path.

Sending is fire-and-forget with a bound on events in flight: an attack that floods us
with bad credentials must not turn into unbounded memory. Dropped events are counted
and logged, never silently lost.
"""

from __future__ import annotations

import asyncio
from typing import Any

from payapi.core.logs import get_logger
from payapi.eapi.sapi_client import SapiClient, SapiUnavailable

log = get_logger("payapi.eapi.audit")


class AuditSink:
    def __init__(self, sapi: SapiClient, max_in_flight: int = 256) -> None:
        self.sapi = sapi
        self.max_in_flight = max_in_flight
        self.dropped = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def emit(self, type_: str, *, actor: str, subject: str | None, details: dict[str, Any]) -> None:
        if len(self._tasks) >= self.max_in_flight:
            self.dropped += 1
            log.warning("audit_event_dropped", audit_type=type_, dropped=self.dropped)
            return
        event = {"type": type_, "actor": actor, "subject": subject, "details": details}
        task = asyncio.get_running_loop().create_task(self._send(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, event: dict[str, Any]) -> None:
        try:
            resp = await self.sapi.request("POST", "/api/internal/audit", json=event)
            if resp.status_code >= 300:
                log.error("audit_event_rejected", audit_type=event["type"], status=resp.status_code)
        except SapiUnavailable:
            log.error("audit_event_undelivered", audit_type=event["type"])

    async def drain(self, timeout: float) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
