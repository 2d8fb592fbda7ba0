"""Reading an image's final files for its SBOM (``rootfs/image_files.py``): from layer blobs built here with tarfile
(gzip, zstd, plain), checked against what the final filesystem holds, and against the same layers unpacked by
``rootfs.unpack.unpack_layer`` and read back with ``files_in_tree``."""

from __future__ import annotations

from pathlib import Path

import pytest

from lamina.attest.packages import excerpt_for_sbom, find_packages, wanted_for_sbom
from lamina.errors import RootfsError
from lamina.rootfs.image_files import files_in_tree, final_files
from lamina.rootfs.unpack import unpack_layer
from tests.support.layers import d, f, hard, sym, wh, write_layer

STATUS_V1 = b"Package: foo\nStatus: install ok installed\nVersion: 1.0\nArchitecture: amd64\n\n"
STATUS_V2 = STATUS_V1 + b"Package: bar\nStatus: install ok installed\nVersion: 2.0\nArchitecture: all\n\n"
FOO_METADATA = b"Metadata-Version: 2.1\nName: foo\nVersion: 1.0\n"
BAR_METADATA = b"Metadata-Version: 2.1\nName: Bar_Baz\nVersion: 2.0\nLicense-Expression: MIT\n"
SITE = "usr/lib/python3/dist-packages"


def not_cache(path: str, mode: int, size: int) -> bool:
    """Every regular file but those of srv/ (a cache, as uv's, that site-packages files are hardlinked to)."""
    return not path.startswith("srv/")


def _layers(directory: Path) -> list[Path]:
    """Four layers: gzip, zstd, empty, plain. Between them: overrides, a whiteout, an opaque directory, hardlinks
    within a layer and across layers (one to a file that is not wanted under its own name), a directory replaced by
    a symlink."""
    first = write_layer(directory, "1", [
        d("etc"), f("etc/os-release", b"ID=debian\nVERSION_ID=12\n"),
        d("var"), d("var/lib"), d("var/lib/dpkg"), f("var/lib/dpkg/status", STATUS_V1),
        d("usr"), d("usr/lib"), d("usr/lib/python3"), d(SITE),
        d(f"{SITE}/foo-1.0.dist-info"), f(f"{SITE}/foo-1.0.dist-info/METADATA", FOO_METADATA),
        d("opt"), d("opt/app"), f("opt/app/old.txt", b"old"), d("opt/app/sub"), f("opt/app/sub/deep.txt", b"deep"),
        d("usr/bin"), f("usr/bin/tool", b"tool v1", mode=0o755), hard("usr/bin/tool-alias", "usr/bin/tool"),
        d("srv"), d("srv/cache"), f("srv/cache/bar-METADATA", BAR_METADATA),
        d("data"), d("data/sub"), f("data/sub/x.txt", b"x"),
    ], "gzip")
    second = write_layer(directory, "2", [
        d("var"), d("var/lib"), d("var/lib/dpkg"), f("var/lib/dpkg/status", STATUS_V2),
        d("usr"), d("usr/lib"), d("usr/lib/python3"), d(SITE), wh(f"{SITE}/.wh.foo-1.0.dist-info"),
        d(f"{SITE}/bar_baz-2.0.dist-info"), hard(f"{SITE}/bar_baz-2.0.dist-info/METADATA", "srv/cache/bar-METADATA"),
        d("opt"), d("opt/app"), wh("opt/app/.wh..wh..opq"), f("opt/app/new.txt", b"new"),
        d("usr/local"), d("usr/local/bin"), hard("usr/local/bin/tool2", "usr/bin/tool"),
    ], "zstd")
    empty = write_layer(directory, "3", None)
    fourth = write_layer(directory, "4", [
        d("usr"), d("usr/bin"), f("usr/bin/tool", b"tool v4", mode=0o755),
        sym("data/sub", "../opt"),
        d("srv"), wh("srv/.wh.cache"),
    ])
    return [first, second, empty, fourth]


EXPECTED = {
    "etc/os-release": b"ID=debian\nVERSION_ID=12\n",
    "opt/app/new.txt": b"new",
    f"{SITE}/bar_baz-2.0.dist-info/METADATA": BAR_METADATA,  # its first name (srv/cache) is whited out
    "usr/bin/tool": b"tool v4",
    "usr/bin/tool-alias": b"tool v1",  # hardlinks keep the file that was there when they were made
    "usr/local/bin/tool2": b"tool v1",
    "var/lib/dpkg/status": STATUS_V2,
}


def _unpacked(layers: list[Path], root: Path) -> Path:
    for layer in layers:
        unpack_layer(root, layer, description=layer.name)
    return root


def test_final_files_apply_the_layers(tmp_path: Path) -> None:
    layers = _layers(tmp_path)
    assert final_files(layers, not_cache) == EXPECTED


def test_same_answer_from_the_unpacked_tree(tmp_path: Path) -> None:
    layers = _layers(tmp_path)
    tree = _unpacked(layers, tmp_path / "rootfs")
    assert files_in_tree(tree, not_cache) == final_files(layers, not_cache) == EXPECTED


def test_only_wanted_files_and_their_excerpts(tmp_path: Path) -> None:
    layers = _layers(tmp_path)
    asked: list[tuple[str, int, int]] = []

    def executables(path: str, mode: int, size: int) -> bool:
        asked.append((path, mode, size))
        return bool(mode & 0o111)

    def first_word(path: str, data: bytes) -> bytes | None:
        """Keep the first word, nothing of version 4 (an excerpt depends on the data: a hardlink's names share it)."""
        return None if data.endswith(b"v4") else data.split()[0]

    expected = {"usr/bin/tool-alias": b"tool", "usr/local/bin/tool2": b"tool"}
    assert final_files(layers, executables, excerpt=first_word) == expected
    assert ("usr/bin/tool", 0o755, len(b"tool v1")) in asked
    assert ("etc/os-release", 0o644, len(EXPECTED["etc/os-release"])) in asked
    tree = _unpacked(layers, tmp_path / "rootfs")
    assert files_in_tree(tree, executables, excerpt=first_word) == expected


def test_packages_of_the_final_filesystem(tmp_path: Path) -> None:
    """The SBOM's own choice of files: the whited-out distribution is gone, the hardlinked one found, a real Go
    executable in a layer reduced to its build information."""
    layers = _layers(tmp_path)
    umoci = Path("/usr/bin/umoci").read_bytes()
    layers.append(write_layer(tmp_path, "5", [d("usr"), d("usr/bin"), f("usr/bin/umoci", umoci, mode=0o755)], "zstd"))
    files = final_files(layers, wanted_for_sbom, excerpt=excerpt_for_sbom)
    assert files["var/lib/dpkg/status"] == STATUS_V2
    assert 0 < len(files["usr/bin/umoci"]) < 1024  # the build information only
    found = {(p.kind, p.name, p.version) for p in find_packages(files)}
    assert ("python", "Bar_Baz", "2.0") in found and ("python", "foo", "1.0") not in found
    assert {("deb", "foo", "1.0"), ("deb", "bar", "2.0")} <= found
    assert ("golang", "github.com/opencontainers/umoci/cmd/umoci", "") in found
    tree = _unpacked(layers, tmp_path / "rootfs")
    assert files_in_tree(tree, wanted_for_sbom, excerpt=excerpt_for_sbom) == files


def test_a_broken_layer_is_a_rootfs_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.tar"
    broken.write_bytes(b"\x1f\x8b" + b"not gzip at all" * 10)
    with pytest.raises(RootfsError, match="layer 1 of 1"):
        final_files([broken], not_cache)
