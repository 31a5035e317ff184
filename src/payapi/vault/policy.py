"""Conjur policy YAML (the subset we serve): parse, validate, resolve to full ids.

This module is pure: text in, a ``ResolvedPolicy`` (or ``PolicyInvalid`` with the line and
column) out. Applying it to the database is ``service.apply_policy``'s job.

Supported statements: ``!user``, ``!host``, ``!group``, ``!layer``, ``!variable``,
``!webservice``, ``!policy`` (with ``body``, nested), ``!permit``, ``!deny``, ``!grant``,
``!revoke`` and ``!delete``.

Naming follows Conjur: inside policy ``payment-system`` the record ``!host payment-eapi``
is ``payment-system/payment-eapi``; an id starting with ``/`` is absolute; users inside a
non-root policy are named ``alice@payment-system`` (slashes of nested policy ids become
dashes). References (``role:``, ``resource:``, ``member:``) resolve by the same rules, so a
policy names its own records without repeating its id. A record without ``owner`` is owned
by the policy that declares it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from payapi.core.errors import PayapiError
from payapi.vault import ids

RECORD_TAGS = frozenset({"user", "host", "group", "layer", "policy", "variable", "webservice"})
STATEMENT_TAGS = frozenset({"permit", "deny", "grant", "revoke", "delete"})

_COMMON_FIELDS = frozenset({"id", "owner", "annotations"})
_EXTRA_FIELDS: dict[str, frozenset[str]] = {
    "user": frozenset({"restricted_to", "public_keys"}),
    "host": frozenset({"restricted_to"}),
    "variable": frozenset({"kind", "mime_type"}),
    "policy": frozenset({"body"}),
    "group": frozenset(),
    "layer": frozenset(),
    "webservice": frozenset(),
}


class PolicyInvalid(PayapiError, ValueError):
    """The policy text is not valid; ``line``/``column`` are 1-based when known."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


@dataclass(frozen=True)
class _Tagged:
    """A YAML node carrying one of our ``!tags``, with where it was written."""

    tag: str
    value: Any
    line: int
    column: int


class _PolicyLoader(yaml.SafeLoader):
    """SafeLoader that turns every local ``!tag`` into a ``_Tagged`` value."""


def _construct_tagged(loader: _PolicyLoader, tag_suffix: str, node: yaml.Node) -> _Tagged:
    value: Any
    if isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        assert isinstance(node, yaml.ScalarNode)
        value = loader.construct_scalar(node)
    mark = node.start_mark
    return _Tagged(tag_suffix, value, mark.line + 1, mark.column + 1)


_PolicyLoader.add_multi_constructor("!", _construct_tagged)


# -- resolved form -------------------------------------------------------------------


@dataclass(frozen=True)
class DeclaredRecord:
    kind: str
    resource_id: str
    owner_id: str
    policy_id: str
    annotations: tuple[tuple[str, str], ...] = ()
    line: int = 0


@dataclass(frozen=True)
class Permission:
    role_id: str
    privilege: str
    resource_id: str
    policy_id: str


@dataclass(frozen=True)
class Membership:
    role_id: str
    member_id: str
    policy_id: str


@dataclass
class ResolvedPolicy:
    """Everything one policy document says, in full ids, in document order."""

    policy_id: str
    records: list[DeclaredRecord] = field(default_factory=list)
    permits: list[Permission] = field(default_factory=list)
    denies: list[Permission] = field(default_factory=list)
    grants: list[Membership] = field(default_factory=list)
    revokes: list[Membership] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)

    def declared_ids(self) -> set[str]:
        return {r.resource_id for r in self.records}

    def policy_ids(self) -> set[str]:
        """The loaded policy and every policy declared (nested) in the document."""
        return {self.policy_id} | {r.resource_id for r in self.records if r.kind == "policy"}


# -- parsing -------------------------------------------------------------------------


def parse(text: str) -> list[_Tagged]:
    """YAML text to the list of top-level tagged statements (syntax errors → PolicyInvalid)."""
    try:
        doc = yaml.load(text, Loader=_PolicyLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if mark is not None:
            raise PolicyInvalid(problem, mark.line + 1, mark.column + 1) from None
        raise PolicyInvalid(problem) from None
    except yaml.YAMLError as exc:
        raise PolicyInvalid(f"invalid YAML: {type(exc).__name__}") from None
    except RecursionError:
        # PyYAML's parser recurses once per nested collection: "[[[[…" a few hundred
        # deep exhausts the stack. No real policy nests like that; refuse it as input.
        raise PolicyInvalid("the policy nests too deeply") from None
    if doc is None:
        return []
    if isinstance(doc, _Tagged):
        doc = [doc]
    if not isinstance(doc, list):
        raise PolicyInvalid("a policy must be a list of statements", 1, 1)
    try:
        return _statements(doc, None)
    except RecursionError:
        raise PolicyInvalid("the policy nests too deeply") from None


def _statements(items: list[Any], parent: _Tagged | None) -> list[_Tagged]:
    out: list[_Tagged] = []
    for item in items:
        if not isinstance(item, _Tagged):
            line = parent.line if parent else None
            raise PolicyInvalid(
                "every statement must be tagged (!host, !variable, !permit, ...); "
                f"found an untagged {type(item).__name__}",
                line,
            )
        if item.tag not in RECORD_TAGS | STATEMENT_TAGS:
            raise PolicyInvalid(f"unsupported statement !{item.tag}", item.line, item.column)
        out.append(item)
    return out


# -- resolution ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Scope:
    account: str
    namespace: str  # "" for root
    policy_full_id: str


def _qualify(scope: _Scope, kind: str, raw_id: str, t: _Tagged) -> str:
    """Relative id → identifier, by Conjur's naming rules; validates the result."""
    if not isinstance(raw_id, str) or not raw_id:
        raise PolicyInvalid(f"!{kind} needs an id", t.line, t.column)
    if raw_id.startswith("/"):
        identifier = raw_id[1:]
    elif not scope.namespace:
        identifier = raw_id
    elif kind == "user":
        identifier = f"{raw_id}@{scope.namespace.replace('/', '-')}"
    else:
        identifier = f"{scope.namespace}/{raw_id}"
    if not ids.valid_identifier(identifier):
        raise PolicyInvalid(f"invalid id for !{kind}: {identifier!r}", t.line, t.column)
    return identifier


def _ref(scope: _Scope, value: Any, t: _Tagged, what: str, *, role: bool = False) -> str:
    if not isinstance(value, _Tagged) or value.tag not in RECORD_TAGS:
        raise PolicyInvalid(f"{what} must be a tagged reference like !host name", t.line, t.column)
    raw = value.value
    if isinstance(raw, dict):
        if set(raw) != {"id"}:
            raise PolicyInvalid(f"a reference in {what} has only an id", value.line, value.column)
        raw = raw["id"]
    if not isinstance(raw, str):
        raise PolicyInvalid(f"{what}: a reference needs an id", value.line, value.column)
    if role and value.tag not in ids.ROLE_KINDS:
        raise PolicyInvalid(f"{what} must be a role, not !{value.tag}", value.line, value.column)
    identifier = _qualify(scope, value.tag, raw, value)
    return ids.full_id(scope.account, value.tag, identifier)


def _refs(scope: _Scope, value: Any, t: _Tagged, what: str, *, role: bool = False) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise PolicyInvalid(f"{what} is empty", t.line, t.column)
    return [_ref(scope, v, t, what, role=role) for v in items]


def _one_of(body: dict[str, Any], names: tuple[str, ...], t: _Tagged) -> Any:
    present = [n for n in names if n in body]
    if len(present) != 1:
        raise PolicyInvalid(f"!{t.tag} needs exactly one of: {', '.join(names)}", t.line, t.column)
    return body[present[0]]


def _mapping(t: _Tagged, allowed: frozenset[str]) -> dict[str, Any]:
    if not isinstance(t.value, dict):
        raise PolicyInvalid(f"!{t.tag} needs a mapping", t.line, t.column)
    unknown = sorted(str(k) for k in t.value if k not in allowed)
    if unknown:
        raise PolicyInvalid(f"!{t.tag} does not accept: {', '.join(unknown)}", t.line, t.column)
    return t.value


def _annotations(value: Any, t: _Tagged) -> list[tuple[str, str]]:
    if value is None:
        return []
    if not isinstance(value, dict):
        raise PolicyInvalid("annotations must be a mapping", t.line, t.column)
    out: list[tuple[str, str]] = []
    for k, v in value.items():
        if not isinstance(k, str) or not k or len(k) > 255:
            raise PolicyInvalid("annotation names must be non-empty strings", t.line, t.column)
        if isinstance(v, dict | list | _Tagged) or v is None:
            raise PolicyInvalid(f"annotation {k!r} must have a scalar value", t.line, t.column)
        text = str(v).lower() if isinstance(v, bool) else str(v)
        out.append((k, text))
    return out


def _privileges(body: dict[str, Any], t: _Tagged) -> list[str]:
    value = _one_of(body, ("privileges", "privilege"), t)
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(p, str) and ids.valid_privilege(p) for p in items):
        raise PolicyInvalid("privileges must be names like read, execute, update", t.line, t.column)
    return list(dict.fromkeys(items))


def resolve(text: str, account: str, policy_identifier: str) -> ResolvedPolicy:
    """Parse ``text`` as loaded into policy ``policy_identifier`` ("root" or an id)."""
    if not ids.valid_account(account):
        raise PolicyInvalid(f"invalid account {account!r}")
    namespace = "" if policy_identifier == ids.ROOT_POLICY else policy_identifier
    if namespace and not ids.valid_identifier(namespace):
        raise PolicyInvalid(f"invalid policy id {policy_identifier!r}")
    policy_full = ids.full_id(account, "policy", policy_identifier)
    out = ResolvedPolicy(policy_id=policy_full)
    _resolve_body(parse(text), _Scope(account, namespace, policy_full), out)
    seen: set[str] = set()
    for rec in out.records:
        if rec.resource_id in seen:
            raise PolicyInvalid(f"{rec.resource_id} is declared twice", rec.line)
        seen.add(rec.resource_id)
    return out


def _resolve_body(statements: list[_Tagged], scope: _Scope, out: ResolvedPolicy) -> None:
    for t in statements:
        if t.tag in RECORD_TAGS:
            _resolve_record(t, scope, out)
        else:
            _resolve_statement(t, scope, out)


def _resolve_record(t: _Tagged, scope: _Scope, out: ResolvedPolicy) -> None:
    kind = t.tag
    body: dict[str, Any]
    if isinstance(t.value, dict):
        body = _mapping(t, _COMMON_FIELDS | _EXTRA_FIELDS[kind])
    elif isinstance(t.value, str) and t.value:
        body = {"id": t.value}
    else:
        raise PolicyInvalid(f"!{kind} needs an id", t.line, t.column)
    raw_id = body.get("id")
    if not isinstance(raw_id, str):
        raise PolicyInvalid(f"!{kind} needs an id", t.line, t.column)
    identifier = _qualify(scope, kind, raw_id, t)
    if kind == "policy" and identifier == ids.ROOT_POLICY:
        raise PolicyInvalid("the root policy cannot be declared", t.line, t.column)
    resource_id = ids.full_id(scope.account, kind, identifier)
    owner = (
        _ref(scope, body["owner"], t, "owner", role=True)
        if body.get("owner") is not None
        else scope.policy_full_id
    )
    annotations = _annotations(body.get("annotations"), t)
    if kind == "variable":
        if body.get("kind") is not None:
            annotations.append(("conjur/kind", str(body["kind"])))
        if body.get("mime_type") is not None:
            annotations.append(("conjur/mime_type", str(body["mime_type"])))
    out.records.append(
        DeclaredRecord(
            kind=kind,
            resource_id=resource_id,
            owner_id=owner,
            policy_id=scope.policy_full_id,
            annotations=tuple(dict(annotations).items()),
            line=t.line,
        )
    )
    if kind == "policy":
        inner = body.get("body")
        if inner is None:
            return
        if not isinstance(inner, list):
            raise PolicyInvalid("a policy body must be a list of statements", t.line, t.column)
        _resolve_body(_statements(inner, t), _Scope(scope.account, identifier, resource_id), out)


def _resolve_statement(t: _Tagged, scope: _Scope, out: ResolvedPolicy) -> None:
    pid = scope.policy_full_id
    if t.tag in ("permit", "deny"):
        body = _mapping(
            t, frozenset({"role", "privilege", "privileges", "resource", "resources", "replace"})
        )
        roles = _refs(scope, body.get("role"), t, "role", role=True)
        privileges = _privileges(body, t)
        resources = _refs(scope, _one_of(body, ("resource", "resources"), t), t, "resource")
        target = out.permits if t.tag == "permit" else out.denies
        for role_id in roles:
            for privilege in privileges:
                for resource_id in resources:
                    target.append(Permission(role_id, privilege, resource_id, pid))
    elif t.tag in ("grant", "revoke"):
        body = _mapping(t, frozenset({"role", "member", "members"}))
        role_id = _ref(scope, body.get("role"), t, "role", role=True)
        members = _refs(scope, _one_of(body, ("member", "members"), t), t, "member", role=True)
        target_m = out.grants if t.tag == "grant" else out.revokes
        for member_id in members:
            if member_id == role_id:
                raise PolicyInvalid("a role cannot be a member of itself", t.line, t.column)
            target_m.append(Membership(role_id, member_id, pid))
    else:  # delete
        body = _mapping(t, frozenset({"record"}))
        out.deletes.append(_ref(scope, body.get("record"), t, "record"))
