"""Multi-platform images assembled from per-platform builds, zstd layers and the name/metadata output files."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import zstandard

from tests.e2e.conftest import Lamina
from tests.e2e.helpers import inspect_raw, lamina_in_process, skopeo, write_context

PLATFORMS = ("linux/amd64", "linux/arm64", "linux/arm/v7")


def test_manifest_create_assembles_an_index(lamina: Lamina, tmp_path: Path) -> None:
    # COPY-only on scratch: no RUN, so any platform builds without emulation
    context = write_context(tmp_path / "ctx", "FROM scratch\nARG TARGETPLATFORM\nCOPY hello.txt /hello.txt\n",
                            {"hello.txt": "hello\n"})
    dest = lamina.dest("multi", "1.0")
    repository = dest.rsplit(":", 1)[0]
    digests = {}
    for platform in PLATFORMS:  # pushed by digest, as a release does: no per-platform tags pile up
        digest_file = tmp_path / f"digest-{platform.replace('/', '-')}"
        run = lamina.build(context, "--platform", platform, "--destination", repository, "--push-by-digest",
                           "--digest-file", str(digest_file)).check()
        digests[platform] = digest_file.read_text()
        assert f"pushed {repository}@{digests[platform]}" in run.stdout
    listed = skopeo("list-tags", "--tls-verify=false", f"docker://{repository}", check=False)
    assert listed.returncode != 0 and "404" in listed.stderr  # the registry knows no tag of the repository
    for digest in digests.values():
        assert json.loads(inspect_raw(f"docker://{repository}@{digest}"))["config"]
    index_digest = tmp_path / "index-digest"
    run = lamina_in_process(["manifest", "create", "--destination", dest, "--insecure-registry", lamina.registry.host,
                             "--digest-file", str(index_digest),
                             *(f"{repository}@{digests[p]}" for p in PLATFORMS)], lamina.environ()).check()
    assert "3 platforms" in run.stdout
    assert json.loads(skopeo("list-tags", "--tls-verify=false", f"docker://{repository}").stdout)["Tags"] == ["1.0"]
    index = json.loads(inspect_raw(f"docker://{dest}"))
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert [m["digest"] for m in index["manifests"]] == [digests[p] for p in PLATFORMS]
    assert index["manifests"][2]["platform"] == {"architecture": "arm", "os": "linux", "variant": "v7"}
    for platform in PLATFORMS:
        os_name, arch, *variant = platform.split("/")
        args = ["inspect", "--tls-verify=false", "--override-os", os_name, "--override-arch", arch]
        if variant:
            args += ["--override-variant", variant[0]]
        resolved = json.loads(skopeo(*args, f"docker://{dest}").stdout)
        assert resolved["Digest"] == index_digest.read_text() or resolved["Architecture"] == arch
        assert resolved["Architecture"] == arch


def test_manifest_create_refuses_two_images_for_one_platform(lamina: Lamina, tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", "FROM scratch\nCOPY a /a\n", {"a": "a"})
    dest = lamina.dest("dup")
    repository = dest.rsplit(":", 1)[0]
    digest_file = tmp_path / "d"
    lamina.build(context, "--platform", "linux/amd64", "--destination", dest, "--digest-file", str(digest_file)).check()
    digest = digest_file.read_text()
    run = lamina_in_process(["manifest", "create", "--destination", f"{repository}:multi", "--insecure-registry",
                             lamina.registry.host, f"{repository}@{digest}", f"{repository}@{digest}"],
                            lamina.environ())
    assert run.returncode != 0
    assert "two images for platform linux/amd64" in run.stderr


def test_zstd_layers_and_output_files(lamina: Lamina, tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", f"FROM {lamina.images.busybox}\nRUN echo zstd > /z.txt\n")
    dest = lamina.dest("zstd", "v1")
    second = lamina.dest("zstd-b", "v2")
    outputs = tmp_path / "out"
    outputs.mkdir()
    lamina.build(context, "--destination", dest, "--destination", second, "--compression", "zstd",
                 "--compression-level", "9", "--digest-file", str(outputs / "digest"),
                 "--image-name-with-digest-file", str(outputs / "names"),
                 "--image-name-tag-with-digest-file", str(outputs / "name-tags"),
                 "--metadata-file", str(outputs / "metadata.json")).check()
    digest = (outputs / "digest").read_text()
    manifest = json.loads(inspect_raw(f"docker://{dest}"))
    assert manifest["layers"][-1]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"
    assert (outputs / "names").read_text().splitlines() == [f"{dest.rsplit(':', 1)[0]}@{digest}",
                                                             f"{second.rsplit(':', 1)[0]}@{digest}"]
    assert (outputs / "name-tags").read_text().splitlines() == [f"{dest}@{digest}", f"{second}@{digest}"]
    metadata = json.loads((outputs / "metadata.json").read_text())
    assert metadata["containerimage.digest"] == digest
    assert metadata["image.name"] == f"{dest},{second}"
    assert metadata["containerimage.config.digest"] == manifest["config"]["digest"]
    # umoci 0.4 (Debian 12) cannot unpack zstd layers: read the layer with the zstandard module instead
    layout = tmp_path / "layout"
    skopeo("copy", "--quiet", "--src-tls-verify=false", f"docker://{dest}", f"oci:{layout}:img")
    blob = layout / "blobs" / "sha256" / manifest["layers"][-1]["digest"].split(":", 1)[1]
    with open(blob, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as stream, \
            tarfile.open(fileobj=stream, mode="r|") as tar:
        contents = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]
    assert contents == {"z.txt": b"zstd\n"}


def test_bad_compression_is_an_options_error(lamina: Lamina, tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", "FROM scratch\nCOPY a /a\n", {"a": "a"})
    run = lamina.build(context, "--no-push", "--compression", "brotli")
    assert run.returncode == 2
    assert "--compression brotli: expected gzip or zstd" in run.stderr
