"""How far behind each copy of a region's database is: pure functions over observations.

Two figures matter for the plan's RPO (``docs/regions-and-failover.md``, "RPO from
replication"):

- **in region**: with a synchronous standby that streams, a commit is acknowledged only
  once the standby has it, so losing the leader loses nothing (:func:`sync_standby`);
- **to the DR region**: the standby cluster replays asynchronously, so losing the whole
  primary region loses what it has not replayed yet (:func:`dr_lag`).

No I/O, no clock: the caller passes the observations (and their times).
"""

from __future__ import annotations

from dataclasses import dataclass

from payapi.replication.observe import PgObservation, RegionObservation

__all__ = ["DrLag", "MemberLag", "dr_lag", "lsn_bytes", "member_lags", "sync_standby"]

# How the DR lag in seconds was obtained, most direct first.
CAUGHT_UP = "caught up"  # the standby has replayed every byte the primary has written
COMMIT_TIMES = "commit timestamps"  # primary's last commit vs the standby's last replayed one
REPLAY_LAG = "replay_lag"  # PostgreSQL's own measurement (pg_stat_replication)
WRITE_RATE = "write rate"  # bytes behind at [patroni] write_rate_bytes_per_second
SINCE_REPLAY = "since last replayed commit"  # an upper bound: the primary's now vs that commit


def lsn_bytes(lsn: str | None) -> int | None:
    """``16/B374D848`` as a byte position; None for None or anything malformed."""
    if lsn is None:
        return None
    hi, sep, lo = lsn.strip().partition("/")
    if not sep:
        return None
    try:
        return (int(hi, 16) << 32) + int(lo, 16)
    except ValueError:
        return None


def sync_standby(obs: RegionObservation) -> str | None:
    """The member that is a synchronous standby *and* streaming right now, or None.

    Patroni's view decides (role ``sync_standby``, state ``streaming``); without Patroni,
    the leader's ``pg_stat_replication`` (a sender in state streaming with sync_state
    sync or quorum).
    """
    if obs.cluster is not None:
        for m in obs.cluster.members:
            if m.role in ("sync_standby", "quorum_standby") and m.state == "streaming":
                return m.name
        return None
    leader = obs.leader
    if leader is None or not leader.writable:
        return None
    for s in leader.streams:
        if s.synchronous and s.state == "streaming":
            return s.application_name
    return None


@dataclass(frozen=True)
class MemberLag:
    """One member's lag behind its own leader (in-region), for the metrics."""

    region: str
    member: str
    role: str
    lag_bytes: int | None
    lag_seconds: float | None
    up: bool


def member_lags(obs: RegionObservation) -> list[MemberLag]:
    """Every configured member: Patroni's role and lag in bytes, PostgreSQL's replay lag
    in seconds (from the leader's ``pg_stat_replication``) where it measured one."""
    leader = obs.leader
    out: list[MemberLag] = []
    for name in obs.postgres_members:
        pg = obs.pg(name)
        view = obs.cluster.member(name) if obs.cluster is not None else None
        role = view.role if view is not None else _pg_role(pg, leader)
        lag_bytes = view.lag_bytes if view is not None else None
        seconds: float | None = None
        if leader is not None and leader.member != name:
            stream = leader.stream(name)
            if stream is not None:
                seconds = stream.replay_lag_seconds
                if lag_bytes is None:
                    lag_bytes = stream.lag_bytes
                if seconds is None and stream.lag_bytes == 0:
                    seconds = 0.0  # caught up and idle: PostgreSQL shows no lag at all
        elif leader is not None and leader.member == name:
            lag_bytes, seconds = 0, 0.0
        up = (view is not None and view.state in ("running", "streaming")) or (
            view is None and pg is not None and pg.reachable
        )
        out.append(MemberLag(obs.region, name, role, lag_bytes, seconds, up))
    return out


def _pg_role(pg: PgObservation | None, leader: PgObservation | None) -> str:
    if pg is None or not pg.reachable:
        return "unknown"
    if leader is not None and pg.member == leader.member:
        return "leader" if pg.in_recovery is False else "standby_leader"
    return "replica"


@dataclass(frozen=True)
class DrLag:
    """How far the DR region's database is behind the primary region's.

    ``seconds`` None means unknown, and ``why`` says why (a side unreachable...);
    ``measured_by`` says how a known figure was obtained (one of the constants above).
    """

    region: str
    member: str | None
    lag_bytes: int | None
    seconds: float | None
    measured_by: str | None
    why: str | None = None

    @property
    def known(self) -> bool:
        return self.seconds is not None


def dr_lag(
    primary: RegionObservation,
    standby: RegionObservation,
    *,
    write_rate_bytes_per_second: float | None = None,
) -> DrLag:
    """The DR lag of ``standby`` behind ``primary``, as directly as it can be measured:

    0 when every byte the primary wrote is replayed; else the primary's last commit vs the
    standby's last replayed one (when the primary tracks commit timestamps); else the
    replay lag PostgreSQL measured; else the bytes behind at the configured write rate;
    else the time from the standby's last replayed commit to the primary's observation
    (an upper bound).
    """
    source = primary.leader
    target = standby.leader
    name = target.member if target is not None else None

    def unknown(why: str, lag: int | None = None) -> DrLag:
        return DrLag(standby.region, name, lag, None, None, why)

    if target is None or not target.reachable:
        return unknown(f"no database of region {standby.region} answered")
    if source is None or not source.writable:
        return unknown(f"region {primary.region} has no writable database that answered")
    written, replayed = lsn_bytes(source.current_lsn), lsn_bytes(target.replay_lsn)
    if written is None or replayed is None:
        return unknown(f"{target.member} reports no replay position")
    behind = max(written - replayed, 0)
    if behind == 0:
        return DrLag(standby.region, name, 0, 0.0, CAUGHT_UP)
    if source.last_commit_at is not None and target.last_replay_at is not None:
        seconds = max((source.last_commit_at - target.last_replay_at).total_seconds(), 0.0)
        return DrLag(standby.region, name, behind, seconds, COMMIT_TIMES)
    stream = source.stream(target.member)
    if stream is not None and stream.replay_lag_seconds is not None:
        return DrLag(standby.region, name, behind, stream.replay_lag_seconds, REPLAY_LAG)
    if write_rate_bytes_per_second:
        return DrLag(standby.region, name, behind, behind / write_rate_bytes_per_second, WRITE_RATE)
    if target.last_replay_at is not None and source.observed_at is not None:
        seconds = max((source.observed_at - target.last_replay_at).total_seconds(), 0.0)
        return DrLag(standby.region, name, behind, seconds, SINCE_REPLAY)
    return unknown(
        f"{target.member} is {behind} bytes behind and nothing converts that into time "
        "(set [patroni] write_rate_bytes_per_second, or track_commit_timestamp = on)",
        behind,
    )
