"""``recover corruption --verify``: the seed's ``verify-data-integrity.sh`` as checks.

Each check is a :class:`~payapi.recovery.corruption_plan.Check` (name, ok, how many rows
offend, one line). The database's:

- ``audit_chain``: :func:`payapi.audit.verify` (every hash, the head kept outside);
- ``positive_amounts``: no payment with ``amount <= 0``;
- ``idempotency_keys``: at most one payment per (client, idempotency key);
- ``references``: every reference matches what the API accepts
  (:data:`payapi.schemas.REFERENCE_PATTERN`: 1-64 of ``A-Za-z0-9._-``);
- ``currencies`` and ``statuses``: an ISO 4217-shaped code, a known status.

The vault's: the audit chain, and that the newest version of every variable opens with
the configured data key (counted, never shown). The database's own CHECK constraints
make most of these impossible through normal writes; the checks are for the writes that
were not normal (a superuser's UPDATE, a disabled constraint, a restored dump).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from payapi.recovery.corruption import connect, run
from payapi.recovery.corruption_plan import Check, IntegrityReport
from payapi.schemas import PAYMENT_STATUSES, REFERENCE_PATTERN

if TYPE_CHECKING:
    from payapi.core.settings import Settings

# REFERENCE_PATTERN in PostgreSQL's regex dialect (``\Z`` is ``$`` there: it never
# matches before a trailing newline). A unit test keeps the two the same.
REFERENCE_SQL = REFERENCE_PATTERN.pattern.replace("\\Z", "$")

_PAYMENT_CHECKS: tuple[tuple[str, str, str], ...] = (
    (
        "positive_amounts",
        "SELECT count(*) FROM payments WHERE NOT (amount > 0)",
        "payments with an amount that is not positive",
    ),
    (
        "idempotency_keys",
        "SELECT count(*) FROM (SELECT 1 FROM payments WHERE idempotency_key IS NOT NULL "
        "GROUP BY client_id, idempotency_key HAVING count(*) > 1) AS d",
        "idempotency keys used by more than one payment of a client",
    ),
    (
        "references",
        "SELECT count(*) FROM payments WHERE reference IS NULL OR reference !~ $1",
        "payments whose reference is not 1-64 of A-Za-z0-9._-",
    ),
    (
        "currencies",
        "SELECT count(*) FROM payments WHERE currency IS NULL OR currency !~ '^[A-Z]{3}$'",
        "payments whose currency is not an ISO 4217 code",
    ),
    (
        "statuses",
        "SELECT count(*) FROM payments WHERE status IS NULL OR NOT (status = ANY ($1::text[]))",
        "payments with an unknown status",
    ),
)


async def _audit_check(conn: Any, settings: Settings) -> Check:
    from payapi import audit

    try:
        result = await audit.verify(conn, settings.audit.head_file)
    except audit.AuditError as exc:
        return Check("audit_chain", False, str(exc))
    if result.ok:
        return Check("audit_chain", True, f"intact: {result.events_checked} events")
    assert result.problem is not None
    return Check("audit_chain", False, result.problem.line(), 1)


def verify_db(settings: Settings) -> IntegrityReport:
    """The audit chain and the payment invariants on live."""
    from payapi.recovery.corruption import payment_dsn

    dsn = payment_dsn(settings)

    async def go() -> IntegrityReport:
        conn = await connect(dsn)
        try:
            checks = [await _audit_check(conn, settings)]
            for name, sql, what in _PAYMENT_CHECKS:
                args: list[Any] = []
                if "$1" in sql:
                    args.append(REFERENCE_SQL if name == "references" else sorted(PAYMENT_STATUSES))
                n = int(await conn.fetchval(sql, *args))
                checks.append(Check(name, n == 0, f"{n} {what}" if n else "ok", n))
            return IntegrityReport(tuple(checks))
        finally:
            await conn.close()

    return run(go)


def verify_vault(settings: Settings) -> IntegrityReport:
    """The audit chain, and every variable's newest version opens with the data key."""
    from payapi.recovery.corruption import payment_dsn
    from payapi.recovery.corruption_vault import vault_dsn
    from payapi.vault.crypto import DecryptionError, SecretCipher, load_data_key

    cipher = SecretCipher.from_data_key(load_data_key(settings.vault))
    pdsn, vdsn = payment_dsn(settings), vault_dsn(settings)

    async def go() -> IntegrityReport:
        conn = await connect(pdsn)
        try:
            checks = [await _audit_check(conn, settings)]
        finally:
            await conn.close()
        vconn = await connect(vdsn)
        try:
            rows = await vconn.fetch(
                "SELECT DISTINCT ON (resource_id) resource_id, version, sealed FROM secrets "
                "ORDER BY resource_id, version DESC"
            )
        finally:
            await vconn.close()
        bad = 0
        for r in rows:
            try:
                cipher.open(r["resource_id"], int(r["version"]), bytes(r["sealed"]))
            except DecryptionError:
                bad += 1
        detail = f"{bad} of {len(rows)} variables do not open" if bad else f"{len(rows)} open"
        checks.append(Check("secrets_open", bad == 0, detail, bad))
        return IntegrityReport(tuple(checks))

    return run(go)
