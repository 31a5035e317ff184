"""Deliver one incident message through the configured channels, with fallback.

The rule (the plan's "Primary Channels" and "Backup Channels"):

1. Every **primary** channel gets the message, in ``order`` (each one is an audience of
   its own: the Slack channel, the email list, the SMS alerts).
2. When at least one primary channel failed (refused, timed out, 5xx, its credential not
   readable), the **backup** channels are tried in ``order`` until one takes the message.
3. Each attempt is one :class:`SendResult` per recipient role (``fallback=True`` for a
   backup channel), with the SHA-256 of exactly the bytes sent or attempted.

A message that reached no channel returns only failed results; the caller exits 1. With
no ``[[incident.channels]]`` configured, the one channel is a file outbox (``outbox/``
beside the config file), which works with every server down.

Secrets: a channel's credential (the SMTP password, the webhook URL) is read from the
vault at send time through ``secret(variable_id)`` and handed to the notifier; it is
never logged, never in a result, and scrubbed from any error text that might echo it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from payapi.core.errors import PayapiError
from payapi.core.plan import Plan
from payapi.core.redaction import REDACTED
from payapi.core.settings import IncidentChannelSettings, Settings
from payapi.systems.notifiers import Addressee, Note, NotifierError, open_notifier

__all__ = [
    "DRILL_MARK",
    "DrillMarkMissing",
    "Message",
    "Recipient",
    "SecretReader",
    "SendResult",
    "channels",
    "deliver",
    "outbox_dir",
    "vault_secret_reader",
]

log = logging.getLogger("payapi.incident.notify")

DRILL_MARK = "[DRILL]"
DEFAULT_CHANNEL = IncidentChannelSettings(name="outbox", kind="file")

SecretReader = Callable[[str], "str | None"]


class DrillMarkMissing(PayapiError):
    """A drill message without ``[DRILL]`` at the start of its subject and first line:
    it would look like a real disaster, so it is never sent."""


@dataclass(frozen=True)
class Message:
    subject: str
    body: str
    drill: bool


@dataclass(frozen=True)
class Recipient:
    role: str
    name: str
    contact: str  # an email address, a handle, a phone


@dataclass(frozen=True)
class SendResult:
    channel: str
    kind: str
    role: str
    ok: bool
    sha256: str
    error: str | None
    fallback: bool

    def to_json(self) -> dict[str, object]:
        return {
            "channel": self.channel,
            "kind": self.kind,
            "role": self.role,
            "ok": self.ok,
            "sha256": self.sha256,
            "error": self.error,
            "fallback": self.fallback,
        }


def channels(
    settings: Settings,
) -> tuple[list[IncidentChannelSettings], list[IncidentChannelSettings]]:
    """The primary and the backup channels, each in ``order`` (then name)."""
    configured = settings.incident.channels or [DEFAULT_CHANNEL]
    ordered = sorted(configured, key=lambda c: (c.order, c.name))
    return [c for c in ordered if c.tier == "primary"], [c for c in ordered if c.tier == "backup"]


def outbox_dir(settings: Settings) -> Path:
    """A file channel's folder when it names none: ``outbox/`` beside the config file."""
    base = settings.config_path.parent if settings.config_path is not None else Path.cwd()
    return base / "outbox"


def vault_secret_reader(settings: Settings) -> SecretReader:
    """Read channel credentials from the vault as its admin (as the credentials service
    does); None when the variable is missing or the vault cannot be reached, so that the
    channel fails and the message falls back (the file outbox needs no credential)."""
    from payapi.core.settings import read_secret_file
    from payapi.vault.client import VaultClient, VaultError

    def read(variable_id: str) -> str | None:
        async def get() -> str:
            key = read_secret_file(settings.vault.admin_api_key_file, "vault admin API key")
            async with VaultClient(
                settings.vault.endpoints(),
                settings.vault.account,
                settings.vault.admin_login,
                key,
            ) as vault:
                return (await vault.get_secret(variable_id)).get_secret_value()

        try:
            return asyncio.run(get())
        except (VaultError, PayapiError) as exc:
            log.warning("channel_credential_unavailable %s: %s", variable_id, type(exc).__name__)
            return None

    return read


def _check_drill(message: Message) -> None:
    if not message.drill:
        return
    first = message.body.lstrip("\n").split("\n", 1)[0]
    if not (message.subject.startswith(DRILL_MARK) and first.startswith(DRILL_MARK)):
        raise DrillMarkMissing(
            f"a drill message must start its subject and first line with {DRILL_MARK}"
        )


def _scrub(text: str, secret: str | None) -> str:
    return text.replace(secret, REDACTED) if secret else text


def _attempt(
    channel: IncidentChannelSettings,
    note: Note,
    roles: Sequence[str],
    *,
    fallback: bool,
    default_dir: Path,
    secret: SecretReader,
) -> list[SendResult]:
    digest = ""
    credential: str | None = None
    try:
        notifier = open_notifier(channel, default_dir=default_dir)
        payload = notifier.render(note)
        digest = hashlib.sha256(payload).hexdigest()
        if channel.credential is not None:
            credential = secret(channel.credential)
            if credential is None:
                raise NotifierError(
                    f"channel {channel.name}: credential {channel.credential} not readable"
                )
        notifier.send(note, payload, credential)
        error = None
    except NotifierError as exc:
        error = _scrub(str(exc), credential)
    ok = error is None
    if ok:
        log.info("incident_message_sent channel=%s sha256=%s", channel.name, digest)
    else:
        log.warning("incident_message_failed channel=%s error=%s", channel.name, error)
    return [
        SendResult(channel.name, channel.kind, role, ok, digest, error, fallback)
        for role in (roles or [""])
    ]


def deliver(
    settings: Settings,
    plan: Plan,
    message: Message,
    recipients: Sequence[Recipient],
    *,
    secret: SecretReader | None = None,
) -> list[SendResult]:
    """Send ``message`` to ``recipients`` through the channels (the rule above)."""
    del plan  # the channels are configured in settings; the plan names them for people
    _check_drill(message)
    read = secret if secret is not None else vault_secret_reader(settings)
    note = Note(
        message.subject,
        message.body,
        message.drill,
        tuple(Addressee(r.role, r.contact) for r in recipients),
    )
    roles = list(dict.fromkeys(r.role for r in recipients))
    default_dir = outbox_dir(settings)
    primary, backup = channels(settings)
    results: list[SendResult] = []
    for channel in primary:
        results += _attempt(
            channel, note, roles, fallback=False, default_dir=default_dir, secret=read
        )
    if primary and all(r.ok for r in results):
        return results
    for channel in backup:
        attempt = _attempt(
            channel, note, roles, fallback=True, default_dir=default_dir, secret=read
        )
        results += attempt
        if all(r.ok for r in attempt):
            break
    return results


def reached(results: Sequence[SendResult]) -> bool:
    """Did the message reach at least one channel? (False: the caller exits 1.)"""
    return any(r.ok for r in results)
