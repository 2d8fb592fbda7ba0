"""Writing an EROFS image (the kernel's read-only filesystem) of a ``tree.Node`` tree, uncompressed.

A stage's lower layers become one such image, mounted read-only under an overlay (see ``overlay.py``): building it
writes one file instead of creating an inode per entry, which on a busy ext4 costs more than everything else a
cached step needs (this is what containerd's erofs snapshotter does with mkfs.erofs; Debian 12's erofs-utils is too
old to read tars, and the format is small).

Layout (4 KiB blocks; the format: the Linux kernel's fs/erofs/erofs_fs.h and erofs-utils' documentation):

    block 0                 the superblock, at byte 1024
    blocks 1..              file data as the layers are read (each file from a block boundary), then directory
                            blocks and symlink targets
    meta_blkaddr..          the inodes: 64-byte extended inodes (32-bit ids, nanosecond mtimes), each followed by
                            its inline xattrs; an inode's number (nid) is its offset from meta_blkaddr / 32

Every inode uses the plain data layout (its data in consecutive blocks from ``i_u``); directories hold 12-byte
dirents then names, sorted by name across blocks, as the kernel's binary search expects.
"""

from __future__ import annotations

import stat
import struct
from dataclasses import dataclass
from typing import BinaryIO

from lamina.rootfs.tarstream import TarReader
from lamina.rootfs.tree import Node, walk

BLOCK_BITS = 12
BLOCK = 1 << BLOCK_BITS
SUPERBLOCK_OFFSET = 1024
MAGIC = 0xE0F5E1E2
INODE_SLOT = 32
EXTENDED_INODE = 64
INODE_VERSION_EXTENDED = 1  # i_format bit 0; data layout bits 1-3 stay 0: FLAT_PLAIN
DIRENT = 12
XATTR_HEADER = 12
COPY_CHUNK = 1 << 20

# file type codes of a dirent
FT_REG, FT_DIR, FT_CHR, FT_BLK, FT_FIFO, FT_SOCK, FT_LNK = 1, 2, 3, 4, 5, 6, 7
FILE_TYPES = {stat.S_IFREG: FT_REG, stat.S_IFDIR: FT_DIR, stat.S_IFCHR: FT_CHR, stat.S_IFBLK: FT_BLK,
              stat.S_IFIFO: FT_FIFO, stat.S_IFSOCK: FT_SOCK, stat.S_IFLNK: FT_LNK}

# xattr name prefixes EROFS stores as an index (the rest of the name follows); longest first
XATTR_INDEXES = (("system.posix_acl_default", 3), ("system.posix_acl_access", 2), ("security.", 6),
                 ("trusted.", 4), ("user.", 1))


class UnsupportedContent(Exception):
    """Something this writer cannot represent (an xattr namespace EROFS has no index for): unpack instead."""


def _blocks(size: int) -> int:
    return (size + BLOCK - 1) >> BLOCK_BITS


OPAQUE_XATTR = "trusted.overlay.opaque"


def _xattr_body(node: Node) -> bytes:
    """The inline xattr area of an inode: header, then entries (name index, name suffix, value), 4-byte aligned.
    An opaque directory (``Node.opaque``) gets overlayfs's marker."""
    xattrs = {**node.xattrs, OPAQUE_XATTR: b"y"} if node.opaque else node.xattrs
    if not xattrs:
        return b""
    entries = bytearray()
    for name in sorted(xattrs):
        for prefix, index in XATTR_INDEXES:
            if name.startswith(prefix):
                suffix = name[len(prefix):].encode("utf-8", "surrogateescape")
                break
        else:
            raise UnsupportedContent(f"extended attribute {name!r}")
        value = xattrs[name]
        if len(suffix) > 255 or len(value) > 0xFFFF:
            raise UnsupportedContent(f"extended attribute {name!r} is too long")
        entry = struct.pack("<BBH", len(suffix), index, len(value)) + suffix + value
        entries += entry + b"\0" * (-len(entry) % 4)
    return struct.pack("<IB7x", 0, 0) + bytes(entries)


@dataclass(slots=True)
class _Placed:
    node: Node
    nid: int
    xattr_body: bytes
    nlink: int


class ImageWriter:
    """An EROFS image written to ``out`` (a new, empty, seekable file): ``add_file`` while layers are read (the
    ``tree.DataSink``), then ``finish`` with the tree's root."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.block = 1  # the next free data block; block 0 holds the superblock
        self.out.seek(BLOCK)

    def add_file(self, source: TarReader, size: int) -> int:
        if size == 0:
            return 0
        address = self.block
        left = size
        while left:
            chunk = source.read(min(COPY_CHUNK, left))
            self.out.write(chunk)
            left -= len(chunk)
        self._pad()
        return address

    def add_bytes(self, data: bytes) -> int:
        address = self.block
        self.out.write(data)
        self._pad()
        return address

    def _pad(self) -> None:
        position = self.out.tell()
        tail = -position % BLOCK
        if tail:
            self.out.write(b"\0" * tail)
        self.block = (position + tail) >> BLOCK_BITS

    def finish(self, root: Node) -> int:
        """Write directories, symlinks, inodes and the superblock; return the number of inodes."""
        placed, order = self._place(root)
        parents = {id(root): placed[id(root)].nid}
        for item in order:
            if item.node.children is not None:
                for child in item.node.children.values():
                    if child.is_dir:
                        parents[id(child)] = item.nid
        for item in order:
            node = item.node
            if node.is_dir:
                data = self._directory(item, parents[id(node)], placed)
                node.size = len(data)
                node.address = self.add_bytes(data) if data else 0
            elif stat.S_ISLNK(node.mode):
                node.address = self.add_bytes(node.target)
        meta_block = self.block
        table = bytearray()
        for ino, item in enumerate(order, 1):
            offset = item.nid * INODE_SLOT
            if len(table) < offset:
                table += b"\0" * (offset - len(table))
            table += self._inode(item, ino)
        table += b"\0" * (-len(table) % BLOCK)
        self.out.seek(meta_block << BLOCK_BITS)
        self.out.write(table)
        total_blocks = meta_block + len(table) // BLOCK
        self._superblock(placed[id(root)].nid, len(order), total_blocks, meta_block)
        self.out.flush()
        return len(order)

    @staticmethod
    def _place(root: Node) -> tuple[dict[int, _Placed], list[_Placed]]:
        """Give every inode its nid: the root first (its nid must fit 16 bits), each inode with its xattrs in one
        block, 32-byte aligned; count the links of each."""
        links: dict[int, int] = {}
        nodes: list[Node] = [root]
        for _, node in walk(root):
            if id(node) not in links:
                nodes.append(node)
                links[id(node)] = 0
            links[id(node)] += 1
        placed: dict[int, _Placed] = {}
        order: list[_Placed] = []
        offset = INODE_SLOT  # nid 0 stays unused: an inode number 0 reads as "no entry" to some programs
        for node in nodes:
            body = _xattr_body(node)
            size = EXTENDED_INODE + len(body)
            size += -size % INODE_SLOT
            if size > BLOCK:
                raise UnsupportedContent("extended attributes too large for one block")
            if offset % BLOCK + size > BLOCK:
                offset += -offset % BLOCK
            if node.is_dir:
                assert node.children is not None
                nlink = 2 + sum(1 for child in node.children.values() if child.is_dir)
            else:
                nlink = links[id(node)]
            item = _Placed(node, offset // INODE_SLOT, body, nlink)
            placed[id(node)] = item
            order.append(item)
            offset += size
        return placed, order

    @staticmethod
    def _directory(item: _Placed, parent_nid: int, placed: dict[int, _Placed]) -> bytes:
        """The directory's blocks: entries sorted by name (``.`` and ``..`` included), as many per block as fit."""
        node = item.node
        assert node.children is not None
        entries = [(b".", item.nid, FT_DIR), (b"..", parent_nid, FT_DIR)]
        for name, child in node.children.items():
            entries.append((name.encode("utf-8", "surrogateescape"), placed[id(child)].nid,
                            FILE_TYPES.get(stat.S_IFMT(child.mode), 0)))
        entries.sort()
        blocks: list[bytes] = []
        start = 0
        while start < len(entries):
            end = start
            used = 0
            while end < len(entries) and used + DIRENT + len(entries[end][0]) <= BLOCK:
                used += DIRENT + len(entries[end][0])
                end += 1
            if end == start:
                raise UnsupportedContent(f"a file name of {len(entries[start][0])} bytes")
            chunk = entries[start:end]
            heads = bytearray()
            names = bytearray()
            name_offset = DIRENT * len(chunk)
            for entry_name, nid, kind in chunk:
                heads += struct.pack("<QHBx", nid, name_offset + len(names), kind)
                names += entry_name
            block = bytes(heads + names)
            if end < len(entries):
                block += b"\0" * (BLOCK - len(block))
            blocks.append(block)
            start = end
        return b"".join(blocks)

    @staticmethod
    def _inode(item: _Placed, ino: int) -> bytes:
        node = item.node
        kind = stat.S_IFMT(node.mode)
        if kind in (stat.S_IFCHR, stat.S_IFBLK):
            union = node.rdev
        elif kind in (stat.S_IFIFO, stat.S_IFSOCK):
            union = 0
        else:
            union = node.address
        icount = (len(item.xattr_body) - XATTR_HEADER) // 4 + 1 if item.xattr_body else 0
        seconds, nanos = divmod(node.mtime_ns, 1_000_000_000)
        raw = struct.pack("<HHHHQIIIIqII16x", INODE_VERSION_EXTENDED, icount, node.mode & 0xFFFF, 0, node.size,
                          union & 0xFFFFFFFF, ino & 0xFFFFFFFF, node.uid & 0xFFFFFFFF, node.gid & 0xFFFFFFFF,
                          seconds, nanos, item.nlink)
        raw += item.xattr_body
        return raw + b"\0" * (-len(raw) % INODE_SLOT)

    def _superblock(self, root_nid: int, inodes: int, blocks: int, meta_block: int) -> None:
        sb = struct.pack("<IIIBBHQQIIII16s16sI", MAGIC, 0, 0, BLOCK_BITS, 0, root_nid, inodes, 0, 0, blocks,
                         meta_block, 0, b"\0" * 16, b"lamina", 0)
        sb += b"\0" * (128 - len(sb))
        self.out.seek(SUPERBLOCK_OFFSET)
        self.out.write(sb)
        self.out.seek(blocks << BLOCK_BITS)
        self.out.truncate()
