"""5. Pulling the base image from, and pushing to, a registry behind htpasswd, with credentials from config.json."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tests.e2e.conftest import Lamina
from tests.e2e.helpers import inspect, inspect_config, inspect_fails, tags, unpack, write_context
from tests.support.baseimages import AuthBaseImages
from tests.support.registry import RunningRegistry

pytestmark = pytest.mark.e2e


def _build(lamina: Lamina, tmp: Path, images: AuthBaseImages, registry: RunningRegistry, config_dir: Path,
           name: str) -> tuple[str, str]:
    context = write_context(tmp / "context", f"""
        FROM {images.busybox}
        COPY secret-app.txt /app/
        RUN cat /app/secret-app.txt > /app/copied.txt
    """, {"secret-app.txt": "behind auth\n"})
    dest = f"{registry.host}/e2e/{name}:1"
    digest_file = tmp / "digest"
    lamina.build(context, "--destination", dest, "--digest-file", str(digest_file),
                 "--insecure-registry", registry.host, docker_config=config_dir).check()
    return dest, digest_file.read_text().strip()


def test_push_and_pull_with_config_json_credentials(lamina: Lamina, tmp_path: Path, auth_registry: RunningRegistry,
                                                    auth_base_images: AuthBaseImages, docker_config: Path) -> None:
    creds = (auth_base_images.username, auth_base_images.password)
    dest, digest = _build(lamina, tmp_path, auth_base_images, auth_registry, docker_config, "auth-app")
    assert inspect(f"docker://{dest}", creds=creds)["Digest"] == digest
    inspect_fails(f"docker://{dest}")  # anonymous access is refused: the credentials really were needed
    config = inspect_config(f"docker://{dest}", creds=creds)
    assert len(config["rootfs"]["diff_ids"]) == 3
    image = unpack(f"docker://{dest}", tmp_path / "pulled", creds=creds)
    assert image.read("app/copied.txt") == "behind auth\n"
    assert image.path("bin/busybox").is_file()


@pytest.mark.parametrize("form", ["username-password", "url-key"])
def test_other_config_json_forms(lamina: Lamina, tmp_path: Path, auth_registry: RunningRegistry,
                                 auth_base_images: AuthBaseImages, form: str) -> None:
    """``username``/``password`` fields instead of ``auth``, and a key written as a URL (as `docker login` may)."""
    config_dir = tmp_path / "docker-config"
    config_dir.mkdir()
    user, password = auth_base_images.username, auth_base_images.password
    if form == "username-password":
        auths = {auth_registry.host: {"username": user, "password": password}}
    else:
        auths = {f"http://{auth_registry.host}/v2/": {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}}
    (config_dir / "config.json").write_text(json.dumps({"auths": auths}))
    dest, digest = _build(lamina, tmp_path, auth_base_images, auth_registry, config_dir, f"auth-{form}")
    assert inspect(f"docker://{dest}", creds=(user, password))["Digest"] == digest
    assert tags(auth_registry.host, f"e2e/auth-{form}", creds=(user, password)) == ["1"]
