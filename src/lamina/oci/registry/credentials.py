"""Registry credentials: Docker's ``config.json`` (``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``),
then the CI environment.

Order, as Docker resolves them: a ``credHelpers`` entry for the registry (``docker-credential-<name> get``), else
the ``auths`` entry (``auth`` base64 ``user:password``, ``username`` + ``password``, ``identitytoken``,
``registrytoken``), else the ``credsStore`` helper; then the CI environment: ``GITHUB_TOKEN`` for ghcr.io,
GitLab's ``CI_REGISTRY_USER``/``CI_REGISTRY_PASSWORD`` (or ``CI_JOB_TOKEN``) for ``$CI_REGISTRY`` and the
Dependency Proxy's credentials for ``$CI_DEPENDENCY_PROXY_SERVER``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lamina.errors import AuthError

log = logging.getLogger(__name__)

DOCKER_HUB_HOSTS = ("docker.io", "index.docker.io", "registry-1.docker.io")
DOCKER_HUB_LEGACY_KEY = "https://index.docker.io/v1/"


@dataclass(frozen=True)
class Credentials:
    """A user name with a password, or an identity (OAuth2 refresh) token. The ``repr`` hides the secrets."""

    username: str
    password: str
    identity_token: str | None = None
    registry_token: str | None = None  # config.json "registrytoken": sent as the Bearer token as it is

    def __repr__(self) -> str:
        password = "'***'" if self.password else "''"
        token = "'***'" if self.identity_token else "None"
        registry = "'***'" if self.registry_token else "None"
        return (f"Credentials(username={self.username!r}, password={password}, identity_token={token}, "
                f"registry_token={registry})")


def config_path(config_dir: str | None) -> Path:
    """The config.json to read: ``config_dir``, else ``$DOCKER_CONFIG``, else ``~/.docker``."""
    directory = config_dir or os.environ.get("DOCKER_CONFIG") or str(Path.home() / ".docker")
    return Path(directory) / "config.json"


def lookup_credentials(host: str, config_dir: str | None) -> Credentials | None:
    """The credentials config.json holds for registry ``host`` (``ghcr.io``, ``127.0.0.1:5000``, ``docker.io``),
    or None when it has none (or has no config.json)."""
    path = config_path(config_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as e:
        raise AuthError(f"cannot read {path}: {e.strerror}", registry=host,
                        hint="fix its permissions or point DOCKER_CONFIG elsewhere") from None
    try:
        config = json.loads(text) if text.strip() else {}
    except ValueError as e:
        raise AuthError(f"{path} is not valid JSON (line {getattr(e, 'lineno', '?')})", registry=host,
                        hint="fix the file or point DOCKER_CONFIG at another directory") from None
    if not isinstance(config, dict):
        raise AuthError(f"{path} is not a JSON object", registry=host, hint="fix the file")

    hosts = _aliases(host)
    helpers = config.get("credHelpers")
    if isinstance(helpers, dict):
        for key, helper in helpers.items():
            if _key_host(key) in hosts and isinstance(helper, str) and helper:
                return run_credential_helper(helper, host)
    auths = config.get("auths")
    if isinstance(auths, dict):
        entry = _find_entry(auths, host, hosts)
        if entry is not None:
            found = _decode_entry(entry, host, path)
            if found is not None:
                return found
    store = config.get("credsStore")
    if isinstance(store, str) and store:
        return run_credential_helper(store, host)
    return None


def configured_helper(host: str, config_dir: str | None) -> str | None:
    """The credential helper config.json sends ``host`` to (its credHelpers entry, else credsStore), if any."""
    try:
        config = json.loads(config_path(config_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    helpers = config.get("credHelpers")
    if isinstance(helpers, dict):
        for key, helper in helpers.items():
            if _key_host(key) in _aliases(host) and isinstance(helper, str) and helper:
                return f"docker-credential-{helper}"
    store = config.get("credsStore")
    return f"docker-credential-{store}" if isinstance(store, str) and store else None


def helper_server_url(host: str) -> str:
    """The server URL credential helpers file Docker Hub under (``https://index.docker.io/v1/``), else the host."""
    return DOCKER_HUB_LEGACY_KEY if host.lower() in DOCKER_HUB_HOSTS else host


def run_credential_helper(helper: str, host: str) -> Credentials | None:
    """``docker-credential-<helper> get`` with the server URL on stdin; None when it has nothing for ``host``."""
    program = f"docker-credential-{helper}"
    if shutil.which(program) is None:
        raise AuthError(f"the credential helper {program} (for {host}) is not installed", registry=host,
                        hint=f"install {program} or remove it from config.json (credHelpers/credsStore)")
    try:
        result = subprocess.run([program, "get"], input=helper_server_url(host), capture_output=True, text=True,
                                timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AuthError(f"the credential helper {program} failed for {host}: {exc}", registry=host,
                        hint=f"run `echo {helper_server_url(host)} | {program} get` to see what it says") from None
    if result.returncode != 0:
        message = result.stdout.strip() or result.stderr.strip()
        if "credentials not found" in message.lower():
            return None
        raise AuthError(f"the credential helper {program} failed for {host} (exit {result.returncode})",
                        registry=host,
                        hint=f"run `echo {helper_server_url(host)} | {program} get` to see what it says")
    try:
        data = json.loads(result.stdout)
        username, secret = str(data.get("Username") or ""), str(data.get("Secret") or "")
    except (ValueError, AttributeError):
        raise AuthError(f"the credential helper {program} answered something that is not JSON for {host}",
                        registry=host, hint="check the helper's version") from None
    if not secret:
        return None
    if username == "<token>":  # an identity token (docker login with an OAuth2 flow)
        return Credentials("", "", secret)
    return Credentials(username, secret)


def credentials_from_environment(host: str, environ: Mapping[str, str]) -> Credentials | None:
    """CI credentials: GitHub's token for ghcr.io, GitLab's job credentials for its registry and Dependency Proxy."""
    lowered = host.lower()
    if lowered == "ghcr.io" and environ.get("GITHUB_TOKEN"):
        return Credentials(environ.get("GITHUB_ACTOR") or "x-access-token", environ["GITHUB_TOKEN"])
    if environ.get("CI_REGISTRY", "").lower() == lowered:
        if environ.get("CI_REGISTRY_USER") and environ.get("CI_REGISTRY_PASSWORD"):
            return Credentials(environ["CI_REGISTRY_USER"], environ["CI_REGISTRY_PASSWORD"])
        if environ.get("CI_JOB_TOKEN"):
            return Credentials("gitlab-ci-token", environ["CI_JOB_TOKEN"])
    proxy = environ.get("CI_DEPENDENCY_PROXY_SERVER", "").lower()
    if proxy and proxy == lowered and environ.get("CI_DEPENDENCY_PROXY_USER") \
            and environ.get("CI_DEPENDENCY_PROXY_PASSWORD"):
        return Credentials(environ["CI_DEPENDENCY_PROXY_USER"], environ["CI_DEPENDENCY_PROXY_PASSWORD"])
    return None


def _aliases(host: str) -> frozenset[str]:
    lowered = host.lower()
    return frozenset(DOCKER_HUB_HOSTS) if lowered in DOCKER_HUB_HOSTS else frozenset({lowered})


def _key_host(key: str) -> str:
    """``https://host/v1/`` → ``host`` (Docker keys auths by URL or by bare host)."""
    text = key.strip()
    for scheme in ("https://", "http://"):
        if text.lower().startswith(scheme):
            text = text[len(scheme):]
            break
    return text.split("/", 1)[0].lower()


def _find_entry(auths: dict[str, Any], host: str, hosts: frozenset[str]) -> dict[str, Any] | None:
    exact = [host, f"https://{host}", f"http://{host}", f"https://{host}/v1/"]
    if host.lower() in DOCKER_HUB_HOSTS:
        exact.append(DOCKER_HUB_LEGACY_KEY)
    candidates = [key for key in exact if key in auths]
    candidates += sorted(key for key in auths if key not in candidates and _key_host(key) in hosts)
    for key in candidates:
        entry = auths[key]
        if isinstance(entry, dict) and any(entry.get(f) for f in ("auth", "username", "identitytoken")):
            return entry
    return None


def _decode_entry(entry: dict[str, Any], host: str, path: Path) -> Credentials | None:
    username = str(entry.get("username") or "")
    password = str(entry.get("password") or "")
    identity_token = str(entry.get("identitytoken") or "") or None
    registry_token = str(entry.get("registrytoken") or "") or None
    if registry_token and not entry.get("auth") and not password:
        return Credentials(username, "", identity_token, registry_token)
    auth = entry.get("auth")
    if auth:
        try:
            decoded = base64.b64decode(str(auth), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise AuthError(f"the auths entry for {host} in {path} has an 'auth' field that is not base64",
                            registry=host, hint=f"run `docker login {host}` again or fix the entry") from None
        user, colon, secret = decoded.partition(":")
        if not colon:
            raise AuthError(f"the auths entry for {host} in {path} has an 'auth' field that is not user:password",
                            registry=host, hint=f"run `docker login {host}` again or fix the entry")
        username, password = user, secret
    if not password and not identity_token:
        return None
    return Credentials(username, password, identity_token)
