"""Vault service logic: authorization, secrets, credentials, policy application.

One job: what each Conjur endpoint does, over the vault's tables (routes are thin).

Keyword-only functions over one asyncpg connection; the caller owns the transaction.
Routes stay thin and call these.

Authorization is Conjur's model:
- ``member_id`` in ``role_memberships`` holds the privileges of ``role_id``; the owner of a
  role is one of its members. A role's *effective roles* are itself plus everything it is
  a member of, transitively.
- A role may do ``privilege`` on a resource when one of its effective roles owns the
  resource or has been permitted ``privilege`` on it.
- A resource is *visible* to a role when one of its effective roles owns it or holds any
  privilege on it. Invisible resources answer 404, never 403, so their existence does not
  leak.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from payapi.core.logs import get_logger
from payapi.vault import errors, ids
from payapi.vault.crypto import SecretCipher, api_key_matches, hash_api_key, new_api_key
from payapi.vault.db import Connection
from payapi.vault.policy import DeclaredRecord, ResolvedPolicy

log = get_logger("payapi.vault.service")

PolicyMode = Literal["POST", "PUT", "PATCH"]

# A role's effective roles (itself and every role it is a member of, transitively).
_MY_ROLES = """
WITH RECURSIVE my_roles(role_id) AS (
    SELECT $1::text
  UNION
    SELECT rm.role_id FROM role_memberships rm JOIN my_roles m ON rm.member_id = m.role_id
)
"""


def _with_my_roles(sql: str) -> str:
    """Prefix a query with the ``my_roles`` CTE (``$1`` is the role id)."""
    return _MY_ROLES + sql


# Used when a login has no credentials, so that a miss costs the same as a hit.
_DUMMY_HASH = hash_api_key("payapi-vault-no-such-role")


# -- accounts, roles, credentials ----------------------------------------------------


async def account_exists(conn: Connection, *, account: str) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM accounts WHERE account = $1", account))


async def role_exists(conn: Connection, *, role_id: str) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM roles WHERE role_id = $1", role_id))


async def verify_api_key(conn: Connection, *, role_id: str, api_key: str) -> bool:
    """True when ``api_key`` is the role's current key (constant-time on the digest)."""
    stored = await conn.fetchval(
        "SELECT api_key_sha256 FROM credentials WHERE role_id = $1", role_id
    )
    if stored is None:
        api_key_matches(api_key, _DUMMY_HASH)
        return False
    return api_key_matches(api_key, bytes(stored))


async def has_credentials(conn: Connection, *, role_id: str) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM credentials WHERE role_id = $1", role_id))


async def rotate_api_key(conn: Connection, *, role_id: str) -> str:
    """Give ``role_id`` a new API key; the old one stops working when this commits."""
    key = new_api_key()
    await conn.execute(
        """INSERT INTO credentials (role_id, api_key_sha256, rotated_at) VALUES ($1, $2, now())
           ON CONFLICT (role_id) DO UPDATE
               SET api_key_sha256 = EXCLUDED.api_key_sha256, rotated_at = now()""",
        role_id,
        hash_api_key(key),
    )
    log.info("vault_api_key_rotated", role=role_id)
    return key


# -- authorization -------------------------------------------------------------------


@dataclass(frozen=True)
class Access:
    exists: bool
    visible: bool
    allowed: bool


async def access(conn: Connection, *, role_id: str, resource_id: str, privilege: str) -> Access:
    row = await conn.fetchrow(
        _with_my_roles(
            """
        SELECT
          r.resource_id IS NOT NULL AS exists,
          (r.owner_id IN (SELECT role_id FROM my_roles)) AS owned,
          EXISTS (SELECT 1 FROM permissions p
                  WHERE p.resource_id = $2 AND p.role_id IN (SELECT role_id FROM my_roles))
            AS any_privilege,
          EXISTS (SELECT 1 FROM permissions p
                  WHERE p.resource_id = $2 AND p.privilege = $3
                    AND p.role_id IN (SELECT role_id FROM my_roles)) AS privileged
        FROM (SELECT 1) AS one
        LEFT JOIN resources r ON r.resource_id = $2
        """
        ),
        role_id,
        resource_id,
        privilege,
    )
    assert row is not None
    exists = bool(row["exists"])
    owned = bool(row["owned"]) if exists else False
    return Access(
        exists=exists,
        visible=exists and (owned or bool(row["any_privilege"])),
        allowed=exists and (owned or bool(row["privileged"])),
    )


async def authorize(conn: Connection, *, role_id: str, resource_id: str, privilege: str) -> None:
    """Conjur's rule: invisible (or missing) → 404; visible without the privilege → 403."""
    acc = await access(conn, role_id=role_id, resource_id=resource_id, privilege=privilege)
    if not acc.visible:
        raise errors.not_found(resource_id)
    if not acc.allowed:
        log.info("vault_forbidden", role=role_id, resource=resource_id, privilege=privilege)
        raise errors.forbidden()


async def allowed_many(
    conn: Connection, *, role_id: str, resource_ids: Sequence[str], privilege: str
) -> dict[str, bool]:
    rows = await conn.fetch(
        _with_my_roles(
            """
        SELECT r.resource_id,
               (r.owner_id IN (SELECT role_id FROM my_roles)
                OR EXISTS (SELECT 1 FROM permissions p
                           WHERE p.resource_id = r.resource_id AND p.privilege = $3
                             AND p.role_id IN (SELECT role_id FROM my_roles))) AS allowed
        FROM resources r WHERE r.resource_id = ANY($2::text[])
        """
        ),
        role_id,
        list(resource_ids),
        privilege,
    )
    return {r["resource_id"]: bool(r["allowed"]) for r in rows}


async def permitted_roles(conn: Connection, *, resource_id: str, privilege: str) -> list[str]:
    """Every role that may do ``privilege`` on the resource (Conjur's ``Role.that_can``)."""
    rows = await conn.fetch(
        """
        WITH RECURSIVE grantees(role_id) AS (
            SELECT p.role_id FROM permissions p WHERE p.resource_id = $1 AND p.privilege = $2
          UNION
            SELECT r.owner_id FROM resources r WHERE r.resource_id = $1
          UNION
            SELECT rm.member_id FROM role_memberships rm JOIN grantees g ON rm.role_id = g.role_id
        )
        SELECT role_id FROM grantees ORDER BY role_id
        """,
        resource_id,
        privilege,
    )
    return [r["role_id"] for r in rows]


async def memberships(conn: Connection, *, role_id: str) -> list[str]:
    """Every role ``role_id`` is, itself and transitively (Conjur's ``?all``)."""
    rows = await conn.fetch(
        _with_my_roles("SELECT role_id FROM my_roles ORDER BY role_id"), role_id
    )
    return [r["role_id"] for r in rows]


# -- secrets -------------------------------------------------------------------------


async def store_secret(
    conn: Connection, cipher: SecretCipher, *, resource_id: str, value: bytes, keep: int
) -> int:
    """Add a version; delete versions beyond the ``keep`` newest in the same transaction."""
    locked = await conn.fetchval(
        "SELECT 1 FROM resources WHERE resource_id = $1 FOR UPDATE", resource_id
    )
    if not locked:
        raise errors.not_found(resource_id)
    version = int(
        await conn.fetchval(
            "SELECT COALESCE(max(version), 0) + 1 FROM secrets WHERE resource_id = $1",
            resource_id,
        )
    )
    await conn.execute(
        "INSERT INTO secrets (resource_id, version, sealed) VALUES ($1, $2, $3)",
        resource_id,
        version,
        cipher.seal(resource_id, version, value),
    )
    await conn.execute(
        """DELETE FROM secrets WHERE resource_id = $1 AND version NOT IN (
               SELECT version FROM secrets WHERE resource_id = $1
               ORDER BY version DESC LIMIT $2)""",
        resource_id,
        max(1, keep),
    )
    log.info("vault_secret_stored", resource=resource_id, version=version)
    return version


async def fetch_secret(
    conn: Connection, cipher: SecretCipher, *, resource_id: str, version: int | None = None
) -> bytes | None:
    if version is None:
        row = await conn.fetchrow(
            """SELECT version, sealed FROM secrets WHERE resource_id = $1
               ORDER BY version DESC LIMIT 1""",
            resource_id,
        )
    else:
        row = await conn.fetchrow(
            "SELECT version, sealed FROM secrets WHERE resource_id = $1 AND version = $2",
            resource_id,
            version,
        )
    if row is None:
        return None
    return cipher.open(resource_id, int(row["version"]), bytes(row["sealed"]))


async def fetch_latest_many(
    conn: Connection, cipher: SecretCipher, *, resource_ids: Sequence[str]
) -> dict[str, bytes]:
    rows = await conn.fetch(
        """SELECT DISTINCT ON (resource_id) resource_id, version, sealed FROM secrets
           WHERE resource_id = ANY($1::text[]) ORDER BY resource_id, version DESC""",
        list(resource_ids),
    )
    return {
        r["resource_id"]: cipher.open(r["resource_id"], int(r["version"]), bytes(r["sealed"]))
        for r in rows
    }


async def annotation(conn: Connection, *, resource_id: str, name: str) -> str | None:
    value = await conn.fetchval(
        "SELECT value FROM annotations WHERE resource_id = $1 AND name = $2", resource_id, name
    )
    return str(value) if value is not None else None


# -- resources -----------------------------------------------------------------------


def timestamp(dt: datetime) -> str:
    """Rails' JSON time format, which Conjur answers: 2017-07-25T06:30:38.768+00:00."""
    return dt.astimezone(UTC).isoformat(timespec="milliseconds")


async def describe_resources(
    conn: Connection, *, resource_ids: Sequence[str]
) -> list[dict[str, Any]]:
    """Conjur's resource JSON for each id, in the given order (missing ids are skipped)."""
    ids_list = list(resource_ids)
    if not ids_list:
        return []
    rows = await conn.fetch(
        """SELECT resource_id, kind, owner_id, policy_id, created_at FROM resources
           WHERE resource_id = ANY($1::text[])""",
        ids_list,
    )
    perms = await conn.fetch(
        """SELECT resource_id, privilege, role_id, policy_id FROM permissions
           WHERE resource_id = ANY($1::text[]) ORDER BY role_id, privilege""",
        ids_list,
    )
    notes = await conn.fetch(
        """SELECT resource_id, name, value, policy_id FROM annotations
           WHERE resource_id = ANY($1::text[]) ORDER BY name""",
        ids_list,
    )
    versions = await conn.fetch(
        """SELECT resource_id, version, expires_at FROM secrets
           WHERE resource_id = ANY($1::text[]) ORDER BY version""",
        ids_list,
    )
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        doc: dict[str, Any] = {
            "created_at": timestamp(r["created_at"]),
            "id": r["resource_id"],
            "owner": r["owner_id"],
            "policy": r["policy_id"],
            "permissions": [],
            "annotations": [],
        }
        if r["kind"] in ids.ACTOR_KINDS:
            doc["restricted_to"] = []
        if r["kind"] == "variable":
            doc["secrets"] = []
        out[r["resource_id"]] = doc
    for p in perms:
        out[p["resource_id"]]["permissions"].append(
            {"privilege": p["privilege"], "role": p["role_id"], "policy": p["policy_id"]}
        )
    for a in notes:
        out[a["resource_id"]]["annotations"].append(
            {"name": a["name"], "value": a["value"], "policy": a["policy_id"]}
        )
    for v in versions:
        doc = out[v["resource_id"]]
        expires = v["expires_at"]
        doc.setdefault("secrets", []).append(
            {"version": v["version"], "expires_at": timestamp(expires) if expires else None}
        )
    return [out[i] for i in ids_list if i in out]


_SEARCH_SQL = """
      AND (strpos(lower(r.identifier), lower($P)) > 0
           OR EXISTS (SELECT 1 FROM annotations a WHERE a.resource_id = r.resource_id
                      AND strpos(lower(a.value), lower($P)) > 0))"""

_VISIBLE_SQL = """
        FROM resources r
        WHERE r.account = $2 AND ($3::text IS NULL OR r.kind = $3)
          AND (r.owner_id IN (SELECT role_id FROM my_roles)
               OR EXISTS (SELECT 1 FROM permissions p WHERE p.resource_id = r.resource_id
                          AND p.role_id IN (SELECT role_id FROM my_roles)))
          SEARCH"""


def _visible_query(
    select: str, tail: str, role_id: str, account: str, kind: str | None, search: str | None
) -> tuple[str, list[Any]]:
    """The visible-resources query; only ``$n`` placeholders are ever spliced in."""
    params: list[Any] = [role_id, account, kind]
    search_sql = ""
    if search:
        params.append(search)
        search_sql = _SEARCH_SQL.replace("$P", f"${len(params)}")
    body = _VISIBLE_SQL.replace("SEARCH", search_sql)
    return _with_my_roles(" ".join((select, body, tail))), params


async def visible_resource_ids(
    conn: Connection,
    *,
    role_id: str,
    account: str,
    kind: str | None,
    search: str | None,
    limit: int | None,
    offset: int,
) -> list[str]:
    sql, params = _visible_query(
        "SELECT r.resource_id",
        "ORDER BY r.resource_id LIMIT $L OFFSET $O",
        role_id,
        account,
        kind,
        search,
    )
    params += [limit, offset]
    sql = sql.replace("$L", f"${len(params) - 1}").replace("$O", f"${len(params)}")
    rows = await conn.fetch(sql, *params)
    return [r["resource_id"] for r in rows]


async def count_visible_resources(
    conn: Connection, *, role_id: str, account: str, kind: str | None, search: str | None
) -> int:
    sql, params = _visible_query("SELECT count(*)", "", role_id, account, kind, search)
    return int(await conn.fetchval(sql, *params))


# -- bootstrap -----------------------------------------------------------------------


async def bootstrap_account(conn: Connection, *, account: str, admin_login: str) -> str | None:
    """Create the account, its admin user and the root policy the admin owns.

    Returns the admin's API key, or None when the account already exists (the key is
    never recoverable: it is stored as a hash).
    """
    if not ids.valid_account(account):
        raise ValueError(f"invalid account name {account!r}")
    if not ids.valid_identifier(admin_login) or admin_login.startswith("host/"):
        raise ValueError(f"invalid admin login {admin_login!r}")
    await _lock_account(conn, account)
    if await account_exists(conn, account=account):
        return None
    await conn.execute("INSERT INTO accounts (account) VALUES ($1)", account)
    admin = ids.full_id(account, "user", admin_login)
    root = ids.full_id(account, "policy", ids.ROOT_POLICY)
    for role_id in (admin, root):
        await conn.execute(
            "INSERT INTO roles (role_id, account, policy_id) VALUES ($1, $2, NULL)",
            role_id,
            account,
        )
    await conn.execute(
        """INSERT INTO resources (resource_id, account, kind, identifier, owner_id, policy_id)
           VALUES ($1, $2, 'user', $3, $1, NULL), ($4, $2, 'policy', $5, $1, NULL)""",
        admin,
        account,
        admin_login,
        root,
        ids.ROOT_POLICY,
    )
    await conn.execute(
        """INSERT INTO role_memberships (role_id, member_id, admin_option, ownership)
           VALUES ($1, $2, true, true)""",
        root,
        admin,
    )
    key = await rotate_api_key(conn, role_id=admin)
    log.info("vault_account_bootstrapped", account=account, admin=admin)
    return key


async def _lock_account(conn: Connection, account: str) -> None:
    """Serialize policy loads and bootstrap per account (a transaction-scoped lock)."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('payapi-vault-account:' || $1, 0))",
        account,
    )


# -- policy --------------------------------------------------------------------------


@dataclass
class PolicyResult:
    version: int
    created_roles: dict[str, dict[str, str]] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


async def _policy_tree(conn: Connection, policy_id: str) -> list[str]:
    rows = await conn.fetch(
        """
        WITH RECURSIVE tree(pid) AS (
            SELECT $1::text
          UNION
            SELECT r.resource_id FROM resources r JOIN tree t ON r.policy_id = t.pid
            WHERE r.kind = 'policy'
        )
        SELECT pid FROM tree
        """,
        policy_id,
    )
    return [r["pid"] for r in rows]


async def _existing(conn: Connection, resource_ids: Iterable[str]) -> dict[str, Any]:
    rows = await conn.fetch(
        """SELECT resource_id, owner_id, policy_id FROM resources
           WHERE resource_id = ANY($1::text[])""",
        list(resource_ids),
    )
    return {r["resource_id"]: r for r in rows}


async def _roles_present(conn: Connection, role_ids: Iterable[str]) -> set[str]:
    rows = await conn.fetch(
        "SELECT role_id FROM roles WHERE role_id = ANY($1::text[])", list(set(role_ids))
    )
    return {r["role_id"] for r in rows}


async def _resources_present(conn: Connection, resource_ids: Iterable[str]) -> set[str]:
    rows = await conn.fetch(
        "SELECT resource_id FROM resources WHERE resource_id = ANY($1::text[])",
        list(set(resource_ids)),
    )
    return {r["resource_id"] for r in rows}


def _role_not_found(role_id: str) -> errors.ConjurError:
    return errors.not_found(role_id, f"Role {role_id} does not exist")


async def _require_update_outside(
    conn: Connection, *, loader: str, targets: Iterable[str], inside: set[str], tree: set[str]
) -> None:
    """Records outside the loaded policy may only be changed by roles that may update them.

    Without this, ``create`` on any policy would let a role grant itself any variable.
    """
    outside = sorted({t for t in targets if t not in inside})
    if not outside:
        return
    rows = await conn.fetch(
        "SELECT resource_id, policy_id FROM resources WHERE resource_id = ANY($1::text[])", outside
    )
    foreign = [r["resource_id"] for r in rows if r["policy_id"] not in tree]
    if not foreign:
        return
    allowed = await allowed_many(conn, role_id=loader, resource_ids=foreign, privilege="update")
    for rid in foreign:
        if not allowed.get(rid, False):
            acc = await access(conn, role_id=loader, resource_id=rid, privilege="update")
            if not acc.visible:
                raise errors.not_found(rid)
            raise errors.forbidden(f"{loader} may not modify {rid} from this policy")


async def apply_policy(
    conn: Connection,
    *,
    doc: ResolvedPolicy,
    mode: PolicyMode,
    loader: str,
    policy_text: str,
) -> PolicyResult:
    """Apply a resolved policy document inside the caller's transaction.

    POST adds (existing records keep their owner); PATCH adds and updates and may delete;
    PUT makes the policy's subtree exactly what the document says: records, grants,
    permissions and annotations of the subtree that the document does not declare are
    deleted, secrets included. API keys of hosts/users that survive a PUT are kept.
    """
    account = ids.split_full_id(doc.policy_id)[0]
    await _lock_account(conn, account)
    if mode == "POST" and (doc.deletes or doc.revokes or doc.denies):
        raise errors.policy_invalid(
            "!delete, !revoke and !deny are not allowed when loading with POST (use PATCH or PUT)",
            None,
            None,
        )
    tree = set(await _policy_tree(conn, doc.policy_id))
    declared = doc.declared_ids()
    existing = await _existing(conn, declared)
    result = PolicyResult(version=0)

    # Changing records that belong to another policy needs update on them.
    await _require_update_outside(
        conn,
        loader=loader,
        targets=[rid for rid, row in existing.items() if row["policy_id"] not in tree]
        + [p.resource_id for p in doc.permits + doc.denies]
        + [g.role_id for g in doc.grants + doc.revokes]
        + doc.deletes,
        inside=declared - set(existing),
        tree=tree,
    )

    # 1. Roles first, so that owners declared later in the document exist.
    for rec in doc.records:
        if rec.kind in ids.ROLE_KINDS:
            await conn.execute(
                """INSERT INTO roles (role_id, account, policy_id) VALUES ($1, $2, $3)
                   ON CONFLICT (role_id) DO NOTHING""",
                rec.resource_id,
                account,
                rec.policy_id,
            )
    owners = {rec.owner_id for rec in doc.records}
    missing_owners = owners - await _roles_present(conn, owners)
    if missing_owners:
        raise _role_not_found(sorted(missing_owners)[0])

    # 2. Resources, ownership, annotations.
    for rec in doc.records:
        await _upsert_record(conn, rec, existing.get(rec.resource_id), mode, account, result)

    # 3. PUT: delete what the subtree had and the document no longer says.
    if mode == "PUT":
        tree_list = sorted(tree | doc.policy_ids())
        gone = await conn.fetch(
            """DELETE FROM resources WHERE policy_id = ANY($1::text[])
                 AND resource_id <> ALL($2::text[]) RETURNING resource_id""",
            tree_list,
            sorted(declared),
        )
        await conn.execute(
            """DELETE FROM roles WHERE policy_id = ANY($1::text[])
                 AND role_id <> ALL($2::text[])""",
            tree_list,
            sorted(declared),
        )
        result.deleted += [r["resource_id"] for r in gone]
        for table in ("permissions", "annotations"):
            await conn.execute(
                f"DELETE FROM {table} WHERE policy_id = ANY($1::text[])",  # noqa: S608
                tree_list,
            )
        await conn.execute(
            """DELETE FROM role_memberships
               WHERE NOT ownership AND policy_id = ANY($1::text[])""",
            tree_list,
        )
        for rec in doc.records:
            await _set_annotations(conn, rec, replace=True)

    # 4. Deletions (PATCH, PUT).
    if doc.deletes:
        present = await _resources_present(conn, doc.deletes)
        for rid in doc.deletes:
            if rid not in present and rid not in result.deleted:
                raise errors.not_found(rid)
        await conn.execute("DELETE FROM roles WHERE role_id = ANY($1::text[])", doc.deletes)
        await conn.execute("DELETE FROM resources WHERE resource_id = ANY($1::text[])", doc.deletes)
        result.deleted += [d for d in doc.deletes if d not in result.deleted]

    # 5. Grants and permissions; every role and resource referenced must exist.
    role_refs = {g.role_id for g in doc.grants} | {g.member_id for g in doc.grants}
    role_refs |= {p.role_id for p in doc.permits}
    missing_roles = role_refs - await _roles_present(conn, role_refs)
    if missing_roles:
        raise _role_not_found(sorted(missing_roles)[0])
    res_refs = {p.resource_id for p in doc.permits}
    missing_res = res_refs - await _resources_present(conn, res_refs)
    if missing_res:
        raise errors.not_found(sorted(missing_res)[0])
    for g in doc.grants:
        await conn.execute(
            """INSERT INTO role_memberships (role_id, member_id, admin_option, ownership, policy_id)
               VALUES ($1, $2, false, false, $3) ON CONFLICT DO NOTHING""",
            g.role_id,
            g.member_id,
            g.policy_id,
        )
    for p in doc.permits:
        await conn.execute(
            """INSERT INTO permissions (resource_id, role_id, privilege, policy_id)
               VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING""",
            p.resource_id,
            p.role_id,
            p.privilege,
            p.policy_id,
        )
    for g in doc.revokes:
        await conn.execute(
            "DELETE FROM role_memberships WHERE role_id = $1 AND member_id = $2 AND NOT ownership",
            g.role_id,
            g.member_id,
        )
    for p in doc.denies:
        await conn.execute(
            "DELETE FROM permissions WHERE resource_id = $1 AND role_id = $2 AND privilege = $3",
            p.resource_id,
            p.role_id,
            p.privilege,
        )

    # 6. API keys for new hosts and users that survived the whole load.
    alive = await _roles_present(conn, result.created)
    for rid in result.created:
        kind = ids.split_full_id(rid)[1]
        if kind in ids.ACTOR_KINDS and rid in alive:
            key = await rotate_api_key(conn, role_id=rid)
            result.created_roles[rid] = {"id": rid, "api_key": key}

    # 7. The policy version.
    result.version = int(
        await conn.fetchval(
            """INSERT INTO policy_versions
                   (resource_id, version, role_id, policy_text, policy_sha256)
               SELECT $1, COALESCE(max(version), 0) + 1, $2, $3, $4
               FROM policy_versions WHERE resource_id = $1
               RETURNING version""",
            doc.policy_id,
            loader,
            policy_text,
            hashlib.sha256(policy_text.encode("utf-8")).hexdigest(),
        )
    )
    log.info(
        "vault_policy_loaded",
        policy=doc.policy_id,
        mode=mode,
        version=result.version,
        created=len(result.created),
        deleted=len(result.deleted),
        by=loader,
    )
    return result


async def _upsert_record(
    conn: Connection,
    rec: DeclaredRecord,
    current: Any,
    mode: PolicyMode,
    account: str,
    result: PolicyResult,
) -> None:
    identifier = ids.split_full_id(rec.resource_id)[2]
    if current is None:
        await conn.execute(
            """INSERT INTO resources (resource_id, account, kind, identifier, owner_id, policy_id)
               VALUES ($1, $2, $3, $4, $5, $6)""",
            rec.resource_id,
            account,
            rec.kind,
            identifier,
            rec.owner_id,
            rec.policy_id,
        )
        result.created.append(rec.resource_id)
        owner_changed = True
    elif mode == "POST":
        owner_changed = False
    else:
        owner_changed = current["owner_id"] != rec.owner_id
        if owner_changed or current["policy_id"] != rec.policy_id:
            await conn.execute(
                "UPDATE resources SET owner_id = $2, policy_id = $3 WHERE resource_id = $1",
                rec.resource_id,
                rec.owner_id,
                rec.policy_id,
            )
            await conn.execute(
                "UPDATE roles SET policy_id = $2 WHERE role_id = $1", rec.resource_id, rec.policy_id
            )
            result.updated.append(rec.resource_id)
    if rec.kind in ids.ROLE_KINDS and owner_changed:
        await conn.execute(
            "DELETE FROM role_memberships WHERE role_id = $1 AND ownership", rec.resource_id
        )
        await conn.execute(
            """INSERT INTO role_memberships (role_id, member_id, admin_option, ownership, policy_id)
               VALUES ($1, $2, true, true, $3) ON CONFLICT DO NOTHING""",
            rec.resource_id,
            rec.owner_id,
            rec.policy_id,
        )
    if mode != "PUT":
        await _set_annotations(conn, rec, replace=mode == "PATCH")


async def _set_annotations(conn: Connection, rec: DeclaredRecord, *, replace: bool) -> None:
    conflict = (
        "DO UPDATE SET value = EXCLUDED.value, policy_id = EXCLUDED.policy_id"
        if replace
        else "DO NOTHING"
    )
    for name, value in rec.annotations:
        await conn.execute(
            f"""INSERT INTO annotations (resource_id, name, value, policy_id)
                VALUES ($1, $2, $3, $4) ON CONFLICT (resource_id, name) {conflict}""",  # noqa: S608
            rec.resource_id,
            name,
            value,
            rec.policy_id,
        )
