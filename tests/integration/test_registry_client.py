"""The registry client against real registries (Debian's docker-registry on loopback) and, for what a plain
distribution server cannot show (Bearer tokens, 503s, corrupt blobs, 403s), a small scripted fake registry."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from lamina.errors import AuthError, DigestMismatch, NotFound, RegistryError, RegistryUnreachable
from lamina.oci.digest import compute_digest
from lamina.oci.model import (
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Descriptor,
    Manifest,
    Platform,
    canonical_json,
)
from lamina.oci.reference import Reference
from lamina.oci.registry.client import RegistryClient, RegistryConfig
from lamina.progress import NullProgress
from tests.conftest import AUTH_USER
from tests.support.registry import RunningRegistry, free_port

pytestmark = pytest.mark.integration

SMALL_CHUNK = 64 * 1024


# -- helpers ------------------------------------------------------------------------------------------------------


class RecordingProgress(NullProgress):
    def __init__(self) -> None:
        self.started: list[tuple[str, int | None]] = []
        self.advanced: dict[str, list[int]] = {}
        self.finished: list[str] = []

    def transfer_started(self, key: str, description: str, total: int | None) -> None:
        self.started.append((key, total))
        self.advanced[key] = []

    def transfer_advanced(self, key: str, amount: int) -> None:
        self.advanced[key].append(amount)

    def transfer_finished(self, key: str) -> None:
        self.finished.append(key)


def _repo(prefix: str = "client") -> str:
    return f"lamina-test/{prefix}-{uuid.uuid4().hex[:10]}"


def _config(reg: RunningRegistry | str, tmp_path: Path, **kw: Any) -> RegistryConfig:
    host = reg if isinstance(reg, str) else reg.host
    empty = tmp_path / "no-docker-config"
    empty.mkdir(exist_ok=True)
    kw.setdefault("docker_config_dir", str(empty))
    kw.setdefault("insecure_registries", (host,))
    kw.setdefault("retries", 1)
    kw.setdefault("timeout", 10.0)
    return RegistryConfig(**kw)


def _layer(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o644
            tf.addfile(info, io.BytesIO(content))
    return gzip.compress(raw.getvalue(), mtime=0)


@dataclass
class Image:
    manifest: Manifest
    manifest_bytes: bytes
    config_bytes: bytes
    layers: list[bytes] = field(default_factory=list)

    @property
    def digest(self) -> str:
        return compute_digest(self.manifest_bytes)


def _image(arch: str = "amd64", *, docker: bool = False, marker: str = "") -> Image:
    layer = _layer({"hello.txt": f"hello from {arch} {marker}\n".encode()})
    diff_id = "sha256:" + hashlib.sha256(gzip.decompress(layer)).hexdigest()
    config = {"architecture": arch, "os": "linux", "config": {"Cmd": ["/hello"], "Env": [f"MARKER={marker}"]},
              "rootfs": {"type": "layers", "diff_ids": [diff_id]}}
    config_bytes = canonical_json(config)
    manifest = Manifest(Descriptor(DOCKER_CONFIG if docker else OCI_CONFIG, compute_digest(config_bytes),
                                   len(config_bytes)),
                        (Descriptor(DOCKER_LAYER_GZIP if docker else OCI_LAYER_GZIP, compute_digest(layer),
                                    len(layer)),),
                        DOCKER_MANIFEST if docker else OCI_MANIFEST)
    return Image(manifest, manifest.to_bytes(), config_bytes, [layer])


def _push_image(client: RegistryClient, ref: Reference, image: Image, tmp_path: Path) -> str:
    for layer, descriptor in zip(image.layers, image.manifest.layers, strict=True):
        path = tmp_path / f"layer-{descriptor.digest[7:19]}"
        path.write_bytes(layer)
        client.push_blob(ref, descriptor, path)
    config = client.push_blob_bytes(ref, image.config_bytes, image.manifest.config.media_type)
    assert config == image.manifest.config
    return client.push_manifest(ref, image.manifest_bytes, image.manifest.media_type)


def _skopeo_inspect(ref: str, *extra: str) -> dict[str, Any]:
    out = subprocess.run(["skopeo", "inspect", "--tls-verify=false", *extra, f"docker://{ref}"],
                         check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def _blob_file(tmp_path: Path, size: int) -> tuple[Path, Descriptor]:
    data = os.urandom(size)
    path = tmp_path / f"blob-{size}"
    path.write_bytes(data)
    return path, Descriptor(OCI_LAYER_GZIP, compute_digest(data), size)


# -- blobs ----------------------------------------------------------------------------------------------------------


def test_push_small_blob_monolithic_then_fetch(registry: RunningRegistry, tmp_path: Path) -> None:
    progress = RecordingProgress()
    ref = Reference.parse(f"{registry.host}/{_repo()}:v1")
    path, descriptor = _blob_file(tmp_path, 10_000)
    with RegistryClient(_config(registry, tmp_path), progress) as client:
        assert not client.blob_exists(ref, descriptor.digest)
        client.push_blob(ref, descriptor, path)
        assert client.blob_exists(ref, descriptor.digest)
        assert progress.advanced[f"push {descriptor.digest}"] == [10_000]

        client.push_blob(ref, descriptor, path)  # already there: skipped, no second transfer
        assert [key for key, _ in progress.started].count(f"push {descriptor.digest}") == 1

        dest = tmp_path / "out" / "blob"
        client.fetch_blob(ref, descriptor, dest)
    assert dest.read_bytes() == path.read_bytes()
    assert not dest.with_name("blob.tmp").exists()
    assert sum(progress.advanced[f"pull {descriptor.digest}"]) == 10_000
    assert f"pull {descriptor.digest}" in progress.finished


def test_push_large_blob_in_chunks(registry: RunningRegistry, tmp_path: Path) -> None:
    progress = RecordingProgress()
    ref = Reference.parse(f"{registry.host}/{_repo()}:v1")
    size = 3 * SMALL_CHUNK + 1234
    path, descriptor = _blob_file(tmp_path, size)
    with RegistryClient(_config(registry, tmp_path, chunk_size=SMALL_CHUNK), progress) as client:
        client.push_blob(ref, descriptor, path)
        assert progress.advanced[f"push {descriptor.digest}"] == [SMALL_CHUNK] * 3 + [1234]
        assert client.blob_exists(ref, descriptor.digest)
        dest = tmp_path / "fetched"
        client.fetch_blob(ref, descriptor, dest)
    assert dest.read_bytes() == path.read_bytes()


def test_push_blob_bytes_larger_than_a_chunk(registry: RunningRegistry, tmp_path: Path) -> None:
    ref = Reference.parse(f"{registry.host}/{_repo()}:v1")
    data = os.urandom(SMALL_CHUNK * 2 + 7)
    with RegistryClient(_config(registry, tmp_path, chunk_size=SMALL_CHUNK)) as client:
        descriptor = client.push_blob_bytes(ref, data, OCI_CONFIG)
        assert descriptor == Descriptor(OCI_CONFIG, compute_digest(data), len(data))
        client.fetch_blob(ref, descriptor, tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == data


def test_fetch_blob_that_does_not_match_its_descriptor(registry: RunningRegistry, tmp_path: Path) -> None:
    ref = Reference.parse(f"{registry.host}/{_repo()}:v1")
    path, descriptor = _blob_file(tmp_path, 5000)
    dest = tmp_path / "dest"
    with RegistryClient(_config(registry, tmp_path)) as client:
        client.push_blob(ref, descriptor, path)
        with pytest.raises(DigestMismatch) as info:
            client.fetch_blob(ref, Descriptor(descriptor.media_type, descriptor.digest, 4999), dest)
        assert descriptor.digest in str(info.value)
        assert registry.host in str(info.value)
        missing = Descriptor(OCI_LAYER_GZIP, compute_digest(b"never pushed"), 12)
        with pytest.raises(NotFound, match="blob sha256:.* not found"):
            client.fetch_blob(ref, missing, dest)
    assert not dest.exists()
    assert not (tmp_path / "dest.tmp").exists()


# -- images ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("docker", [False, True], ids=["oci", "docker"])
def test_push_image_then_resolve(registry: RunningRegistry, tmp_path: Path, docker: bool) -> None:
    image = _image(docker=docker, marker="single")
    ref = Reference.parse(f"{registry.host}/{_repo()}:1.0")
    with RegistryClient(_config(registry, tmp_path, chunk_size=SMALL_CHUNK)) as client:
        digest = _push_image(client, ref, image, tmp_path)
        assert digest == image.digest

        resolved = client.resolve_image(ref, Platform("linux", "amd64"))
        assert resolved.reference == ref
        assert resolved.manifest_digest == digest
        assert resolved.manifest == image.manifest
        assert resolved.config_bytes == image.config_bytes
        assert resolved.config["config"]["Env"] == ["MARKER=single"]

        by_digest = client.resolve_image(ref.with_digest(digest), Platform())
        assert by_digest.manifest_digest == digest

        layer = resolved.manifest.layers[0]
        client.fetch_blob(resolved.reference, layer, tmp_path / "layer.tgz")
    assert (tmp_path / "layer.tgz").read_bytes() == image.layers[0]

    info = _skopeo_inspect(str(ref))
    assert info["Digest"] == digest
    assert info["Architecture"] == "amd64"
    assert info["Layers"] == [layer.digest]
    assert _skopeo_inspect(str(ref), "--config")["config"]["Env"] == ["MARKER=single"]


def test_push_manifest_by_digest(registry: RunningRegistry, tmp_path: Path) -> None:
    image = _image(marker="by-digest")
    base = Reference.parse(f"{registry.host}/{_repo()}:unused")
    with RegistryClient(_config(registry, tmp_path)) as client:
        _push_image(client, base, image, tmp_path)
        pinned = Reference.parse(f"{base.name}@{image.digest}")
        assert client.push_manifest(pinned, image.manifest_bytes, OCI_MANIFEST) == image.digest
        assert client.resolve_image(pinned, Platform()).manifest_digest == image.digest
        with pytest.raises(DigestMismatch):
            client.push_manifest(Reference.parse(f"{base.name}@{compute_digest(b'x')}"), image.manifest_bytes,
                                 OCI_MANIFEST)


def test_push_manifest_with_missing_blob(registry: RunningRegistry, tmp_path: Path) -> None:
    image = _image(marker="no blobs")
    ref = Reference.parse(f"{registry.host}/{_repo()}:v1")
    with RegistryClient(_config(registry, tmp_path)) as client, pytest.raises(RegistryError) as info:
        client.push_manifest(ref, image.manifest_bytes, OCI_MANIFEST)
    assert info.value.status == 400
    assert "blob" in str(info.value)


@pytest.mark.parametrize("docker", [False, True], ids=["oci-index", "docker-list"])
def test_resolve_index_picks_the_platform(registry: RunningRegistry, tmp_path: Path, docker: bool) -> None:
    ref = Reference.parse(f"{registry.host}/{_repo()}:multi")
    images = {"amd64": _image("amd64", docker=docker), "arm64": _image("arm64", docker=docker)}
    with RegistryClient(_config(registry, tmp_path)) as client:
        entries = []
        for arch, image in images.items():
            digest = _push_image(client, ref.with_tag(f"only-{arch}"), image, tmp_path)
            entries.append({"mediaType": image.manifest.media_type, "digest": digest,
                            "size": len(image.manifest_bytes), "platform": {"architecture": arch, "os": "linux"}})
        attestation = _image("unknown", docker=docker)
        entries.append({"mediaType": attestation.manifest.media_type,
                        "digest": _push_image(client, ref.with_tag("attestation"), attestation, tmp_path),
                        "size": len(attestation.manifest_bytes),
                        "platform": {"architecture": "unknown", "os": "unknown"}})
        index_type = DOCKER_MANIFEST_LIST if docker else OCI_INDEX
        index = canonical_json({"schemaVersion": 2, "mediaType": index_type, "manifests": entries})
        client.push_manifest(ref, index, index_type)

        for arch in ("arm64", "amd64"):
            resolved = client.resolve_image(ref, Platform("linux", arch))
            assert resolved.manifest_digest == images[arch].digest
            assert resolved.config["architecture"] == arch
        assert client.resolve_image(ref, Platform("linux", "arm64", "v8")).config["architecture"] == "arm64"

        with pytest.raises(NotFound) as info:
            client.resolve_image(ref, Platform("linux", "s390x"))
    message = str(info.value)
    assert "linux/s390x" in message
    assert "linux/amd64, linux/arm64" in message
    assert "unknown" not in message


def test_missing_tag_and_repository(registry: RunningRegistry, tmp_path: Path) -> None:
    ref = Reference.parse(f"{registry.host}/{_repo()}:v1")
    with RegistryClient(_config(registry, tmp_path)) as client:
        _push_image(client, ref, _image(), tmp_path)
        with pytest.raises(NotFound) as info:
            client.resolve_image(ref.with_tag("nope"), Platform())
        assert f"image {ref.name}:nope not found" in str(info.value)
        assert info.value.status == 404
        with pytest.raises(NotFound, match="not found"):
            client.resolve_image(Reference.parse(f"{registry.host}/{_repo('absent')}:v1"), Platform())


def test_unreachable_registry(tmp_path: Path) -> None:
    host = f"127.0.0.1:{free_port()}"
    ref = Reference.parse(f"{host}/some/repo:v1")
    with RegistryClient(_config(host, tmp_path, insecure_registries=(), retries=1)) as client:
        with pytest.raises(RegistryUnreachable) as info:
            client.resolve_image(ref, Platform())
        assert host in str(info.value)
        assert "refused" in str(info.value)
        with pytest.raises(RegistryUnreachable):
            client.blob_exists(ref, compute_digest(b""))


def test_plain_http_loopback_without_insecure_flag(registry: RunningRegistry, tmp_path: Path) -> None:
    """127.0.0.1 falls back from HTTPS to plain HTTP like docker does."""
    ref = Reference.parse(f"{registry.host}/{_repo()}:v1")
    with RegistryClient(_config(registry, tmp_path, insecure_registries=())) as client:
        _push_image(client, ref, _image(marker="fallback"), tmp_path)
        assert client.resolve_image(ref, Platform()).config["config"]["Env"] == ["MARKER=fallback"]


# -- auth -----------------------------------------------------------------------------------------------------------


def test_auth_registry_without_credentials(auth_registry: RunningRegistry, tmp_path: Path) -> None:
    ref = Reference.parse(f"{auth_registry.host}/{_repo()}:v1")
    with RegistryClient(_config(auth_registry, tmp_path)) as client, pytest.raises(AuthError) as info:
        client.resolve_image(ref, Platform())
    message = str(info.value)
    assert f"no credentials for {auth_registry.host}" in message
    assert "config.json" in message
    assert "docker login" in message


def test_auth_registry_with_wrong_credentials(auth_registry: RunningRegistry, tmp_path: Path) -> None:
    wrong = "wrong-Passw0rd-xyz"
    config_dir = tmp_path / "wrong"
    config_dir.mkdir()
    (config_dir / "config.json").write_text(json.dumps(
        {"auths": {auth_registry.host: {"username": AUTH_USER, "password": wrong}}}))
    ref = Reference.parse(f"{auth_registry.host}/{_repo()}:v1")
    path, descriptor = _blob_file(tmp_path, 100)
    with RegistryClient(_config(auth_registry, tmp_path, docker_config_dir=str(config_dir))) as client:
        with pytest.raises(AuthError) as info:
            client.resolve_image(ref, Platform())
        with pytest.raises(AuthError) as push_info:
            client.push_blob(ref, descriptor, path)
    for error in (info.value, push_info.value):
        text = str(error) + repr(error) + repr(error.args)
        assert f"credentials for {auth_registry.host} were rejected" in str(error)
        assert wrong not in text
        assert error.status == 401


def test_auth_registry_with_docker_config(auth_registry: RunningRegistry, docker_config: Path,
                                          tmp_path: Path) -> None:
    ref = Reference.parse(f"{auth_registry.host}/{_repo()}:v1")
    image = _image(marker="auth")
    with RegistryClient(_config(auth_registry, tmp_path, docker_config_dir=str(docker_config))) as client:
        digest = _push_image(client, ref, image, tmp_path)
        resolved = client.resolve_image(ref, Platform())
        assert resolved.manifest_digest == digest
        client.fetch_blob(ref, resolved.manifest.layers[0], tmp_path / "layer")
    assert (tmp_path / "layer").read_bytes() == image.layers[0]


# -- mirrors --------------------------------------------------------------------------------------------------------


def test_docker_hub_image_through_mirror(registry: RunningRegistry, auth_registry: RunningRegistry,
                                         tmp_path: Path) -> None:
    name = f"lamina-mirror-{uuid.uuid4().hex[:8]}"
    image = _image(marker="mirrored")
    with RegistryClient(_config(registry, tmp_path)) as client:
        _push_image(client, Reference.parse(f"{registry.host}/library/{name}:1"), image, tmp_path)

    hub = Reference.parse(f"{name}:1")
    assert hub.registry == "docker.io"
    dead = f"127.0.0.1:{free_port()}"
    config = _config(registry, tmp_path, registry_mirrors=(dead, auth_registry.host, registry.host),
                     insecure_registries=(registry.host, auth_registry.host, dead), retries=0)
    with RegistryClient(config) as client:
        resolved = client.resolve_image(hub, Platform())
        assert resolved.reference.registry == registry.host
        assert resolved.reference.repository == f"library/{name}"
        assert resolved.manifest_digest == image.digest
        client.fetch_blob(hub, resolved.manifest.layers[0], tmp_path / "via-hub-ref")
        client.fetch_blob(resolved.reference, resolved.manifest.layers[0], tmp_path / "via-mirror-ref")
    assert (tmp_path / "via-hub-ref").read_bytes() == image.layers[0]
    assert (tmp_path / "via-mirror-ref").read_bytes() == image.layers[0]


# -- a scripted fake registry: Bearer tokens, retries, corrupt content, 403 --------------------------------------------


@dataclass
class FakeState:
    token_user: tuple[str, str] | None = None  # Basic credentials the token server wants (None: anonymous ok)
    issued: list[str] = field(default_factory=list)
    token_scopes: list[list[str]] = field(default_factory=list)
    token_auth: list[str | None] = field(default_factory=list)
    fail_next: dict[str, int] = field(default_factory=dict)  # method -> number of 503s to answer first
    corrupt: bool = False
    forbid_push: bool = False
    relative_location: bool = True
    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    uploads: dict[str, bytearray] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class FakeRegistry:
    host: str
    state: FakeState


def _handler(state: FakeState, host_of: list[str]) -> type[BaseHTTPRequestHandler]:
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

        def _error(self, status: int, code: str, headers: dict[str, str] | None = None) -> None:
            body = json.dumps({"errors": [{"code": code, "message": code.lower()}]}).encode()
            self._reply(status, body, {"Content-Type": "application/json", **(headers or {})})

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _handle(self) -> None:
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            body = self._body()
            state.requests.append((self.command, url.path))
            if url.path == "/token":
                auth = self.headers.get("Authorization")
                state.token_auth.append(auth)
                if state.token_user is not None:
                    expected = "Basic " + base64.b64encode(":".join(state.token_user).encode()).decode()
                    if auth != expected:
                        return self._reply(401, b'{"details":"bad credentials"}')
                token = f"tok-{uuid.uuid4().hex}"
                state.issued.append(token)
                state.token_scopes.append(query.get("scope", []))
                return self._reply(200, json.dumps({"token": token, "expires_in": 300}).encode())
            if state.fail_next.get(self.command, 0) > 0:
                state.fail_next[self.command] -= 1
                return self._reply(503, b"busy", {"Retry-After": "0"})
            auth = self.headers.get("Authorization", "")
            if not auth.startswith("Bearer ") or auth[7:] not in state.issued:
                realm = f"http://{host_of[0]}/token"
                return self._error(401, "UNAUTHORIZED",
                                   {"WWW-Authenticate": f'Bearer realm="{realm}",service="fake",scope="x:y:pull"'})
            parts = url.path.split("/")
            if self.command in ("POST", "PUT", "PATCH") and state.forbid_push:
                return self._error(403, "DENIED")
            if "/blobs/uploads/" in url.path:
                return self._upload(url.path, query, body)
            if "/blobs/" in url.path:
                digest = parts[-1]
                if digest not in state.blobs:
                    return self._error(404, "BLOB_UNKNOWN")
                data = state.blobs[digest]
                if state.corrupt:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                return self._reply(200, data, {"Docker-Content-Digest": digest})
            if "/manifests/" in url.path:
                target = parts[-1]
                if self.command == "PUT":
                    digest = compute_digest(body)
                    state.manifests[target] = state.manifests[digest] = (body, self.headers["Content-Type"])
                    return self._reply(201, b"", {"Docker-Content-Digest": digest})
                if target not in state.manifests:
                    return self._error(404, "MANIFEST_UNKNOWN")
                data, media_type = state.manifests[target]
                return self._reply(200, data, {"Content-Type": media_type,
                                               "Docker-Content-Digest": compute_digest(data)})
            return self._error(404, "NOT_FOUND")

        def _upload(self, path: str, query: dict[str, list[str]], body: bytes) -> None:
            name = path.split("/blobs/uploads/")[0]
            upload_id = path.split("/blobs/uploads/")[1]

            def location(uid: str) -> dict[str, str]:
                rel = f"{name}/blobs/uploads/{uid}?_state=x"
                return {"Location": rel if state.relative_location else f"http://{host_of[0]}{rel}"}

            if self.command == "POST":
                uid = uuid.uuid4().hex
                state.uploads[uid] = bytearray()
                return self._reply(202, b"", location(uid))
            buf = state.uploads[upload_id]
            if self.command == "PATCH":
                start = int(self.headers["Content-Range"].split("-")[0])
                if start != len(buf):
                    return self._error(416, "BLOB_UPLOAD_INVALID")
                buf += body
                return self._reply(202, b"", location(upload_id))
            buf += body
            digest = query["digest"][0]
            if compute_digest(bytes(buf)) != digest:
                return self._error(400, "DIGEST_INVALID")
            state.blobs[digest] = bytes(buf)
            return self._reply(201, b"", {"Docker-Content-Digest": digest})

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = _handle

    return Handler


@pytest.fixture
def fake() -> Iterator[FakeRegistry]:
    state = FakeState()
    host_of: list[str] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state, host_of))
    host_of.append(f"127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield FakeRegistry(host_of[0], state)
    server.shutdown()
    server.server_close()
    thread.join()


def test_bearer_tokens_per_scope_cached(fake: FakeRegistry, tmp_path: Path) -> None:
    ref = Reference.parse(f"{fake.host}/team/app:v1")
    image = _image(marker="bearer")
    with RegistryClient(_config(fake.host, tmp_path, chunk_size=SMALL_CHUNK)) as client:
        _push_image(client, ref, image, tmp_path)
        client.resolve_image(ref, Platform())
        client.resolve_image(ref, Platform())
    assert fake.state.token_scopes == [["repository:team/app:pull,push"], ["repository:team/app:pull"]]
    assert fake.state.token_auth == [None, None]


def test_bearer_token_with_credentials(fake: FakeRegistry, tmp_path: Path) -> None:
    fake.state.token_user = ("robot", "t0ken-pass")
    config_dir = tmp_path / "cfg"
    config_dir.mkdir()
    (config_dir / "config.json").write_text(json.dumps({"auths": {fake.host: {"username": "robot",
                                                                              "password": "t0ken-pass"}}}))
    ref = Reference.parse(f"{fake.host}/team/app:v1")
    with RegistryClient(_config(fake.host, tmp_path, docker_config_dir=str(config_dir))) as client:
        client.push_blob_bytes(ref, b"{}", OCI_CONFIG)
    assert fake.state.token_auth and all(a and a.startswith("Basic ") for a in fake.state.token_auth)

    fake.state.token_user = ("robot", "other")
    with RegistryClient(_config(fake.host, tmp_path, docker_config_dir=str(config_dir))) as client, \
            pytest.raises(AuthError) as info:
        client.blob_exists(ref, compute_digest(b"{}"))
    assert "were rejected" in str(info.value)
    assert "t0ken-pass" not in str(info.value) + repr(info.value)

    with RegistryClient(_config(fake.host, tmp_path)) as client, pytest.raises(AuthError) as info:
        client.blob_exists(ref, compute_digest(b"{}"))
    assert f"no credentials for {fake.host}" in str(info.value)


def test_retries_on_503(fake: FakeRegistry, tmp_path: Path) -> None:
    ref = Reference.parse(f"{fake.host}/team/app:v1")
    image = _image(marker="retry")
    fake.state.fail_next = {"GET": 2, "HEAD": 1}
    with RegistryClient(_config(fake.host, tmp_path, retries=2)) as client:
        _push_image(client, ref, image, tmp_path)
        assert client.resolve_image(ref, Platform()).manifest_digest == image.digest
    fake.state.fail_next = {"GET": 5}
    with RegistryClient(_config(fake.host, tmp_path, retries=1)) as client, pytest.raises(RegistryError) as info:
        client.resolve_image(ref, Platform())
    assert info.value.status == 503
    assert "try again later" in str(info.value)


@pytest.mark.parametrize("relative", [True, False], ids=["relative-location", "absolute-location"])
def test_chunked_upload_locations(fake: FakeRegistry, tmp_path: Path, relative: bool) -> None:
    fake.state.relative_location = relative
    ref = Reference.parse(f"{fake.host}/team/app:v1")
    path, descriptor = _blob_file(tmp_path, 2 * SMALL_CHUNK + 10)
    with RegistryClient(_config(fake.host, tmp_path, chunk_size=SMALL_CHUNK)) as client:
        client.push_blob(ref, descriptor, path)
    assert fake.state.blobs[descriptor.digest] == path.read_bytes()
    assert [m for m, _ in fake.state.requests].count("PATCH") == 3


def test_corrupt_blob_is_rejected(fake: FakeRegistry, tmp_path: Path) -> None:
    ref = Reference.parse(f"{fake.host}/team/app:v1")
    image = _image(marker="corrupt")
    with RegistryClient(_config(fake.host, tmp_path)) as client:
        _push_image(client, ref, image, tmp_path)
        fake.state.corrupt = True
        with pytest.raises(DigestMismatch):
            client.resolve_image(ref, Platform())  # the config blob
        with pytest.raises(DigestMismatch) as info:
            client.fetch_blob(ref, image.manifest.layers[0], tmp_path / "layer")
    assert image.manifest.layers[0].digest in str(info.value)
    assert not (tmp_path / "layer").exists()
    assert not (tmp_path / "layer.tmp").exists()


def test_forbidden_push(fake: FakeRegistry, tmp_path: Path) -> None:
    fake.state.forbid_push = True
    ref = Reference.parse(f"{fake.host}/team/app:v1")
    with RegistryClient(_config(fake.host, tmp_path)) as client, pytest.raises(AuthError) as info:
        client.push_blob_bytes(ref, b"{}", OCI_CONFIG)
    assert "access to" in str(info.value) and "team/app" in str(info.value)
    assert "denied (HTTP 403)" in str(info.value)
    assert "push permission" in str(info.value)


def test_revoked_token_is_renewed_once(fake: FakeRegistry, tmp_path: Path) -> None:
    ref = Reference.parse(f"{fake.host}/team/app:v1")
    with RegistryClient(_config(fake.host, tmp_path)) as client:
        assert not client.blob_exists(ref, compute_digest(b"a"))
        fake.state.issued.clear()  # the registry forgets every token it gave out
        assert not client.blob_exists(ref, compute_digest(b"a"))
    assert len(fake.state.token_scopes) == 2


def test_upload_restarts_after_a_failed_chunk(fake: FakeRegistry, tmp_path: Path) -> None:
    progress = RecordingProgress()
    ref = Reference.parse(f"{fake.host}/team/app:v1")
    path, descriptor = _blob_file(tmp_path, 2 * SMALL_CHUNK + 10)
    fake.state.fail_next = {"PATCH": 1}
    with RegistryClient(_config(fake.host, tmp_path, chunk_size=SMALL_CHUNK, retries=2), progress) as client:
        client.push_blob(ref, descriptor, path)
    assert fake.state.blobs[descriptor.digest] == path.read_bytes()
    assert [m for m, _ in fake.state.requests].count("POST") == 2
    assert sum(progress.advanced[f"push {descriptor.digest}"]) == descriptor.size
