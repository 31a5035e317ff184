"""Small process helpers shared by the lab and the test fixtures.

PostgreSQL refuses to run as root and these machines run as root, so servers that need it
run as an unprivileged system user (``LAB_USER``). Nothing here is specific to one server.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

LAB_USER = "payapi-lab"


class LabError(Exception):
    """A lab operation failed; the message is one line for the operator."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def is_root() -> bool:
    return os.geteuid() == 0


def ensure_lab_user() -> pwd.struct_passwd:
    """Return the unprivileged user servers run as, creating it (as root) if needed."""
    try:
        return pwd.getpwnam(LAB_USER)
    except KeyError:
        pass
    try:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", LAB_USER],
            check=True,
            capture_output=True,
            text=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        raise LabError(f"cannot create the unprivileged user {LAB_USER!r}: {exc}") from None
    return pwd.getpwnam(LAB_USER)


def as_lab_user(argv: Sequence[str]) -> list[str]:
    """Prefix ``argv`` so that it runs as the unprivileged user when we are root."""
    if not is_root():
        return list(argv)
    ensure_lab_user()
    return ["runuser", "-u", LAB_USER, "--", *argv]


def _traversable_by(path: Path, uid: int, gid: int) -> bool:
    st = path.stat()
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def make_reachable(path: Path, note: Callable[[str], None] | None = None) -> None:
    """Let the lab user traverse every parent of ``path`` (adds o+x where missing).

    Only the execute (search) bit is added, never read: the user can reach the folder it
    owns without being able to list its parents. Raises LabError naming the folder when
    a parent cannot be changed.
    """
    if not is_root():
        return
    user = ensure_lab_user()
    for parent in reversed(path.resolve().parents):
        if _traversable_by(parent, user.pw_uid, user.pw_gid):
            continue
        try:
            parent.chmod(parent.stat().st_mode | stat.S_IXOTH)
        except OSError as exc:
            raise LabError(
                f"user {LAB_USER} cannot reach {path}: {parent} is not traversable "
                f"and cannot be changed ({exc.strerror})"
            ) from None
        if note:
            note(f"made {parent} traversable (o+x) so that {LAB_USER} can reach {path}")


def chown_to_lab_user(path: Path) -> None:
    if not is_root():
        return
    user = ensure_lab_user()
    os.chown(path, user.pw_uid, user.pw_gid)
    for root, dirs, files in os.walk(path):
        os.chown(root, user.pw_uid, user.pw_gid)
        for name in dirs + files:
            with contextlib.suppress(FileNotFoundError):
                os.lchown(os.path.join(root, name), user.pw_uid, user.pw_gid)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child counts as dead.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def spawn(
    argv: Sequence[str],
    *,
    log: Path,
    pidfile: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start a detached process in its own session (so a group kill reaches its children)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    tmp = pidfile.with_suffix(".tmp")
    tmp.write_text(f"{proc.pid}\n")
    tmp.replace(pidfile)
    return proc.pid


def terminate(pid: int, *, timeout: float = 15.0, group: bool = True) -> None:
    """SIGTERM the process (group), then SIGKILL what is left after ``timeout``."""

    def send(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)

    if not pid_alive(pid):
        return
    send(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    send(signal.SIGKILL)
    for _ in range(100):
        _reap(pid)
        if not pid_alive(pid):
            return
        time.sleep(0.05)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def wait_for(
    check: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise LabError(f"timed out after {timeout:.0f}s waiting for {what}")
