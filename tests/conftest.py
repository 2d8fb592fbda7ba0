"""Session fixtures: real registries on loopback and the base images pushed into them.

Missing system tools make these fixtures *fail* (never skip) with the Debian package to install; ``.ci/run``
installs them all.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import baseimages
from tests.support.baseimages import AuthBaseImages, BaseImages, MissingTool
from tests.support.registry import RunningRegistry, start_registry

AUTH_USER = "lamina"
AUTH_PASSWORD = "s3cret-Passw0rd"


def _require(*tools: str) -> None:
    try:
        for tool in tools:
            baseimages.require_tool(tool)
    except MissingTool as e:
        pytest.fail(str(e), pytrace=False)


def _start(workdir: Path, htpasswd: tuple[str, str] | None = None) -> RunningRegistry:
    _require("docker-registry", *(["htpasswd"] if htpasswd else []))
    try:
        return start_registry(workdir, htpasswd=htpasswd)
    except RuntimeError as e:
        pytest.fail(f"could not start docker-registry: {e}", pytrace=False)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """An open docker-registry on 127.0.0.1 (plain HTTP)."""
    reg = _start(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """A docker-registry behind htpasswd Basic auth (``lamina`` / ``s3cret-Passw0rd``)."""
    reg = _start(tmp_path_factory.mktemp("auth-registry"), htpasswd=(AUTH_USER, AUTH_PASSWORD))
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def base_layouts() -> dict[str, Path]:
    """The cached OCI layouts: ``{"busybox:latest": <layout, tag latest>, "debian:bookworm": <layout, tag bookworm>}``.

    The first run on a machine debootstraps Debian (about 2 minutes); later runs reuse the cache.
    """
    _require("umoci", "skopeo", "tar")
    try:
        baseimages.require_static_busybox()
        return baseimages.base_image_layouts(baseimages.cache_dir())
    except MissingTool as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session")
def base_images(registry: RunningRegistry, base_layouts: dict[str, Path]) -> BaseImages:
    """busybox and debian in the open registry under Docker Hub's names (``library/...``), for a mirror."""
    busybox = f"{registry.host}/library/busybox:latest"
    debian = f"{registry.host}/library/debian:bookworm"
    busybox_digest = baseimages.push_layout(base_layouts[baseimages.BUSYBOX], "latest", busybox)
    debian_digest = baseimages.push_layout(base_layouts[baseimages.DEBIAN], baseimages.DEBIAN_SUITE, debian)
    return BaseImages(mirror=registry.host, busybox=busybox, debian=debian,
                      busybox_digest=busybox_digest, debian_digest=debian_digest)


@pytest.fixture(scope="session")
def auth_base_images(auth_registry: RunningRegistry, base_layouts: dict[str, Path]) -> AuthBaseImages:
    """busybox in the htpasswd registry as ``<host>/library/busybox:latest``."""
    busybox = f"{auth_registry.host}/library/busybox:latest"
    digest = baseimages.push_layout(base_layouts[baseimages.BUSYBOX], "latest", busybox,
                                    creds=(AUTH_USER, AUTH_PASSWORD))
    return AuthBaseImages(mirror=auth_registry.host, busybox=busybox, busybox_digest=digest,
                          username=AUTH_USER, password=AUTH_PASSWORD)


@pytest.fixture
def docker_config(tmp_path: Path, auth_registry: RunningRegistry) -> Path:
    """A directory with a config.json holding credentials for the auth registry (pass it as DOCKER_CONFIG)."""
    config_dir = tmp_path / "docker-config"
    config_dir.mkdir()
    auth = base64.b64encode(f"{AUTH_USER}:{AUTH_PASSWORD}".encode()).decode()
    (config_dir / "config.json").write_text(json.dumps({"auths": {auth_registry.host: {"auth": auth}}}, indent=2))
    return config_dir
