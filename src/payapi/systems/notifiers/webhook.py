"""Incoming webhooks: Slack's (``{"text": …}``, which Mattermost and Rocket.Chat accept
too) and a generic one (``{"subject", "body", "drill", "to"}``, for an SMS gateway or
another chat platform). The URL is the credential (whoever has it can post), so it comes
from the vault at send time and is never part of an error message: errors say the HTTP
status or the kind of network failure only."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from payapi.core.redaction import REDACTED
from payapi.systems.notifiers.base import Note, Notifier, NotifierError

__all__ = ["SlackNotifier", "WebhookNotifier", "post_json"]


class _RedactUrl(logging.Filter):
    """httpx logs every request's full URL at INFO; for a webhook the URL is the secret.
    Attached to httpx's logger only while a webhook request is in flight."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if self.url in text:
            record.msg, record.args = text.replace(self.url, REDACTED), None
        return True


@contextmanager
def _url_redacted(url: str) -> Iterator[None]:
    logger = logging.getLogger("httpx")
    redact = _RedactUrl(url)
    logger.addFilter(redact)
    try:
        yield
    finally:
        logger.removeFilter(redact)


def post_json(name: str, url: str | None, payload: bytes, timeout: float) -> None:
    """POST ``payload`` to ``url``; any status but 2xx, a timeout or a refused connection
    is a :class:`NotifierError`. Redirects are not followed (a webhook never redirects)."""
    if not url:
        raise NotifierError(f"channel {name}: no webhook URL (its credential is empty)")
    try:
        with (
            _url_redacted(url),
            httpx.Client(timeout=timeout, follow_redirects=False) as client,
        ):
            resp = client.post(url, content=payload, headers={"Content-Type": "application/json"})
    except httpx.TimeoutException:
        raise NotifierError(f"channel {name}: timed out after {timeout:g} s") from None
    except httpx.HTTPError as exc:
        raise NotifierError(f"channel {name}: {type(exc).__name__}") from None
    if not 200 <= resp.status_code < 300:
        raise NotifierError(f"channel {name}: HTTP {resp.status_code}")


class SlackNotifier(Notifier):
    kind = "slack"

    def render(self, note: Note) -> bytes:
        return json.dumps({"text": note.text}, ensure_ascii=False).encode()

    def send(self, note: Note, payload: bytes, credential: str | None) -> None:
        post_json(self.channel.name, credential, payload, self.channel.timeout_seconds)


class WebhookNotifier(Notifier):
    kind = "webhook"

    def render(self, note: Note) -> bytes:
        body = {
            "subject": note.subject,
            "body": note.body,
            "drill": note.drill,
            "to": [{"role": a.role, "contact": a.contact} for a in note.to],
        }
        return json.dumps(body, ensure_ascii=False).encode()

    def send(self, note: Note, payload: bytes, credential: str | None) -> None:
        post_json(self.channel.name, credential, payload, self.channel.timeout_seconds)
