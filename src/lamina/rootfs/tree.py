"""Layer tars applied to an in-memory file tree, with the same OCI semantics as ``unpack.py`` applies them to a
directory: whiteouts and opaque markers hide what lower layers left, an entry replaces what is at its path (a
directory over a directory only updates its metadata), parents are resolved through the tree's own symlinks (never
above its root), hardlinks share one inode, ``..`` in a name is refused.

Nothing is written to a directory: regular file data goes to a ``DataSink`` (the EROFS image being built, see
``erofs.py``), which returns where it put it. What stays in memory is metadata only: a few hundred bytes per entry.
"""

from __future__ import annotations

import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from lamina.errors import RootfsError
from lamina.rootfs.tarstream import BLOCKDEV, CHAR, DIRECTORY, FIFO, HARDLINK, REGULAR, SYMLINK, Entry, TarReader

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
# overlayfs reads these on a lower layer (opaque, redirect, metacopy...): image content must never carry them
OVERLAY_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")
MAX_SYMLINK_HOPS = 255
MAX_NAME = 255  # bytes in one path component (NAME_MAX)
MAX_PATH = 4000  # bytes in a whole entry name: the rootfs directory's own path must still fit PATH_MAX (4096)


class DataSink(Protocol):
    def add_file(self, source: TarReader, size: int) -> int:
        """Store ``size`` bytes read from ``source``; return the address to give the inode."""


@dataclass(eq=False, slots=True)
class Node:
    """One inode: a directory (``children``), regular file (``size`` bytes at ``address``), symlink (``target``),
    device (``rdev``) or FIFO. A hardlinked file is one Node under several names."""

    mode: int  # full st_mode
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0
    size: int = 0
    address: int = 0
    target: bytes = b""
    rdev: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)
    children: dict[str, Node] | None = None
    opaque: bool = False  # an overlayfs opaque directory (whiteout markers mode): hides lower layers' content

    @property
    def is_dir(self) -> bool:
        return self.children is not None


def new_directory(mode: int = 0o755, mtime_ns: int = 0) -> Node:
    return Node(stat.S_IFDIR | mode, mtime_ns=mtime_ns, children={})


def walk(root: Node) -> Iterator[tuple[str, Node]]:
    """Every (path, node) below ``root`` ("etc/passwd" form), parents before children, in a fixed order."""
    pending = [("", root)]
    while pending:
        path, node = pending.pop()
        assert node.children is not None
        for name in sorted(node.children, reverse=True):
            child = node.children[name]
            key = f"{path}/{name}" if path else name
            yield key, child
            if child.is_dir:
                pending.append((key, child))


def member_name(name: str) -> str:
    """A tar entry name relative to the root ("" for the root itself); ``..`` components are refused."""
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ValueError("'..' in an entry name")
    return "/".join(parts)


def _xattrs(entry: Entry) -> dict[str, bytes]:
    if not entry.xattrs:
        return {}
    return {name: value for name, value in entry.xattrs.items() if not name.startswith(OVERLAY_XATTR_PREFIXES)}


class LayerTree:
    """The tree that layers are applied to, in order (``apply_layer`` once per layer, bottom first)."""

    def __init__(self, sink: DataSink, *, devices: bool = True, markers: bool = False) -> None:
        """``devices``: whether device nodes may be made (False without CAP_MKNOD: they are skipped, as unpacking
        skips what mknod refuses). ``markers``: the tree is one layer to stack on others with overlayfs, so a
        whiteout becomes overlayfs's own marker (a 0/0 character device) and an opaque directory is flagged,
        instead of removing what is below. Parents then resolve through this layer's own symlinks only: fine for
        the layers lamina makes, whose entries name real directories, never paths through a symlink."""
        self.devices = devices
        self.markers = markers
        self.now_ns = time.time_ns()  # mtime of directories an entry needs but its layer lacks (as mkdir gives)
        self.root = new_directory(mtime_ns=self.now_ns)
        self.sink = sink
        self.skipped = 0  # entries left out: aufs metadata, unsupported types
        self.warnings: list[str] = []
        # per layer: the names it wrote, as (id of the parent directory, name), and the directories holding what it
        # wrote (nodes kept alive here, so that their ids stay unique while the layer is applied)
        self._written: set[tuple[int, str]] = set()
        self._holding: dict[int, Node] = {}

    # -- resolving --------------------------------------------------------------------------------------------------

    def _lookup_parent(self, parts: list[str], description: str, name: str) -> tuple[Node, list[Node]]:
        """The directory node at ``parts`` (symlinks followed inside the tree, missing directories created), and
        the directories passed on the way (for the bookkeeping of opaque markers)."""
        trail = self._walk(parts, create=True, description=description, name=name)
        assert trail is not None
        return trail[-1], trail

    def _node_at(self, name: str) -> Node | None:
        """The node a hardlink names (parents resolved, the last component not followed), or None."""
        parent_name, _, base = name.rpartition("/")
        probe = self._probe([p for p in parent_name.split("/") if p])
        if probe is None or probe.children is None:
            return None
        return probe.children.get(base)

    def _probe(self, parts: list[str]) -> Node | None:
        """Like ``_lookup_parent`` but creating nothing: None where a component is missing or not a directory."""
        trail = self._walk(parts, create=False)
        return trail[-1] if trail is not None else None

    def _walk(self, parts: list[str], *, create: bool, description: str = "", name: str = "") -> list[Node] | None:
        """The directories from the root to ``parts``, following the tree's symlinks (absolute ones restart at the
        root, ``..`` stops there). A missing component is made (``create``) or ends the walk with None, as does a
        non-directory or a symlink loop, which raise RootfsError when creating."""
        pending = list(reversed(parts))
        trail: list[Node] = [self.root]
        hops = 0
        while pending:
            part = pending.pop()
            if part == "..":
                if len(trail) > 1:
                    trail.pop()
                continue
            children = trail[-1].children
            assert children is not None
            child = children.get(part)
            if child is None:
                if not create:
                    return None
                child = children[part] = new_directory(mtime_ns=self.now_ns)
            elif stat.S_ISLNK(child.mode):
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    if not create:
                        return None
                    raise RootfsError(f"{description}: entry {name!r}: too many levels of symbolic links")
                target = child.target.decode("utf-8", "surrogateescape")
                if target.startswith("/"):
                    del trail[1:]
                pending.extend(reversed([p for p in target.split("/") if p not in ("", ".")]))
                continue
            elif not child.is_dir:
                if not create:
                    return None
                raise RootfsError(f"{description}: entry {name!r}: {'/'.join(parts)!r} is not a directory")
            trail.append(child)
        return trail

    # -- bookkeeping ------------------------------------------------------------------------------------------------

    def _wrote(self, parent: Node, name: str, trail: list[Node]) -> None:
        self._written.add((id(parent), name))
        for directory in trail:
            self._holding[id(directory)] = directory

    def _clear_lower(self, directory: Node) -> None:
        """An opaque directory: drop what lower layers left in it, keep what this layer wrote (recursively)."""
        assert directory.children is not None
        for name, child in list(directory.children.items()):
            if (id(directory), name) in self._written or id(child) in self._holding:
                if child.is_dir:
                    self._clear_lower(child)
            else:
                del directory.children[name]

    # -- entries ----------------------------------------------------------------------------------------------------

    def apply_layer(self, reader: TarReader, description: str) -> None:
        """Apply every entry of the (streamed) layer ``reader``."""
        self._written, self._holding = set(), {}
        for entry in reader:
            self.apply(reader, entry, description)
        self._written, self._holding = set(), {}

    def apply(self, reader: TarReader, member: Entry, description: str) -> None:
        try:
            name = member_name(member.name)
        except ValueError:
            raise RootfsError(f"{description}: entry {member.name!r}: '..' is not allowed in a layer entry "
                              "name") from None
        parent_name, _, base = name.rpartition("/")
        parts = [p for p in parent_name.split("/") if p]
        encoded = name.encode("utf-8", "surrogateescape")
        if len(encoded) > MAX_PATH or any(len(part) > MAX_NAME for part in encoded.split(b"/")):
            raise RootfsError(f"{description}: entry {member.name!r}: file name too long (Linux allows "
                              f"{MAX_NAME} bytes per name, {MAX_PATH} per path)")
        if base.startswith(WHITEOUT_PREFIX):
            if base.startswith(".wh..wh.") and base != OPAQUE_MARKER:
                self.skipped += 1  # aufs metadata (.wh..wh.plnk, .wh..wh.aufs): never part of the image
                return
            self._whiteout(parts, base, description, member.name)
            return
        if not name:
            if member.kind == DIRECTORY:
                self._set_metadata(self.root, member)
            else:
                self.skipped += 1
                self.warnings.append(f"{description}: skipping non-directory entry {member.name!r} for the root "
                                     "directory")
            return
        parent, trail = self._lookup_parent(parts, description, member.name)
        assert parent.children is not None
        if member.kind == HARDLINK:
            self._hardlink(parent, base, trail, member, description)
            return
        node = self._new_node(reader, member, description)
        if node is None:
            return
        existing = parent.children.get(base)
        if existing is not None and existing.is_dir and node.is_dir:
            kept = existing.xattrs  # a directory over a directory keeps its children, and adds to its xattrs (as
            self._set_metadata(existing, member)  # setxattr does when unpacking into a directory)
            existing.xattrs = {**kept, **existing.xattrs}
            node = existing
        else:
            parent.children[base] = node
        self._wrote(parent, base, trail)

    def _whiteout(self, parts: list[str], base: str, description: str, entry: str) -> None:
        if self.markers:
            self._marker(parts, base, description, entry)
            return
        parent = self._probe(parts)
        if parent is None or parent.children is None:
            return
        if base == OPAQUE_MARKER:
            self._clear_lower(parent)
            return
        hidden = base[len(WHITEOUT_PREFIX):]
        if hidden in ("", ".", ".."):
            raise RootfsError(f"{description}: entry {entry!r}: whiteout of an invalid name")
        if hidden in parent.children and (id(parent), hidden) not in self._written:
            del parent.children[hidden]

    def _marker(self, parts: list[str], base: str, description: str, entry: str) -> None:
        parent = self._lookup_parent(parts, description, entry)[0]
        assert parent.children is not None
        if base == OPAQUE_MARKER:
            parent.opaque = True
            return
        hidden = base[len(WHITEOUT_PREFIX):]
        if hidden in ("", ".", ".."):
            raise RootfsError(f"{description}: entry {entry!r}: whiteout of an invalid name")
        if (id(parent), hidden) not in self._written:
            parent.children[hidden] = Node(stat.S_IFCHR, mtime_ns=self.now_ns)  # device 0/0: overlayfs whiteout

    def _hardlink(self, parent: Node, base: str, trail: list[Node], member: Entry, description: str) -> None:
        assert parent.children is not None
        try:
            link_name = member_name(member.linkname)
        except ValueError:
            raise RootfsError(f"{description}: entry {member.name!r}: hardlink target {member.linkname!r} climbs "
                              "out of the root") from None
        if not link_name:
            raise RootfsError(f"{description}: entry {member.name!r}: hardlink to the root directory")
        source = self._node_at(link_name)
        if source is None:
            raise RootfsError(f"{description}: entry {member.name!r}: hardlink target {member.linkname!r} does not "
                              "exist")
        if source.is_dir:
            raise RootfsError(f"{description}: entry {member.name!r}: hardlink to a directory "
                              f"({member.linkname!r})")
        parent.children[base] = source
        self._wrote(parent, base, trail)

    def _new_node(self, reader: TarReader, member: Entry, description: str) -> Node | None:
        perm = member.mode & 0o7777
        kind = member.kind
        if kind == REGULAR:
            node = Node(stat.S_IFREG | perm, size=member.size)
            node.address = self.sink.add_file(reader, member.size)
        elif kind == DIRECTORY:
            node = Node(stat.S_IFDIR | perm, children={})
        elif kind == SYMLINK:
            node = Node(stat.S_IFLNK | 0o777, target=member.linkname.encode("utf-8", "surrogateescape"))
            node.size = len(node.target)
        elif kind in (CHAR, BLOCKDEV) and not self.devices:
            self.skipped += 1
            self.warnings.append(f"{description}: not permitted to create special file {member.name!r}, skipped")
            return None
        elif kind in (CHAR, BLOCKDEV):
            node = Node((stat.S_IFCHR if kind == CHAR else stat.S_IFBLK) | perm,
                        rdev=_encode_dev(member.devmajor, member.devminor))
        elif kind == FIFO:
            node = Node(stat.S_IFIFO | perm)
        else:
            self.skipped += 1
            self.warnings.append(f"{description}: skipping entry {member.name!r} of unsupported type {kind!r}")
            return None
        self._set_metadata(node, member)
        return node

    @staticmethod
    def _set_metadata(node: Node, member: Entry) -> None:
        node.uid, node.gid = member.uid, member.gid
        node.mtime_ns = member.mtime_ns
        if not stat.S_ISLNK(node.mode):
            node.mode = stat.S_IFMT(node.mode) | (member.mode & 0o7777)
        node.xattrs = _xattrs(member)


def _encode_dev(major: int, minor: int) -> int:
    """The kernel's new_encode_dev: what EROFS stores for a device number."""
    return (minor & 0xFF) | ((major & 0xFFF) << 8) | ((minor & ~0xFF) << 12)
