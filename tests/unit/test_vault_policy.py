"""The policy parser: Conjur's naming rules, and clear errors with line numbers."""

from __future__ import annotations

import pytest

from payapi.vault.policy import Membership, Permission, PolicyInvalid, resolve

NESTED = """
- !policy
  id: payment-system
  body:
  - !host payment-eapi
  - !user alice
  - !group readers
  - !variable {id: clients/x/client-id, kind: password, mime_type: text/plain}
  - !grant {role: !group readers, members: [!host payment-eapi, !user alice]}
  - !permit
    role: !group readers
    privileges: [read, execute, read]
    resource: !variable clients/x/client-id
  - !policy
    id: inner
    owner: !group readers
    annotations: {team: payments, critical: true}
    body:
    - !variable token
    - !permit {role: !host /payment-system/payment-eapi, privilege: read, resource: !variable token}
"""


def test_nested_ids_owners_and_references() -> None:
    doc = resolve(NESTED, "acme", "root")
    by_id = {r.resource_id: r for r in doc.records}
    assert list(by_id) == [
        "acme:policy:payment-system",
        "acme:host:payment-system/payment-eapi",
        "acme:user:alice@payment-system",
        "acme:group:payment-system/readers",
        "acme:variable:payment-system/clients/x/client-id",
        "acme:policy:payment-system/inner",
        "acme:variable:payment-system/inner/token",
    ]
    assert by_id["acme:policy:payment-system"].owner_id == "acme:policy:root"
    assert by_id["acme:host:payment-system/payment-eapi"].owner_id == "acme:policy:payment-system"
    inner = by_id["acme:policy:payment-system/inner"]
    assert inner.owner_id == "acme:group:payment-system/readers"
    assert dict(inner.annotations) == {"team": "payments", "critical": "true"}
    token = by_id["acme:variable:payment-system/inner/token"]
    assert token.policy_id == "acme:policy:payment-system/inner"
    assert token.owner_id == "acme:policy:payment-system/inner"
    var = by_id["acme:variable:payment-system/clients/x/client-id"]
    assert dict(var.annotations) == {"conjur/kind": "password", "conjur/mime_type": "text/plain"}
    assert doc.grants == [
        Membership(
            "acme:group:payment-system/readers",
            "acme:host:payment-system/payment-eapi",
            "acme:policy:payment-system",
        ),
        Membership(
            "acme:group:payment-system/readers",
            "acme:user:alice@payment-system",
            "acme:policy:payment-system",
        ),
    ]
    assert [p.privilege for p in doc.permits[:2]] == ["read", "execute"]  # duplicates dropped
    assert doc.permits[2] == Permission(
        "acme:host:payment-system/payment-eapi",
        "read",
        "acme:variable:payment-system/inner/token",
        "acme:policy:payment-system/inner",
    )


def test_loading_into_a_named_policy_prefixes_ids() -> None:
    doc = resolve("- !host batch\n- !user bob\n", "acme", "payment-system/jobs")
    assert [r.resource_id for r in doc.records] == [
        "acme:host:payment-system/jobs/batch",
        "acme:user:bob@payment-system-jobs",
    ]
    assert doc.policy_id == "acme:policy:payment-system/jobs"


def test_delete_revoke_deny() -> None:
    doc = resolve(
        """
- !delete {record: !variable old}
- !revoke {role: !group g, member: !host h}
- !deny {role: !host h, privileges: [update], resource: !variable v}
""",
        "acme",
        "app",
    )
    assert doc.deletes == ["acme:variable:app/old"]
    assert doc.revokes == [Membership("acme:group:app/g", "acme:host:app/h", "acme:policy:app")]
    assert doc.denies == [
        Permission("acme:host:app/h", "update", "acme:variable:app/v", "acme:policy:app")
    ]


def test_empty_policy_is_valid() -> None:
    assert resolve("", "acme", "root").records == []
    assert resolve("# nothing\n", "acme", "root").records == []


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("- !secret x\n", "unsupported statement !secret", 1),
        ("- !host x\n- !host x\n", "declared twice", 2),
        ("- !host {id: x, color: red}\n", "does not accept: color", 1),
        ("- !host 'bad id'\n", "invalid id", 1),
        ("- !host ../escape\n", "invalid id", 1),
        ("- !variable\n", "needs an id", 1),
        ("host: x\n", "must be a list", 1),
        ("- plain\n", "must be tagged", None),
        ("- !permit {role: !host h, privilege: read}\n", "exactly one of: resource", 1),
        (
            "- !permit {role: !variable v, privilege: read, resource: !host h}\n",
            "must be a role",
            1,
        ),
        ("- !permit {role: !host h, privilege: 'r w', resource: !host h}\n", "privileges", 1),
        ("- !grant {role: !host h, member: !host h}\n", "member of itself", 1),
        ("- !host x\n  - bad: [\n", "", 2),
        ("\n\n- !policy\n  id: root\n", "root policy", 3),
    ],
)
def test_invalid_policies(text: str, message: str, line: int | None) -> None:
    with pytest.raises(PolicyInvalid) as err:
        resolve(text, "acme", "root")
    assert message in err.value.message
    if line is not None:
        assert err.value.line == line


def test_arbitrary_python_tags_are_not_constructed() -> None:
    with pytest.raises(PolicyInvalid):
        resolve("- !!python/object/apply:os.system ['true']\n", "acme", "root")
