"""The host-level checks of `payapi security check` (acting; verdicts in
:mod:`payapi.ops.security`): what listens where, and who can read the vault data key.

- ``listeners``: /proc/net/tcp and tcp6 (no new dependency): the sockets on each
  configured port (every server and service of every region) and every other socket the
  processes holding them listen on (their pids from /proc/PID/fd) must be on the
  interface the configuration names; a socket on every interface never is.
- ``data_key``: the vault data key file is 0600 and not readable by the services' users:
  the unprivileged lab user and the users EAPI and SAPI run as (root aside: it reads
  everything), parents' search bits included.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import socket
from pathlib import Path
from urllib.parse import urlsplit

from payapi.core.settings import Settings
from payapi.core.topology import topology_from_settings
from payapi.ops.security import (
    Check,
    Listener,
    listener_check,
    mode_problem,
    parse_proc_net_tcp,
    readable_by,
)

__all__ = ["check_data_key", "check_listeners", "service_pids"]


# --------------------------------------------------------------------------- listeners


def _listeners() -> list[Listener]:
    out: list[Listener] = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            out += parse_proc_net_tcp(Path(name).read_text())
        except OSError:
            continue
    return out


def _socket_owners(inodes: set[int]) -> dict[int, set[int]]:
    """pid → the socket inodes among ``inodes`` it holds (from /proc/PID/fd)."""
    owners: dict[int, set[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inode = int(target[8:-1])
                if inode in inodes:
                    owners.setdefault(int(proc.name), set()).add(inode)
    return owners


def _addresses(host: str) -> frozenset[str]:
    if host in ("localhost", ""):
        return frozenset({"127.0.0.1", "::1"})
    try:
        return frozenset(str(info[4][0]) for info in socket.getaddrinfo(host, None))
    except OSError:
        return frozenset({host})


def _endpoints(settings: Settings) -> list[tuple[str, str, int]]:
    """(component, host, port) of every configured server and service."""
    out: list[tuple[str, str, int]] = []
    for region in topology_from_settings(settings).regions:
        urls: list[tuple[str, str | None]] = [(m.name, m.url) for m in region.members]
        urls += [(f"{m.name} patroni", m.patroni_url) for m in region.members if m.patroni_url]
        urls += [(f"{region.name} eapi", region.eapi.url), (f"{region.name} sapi", region.sapi.url)]
        for name, url in urls:
            if not url:
                continue
            try:
                parts = urlsplit(url)
                port = parts.port
            except ValueError:
                continue
            if parts.hostname and port:
                out.append((name, parts.hostname, port))
    return out


def service_pids(settings: Settings) -> dict[str, set[int]]:
    """component → the local pids listening on its configured port."""
    endpoints = _endpoints(settings)
    listening = _listeners()
    ports = {port for _, _, port in endpoints}
    wanted = {s.inode for s in listening if s.port in ports}
    owners = _socket_owners(wanted)
    by_inode = {i: pid for pid, inodes in owners.items() for i in inodes}
    out: dict[str, set[int]] = {}
    for name, _, port in endpoints:
        pids = {by_inode[s.inode] for s in listening if s.port == port and s.inode in by_inode}
        out.setdefault(name, set()).update(pids)
    return out


def check_listeners(settings: Settings) -> Check:
    endpoints = _endpoints(settings)
    listening = _listeners()
    ports = {port for _, _, port in endpoints}
    on_ports = {s.inode for s in listening if s.port in ports}
    owners = _socket_owners({s.inode for s in listening})
    pid_of = {i: pid for pid, inodes in owners.items() for i in inodes}
    found: dict[str, list[Listener]] = {}
    expected: dict[str, frozenset[str]] = {}
    for name, host, port in endpoints:
        expected[name] = expected.get(name, frozenset()) | _addresses(host)
        mine = [s for s in listening if s.port == port]
        pids = {pid_of[s.inode] for s in mine if s.inode in pid_of and s.inode in on_ports}
        mine += [s for s in listening if pid_of.get(s.inode) in pids and s not in mine]
        if mine:
            found.setdefault(name, []).extend(mine)
    return listener_check(found, expected)


def _uid_of(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[2])  # the effective uid
    except (OSError, ValueError, IndexError):
        return None
    return None


def _service_users(settings: Settings) -> dict[int, str]:
    """uid → name of the users the services run as (root aside: it reads everything)."""
    from payapi.servers.procs import LAB_USER

    users: dict[int, str] = {}
    with contextlib.suppress(KeyError):
        users[pwd.getpwnam(LAB_USER).pw_uid] = LAB_USER
    for name, pids in service_pids(settings).items():
        if not name.endswith(("eapi", "sapi")):
            continue
        for pid in pids:
            uid = _uid_of(pid)
            if uid:
                users.setdefault(uid, _user_name(uid))
    return users


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _readable(path: Path, uid: int) -> bool:
    try:
        user = pwd.getpwuid(uid)
        gids = os.getgrouplist(user.pw_name, user.pw_gid)
    except KeyError:
        gids = []
    for parent in reversed(path.parents):
        st = parent.stat()
        mode = st.st_mode
        if uid == st.st_uid:
            ok = bool(mode & 0o100)
        elif st.st_gid in gids:
            ok = bool(mode & 0o010)
        else:
            ok = bool(mode & 0o001)
        if not ok:
            return False
    st = path.stat()
    return readable_by(st.st_mode, st.st_uid, st.st_gid, uid, gids)


def check_data_key(settings: Settings) -> Check:
    path = settings.vault.data_key_file
    if path is None:
        return Check(
            "data_key", True, f"no file: the key comes from ${settings.vault.data_key_env}"
        )
    try:
        st = path.stat()
    except OSError:
        return Check("data_key", False, f"{path} is missing")
    problems = [p for p in [mode_problem(f"the vault data key file {path}", st.st_mode)] if p]
    users = _service_users(settings)
    readers = sorted(name for uid, name in users.items() if _readable(path, uid))
    if readers:
        problems.append(f"{path} is readable by the services' user {', '.join(readers)}")
    if problems:
        return Check("data_key", False, "; ".join(problems))
    who = ", ".join(sorted(users.values())) or "no unprivileged service user found"
    return Check(
        "data_key", True, f"{path} is 0600, owned by {_user_name(st.st_uid)}; not readable by {who}"
    )
