from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from lamina.errors import RootfsError
from lamina.rootfs.unpack import unpack_layer
from tests.support.layers import E, d, dir_summary, f, hard, sym, tar_bytes, write_layer

IS_ROOT = os.geteuid() == 0
MTIME = 1_600_000_000


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    r = tmp_path / "rootfs"
    r.mkdir()
    return r


@pytest.fixture()
def canary(tmp_path: Path) -> Path:
    c = tmp_path / "canary"
    c.mkdir()
    return c


BASIC = [
    d("./"),
    d("etc"),
    f("etc/passwd", b"root:x:0:0\n"),
    d("usr", mode=0o750),
    d("usr/bin"),
    f("usr/bin/tool", b"#!/bin/sh\n", mode=0o4755),
    f("usr/bin/other", b"x", mode=0o2711),
    sym("bin", "usr/bin"),
    hard("usr/bin/tool2", "usr/bin/tool"),
    f("opt/deep/file", b"implicit parents"),
    f("owned", b"o", uid=1234, gid=4321, mode=0o600),
]


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_basic_layer(tmp_path: Path, root: Path, compression: str) -> None:
    stats = unpack_layer(root, write_layer(tmp_path, "l1", BASIC, compression))
    assert stats.entries == len(BASIC)
    assert stats.whiteouts == 0
    assert dir_summary(root) == {
        "etc": "dir", "etc/passwd": "file root:x:0:0\n", "usr": "dir", "usr/bin": "dir",
        "usr/bin/tool": "file #!/bin/sh\n", "usr/bin/other": "file x", "usr/bin/tool2": "file #!/bin/sh\n",
        "bin": "-> usr/bin", "opt": "dir", "opt/deep": "dir", "opt/deep/file": "file implicit parents",
        "owned": "file o",
    }
    assert stat.S_IMODE(os.lstat(root / "usr").st_mode) == 0o750
    assert stat.S_IMODE(os.lstat(root / "usr/bin/tool").st_mode) == 0o4755
    assert stat.S_IMODE(os.lstat(root / "usr/bin/other").st_mode) == 0o2711
    assert stat.S_IMODE(os.lstat(root / "opt").st_mode) == 0o755
    assert os.lstat(root / "usr/bin/tool").st_ino == os.lstat(root / "usr/bin/tool2").st_ino
    for path in ("etc/passwd", "usr", "usr/bin", "etc", "bin"):
        assert os.lstat(root / path).st_mtime == MTIME, path
    assert os.lstat(root).st_mtime == MTIME
    if IS_ROOT:
        st = os.lstat(root / "owned")
        assert (st.st_uid, st.st_gid) == (1234, 4321)
        assert stat.S_IMODE(st.st_mode) == 0o600


def test_stream_source(tmp_path: Path, root: Path) -> None:
    data = gzip.compress(tar_bytes([f("a", b"1"), f("b/c", b"2")]))
    stats = unpack_layer(root, io.BytesIO(data), description="streamed")
    assert stats.entries == 2
    assert dir_summary(root) == {"a": "file 1", "b": "dir", "b/c": "file 2"}


def test_empty_layer(tmp_path: Path, root: Path) -> None:
    empty = tmp_path / "empty.tar"
    empty.write_bytes(b"")
    assert unpack_layer(root, empty).entries == 0
    assert unpack_layer(root, write_layer(tmp_path, "zeros", [], "gzip")).entries == 0
    assert dir_summary(root) == {}


@pytest.mark.skipif(not IS_ROOT, reason="symlink ownership needs root")
def test_symlink_ownership_uses_lchown(tmp_path: Path, root: Path) -> None:
    (root / "target").write_text("t")
    link = E("link", tarfile.SYMTYPE, link="target", uid=1234, gid=1234)
    unpack_layer(root, write_layer(tmp_path, "l", [link]))
    assert os.lstat(root / "link").st_uid == 1234
    assert os.stat(root / "target").st_uid == 0


def test_xattrs(tmp_path: Path, root: Path) -> None:
    entry = f("file", b"x", pax={"SCHILY.xattr.user.lamina": "hello"})
    unpack_layer(root, write_layer(tmp_path, "l", [entry]))
    try:
        value = os.getxattr(root / "file", "user.lamina")
    except OSError:
        pytest.skip("this filesystem has no user xattrs")
    assert value == b"hello"


def test_whiteouts_remove_file_and_tree(tmp_path: Path, root: Path) -> None:
    unpack_layer(root, write_layer(tmp_path, "l1", [
        f("keep", b"k"), f("gone", b"g"), f("dir/a", b"a"), f("dir/sub/b", b"b"), f("other/x", b"x"),
    ]))
    stats = unpack_layer(root, write_layer(tmp_path, "l2", [
        f(".wh.gone"), f(".wh.dir"), f("other/.wh.missing"), f("nowhere/.wh.x"),
    ]))
    assert stats.whiteouts == 4
    assert stats.entries == 0
    assert dir_summary(root) == {"keep": "file k", "other": "dir", "other/x": "file x"}


def test_kept_paths_are_exact_names_and_their_subtrees(tmp_path: Path, root: Path) -> None:
    """The inplace sandbox's kept paths: a name that merely starts like one ("/etc/hostsx", "/laminax") is image
    content; a directory above a kept path is emptied around it by a whiteout, never removed."""
    unpack_layer(root, write_layer(tmp_path, "l1", [
        f("etc/hosts", b"host's"), f("etc/old", b"o"), f("lamina/x", b"mine"), f("var/run/docker.sock", b"s"),
        f("var/lib/a", b"a"),
    ]))
    keep = ("/etc/hosts", "/lamina", "/var/run/docker.sock")
    stats = unpack_layer(root, write_layer(tmp_path, "l2", [
        f("etc/hosts", b"image"), f("etc/hostsx", b"hx"), f("etc/host", b"h"), f("laminax", b"lx"),
        f("lamina/x", b"image"), f("lamina/y", b"image"), f(".wh.var"), f("etc/.wh.old"),
    ]), keep=keep)
    assert dir_summary(root) == {
        "etc": "dir", "etc/hosts": "file host's", "etc/hostsx": "file hx", "etc/host": "file h", "laminax": "file lx",
        "lamina": "dir", "lamina/x": "file mine", "var": "dir", "var/run": "dir", "var/run/docker.sock": "file s",
    }
    assert stats.skipped == 3


def test_whiteout_does_not_hide_same_layer_entry(tmp_path: Path, root: Path) -> None:
    unpack_layer(root, write_layer(tmp_path, "l1", [f("a", b"old")]))
    unpack_layer(root, write_layer(tmp_path, "l2", [f("a", b"new"), f(".wh.a")]))
    assert dir_summary(root) == {"a": "file new"}


def test_opaque_keeps_same_layer_entries(tmp_path: Path, root: Path) -> None:
    unpack_layer(root, write_layer(tmp_path, "l1", [
        f("d/lower1", b"1"), f("d/sub/lower2", b"2"), f("d/sub/keep-name", b"old"), f("d/sibling", b"s"),
        f("e/untouched", b"u"),
    ]))
    stats = unpack_layer(root, write_layer(tmp_path, "l2", [
        d("d"),
        f("d/-early", b"before the marker"),
        f("d/sub/keep-name", b"new"),
        f("d/.wh..wh..opq"),
        f("d/late", b"after the marker"),
    ]))
    assert stats.whiteouts == 1
    assert dir_summary(root) == {
        "d": "dir", "d/-early": "file before the marker", "d/sub": "dir", "d/sub/keep-name": "file new",
        "d/late": "file after the marker", "e": "dir", "e/untouched": "file u",
    }


def test_replace_dir_by_file_and_file_by_dir(tmp_path: Path, root: Path) -> None:
    unpack_layer(root, write_layer(tmp_path, "l1", [f("x/inner", b"i"), f("y", b"y"), sym("z", "/etc")]))
    unpack_layer(root, write_layer(tmp_path, "l2", [f("x", b"now a file"), d("y"), f("y/child", b"c"), d("z")]))
    assert dir_summary(root) == {"x": "file now a file", "y": "dir", "y/child": "file c", "z": "dir"}


def test_replace_file_content_and_symlink(tmp_path: Path, root: Path) -> None:
    unpack_layer(root, write_layer(tmp_path, "l1", [f("a", b"first", mode=0o400), sym("l", "a")]))
    unpack_layer(root, write_layer(tmp_path, "l2", [f("a", b"second"), sym("l", "elsewhere")]))
    assert dir_summary(root) == {"a": "file second", "l": "-> elsewhere"}


def test_write_through_symlink_stays_inside(tmp_path: Path, root: Path, canary: Path) -> None:
    layer = write_layer(tmp_path, "l", [
        sym("abs", str(canary)),
        f("abs/pwned", b"x"),
        sym("rel", "../../../../../../" + str(canary)),
        f("rel/pwned2", b"x"),
        sym("up", "../canary"),
        f("up/pwned3", b"x"),
    ])
    unpack_layer(root, layer)
    assert list(canary.iterdir()) == []
    inside = str(canary).lstrip("/")
    assert (root / inside / "pwned").read_bytes() == b"x"
    assert (root / inside / "pwned2").read_bytes() == b"x"
    assert (root / "canary" / "pwned3").read_bytes() == b"x"


def test_symlink_planted_in_lower_layer(tmp_path: Path, root: Path, canary: Path) -> None:
    unpack_layer(root, write_layer(tmp_path, "l1", [sym("etc", str(canary))]))
    unpack_layer(root, write_layer(tmp_path, "l2", [f("etc/passwd", b"x"), f(".wh.etc2"), f("etc/.wh.y")]))
    assert list(canary.iterdir()) == []


def test_whiteout_through_symlink_stays_inside(tmp_path: Path, root: Path, canary: Path) -> None:
    (canary / "precious").write_text("keep me")
    unpack_layer(root, write_layer(tmp_path, "l1", [sym("link", str(canary))]))
    unpack_layer(root, write_layer(tmp_path, "l2", [f("link/.wh.precious"), f("link/.wh..wh..opq")]))
    assert (canary / "precious").read_text() == "keep me"


def test_absolute_names_land_inside(tmp_path: Path, root: Path, canary: Path) -> None:
    unpack_layer(root, write_layer(tmp_path, "l", [f(str(canary / "abs"), b"a"), f("/plain", b"p")]))
    assert list(canary.iterdir()) == []
    assert (root / str(canary).lstrip("/") / "abs").read_bytes() == b"a"
    assert (root / "plain").read_bytes() == b"p"


@pytest.mark.parametrize("entries", [
    [f("../canary/x", b"x")],
    [f("a/../../canary/x", b"x")],
    [f("ok", b"fine"), hard("link", "../canary/target")],
    [hard("link", "a/../../canary/target")],
])
def test_escapes_are_refused(tmp_path: Path, root: Path, canary: Path, entries: list[E]) -> None:
    (canary / "target").write_text("t")
    with pytest.raises(RootfsError) as info:
        unpack_layer(root, write_layer(tmp_path, "evil", entries), description="evil layer")
    assert "evil layer" in str(info.value)
    assert sorted(p.name for p in canary.iterdir()) == ["target"]
    assert os.lstat(canary / "target").st_nlink == 1


def test_hardlink_through_symlink_resolves_inside(tmp_path: Path, root: Path, canary: Path) -> None:
    (canary / "target").write_text("outside")
    with pytest.raises(RootfsError, match="does not exist"):
        unpack_layer(root, write_layer(tmp_path, "l", [sym("out", str(canary)), hard("link", "out/target")]))
    assert os.lstat(canary / "target").st_nlink == 1


def test_hardlink_to_lower_layer_file(tmp_path: Path, root: Path) -> None:
    unpack_layer(root, write_layer(tmp_path, "l1", [f("a", b"A")]))
    unpack_layer(root, write_layer(tmp_path, "l2", [hard("/b", "/a")]))
    assert os.lstat(root / "a").st_ino == os.lstat(root / "b").st_ino


def test_refuses_host_root() -> None:
    with pytest.raises(RootfsError, match="host"):
        unpack_layer(Path("/"), io.BytesIO(b""))


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_truncated_layer(tmp_path: Path, root: Path, compression: str) -> None:
    layer = write_layer(tmp_path, "l", [f("a", os.urandom(50_000)), f("b", b"b")], compression)
    layer.write_bytes(layer.read_bytes()[:30_000])
    with pytest.raises(RootfsError, match="layer 3: .*cannot unpack"):
        unpack_layer(root, layer, description="layer 3")


def test_garbage_layer(tmp_path: Path, root: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"this is not a tar file at all" * 100)
    with pytest.raises(RootfsError, match="cannot unpack"):
        unpack_layer(root, bad)


def test_device_nodes_created_or_skipped(tmp_path: Path, root: Path) -> None:
    layer = write_layer(tmp_path, "dev", [
        E("dev/null", tarfile.CHRTYPE, mode=0o666, major=1, minor=3),
        E("fifo", tarfile.FIFOTYPE, mode=0o600),
    ])
    stats = unpack_layer(root, layer)
    assert stat.S_ISFIFO(os.lstat(root / "fifo").st_mode)
    if os.path.lexists(root / "dev/null"):
        st = os.lstat(root / "dev/null")
        assert stat.S_ISCHR(st.st_mode)
        assert os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3
        assert stats.skipped == 0
    else:
        assert stats.skipped == 1


def test_aufs_metadata_skipped(tmp_path: Path, root: Path) -> None:
    stats = unpack_layer(root, write_layer(tmp_path, "l", [d(".wh..wh.plnk"), f(".wh..wh.aufs"), f("a", b"x")]))
    assert stats.skipped == 2
    assert dir_summary(root) == {"a": "file x"}


def test_many_entries_do_not_accumulate_members(tmp_path: Path, root: Path) -> None:
    entries = [f(f"dir{i % 10}/file{i}", b"x") for i in range(3000)]
    stats = unpack_layer(root, write_layer(tmp_path, "many", entries, "gzip"))
    assert stats.entries == 3000
