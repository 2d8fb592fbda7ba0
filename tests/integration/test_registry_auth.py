"""The registry client against docker-registry with real token authentication (``auth: token``): a token server in
the tests issues ES256 JWTs per user and per repository, and the registry verifies them.

Pull asks for pull only, push for pull and push, a cross-repository mount for both scopes in one token; expired
tokens are renewed, between operations and in the middle of a chunked upload; refusals are clear errors that
never contain the password. Also: a manifest larger than the client accepts.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from lamina.errors import AuthError, RegistryError
from lamina.oci.digest import compute_digest
from lamina.oci.model import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, Descriptor, Manifest, Platform, canonical_json
from lamina.oci.reference import Reference
from lamina.oci.registry.client import MAX_MANIFEST_BYTES, RegistryClient, RegistryConfig
from lamina.progress import NullProgress
from tests.support.registry import RunningRegistry
from tests.support.token_server import Rule, TokenRegistry, token_registry

pytestmark = pytest.mark.integration

PASSWORDS = {"alice": "alice-Secret-1", "bob": "bob-Secret-2", "carol": "carol-Secret-3"}
RULES = [
    Rule("alice", "lamina/*", ("pull", "push", "delete")),
    Rule("bob", "lamina/*", ("pull",)),  # a reader
    Rule("carol", "carol/*", ("pull", "push")),  # may not read lamina/*
    Rule("alice", "public/*", ("pull", "push")),
    Rule(None, "public/*", ("pull",)),  # anonymous
]
SMALL_CHUNK = 64 * 1024
PLATFORM = Platform("linux", "amd64")


@pytest.fixture(scope="module")
def token_reg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenRegistry]:
    try:
        with token_registry(tmp_path_factory.mktemp("token-registry"), users=PASSWORDS, rules=RULES) as reg:
            yield reg
    except RuntimeError as e:
        pytest.fail(f"could not start the token registry: {e}", pytrace=False)


@pytest.fixture(scope="module")
def short_token_reg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenRegistry]:
    """Tokens that the registry stops accepting 3 s after they were issued (the client caches them for 5 s)."""
    try:
        with token_registry(tmp_path_factory.mktemp("short-token-registry"), users=PASSWORDS, rules=RULES,
                            expires_in=3, compensate_leeway=True) as reg:
            yield reg
    except RuntimeError as e:
        pytest.fail(f"could not start the token registry: {e}", pytrace=False)


def _client(reg: TokenRegistry, tmp_path: Path, user: str | None, password: str | None = None,
            **kw: Any) -> RegistryClient:
    config_dir = tmp_path / f"docker-config-{user}-{uuid.uuid4().hex[:6]}"
    config_dir.mkdir()
    if user is not None:
        secret = password if password is not None else PASSWORDS[user]
        auth = base64.b64encode(f"{user}:{secret}".encode()).decode()
        (config_dir / "config.json").write_text(json.dumps({"auths": {reg.host: {"auth": auth}}}))
    return RegistryClient(RegistryConfig(insecure_registries=(reg.host,), docker_config_dir=str(config_dir),
                                         retries=1, push_retries=1, timeout=10.0, environ={}, **kw))


def _ref(reg: TokenRegistry | RunningRegistry, repository: str, tag: str = "1") -> Reference:
    return Reference.parse(f"{reg.host}/{repository}:{tag}")


def _push_image(client: RegistryClient, ref: Reference, marker: str) -> tuple[str, Descriptor]:
    """A tiny image (one opaque layer) at ``ref``; return the manifest digest and the layer's descriptor."""
    layer = client.push_blob_bytes(ref, f"layer {marker} {uuid.uuid4()}".encode(), OCI_LAYER_GZIP)
    config = client.push_blob_bytes(ref, canonical_json({"architecture": "amd64", "os": "linux",
                                                         "rootfs": {"type": "layers", "diff_ids": []}}), OCI_CONFIG)
    body = Manifest(config, (layer,), OCI_MANIFEST, {"dev.lamina.test": marker}).to_bytes()
    return client.push_manifest(ref, body, OCI_MANIFEST), layer


def _scope_sets(reg: TokenRegistry, user: str | None) -> list[frozenset[str]]:
    return [frozenset(r.scopes) for r in reg.tokens.requests if r.user == user and r.status == 200]


# -- scopes -------------------------------------------------------------------------------------------------------


def test_push_asks_for_pull_push_and_pull_asks_for_pull(token_reg: TokenRegistry, tmp_path: Path) -> None:
    repo = f"lamina/app-{uuid.uuid4().hex[:8]}"
    ref = _ref(token_reg, repo)
    token_reg.tokens.clear()
    with _client(token_reg, tmp_path, "alice") as alice:
        digest, _ = _push_image(alice, ref, "scopes")
    assert {f"repository:{repo}:pull,push"} in _scope_sets(token_reg, "alice")
    assert all(r.asked(repo) <= {"pull", "push"} for r in token_reg.tokens.requests)

    token_reg.tokens.clear()
    with _client(token_reg, tmp_path, "bob") as bob:
        resolved = bob.resolve_image(ref, PLATFORM)
    assert resolved.manifest_digest == digest
    bob_requests = [r for r in token_reg.tokens.requests if r.user == "bob"]
    assert bob_requests, "bob's pull never asked the token server"
    assert all(r.asked(repo) == {"pull"} for r in bob_requests), bob_requests  # never more than it needs
    assert not [r for r in token_reg.tokens.requests if r.user != "bob"]


def test_anonymous_pull_and_push(token_reg: TokenRegistry, tmp_path: Path) -> None:
    """Without credentials: a public repository can be read, not written (a clear error naming the fix)."""
    ref = _ref(token_reg, f"public/base-{uuid.uuid4().hex[:8]}")
    with _client(token_reg, tmp_path, "alice") as alice:
        digest, _ = _push_image(alice, ref, "public")
    token_reg.tokens.clear()
    with _client(token_reg, tmp_path, None) as anonymous:
        assert anonymous.resolve_image(ref, PLATFORM).manifest_digest == digest
        with pytest.raises(AuthError) as excinfo:
            anonymous.push_blob_bytes(ref, b"anonymous write", OCI_CONFIG)
    assert {r.user for r in token_reg.tokens.requests} == {None}
    err = excinfo.value
    assert err.registry == token_reg.host and err.repository == ref.repository
    assert err.status == 401
    assert "credentials" in str(err) and "docker login" in err.hint, str(err)


# -- refusals -----------------------------------------------------------------------------------------------------


def test_wrong_password_is_an_auth_error_without_the_password(token_reg: TokenRegistry, tmp_path: Path) -> None:
    wrong = "Wr0ng-Passw0rd-xyzzy"
    ref = _ref(token_reg, f"lamina/app-{uuid.uuid4().hex[:8]}")
    with _client(token_reg, tmp_path, "alice", wrong) as client:
        with pytest.raises(AuthError) as excinfo:
            client.resolve_image(ref, PLATFORM)
        with pytest.raises(AuthError) as push_excinfo:
            client.push_blob_bytes(ref, b"never stored", OCI_CONFIG)
    for err in (excinfo.value, push_excinfo.value):
        text = str(err) + repr(err) + repr(err.args)
        assert wrong not in text and base64.b64encode(f"alice:{wrong}".encode()).decode() not in text
        assert err.status == 401
        assert token_reg.host in str(err) and ref.repository in str(err)
        assert "rejected" in str(err) and "docker login" in err.hint, str(err)
    assert [r.status for r in token_reg.tokens.requests if r.user == "alice" and r.status != 200]


def test_user_without_push_rights_gets_a_clear_error(token_reg: TokenRegistry, tmp_path: Path) -> None:
    repo = f"lamina/app-{uuid.uuid4().hex[:8]}"
    ref = _ref(token_reg, repo)
    with _client(token_reg, tmp_path, "alice") as alice:
        _push_image(alice, ref, "readonly")
    with _client(token_reg, tmp_path, "bob") as bob:
        bob.resolve_image(ref, PLATFORM)  # bob may read it...
        with pytest.raises(AuthError) as excinfo:  # ...not write it
            bob.push_blob_bytes(ref, b"bob was here", OCI_CONFIG)
    err = excinfo.value
    assert err.status in (401, 403)
    assert err.registry == token_reg.host and err.repository == repo
    text = str(err)
    assert "push" in text and "'bob'" in text and repo in text, text
    assert "push" in err.hint and repo in err.hint, err.hint
    assert PASSWORDS["bob"] not in text
    # the token server was asked for push, and granted only pull: the registry, not the client, refused
    asked = [r for r in token_reg.tokens.requests if r.user == "bob" and "push" in r.asked(repo)]
    assert asked and all(g.actions == ("pull",) for r in asked for g in r.granted)


def test_delete_needs_the_delete_action(token_reg: TokenRegistry, tmp_path: Path) -> None:
    repo = f"lamina/app-{uuid.uuid4().hex[:8]}"
    ref = _ref(token_reg, repo)
    with _client(token_reg, tmp_path, "alice") as alice:
        digest, _ = _push_image(alice, ref, "delete")
    with _client(token_reg, tmp_path, "bob") as bob, pytest.raises(AuthError) as excinfo:
        bob.delete_manifest(ref, digest)
    assert "delete" in str(excinfo.value) and excinfo.value.status in (401, 403), str(excinfo.value)
    with _client(token_reg, tmp_path, "alice") as alice:
        alice.delete_manifest(ref, digest)
        assert alice.fetch_manifest(ref.with_digest(digest)) is None
    assert any(r.asked(repo) == {"delete"} for r in token_reg.tokens.requests if r.user == "alice")


# -- cross-repository mounts --------------------------------------------------------------------------------------


def test_mount_asks_for_both_scopes_in_one_token(token_reg: TokenRegistry, tmp_path: Path) -> None:
    source = _ref(token_reg, f"lamina/src-{uuid.uuid4().hex[:8]}")
    dest = _ref(token_reg, f"lamina/dst-{uuid.uuid4().hex[:8]}")
    with _client(token_reg, tmp_path, "alice") as alice:
        _, layer = _push_image(alice, source, "mount")
        token_reg.tokens.clear()
        assert alice.mount_blob(dest, layer.digest, source) is True
        assert alice.blob_exists(dest, layer.digest)
    wanted = {f"repository:{dest.repository}:pull,push", f"repository:{source.repository}:pull"}
    assert any(wanted <= scopes for scopes in _scope_sets(token_reg, "alice")), token_reg.tokens.requests


def test_refused_mount_is_quiet_and_the_blob_is_uploaded(token_reg: TokenRegistry, tmp_path: Path) -> None:
    source = _ref(token_reg, f"lamina/src-{uuid.uuid4().hex[:8]}")
    dest = _ref(token_reg, f"carol/dst-{uuid.uuid4().hex[:8]}")
    data = os.urandom(3000)
    path = tmp_path / "layer"
    path.write_bytes(data)
    with _client(token_reg, tmp_path, "alice") as alice:
        layer = alice.push_blob_bytes(source, data, OCI_LAYER_GZIP)
    token_reg.tokens.clear()
    with _client(token_reg, tmp_path, "carol") as carol:
        assert carol.mount_blob(dest, layer.digest, source) is False  # carol may not read lamina/*
        carol.ensure_blob(dest, layer, sources=(source,), path=path)  # no error: uploaded instead
        assert carol.blob_exists(dest, layer.digest)
    mounts = [r for r in token_reg.tokens.requests if r.user == "carol" and "pull" in r.asked(source.repository)]
    assert mounts and all(g.name != source.repository for r in mounts for g in r.granted)


# -- expiry -------------------------------------------------------------------------------------------------------


def _rejected_expired_tokens(reg: TokenRegistry) -> int:
    return reg.registry.log_path.read_text(errors="replace").count("token not to be used after")


def test_expired_token_is_renewed_between_operations(short_token_reg: TokenRegistry, tmp_path: Path) -> None:
    repo = f"lamina/expiry-{uuid.uuid4().hex[:8]}"
    ref = _ref(short_token_reg, repo)
    push_scope = {f"repository:{repo}:pull,push"}
    with _client(short_token_reg, tmp_path, "alice") as alice:
        digest, _ = _push_image(alice, ref, "expiry")
        rejected = _rejected_expired_tokens(short_token_reg)
        time.sleep(4)  # the registry no longer accepts the push token; the client still has it cached (5 s)
        assert alice.resolve_image(ref, PLATFORM).manifest_digest == digest  # another scope: a new token
        alice.push_blob_bytes(ref, b"after the token expired", OCI_CONFIG)  # the cached token: 401, then renewed
    push_tokens = [r for r in short_token_reg.tokens.requests if r.user == "alice" and set(r.scopes) == push_scope]
    assert len(push_tokens) == 2, push_tokens
    # the registry really refused the expired token (the renewal was not just the client's own clock)
    assert _rejected_expired_tokens(short_token_reg) > rejected


class _SlowProgress(NullProgress):
    """Sleeps after the first chunk of an upload, so the token expires in the middle of it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.advanced = 0

    def transfer_advanced(self, key: str, amount: int) -> None:
        self.advanced += 1
        if self.advanced == 1:
            time.sleep(self.seconds)


def test_token_expiring_during_a_chunked_upload_is_renewed(short_token_reg: TokenRegistry, tmp_path: Path) -> None:
    ref = _ref(short_token_reg, f"lamina/long-{uuid.uuid4().hex[:8]}")
    data = os.urandom(3 * SMALL_CHUNK + 17)
    path = tmp_path / "big"
    path.write_bytes(data)
    descriptor = Descriptor(OCI_LAYER_GZIP, compute_digest(data), len(data))
    config_dir = tmp_path / "cfg"
    config_dir.mkdir()
    auth = base64.b64encode(f"alice:{PASSWORDS['alice']}".encode()).decode()
    (config_dir / "config.json").write_text(json.dumps({"auths": {short_token_reg.host: {"auth": auth}}}))
    config = RegistryConfig(insecure_registries=(short_token_reg.host,), docker_config_dir=str(config_dir),
                            retries=1, push_retries=1, timeout=10.0, chunk_size=SMALL_CHUNK, environ={})
    before = len(short_token_reg.tokens.requests)
    rejected = _rejected_expired_tokens(short_token_reg)
    with RegistryClient(config, _SlowProgress(4.0)) as client:
        client.push_blob(ref, descriptor, path)
    assert _rejected_expired_tokens(short_token_reg) > rejected  # a PATCH met the expired token
    with RegistryClient(config) as client:
        fetched = tmp_path / "fetched"
        client.fetch_blob(ref, descriptor, fetched)
    assert fetched.read_bytes() == data
    assert len(short_token_reg.tokens.requests) - before >= 2  # renewed in the middle of the upload


# -- a manifest too large -----------------------------------------------------------------------------------------


class _HugeManifestHandler(BaseHTTPRequestHandler):
    """A registry without auth whose every manifest is more than 4 MiB (docker-registry refuses to store one)."""

    protocol_version = "HTTP/1.1"
    body = b""

    def do_GET(self) -> None:
        if self.path == "/v2/":
            self._reply(200, b"{}", "application/json")
        elif "/manifests/" in self.path:
            self._reply(200, self.body, OCI_MANIFEST)
        else:
            self._reply(404, b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}', "application/json")

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _huge_manifest() -> bytes:
    config = canonical_json({"architecture": "amd64", "os": "linux"})
    return Manifest(Descriptor(OCI_CONFIG, compute_digest(config), len(config)), (), OCI_MANIFEST,
                    {"dev.lamina.padding": "x" * (MAX_MANIFEST_BYTES + 1000)}).to_bytes()


def test_manifest_larger_than_4_mib_is_refused(tmp_path: Path) -> None:
    handler = type("Handler", (_HugeManifestHandler,), {"body": _huge_manifest()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host = f"127.0.0.1:{server.server_address[1]}"
    ref = Reference.parse(f"{host}/lamina-test/huge:1")
    empty = tmp_path / "empty"
    empty.mkdir()
    config = RegistryConfig(insecure_registries=(host,), docker_config_dir=str(empty), retries=0, timeout=20.0,
                            environ={})
    try:
        with RegistryClient(config) as client:
            with pytest.raises(RegistryError) as excinfo:
                client.resolve_image(ref, PLATFORM)
            with pytest.raises(RegistryError):
                client.fetch_manifest(ref)
    finally:
        server.shutdown()
        server.server_close()
    err = excinfo.value
    text = str(err)
    assert not isinstance(err, AuthError)
    assert host in text and "lamina-test/huge" in text, text
    assert str(MAX_MANIFEST_BYTES) in text or "4 MiB" in text, text
    assert err.hint, f"no advice on what to do: {text}"


def test_pushing_a_manifest_larger_than_the_registry_takes(registry: RunningRegistry, tmp_path: Path) -> None:
    """docker-registry 2.8 refuses manifests over 4 MiB (HTTP 400 MANIFEST_INVALID): the error says so."""
    repo = f"lamina-test/huge-{uuid.uuid4().hex[:8]}"
    ref = _ref(registry, repo)
    empty = tmp_path / "empty"
    empty.mkdir()
    config = RegistryConfig(insecure_registries=(registry.host,), docker_config_dir=str(empty), retries=1,
                            timeout=20.0, environ={})
    with RegistryClient(config) as client:
        client.push_blob_bytes(ref, canonical_json({"architecture": "amd64", "os": "linux"}), OCI_CONFIG)
        with pytest.raises(RegistryError) as excinfo:
            client.push_manifest(ref, _huge_manifest(), OCI_MANIFEST)
    err = excinfo.value
    text = str(err)
    assert err.status == 400 and "HTTP 400" in text, text
    assert registry.host in text and repo in text, text
    assert "MANIFEST_INVALID" in text, text
