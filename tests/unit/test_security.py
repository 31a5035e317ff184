"""`payapi security check`'s verdicts (pure): secret search, listeners, modes, ages."""

from __future__ import annotations

import stat

from payapi.ops.security import (
    Check,
    Listener,
    Secret,
    SecretSet,
    SecurityReport,
    age_check,
    defaults_in_use,
    leak_check,
    listener_check,
    mode_problem,
    parse_proc_net_tcp,
    readable_by,
)

S1 = b"s3cr3t-value-0123456789abcdef"
S2 = b"another-secret-XYZ-9876543210"


def _set() -> SecretSet:
    return SecretSet([Secret("client secret of shop", S1), Secret("SAPI service token", S2)])


def test_a_secret_is_found_by_label_and_never_shown() -> None:
    secrets = _set()
    assert secrets.found_in(b"log line " + S1 + b" end") == ["client secret of shop"]
    assert secrets.found_in(b"nothing here") == []
    assert S1.decode() not in repr(secrets) and S1.decode() not in repr(list(secrets))
    assert str(next(iter(secrets))) == "client secret of shop"


def test_a_secret_split_across_chunks_is_found() -> None:
    data = b"x" * 1000 + S2 + b"y" * 1000
    chunks = [data[i : i + 7] for i in range(0, len(data), 7)]
    assert _set().scan(chunks) == ["SAPI service token"]
    assert _set().scan([b"a" * 10, b"b" * 10]) == []


def test_short_values_are_not_searched_for_and_duplicates_keep_the_first_label() -> None:
    s = SecretSet([Secret("tiny", b"abc"), Secret("first", S1), Secret("second", S1)])
    assert len(s) == 1
    assert s.found_in(S1) == ["first"]


def test_defaults_are_compared_exactly() -> None:
    s = SecretSet([Secret("client secret of demo", b"test-client-secret"), *list(_set())])
    assert defaults_in_use(s) == ["client secret of demo"]
    assert defaults_in_use(_set()) == []
    assert s.equals(S1) == ["client secret of shop"]
    assert s.equals(S1 + b"x") == []


def test_leak_verdicts_name_places_not_values() -> None:
    ok = leak_check("secrets.logs", "the log files", {}, 3, "files")
    assert ok.ok and "3 files" in ok.detail
    bad = leak_check(
        "secrets.logs", "the log files", {"/x/eapi.log": ["SAPI service token"]}, 3, "files"
    )
    assert not bad.ok and "/x/eapi.log (SAPI service token)" in bad.detail
    many = {f"/x/{i}.log": ["a"] for i in range(8)}
    assert "and 3 more" in leak_check("n", "w", many, 8, "files").detail


def test_a_report_passes_only_when_every_check_does() -> None:
    assert SecurityReport((Check("a", True, ""), Check("b", True, ""))).exit_code == 0
    failed = SecurityReport((Check("a", True, ""), Check("b", False, "why")))
    assert failed.exit_code == 1 and failed.to_json()["failed"] == ["b"]
    assert SecurityReport(()).ok is False


PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 222 1
   2: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 333 1
"""
PROC_NET_TCP6 = """\
  sl  local_address                         remote_address    st tx_queue rx_queue ... inode
   0: 00000000000000000000000001000000:1F91 0000:0000 0A 00000000:00000000 00:0 0 0 0 444 1
   1: 00000000000000000000000000000000:1F92 0000:0000 0A 00000000:00000000 00:0 0 0 0 555 1
"""


def test_proc_net_tcp_is_parsed_into_listeners() -> None:
    v4 = parse_proc_net_tcp(PROC_NET_TCP)
    assert v4 == [Listener("127.0.0.1", 8080, 111), Listener("0.0.0.0", 22, 222)]
    v6 = parse_proc_net_tcp(PROC_NET_TCP6)
    assert v6 == [Listener("::1", 8081, 444), Listener("::", 8082, 555)]
    assert v6[1].every_interface and not v6[0].every_interface
    assert str(v6[0]) == "[::1]:8081"


def test_listeners_must_be_on_the_configured_interface() -> None:
    loop = frozenset({"127.0.0.1"})
    ok = listener_check({"eapi": [Listener("127.0.0.1", 8080, 1)]}, {"eapi": loop})
    assert ok.ok and "eapi 127.0.0.1:8080" in ok.detail
    wide = listener_check({"eapi": [Listener("0.0.0.0", 8080, 1)]}, {"eapi": loop})
    assert not wide.ok and "every interface" in wide.detail
    other = listener_check({"eapi": [Listener("10.1.2.3", 9000, 2)]}, {"eapi": loop})
    assert not other.ok and "10.1.2.3:9000" in other.detail
    assert listener_check({}, {"eapi": loop}).ok


def test_credential_files_and_readability() -> None:
    assert mode_problem("key", stat.S_IFREG | 0o600) is None
    assert mode_problem("key", stat.S_IFREG | 0o400) is None
    problem = mode_problem("key", stat.S_IFREG | 0o640)
    assert problem is not None and "0640" in problem
    assert readable_by(0o600, owner=10, group=10, uid=10, gids=[10]) is True
    assert readable_by(0o600, owner=0, group=20, uid=10, gids=[20]) is False
    assert readable_by(0o640, owner=0, group=20, uid=10, gids=[20]) is True
    assert readable_by(0o604, owner=0, group=0, uid=10, gids=[10]) is True


def test_stale_credentials_only_with_a_rotation_period() -> None:
    ages = {"host/a": 10.0, "user/admin": 400.0}
    assert age_check(ages, None) == []
    assert age_check(ages, 90) == ["user/admin (400 days)"]
