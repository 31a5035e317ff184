"""Email over SMTP (smtplib). STARTTLS is used whenever the server offers it (and
required with ``starttls = "require"``); the password is sent only over TLS, never in
the clear. The message is rendered once (with its Date and Message-ID) and those exact
bytes are sent, so the recorded SHA-256 is that of the email that left."""

from __future__ import annotations

import smtplib
import ssl
from email import policy
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from payapi.systems.notifiers.base import Note, Notifier, NotifierError

__all__ = ["SmtpNotifier"]


class SmtpNotifier(Notifier):
    kind = "smtp"

    def addresses(self, note: Note) -> list[str]:
        """The distribution lists of the channel, then every recipient with an email."""
        found = [*self.channel.to, *(a.contact for a in note.to if "@" in a.contact)]
        return list(dict.fromkeys(found))

    def render(self, note: Note) -> bytes:
        msg = EmailMessage()
        msg["From"] = self.channel.from_address or ""
        msg["To"] = ", ".join(self.addresses(note))
        msg["Subject"] = note.subject
        msg["Date"] = formatdate(usegmt=True)
        msg["Message-ID"] = make_msgid(domain="payapi.invalid")
        if note.drill:
            msg["X-Payapi-Drill"] = "yes"
        msg.set_content(note.body)
        return msg.as_bytes(policy=policy.SMTP)  # CRLF: the bytes that go on the wire

    def send(self, note: Note, payload: bytes, credential: str | None) -> None:
        ch = self.channel
        where = f"smtp {ch.host}:{ch.port}"
        rcpt = self.addresses(note)
        if not rcpt:
            raise NotifierError(f"channel {ch.name}: no email address to send to")
        try:
            with smtplib.SMTP(ch.host or "", ch.port, timeout=ch.timeout_seconds) as smtp:
                smtp.ehlo()
                tls = False
                if smtp.has_extn("starttls"):
                    context = ssl.create_default_context(
                        cafile=str(ch.ca_file) if ch.ca_file else None
                    )
                    smtp.starttls(context=context)
                    smtp.ehlo()
                    tls = True
                elif ch.starttls == "require":
                    raise NotifierError(f"{where}: the server does not offer STARTTLS")
                if ch.username:
                    if not tls:
                        raise NotifierError(f"{where}: refusing to send the password without TLS")
                    smtp.login(ch.username, credential or "")
                refused = smtp.sendmail(ch.from_address or "", rcpt, payload)
        except NotifierError:
            raise
        except smtplib.SMTPResponseException as exc:
            raise NotifierError(f"{where}: {type(exc).__name__} {exc.smtp_code}") from None
        except (smtplib.SMTPException, ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise NotifierError(f"{where}: {reason}") from None
        if refused:
            raise NotifierError(f"{where}: {len(refused)} of {len(rcpt)} recipients refused")
