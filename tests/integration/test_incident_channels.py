"""Incident channels against real receivers on loopback: an SMTP server (aiosmtpd, plain
and with STARTTLS + AUTH), a Slack-compatible webhook receiver, the file outbox, and the
fallback from a stopped SMTP server to the next channel. No secret in any output."""

from __future__ import annotations

import email
import email.policy
import hashlib
import logging
from pathlib import Path

import pytest

from payapi.core.plan import load_plan
from payapi.core.settings import IncidentChannelSettings, IncidentSettings, Settings
from payapi.incident.notify import (
    DrillMarkMissing,
    Message,
    Recipient,
    deliver,
    reached,
)
from payapi.servers.procs import free_port
from tests.integration.notify_servers import smtp_server, webhook_server

PASSWORD = "smtp-Pa55-word-7f3c"
HOOK_PATH = "/services/T000/B000/XXXXsecretXXXX"
PLAN = load_plan()
MSG = Message(
    "DISASTER RECOVERY INITIATED: INC-20250101-001 - db down",
    "DISASTER RECOVERY INITIATED: INC-20250101-001 - db down\n\nImpact: payments fail\n",
    drill=False,
)
WHO = [Recipient("dr-coordinator", "Ada Admin", "ada@example.com")]


def settings_with(tmp_path: Path, *channels: IncidentChannelSettings) -> Settings:
    return Settings(
        config_path=tmp_path / "payapi.toml", incident=IncidentSettings(channels=list(channels))
    )


def vault(values: dict[str, str]):  # type: ignore[no-untyped-def]
    return values.get


def scan(tmp_path: Path, text: str, *secrets: str) -> None:
    blobs = [text] + [p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file()]
    for blob in blobs:
        for s in secrets:
            assert s not in blob


def test_the_default_channel_is_a_file_outbox_one_file_per_message(tmp_path: Path) -> None:
    s = Settings(config_path=tmp_path / "payapi.toml")
    results = deliver(s, PLAN, MSG, WHO, secret=vault({}))
    assert [(r.channel, r.kind, r.role, r.ok, r.fallback) for r in results] == [
        ("outbox", "file", "dr-coordinator", True, False)
    ]
    files = list((tmp_path / "outbox").iterdir())
    assert len(files) == 1
    assert hashlib.sha256(files[0].read_bytes()).hexdigest() == results[0].sha256
    text = files[0].read_text()
    assert "Subject: DISASTER RECOVERY INITIATED" in text and "Impact: payments fail" in text
    deliver(s, PLAN, MSG, WHO, secret=vault({}))
    assert len(list((tmp_path / "outbox").iterdir())) == 2


def test_smtp_plain_server_receives_the_message(tmp_path: Path) -> None:
    with smtp_server() as (port, box):
        ch = IncidentChannelSettings(
            name="email",
            kind="smtp",
            host="127.0.0.1",
            port=port,
            from_address="payapi@example.com",
            to=["dr-team@example.com"],
        )
        results = deliver(settings_with(tmp_path, ch), PLAN, MSG, WHO, secret=vault({}))
    assert [r.ok for r in results] == [True], results
    (got,) = box.messages
    assert got["to"] == ["dr-team@example.com", "ada@example.com"] and not got["tls"]
    parsed = email.message_from_bytes(got["data"], policy=email.policy.default)
    assert parsed["Subject"] == MSG.subject
    assert "Impact: payments fail" in parsed.get_content()
    assert hashlib.sha256(got["data"]).hexdigest() == results[0].sha256


def test_smtp_uses_starttls_when_offered_and_logs_in_over_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with smtp_server(tls_folder=tmp_path, password=PASSWORD) as (port, box):
        ch = IncidentChannelSettings(
            name="email",
            kind="smtp",
            host="127.0.0.1",
            port=port,
            from_address="payapi@example.com",
            username="payapi",
            credential="payment-system/incident/smtp-password",
            ca_file=tmp_path / "smtp.crt",
            starttls="require",
        )
        secret = vault({"payment-system/incident/smtp-password": PASSWORD})
        results = deliver(settings_with(tmp_path, ch), PLAN, MSG, WHO, secret=secret)
    assert [r.ok for r in results] == [True], results
    assert box.messages[0]["tls"] is True
    assert box.logins and box.logins[0][0] == "payapi"
    scan(tmp_path, caplog.text + repr(results), PASSWORD)


def test_smtp_refuses_to_send_a_password_without_tls(tmp_path: Path) -> None:
    with smtp_server() as (port, box):
        ch = IncidentChannelSettings(
            name="email",
            kind="smtp",
            host="127.0.0.1",
            port=port,
            from_address="payapi@example.com",
            username="payapi",
            credential="v/smtp",
        )
        results = deliver(
            settings_with(tmp_path, ch), PLAN, MSG, WHO, secret=vault({"v/smtp": PASSWORD})
        )
    assert not reached(results) and "without TLS" in (results[0].error or "")
    assert box.messages == []


def test_slack_webhook_receives_the_text_json(tmp_path: Path) -> None:
    with webhook_server() as (base, got):
        url = base + HOOK_PATH
        ch = IncidentChannelSettings(name="slack", kind="slack", credential="v/slack-url")
        results = deliver(
            settings_with(tmp_path, ch), PLAN, MSG, WHO, secret=vault({"v/slack-url": url})
        )
    assert [r.ok for r in results] == [True], results
    (post,) = got.posts
    assert post["path"] == HOOK_PATH and post["content_type"] == "application/json"
    assert post["json"] == {"text": MSG.body}


def test_generic_webhook_gets_subject_body_drill(tmp_path: Path) -> None:
    drill = Message("[DRILL] DR STATUS UPDATE: X", "[DRILL] DR STATUS UPDATE: X\n\nok\n", True)
    sms = [Recipient("dr-coordinator", "Ada", "+15550100")]
    with webhook_server() as (base, got):
        ch = IncidentChannelSettings(name="sms", kind="webhook", credential="v/sms")
        results = deliver(
            settings_with(tmp_path, ch), PLAN, drill, sms, secret=vault({"v/sms": base + "/sms"})
        )
    assert reached(results)
    body = got.posts[0]["json"]
    assert body["subject"] == drill.subject and body["body"] == drill.body and body["drill"]
    assert body["to"] == [{"role": "dr-coordinator", "contact": "+15550100"}]


def test_a_drill_message_without_its_mark_is_never_sent(tmp_path: Path) -> None:
    with pytest.raises(DrillMarkMissing):
        deliver(settings_with(tmp_path), PLAN, Message("DR STATUS", "DR STATUS", True), WHO)
    assert not (tmp_path / "outbox").exists()


def test_stopped_smtp_falls_back_to_the_backup_channel_and_both_are_recorded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # httpx logs request URLs at INFO: they must be redacted
    dead = free_port()  # nothing listens there: the SMTP server is stopped
    with webhook_server() as (base, got):
        url = base + HOOK_PATH
        smtp = IncidentChannelSettings(
            name="email",
            kind="smtp",
            host="127.0.0.1",
            port=dead,
            timeout_seconds=2,
            from_address="payapi@example.com",
            to=["dr-team@example.com"],
        )
        slack = IncidentChannelSettings(
            name="slack", kind="slack", tier="backup", order=1, credential="v/slack"
        )
        outbox = IncidentChannelSettings(name="outbox", kind="file", tier="backup", order=2)
        s = settings_with(tmp_path, outbox, smtp, slack)
        results = deliver(s, PLAN, MSG, WHO, secret=vault({"v/slack": url}))
    assert [(r.channel, r.ok, r.fallback) for r in results] == [
        ("email", False, False),
        ("slack", True, True),
    ]
    assert results[0].error == f"smtp 127.0.0.1:{dead}: Connection refused"
    assert results[0].sha256 and results[1].sha256
    assert len(got.posts) == 1
    assert not (tmp_path / "outbox").exists()  # the first backup that worked was enough
    scan(tmp_path, caplog.text + repr(results), HOOK_PATH)


def test_a_5xx_webhook_fails_over_to_the_next_backup(tmp_path: Path) -> None:
    dead = free_port()
    with webhook_server() as (base, got):
        got.status = 503
        smtp = IncidentChannelSettings(
            name="email", kind="smtp", host="127.0.0.1", port=dead, from_address="p@example.com"
        )
        chat = IncidentChannelSettings(
            name="chat", kind="slack", tier="backup", order=1, credential="v/chat"
        )
        outbox = IncidentChannelSettings(name="outbox", kind="file", tier="backup", order=2)
        s = settings_with(tmp_path, smtp, chat, outbox)
        results = deliver(s, PLAN, MSG, WHO, secret=vault({"v/chat": base + HOOK_PATH}))
    assert [(r.channel, r.ok, r.fallback, r.error) for r in results] == [
        ("email", False, False, results[0].error),
        ("chat", False, True, "channel chat: HTTP 503"),
        ("outbox", True, True, None),
    ]
    assert reached(results)
    scan(tmp_path, repr(results), HOOK_PATH)


def test_a_message_that_reached_no_channel_returns_only_failures(tmp_path: Path) -> None:
    ch = IncidentChannelSettings(name="slack", kind="slack", credential="v/missing")
    results = deliver(settings_with(tmp_path, ch), PLAN, MSG, WHO, secret=vault({}))
    assert results and not reached(results)
    assert results[0].error == "channel slack: credential v/missing not readable"


def test_a_file_channel_whose_folder_is_a_file_fails_over_to_the_backup(tmp_path: Path) -> None:
    # What the full-exercise drill does to the lab's primary channel: the write and the
    # clean-up of its temporary file both fail, and the backup channel must still be tried.
    down = tmp_path / "primary"
    down.write_text("down")
    primary = IncidentChannelSettings(name="chat", kind="file", dir=down)
    backup = IncidentChannelSettings(name="other", kind="file", tier="backup", dir=tmp_path / "b")
    results = deliver(settings_with(tmp_path, primary, backup), PLAN, MSG, WHO, secret=vault({}))
    assert [(r.channel, r.ok, r.fallback) for r in results] == [
        ("chat", False, False),
        ("other", True, True),
    ]
    assert results[0].error is not None and "cannot write" in results[0].error
    assert len(list((tmp_path / "b").iterdir())) == 1
