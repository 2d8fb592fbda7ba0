"""Writing a snapshot's changes as a deterministic, compressed OCI layer blob.

One streamed pass: tar (PAX headers from tarfile) → sha256 of the tar (diff_id) → gzip (isal), zstd or nothing →
sha256 of the blob (digest) → a temporary file in the destination directory, renamed to the digest's hex at the
end. Entries are sorted by the bytes of their path, names and metadata
come only from the tree (uname/gname empty, mtimes in whole seconds clamped to SOURCE_DATE_EPOCH when given), so the
same tree and changes always give the same digest.
"""

from __future__ import annotations

import os
import stat
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, cast

import zstandard
from isal import igzip

from lamina.errors import OptionsError, RootfsError
from lamina.oci.digest import DigestingWriter, digest_hex
from lamina.oci.model import OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_LAYER_ZSTD
from lamina.snapshot.diff import Changes, ancestors

WHITEOUT_PREFIX = ".wh."
XATTR_PREFIX = "SCHILY.xattr."
SKIPPED_XATTRS = frozenset({"security.selinux"})  # the host's labels, not the image's
SKIPPED_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")  # overlayfs bookkeeping, never image content
COPY_CHUNK = 1 << 20
GZIP_DEFAULT_LEVEL = 6
ZSTD_DEFAULT_LEVEL = 3


@dataclass(frozen=True)
class LayerBlob:
    path: Path  # the compressed blob on disk (named by its digest hex inside dest_dir)
    digest: str  # sha256 of the compressed bytes
    diff_id: str  # sha256 of the uncompressed tar
    size: int  # compressed size
    media_type: str  # lamina.oci.model.OCI_LAYER_GZIP, OCI_LAYER_ZSTD or OCI_LAYER_TAR (no compression)


class _Compressor(Protocol):
    def write(self, data: bytes, /) -> int: ...

    def close(self) -> None: ...


class _Uncompressed:
    """compression="none": the tar goes to the blob as it is (digest == diff_id)."""

    def __init__(self, target: DigestingWriter) -> None:
        self._target = target

    def write(self, data: bytes, /) -> int:
        return self._target.write(data)

    def close(self) -> None:
        pass


def _isal_level(level: int) -> int:
    """gzip's 1-9 scale (what `gzip -N` and Kaniko's --compression-level mean) → isal's 0-3."""
    if not 0 <= level <= 9:
        raise OptionsError(f"gzip compression level {level} is not between 0 and 9")
    return 0 if level <= 1 else 1 if level <= 4 else 2 if level <= 7 else 3


def _compressor(compression: str, level: int | None, target: DigestingWriter) -> tuple[_Compressor, str]:
    sink = cast(BinaryIO, target)
    if compression == "gzip":
        isal_level = _isal_level(GZIP_DEFAULT_LEVEL if level is None else level)
        gzip_writer = igzip.IGzipFile(fileobj=sink, mode="wb", compresslevel=isal_level,  # type: ignore[no-untyped-call]
                                      mtime=0)
        return cast(_Compressor, gzip_writer), OCI_LAYER_GZIP
    if compression == "zstd":
        zstd_level = ZSTD_DEFAULT_LEVEL if level is None else level
        if not -7 <= zstd_level <= 22:
            raise OptionsError(f"zstd compression level {zstd_level} is not between -7 and 22")
        compressor = zstandard.ZstdCompressor(level=zstd_level, write_checksum=True)
        return cast(_Compressor, compressor.stream_writer(sink, closefd=False)), OCI_LAYER_ZSTD
    if compression == "none":
        return _Uncompressed(target), OCI_LAYER_TAR
    raise OptionsError(f"unknown layer compression {compression!r} (use gzip, zstd or none)")


def _sort_key(key: str) -> bytes:
    return key.encode("utf-8", "surrogateescape")


def _parent_and_name(key: str) -> tuple[str, str]:
    parent, _, name = key.rpartition("/")
    return parent, name


def _plan(changes: Changes) -> list[tuple[str, bool]]:
    """(path in the tar, is a whiteout) for every entry, sorted; ancestors of every entry included once."""
    entries: dict[str, bool] = {}
    for key in changes.upserts:
        if key:
            entries[key] = False
    for key in changes.deletions:
        if key:
            parent, name = _parent_and_name(key)
            entries[f"{parent}/{WHITEOUT_PREFIX}{name}" if parent else WHITEOUT_PREFIX + name] = True
    for key in list(entries):
        for ancestor in ancestors(key):
            if ancestor in entries:
                break  # its own ancestors were added with it
            entries[ancestor] = False
    return sorted(entries.items(), key=lambda item: _sort_key(item[0]))


class _LayerWriter:
    """Turns rootfs paths into tar entries: metadata from lstat, hardlinks within the layer, xattrs.

    Headers come from ``TarInfo.tobuf`` (PAX); contents are copied here in chunks, so that nothing is kept per
    entry (``TarFile`` would remember every member)."""

    def __init__(self, root: Path, out: DigestingWriter, source_date_epoch: int | None) -> None:
        self.root = root
        self.out = out
        self.epoch = source_date_epoch
        self.first_links: dict[tuple[int, int], str] = {}  # (dev, ino) of multiply linked files → first tar path

    def add(self, info: tarfile.TarInfo, source: BinaryIO | None = None) -> None:
        self.out.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        if source is None:
            return
        remaining = info.size
        while remaining:
            chunk = source.read(min(COPY_CHUNK, remaining))
            if not chunk:
                raise RootfsError(f"{info.name!r} shrank while its layer was written")
            self.out.write(chunk)
            remaining -= len(chunk)
        if info.size % tarfile.BLOCKSIZE:
            self.out.write(tarfile.NUL * (tarfile.BLOCKSIZE - info.size % tarfile.BLOCKSIZE))

    def end(self) -> None:
        """Two zero blocks, then zeros up to a whole record (as tar and tarfile do)."""
        self.out.write(tarfile.NUL * (2 * tarfile.BLOCKSIZE))
        if self.out.size % tarfile.RECORDSIZE:
            self.out.write(tarfile.NUL * (tarfile.RECORDSIZE - self.out.size % tarfile.RECORDSIZE))

    def marker(self, name: str) -> None:
        info = tarfile.TarInfo(name)
        info.type = tarfile.REGTYPE
        info.mode = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = self.epoch if self.epoch is not None else 0
        self.add(info)

    def entry(self, key: str) -> None:
        path = os.path.join(self.root, key)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise RootfsError(f"{key!r} disappeared from the rootfs while its layer was written") from None
        info = tarfile.TarInfo(key)
        info.mode = stat.S_IMODE(st.st_mode)
        info.uid, info.gid = st.st_uid, st.st_gid
        info.uname = info.gname = ""
        mtime = st.st_mtime_ns // 1_000_000_000
        info.mtime = mtime if self.epoch is None else min(mtime, self.epoch)
        if stat.S_ISREG(st.st_mode):
            first = self.first_links.get((st.st_dev, st.st_ino)) if st.st_nlink > 1 else None
            if first is not None:
                info.type = tarfile.LNKTYPE
                info.linkname = first
                self.add(info)
                return
            if st.st_nlink > 1:
                self.first_links[(st.st_dev, st.st_ino)] = key
            info.type = tarfile.REGTYPE
            info.size = st.st_size
            info.pax_headers = self.xattrs(path)
            with open(path, "rb") as f:
                self.add(info, f)
            return
        info.pax_headers = self.xattrs(path)
        if stat.S_ISDIR(st.st_mode):
            info.type = tarfile.DIRTYPE
        elif stat.S_ISLNK(st.st_mode):
            info.type = tarfile.SYMTYPE
            info.linkname = os.readlink(path)
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            info.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        elif stat.S_ISFIFO(st.st_mode):
            info.type = tarfile.FIFOTYPE
        else:
            return  # sockets cannot be stored in a tar (and are never part of an image)
        self.add(info)

    def xattrs(self, path: str) -> dict[str, str]:
        try:
            names = os.listxattr(path, follow_symlinks=False)
        except OSError:
            return {}  # no xattr support on this filesystem or for this file type
        records: dict[str, str] = {}
        for name in sorted(names):
            if name in SKIPPED_XATTRS or name.startswith(SKIPPED_XATTR_PREFIXES):
                continue
            try:
                value = os.getxattr(path, name, follow_symlinks=False)
            except OSError:
                continue
            records[XATTR_PREFIX + name] = value.decode("utf-8", "surrogateescape")
        return records


def write_layer(root: Path, changes: Changes, dest_dir: Path, *, compression: str = "gzip",
                level: int | None = None, source_date_epoch: int | None = None) -> LayerBlob:
    """Write `changes` (paths in `root`) as a compressed layer blob in `dest_dir`, named by its digest hex.

    `compression` is "gzip", "zstd" or "none"; `level` is gzip's 0-9 scale (default 6, mapped onto isal's 0-3) or
    zstd's level (default 3), ignored for "none". Entries are whole-second mtimes, clamped to `source_date_epoch`
    when given."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    plan = _plan(changes)
    fd, temp_name = tempfile.mkstemp(prefix=".layer-", suffix=".tmp", dir=dest_dir)
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as raw:
            compressed = DigestingWriter(cast(BinaryIO, raw))
            compressor, media_type = _compressor(compression, level, compressed)
            uncompressed = DigestingWriter(cast(BinaryIO, compressor))
            writer = _LayerWriter(root, uncompressed, source_date_epoch)
            for name, is_whiteout in plan:
                if is_whiteout:
                    writer.marker(name)
                    continue
                writer.entry(name)
            writer.end()
            compressor.close()
        final = dest_dir / digest_hex(compressed.digest)
        os.replace(temp, final)
    except BaseException as e:
        temp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise RootfsError(f"cannot write a layer from {root}: {e.strerror or e}"
                              + (f" ({e.filename})" if e.filename else "")) from e
        raise
    return LayerBlob(path=final, digest=compressed.digest, diff_id=uncompressed.digest, size=compressed.size,
                     media_type=media_type)
