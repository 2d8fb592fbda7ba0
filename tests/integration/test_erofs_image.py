"""EROFS images of layer stacks (``rootfs/overlay.py``, ``erofs.py``) checked by the real kernel and fsck.erofs.

Each stack is written with ``write_image``, checked with ``fsck.erofs``, mounted read-only with a loop device and
compared, path by path, with the same layers unpacked into a directory by ``unpack_layer`` (the reference): type,
mode, owner, size, mtime, symlink target, device number, link count, content and xattrs. Also: a one-layer image
with overlayfs markers (``markers=True``) stacked by overlayfs over the image below it, what ``write_image``
refuses, and a stage root filesystem mounted with ``StageOverlay``/``LayerMounts`` then unmounted.

Needs root and loop devices (skipped otherwise); fsck.erofs is required (Debian package erofs-utils).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import random
import shutil
import stat
import subprocess
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
import zstandard

from lamina.rootfs.erofs import UnsupportedContent
from lamina.rootfs.mounts import LayerMounts, unavailable_reason
from lamina.rootfs.overlay import StageOverlay, write_image
from lamina.rootfs.unpack import unpack_layer
from tests.support import baseimages
from tests.support.layers import E, d, f, hard, special, sym, wh, write_layer

pytestmark = pytest.mark.integration

M0 = 1_600_000_000  # the synthetic base layer's times
M1 = 1_700_000_000  # the upper layers'
NS = 1_000_000_000
# a valid VFS_CAP_REVISION_2 value (cap_net_bind_service, effective): the kernel checks what is set
CAPABILITY = b"\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
BINARY = b"\xff\xfe\x00\x80 not utf-8"
RANDOM = random.Random(20240101)
BIG = RANDOM.randbytes(5 * 1024 * 1024)


@pytest.fixture(autouse=True)
def _kernel() -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting images needs root")
    if not os.path.exists("/dev/loop-control"):
        pytest.skip("no loop devices (/dev/loop-control)")


@pytest.fixture()
def fsck() -> str:
    path = shutil.which("fsck.erofs")
    if path is None:
        pytest.fail("fsck.erofs is not installed: apt-get install erofs-utils", pytrace=False)
    return path


# ---------------------------------------------------------------------------------------------------------------
# layers


def xattrs(**values: bytes) -> dict[str, str]:
    """PAX records for xattrs: ``security_capability=...`` names ``security.capability``."""
    return {f"SCHILY.xattr.{key.replace('_', '.', 1)}": value.decode("utf-8", "surrogateescape")
            for key, value in values.items()}


def many_names() -> list[str]:
    """3,000 names for one directory, of varied lengths up to 255 bytes: its dirents fill many blocks."""
    names = [f"f{i:04d}" + "-" * (i % 40) for i in range(2990)]
    names += ["m" * n for n in (1, 2, 100, 200, 250, 251, 252, 253, 254, 255)]
    return names


# A base that has what RICH changes (the Debian image has the same paths)
BASE = [
    d("./", mtime=M0),
    d("etc", mtime=M0), f("etc/motd", b"motd\n", mtime=M0), f("etc/hostname", b"base\n", mtime=M0),
    f("etc/issue", b"Debian GNU/Linux 12\n", mtime=M0),
    d("etc/apt", mtime=M0), f("etc/apt/sources.list", b"deb http://deb.debian.org/debian bookworm main\n", mtime=M0),
    d("etc/apt/apt.conf.d", mtime=M0), f("etc/apt/apt.conf.d/01autoremove", b"auto", mtime=M0),
    f("etc/apt/apt.conf.d/70debconf", b"debconf", mtime=M0), d("etc/apt/trusted.gpg.d", mtime=M0),
    f("etc/apt/trusted.gpg.d/key.asc", b"key", mtime=M0),
    d("usr", mtime=M0), d("usr/bin", mtime=M0), f("usr/bin/gunzip", b"#!/bin/sh\ngzip -d\n", mode=0o755, mtime=M0),
    hard("usr/bin/uncompress", "usr/bin/gunzip"), f("usr/bin/gzip", b"\x7fELF...", mode=0o755, mtime=M0),
    d("usr/share", mtime=M0), d("usr/share/doc", mtime=M0), d("usr/share/doc/pkg", mtime=M0),
    f("usr/share/doc/pkg/copyright", b"GPL", mtime=M0), d("opt", mtime=M0), sym("bin", "usr/bin", mtime=M0),
    d("var", mtime=M0), d("var/lib", mtime=M0), f("var/lib/ns", b"ns", pax={"mtime": "1600000000.987654321"}),
    d("tmp", mode=0o1777, mtime=M0),
]

RICH = [
    d("./", mode=0o755, mtime=M1 + 1),
    d("etc"),
    wh("etc/.wh.motd"),
    f("etc/hostname", b"lamina\n"),  # a replaced file
    d("etc/issue", mode=0o700), f("etc/issue/now-a-directory", b"was a file"),
    d("etc/apt"), f("etc/apt/sources.list", b"written before the marker\n"),
    d("etc/apt/apt.conf.d"), f("etc/apt/apt.conf.d/99lamina", b"kept; the lower files around it go"),
    wh("etc/apt/.wh..wh..opq"),
    f("opt", b"a directory replaced by a file"),
    d("usr"), d("usr/share"), wh("usr/share/.wh.doc"),
    d("usr/bin"),
    f("usr/bin/newtool", b"#!/bin/sh\necho new\n", mode=0o4755, pax=xattrs(security_capability=CAPABILITY)),
    hard("usr/bin/newtool-hardlink", "usr/bin/newtool"),
    hard("usr/bin/gunzip-again", "usr/bin/gunzip"),  # a hardlink to a lower layer's file
    d("lamina", mode=0o750, uid=1000, gid=1000, pax=xattrs(user_dir=b"on a directory")),
    f("lamina/empty"),
    f("lamina/block", RANDOM.randbytes(4096)),
    f("lamina/block-minus-one", RANDOM.randbytes(4095)),
    f("lamina/block-plus-one", RANDOM.randbytes(4097)),
    f("lamina/big", BIG, mode=0o600),
    sym("lamina/rel-link", "../etc/hostname", pax=xattrs(trusted_lamina=b"on a symlink")),
    sym("lamina/abs-link", "/usr/bin/newtool"),
    sym("lamina/dangling", "/no/such/file"),
    sym("lamina/long-link", "/" + "t" * 1000),
    special("lamina/fifo", tarfile.FIFOTYPE, 0o640),
    special("lamina/null", tarfile.CHRTYPE, 0o666, 1, 3),
    special("lamina/nvme", tarfile.BLKTYPE, 0o660, 259, 70_000),
    f("lamina/xattrs", b"x", pax=xattrs(security_capability=CAPABILITY, user_x=b"y", user_binary=BINARY,
                                        user_empty=b"", trusted_lamina=b"t" * 300)),
    f("lamina/owned", b"o", mode=0o640, uid=100_000, gid=200_000),
    f("lamina/setgid-sticky", b"s", mode=0o3755),
    f("lamina/ns-mtime", b"n", pax={"mtime": "1700000000.123456789"}),
    f("lamina/epoch-plus-one", b"1", mtime=1),
    f("lamina/before-1970", b"-", mtime=-86_400),
    d("lamina/many"),
    *[f(f"lamina/many/{name}", name.encode() if i % 100 == 0 else b"") for i, name in enumerate(many_names())],
    d("lamina/names"),
    f("lamina/names/a", b"1 byte"),
    f("lamina/names/" + "n" * 200, b"200 bytes"),
    f("lamina/names/" + "x" * 255, b"255 bytes"),
    f("lamina/names/" + "\u00e9" * 127 + "z", b"255 bytes of UTF-8"),
]

TOP = [  # over BASE + RICH
    d("./", mode=0o711, mtime=M1 + 2),
    d("lamina", mode=0o755, uid=1000, gid=1000, mtime=M1 + 2, pax=xattrs(user_dir=b"on a directory")),
    wh("lamina/.wh.big"),
    wh("lamina/.wh.fifo"),
    wh("lamina/.wh.dangling"),
    d("lamina/many", mtime=M1 + 2),
    wh("lamina/many/.wh..wh..opq"),
    f("lamina/many/the-only-one", b"left alone"),
    hard("lamina/block-hardlink", "lamina/block"),
    d("etc", mtime=M1 + 2),
    f("etc/hostname", b"top\n", mtime=M1 + 2),
]


# ---------------------------------------------------------------------------------------------------------------
# the two trees


@dataclass(frozen=True)
class Meta:
    kind: int
    mode: int
    uid: int
    gid: int
    size: int | None  # not for directories
    mtime_ns: int
    target: str | None
    rdev: int
    nlink: int | None  # not for directories
    sha256: str | None
    xattrs: tuple[tuple[str, bytes], ...]


def _meta(path: str) -> Meta:
    st = os.lstat(path)
    kind = stat.S_IFMT(st.st_mode)
    is_dir = kind == stat.S_IFDIR
    digest = None
    if kind == stat.S_IFREG:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        digest = h.hexdigest()
    names = sorted(os.listxattr(path, follow_symlinks=False))
    return Meta(
        kind=kind, mode=st.st_mode, uid=st.st_uid, gid=st.st_gid, size=None if is_dir else st.st_size,
        mtime_ns=st.st_mtime_ns, target=os.readlink(path) if kind == stat.S_IFLNK else None,
        rdev=st.st_rdev if kind in (stat.S_IFCHR, stat.S_IFBLK) else 0, nlink=None if is_dir else st.st_nlink,
        sha256=digest, xattrs=tuple((name, os.getxattr(path, name, follow_symlinks=False)) for name in names),
    )


def scan(root: Path) -> dict[str, Meta]:
    """Every path below ``root`` ("" for the root itself) and its metadata, symlinks not followed."""
    out = {"": _meta(str(root))}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            out[os.path.relpath(full, root)] = _meta(full)
    return out


def _normal(name: str) -> str:
    return "/".join(part for part in name.split("/") if part not in ("", "."))


def tar_mtimes(layers: list[Path]) -> dict[str, int]:
    """Each path's exact mtime as the last layer naming it gives it (PAX strings in full nanoseconds), read with
    tarfile: what the image must hold. Hardlinks take their target's, and are left out."""
    out: dict[str, int] = {}
    for layer in layers:
        with layer.open("rb") as raw:
            magic = raw.read(4)
        if not magic:
            continue
        source: io.BytesIO | None = None
        if magic == b"\x28\xb5\x2f\xfd":
            source = io.BytesIO(zstandard.ZstdDecompressor().stream_reader(layer.read_bytes()).read())
        elif magic[:2] == b"\x1f\x8b":
            source = io.BytesIO(gzip.decompress(layer.read_bytes()))
        with tarfile.open(layer if source is None else None, fileobj=source, mode="r:", encoding="utf-8",
                          errors="surrogateescape") as tf:
            for info in tf:
                name = _normal(info.name)
                if "/.wh." in "/" + name:
                    continue  # only paths still in the image are looked up
                if info.islnk():
                    out.pop(name, None)
                    continue
                text = info.pax_headers.get("mtime")
                out[name] = int(Decimal(text).scaleb(9)) if text else int(info.mtime) * NS
    return out


def compare(image_tree: dict[str, Meta], unpacked: dict[str, Meta], exact: dict[str, int]) -> list[str]:
    """What differs between the mounted image and the unpacked directory (empty when nothing does)."""
    problems: list[str] = []
    for path in sorted(set(image_tree) | set(unpacked)):
        if path not in image_tree:
            problems.append(f"{path!r}: missing in the image")
            continue
        if path not in unpacked:
            problems.append(f"{path!r}: only in the image")
            continue
        a, b = image_tree[path], unpacked[path]
        for name in ("kind", "mode", "uid", "gid", "size", "target", "rdev", "nlink", "sha256", "xattrs"):
            if getattr(a, name) != getattr(b, name):
                problems.append(f"{path!r}: {name} {getattr(a, name)!r} in the image, {getattr(b, name)!r} unpacked")
        if path in exact and a.mtime_ns != exact[path]:
            problems.append(f"{path!r}: mtime_ns {a.mtime_ns} in the image, {exact[path]} in the layer")
        if a.mtime_ns != b.mtime_ns:
            problems.append(f"{path!r}: mtime_ns {a.mtime_ns} in the image, {b.mtime_ns} unpacked")
    return problems


@contextmanager
def mounted(image: Path, where: Path, *, argv: list[str] | None = None) -> Iterator[Path]:
    """``image`` mounted read-only on ``where`` (made), unmounted when done; ``argv``: other mount arguments."""
    where.mkdir()
    args = ["mount", *(argv or ["-t", "erofs", "-o", "ro,loop", str(image)]), str(where)]
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(args)}: {result.stderr.strip() or result.returncode}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def mounts_under(directory: Path) -> list[str]:
    """Mount points at or below ``directory`` in /proc/self/mounts."""
    points = []
    base = str(directory).rstrip("/")
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = line.split()[1].replace("\\040", " ")
        if point == base or point.startswith(base + "/"):
            points.append(point)
    return points


def loop_devices_of(image: Path, wait: float = 10.0) -> str:
    """``losetup -j IMAGE``: the loop devices still attached to ``image`` once ``wait`` seconds have passed (the
    kernel detaches an autoclear device when its last user closes it, at times a few seconds after umount)."""
    deadline = time.monotonic() + wait
    while True:
        attached = subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True,
                                  check=False).stdout.strip()
        if not attached or time.monotonic() > deadline:
            return attached
        time.sleep(0.1)


def run_fsck(fsck: str, image: Path) -> None:
    for args in ([fsck, str(image)], [fsck, "--extract", str(image)]):
        result = subprocess.run(args, capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"{' '.join(args)}: exit {result.returncode}\n{result.stdout}{result.stderr}"


# ---------------------------------------------------------------------------------------------------------------
# the stacks


def _stack(tmp_path: Path, name: str) -> list[Path]:
    if name == "debian + rich (gzip)":
        tar = baseimages.cache_dir() / baseimages.DEBIAN_TAR_NAME
        if not tar.is_file():
            pytest.skip(f"the Debian base image tar is not cached ({tar}); the integration fixtures make it")
        return [baseimages.debian_rootfs_tar(baseimages.cache_dir()), write_layer(tmp_path, "rich", RICH, "gzip")]
    if name == "base (zstd) + empty + rich (zstd) + top":
        return [write_layer(tmp_path, "base", BASE, "zstd"), write_layer(tmp_path, "empty", None, "none"),
                write_layer(tmp_path, "rich", RICH, "zstd"), write_layer(tmp_path, "top", TOP, "none")]
    assert name == "base (gzip) + rich"
    return [write_layer(tmp_path, "base", BASE, "gzip"), write_layer(tmp_path, "rich", RICH, "none")]


STACKS = ["debian + rich (gzip)", "base (zstd) + empty + rich (zstd) + top", "base (gzip) + rich"]


@pytest.mark.parametrize("stack", STACKS)
def test_mounted_image_matches_unpacked_layers(tmp_path: Path, fsck: str, stack: str) -> None:
    layers = _stack(tmp_path, stack)
    image = tmp_path / "layers.erofs"
    root_meta = write_image(image, [(layer, f"layer {n}") for n, layer in enumerate(layers, 1)])
    run_fsck(fsck, image)

    unpacked_root = tmp_path / "unpacked"
    for n, layer in enumerate(layers, 1):
        unpack_layer(unpacked_root, layer, description=f"layer {n}")
    unpacked = scan(unpacked_root)

    with mounted(image, tmp_path / "mnt") as mnt:
        image_tree = scan(mnt)
        root = os.lstat(mnt)
    assert root_meta == (stat.S_IMODE(root.st_mode), root.st_uid, root.st_gid, root.st_mtime_ns)

    problems = compare(image_tree, unpacked, tar_mtimes(layers))
    assert not problems, f"{len(problems)} differences:\n" + "\n".join(problems[:40])

    # what the stacks were made to hold is really there (the comparison alone would pass on two empty trees)
    if "rich" in stack:
        assert image_tree["lamina/xattrs"].xattrs == (
            ("security.capability", CAPABILITY), ("trusted.lamina", b"t" * 300), ("user.binary", BINARY),
            ("user.empty", b""), ("user.x", b"y"))
        assert image_tree["lamina/null"].rdev == os.makedev(1, 3)
        assert image_tree["lamina/nvme"].rdev == os.makedev(259, 70_000)
        assert image_tree["usr/bin/newtool"].nlink == 2
        assert image_tree["lamina/ns-mtime"].mtime_ns == 1_700_000_000_123_456_789
        assert image_tree["lamina/owned"].uid == 100_000 and image_tree["lamina/owned"].gid == 200_000
        assert image_tree["lamina/long-link"].target == "/" + "t" * 1000
        assert {"lamina/names/a", "lamina/names/" + "n" * 200, "lamina/names/" + "x" * 255} <= set(image_tree)
        assert "etc/motd" not in image_tree and "usr/share/doc" not in image_tree
        assert "etc/apt/apt.conf.d/99lamina" in image_tree and "etc/apt/apt.conf.d/01autoremove" not in image_tree
    if "top" in stack:
        assert sorted(p for p in image_tree if p.startswith("lamina/many/")) == ["lamina/many/the-only-one"]
        assert "lamina/big" not in image_tree and "lamina/fifo" not in image_tree
        assert image_tree["lamina/block"].nlink == 2
        assert image_tree["usr/bin/gunzip"].nlink == 3
    elif "rich" in stack:
        many = [p for p in image_tree if p.startswith("lamina/many/")]
        assert len(many) == 3000
        assert image_tree["lamina/big"].size == len(BIG)
    if "debian" in stack:
        assert image_tree["usr/bin/gunzip"].nlink == 3  # gunzip, uncompress and the new hardlink
        assert len(image_tree) > 6000


def test_large_directory_lookups(tmp_path: Path, fsck: str) -> None:
    """Every name of a directory spanning many blocks is found by the kernel's lookup (a binary search over the
    blocks' first names), not only listed by readdir."""
    names = many_names()
    entries = [d("./"), d("big"), *[f(f"big/{name}", name.encode()) for name in names]]
    image = tmp_path / "layers.erofs"
    write_image(image, [(write_layer(tmp_path, "layer", entries, "none"), "layer 1")])
    run_fsck(fsck, image)
    with mounted(image, tmp_path / "mnt") as mnt:
        assert sorted(os.listdir(mnt / "big")) == sorted(names)
        for name in reversed(names):
            assert (mnt / "big" / name).read_bytes() == name.encode()
        assert not (mnt / "big" / "f0000-missing").exists()
        assert not (mnt / "big" / ("m" * 254 + "z")).exists()
        assert os.lstat(mnt / "big").st_nlink == 2


MARKED = [  # over BASE, as one image of its own stacked by overlayfs: whiteouts and opaque dirs become its markers
    d("./", mode=0o755, mtime=M1 + 3),
    d("etc"), wh("etc/.wh.motd"), f("etc/hostname", b"marked\n"),
    d("etc/issue", mode=0o700), f("etc/issue/now-a-directory", b"was a file"),
    d("etc/apt"), wh("etc/apt/.wh..wh..opq"), f("etc/apt/sources.list", b"the only file left in etc/apt"),
    f("opt", b"a directory replaced by a file"),
    d("usr"), d("usr/share"), wh("usr/share/.wh.doc"), wh("usr/share/.wh.never-was"),
    d("usr/bin"), f("usr/bin/newtool", b"new", mode=0o755, pax=xattrs(security_capability=CAPABILITY)),
    hard("usr/bin/newtool2", "usr/bin/newtool"),
    d("new", pax=xattrs(user_x=b"y")), f("new/file", b"f", uid=1000), sym("new/link", "../etc/hostname"),
    special("new/fifo", tarfile.FIFOTYPE, 0o600),
]


def test_marker_image_stacked_by_overlayfs_matches_unpacked_layers(tmp_path: Path, fsck: str) -> None:
    """``write_image(markers=True)``: one layer's image whose whiteouts and opaque directories overlayfs applies
    when it is stacked over the image of the layers below."""
    base = write_layer(tmp_path, "base", BASE, "zstd")
    marked = write_layer(tmp_path, "marked", MARKED, "gzip")
    write_image(tmp_path / "base.erofs", [(base, "layer 1")])
    write_image(tmp_path / "marked.erofs", [(marked, "layer 2")], markers=True)
    run_fsck(fsck, tmp_path / "marked.erofs")
    unpacked_root = tmp_path / "unpacked"
    unpack_layer(unpacked_root, base, description="layer 1")
    unpack_layer(unpacked_root, marked, description="layer 2")

    with mounted(tmp_path / "base.erofs", tmp_path / "lower1"), \
            mounted(tmp_path / "marked.erofs", tmp_path / "lower2") as lower2:
        raw = os.lstat(lower2 / "etc" / "motd")
        assert stat.S_ISCHR(raw.st_mode) and raw.st_rdev == 0  # the marker itself, as overlayfs expects it
        assert os.getxattr(lower2 / "etc" / "apt", "trusted.overlay.opaque") == b"y"
        with mounted(tmp_path, tmp_path / "merged", argv=[
                "-t", "overlay", "-o", f"lowerdir={lower2}:{tmp_path / 'lower1'},xino=on", "lamina"]) as merged:
            merged_tree = scan(merged)
    problems = compare(merged_tree, scan(unpacked_root), tar_mtimes([base, marked]))
    assert not problems, f"{len(problems)} differences:\n" + "\n".join(problems[:40])
    assert sorted(p for p in merged_tree if p.startswith("etc/apt/")) == ["etc/apt/sources.list"]
    assert "etc/motd" not in merged_tree and "usr/share/doc" not in merged_tree



@pytest.mark.parametrize("entries", [
    [f("big-xattr", b"x", pax=xattrs(user_big=b"v" * 5000))],  # inline xattrs must fit one block
    [f("odd-namespace", b"x", pax=xattrs(lamina_x=b"v"))],  # no EROFS index for the prefix
    [f("sparse", b"x", pax={"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "sparse"})],
], ids=["xattr too large", "unknown xattr namespace", "sparse file"])
def test_write_image_refuses_what_it_cannot_hold(tmp_path: Path, entries: list[E]) -> None:
    """UnsupportedContent (the caller unpacks instead), never a broken image."""
    layer = write_layer(tmp_path, "layer", [f("fine", b"ok"), *entries], "gzip")
    with pytest.raises(UnsupportedContent):
        write_image(tmp_path / "layers.erofs", [(layer, "layer 1")])


# ---------------------------------------------------------------------------------------------------------------
# LayerMounts


def test_stage_overlay_mounts_and_unmount_all(tmp_path: Path) -> None:
    """A 2-layer stack mounted as a stage's root filesystem (its image below, an upper directory on top): writes and
    deletions land in the upper directory, and ``unmount_all`` leaves nothing mounted."""
    reason = unavailable_reason(tmp_path)
    assert reason is None, f"overlay root filesystems are unavailable here: {reason}"
    layers = [
        (write_layer(tmp_path, "l1", [d("./", mode=0o751, mtime=M0 + 5), f("lower-file", b"lower"), f("kept", b"k"),
                                      d("dir"), f("dir/a", b"a")], "gzip"), "layer 1"),
        (write_layer(tmp_path, "l2", [d("./", mode=0o751, mtime=M0 + 7), f("dir/b", b"b"), wh(".wh.kept")], "zstd"),
         "layer 2"),
    ]
    stage = tmp_path / "stage"
    rootfs = stage / "rootfs"
    rootfs.mkdir(parents=True)
    mounts = LayerMounts(mode="overlay")
    try:
        stack = StageOverlay.create(mounts, rootfs, layers, "stage 0")
        assert stack is not None, mounts.reason
        assert rootfs in mounts.points
        st = os.lstat(rootfs)
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns) == (0o751, 0, 0, (M0 + 7) * NS)
        assert sorted(os.listdir(rootfs)) == ["dir", "lower-file"]
        assert sorted(os.listdir(rootfs / "dir")) == ["a", "b"]
        assert (rootfs / "dir" / "b").read_bytes() == b"b"

        (rootfs / "new").write_bytes(b"written through the overlay")
        os.unlink(rootfs / "lower-file")
        (rootfs / "dir" / "a").write_bytes(b"changed")

        upper = stage / stack.upper
        assert (upper / "new").read_bytes() == b"written through the overlay"
        whiteout = os.lstat(upper / "lower-file")  # overlayfs' whiteout: a 0:0 character device
        assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == 0
        assert (upper / "dir" / "a").read_bytes() == b"changed"
        assert not (upper / "dir" / "b").exists()
        assert sorted(os.listdir(rootfs)) == ["dir", "new"]
        assert (stack.view / "lower-file").read_bytes() == b"lower"  # the lowers themselves are untouched
        assert (stack.view / "dir" / "a").read_bytes() == b"a"
        assert mounts_under(tmp_path)
    finally:
        mounts.unmount_all()
        leftover = mounts_under(tmp_path)
        for point in reversed(leftover):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    assert mounts.points == []
    assert leftover == []
    assert os.listdir(rootfs) == []
    if shutil.which("losetup"):
        images = list(stage.glob("*.erofs"))
        assert images
        attached = loop_devices_of(images[0])
        assert attached == "", f"loop device left attached: {attached}"
