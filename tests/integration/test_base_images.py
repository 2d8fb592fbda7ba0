"""The test fixtures themselves: the registries answer and the base images in them are what tests expect."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support import baseimages
from tests.support.baseimages import AuthBaseImages, BaseImages
from tests.support.registry import RunningRegistry

pytestmark = pytest.mark.integration


def _skopeo_inspect(ref: str, *extra: str) -> dict[str, Any]:
    out = subprocess.run(["skopeo", "inspect", "--tls-verify=false", *extra, f"docker://{ref}"],
                         check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def _layer_names(ref: str, dest: Path, *extra: str) -> set[str]:
    """Copy ``ref`` from the registry to a dir: and list the paths in its layers (normalised, no "./")."""
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", *extra, f"docker://{ref}", f"dir:{dest}"],
                   check=True, capture_output=True)
    manifest = json.loads((dest / "manifest.json").read_text())
    names: set[str] = set()
    for layer in manifest["layers"]:
        blob = dest / layer["digest"].split(":", 1)[1]
        with tarfile.open(blob, "r:*") as tf:
            names.update(m.name.removeprefix("./").rstrip("/") for m in tf.getmembers())
    return names


def _unpack_from_registry(ref: str, tmp_path: Path) -> Path:
    """Pull ``ref`` into an OCI layout with skopeo and unpack it with umoci; return the rootfs."""
    layout = tmp_path / "pulled"
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:img"],
                   check=True, capture_output=True)
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:img", str(bundle)], check=True, capture_output=True)
    return bundle / "rootfs"


def test_open_registry_answers(registry: RunningRegistry) -> None:
    r = requests.get(f"{registry.url}/v2/", timeout=5)
    assert r.status_code == 200


def test_auth_registry_needs_credentials(auth_registry: RunningRegistry) -> None:
    r = requests.get(f"{auth_registry.url}/v2/", timeout=5)
    assert r.status_code == 401
    assert "basic" in r.headers.get("WWW-Authenticate", "").lower()
    bad = requests.get(f"{auth_registry.url}/v2/", auth=("lamina", "wrong"), timeout=5)
    assert bad.status_code == 401
    assert auth_registry.username and auth_registry.password
    ok = requests.get(f"{auth_registry.url}/v2/", auth=(auth_registry.username, auth_registry.password), timeout=5)
    assert ok.status_code == 200


@pytest.mark.parametrize("name, cmd", [("busybox", ["sh"]), ("debian", ["bash"])])
def test_base_image_config(base_images: BaseImages, name: str, cmd: list[str]) -> None:
    ref = getattr(base_images, name)
    assert ref == f"{base_images.mirror}/library/{name}:{'latest' if name == 'busybox' else 'bookworm'}"
    info = _skopeo_inspect(ref)
    assert info["Os"] == "linux"
    assert info["Architecture"] == "amd64"
    assert info["Digest"] == getattr(base_images, f"{name}_digest")
    assert len(info["Layers"]) == 1
    config = _skopeo_inspect(ref, "--config")
    assert config["os"] == "linux"
    assert config["architecture"] == "amd64"
    assert config["config"]["Cmd"] == cmd
    assert config["config"]["Env"] == [f"PATH={baseimages.DEFAULT_PATH}"]
    assert len(config["rootfs"]["diff_ids"]) == 1


def test_debian_image_contents(base_images: BaseImages, tmp_path: Path) -> None:
    names = _layer_names(base_images.debian, tmp_path / "debian")
    assert "usr/bin/bash" in names
    assert "bin" in names  # merged /usr: a symlink to usr/bin
    assert "etc/debian_version" in names
    assert not any(n.startswith("var/lib/apt/lists/") and n != "var/lib/apt/lists/partial" for n in names)
    assert not any(n.startswith("dev/") for n in names)


def test_debian_rootfs_has_bash(base_images: BaseImages, tmp_path: Path) -> None:
    rootfs = _unpack_from_registry(base_images.debian, tmp_path)
    assert (rootfs / "bin").is_symlink()
    assert (rootfs / "usr/bin/bash").is_file()
    assert (rootfs / "etc/debian_version").read_text().startswith("12.")


def test_busybox_runs(base_images: BaseImages, tmp_path: Path) -> None:
    rootfs = _unpack_from_registry(base_images.busybox, tmp_path)
    assert (rootfs / "bin/sh").is_symlink()
    assert (rootfs / "tmp").stat().st_mode & 0o7777 == 0o1777
    assert (rootfs / "root").stat().st_mode & 0o7777 == 0o700
    passwd = (rootfs / "etc/passwd").read_text()
    assert "nobody:x:65534:65534:nobody:/nonexistent:" in passwd
    assert "www-data:x:33:33:" in passwd
    assert "staff:x:50:" in (rootfs / "etc/group").read_text()
    out = subprocess.run(["chroot", str(rootfs), "/bin/sh", "-c", "echo hi"], check=True, capture_output=True,
                         text=True).stdout
    assert out == "hi\n"
    out = subprocess.run(["chroot", str(rootfs), "/bin/sh", "-c", "id -un; id -gn nobody"], check=True,
                         capture_output=True, text=True).stdout
    assert out.split() == ["root", "nogroup"]


def test_auth_base_image(auth_base_images: AuthBaseImages, base_images: BaseImages) -> None:
    creds = f"{auth_base_images.username}:{auth_base_images.password}"
    info = _skopeo_inspect(auth_base_images.busybox, "--creds", creds)
    assert info["Digest"] == auth_base_images.busybox_digest == base_images.busybox_digest
    r = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--no-creds", f"docker://{auth_base_images.busybox}"],
                       check=False, capture_output=True, text=True)
    assert r.returncode != 0


def test_docker_config(docker_config: Path, auth_base_images: AuthBaseImages) -> None:
    config = json.loads((docker_config / "config.json").read_text())
    entry = config["auths"][auth_base_images.mirror]
    # skopeo reads Docker's config.json through --authfile
    info = _skopeo_inspect(auth_base_images.busybox, "--authfile", str(docker_config / "config.json"))
    assert info["Digest"] == auth_base_images.busybox_digest
    assert entry["auth"]
