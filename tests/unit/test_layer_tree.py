"""Layers applied to the in-memory tree (``rootfs/tree.py``), with a fake data sink: OCI whiteouts and opaque
directories, replacement, symlinked parents, hardlinks, xattrs; and the same results as ``unpack_layer`` gives on a
real directory."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from lamina.errors import RootfsError
from lamina.rootfs.tarstream import TarReader
from lamina.rootfs.tree import LayerTree, Node, walk
from lamina.rootfs.unpack import unpack_layer
from tests.support.layers import E, d, dir_summary, f, hard, sym, tar_bytes, wh, xattr

MTIME = 1_600_000_000
NS = 1_000_000_000
CAPABILITY = b"\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
BINARY = b"\xff\xfe\x00binary"


class FakeSink:
    """A DataSink keeping each file's bytes in a list; the address is the index."""

    def __init__(self) -> None:
        self.files: list[bytes] = []

    def add_file(self, source: TarReader, size: int) -> int:
        data = b""
        while len(data) < size:
            chunk = source.read(size - len(data))
            assert chunk, "the reader ran dry before the file's end"
            data += chunk
        self.files.append(data)
        return len(self.files) - 1


class Tree:
    """A LayerTree with its fake sink, and what tests look at."""

    def __init__(self, *layers: list[E], devices: bool = True, markers: bool = False) -> None:
        self.sink = FakeSink()
        self.tree = LayerTree(self.sink, devices=devices, markers=markers)
        for number, entries in enumerate(layers, 1):
            self.apply(entries, f"layer {number}")

    def apply(self, entries: list[E], description: str = "layer") -> None:
        self.tree.apply_layer(TarReader(io.BytesIO(tar_bytes(entries))), description)

    @property
    def root(self) -> Node:
        return self.tree.root

    def node(self, path: str) -> Node:
        current = self.tree.root
        for part in path.split("/"):
            assert current.children is not None, f"{path}: {part} is below a non-directory"
            current = current.children[part]
        return current

    def summary(self) -> dict[str, str]:
        """path → "dir", "file <content>", "-> <target>", "fifo", "chr M:m", "blk M:m"."""
        out: dict[str, str] = {}
        for path, node in walk(self.tree.root):
            out[path] = describe(node, self.sink)
        return out


def describe(node: Node, sink: FakeSink) -> str:
    kind = stat.S_IFMT(node.mode)
    if node.is_dir:
        return "dir"
    if kind == stat.S_IFREG:
        return "file " + sink.files[node.address].decode("utf-8", "surrogateescape")
    if kind == stat.S_IFLNK:
        return "-> " + node.target.decode("utf-8", "surrogateescape")
    if kind == stat.S_IFIFO:
        return "fifo"
    label = "chr" if kind == stat.S_IFCHR else "blk"
    return f"{label} {os.major(node.rdev)}:{os.minor(node.rdev)}"


def unpacked_summary(tmp_path: Path, layers: list[list[E]]) -> dict[str, str]:
    """The same summary of the layers unpacked into a directory by the reference implementation."""
    root = tmp_path / "unpacked"
    for number, entries in enumerate(layers, 1):
        blob = tmp_path / f"layer{number}.tar"
        blob.write_bytes(tar_bytes(entries))
        unpack_layer(root, blob, description=f"layer {number}")
    return dir_summary(root)


# ---------------------------------------------------------------------------------------------------------------
# entries


def test_files_directories_and_metadata() -> None:
    t = Tree([
        d("./", mode=0o700, uid=5, gid=6, mtime=MTIME + 1),
        d("etc", mode=0o750, uid=1, gid=2, mtime=MTIME + 2),
        f("etc/passwd", b"root:x:0:0\n", mode=0o4755, uid=1000, gid=1001, mtime=MTIME + 3),
        f("/abs/and/implicit", b"parents made"),
        f("./dot/slash", b"normalised"),
        f("empty"),
        sym("link", "etc/passwd"),
        E("fifo", tarfile.FIFOTYPE, mode=0o600),
        E("dev/null", tarfile.CHRTYPE, mode=0o666, major=1, minor=3),
        E("dev/nvme", tarfile.BLKTYPE, mode=0o660, major=259, minor=70_000),
        f("ns", b"n", pax={"mtime": "1700000000.123456789"}),
    ])
    assert t.summary() == {
        "etc": "dir", "etc/passwd": "file root:x:0:0\n", "abs": "dir", "abs/and": "dir",
        "abs/and/implicit": "file parents made", "dot": "dir", "dot/slash": "file normalised", "empty": "file ",
        "link": "-> etc/passwd", "fifo": "fifo", "dev": "dir", "dev/null": "chr 1:3", "dev/nvme": "blk 259:70000",
        "ns": "file n",
    }
    root = t.root
    assert (root.mode, root.uid, root.gid, root.mtime_ns) == (stat.S_IFDIR | 0o700, 5, 6, (MTIME + 1) * NS)
    etc = t.node("etc")
    assert (etc.mode, etc.uid, etc.gid, etc.mtime_ns) == (stat.S_IFDIR | 0o750, 1, 2, (MTIME + 2) * NS)
    passwd = t.node("etc/passwd")
    assert (passwd.mode, passwd.uid, passwd.gid, passwd.mtime_ns, passwd.size) == (
        stat.S_IFREG | 0o4755, 1000, 1001, (MTIME + 3) * NS, 11)
    link = t.node("link")
    assert (link.mode, link.size, link.target) == (stat.S_IFLNK | 0o777, 10, b"etc/passwd")
    assert t.node("fifo").mode == stat.S_IFIFO | 0o600
    assert t.node("dev/null").mode == stat.S_IFCHR | 0o666
    assert t.node("dev/null").rdev == os.makedev(1, 3)
    assert t.node("dev/nvme").rdev == os.makedev(259, 70_000)
    assert t.node("ns").mtime_ns == 1_700_000_000_123_456_789
    implicit = t.node("abs")  # a parent no entry named: as mkdir makes it
    assert (implicit.mode, implicit.uid, implicit.gid, implicit.mtime_ns) == (
        stat.S_IFDIR | 0o755, 0, 0, t.tree.now_ns)
    assert t.tree.skipped == 0 and t.tree.warnings == []


def test_walk_gives_every_path_once_parents_first() -> None:
    t = Tree([f("b/2"), f("a/z"), f("a/b/c"), f("b/1"), f("c"), hard("a/hard", "c")])
    paths = [path for path, _ in walk(t.root)]
    assert sorted(paths) == ["a", "a/b", "a/b/c", "a/hard", "a/z", "b", "b/1", "b/2", "c"]
    for position, path in enumerate(paths):
        parent = path.rpartition("/")[0]
        assert not parent or paths.index(parent) < position, path
    assert paths == [path for path, _ in walk(t.root)]  # the same order every time


def test_a_later_entry_replaces_an_earlier_one_in_the_same_layer() -> None:
    t = Tree([f("a", b"first"), f("a", b"second"), sym("l", "x"), sym("l", "y")])
    assert t.summary() == {"a": "file second", "l": "-> y"}


def test_root_entry_that_is_not_a_directory_is_skipped() -> None:
    t = Tree([f(".", b"not a dir"), f("a", b"a")])
    assert t.summary() == {"a": "file a"}
    assert t.tree.skipped == 1
    assert len(t.tree.warnings) == 1 and "root" in t.tree.warnings[0]


def test_unsupported_type_is_skipped_with_a_warning() -> None:
    t = Tree([E("label", b"V"), f("a", b"a")])
    assert t.summary() == {"a": "file a"}
    assert t.tree.skipped == 1
    assert "label" in t.tree.warnings[0]


# ---------------------------------------------------------------------------------------------------------------
# whiteouts and opaque directories


def test_whiteout_removes_lower_file_and_tree() -> None:
    t = Tree(
        [f("keep", b"k"), f("gone", b"g"), f("dir/a", b"a"), f("dir/sub/b", b"b"), f("other/x", b"x")],
        [wh(".wh.gone"), wh(".wh.dir"), wh("other/.wh.missing"), wh("nowhere/.wh.x"), wh("keep/.wh.below-a-file")],
    )
    assert t.summary() == {"keep": "file k", "other": "dir", "other/x": "file x"}


def test_whiteout_does_not_create_parents() -> None:
    t = Tree([f("a", b"a")], [wh("missing/deeper/.wh.x")])
    assert t.summary() == {"a": "file a"}


@pytest.mark.parametrize("order", ["entry first", "whiteout first"])
def test_whiteout_does_not_hide_same_layer_entry(order: str) -> None:
    upper = [f("a", b"new"), wh(".wh.a"), d("dir"), f("dir/x", b"x"), wh(".wh.dir")]
    if order == "whiteout first":
        upper = [wh(".wh.a"), f("a", b"new"), wh(".wh.dir"), d("dir"), f("dir/x", b"x")]
    t = Tree([f("a", b"old"), f("dir/lower", b"l")], upper)
    expected = {"a": "file new", "dir": "dir", "dir/x": "file x"}
    if order == "entry first":
        expected["dir/lower"] = "file l"  # the directory itself was written by the layer: kept with its content
    assert t.summary() == expected


def test_whiteout_in_the_next_layer_removes_it() -> None:
    t = Tree([f("a", b"1")], [f("a", b"2")], [wh(".wh.a")])
    assert t.summary() == {}


@pytest.mark.parametrize("name", [".wh.", "dir/.wh..", "dir/.wh..."])
def test_whiteout_of_an_invalid_name(name: str) -> None:
    t = Tree([f("dir/a")])
    with pytest.raises(RootfsError, match="layer 2.*invalid"):
        t.apply([wh(name)], "layer 2")


def test_opaque_directory_keeps_this_layers_children() -> None:
    t = Tree(
        [f("d/lower1", b"1"), f("d/sub/lower2", b"2"), f("d/sub/keep-name", b"old"), f("d/sibling", b"s"),
         f("d/deep/er/lower3", b"3"), f("e/untouched", b"u")],
        [d("d"), f("d/-early", b"before the marker"), f("d/sub/keep-name", b"new"), f("d/deep/er/new", b"n"),
         wh("d/.wh..wh..opq"), f("d/late", b"after the marker")],
    )
    assert t.summary() == {
        "d": "dir", "d/-early": "file before the marker", "d/sub": "dir", "d/sub/keep-name": "file new",
        "d/deep": "dir", "d/deep/er": "dir", "d/deep/er/new": "file n", "d/late": "file after the marker",
        "e": "dir", "e/untouched": "file u",
    }


def test_opaque_marker_first_then_entries() -> None:
    t = Tree([f("d/a", b"a"), f("d/b", b"b")], [wh("d/.wh..wh..opq"), f("d/b", b"B"), f("d/c", b"c")])
    assert t.summary() == {"d": "dir", "d/b": "file B", "d/c": "file c"}


def test_opaque_in_a_later_layer_hides_everything_below() -> None:
    t = Tree([f("d/a", b"a")], [f("d/b", b"b")], [d("d"), wh("d/.wh..wh..opq")])
    assert t.summary() == {"d": "dir"}


def test_opaque_of_a_missing_directory_is_ignored() -> None:
    t = Tree([f("a", b"a")], [wh("no/such/.wh..wh..opq")])
    assert t.summary() == {"a": "file a"}


def test_aufs_metadata_is_skipped() -> None:
    t = Tree([d(".wh..wh.plnk"), wh(".wh..wh.aufs"), d(".wh..wh.orph"), f("a", b"x"), f("b", b"y")])
    assert t.summary() == {"a": "file x", "b": "file y"}
    assert t.tree.skipped == 3


def test_aufs_metadata_does_not_remove_anything() -> None:
    """``.wh..wh.plnk`` is neither a whiteout nor an opaque marker."""
    t = Tree([f("d/x", b"x"), f("y", b"y")], [wh("d/.wh..wh.plnk"), wh(".wh..wh.aufs")])
    assert t.summary() == {"d": "dir", "d/x": "file x", "y": "file y"}
    assert t.tree.skipped == 2


# ---------------------------------------------------------------------------------------------------------------
# replacing


def test_file_replaced_by_dir_and_dir_by_file() -> None:
    t = Tree(
        [f("x/inner", b"i"), f("y", b"y"), sym("z", "/etc"), d("etc"), f("etc/kept", b"k"), E("p", tarfile.FIFOTYPE)],
        [f("x", b"now a file"), d("y"), f("y/child", b"c"), d("z"), f("z/new", b"n"), sym("p", "x")],
    )
    assert t.summary() == {
        "x": "file now a file", "y": "dir", "y/child": "file c", "z": "dir", "z/new": "file n",
        "etc": "dir", "etc/kept": "file k", "p": "-> x",
    }


def test_dir_over_dir_keeps_children_and_takes_metadata() -> None:
    t = Tree(
        [d("d", mode=0o755, uid=0, gid=0, mtime=MTIME, pax=xattr("user.old", b"o")), f("d/child", b"c"),
         d("d/sub"), f("d/sub/deeper", b"x")],
        [d("d", mode=0o1770, uid=1000, gid=1001, mtime=MTIME + 50, pax=xattr("user.new", b"n"))],
    )
    assert t.summary() == {"d": "dir", "d/child": "file c", "d/sub": "dir", "d/sub/deeper": "file x"}
    node = t.node("d")
    assert (node.mode, node.uid, node.gid, node.mtime_ns) == (stat.S_IFDIR | 0o1770, 1000, 1001, (MTIME + 50) * NS)
    assert node.xattrs == {"user.old": b"o", "user.new": b"n"}  # added to, as setxattr does when unpacking


def test_root_entry_in_a_later_layer_keeps_everything() -> None:
    t = Tree([f("a", b"a")], [d("./", mode=0o700, uid=3, mtime=MTIME + 9)])
    assert t.summary() == {"a": "file a"}
    assert (t.root.mode, t.root.uid, t.root.mtime_ns) == (stat.S_IFDIR | 0o700, 3, (MTIME + 9) * NS)


# ---------------------------------------------------------------------------------------------------------------
# symlinked parents


def test_entries_under_symlinked_parents_land_in_the_target() -> None:
    t = Tree(
        [d("usr"), d("usr/lib"), sym("rel", "usr/lib"), sym("abs", "/usr/lib"), sym("dotted", "./usr/./lib/"),
         sym("up", "../../../usr/lib"), sym("usr/share", "../usr/lib"), sym("chain", "rel"), d("etc"),
         sym("etc/alt", "../../../../../../usr/lib")],
        [f("rel/a", b"a"), f("abs/b", b"b"), f("dotted/c", b"c"), f("up/d", b"d"), f("usr/share/e", b"e"),
         f("chain/f", b"f"), f("etc/alt/g", b"g")],
    )
    assert {k: v for k, v in t.summary().items() if k.startswith("usr/lib/")} == {
        f"usr/lib/{name}": f"file {name}" for name in "abcdefg"
    }
    assert set(t.summary()) == {"usr", "usr/lib", "rel", "abs", "dotted", "up", "usr/share", "chain", "etc",
                                "etc/alt"} | {f"usr/lib/{name}" for name in "abcdefg"}


def test_symlink_escaping_the_root_is_clamped() -> None:
    t = Tree([sym("evil", "../../../../outside/dir"), sym("evil-abs", "/../../outside/abs"), f("evil/x", b"x"),
              f("evil-abs/y", b"y")])
    assert t.summary()["outside/dir/x"] == "file x"
    assert t.summary()["outside/abs/y"] == "file y"


def test_symlink_created_in_the_same_layer_is_followed() -> None:
    t = Tree([d("real"), sym("link", "real"), f("link/file", b"f")])
    assert t.summary() == {"real": "dir", "real/file": "file f", "link": "-> real"}


def test_whiteout_through_a_symlinked_parent() -> None:
    t = Tree([f("real/a", b"a"), f("real/b", b"b"), sym("link", "/real")], [wh("link/.wh.a")])
    assert t.summary() == {"real": "dir", "real/b": "file b", "link": "-> /real"}


def test_symlink_loop_is_refused() -> None:
    t = Tree([sym("a", "b"), sym("b", "a")])
    with pytest.raises(RootfsError, match="layer 2.*too many levels"):
        t.apply([f("a/x", b"x")], "layer 2")


def test_parent_that_is_a_file_is_refused() -> None:
    t = Tree([f("file", b"f"), sym("to-file", "file")])
    with pytest.raises(RootfsError, match="not a directory"):
        t.apply([f("file/x", b"x")], "layer 2")
    with pytest.raises(RootfsError, match="not a directory"):
        t.apply([f("to-file/x", b"x")], "layer 3")


@pytest.mark.parametrize("name", ["../escape", "a/../../escape", "a/b/../../../x", ".."])
def test_dotdot_in_an_entry_name_is_refused(name: str) -> None:
    t = Tree()
    with pytest.raises(RootfsError, match="evil.*'\\.\\.'"):
        t.apply([f(name, b"x")], "evil")


# ---------------------------------------------------------------------------------------------------------------
# hardlinks


def test_hardlink_shares_the_node() -> None:
    t = Tree(
        [f("usr/bin/tool", b"#!/bin/sh\n", mode=0o755, uid=7), sym("bin", "usr/bin"), f("lower", b"L")],
        [hard("usr/bin/tool2", "usr/bin/tool"), hard("via-symlink", "bin/tool"), hard("/abs", "/lower"),
         f("same-layer", b"S"), hard("dir/to-same-layer", "./same-layer"), hard("to-symlink", "bin")],
    )
    tool = t.node("usr/bin/tool")
    assert t.node("usr/bin/tool2") is tool
    assert t.node("via-symlink") is tool
    assert t.node("abs") is t.node("lower")
    assert t.node("dir/to-same-layer") is t.node("same-layer")
    assert t.node("to-symlink") is t.node("bin")  # the link itself, never followed
    assert (tool.mode, tool.uid) == (stat.S_IFREG | 0o755, 7)
    assert t.summary()["usr/bin/tool2"] == "file #!/bin/sh\n"


def test_hardlinked_file_survives_its_first_name() -> None:
    t = Tree([f("a", b"content"), hard("b", "a"), hard("c", "a")], [wh(".wh.a")], [f("b", b"replaced")])
    assert t.summary() == {"b": "file replaced", "c": "file content"}


@pytest.mark.parametrize("entries, message", [
    ([hard("link", "missing")], "does not exist"),
    ([f("ok", b"fine"), hard("link", "../ok")], "climbs out"),
    ([f("ok", b"fine"), hard("link", "a/../../ok")], "climbs out"),
    ([f("ok", b"fine"), hard("../link", "ok")], "'\\.\\.'"),
    ([d("dir"), hard("link", "dir")], "directory"),
    ([hard("link", "./")], "root directory"),
    ([f("file", b"f"), hard("link", "file/below")], "does not exist"),
])
def test_hardlink_errors(entries: list[E], message: str) -> None:
    with pytest.raises(RootfsError, match=f"evil layer.*{message}"):
        Tree().apply(entries, "evil layer")


def test_hardlink_through_symlink_to_outside_stays_inside() -> None:
    t = Tree([f("target", b"inside"), sym("out", "/../../"), hard("link", "out/target")])
    assert t.node("link") is t.node("target")


# ---------------------------------------------------------------------------------------------------------------
# xattrs


def test_overlay_xattrs_are_dropped_others_kept() -> None:
    pax = {**xattr("security.capability", CAPABILITY), **xattr("user.binary", BINARY), **xattr("user.x", b"y"),
           **xattr("trusted.overlay.opaque", b"y"), **xattr("trusted.overlay.redirect", b"/elsewhere"),
           **xattr("user.overlay.metacopy", b""), **xattr("trusted.other", b"kept")}
    t = Tree([f("file", b"f", pax=pax), d("dir", pax=pax), sym("link", "file")])
    expected = {"security.capability": CAPABILITY, "user.binary": BINARY, "user.x": b"y", "trusted.other": b"kept"}
    assert t.node("file").xattrs == expected
    assert t.node("dir").xattrs == expected
    assert t.node("link").xattrs == {}


def test_replacing_a_file_replaces_its_xattrs() -> None:
    t = Tree([f("file", b"1", pax=xattr("user.a", b"a"))], [f("file", b"2", pax=xattr("user.b", b"b"))])
    assert t.node("file").xattrs == {"user.b": b"b"}


# ---------------------------------------------------------------------------------------------------------------
# without CAP_MKNOD, and one layer with overlayfs markers


def test_devices_are_skipped_when_they_cannot_be_made() -> None:
    t = Tree([E("dev/null", tarfile.CHRTYPE, mode=0o666, major=1, minor=3),
              E("dev/sda", tarfile.BLKTYPE, mode=0o660, major=8), E("fifo", tarfile.FIFOTYPE), f("a", b"a")],
             devices=False)
    assert t.summary() == {"dev": "dir", "fifo": "fifo", "a": "file a"}
    assert t.tree.skipped == 2
    assert any("dev/null" in warning for warning in t.tree.warnings)


def test_markers_mode_keeps_whiteouts_as_overlayfs_markers() -> None:
    t = Tree([d("d"), f("d/x", b"x"), wh("d/.wh.x"), wh("d/.wh.gone"), wh(".wh.top"), d("e"),
              wh("e/.wh..wh..opq"), f("e/new", b"n"), wh("deep/er/.wh.y")], markers=True)
    assert t.summary() == {
        "d": "dir", "d/x": "file x", "d/gone": "chr 0:0", "top": "chr 0:0", "e": "dir", "e/new": "file n",
        "deep": "dir", "deep/er": "dir", "deep/er/y": "chr 0:0",
    }
    assert t.node("d/gone").mode == stat.S_IFCHR and t.node("d/gone").rdev == 0
    assert t.node("e").opaque and not t.node("d").opaque
    with pytest.raises(RootfsError, match="invalid"):
        t.apply([wh("d/.wh..")])


# ---------------------------------------------------------------------------------------------------------------
# the sink


def test_data_goes_to_the_sink_once_per_regular_file() -> None:
    big = os.urandom(300_000)
    t = Tree([f("big", big), f("small", b"s"), hard("big2", "big"), d("dir"), sym("l", "big")])
    assert sorted(len(data) for data in t.sink.files) == [1, len(big)]
    assert t.sink.files[t.node("big").address] == big


# ---------------------------------------------------------------------------------------------------------------
# the same trees as unpack_layer makes


SCENARIOS: dict[str, list[list[E]]] = {
    "whiteouts": [
        [f("keep", b"k"), f("gone", b"g"), f("dir/a", b"a"), f("dir/sub/b", b"b"), f("other/x", b"x")],
        [wh(".wh.gone"), wh(".wh.dir"), wh("other/.wh.missing"), wh("nowhere/.wh.x")],
    ],
    "same-layer whiteout": [[f("a", b"old")], [f("a", b"new"), wh(".wh.a"), wh(".wh.b"), f("b", b"b")]],
    "opaque": [
        [f("d/lower1", b"1"), f("d/sub/lower2", b"2"), f("d/sub/keep-name", b"old"), f("d/sibling", b"s"),
         f("e/untouched", b"u")],
        [d("d"), f("d/-early", b"before"), f("d/sub/keep-name", b"new"), wh("d/.wh..wh..opq"), f("d/late", b"late")],
    ],
    "replace": [
        [f("x/inner", b"i"), f("y", b"y"), sym("z", "/etc"), f("etc/f", b"f")],
        [f("x", b"now a file"), d("y"), f("y/child", b"c"), d("z"), f("z/new", b"n")],
    ],
    "symlinked parents": [
        [d("usr/lib"), sym("rel", "usr/lib"), sym("abs", "/usr/lib"), sym("up", "../../../usr/lib"),
         sym("dangling", "/not/yet"), sym("etc", "usr/etc")],
        [f("rel/a", b"a"), f("abs/b", b"b"), f("up/c", b"c"), f("dangling/d", b"d"), f("etc/passwd", b"p"),
         wh("abs/.wh.a")],
    ],
    "hardlinks": [
        [f("a", b"A"), sym("bin", "usr/bin"), f("usr/bin/tool", b"T")],
        [hard("b", "a"), hard("c", "bin/tool"), f("new", b"N"), hard("new2", "new"), wh(".wh.usr")],
        [f("a", b"replaced"), wh(".wh.new")],
    ],
    "aufs": [[d(".wh..wh.plnk"), wh(".wh..wh.aufs"), f("a", b"x")]],
    "fifo": [[E("p", tarfile.FIFOTYPE), f("q", b"q")], [d("p"), E("q", tarfile.FIFOTYPE)]],
}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_same_tree_as_unpack_layer(tmp_path: Path, scenario: str) -> None:
    layers = SCENARIOS[scenario]
    assert Tree(*layers).summary() == unpacked_summary(tmp_path, layers)


# A hardlink to a lower layer's file (accepted by both implementations, see test_unpack's
# test_hardlink_to_lower_layer_file) writes a new *path*; the lower layer's path stays a lower one, which this
# layer's whiteouts and opaque markers still remove (OCI whiteouts apply to paths a lower layer left), even though
# the node is shared.

def test_whiteout_of_lower_file_hardlinked_in_the_same_layer(tmp_path: Path) -> None:
    layers = [[f("f", b"F")], [hard("h", "f"), wh(".wh.f")]]  # "mv f h" as a layer may say it
    assert unpacked_summary(tmp_path, layers) == {"h": "file F"}
    assert Tree(*layers).summary() == {"h": "file F"}


def test_opaque_dir_with_lower_file_hardlinked_in_the_same_layer(tmp_path: Path) -> None:
    layers = [[f("d/g", b"G")], [hard("d/h", "d/g"), wh("d/.wh..wh..opq")]]
    assert unpacked_summary(tmp_path, layers) == {"d": "dir", "d/h": "file G"}
    assert Tree(*layers).summary() == {"d": "dir", "d/h": "file G"}


def test_unpack_layer_keeps_pax_nanosecond_mtimes(tmp_path: Path) -> None:
    """The tree (and so the EROFS image) keeps a PAX mtime to the nanosecond, and so must unpack_layer: tarfile's
    float ``mtime`` lands up to ~250 ns off (Debian's base image has ~840 such entries), and the two root
    filesystem modes would disagree."""
    layers = [[f("ns", b"n", pax={"mtime": "1700000000.123456789"}), d("dir", pax={"mtime": "1795999417.445303448"})]]
    t = Tree(*layers)
    assert t.node("ns").mtime_ns == 1_700_000_000_123_456_789
    assert t.node("dir").mtime_ns == 1_795_999_417_445_303_448
    unpacked_summary(tmp_path, layers)
    root = tmp_path / "unpacked"
    assert (os.lstat(root / "ns").st_mtime_ns, os.lstat(root / "dir").st_mtime_ns) == (
        1_700_000_000_123_456_789, 1_795_999_417_445_303_448)


def test_unpack_layer_same_file_twice_through_a_symlinked_parent(tmp_path: Path) -> None:
    """A layer naming one file twice, once through a symlinked parent: the later entry wins, in both. (unpack_layer
    used to fail with "File exists": its check for a pending threaded write compared the entry's name, "a/c", not
    the path it resolves to, "b/c".)"""
    layers = [[d("b"), sym("a", "/b"), f("b/c", b"1"), f("a/c", b"2")]]
    assert Tree(*layers).summary() == {"b": "dir", "a": "-> /b", "b/c": "file 2"}
    assert unpacked_summary(tmp_path, layers) == {"b": "dir", "a": "-> /b", "b/c": "file 2"}
