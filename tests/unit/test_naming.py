import pytest

from payapi.core.naming import (
    ClientPaths,
    InvalidName,
    client_name_from_variable,
    name_of,
    new_client_id,
    validate_name,
)


def test_client_id_encodes_the_name() -> None:
    cid = new_client_id("xyz-vendor")
    assert name_of(cid) == "xyz-vendor"
    assert cid != new_client_id("xyz-vendor")


@pytest.mark.parametrize("bad", ["", "-a", "a-", "A", "a_b", "a/b", "a" * 49, "a b"])
def test_invalid_names(bad: str) -> None:
    with pytest.raises(InvalidName):
        validate_name(bad)


@pytest.mark.parametrize("cid", ["test-client-id", "x-0123", "../etc-0123456789abcdef", ""])
def test_non_client_ids_have_no_name(cid: str) -> None:
    assert name_of(cid) is None


def test_paths_and_listing() -> None:
    p = ClientPaths("xyz-vendor")
    assert p.client_id == "payment-system/clients/xyz-vendor/client-id"
    assert client_name_from_variable(p.client_secret) == "xyz-vendor"
    assert client_name_from_variable(p.client_id) is None
