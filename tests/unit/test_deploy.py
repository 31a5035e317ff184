"""payapi.ops.deploy: releases recorded once, artifacts refused unless they match."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from payapi.core.errors import UsageError
from payapi.ops.deploy import (
    DeployError,
    installed_check,
    load_releases,
    record_release,
    release_of,
    render_deployments,
    verify_wheel,
)

DIGEST = "registry.example.com/payapi@sha256:" + "ab" * 32


def wheel(tmp_path: Path, body: bytes = b"wheel bytes", version: str = "1.2.3") -> Path:
    path = tmp_path / f"payapi-{version}-py3-none-any.whl"
    path.write_bytes(body)
    return path


def test_a_release_is_recorded_once_and_is_immutable(tmp_path: Path) -> None:
    releases = tmp_path / "releases.json"
    w = wheel(tmp_path)
    r = record_release(releases, w, DIGEST)
    assert (r.version, r.image) == ("1.2.3", DIGEST)
    assert load_releases(releases)["1.2.3"].sha256 == r.sha256
    assert record_release(releases, w, DIGEST).sha256 == r.sha256  # the same again: fine
    w.write_bytes(b"another build")
    with pytest.raises(UsageError, match="recorded already"):
        record_release(releases, w, DIGEST)


def test_images_must_be_pinned_by_digest_and_versions_recorded(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not pinned by digest"):
        record_release(tmp_path / "r.json", wheel(tmp_path), "registry.example.com/payapi:1.2.3")
    with pytest.raises(UsageError, match="not a wheel"):
        record_release(tmp_path / "r.json", tmp_path / "payapi.tar.gz")
    with pytest.raises(UsageError, match="not a recorded release"):
        release_of({}, "9.9.9")


def test_a_wheel_that_differs_from_its_record_is_refused(tmp_path: Path) -> None:
    w = wheel(tmp_path)
    r = record_release(tmp_path / "r.json", w)
    assert "matches" in verify_wheel(r, w)
    w.write_bytes(b"tampered")
    with pytest.raises(DeployError, match="differs"):
        verify_wheel(r, w)


def test_manifests_pin_the_recorded_digest(tmp_path: Path) -> None:
    r = record_release(tmp_path / "r.json", wheel(tmp_path), DIGEST)
    manifests = render_deployments(r, namespace="payment-system", replicas=3)
    assert set(manifests) == {"payment-eapi.yaml", "payment-sapi.yaml"}
    for text in manifests.values():
        assert f"image: {DIGEST}" in text and "replicas: 3" in text
    bare = record_release(tmp_path / "r2.json", wheel(tmp_path, version="1.2.4"))
    with pytest.raises(UsageError, match="no image recorded"):
        render_deployments(bare, namespace="x", replicas=1)


def test_the_installed_payapi_is_checked_against_its_version_and_record() -> None:
    version = metadata.version("payapi")
    assert "match their RECORD hashes" in installed_check(version)
    with pytest.raises(DeployError, match="install the verified wheel"):
        installed_check("0.0.0-not-this")
