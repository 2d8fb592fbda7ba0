"""Registry credentials from Docker's ``config.json`` (``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``).

Supported: ``auths`` entries with ``auth`` (base64 ``user:password``), ``username`` + ``password``, and
``identitytoken``. ``credHelpers`` and ``credsStore`` are not supported yet: when one would apply, a warning is logged
and the lookup continues with ``auths`` alone.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
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

    def __repr__(self) -> str:
        password = "'***'" if self.password else "''"
        token = "'***'" if self.identity_token else "None"
        return f"Credentials(username={self.username!r}, password={password}, identity_token={token})"


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
    if isinstance(helpers, dict) and any(_key_host(key) in hosts for key in helpers):
        log.warning("%s: credHelpers for %s are not supported yet; looking in auths only", path, host)
    elif config.get("credsStore"):
        log.warning("%s: credsStore %r is not supported yet; looking in auths only", path, config["credsStore"])

    auths = config.get("auths")
    if not isinstance(auths, dict):
        return None
    entry = _find_entry(auths, host, hosts)
    if entry is None:
        return None
    return _decode_entry(entry, host, path)


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
