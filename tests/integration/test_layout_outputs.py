"""OCI layout and docker-archive outputs, checked with independent tools (skopeo, umoci)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from lamina.errors import OutputError
from lamina.oci.digest import compute_digest, digest_hex
from lamina.oci.layout import ImageBlobs, write_docker_archive, write_oci_layout
from lamina.oci.model import OCI_CONFIG, Descriptor, Manifest, canonical_json
from lamina.snapshot.diff import diff_scans
from lamina.snapshot.scan import scan_tree
from lamina.snapshot.tar import write_layer

CONTENT = "hello from lamina\n"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (Debian package {name}); .ci/run installs it", pytrace=False)
    return path


def _run(*args: str) -> str:
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def build_image(tmp_path: Path, content: str = CONTENT, compression: str = "gzip") -> ImageBlobs:
    tree = tmp_path / "tree"
    (tree / "app").mkdir(parents=True, exist_ok=True)
    (tree / "app" / "hello.txt").write_text(content)
    os.symlink("app/hello.txt", tree / "hello")
    changes = diff_scans({}, scan_tree(tree))
    blob = write_layer(tree, changes, tmp_path / "blobs", compression=compression, source_date_epoch=0)
    config = canonical_json({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [blob.diff_id]},
        "history": [{"created_by": "COPY hello.txt /app/"}],
    })
    layer = Descriptor(blob.media_type, blob.digest, blob.size)
    manifest = Manifest(config=Descriptor(OCI_CONFIG, compute_digest(config), len(config)), layers=(layer,))
    data = manifest.to_bytes()
    return ImageBlobs(manifest=data, manifest_digest=compute_digest(data), config=config,
                      config_digest=compute_digest(config), layers=[(layer, blob.path)], diff_ids=[blob.diff_id])


@pytest.fixture()
def image(tmp_path: Path) -> ImageBlobs:
    return build_image(tmp_path)


def test_oci_layout_read_by_skopeo_and_umoci(tmp_path: Path, image: ImageBlobs) -> None:
    skopeo, umoci = _tool("skopeo"), _tool("umoci")
    layout = tmp_path / "layout"
    write_oci_layout(layout, image, "latest")
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((layout / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [image.manifest_digest]
    assert index["manifests"][0]["annotations"] == {"org.opencontainers.image.ref.name": "latest"}
    for digest in (image.manifest_digest, image.config_digest, image.layers[0][0].digest):
        assert (layout / "blobs" / "sha256" / digest_hex(digest)).is_file()

    info = json.loads(_run(skopeo, "inspect", f"oci:{layout}:latest"))
    assert info["Digest"] == image.manifest_digest
    assert info["Layers"] == [image.layers[0][0].digest]
    assert info["Os"] == "linux"

    if os.geteuid() != 0:
        pytest.skip("umoci unpack without --rootless needs root")
    bundle = tmp_path / "bundle"
    _run(umoci, "unpack", "--image", f"{layout}:latest", str(bundle))
    assert (bundle / "rootfs" / "app" / "hello.txt").read_text() == CONTENT
    assert os.readlink(bundle / "rootfs" / "hello") == "app/hello.txt"


def test_oci_layout_update_replaces_the_tag(tmp_path: Path, image: ImageBlobs) -> None:
    skopeo = _tool("skopeo")
    layout = tmp_path / "layout"
    write_oci_layout(layout, image, "latest")
    write_oci_layout(layout, image, "latest")  # idempotent
    write_oci_layout(layout, image, "v1")
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other = build_image(other_dir, "second image\n")
    write_oci_layout(layout, other, "latest")
    write_oci_layout(layout, other, None)
    index = json.loads((layout / "index.json").read_text())
    tags = {(m.get("annotations") or {}).get("org.opencontainers.image.ref.name"): m["digest"]
            for m in index["manifests"]}
    assert tags == {"v1": image.manifest_digest, "latest": other.manifest_digest, None: other.manifest_digest}
    assert json.loads(_run(skopeo, "inspect", f"oci:{layout}:latest"))["Digest"] == other.manifest_digest
    assert json.loads(_run(skopeo, "inspect", f"oci:{layout}:v1"))["Digest"] == image.manifest_digest


def test_oci_layout_links_layer_blobs(tmp_path: Path, image: ImageBlobs) -> None:
    layout = tmp_path / "layout"
    write_oci_layout(layout, image, "latest")
    descriptor, source = image.layers[0]
    blob = layout / "blobs" / "sha256" / digest_hex(descriptor.digest)
    assert blob.read_bytes() == source.read_bytes()
    assert os.stat(blob).st_ino == os.stat(source).st_ino
    assert sorted(p.name for p in (layout / "blobs" / "sha256").iterdir() if p.name.startswith(".")) == []


def test_oci_layout_copies_when_links_fail(tmp_path: Path, image: ImageBlobs, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(*args: object, **kwargs: object) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    layout = tmp_path / "layout"
    write_oci_layout(layout, image, "latest")
    descriptor, source = image.layers[0]
    blob = layout / "blobs" / "sha256" / digest_hex(descriptor.digest)
    assert blob.read_bytes() == source.read_bytes()
    assert os.stat(blob).st_ino != os.stat(source).st_ino
    _run(_tool("skopeo"), "inspect", f"oci:{layout}:latest")


def test_oci_layout_refuses_bad_targets(tmp_path: Path, image: ImageBlobs) -> None:
    not_a_layout = tmp_path / "notes"
    not_a_layout.mkdir()
    (not_a_layout / "important.txt").write_text("keep")
    with pytest.raises(OutputError, match="not an OCI layout"):
        write_oci_layout(not_a_layout, image, "latest")
    assert sorted(p.name for p in not_a_layout.iterdir()) == ["important.txt"]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(OutputError, match=str(a_file)):
        write_oci_layout(a_file, image, "latest")
    descriptor, source = image.layers[0]
    wrong = ImageBlobs(image.manifest, image.manifest_digest, image.config, image.config_digest,
                       [(Descriptor(descriptor.media_type, descriptor.digest, descriptor.size + 1), source)],
                       image.diff_ids)
    with pytest.raises(OutputError, match="descriptor"):
        write_oci_layout(tmp_path / "new", wrong, "latest")


def test_docker_archive(tmp_path: Path, image: ImageBlobs) -> None:
    skopeo = _tool("skopeo")
    archive = tmp_path / "image.tar"
    write_docker_archive(archive, image, ["example.com/team/app:1.0", "localhost:5000/app:latest"])
    with tarfile.open(archive) as tf:
        names = tf.getnames()
        config_name = digest_hex(image.config_digest) + ".json"
        layer_name = digest_hex(image.diff_ids[0]) + "/layer.tar"
        assert names == [config_name, digest_hex(image.diff_ids[0]), layer_name, "manifest.json", "repositories"]
        for member in tf.getmembers():
            assert member.mtime == 0 and member.uid == 0 and member.uname == ""
        manifest_file = tf.extractfile("manifest.json")
        assert manifest_file is not None
        assert json.loads(manifest_file.read()) == [{
            "Config": config_name, "RepoTags": ["example.com/team/app:1.0", "localhost:5000/app:latest"],
            "Layers": [layer_name]}]
        repositories_file = tf.extractfile("repositories")
        assert repositories_file is not None
        assert json.loads(repositories_file.read()) == {
            "example.com/team/app": {"1.0": digest_hex(image.diff_ids[0])},
            "localhost:5000/app": {"latest": digest_hex(image.diff_ids[0])}}
        layer = tf.extractfile(layer_name)
        assert layer is not None
        assert compute_digest(layer.read()) == image.diff_ids[0]

    info = json.loads(_run(skopeo, "inspect", f"docker-archive:{archive}"))
    assert info["Os"] == "linux"
    assert info["Layers"] == image.diff_ids  # uncompressed in the archive
    tagged = json.loads(_run(skopeo, "inspect", f"docker-archive:{archive}:example.com/team/app:1.0"))
    assert tagged["Name"] == "example.com/team/app"
    assert tagged["Digest"] == info["Digest"]

    copy = tmp_path / "copied"
    _run(skopeo, "copy", "--quiet", f"docker-archive:{archive}", f"oci:{copy}:latest")
    copied = json.loads(_run(skopeo, "inspect", "--config", f"oci:{copy}:latest"))
    assert copied["rootfs"]["diff_ids"] == image.diff_ids

    again = tmp_path / "again.tar"
    write_docker_archive(again, image, ["example.com/team/app:1.0", "localhost:5000/app:latest"])
    assert again.read_bytes() == archive.read_bytes()


def test_docker_archive_refuses_corrupt_layer(tmp_path: Path, image: ImageBlobs) -> None:
    _, source = image.layers[0]
    wrong = ImageBlobs(image.manifest, image.manifest_digest, image.config, image.config_digest, image.layers,
                       ["sha256:" + "0" * 64])
    with pytest.raises(OutputError, match="diff_id"):
        write_docker_archive(tmp_path / "bad.tar", wrong, ["app:latest"])
    assert not (tmp_path / "bad.tar").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".bad.tar")] == []
    assert source.exists()


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_other_layer_compressions(tmp_path: Path, compression: str) -> None:
    skopeo = _tool("skopeo")
    image = build_image(tmp_path, compression=compression)
    archive = tmp_path / "image.tar"
    write_docker_archive(archive, image, ["app:latest"])
    with tarfile.open(archive) as tf:
        layer = tf.extractfile(digest_hex(image.diff_ids[0]) + "/layer.tar")
        assert layer is not None
        assert compute_digest(layer.read()) == image.diff_ids[0]
    assert json.loads(_run(skopeo, "inspect", f"docker-archive:{archive}"))["Layers"] == image.diff_ids
    layout = tmp_path / "layout"
    write_oci_layout(layout, image, "latest")
    assert json.loads(_run(skopeo, "inspect", f"oci:{layout}:latest"))["Digest"] == image.manifest_digest
