"""The skeleton of layers (rootfs/skeleton.py): which entries a step writing below a path can see, and that they
are made as unpacking the same layers makes them (type, mode, owner, size, mtime, link target, hardlinks)."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from lamina.rootfs.image_files import FinalTree
from lamina.rootfs.skeleton import select, write_skeleton
from lamina.rootfs.tree import Node
from lamina.rootfs.unpack import unpack_layer


def final_tree(layers: list[Path], wanted: Callable[[str, int, int], bool]) -> tuple[Node, dict[str, bytes]]:
    final = FinalTree(wanted)
    for number, blob in enumerate(layers, 1):
        final.apply(blob, f"layer {number}")
    return final.tree.root, final.files()


pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="owners are set with chown")


def layer(path: Path, entries: list[tuple[str, str, str | bytes, int, int]]) -> Path:
    """A tar of (name, type: d f l h w, data or link target, mode, uid)."""
    with tarfile.open(path, "w") as tf:
        for name, kind, data, mode, uid in entries:
            info = tarfile.TarInfo(name)
            info.mode, info.uid, info.gid, info.mtime = mode, uid, uid, 1_600_000_000 + len(name)
            payload = data.encode() if isinstance(data, str) else data
            if kind == "d":
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            elif kind == "l":
                info.type, info.linkname = tarfile.SYMTYPE, str(data)
                tf.addfile(info)
            elif kind == "h":
                info.type, info.linkname = tarfile.LNKTYPE, str(data)
                tf.addfile(info)
            else:
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
    return path


@pytest.fixture
def layers(tmp_path: Path) -> list[Path]:
    first = layer(tmp_path / "1.tar", [
        ("etc", "d", "", 0o755, 0), ("etc/passwd", "f", "root:x:0:0::/root:/bin/sh\n", 0o644, 0),
        ("etc/group", "f", "root:x:0:\n", 0o644, 0), ("app", "d", "", 0o700, 5), ("app/a", "f", "aaaa", 0o600, 5),
        ("app/sub", "d", "", 0o750, 6), ("app/sub/b", "f", "b" * 100, 0o644, 6), ("app/sub/c", "h", "app/sub/b", 0, 0),
        ("srv", "l", "/app/sub", 0o777, 0), ("other", "d", "", 0o755, 0), ("other/big", "f", "x" * 5000, 0o644, 0),
        ("usr", "d", "", 0o755, 0), ("usr/lib", "d", "", 0o755, 0), ("lib", "l", "usr/lib", 0o777, 0),
        ("usr/lib/libx", "f", "lib", 0o755, 0),
    ])
    second = layer(tmp_path / "2.tar", [("app", "d", "", 0o700, 5), ("app/.wh.a", "f", "", 0o644, 0),
                                        ("app/new", "f", "new", 0o640, 7)])
    return [first, second]


def test_select_follows_links_and_takes_what_is_below_the_destination(layers: list[Path]) -> None:
    tree, files = final_tree(layers, lambda path, _mode, _size: path in ("etc/passwd", "etc/group"))
    chosen = select(tree, whole=["/srv/dest"], paths=["etc/passwd", "/lib/libx/../libx"])
    # /srv -> /app/sub: the link, then the way to its target and (dest missing) nothing below
    assert sorted(chosen) == ["app", "app/sub", "etc", "etc/passwd", "lib", "srv", "usr", "usr/lib", "usr/lib/libx"]
    whole = select(tree, whole=["/srv"])
    assert sorted(whole) == ["app", "app/sub", "app/sub/b", "app/sub/c", "srv"]
    assert "app/a" not in select(tree, whole=["/app"])  # whited out by the second layer
    assert files["etc/passwd"].startswith(b"root:")


def test_the_skeleton_is_what_unpacking_makes(layers: list[Path], tmp_path: Path) -> None:
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    for blob in layers:
        unpack_layer(unpacked, blob)
    tree, files = final_tree(layers, lambda path, _mode, _size: path in ("etc/passwd",))
    chosen = select(tree, whole=["/app", "/srv"], paths=["etc/passwd", "lib/libx"])
    skeleton = tmp_path / "skeleton"
    skeleton.mkdir()
    assert write_skeleton(skeleton, tree, chosen, files) == len(chosen)
    made = sorted(str(p.relative_to(skeleton)) for p in skeleton.rglob("*"))
    assert made == sorted(chosen)
    for key in chosen:
        a, b = os.lstat(unpacked / key), os.lstat(skeleton / key)
        assert (stat.S_IFMT(a.st_mode), stat.S_IMODE(a.st_mode), a.st_uid, a.st_gid, a.st_mtime_ns) == \
            (stat.S_IFMT(b.st_mode), stat.S_IMODE(b.st_mode), b.st_uid, b.st_gid, b.st_mtime_ns), key
        if stat.S_ISREG(a.st_mode):
            assert a.st_size == b.st_size, key
        if stat.S_ISLNK(a.st_mode):
            assert os.readlink(unpacked / key) == os.readlink(skeleton / key)
    assert os.lstat(skeleton / "app/sub/b").st_ino == os.lstat(skeleton / "app/sub/c").st_ino  # a hardlink
    assert (skeleton / "etc/passwd").read_bytes() == (unpacked / "etc/passwd").read_bytes()
    assert (skeleton / "app/new").read_bytes() == b"\0" * 3  # no data: only its size
