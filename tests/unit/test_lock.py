"""The purge/backup lock: a lease, put-if-absent, dead holders broken at once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from payapi.backup.lock import (
    Holder,
    LocalFileLockStore,
    Lock,
    LockError,
    LockHeld,
    LockLost,
    LockStore,
    MemoryLockStore,
    ObjectLockStore,
    lock_name,
    pid_alive,
)

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self, start: datetime = T0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += timedelta(seconds=seconds)


@pytest.fixture(params=["memory", "file", "object"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> LockStore:
    if request.param == "memory":
        return MemoryLockStore()
    if request.param == "object":
        from payapi.systems.objectstore.file import FileStore

        return ObjectLockStore(FileStore(tmp_path / "repo"), "locks/")
    return LocalFileLockStore(tmp_path / "locks")


def lock(store: LockStore, clock: Clock, *, pid: int, alive: set[int] | None = None) -> Lock:
    live = alive if alive is not None else {pid}
    return Lock(
        store,
        clock=clock,
        sleep=clock.sleep,
        is_alive=lambda p, _since: p in live,
        host="host-a",
        pid=pid,
    )


def test_acquire_and_release(store: LockStore) -> None:
    clock = Clock()
    a = lock(store, clock, pid=100)
    held = a.acquire("component-database", "retention purge", timedelta(minutes=5))
    assert (held.host, held.pid, held.label) == ("host-a", 100, "retention purge")
    assert held.started_at == T0 and held.lease_until == T0 + timedelta(minutes=5)
    assert a.inspect("component-database") == held
    assert a.release("component-database", held)
    assert a.inspect("component-database") is None
    again = a.acquire("component-database", "backup")
    assert again.token != held.token


def test_a_second_acquirer_is_blocked_while_the_holder_lives(store: LockStore) -> None:
    clock = Clock()
    alive = {100, 200}
    first = lock(store, clock, pid=100, alive=alive).acquire("component-database", "backup")
    second = lock(store, clock, pid=200, alive=alive)
    with pytest.raises(LockHeld) as exc:
        second.acquire("component-database", "retention purge")
    assert exc.value.holder == first
    assert "pid 100 on host-a (backup)" in str(exc.value)
    # Other components are independent.
    second.acquire("component-vault", "retention purge")


def test_a_waiting_acquirer_gets_the_lock_when_it_is_released(tmp_path: Path) -> None:
    store = LocalFileLockStore(tmp_path / "locks")
    holder = Lock(store, pid=1, host="elsewhere")  # another host: never judged dead here
    held = holder.acquire("component-database", "backup", timedelta(minutes=5))
    waiter = Lock(store)
    timer = threading.Timer(0.3, holder.release, ("component-database", held))
    timer.start()
    try:
        got = waiter.acquire("component-database", "purge", wait=timedelta(seconds=10), poll=0.05)
    finally:
        timer.cancel()
    assert got.pid == os.getpid()


def test_waiting_gives_up_after_the_wait(store: LockStore) -> None:
    clock = Clock()
    alive = {100, 200}
    lock(store, clock, pid=100, alive=alive).acquire("component-database", "backup")
    with pytest.raises(LockHeld):
        lock(store, clock, pid=200, alive=alive).acquire(
            "component-database", "purge", wait=timedelta(seconds=5), poll=1.0
        )
    assert sum(clock.slept) == pytest.approx(5.0)


def test_a_dead_holder_on_this_host_is_broken_at_once_with_a_log_line(store: LockStore) -> None:
    clock = Clock()
    dead = lock(store, clock, pid=100, alive={200})
    dead.acquire("component-database", "backup", timedelta(hours=6))
    with capture_logs() as logs:
        got = lock(store, clock, pid=200, alive={200}).acquire("component-database", "purge")
    assert got.pid == 200
    assert clock.slept == []  # at once, not after the lease
    assert len(logs) == 1
    assert logs[0]["log_level"] == "warning"
    assert logs[0]["event"] == "lock broken"
    assert logs[0]["lock"] == "component-database"
    assert "holder pid 100 on this host (host-a) is dead" in logs[0]["reason"]


def test_a_holder_on_another_host_is_not_judged_by_our_pids(store: LockStore) -> None:
    clock = Clock()
    Lock(store, clock=clock, host="host-b", pid=100).acquire("component-database", "backup")
    with pytest.raises(LockHeld):
        lock(store, clock, pid=200, alive={200}).acquire("component-database", "purge")


def test_an_expired_lease_is_broken(store: LockStore) -> None:
    clock = Clock()
    alive = {100, 200}
    Lock(store, clock=clock, host="host-b", pid=100).acquire(
        "component-database", "backup", timedelta(minutes=1)
    )
    clock.now += timedelta(minutes=1, seconds=1)
    with capture_logs() as logs:
        got = lock(store, clock, pid=200, alive=alive).acquire("component-database", "purge")
    assert got.pid == 200
    assert [entry["event"] for entry in logs] == ["lock broken"]
    assert "lease expired" in logs[0]["reason"]


def test_renew_extends_the_lease_and_a_broken_holder_finds_out(store: LockStore) -> None:
    clock = Clock()
    alive = {100, 200}
    a = lock(store, clock, pid=100, alive=alive)
    held = a.acquire("component-database", "backup", timedelta(minutes=1))
    clock.now += timedelta(seconds=50)
    held = a.renew("component-database", held, timedelta(minutes=1))
    assert held.lease_until == T0 + timedelta(seconds=110)
    clock.now += timedelta(seconds=50)  # still within the renewed lease
    with pytest.raises(LockHeld):
        lock(store, clock, pid=200, alive=alive).acquire("component-database", "purge")
    clock.now += timedelta(minutes=5)  # a's lease runs out; b breaks it
    with capture_logs():
        lock(store, clock, pid=200, alive=alive).acquire("component-database", "purge")
    with pytest.raises(LockLost, match="no longer ours"):
        a.renew("component-database", held)
    with capture_logs() as logs:
        assert not a.release("component-database", held)
    assert logs[0]["event"] == "lock not released: no longer ours"


def test_hold_renews_at_half_lease_and_releases_on_error(store: LockStore) -> None:
    clock = Clock()
    a = lock(store, clock, pid=100)
    with (
        pytest.raises(RuntimeError),
        a.hold("component-vault", "purge", timedelta(minutes=10)) as h,
    ):
        clock.now += timedelta(minutes=4)
        h.renew()
        assert h.holder.lease_until == T0 + timedelta(minutes=10)  # not yet: > half left
        clock.now += timedelta(minutes=2)
        h.renew()
        assert h.holder.lease_until == clock.now + timedelta(minutes=10)
        raise RuntimeError("the purge failed")
    assert a.inspect("component-vault") is None


def test_an_unreadable_record_is_broken_with_a_log_line(store: LockStore) -> None:
    assert store.create("component-database", b"\x00not json")
    with capture_logs() as logs:
        Lock(store).acquire("component-database", "purge")
    assert logs[0]["event"] == "lock broken"
    assert "not a lock record" in logs[0]["reason"]


def test_names_are_checked() -> None:
    with pytest.raises(LockError, match="invalid lock name"):
        Lock(MemoryLockStore()).acquire("../etc/passwd")
    with pytest.raises(LockError, match="positive"):
        Lock(MemoryLockStore()).acquire("x", lease=timedelta(0))
    assert lock_name("database") == "component-database"


def test_holder_records_round_trip_and_reject_garbage() -> None:
    h = Holder("h", 1, T0, T0 + timedelta(minutes=1), "purge", "tok")
    assert Holder.from_bytes(h.to_bytes()) == h
    for bad in (b"[]", b"{}", b'{"host": "h"}', b"\xff"):
        with pytest.raises(ValueError, match="not a lock record"):
            Holder.from_bytes(bad)


# --------------------------------------------------------------------------- real processes


def test_a_real_dead_process_holding_a_file_lock_is_broken_at_once(tmp_path: Path) -> None:
    store = LocalFileLockStore(tmp_path / "locks")
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(child.stdout)
    record = Holder(
        socket.gethostname(),
        dead_pid,
        datetime.now(UTC),
        datetime.now(UTC) + timedelta(hours=1),
        "backup",
        "t",
    )
    assert store.create("component-database", record.to_bytes())
    assert (tmp_path / "locks" / "component-database").is_file()
    with capture_logs() as logs:
        got = Lock(store).acquire("component-database", "purge")
    assert got.pid == os.getpid()
    assert f"holder pid {dead_pid} on this host" in logs[0]["reason"]


def test_pid_alive() -> None:
    assert pid_alive(os.getpid())
    assert pid_alive(os.getpid(), since=datetime.now(UTC))
    assert not pid_alive(0)
    assert not pid_alive(-5)
    # A record written after this process started names this process...
    assert pid_alive(os.getpid(), since=datetime.now(UTC) - timedelta(seconds=1))
    # ...but a record from before the process started names an older process (pid reuse).
    if Path("/proc/self/stat").exists():
        assert not pid_alive(os.getpid(), since=datetime(2000, 1, 1, tzinfo=UTC))


def test_a_zombie_is_dead() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        for _ in range(200):
            if Path(f"/proc/{child.pid}/stat").exists():
                state = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                if state == "Z":
                    break
            threading.Event().wait(0.01)
        else:
            pytest.skip("child did not become a zombie")
        assert not pid_alive(child.pid)
    finally:
        child.wait()


def test_file_store_compare_and_swap(tmp_path: Path) -> None:
    store = LocalFileLockStore(tmp_path / "locks")
    assert store.read("k") is None
    assert store.create("k", b"one")
    assert not store.create("k", b"two")
    assert not store.replace("k", b"two", b"three")
    assert store.replace("k", b"one", b"three")
    assert store.read("k") == b"three"
    assert not store.delete("k", b"one")
    assert store.delete("k", b"three")
    assert store.read("k") is None
    assert sorted(p.name for p in (tmp_path / "locks").iterdir()) == [".guard"]


def test_only_one_of_many_threads_wins(tmp_path: Path) -> None:
    store = LocalFileLockStore(tmp_path / "locks")
    winners: list[int] = []
    barrier = threading.Barrier(8)

    def contend(i: int) -> None:
        barrier.wait()
        try:
            Lock(store, pid=os.getpid(), host="h").acquire("component-database", f"t{i}")
            winners.append(i)
        except LockHeld:
            pass

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
