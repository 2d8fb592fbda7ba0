"""A temporary ``DOCKER_CONFIG`` directory for a CI job: ``config.json`` with the job's registry logins.

The CI adapters write one under the runner's temp directory, point ``BuildOptions.docker_config_dir`` at it and
delete it when the build ends. The file is created 0600 in a 0700 directory; its content is never logged.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DOCKER_HUB_KEY = "https://index.docker.io/v1/"  # the key docker login writes for Docker Hub
DOCKER_HUB_NAMES = frozenset({"", "docker.io", "index.docker.io", "registry-1.docker.io", DOCKER_HUB_KEY})


def auth_key(registry: str) -> str:
    """The ``auths`` key for ``registry`` (a host, ``host:port`` or URL), as ``docker login`` writes it."""
    host = registry.strip()
    for scheme in ("https://", "http://"):
        host = host.removeprefix(scheme)
    host = host.rstrip("/")
    if host in DOCKER_HUB_NAMES or host.removesuffix("/v1") in DOCKER_HUB_NAMES:
        return DOCKER_HUB_KEY
    return host.split("/", 1)[0]


def read_docker_config(directory: str | Path | None) -> dict[str, Any]:
    """The ``config.json`` in ``directory`` as a dict; {} when there is none or it cannot be read."""
    if not directory:
        return {}
    try:
        loaded = json.loads((Path(directory) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def write_docker_config(directory: Path, auths: Mapping[str, tuple[str, str]],
                        base: Mapping[str, Any] | None = None) -> Path:
    """Write ``directory/config.json``: ``base`` (another config.json's content: its auths, credHelpers, ...) with
    ``auths`` (registry -> (username, password)) added over it. Returns ``directory``, for ``DOCKER_CONFIG``."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    config: dict[str, Any] = dict(base or {})
    merged: dict[str, Any] = dict(config.get("auths") or {})
    for registry, (username, password) in auths.items():
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        merged[auth_key(registry)] = {"auth": token}
    config["auths"] = merged
    path = directory / "config.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    os.chmod(path, 0o600)
    return directory
