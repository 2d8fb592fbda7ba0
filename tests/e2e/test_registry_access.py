"""Reaching registries as a user does (``lamina build`` / ``lamina cache prune``): HTTPS with a private CA and mutual
TLS, a token-auth registry, credential helpers, ``--registry-map``, and what happens when any of it is wrong.

Every failure must be one ``error:`` line that names the registry, the repository, the HTTP status where there is
one, and what to do.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from lamina.oci.model import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, Manifest, canonical_json
from lamina.oci.reference import Reference
from lamina.oci.registry.client import RegistryClient, RegistryConfig
from tests.conftest import AUTH_PASSWORD, AUTH_USER
from tests.e2e.conftest import Lamina
from tests.e2e.helpers import LaminaRun, clean_environ, lamina_in_process, lamina_subprocess, tags, write_context
from tests.support.baseimages import AuthBaseImages
from tests.support.registry import RunningRegistry
from tests.support.tls_registry import TestCA, TlsRegistry, launch_registry, start_tls_registry
from tests.support.token_server import Rule, TokenRegistry, token_registry

pytestmark = pytest.mark.e2e

HELPER = "lamina-test"


def _one_error_line(run: LaminaRun, *contains: str, absent: tuple[str, ...] = ()) -> str:
    """A non-zero exit, no traceback, one ``error:`` line on stderr containing ``contains``; return it."""
    assert run.returncode != 0, run.describe()
    assert "Traceback" not in run.output, run.describe()
    lines = [line for line in run.error_lines() if line.startswith("error: ")]
    assert len(lines) == 1, run.describe()
    line = lines[0]
    for text in contains:
        assert text in line, f"{text!r} not in {line!r}"
    for text in absent:
        assert text not in run.output, f"{text!r} shown to the user:\n{run.describe()}"
    return line


def _scratch_context(root: Path, text: str = "hello\n") -> Path:
    return write_context(root, "FROM scratch\nCOPY hello.txt /hello.txt\n", {"hello.txt": text})


def _empty_config(tmp_path: Path) -> Path:
    config_dir = tmp_path / f"docker-config-{uuid.uuid4().hex[:6]}"
    config_dir.mkdir()
    return config_dir


def _build(context: Path, *args: str, docker_config: Path, extra_env: dict[str, str] | None = None,
           subprocess: bool = False) -> LaminaRun:
    argv = ["build", "--context", str(context), *args]
    environ = clean_environ(extra_env, docker_config=docker_config)
    return lamina_subprocess(argv, environ) if subprocess else lamina_in_process(argv, environ)


# ---------------------------------------------------------------------------------------------------------------
# HTTPS with a private CA, and mutual TLS


@pytest.fixture(scope="module")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("test-ca"))


def _tls(tmp_path_factory: pytest.TempPathFactory, ca: TestCA, name: str, mutual: bool) -> TlsRegistry:
    try:
        return start_tls_registry(tmp_path_factory.mktemp(name), ca, mutual=mutual)
    except RuntimeError as e:
        pytest.fail(f"could not start the TLS registry: {e}", pytrace=False)


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[TlsRegistry]:
    reg = _tls(tmp_path_factory, test_ca, "tls-registry", mutual=False)
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def mtls_registry(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[TlsRegistry]:
    reg = _tls(tmp_path_factory, test_ca, "mtls-registry", mutual=True)
    yield reg
    reg.stop()


def _https_tags(reg: TlsRegistry, repository: str) -> list[str]:
    cert = (str(reg.client.cert_path), str(reg.client.key_path)) if reg.client else None
    r = requests.get(f"{reg.url}/v2/{repository}/tags/list", verify=str(reg.ca.cert_path), cert=cert, timeout=10)
    return [] if r.status_code == 404 else list(r.json().get("tags") or [])


def test_tls_registry_trusted_with_registry_certificate(tls_registry: TlsRegistry, tmp_path: Path) -> None:
    reg = tls_registry
    trust = ("--registry-certificate", f"{reg.host}={reg.ca.cert_path}")
    config = _empty_config(tmp_path)
    base = f"{reg.host}/e2e/tls-base:1"
    _build(_scratch_context(tmp_path / "base", "base\n"), "--destination", base, *trust, docker_config=config).check()
    assert _https_tags(reg, "e2e/tls-base") == ["1"]
    # pulling from it too, and by its other name (the certificate names localhost as well)
    context = write_context(tmp_path / "app", f"FROM {base}\nCOPY app.txt /app.txt\n", {"app.txt": "app\n"})
    _build(context, "--destination", f"{reg.host}/e2e/tls-app:1", *trust, docker_config=config).check()
    port = reg.host.rsplit(":", 1)[1]
    _build(context, "--destination", f"localhost:{port}/e2e/tls-app:2",
           "--registry-certificate", f"localhost:{port}={reg.ca.cert_path}", *trust, docker_config=config).check()
    assert sorted(_https_tags(reg, "e2e/tls-app")) == ["1", "2"]


def test_tls_registry_with_skip_tls_verify_registry(tls_registry: TlsRegistry, tmp_path: Path) -> None:
    reg = tls_registry
    run = _build(_scratch_context(tmp_path / "ctx"), "--destination", f"{reg.host}/e2e/tls-noverify:1",
                 "--skip-tls-verify-registry", reg.host, docker_config=_empty_config(tmp_path), subprocess=True)
    run.check()
    assert _https_tags(reg, "e2e/tls-noverify") == ["1"]
    # asked for, so not worth a warning per request (urllib3's InsecureRequestWarning, twice per blob)
    assert "InsecureRequestWarning" not in run.stderr, run.describe()


def test_untrusted_certificate_is_a_clear_tls_error(tls_registry: TlsRegistry, tmp_path: Path) -> None:
    """No CA given: the error says the certificate is not trusted and how to trust it; no fallback to plain HTTP
    hides it behind an ``HTTP 400`` (the registry speaks HTTPS; loopback or not, that is not a plain-HTTP one)."""
    reg = tls_registry
    run = _build(_scratch_context(tmp_path / "ctx"), "--destination", f"{reg.host}/e2e/tls-untrusted:1",
                 docker_config=_empty_config(tmp_path))
    line = _one_error_line(run, reg.host)
    assert "HTTP 400" not in line, f"fell back to plain HTTP and hid the TLS problem: {line}"
    assert "TLS" in line or "certificate" in line, line
    assert "--registry-certificate" in line and "--skip-tls-verify-registry" in line, line
    assert _https_tags(reg, "e2e/tls-untrusted") == []


def test_mutual_tls_with_client_certificate(mtls_registry: TlsRegistry, tmp_path: Path) -> None:
    reg = mtls_registry
    assert reg.client is not None
    _build(_scratch_context(tmp_path / "ctx"), "--destination", f"{reg.host}/e2e/mtls:1",
           "--registry-certificate", f"{reg.host}={reg.ca.cert_path}",
           "--registry-client-cert", f"{reg.host}={reg.client.cert_path},{reg.client.key_path}",
           docker_config=_empty_config(tmp_path)).check()
    assert _https_tags(reg, "e2e/mtls") == ["1"]


def test_mutual_tls_without_client_certificate_is_a_clear_error(mtls_registry: TlsRegistry, tmp_path: Path) -> None:
    reg = mtls_registry
    run = _build(_scratch_context(tmp_path / "ctx"), "--destination", f"{reg.host}/e2e/mtls-nocert:1",
                 "--registry-certificate", f"{reg.host}={reg.ca.cert_path}", docker_config=_empty_config(tmp_path))
    line = _one_error_line(run, reg.host)
    assert "HTTP 400" not in line, f"fell back to plain HTTP and hid the TLS problem: {line}"
    assert "TLS" in line or "certificate" in line, line
    assert "--registry-client-cert" in line, line
    assert _https_tags(reg, "e2e/mtls-nocert") == []


# ---------------------------------------------------------------------------------------------------------------
# a token-auth registry through the CLI


TOKEN_USERS = {"builder": "builder-Secret-9"}


@pytest.fixture(scope="module")
def cli_token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenRegistry]:
    try:
        with token_registry(tmp_path_factory.mktemp("cli-token-registry"), users=TOKEN_USERS,
                            rules=[Rule("builder", "e2e/*", ("pull", "push"))]) as reg:
            yield reg
    except RuntimeError as e:
        pytest.fail(f"could not start the token registry: {e}", pytrace=False)


def _auth_config(tmp_path: Path, host: str, user: str, password: str) -> Path:
    config_dir = _empty_config(tmp_path)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (config_dir / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return config_dir


def test_token_registry_build_push_and_pull(cli_token_registry: TokenRegistry, tmp_path: Path) -> None:
    reg = cli_token_registry
    config = _auth_config(tmp_path, reg.host, "builder", TOKEN_USERS["builder"])
    base = f"{reg.host}/e2e/token-base:1"
    _build(_scratch_context(tmp_path / "base"), "--destination", base, "--insecure-registry", reg.host,
           docker_config=config).check()
    context = write_context(tmp_path / "app", f"FROM {base}\nCOPY app.txt /app.txt\n", {"app.txt": "app\n"})
    _build(context, "--destination", f"{reg.host}/e2e/token-app:1", "--insecure-registry", reg.host,
           docker_config=config).check()
    scopes = {scope for r in reg.tokens.requests for scope in r.scopes}
    assert "repository:e2e/token-base:pull" in scopes and "repository:e2e/token-app:pull,push" in scopes, scopes


def test_token_registry_wrong_password(cli_token_registry: TokenRegistry, tmp_path: Path) -> None:
    reg = cli_token_registry
    wrong = "Wr0ng-token-Passw0rd"
    config = _auth_config(tmp_path, reg.host, "builder", wrong)
    run = _build(_scratch_context(tmp_path / "ctx"), "--destination", f"{reg.host}/e2e/token-wrong:1",
                 "--insecure-registry", reg.host, docker_config=config, subprocess=True)
    line = _one_error_line(run, reg.host, "e2e/token-wrong", "HTTP 401", "docker login",
                           absent=(wrong, base64.b64encode(f"builder:{wrong}".encode()).decode()))
    assert "rejected" in line, line


def test_token_registry_repository_without_rights(cli_token_registry: TokenRegistry, tmp_path: Path) -> None:
    reg = cli_token_registry
    config = _auth_config(tmp_path, reg.host, "builder", TOKEN_USERS["builder"])
    run = _build(_scratch_context(tmp_path / "ctx"), "--destination", f"{reg.host}/other/app:1",
                 "--insecure-registry", reg.host, docker_config=config)
    line = _one_error_line(run, reg.host, "other/app", "push")
    assert "HTTP 401" in line or "HTTP 403" in line, line


# ---------------------------------------------------------------------------------------------------------------
# credential helpers (credHelpers, credsStore) against the htpasswd registry


def _write_helper(bin_dir: Path, host: str, log: Path, *, knows_host: bool) -> None:
    """``docker-credential-lamina-test``: logs what it is asked; knows ``host`` (or nothing)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / f"docker-credential-{HELPER}"
    answer = (f"printf '{{\"ServerURL\":\"%s\",\"Username\":\"{AUTH_USER}\",\"Secret\":\"{AUTH_PASSWORD}\"}}' "
              '"$server"' if knows_host else "false")
    script.write_text(f"""#!/bin/sh
read -r server
echo "$1 $server" >> '{log}'
[ "$1" = get ] || exit 1
if [ "$server" = '{host}' ] && {answer}; then
  exit 0
fi
echo "credentials not found in native keychain"
exit 1
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def _helper_env(bin_dir: Path) -> dict[str, str]:
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


@pytest.mark.parametrize("key", ["credHelpers", "credsStore"])
def test_credential_helper_build_and_push(lamina: Lamina, tmp_path: Path, auth_registry: RunningRegistry,
                                          auth_base_images: AuthBaseImages, key: str) -> None:
    bin_dir, log = tmp_path / "bin", tmp_path / "helper.log"
    _write_helper(bin_dir, auth_registry.host, log, knows_host=True)
    config_dir = _empty_config(tmp_path)
    config: dict[str, Any] = {"credHelpers": {auth_registry.host: HELPER}} if key == "credHelpers" \
        else {"credsStore": HELPER}
    (config_dir / "config.json").write_text(json.dumps(config))
    context = write_context(tmp_path / "ctx", f"FROM {auth_base_images.busybox}\nCOPY a.txt /a.txt\n",
                            {"a.txt": "helped\n"})
    repository = f"e2e/helper-{key.lower()}"
    _build(context, "--destination", f"{auth_registry.host}/{repository}:1", "--insecure-registry",
           auth_registry.host, docker_config=config_dir, extra_env=_helper_env(bin_dir), subprocess=True).check()
    assert tags(auth_registry.host, repository, creds=(AUTH_USER, AUTH_PASSWORD)) == ["1"]
    assert f"get {auth_registry.host}" in log.read_text().splitlines()


def test_credential_helper_without_credentials(lamina: Lamina, tmp_path: Path, auth_registry: RunningRegistry,
                                               auth_base_images: AuthBaseImages) -> None:
    bin_dir, log = tmp_path / "bin", tmp_path / "helper.log"
    _write_helper(bin_dir, auth_registry.host, log, knows_host=False)
    config_dir = _empty_config(tmp_path)
    (config_dir / "config.json").write_text(json.dumps({"credHelpers": {auth_registry.host: HELPER}}))
    context = write_context(tmp_path / "ctx", f"FROM {auth_base_images.busybox}\n")
    run = _build(context, "--destination", f"{auth_registry.host}/e2e/helper-none:1", "--insecure-registry",
                 auth_registry.host, docker_config=config_dir, extra_env=_helper_env(bin_dir), subprocess=True)
    # the push permission check comes first (as Kaniko's): the destination is what has no credentials
    line = _one_error_line(run, auth_registry.host, "e2e/helper-none", "HTTP 401", absent=(AUTH_PASSWORD,))
    assert "credentials" in line, line
    # config.json does name a source for this registry: the helper, which had nothing; say so, rather than
    # "no credentials in config.json; add an auths entry" (an auths entry would not even be read)
    assert f"docker-credential-{HELPER}" in line, f"the error does not name the helper that had nothing: {line}"
    assert f"get {auth_registry.host}" in log.read_text().splitlines()  # the helper was asked
    assert tags(auth_registry.host, "e2e/helper-none", creds=(AUTH_USER, AUTH_PASSWORD)) == []


def test_credential_helper_not_installed(lamina: Lamina, tmp_path: Path, auth_registry: RunningRegistry,
                                         auth_base_images: AuthBaseImages) -> None:
    config_dir = _empty_config(tmp_path)
    (config_dir / "config.json").write_text(json.dumps({"credHelpers": {auth_registry.host: "lamina-absent"}}))
    context = write_context(tmp_path / "ctx", f"FROM {auth_base_images.busybox}\n")
    run = _build(context, "--destination", f"{auth_registry.host}/e2e/helper-absent:1", "--insecure-registry",
                 auth_registry.host, docker_config=config_dir)
    _one_error_line(run, auth_registry.host, "docker-credential-lamina-absent", "install")


# ---------------------------------------------------------------------------------------------------------------
# --registry-map


class _Recorder:
    """A server that records every request and answers 404: the 'original registry' that must not be asked."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                recorder.paths.append(f"{self.command} {self.path}")
                body = b'{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known"}]}'
                self.send_response(404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = do_POST = do_PUT = _any

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_registry_map_pulls_from_the_map(lamina: Lamina, tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", "FROM example.invalid/library/busybox\nCOPY m.txt /m.txt\n",
                            {"m.txt": "mapped\n"})
    dest = lamina.dest("registry-map")
    lamina.build(context, "--destination", dest, "--registry-map", f"example.invalid={lamina.registry.host}").check()
    host, rest = dest.split("/", 1)
    assert tags(host, rest.rsplit(":", 1)[0]) == ["1"]


def test_registry_map_without_fallback_never_asks_the_original(lamina: Lamina, tmp_path: Path) -> None:
    original = _Recorder()
    try:
        context = write_context(tmp_path / "ctx", f"FROM {original.host}/library/not-mapped:1\n")
        run = lamina.build(context, "--destination", lamina.dest("registry-map-missing"),
                           "--registry-map", f"{original.host}={lamina.registry.host}",
                           "--skip-default-registry-fallback", "--insecure-registry", original.host)
    finally:
        original.close()
    line = _one_error_line(run, original.host, "library/not-mapped", "--skip-default-registry-fallback")
    assert lamina.registry.host in line, f"the error does not say which map was tried: {line}"
    assert original.paths == [], f"the original registry was asked: {original.paths}"


def test_registry_map_with_fallback_asks_the_original(lamina: Lamina, tmp_path: Path) -> None:
    original = _Recorder()
    try:
        context = write_context(tmp_path / "ctx", f"FROM {original.host}/library/not-mapped:1\n")
        run = lamina.build(context, "--destination", lamina.dest("registry-map-fallback"),
                           "--registry-map", f"{original.host}={lamina.registry.host}",
                           "--insecure-registry", original.host)
    finally:
        original.close()
    _one_error_line(run, original.host, "library/not-mapped")
    assert any("/v2/library/not-mapped/manifests/1" in path for path in original.paths), original.paths


# ---------------------------------------------------------------------------------------------------------------
# bad input


def test_destination_with_capitals(lamina: Lamina, tmp_path: Path) -> None:
    context = _scratch_context(tmp_path / "ctx")
    run = lamina.build(context, "--destination", f"{lamina.registry.host}/Bad/Name:1", subprocess=True)
    line = _one_error_line(run, "Bad/Name")
    assert "lower" in line.lower(), f"the error does not say what is wrong with the name: {line}"
    assert tags(lamina.registry.host, "bad/name") == []


@pytest.fixture(scope="module")
def registry_without_delete(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    try:
        reg = launch_registry(tmp_path_factory.mktemp("registry-refusing-delete"), delete=False)
    except RuntimeError as e:
        pytest.fail(f"could not start docker-registry: {e}", pytrace=False)
    yield reg
    reg.stop()


def test_cache_prune_on_a_registry_that_refuses_deletion(registry_without_delete: RunningRegistry,
                                                         tmp_path: Path) -> None:
    reg = registry_without_delete
    repo = Reference.parse(f"{reg.host}/e2e/cache:unused")
    key = uuid.uuid4().hex + uuid.uuid4().hex
    config_dir = _empty_config(tmp_path)
    with RegistryClient(RegistryConfig(insecure_registries=(reg.host,), docker_config_dir=str(config_dir),
                                       environ={})) as client:
        layer = client.push_blob_bytes(repo, uuid.uuid4().bytes * 8, OCI_LAYER_GZIP)
        config = client.push_blob_bytes(repo, canonical_json({"history": []}), OCI_CONFIG)
        body = Manifest(config, (layer,), OCI_MANIFEST,
                        {"org.opencontainers.image.created": "2020-01-01T00:00:00Z"}).to_bytes()
        client.push_manifest(repo.with_tag(key), body, OCI_MANIFEST)
    run = lamina_subprocess(["cache", "prune", "--cache-repo", f"{reg.host}/e2e/cache", "--older-than", "1d",
                             "--insecure-registry", reg.host], clean_environ(docker_config=config_dir))
    assert run.returncode == 1, run.describe()
    assert "Traceback" not in run.output, run.describe()
    text = run.output
    assert reg.host in text and "e2e/cache" in text and "405" in text, run.describe()
    assert "delete" in text and "enabled" in text, run.describe()  # what to do: enable deletion
    # like every other error, on stderr (stdout keeps the report: "deleted 0 ..., kept 1")
    assert "HTTP 405" in run.stderr and "error:" not in run.stdout, run.describe()
    assert tags(reg.host, "e2e/cache") == [key]  # nothing was deleted
