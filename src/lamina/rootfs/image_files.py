"""Chosen files of an image's final filesystem, read for its SBOM or for a step made without unpacking the image
(``skeleton.py``): straight from the layer blobs (gzip, zstd or plain tars on disk, never unpacked), or from a root
filesystem already unpacked into a directory.

From layers, the blobs stream through ``rootfs.tree.LayerTree`` with the same OCI semantics as unpacking: a later
layer replaces what an earlier one wrote, whiteouts (``.wh.NAME``) and opaque directories (``.wh..wh..opq``) delete
what is below, parents resolve through the image's own symlinks, and a hardlink is its target's inode under another
name. The tree keeps metadata only; file data is read only for the files ``wanted(path, mode, size)`` accepts (mode:
the permission bits), and of those ``excerpt(path, data)`` may keep just a part (a Go executable's build
information, not the whole executable) or nothing. Data that later layers replace or delete is let go after each
layer, so memory holds the wanted files of the final filesystem, not every version of them.

Paths are relative to the image's root, "var/lib/dpkg/status". A hardlink is there under each name that is wanted:
when its file was not wanted under the name it was first stored by, that entry is read again from its layer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import zstandard

from lamina.errors import RootfsError
from lamina.rootfs.tarstream import Entry, TarError, TarReader
from lamina.rootfs.tree import LayerTree, Node, member_name, walk
from lamina.rootfs.unpack import open_layer_stream

log = logging.getLogger(__name__)

Wanted = Callable[[str, int, int], bool]  # (path, permission bits, size) → read this regular file?
# (path, data) → what of the data to keep (None: nothing); for hardlinked names, given the first name read
Excerpt = Callable[[str, bytes], bytes | None]


ORDINAL_BITS = 40  # a file's address in the tree: its layer's index above these bits, its entry's ordinal below


class _WantedData:
    """The ``DataSink`` of the tree. Every regular file gets an address saying where its data is, (layer index <<
    ORDINAL_BITS) | entry ordinal (from 1); the data of wanted files is kept under it (or None when the excerpt kept
    nothing), so that a hardlink to a file that was not wanted under its first name can be read again."""

    def __init__(self, wanted: Wanted, excerpt: Excerpt | None) -> None:
        self.wanted = wanted
        self.excerpt = excerpt
        self.layer = 0
        self.ordinal = 0
        self.entry: Entry | None = None  # the entry being applied (set by _AnnouncingReader)
        self.data: dict[int, bytes | None] = {}
        self.added = False  # since the last prune

    def add_file(self, source: TarReader, size: int) -> int:
        address = (self.layer << ORDINAL_BITS) | self.ordinal
        if self.entry is None:
            return address
        try:
            path = member_name(self.entry.name)
        except ValueError:
            return address
        if self.wanted(path, self.entry.mode & 0o7777, size):  # else the reader skips the data
            self.data[address] = self.keep(path, source.read(size))
            self.added = True
        return address

    def keep(self, path: str, data: bytes) -> bytes | None:
        return data if self.excerpt is None else self.excerpt(path, data)

    def keep_only(self, live: set[int]) -> None:
        """Let go of the data of files no longer in the tree."""
        for address in [a for a in self.data if a not in live]:
            del self.data[address]
        self.added = False


class _AnnouncingReader(TarReader):
    """A TarReader that tells the sink which entry it is on (and its ordinal), for ``wanted`` and the address."""

    def __init__(self, stream: BinaryIO, sink: _WantedData) -> None:
        super().__init__(stream)
        self.sink = sink

    def __iter__(self) -> Iterator[Entry]:
        self.sink.ordinal = 0
        for entry in super().__iter__():
            self.sink.entry = entry
            self.sink.ordinal += 1
            yield entry
        self.sink.entry = None


def _regular_files(tree: LayerTree) -> Iterator[tuple[str, Node]]:
    return ((path, node) for path, node in walk(tree.root) if stat.S_ISREG(node.mode))


@contextlib.contextmanager
def _layer_stream(layer: Path, description: str) -> Iterator[BinaryIO | None]:
    """The uncompressed tar stream of a layer blob (None for a zero-byte blob); read errors as RootfsError."""
    try:
        with layer.open("rb") as raw:
            stream = open_layer_stream(raw)
            with contextlib.closing(stream) if stream is not None else contextlib.nullcontext():
                yield stream
    except (OSError, EOFError, TarError, zstandard.ZstdError) as e:
        detail = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise RootfsError(f"{description}: cannot read the layer {layer}: {detail}") from e


def _reread(layer: Path, description: str, ordinals: set[int]) -> dict[int, bytes]:
    """The data of the entries of ``layer`` with these ordinals."""
    found: dict[int, bytes] = {}
    with _layer_stream(layer, description) as stream:
        if stream is not None:
            reader = TarReader(stream)
            for ordinal, entry in enumerate(reader, start=1):
                if ordinal in ordinals:
                    found[ordinal] = reader.read(entry.size)
                    if len(found) == len(ordinals):
                        break
    return found


def final_files(layers: Sequence[Path], wanted: Wanted, *, excerpt: Excerpt | None = None) -> dict[str, bytes]:
    """The wanted regular files of the filesystem that ``layers`` (bottom first) make, path → data (or the excerpt
    of it). Raises RootfsError when a layer cannot be read or breaks the rules unpacking enforces."""
    final = FinalTree(wanted, excerpt=excerpt)
    for index, layer in enumerate(layers):
        final.apply(layer, f"layer {index + 1} of {len(layers)}")
    return final.files()


class FinalTree:
    """The metadata tree of the filesystem that layers make, applied one layer at a time (bottom first), and its
    wanted regular files (see ``final_files``): a stage's tree is kept and given each new layer as it is made."""

    def __init__(self, wanted: Wanted, *, excerpt: Excerpt | None = None) -> None:
        self.wanted = wanted
        self.sink = _WantedData(wanted, excerpt)
        self.tree = LayerTree(self.sink)
        self.layers: list[tuple[Path, str]] = []  # (blob, description) of each layer applied

    def apply(self, layer: Path, description: str) -> None:
        self.sink.layer = len(self.layers)
        self.layers.append((layer, description))
        with _layer_stream(layer, description) as stream:
            if stream is not None:
                self.tree.apply_layer(_AnnouncingReader(stream, self.sink), description)
        if self.sink.added:
            self.sink.keep_only({node.address for _, node in _regular_files(self.tree)})

    def files(self) -> dict[str, bytes]:
        """The wanted regular files of the tree as it is now, path → data (or the excerpt of it)."""
        sink = self.sink
        found: dict[str, bytes] = {}
        unread: dict[int, list[str]] = {}  # hardlinks wanted under a name their file was not read by
        for path, node in _regular_files(self.tree):
            if not self.wanted(path, stat.S_IMODE(node.mode), node.size):
                continue
            if node.address not in sink.data:
                unread.setdefault(node.address, []).append(path)
            elif (content := sink.data[node.address]) is not None:
                found[path] = content
        for index in sorted({address >> ORDINAL_BITS for address in unread}):
            mask = (1 << ORDINAL_BITS) - 1
            wanted_here = {a & mask: paths for a, paths in unread.items() if a >> ORDINAL_BITS == index}
            for ordinal, data in _reread(*self.layers[index], set(wanted_here)).items():
                content = sink.keep(wanted_here[ordinal][0], data)
                if content is not None:
                    found.update(dict.fromkeys(wanted_here[ordinal], content))
        return dict(sorted(found.items()))


def _read(path: str) -> bytes | None:
    """A regular file's data, never through a symlink; None when it cannot be read (it changed, no permission)."""
    try:
        with open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb") as file:
            return file.read()
    except OSError as e:
        log.debug("cannot read %s for the SBOM: %s", path, e)
        return None


def files_in_tree(root: Path, wanted: Wanted, *, excerpt: Excerpt | None = None) -> dict[str, bytes]:
    """The wanted regular files below the directory ``root`` (an unpacked root filesystem), path relative to it →
    data (or the excerpt of it); symlinks are never followed. Files that cannot be read are left out."""
    found: dict[str, bytes] = {}
    for directory, subdirectories, names in os.walk(root):
        subdirectories.sort()
        relative = os.path.relpath(directory, root)
        for name in names:
            host_path = os.path.join(directory, name)
            path = name if relative == "." else f"{relative}/{name}"
            try:
                st = os.lstat(host_path)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) or not wanted(path, stat.S_IMODE(st.st_mode), st.st_size):
                continue
            content = _read(host_path)
            if content is not None and excerpt is not None:
                content = excerpt(path, content)
            if content is not None:
                found[path] = content
    return dict(sorted(found.items()))
