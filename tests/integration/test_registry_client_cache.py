"""The registry client's cache operations: fetch_manifest, mount_blob / ensure_blob, list_tags, delete_manifest;
against Debian's docker-registry and, for Bearer scopes and what it cannot show, a small scripted fake."""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from lamina.errors import AuthError, DigestMismatch, RegistryError
from lamina.oci.digest import compute_digest
from lamina.oci.model import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, Descriptor, Manifest, Platform
from lamina.oci.reference import Reference
from lamina.oci.registry.client import DELETE_DISABLED_HINT, FetchedManifest, RegistryClient, RegistryConfig
from tests.support.registry import RunningRegistry, free_port

pytestmark = pytest.mark.integration


def _repo(prefix: str = "cache-client") -> str:
    return f"lamina-test/{prefix}-{uuid.uuid4().hex[:10]}"


def _config(host: str, tmp_path: Path, **kw: Any) -> RegistryConfig:
    empty = tmp_path / "no-docker-config"
    empty.mkdir(exist_ok=True)
    kw.setdefault("docker_config_dir", str(empty))
    kw.setdefault("insecure_registries", (host,))
    kw.setdefault("retries", 1)
    kw.setdefault("timeout", 10.0)
    return RegistryConfig(**kw)


def _blob(tmp_path: Path, size: int = 2000) -> tuple[Path, Descriptor]:
    data = os.urandom(size)
    path = tmp_path / f"blob-{uuid.uuid4().hex[:8]}"
    path.write_bytes(data)
    return path, Descriptor(OCI_LAYER_GZIP, compute_digest(data), size)


def _push_image(client: RegistryClient, ref: Reference, tmp_path: Path, marker: str = "") -> tuple[bytes, str]:
    """Push a tiny image (a config and one random layer) to ``ref``; return (manifest body, digest)."""
    path, layer = _blob(tmp_path, 500)
    client.push_blob(ref, layer, path)
    config = client.push_blob_bytes(ref, json.dumps({"marker": marker or uuid.uuid4().hex}).encode(), OCI_CONFIG)
    body = Manifest(config, (layer,), OCI_MANIFEST, {"dev.lamina.test": marker}).to_bytes()
    return body, client.push_manifest(ref, body, OCI_MANIFEST)


def _live_uploads(reg: RunningRegistry, repository: str) -> list[str]:
    """The upload sessions open in ``repository`` (a cancelled one loses its ``startedat``; distribution 2.8 leaves
    its hash state behind)."""
    uploads = reg.data_dir / "docker" / "registry" / "v2" / "repositories" / repository / "_uploads"
    return sorted(p.name for p in uploads.iterdir() if (p / "startedat").exists()) if uploads.is_dir() else []


# -- fetch_manifest -------------------------------------------------------------------------------------------------


def test_fetch_manifest_hit_and_miss(registry: RunningRegistry, tmp_path: Path) -> None:
    ref = Reference.parse(f"{registry.host}/{_repo()}:v1")
    with RegistryClient(_config(registry.host, tmp_path)) as client:
        body, digest = _push_image(client, ref, tmp_path, "fetch")
        by_tag = client.fetch_manifest(ref)
        assert by_tag == FetchedManifest(digest, OCI_MANIFEST, body)
        assert client.fetch_manifest(Reference.parse(f"{ref.name}@{digest}")) == by_tag
        assert client.fetch_manifest(ref, accept=OCI_MANIFEST) == by_tag

        assert client.fetch_manifest(ref.with_tag("absent")) is None
        assert client.fetch_manifest(Reference.parse(f"{ref.name}@{compute_digest(b'none')}")) is None
        assert client.fetch_manifest(Reference.parse(f"{registry.host}/{_repo('never')}:v1")) is None


def test_fetch_manifest_never_uses_mirrors(registry: RunningRegistry, tmp_path: Path) -> None:
    """A docker.io reference is read from Docker Hub itself (unreachable here, or without that image), never from
    the mirror that has it."""
    name = f"lamina-cache-mirror-{uuid.uuid4().hex[:8]}"
    with RegistryClient(_config(registry.host, tmp_path)) as client:
        _push_image(client, Reference.parse(f"{registry.host}/library/{name}:1"), tmp_path)
    hub = Reference.parse(f"{name}:1")
    config = _config(registry.host, tmp_path, registry_mirrors=(registry.host,), retries=0, timeout=5.0)
    with RegistryClient(config) as client:
        try:
            fetched = client.fetch_manifest(hub)
        except RegistryError:
            fetched = None
        assert fetched is None
        assert client.resolve_image(hub, Platform()).reference.registry == registry.host  # the mirror has it


# -- mounts ---------------------------------------------------------------------------------------------------------


def test_mount_blob_between_repositories(registry: RunningRegistry, tmp_path: Path) -> None:
    source = Reference.parse(f"{registry.host}/{_repo('src')}:v1")
    dest = Reference.parse(f"{registry.host}/{_repo('dst')}:v1")
    path, descriptor = _blob(tmp_path)
    with RegistryClient(_config(registry.host, tmp_path)) as client:
        client.push_blob(source, descriptor, path)
        assert not client.blob_exists(dest, descriptor.digest)
        assert client.mount_blob(dest, descriptor.digest, source) is True
        assert client.blob_exists(dest, descriptor.digest)
        client.fetch_blob(dest, descriptor, tmp_path / "mounted")
    assert (tmp_path / "mounted").read_bytes() == path.read_bytes()
    assert _live_uploads(registry, dest.repository) == []


def test_mount_blob_the_source_lacks(registry: RunningRegistry, tmp_path: Path) -> None:
    source = Reference.parse(f"{registry.host}/{_repo('src')}:v1")
    dest = Reference.parse(f"{registry.host}/{_repo('dst')}:v1")
    with RegistryClient(_config(registry.host, tmp_path)) as client:
        _push_image(client, source, tmp_path)  # the source repository exists, without that blob
        _push_image(client, dest, tmp_path)
        missing = compute_digest(b"never pushed anywhere " + uuid.uuid4().bytes)
        assert client.mount_blob(dest, missing, source) is False
        assert not client.blob_exists(dest, missing)
    assert _live_uploads(registry, dest.repository) == []  # the upload the registry started was cancelled


def test_mount_blob_needs_one_registry(registry: RunningRegistry, tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    with RegistryClient(_config(registry.host, tmp_path, retries=0)) as client:
        # no request at all: the destination is not even reachable
        assert client.mount_blob(Reference.parse(f"{dead}/a/b:v1"), compute_digest(b"x"),
                                 Reference.parse(f"{registry.host}/a/b:v1")) is False


def test_ensure_blob(registry: RunningRegistry, tmp_path: Path) -> None:
    source = Reference.parse(f"{registry.host}/{_repo('src')}:v1")
    dest = Reference.parse(f"{registry.host}/{_repo('dst')}:v1")
    elsewhere = Reference.parse(f"127.0.0.1:{free_port()}/{source.repository}:v1")
    mounted_path, mounted = _blob(tmp_path)
    local_path, local = _blob(tmp_path)
    with RegistryClient(_config(registry.host, tmp_path)) as client:
        client.push_blob(source, mounted, mounted_path)
        empty = Reference.parse(f"{registry.host}/{_repo('empty')}:v1")
        client.ensure_blob(dest, mounted, sources=(elsewhere, empty, source), path=None)  # mounted from source
        assert client.blob_exists(dest, mounted.digest)
        client.ensure_blob(dest, mounted, sources=(), path=None)  # already there

        with pytest.raises(RegistryError) as info:
            client.ensure_blob(dest, local, sources=(elsewhere, source), path=None)
        message = str(info.value)
        assert f"blob {local.digest} is not in {dest.name}" in message
        assert f"could not be mounted from {source.repository}" in message
        assert "no local copy" in message
        assert registry.host in message

        client.ensure_blob(dest, local, sources=(source,), path=local_path)  # uploaded
        assert client.blob_exists(dest, local.digest)
        assert not client.blob_exists(source, local.digest)

        third = Reference.parse(f"{registry.host}/{_repo('third')}:v1")
        client.push_blob(third, mounted, tmp_path / "does-not-exist", mount_from=source)  # mounted, path unused
        assert client.blob_exists(third, mounted.digest)
    for repository in (dest.repository, third.repository):
        assert _live_uploads(registry, repository) == []


def test_mount_with_basic_auth(auth_registry: RunningRegistry, docker_config: Path, tmp_path: Path) -> None:
    source = Reference.parse(f"{auth_registry.host}/{_repo('src')}:v1")
    dest = Reference.parse(f"{auth_registry.host}/{_repo('dst')}:v1")
    path, descriptor = _blob(tmp_path)
    with RegistryClient(_config(auth_registry.host, tmp_path, docker_config_dir=str(docker_config))) as client:
        client.push_blob(source, descriptor, path)
        assert client.mount_blob(dest, descriptor.digest, source) is True
        assert client.blob_exists(dest, descriptor.digest)
        assert client.mount_blob(dest, compute_digest(b"absent"), source) is False
        _, digest = _push_image(client, dest, tmp_path)
        assert client.list_tags(dest) == ["v1"]
        client.delete_manifest(dest, digest)
        assert client.list_tags(dest) == []
    assert _live_uploads(auth_registry, dest.repository) == []
    with RegistryClient(_config(auth_registry.host, tmp_path)) as anonymous:
        # a refused mount is no error (the caller uploads instead); the upload path says what is wrong
        assert anonymous.mount_blob(dest, descriptor.digest, source) is False
        with pytest.raises(AuthError, match="no credentials"):
            anonymous.ensure_blob(dest, descriptor, sources=(source,), path=path)


# -- tags and deletion ----------------------------------------------------------------------------------------------


def test_list_tags_with_pagination(registry: RunningRegistry, tmp_path: Path) -> None:
    ref = Reference.parse(f"{registry.host}/{_repo()}:v1")
    tags = ["a1", "b2", "c3", "d4", "e5"]
    with RegistryClient(_config(registry.host, tmp_path)) as client:
        body, _ = _push_image(client, ref, tmp_path)
        for tag in tags:
            client.push_manifest(ref.with_tag(tag), body, OCI_MANIFEST)
        expected = sorted([*tags, "v1"])
        # docker-registry 2.8 ignores n (it sends every tag, unsorted, without Link): the fake below paginates
        assert sorted(client.list_tags(ref, page_size=2)) == expected
        assert sorted(client.list_tags(ref)) == expected
        assert client.list_tags(Reference.parse(f"{registry.host}/{_repo('never')}:v1")) == []
        with pytest.raises(ValueError):
            client.list_tags(ref, page_size=0)


def test_delete_manifest(registry: RunningRegistry, tmp_path: Path) -> None:
    ref = Reference.parse(f"{registry.host}/{_repo()}:v1")
    with RegistryClient(_config(registry.host, tmp_path)) as client:
        body, digest = _push_image(client, ref, tmp_path)
        client.push_manifest(ref.with_tag("v2"), body, OCI_MANIFEST)
        other_body, other = _push_image(client, ref.with_tag("other"), tmp_path)
        client.delete_manifest(ref, digest)
        assert client.fetch_manifest(ref) is None
        assert client.fetch_manifest(Reference.parse(f"{ref.name}@{digest}")) is None
        assert client.list_tags(ref) == ["other"]
        assert client.fetch_manifest(ref.with_tag("other")) == FetchedManifest(other, OCI_MANIFEST, other_body)
        client.delete_manifest(ref, digest)  # already gone: fine
        with pytest.raises(ValueError, match="digest"):
            client.delete_manifest(ref, "v1")


# -- a scripted Bearer registry: scopes, absolute links, upload cancellation ----------------------------------------------


@dataclass
class BearerState:
    scopes: list[list[str]] = field(default_factory=list)
    tokens: dict[str, list[str]] = field(default_factory=dict)  # token -> scopes it was issued for
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # method, path, scopes of the token
    blobs: dict[str, set[str]] = field(default_factory=dict)  # repository -> digests
    tags: list[str] = field(default_factory=list)
    deny_mount: bool = False
    delete_status: int = 202
    absolute_links: bool = True
    tag_queries: list[dict[str, list[str]]] = field(default_factory=list)


@dataclass
class BearerRegistry:
    host: str
    state: BearerState


def _bearer_handler(state: BearerState, host_of: list[str]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _handle(self) -> None:
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if url.path == "/token":
                token = uuid.uuid4().hex
                state.scopes.append(query.get("scope", []))
                state.tokens[token] = query.get("scope", [])
                return self._reply(200, json.dumps({"token": token}).encode())
            auth = self.headers.get("Authorization", "")
            granted = state.tokens.get(auth.removeprefix("Bearer "))
            if granted is None:
                realm = f"http://{host_of[0]}/token"
                return self._reply(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}',
                                   {"WWW-Authenticate": f'Bearer realm="{realm}",service="fake"'})
            state.requests.append((self.command, url.path, " ".join(granted)))
            name = url.path.removeprefix("/v2/").split("/blobs/")[0].split("/manifests/")[0].split("/tags/")[0]
            if self.command == "POST" and url.path.endswith("/blobs/uploads/"):
                digest, source = query.get("mount", [""])[0], query.get("from", [""])[0]
                if state.deny_mount:
                    return self._reply(403, b'{"errors":[{"code":"DENIED"}]}')
                if digest in state.blobs.get(source, set()):
                    state.blobs.setdefault(name, set()).add(digest)
                    return self._reply(201, b"", {"Location": f"/v2/{name}/blobs/{digest}"})
                return self._reply(202, b"", {"Location": f"/v2/{name}/blobs/uploads/{uuid.uuid4().hex}"})
            if self.command == "DELETE" and "/blobs/uploads/" in url.path:
                return self._reply(204)
            if self.command == "DELETE" and "/manifests/" in url.path:
                if state.delete_status == 405:
                    return self._reply(405, b'{"errors":[{"code":"UNSUPPORTED","message":"The operation is'
                                            b' unsupported."}]}')
                return self._reply(state.delete_status)
            if self.command == "HEAD" and "/blobs/" in url.path:
                return self._reply(200 if url.path.split("/")[-1] in state.blobs.get(name, set()) else 404)
            if url.path.endswith("/tags/list"):
                state.tag_queries.append(query)
                last = query.get("last", [""])[0]
                n = int(query.get("n", ["3"])[0])  # the fake's own default page size is 3
                rest = [tag for tag in state.tags if tag > last]
                page, more = rest[:n], len(rest) > n
                headers = {"Content-Type": "application/json"}
                if more:  # with another link before it
                    base = f"http://{host_of[0]}" if state.absolute_links else ""
                    headers["Link"] = (f'<{base}/v2/{name}/tags/list?n=99>; rel="last", '
                                       f'<{base}/v2/{name}/tags/list?n={n}&last={page[-1]}>; rel="next"')
                return self._reply(200, json.dumps({"name": name, "tags": page}).encode(), headers)
            return self._reply(404, b'{"errors":[{"code":"NAME_UNKNOWN"}]}')

        do_GET = do_HEAD = do_POST = do_DELETE = _handle

    return Handler


@pytest.fixture
def bearer() -> Iterator[BearerRegistry]:
    state = BearerState()
    host_of: list[str] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _bearer_handler(state, host_of))
    host_of.append(f"127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield BearerRegistry(host_of[0], state)
    server.shutdown()
    server.server_close()
    thread.join()


def test_mount_token_carries_both_scopes(bearer: BearerRegistry, tmp_path: Path) -> None:
    digest = compute_digest(b"layer")
    bearer.state.blobs["team/base"] = {digest}
    dest = Reference.parse(f"{bearer.host}/team/app:v1")
    source = Reference.parse(f"{bearer.host}/team/base:v1")
    with RegistryClient(_config(bearer.host, tmp_path)) as client:
        assert client.mount_blob(dest, digest, source) is True
        assert client.mount_blob(dest, compute_digest(b"other"), source) is False
    both = ["repository:team/app:pull,push", "repository:team/base:pull"]
    assert bearer.state.scopes[0] == both
    posts = [r for r in bearer.state.requests if r[0] == "POST"]
    assert posts == [("POST", "/v2/team/app/blobs/uploads/", " ".join(both))] * 2
    cancels = [r for r in bearer.state.requests if r[0] == "DELETE"]
    assert len(cancels) == 1 and cancels[0][1].startswith("/v2/team/app/blobs/uploads/")
    assert ["repository:team/app:delete"] in bearer.state.scopes


def test_mount_refused_means_upload(bearer: BearerRegistry, tmp_path: Path) -> None:
    bearer.state.deny_mount = True
    with RegistryClient(_config(bearer.host, tmp_path)) as client:
        assert client.mount_blob(Reference.parse(f"{bearer.host}/team/app:v1"), compute_digest(b"x"),
                                 Reference.parse(f"{bearer.host}/team/base:v1")) is False


def test_delete_scope_and_refusal(bearer: BearerRegistry, tmp_path: Path) -> None:
    ref = Reference.parse(f"{bearer.host}/team/cache:v1")
    digest = compute_digest(b"manifest")
    with RegistryClient(_config(bearer.host, tmp_path)) as client:
        client.delete_manifest(ref, digest)
        bearer.state.delete_status = 404
        client.delete_manifest(ref, digest)
        bearer.state.delete_status = 405
        with pytest.raises(RegistryError) as info:
            client.delete_manifest(ref, digest)
        bearer.state.delete_status = 500
        with pytest.raises(RegistryError) as failed:
            client.delete_manifest(ref, digest)
    assert bearer.state.scopes == [["repository:team/cache:delete"]]
    assert info.value.status == 405
    assert DELETE_DISABLED_HINT in str(info.value)
    assert f"{bearer.host}/team/cache" in str(info.value)
    assert failed.value.status == 500 and not isinstance(failed.value, DigestMismatch)


@pytest.mark.parametrize("absolute", [True, False], ids=["absolute-link", "relative-link"])
def test_list_tags_follows_links(bearer: BearerRegistry, tmp_path: Path, absolute: bool) -> None:
    bearer.state.absolute_links = absolute
    bearer.state.tags = [f"t{i}" for i in range(7)]
    ref = Reference.parse(f"{bearer.host}/team/cache:v1")
    with RegistryClient(_config(bearer.host, tmp_path)) as client:
        assert client.list_tags(ref, page_size=2) == bearer.state.tags
        assert [q.get("n") for q in bearer.state.tag_queries] == [["2"]] * 4
        assert [q.get("last") for q in bearer.state.tag_queries] == [None, ["t1"], ["t3"], ["t5"]]
        bearer.state.tag_queries.clear()
        assert client.list_tags(ref) == bearer.state.tags  # no n: the registry's page size, links followed
        assert len(bearer.state.tag_queries) == 3 and "n" not in bearer.state.tag_queries[0]
        bearer.state.tags = [f"t{i}" for i in range(6)]  # a full last page: the link leads to an empty one
        assert client.list_tags(ref, page_size=3) == bearer.state.tags
    assert bearer.state.scopes == [["repository:team/cache:pull"]]
