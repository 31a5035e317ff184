"""Which vault a client calls, and when a failure moves on to the next one."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from payapi.core.settings import VaultSettings, load_settings
from payapi.vault.client import FAILBACK_SECONDS, VaultClient, attempt_order, should_try_next


def test_the_vault_that_answered_last_goes_first_then_the_configured_order() -> None:
    assert attempt_order(1, 0, 0.0) == [0]
    assert attempt_order(3, 0, 0.0) == [0, 1, 2]
    assert attempt_order(3, 2, 1.0) == [2, 0, 1]
    # After a while the active (first) vault is tried first again.
    assert attempt_order(3, 2, FAILBACK_SECONDS) == [0, 1, 2]
    assert attempt_order(2, 5, 0.0) == [0, 1]  # an index that no longer exists


def _request() -> httpx.Request:
    return httpx.Request("GET", "http://vault")


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH"])
def test_nothing_was_sent_or_the_vault_said_503_moves_on(method: str) -> None:
    assert should_try_next(method, error=httpx.ConnectError("refused"), status=None)
    assert should_try_next(method, error=httpx.ConnectTimeout("slow"), status=None)
    assert should_try_next(method, error=None, status=503)


def test_an_answer_lost_after_sending_moves_on_for_reads_only() -> None:
    lost = httpx.ReadTimeout("no answer", request=_request())
    assert should_try_next("GET", error=lost, status=None)
    assert should_try_next("head", error=lost, status=None)
    # The vault may have done it: a write is not repeated elsewhere.
    assert not should_try_next("POST", error=lost, status=None)
    assert not should_try_next("PUT", error=httpx.RemoteProtocolError("eof"), status=None)


@pytest.mark.parametrize("status", [200, 201, 401, 403, 404, 409, 422, 500])
def test_other_answers_are_final(status: int) -> None:
    assert not should_try_next("POST", error=None, status=status)
    assert not should_try_next("GET", error=None, status=status)


def test_settings_list_url_then_urls() -> None:
    assert VaultSettings(port=8200).endpoints() == ["http://127.0.0.1:8200"]
    assert VaultSettings(url="http://a:1/").endpoints() == ["http://a:1"]
    both = VaultSettings(url="http://a:1", urls=["http://b:2", "http://a:1/", " "])
    assert both.endpoints() == ["http://a:1", "http://b:2"]
    assert VaultSettings(urls=["http://b:2", "http://c:3"]).endpoints() == [
        "http://b:2",
        "http://c:3",
    ]


def test_settings_read_urls_from_toml(tmp_path: Path) -> None:
    conf = tmp_path / "payapi.toml"
    conf.write_text('[vault]\nurl = "http://a:1"\nurls = ["http://b:2"]\n')
    assert load_settings(conf).vault.endpoints() == ["http://a:1", "http://b:2"]


async def test_a_client_takes_one_url_or_several() -> None:
    async with VaultClient("http://a:1/", "acc", "admin", SecretStr("k")) as one:
        assert one.urls == ["http://a:1"]
        assert one.url == one.current_url == "http://a:1"
    async with VaultClient(["http://a:1", "http://b:2"], "acc", "admin", SecretStr("k")) as two:
        assert two.urls == ["http://a:1", "http://b:2"]
        assert two.url == "http://a:1"
    with pytest.raises(ValueError, match="at least one"):
        VaultClient([], "acc", "admin", SecretStr("k"))
