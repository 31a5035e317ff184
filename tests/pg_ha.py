"""A real Patroni cluster on etcd for the tests: a synchronous pair (the primary region) and,
optionally, a Patroni standby cluster streaming from it (the DR region), each with its own
etcd, all from the pip wheels and on free loopback ports.

Module-scoped fixtures build one with :func:`ha_cluster`; :meth:`HaCluster.regions_toml`
writes the ``[regions.*]`` tables that point payapi's configuration at it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from payapi.servers.etcd import EtcdServer
from payapi.servers.patroni import PatroniMember, StandbyOf
from payapi.servers.procs import free_port, wait_for
from payapi.systems.patroni import PatroniClient, PatroniError

SCOPE = "payapi-test"
DR_SCOPE = "payapi-test-dr"


def roles(client: PatroniClient) -> dict[str, str]:
    """Member name → Patroni role, for the members that are up (empty when unreachable)."""
    try:
        view = client.cluster()
    except PatroniError:
        return {}
    return {m.name: m.role for m in view.members if m.state in ("running", "streaming")}


@dataclass
class HaCluster:
    base: Path
    etcds: list[EtcdServer] = field(default_factory=list)
    members: list[PatroniMember] = field(default_factory=list)  # the primary region's pair
    dr: list[PatroniMember] = field(default_factory=list)  # the DR standby cluster
    parameters: dict[str, str] = field(default_factory=dict)  # postgresql.conf, every member

    def client(self) -> PatroniClient:
        return PatroniClient([m.rest_url for m in self.members])

    def dr_client(self) -> PatroniClient:
        return PatroniClient([m.rest_url for m in self.dr])

    def member(self, name: str) -> PatroniMember:
        return next(m for m in [*self.members, *self.dr] if m.name == name)

    def wait_pair(self, timeout: float = 60) -> None:
        """Until the pair is a leader and a synchronous standby again."""
        client = self.client()
        wait_for(
            lambda: sorted(roles(client).values()) == ["leader", "sync_standby"],
            timeout=timeout,
            what="leader and sync standby",
            interval=0.3,
        )

    def start_dr(self, name: str = "dr1") -> PatroniMember:
        """A standby cluster (its own etcd) streaming from the pair; waits for its leader."""
        dr_etcd = EtcdServer(self.base / f"{name}-etcd", free_port(), free_port())
        dr_etcd.start()
        self.etcds.append(dr_etcd)
        hosts = tuple(("127.0.0.1", m.pg_port) for m in self.members)
        dr = PatroniMember(
            self.base / name,
            DR_SCOPE,
            name,
            free_port(),
            free_port(),
            dr_etcd.url,
            parameters=self.parameters,
            standby_of=StandbyOf(hosts),
        )
        self.dr.append(dr)
        dr.start()
        return dr

    def wait_dr(self, timeout: float = 90) -> None:
        client = self.dr_client()
        names = {m.name for m in self.dr}
        wait_for(
            lambda: (
                set(roles(client).values()) == {"standby_leader"} and set(roles(client)) <= names
            ),
            timeout=timeout,
            what="the DR standby leader",
            interval=0.3,
        )

    def regions_toml(self) -> str:
        """``[regions.primary]`` (the pair) and, with a DR cluster, ``[regions.dr]``."""
        lines: list[str] = []
        for region, role, members in (
            ("primary", "primary", self.members),
            ("dr", "standby", self.dr),
        ):
            if not members:
                continue
            lines += [f"[regions.{region}]", f'role = "{role}"', ""]
            if region == "dr":
                # As the seed's DR region: SAPI and EAPI configured but scaled to 0.
                lines += ["[regions.dr.sapi]", "replicas = 0", "", "[regions.dr.eapi]"]
                lines += ["replicas = 0", ""]
            for i, m in enumerate(members):
                if region == "dr":
                    member_role = "standby_leader" if i == 0 else "replica"
                else:
                    member_role = "leader" if i == 0 else "sync_standby"
                lines += [
                    f"[[regions.{region}.postgres]]",
                    f'name = "{m.name}"',
                    f'role = "{member_role}"',
                    f'url = "{m.dsn()}"',
                    f'patroni_url = "{m.rest_url}"',
                    "",
                ]
        return "\n".join(lines)

    def stop(self) -> None:
        for m in [*self.dr, *self.members]:
            with contextlib.suppress(Exception):
                m.stop()
        for e in self.etcds:
            with contextlib.suppress(Exception):
                e.stop()


@contextlib.contextmanager
def ha_cluster(
    base: Path, *, dr: bool = False, parameters: dict[str, str] | None = None
) -> Iterator[HaCluster]:
    """etcd + pg1 (leader) + pg2 (sync standby), and with ``dr`` a standby cluster ``dr1``
    streaming from them; everything is stopped on the way out, even after a failed start.
    ``parameters`` go into every member's postgresql.conf."""
    ha = HaCluster(base, parameters=dict(parameters or {}))
    try:
        etcd = EtcdServer(base / "etcd", free_port(), free_port())
        ha.etcds.append(etcd)
        etcd.start()
        ha.members = [
            PatroniMember(
                base / f"pg{i}",
                SCOPE,
                f"pg{i}",
                free_port(),
                free_port(),
                etcd.url,
                parameters=ha.parameters,
            )
            for i in (1, 2)
        ]
        # pg1 bootstraps first, so that it is the leader; pg2 and DR then clone from it.
        ha.members[0].start()
        ha.members[0].wait_running()
        ha.members[1].start()
        if dr:
            ha.start_dr()
        ha.wait_pair()
        if dr:
            ha.wait_dr()
        yield ha
    finally:
        ha.stop()
