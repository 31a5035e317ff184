"""Running and observing local processes: the unprivileged user, ports, pid files, liveness.

PostgreSQL refuses to run as root and these machines run as root, so servers that need it
run as an unprivileged system user (``LAB_USER``). Nothing here is specific to one server.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from payapi.core.errors import PayapiError

LAB_USER = "payapi-lab"


class ServerError(PayapiError):
    """Starting, stopping or observing a local process failed; one line for the operator."""


class ToolError(ServerError):
    """A tool run as a child failed, timed out or could not be started; its last words."""


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


# Two payapi processes on a fresh machine (two pytest workers, two commands) would both
# find the user missing and both run useradd: one fails ("already exists"), and one has
# been seen to chown its folder to an owner that initdb then could not use. The check
# and the creation hold one lock, so a process reads the user only once it is complete.
_LAB_USER_LOCK = "payapi-lab-user.lock"


@contextlib.contextmanager
def _lab_user_lock() -> Iterator[None]:
    folder = Path("/run/lock") if Path("/run/lock").is_dir() else Path(tempfile.gettempdir())
    try:
        fd = os.open(folder / _LAB_USER_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise ServerError(f"cannot lock {folder / _LAB_USER_LOCK}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def ensure_lab_user() -> pwd.struct_passwd:
    """Return the unprivileged user servers run as, creating it (as root) if needed."""
    try:
        return pwd.getpwnam(LAB_USER)
    except KeyError:
        pass
    with _lab_user_lock():
        try:
            return pwd.getpwnam(LAB_USER)  # created while we waited for the lock
        except KeyError:
            pass
        try:
            subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    LAB_USER,
                ],
                check=True,
                capture_output=True,
                text=True,
            )
        except (OSError, subprocess.CalledProcessError) as exc:
            raise ServerError(f"cannot create the unprivileged user {LAB_USER!r}: {exc}") from None
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
    owns without being able to list its parents. Raises ServerError naming the folder when
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
            raise ServerError(
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


def _boot_time() -> float | None:
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def _proc_stat(pid: int) -> tuple[str, float] | None:
    """(state, start time as a UNIX timestamp) from /proc, or None where there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces and ')'.
    fields = text[text.rfind(")") + 2 :].split()
    boot = _boot_time()
    if len(fields) < 20 or boot is None:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return fields[0], boot + int(fields[19]) / ticks


def pid_alive(pid: int, since: datetime | None = None) -> bool:
    """Whether process ``pid`` of this host is alive (and, with ``since``, is still the
    process that was there at that time).

    A zombie is dead. Where /proc tells, a process that started after ``since`` (with two
    seconds of slack) is a new process that reused the pid, so the one we knew is dead.
    The one liveness check of payapi: locks, pid files and postmaster.pid all use it.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    stat = _proc_stat(pid)
    if stat is None:
        return True
    state, started = stat
    if state == "Z":
        return False
    return not (since is not None and started > since.timestamp() + 2.0)


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
    unprivileged: bool = False,
) -> int:
    """Start a detached process in its own session (so a group kill reaches its children).

    With ``unprivileged`` (and when we are root) the process itself runs as ``LAB_USER``:
    unlike a ``runuser`` prefix, the pid recorded is then the server's own, so a kill -9
    of that pid is a kill of the server.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    ids: dict[str, Any] = {}
    if unprivileged and is_root():
        user = ensure_lab_user()
        ids = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        if not log.exists():
            log.touch()
        os.chown(log, user.pw_uid, user.pw_gid)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
            **ids,
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
    raise ServerError(f"timed out after {timeout:.0f}s waiting for {what}")


def wait_started(
    pid: int, healthy: Callable[[], bool], *, timeout: float, what: str, log: Path
) -> None:
    """Wait until a just-spawned server ``pid`` answers ``healthy``; a server that exits
    first, or never answers, is an error naming its log (and a hung one is stopped)."""
    try:
        wait_for(lambda: healthy() or not pid_alive(pid), timeout=timeout, what=f"{what} health")
    except ServerError:
        terminate(pid)
        raise
    if not pid_alive(pid):
        raise ServerError(f"{what} exited at start; see {log}")


# --------------------------------------------------------------------------- tools


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Ask the kernel to SIGTERM this child when its parent dies (Linux)."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


class Child:
    """A tool run as a child: stderr to an anonymous temp file (nothing is left behind
    even if we are killed), the child killed and reaped on exit."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        stdout: int | IO[bytes] | None = subprocess.PIPE,
        stdin: int | IO[bytes] | None = subprocess.DEVNULL,
        env: dict[str, str] | None = None,
        what: str = "",
    ) -> None:
        self.what = what or Path(argv[0]).name
        self._err = tempfile.TemporaryFile(prefix="payapi-")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            list(argv),
            stdout=stdout,
            stdin=stdin,
            stderr=self._err,
            env=env,
            preexec_fn=_die_with_parent,
        )

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stdin):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._err.close()

    def stderr_tail(self, lines: int = 3) -> str:
        self._err.seek(0)
        text = self._err.read()[-8192:].decode("utf-8", "replace").strip().splitlines()
        return " / ".join(line.strip() for line in text[-lines:])

    def finish(self, timeout: float | None = None) -> None:
        """Wait for the exit; ToolError with the tool's last words if it failed."""
        rc = self.proc.wait(timeout=timeout)
        if rc != 0:
            tail = self.stderr_tail() or f"exit status {rc}"
            raise ToolError(f"{self.what} failed: {tail}")


def run_tool(argv: Sequence[str], *, what: str = "", timeout: float = 600) -> str:
    """Run a short tool to completion; its stdout, or ToolError with its stderr."""
    try:
        res = subprocess.run(
            list(argv), capture_output=True, text=True, check=False, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise ToolError(f"{what or Path(argv[0]).name} timed out after {timeout:.0f}s") from None
    except OSError as exc:
        raise ToolError(f"cannot run {argv[0]}: {exc.strerror}") from None
    if res.returncode != 0:
        lines = (res.stderr or res.stdout).strip().splitlines()
        raise ToolError(
            f"{what or Path(argv[0]).name} failed: {lines[-1] if lines else res.returncode}"
        )
    return res.stdout
