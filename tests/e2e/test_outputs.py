"""What a build leaves behind: pushed manifests, --digest-file, --tar-path, --oci-layout-path; reproducibility."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import Lamina
from tests.e2e.helpers import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    LaminaRun,
    Unpacked,
    inspect,
    inspect_config,
    inspect_raw,
    schema_errors,
    tags,
    unpack,
    write_context,
)

pytestmark = pytest.mark.e2e

DOCKERFILE = """
    FROM {base}
    COPY hello.txt /app/hello.txt
    RUN ln -s hello.txt /app/link && echo ran > /app/ran.txt && rm /bin/vi
    CMD ["cat", "/app/hello.txt"]
"""
HELLO = "hello from the e2e tests\n"


@dataclass(frozen=True)
class Outputs:
    run: LaminaRun
    destinations: tuple[str, str]
    digest_file: Path
    tar_path: Path
    oci_layout: Path
    tmp: Path


@pytest.fixture(scope="module")
def outputs(lamina: Lamina, tmp_path_factory: pytest.TempPathFactory) -> Outputs:
    tmp = tmp_path_factory.mktemp("outputs")
    context = write_context(tmp / "context", DOCKERFILE.format(base=lamina.images.busybox), {"hello.txt": HELLO})
    first, second = lamina.dest("outputs", "v1"), lamina.dest("outputs-copy", "other")
    digest_file, tar_path, oci_layout = tmp / "out" / "digest", tmp / "out" / "image.tar", tmp / "out" / "layout"
    (tmp / "out").mkdir()
    run = lamina.build(context, "--destination", first, "--destination", second, "--digest-file", str(digest_file),
                       "--tar-path", str(tar_path), "--oci-layout-path", str(oci_layout)).check()
    return Outputs(run, (first, second), digest_file, tar_path, oci_layout, tmp)


def check_content(image: Unpacked) -> None:
    assert image.read("app/hello.txt") == HELLO
    assert os.readlink(image.path("app/link")) == "hello.txt"
    assert image.read("app/ran.txt") == "ran\n"
    assert not image.exists("bin/vi")
    assert image.path("bin/busybox").is_file()
    assert image.config["config"]["Cmd"] == ["cat", "/app/hello.txt"]


# ---------------------------------------------------------------------------------------------------------------
# 10. the registry, --digest-file, two destinations


def test_digest_file_is_the_pushed_manifest_digest(outputs: Outputs) -> None:
    digest = outputs.digest_file.read_text().strip()
    assert digest.startswith("sha256:") and len(digest) == 71
    assert inspect(f"docker://{outputs.destinations[0]}")["Digest"] == digest
    assert f"built {digest}" in outputs.run.stdout


def test_both_destinations_get_the_image(outputs: Outputs) -> None:
    digest = outputs.digest_file.read_text().strip()
    for dest in outputs.destinations:
        assert inspect(f"docker://{dest}")["Digest"] == digest
        assert f"pushed {dest}@{digest}" in outputs.run.stdout
        repository, tag = dest.split("/", 1)[1].rsplit(":", 1)
        assert tags(dest.split("/", 1)[0], repository) == [tag]


def test_raw_manifest_hashes_to_the_digest(outputs: Outputs) -> None:
    raw = inspect_raw(f"docker://{outputs.destinations[0]}")
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == outputs.digest_file.read_text().strip()
    manifest = json.loads(raw)
    assert manifest["mediaType"] == OCI_MANIFEST
    assert manifest["config"]["mediaType"] == OCI_CONFIG
    config = inspect_config(f"docker://{outputs.destinations[0]}")
    assert len(config["rootfs"]["diff_ids"]) == len(manifest["layers"]) == 3


def test_pushed_image_content(outputs: Outputs) -> None:
    check_content(unpack(f"docker://{outputs.destinations[1]}", outputs.tmp / "pulled"))


def test_schema_check_rejects_broken_documents() -> None:
    """The validator used below is not a no-op."""
    broken = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [],
              "config": {"mediaType": OCI_CONFIG, "digest": "sha256:ABC", "size": -1}}
    assert len(schema_errors(broken, OCI_MANIFEST)) >= 2
    assert schema_errors({"architecture": "amd64", "os": "linux", "config": {"Env": ["NO_EQUALS"]},
                          "rootfs": {"type": "layers", "diff_ids": []}}, OCI_CONFIG)


def test_pushed_manifest_and_config_match_the_oci_schemas(outputs: Outputs) -> None:
    ref = f"docker://{outputs.destinations[0]}"
    manifest = json.loads(inspect_raw(ref))
    assert schema_errors(manifest, OCI_MANIFEST) == []
    assert schema_errors(inspect_config(ref), OCI_CONFIG) == []


# ---------------------------------------------------------------------------------------------------------------
# 6. --tar-path (docker-archive)


def test_tar_path_is_a_docker_archive(outputs: Outputs) -> None:
    info = inspect(f"docker-archive:{outputs.tar_path}")
    assert len(info["Layers"]) == 3
    assert info["Os"] == "linux"
    with tarfile.open(outputs.tar_path) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        manifest = json.loads(member.read())
    assert len(manifest) == 1
    assert sorted(manifest[0]["RepoTags"]) == sorted(outputs.destinations)


def test_tar_path_content(outputs: Outputs) -> None:
    image = unpack(f"docker-archive:{outputs.tar_path}", outputs.tmp / "from-tar")
    check_content(image)
    pushed = inspect_config(f"docker://{outputs.destinations[0]}")
    assert image.config["rootfs"]["diff_ids"] == pushed["rootfs"]["diff_ids"]


# ---------------------------------------------------------------------------------------------------------------
# 7. --oci-layout-path


def test_oci_layout_inspect(outputs: Outputs) -> None:
    tag = outputs.destinations[0].rsplit(":", 1)[1]
    info = inspect(f"oci:{outputs.oci_layout}:{tag}")
    assert info["Digest"] == outputs.digest_file.read_text().strip()
    assert len(info["Layers"]) == 3


def test_oci_layout_content(outputs: Outputs) -> None:
    tag = outputs.destinations[0].rsplit(":", 1)[1]
    check_content(unpack(f"oci:{outputs.oci_layout}:{tag}", outputs.tmp / "from-layout"))


def test_oci_layout_matches_the_oci_schemas(outputs: Outputs) -> None:
    layout = outputs.oci_layout
    assert schema_errors(json.loads((layout / "oci-layout").read_text()),
                         "application/vnd.oci.layout.header.v1+json") == []
    index = json.loads((layout / "index.json").read_text())
    assert schema_errors(index, OCI_INDEX) == []
    [entry] = index["manifests"]
    manifest = json.loads((layout / "blobs" / "sha256" / entry["digest"].split(":")[1]).read_text())
    assert schema_errors(manifest, OCI_MANIFEST) == []
    config = json.loads((layout / "blobs" / "sha256" / manifest["config"]["digest"].split(":")[1]).read_text())
    assert schema_errors(config, OCI_CONFIG) == []


# ---------------------------------------------------------------------------------------------------------------
# --no-push


def test_no_push_writes_files_and_pushes_nothing(lamina: Lamina, tmp_path: Path) -> None:
    context = write_context(tmp_path / "context", DOCKERFILE.format(base=lamina.images.busybox), {"hello.txt": HELLO})
    dest = lamina.dest("not-pushed")
    tar_path, layout = tmp_path / "image.tar", tmp_path / "layout"
    run = lamina.build(context, "--no-push", "--destination", dest, "--tar-path", str(tar_path),
                       "--oci-layout-path", str(layout)).check()
    host, rest = dest.split("/", 1)
    assert tags(host, rest.rsplit(":", 1)[0]) == []
    assert "pushed" not in run.stdout
    check_content(unpack(f"docker-archive:{tar_path}", tmp_path / "from-tar"))
    check_content(unpack(f"oci:{layout}:1", tmp_path / "from-layout"))


# ---------------------------------------------------------------------------------------------------------------
# 11. reproducible builds with SOURCE_DATE_EPOCH


def _scratch_context(root: Path, mtime: int) -> Path:
    write_context(root, """
        FROM scratch
        COPY files/ /
        COPY hello.txt /greeting/hello.txt
        ENV GREETING=hello
        CMD ["/greeting"]
    """, {"files/etc/app.conf": "key=value\n", "files/usr/share/app/data.bin": bytes(range(256)) * 64,
          "hello.txt": HELLO})
    os.symlink("app.conf", root / "files" / "etc" / "link.conf")
    os.chmod(root / "files" / "usr" / "share" / "app" / "data.bin", 0o600)
    for path in [*root.rglob("*"), root]:
        os.utime(path, (mtime, mtime), follow_symlinks=False)
    return root


def test_same_dockerfile_twice_gives_the_same_digest(lamina: Lamina, tmp_path: Path) -> None:
    digests = []
    dest = lamina.dest("reproducible")
    for i, mtime in enumerate((1_700_000_000, 1_750_000_000)):  # different context paths and mtimes
        context = _scratch_context(tmp_path / f"context-{i}", mtime)
        digest_file = tmp_path / f"digest-{i}"
        lamina.build(context, "--destination", dest, "--digest-file", str(digest_file),
                     extra_env={"SOURCE_DATE_EPOCH": "0"}).check()
        digests.append(digest_file.read_text().strip())
    assert digests[0] == digests[1]
    config = inspect_config(f"docker://{dest}")
    assert config["created"].startswith("1970-01-01T00:00:00")
    assert all(h["created"].startswith("1970-01-01T00:00:00") for h in config["history"])
    image = unpack(f"docker://{dest}", tmp_path / "pulled")
    for index in range(len(image.manifest["layers"])):
        assert {m.mtime for m in image.layer(index).values()} == {0}
    assert image.read("etc/app.conf") == "key=value\n"
    assert os.readlink(image.path("etc/link.conf")) == "app.conf"
    assert image.path("usr/share/app/data.bin").read_bytes() == bytes(range(256)) * 64


def test_run_build_is_reproducible_with_source_date_epoch(lamina: Lamina, tmp_path: Path) -> None:
    context = write_context(tmp_path / "context", f"""
        FROM {lamina.images.busybox}
        RUN mkdir -p /srv/data && echo data > /srv/data/file && rm /bin/vi
        COPY hello.txt /srv/
    """, {"hello.txt": HELLO})
    digests = []
    for i in range(2):
        digest_file = tmp_path / f"digest-{i}"
        lamina.build(context, "--no-push", "--digest-file", str(digest_file),
                     extra_env={"SOURCE_DATE_EPOCH": "1704067200"}).check()
        digests.append(digest_file.read_text().strip())
    assert digests[0] == digests[1]


def test_destination_without_tag_is_latest(lamina: Lamina, tmp_path: Path) -> None:
    context = write_context(tmp_path / "context", DOCKERFILE.format(base=lamina.images.busybox), {"hello.txt": HELLO})
    dest = lamina.dest("no-tag").rsplit(":", 1)[0]
    digest_file = tmp_path / "digest"
    lamina.build(context, "--destination", dest, "--digest-file", str(digest_file)).check()
    host, repository = dest.split("/", 1)
    assert tags(host, repository) == ["latest"]
    assert inspect(f"docker://{dest}:latest")["Digest"] == digest_file.read_text().strip()


def test_tar_path_without_any_destination(lamina: Lamina, tmp_path: Path) -> None:
    context = write_context(tmp_path / "context", DOCKERFILE.format(base=lamina.images.busybox), {"hello.txt": HELLO})
    tar_path, layout = tmp_path / "image.tar", tmp_path / "layout"
    lamina.build(context, "--no-push", "--tar-path", str(tar_path), "--oci-layout-path", str(layout)).check()
    assert len(inspect(f"docker-archive:{tar_path}")["Layers"]) == 3
    check_content(unpack(f"docker-archive:{tar_path}", tmp_path / "from-tar"))
    check_content(unpack(f"oci:{layout}:latest", tmp_path / "from-layout"))
