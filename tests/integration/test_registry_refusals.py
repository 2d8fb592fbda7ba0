"""Registry refusals as managed registries answer them (ECR, Harbor, GitLab), through a scripted server: each error
names the registry, the repository, the HTTP status and what to do."""

from __future__ import annotations

import json

import pytest
from pytest_httpserver import HTTPServer

from lamina.errors import ImmutableTag
from lamina.oci.model import OCI_MANIFEST
from lamina.oci.reference import Reference
from lamina.oci.registry.client import RegistryClient, RegistryConfig

MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                  "digest": "sha256:" + "a" * 64, "size": 2}, "layers": []}).encode()


@pytest.fixture
def client(httpserver: HTTPServer) -> RegistryClient:
    httpserver.expect_request("/v2/").respond_with_data("{}", status=200)
    return RegistryClient(RegistryConfig(insecure_registries=(f"127.0.0.1:{httpserver.port}",), retries=0,
                                         push_retries=0))


@pytest.mark.parametrize(("status", "body"), [
    # ECR: ImageTagAlreadyExistsException surfaces as 400 TAG_INVALID through the registry API
    (400, {"errors": [{"code": "TAG_INVALID", "message": "The image tag '1.0' already exists in the 'app' repository "
                                                         "and cannot be overwritten because the repository is "
                                                         "immutable."}]}),
    # Artifact Registry
    (400, {"errors": [{"code": "UNKNOWN", "message": "The repository has enabled tag immutability."}]}),
    # Harbor since 1.10: 412 DENIED from its immutable tag middleware
    (412, {"errors": [{"code": "DENIED", "message": "The tag:team/app:1.0 is immutable, cannot be overwrite."}]}),
    # Harbor before: 409 with an "immutable" message
    (409, {"errors": [{"code": "PRECONDITION", "message": "Failed to process request due to 'app:1.0' configured as "
                                                          "immutable."}]}),
])
def test_an_immutable_tag_is_explained(client: RegistryClient, httpserver: HTTPServer, status: int,
                                       body: dict[str, object]) -> None:
    httpserver.expect_request("/v2/team/app/manifests/1.0", method="PUT").respond_with_json(body, status=status)
    ref = Reference.parse(f"127.0.0.1:{httpserver.port}/team/app:1.0")
    with pytest.raises(ImmutableTag) as info:
        client.push_manifest(ref, MANIFEST, OCI_MANIFEST)
    error = info.value
    assert error.status == status
    assert "immutable tags" in str(error) and "tag 1.0" in str(error)
    assert f"127.0.0.1:{httpserver.port}" in str(error) and "team/app" in str(error)
    assert "push a new tag" in str(error)
