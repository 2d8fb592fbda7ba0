"""Image indexes and manifest lists for multi-platform images."""

from __future__ import annotations

import json

import pytest

from lamina.oci.index import IndexEntry, make_index, platform_of
from lamina.oci.model import DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST


def entry(arch: str, variant: str = "", media_type: str = OCI_MANIFEST) -> IndexEntry:
    return IndexEntry(media_type, "sha256:" + arch[0] * 64, 400, "linux", arch, variant)


def test_oci_index_with_platforms_in_order() -> None:
    body, media_type = make_index([entry("amd64"), entry("arm", "v7")])
    assert media_type == OCI_INDEX
    data = json.loads(body)
    assert data["mediaType"] == OCI_INDEX and data["schemaVersion"] == 2
    assert [m["platform"] for m in data["manifests"]] == [
        {"architecture": "amd64", "os": "linux"}, {"architecture": "arm", "os": "linux", "variant": "v7"}]


def test_docker_manifests_make_a_manifest_list() -> None:
    _, media_type = make_index([entry("amd64", media_type=DOCKER_MANIFEST), entry("arm64", media_type=DOCKER_MANIFEST)])
    assert media_type == DOCKER_MANIFEST_LIST
    _, mixed = make_index([entry("amd64", media_type=DOCKER_MANIFEST), entry("arm64")])
    assert mixed == OCI_INDEX


@pytest.mark.parametrize(("entries", "message"), [
    ([], "at least one image"),
    ([entry("amd64"), entry("amd64")], "two images for platform linux/amd64"),
    ([entry("amd64", media_type=OCI_INDEX)], "is not an image manifest"),
])
def test_bad_indexes(entries: list[IndexEntry], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_index(entries)


def test_platform_of_config() -> None:
    assert platform_of({"os": "linux", "architecture": "arm", "variant": "v7"}) == ("linux", "arm", "v7", "")
    with pytest.raises(ValueError, match="os and architecture"):
        platform_of({"os": "linux"})
