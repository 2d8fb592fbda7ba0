"""Unpacking an OCI layer tar (plain, gzip or zstd) into a root filesystem directory, safely.

Entry names are taken relative to the rootfs (a leading ``/`` or ``./`` is dropped, ``..`` is refused); parent
directories are resolved with ``resolve_in_root`` so that symlinks are followed inside the rootfs and never out of
it; the last component is never followed (an entry replaces whatever is at its path). Whiteouts (``.wh.NAME``) and
opaque markers (``.wh..wh..opq``) apply to what lower layers left; they are never written as files.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import stat
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

import zstandard
from isal import igzip_threaded

from lamina.errors import RootfsError
from lamina.rootfs.paths import resolve_in_root, set_directory_metadata
from lamina.rootfs.removal import WORKERS, remove_trees
from lamina.rootfs.tarstream import (
    CHAR,
    DIRECTORY,
    FIFO,
    HARDLINK,
    REGULAR,
    SYMLINK,
    Entry,
    TarError,
    TarReader,
)
from lamina.rootfs.tree import OPAQUE_MARKER, OVERLAY_XATTR_PREFIXES, WHITEOUT_PREFIX, member_name

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

log = logging.getLogger(__name__)

COPY_CHUNK = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@dataclass(frozen=True)
class UnpackStats:
    entries: int  # entries created or updated (files, directories, links, special files)
    whiteouts: int  # whiteouts and opaque markers applied
    skipped: int  # entries left out: special files that could not be created, aufs metadata, unknown types
    reused: int = 0  # entries found already in place, exactly (unpacking with ``present``)


class _Prefixed(io.RawIOBase):
    """A readable stream that first returns bytes already read from `inner` (to sniff its magic), then the rest."""

    def __init__(self, prefix: bytes, inner: BinaryIO) -> None:
        super().__init__()
        self._prefix = prefix
        self._inner = inner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        if self._prefix:
            n = min(len(view), len(self._prefix))
            view[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._inner.read(len(view))
        view[: len(data)] = data
        return len(data)


def open_layer_stream(raw: BinaryIO) -> BinaryIO | None:
    """`raw` as an uncompressed tar stream, by its magic bytes: gzip, zstd or plain; None when `raw` is empty.
    Close it when done (a gzip stream has a reader thread)."""
    magic = b""
    while len(magic) < 4:
        chunk = raw.read(4 - len(magic))
        if not chunk:
            break
        magic += chunk
    if not magic:
        return None
    stream = io.BufferedReader(_Prefixed(magic, raw), buffer_size=COPY_CHUNK)
    reader: BinaryIO = stream
    if magic.startswith(GZIP_MAGIC):
        # decompressed on a thread of its own (ISA-L releases the GIL): the caller parses while the next MiB inflates
        reader = cast(BinaryIO, igzip_threaded.open(stream, "rb", threads=1))  # type: ignore[no-untyped-call]
    elif magic == ZSTD_MAGIC:
        reader = zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True)
    return reader


def _inside(root: Path, path: Path) -> bool:
    """Is ``path`` (absolute, normalised: Path objects made by resolve_in_root) ``root`` or below it?"""
    base, text = str(root), str(path)
    return text == base or text.startswith(base.rstrip("/") + "/")


INLINE_LIMIT = 1 << 20  # regular files up to this size are read whole and written by the pool
REUSE_LIMIT = 64 << 20  # a file already in place is compared (read whole) up to this size, else written anew
MAX_BUFFERED = 32 << 20  # bytes waiting to be written, at most


class _Unpacker:
    """The state of one layer's extraction: what this layer wrote, directory metadata to apply at the end."""

    def __init__(self, root: Path, description: str, keep: tuple[str, ...] = (), *,
                 present: set[str] | None = None, reused: set[str] | None = None) -> None:
        self.root = root
        # with ``present`` (the inplace sandbox's first stage, over the runtime image's own files): an entry whose
        # file is already there with the same content and metadata is left as it is (no new inode, no overlayfs
        # copy-up), and every entry's host path is added, so the caller can then remove what the layers lack
        self.present = present
        self.reused_paths = reused  # the host paths of the entries found already in place
        self.description = description
        self.keep = keep  # paths ("/lamina", "/etc/hosts") never written, removed or replaced (the inplace sandbox)
        # asked for every entry, so answered by set lookups: the kept paths, their subtrees, the directories above them
        self.keep_set = frozenset(keep)
        self.keep_prefixes = tuple(k + "/" for k in keep)
        self.keep_holders = frozenset(_ancestors(keep))
        self.root_text = str(root)
        self.root_prefix = self.root_text.rstrip("/") + "/"
        self.is_root = os.geteuid() == 0
        self.written: set[str] = set()  # host paths of the entries this layer created or updated
        self.written_parents: set[str] = set()  # host paths of directories holding such entries
        # dir host path → (inode, permission bits, mtime_ns or -1), applied at the end (set_directory_metadata)
        self.dir_metadata: dict[str, tuple[int, int, int]] = {}
        self.restore_modes: dict[str, tuple[int, int]] = {}  # dirs opened up for an unprivileged user → (inode, mode)
        self.entries = 0
        self.reused = 0
        self.whiteouts = 0
        self.skipped = 0
        self.warned: set[str] = set()
        # small regular files are written by a few threads (creating files is mostly kernel time); anything that
        # depends on what is already on disk (whiteouts, hardlinks, replacing a path) waits for them first
        self.pool: ThreadPoolExecutor | None = None
        self.pending: dict[str, Future[None]] = {}
        self.buffered = 0
        self.parents: dict[str, Path] = {}  # in-layer parent name → its resolved host directory

    def flush(self) -> None:
        """Wait for the files being written; their errors surface here."""
        pending, self.pending, self.buffered = self.pending, {}, 0
        for future in pending.values():
            future.result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None

    def _pending_at_or_above(self, name: str) -> bool:
        """Is a file of this layer still being written at ``name`` or at one of its parents?"""
        if not self.pending:
            return False
        prefix = str(self.root) + "/"
        position = len(name)
        while position > 0:
            if prefix + name[:position] in self.pending:
                return True
            position = name.rfind("/", 0, position)
        return False

    def _write_file(self, target: Path, data: bytes, member: Entry) -> None:
        """A regular file: written and given its owner, mode and mtime through one descriptor (fewer path lookups
        than :meth:`metadata`, which xattrs still need)."""
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if member.xattrs:
                os.close(fd)
                fd = -1
                self.metadata(target, member)
                return
            if self.is_root:
                try:
                    os.fchown(fd, member.uid, member.gid)
                except OSError as e:
                    self.warn_once("chown", f"cannot set ownership ({e.strerror or e}); keeping the current owner")
            os.fchmod(fd, member.mode & 0o7777)  # after chown, which clears set-id bits
            os.utime(fd, ns=(member.mtime_ns, member.mtime_ns))
        finally:
            if fd >= 0:
                os.close(fd)

    def write_later(self, target: Path, data: bytes, member: Entry) -> None:
        if self.pool is None:
            self.pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="unpack")
        if self.buffered + len(data) > MAX_BUFFERED:
            self.flush()
        self.pending[str(target)] = self.pool.submit(self._write_file, target, data, member)
        self.buffered += len(data)

    def _in_root(self, path: Path | str) -> str:
        """``path`` (a host path below the root, normalised) as the image sees it: "/" + its path in the root."""
        text = str(path)
        if text.startswith(self.root_prefix):
            return "/" + text[len(self.root_prefix):]
        if text == self.root_text:
            return "/"
        rel = os.path.relpath(text, self.root)
        return "/" if rel == "." else "/" + rel

    def kept(self, path: Path | str) -> bool:
        """Is ``path`` (a host path) one of the paths to leave alone, or below one?"""
        if not self.keep:
            return False
        inner = self._in_root(path)
        return inner in self.keep_set or inner.startswith(self.keep_prefixes)

    def holds_kept(self, path: Path | str) -> bool:
        """Is a path to leave alone below ``path``? (then ``path`` is emptied around it, never removed)"""
        if not self.keep:
            return False
        inner = self._in_root(path)
        return (inner.rstrip("/") or "/") in self.keep_holders

    def fail(self, name: str, reason: str) -> RootfsError:
        return RootfsError(f"{self.description}: entry {name!r}: {reason}")

    def warn_once(self, kind: str, message: str) -> None:
        if kind not in self.warned:
            self.warned.add(kind)
            log.warning("%s: %s", self.description, message)

    # -- bookkeeping ------------------------------------------------------------------------------------------------

    def note_written(self, path: Path) -> None:
        self.written.add(str(path))
        parent = path.parent
        while _inside(self.root, parent) and str(parent) not in self.written_parents:
            self.written_parents.add(str(parent))
            if parent == self.root:
                break
            parent = parent.parent

    def make_writable(self, directory: Path) -> None:
        """Unprivileged users cannot create entries in read-only directories: open them up until the layer ends."""
        if self.is_root or os.access(directory, os.W_OK | os.X_OK):
            return
        st = os.lstat(directory)
        mode = stat.S_IMODE(st.st_mode)
        self.restore_modes.setdefault(str(directory), (st.st_ino, mode))
        os.chmod(directory, mode | stat.S_IRWXU)

    def ensure_parent(self, name: str, parent_name: str) -> Path:
        known = self.parents.get(parent_name)
        if known is not None:  # resolved before in this layer, and nothing replaced it since (see forget)
            return known
        parent = resolve_in_root(self.root, parent_name)
        if not _inside(self.root, parent):
            raise self.fail(name, "its parent resolves outside the root filesystem")
        missing: list[Path] = []
        current = parent
        while current != self.root and not os.path.lexists(current):
            missing.append(current)
            current = current.parent
        if not os.path.isdir(current):
            raise self.fail(name, f"{os.path.relpath(current, self.root)!r} is not a directory")
        for directory in reversed(missing):
            self.make_writable(directory.parent)
            os.mkdir(directory, 0o755)
            os.chmod(directory, 0o755)
        self.make_writable(parent)
        self.parents[parent_name] = parent
        return parent

    def forget(self, name: str) -> None:
        """``name`` is being replaced: directories resolved at or below it may not lead where they did."""
        prefix = name + "/"
        for known in [p for p in self.parents if p == name or p.startswith(prefix)]:
            del self.parents[known]

    # -- whiteouts --------------------------------------------------------------------------------------------------

    def whiteout(self, name: str, parent_name: str, base: str) -> None:
        parent = resolve_in_root(self.root, parent_name)
        if not os.path.isdir(parent):
            self.whiteouts += 1
            return
        if base == OPAQUE_MARKER:
            self.clear_lower(parent)
        else:
            hidden = base[len(WHITEOUT_PREFIX):]
            if hidden in ("", ".", ".."):
                raise self.fail(name, "whiteout of an invalid name")
            target = parent / hidden
            if self.kept(target):
                self.skipped += 1
                return
            if str(target) not in self.written and os.path.lexists(target):
                self.make_writable(parent)
                if self.holds_kept(target) and os.path.isdir(target) and not os.path.islink(target):
                    self.clear_lower(target)
                else:
                    _remove(target)
        self.whiteouts += 1

    def clear_lower(self, directory: Path) -> None:
        """Remove what lower layers left in `directory`, keeping what this layer already wrote there."""
        self.make_writable(directory)
        with os.scandir(directory) as it:
            children = sorted(entry.path for entry in it)
        for child in children:
            if self.kept(child):
                continue
            if child in self.written or child in self.written_parents or (
                    self.holds_kept(child) and os.path.isdir(child) and not os.path.islink(child)):
                if os.path.isdir(child) and not os.path.islink(child):
                    self.clear_lower(Path(child))  # kept, but what lower layers left inside it goes too
            else:
                _remove(Path(child))

    # -- entries ----------------------------------------------------------------------------------------------------

    def apply(self, reader: TarReader, member: Entry) -> None:
        try:
            name = member_name(member.name)
        except ValueError:
            raise self.fail(member.name, "'..' is not allowed in a layer entry name") from None
        parent_name, _, base = name.rpartition("/")
        if base.startswith(WHITEOUT_PREFIX):
            self.flush()
            self.parents.clear()  # whiteouts remove paths: resolve parents afresh
            if base.startswith(".wh..wh.") and base != OPAQUE_MARKER:
                self.skipped += 1  # aufs metadata (.wh..wh.plnk, .wh..wh.aufs): never part of the image
                return
            self.whiteout(name, parent_name, base)
            return
        if not name:
            if member.kind == DIRECTORY:
                self.metadata(self.root, member)
                self.entries += 1
            else:
                self.skipped += 1
                log.warning("%s: skipping non-directory entry %r for the root directory", self.description,
                            member.name)
            return
        if self.pending and self._pending_at_or_above(name):
            self.flush()
        parent = self.ensure_parent(name, parent_name)
        target = parent / base
        if not _inside(self.root, target) or target == self.root:
            raise self.fail(member.name, "it would land outside the root filesystem")
        if self.pending and str(target) in self.pending:
            self.flush()  # the same file, named through a symlinked parent, is still being written
        if self.kept(target) or self.holds_kept(target):
            self.skipped += 1  # the inplace sandbox's own paths (/lamina, /proc, mountpoints) stay as they are
            return
        if member.kind == HARDLINK:
            self.flush()
            self.parents.clear()
            self.hardlink(member, target)
            return
        if not member.known:
            self.skipped += 1
            log.warning("%s: skipping entry %r of unsupported type %r", self.description, member.name, member.kind)
            return
        try:
            found = os.lstat(target)
            existing: int | None = found.st_mode
        except FileNotFoundError:
            existing = None
        data: bytes | None = None
        if self.present is not None:
            self.present.add(str(target))
            if existing is not None:
                same, data = self.already_there(reader, member, target, found)
                if same:
                    self.entries += 1
                    self.reused += 1
                    if self.reused_paths is not None:
                        self.reused_paths.add(str(target))
                    return
            if self.reused_paths is not None:
                self.reused_paths.discard(str(target))  # a later layer's own version: not the runtime image's
        if existing is not None and not (member.kind == DIRECTORY and stat.S_ISDIR(existing)):
            self.flush()  # queued writes may be inside what is replaced
            self.forget(name)
            _remove(target)
        if member.kind == REGULAR and (data is not None or member.size <= INLINE_LIMIT):
            self.note_written(target)
            self.write_later(target, data if data is not None else reader.read(member.size), member)
            self.entries += 1
            return
        if member.kind == REGULAR:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as out:
                while chunk := reader.read(COPY_CHUNK):
                    out.write(chunk)
        elif member.kind == DIRECTORY:
            if existing is None or not stat.S_ISDIR(existing):
                os.mkdir(target, 0o700)
        elif member.kind == SYMLINK:
            os.symlink(member.linkname, target)
        elif not self.special(member, target):
            return
        self.note_written(target)
        self.metadata(target, member)
        self.entries += 1

    def already_there(self, reader: TarReader, member: Entry, target: Path, found: os.stat_result
                      ) -> tuple[bool, bytes | None]:
        """Is ``member`` already at ``target`` exactly (type, content, mode, owner, mtime; a single link; no
        extended attributes to set)? Returns that, and the entry's data when it had to be read to tell."""
        owner_ok = not self.is_root or (found.st_uid, found.st_gid) == (member.uid, member.gid)
        if member.xattrs or not owner_ok or found.st_mtime_ns != member.mtime_ns:
            return False, None
        if member.kind == SYMLINK:
            return stat.S_ISLNK(found.st_mode) and os.readlink(target) == member.linkname, None
        if member.kind != REGULAR or not stat.S_ISREG(found.st_mode) or found.st_nlink != 1 \
                or found.st_size != member.size or stat.S_IMODE(found.st_mode) != member.mode & 0o7777 \
                or member.size > REUSE_LIMIT:
            return False, None
        data = reader.read(member.size)
        try:
            with open(target, "rb") as current:
                return current.read(member.size + 1) == data, data
        except OSError:
            return False, data

    def hardlink(self, member: Entry, target: Path) -> None:
        try:
            link_name = member_name(member.linkname)
        except ValueError:
            raise self.fail(member.name, f"hardlink target {member.linkname!r} climbs out of the root") from None
        if not link_name:
            raise self.fail(member.name, "hardlink to the root directory")
        source = resolve_in_root(self.root, link_name, follow_final=False)
        if not _inside(self.root, source):
            raise self.fail(member.name, f"hardlink target {member.linkname!r} is outside the root filesystem")
        if self.kept(source):
            self.skipped += 1  # never a second name for a file of the inplace sandbox's own
            return
        if not os.path.lexists(source):
            raise self.fail(member.name, f"hardlink target {member.linkname!r} does not exist")
        if source == target:
            self.entries += 1
            return
        if os.path.lexists(target):
            _remove(target)
        os.link(source, target, follow_symlinks=False)
        self.note_written(target)
        self.entries += 1

    def special(self, member: Entry, target: Path) -> bool:
        """Create a device or FIFO; False when not permitted (skipped with a warning)."""
        perm = member.mode & 0o7777
        try:
            if member.kind == FIFO:
                os.mkfifo(target, perm)
            else:
                kind = stat.S_IFCHR if member.kind == CHAR else stat.S_IFBLK
                os.mknod(target, kind | perm, os.makedev(member.devmajor, member.devminor))
        except PermissionError:
            self.skipped += 1
            log.warning("%s: not permitted to create special file %r, skipped", self.description, member.name)
            return False
        return True

    def metadata(self, target: Path, member: Entry) -> None:
        if self.is_root and (self.present is None or not _owned_by(target, member.uid, member.gid)):
            try:
                os.lchown(target, member.uid, member.gid)
            except OSError as e:
                self.warn_once("chown", f"cannot set ownership ({e.strerror or e}); keeping the current owner")
        for attribute, value in member.xattrs.items():
            if attribute.startswith(OVERLAY_XATTR_PREFIXES):
                continue  # overlayfs bookkeeping, never image content (as the overlay root filesystem drops it)
            try:
                os.setxattr(target, attribute, value, follow_symlinks=False)
            except OSError as e:
                self.warn_once("xattr:" + attribute,
                               f"cannot set extended attribute {attribute} ({e.strerror or e}), skipped")
        mtime_ns = member.mtime_ns
        if member.kind == DIRECTORY:
            self.dir_metadata[str(target)] = (os.lstat(target).st_ino, member.mode & 0o7777, mtime_ns)
            return
        if member.kind != SYMLINK:
            os.chmod(target, member.mode & 0o7777)
        os.utime(target, ns=(mtime_ns, mtime_ns), follow_symlinks=False)

    def finish(self) -> None:
        """Directory modes and mtimes, once their children are in place (deepest first)."""
        self.flush()
        for path, (inode, mode) in self.restore_modes.items():
            self.dir_metadata.setdefault(path, (inode, mode, -1))
        for path in sorted(self.dir_metadata, reverse=True):
            inode, mode, mtime_ns = self.dir_metadata[path]
            set_directory_metadata(self.root, Path(path), inode, mode=mode,
                                   mtime_ns=mtime_ns if mtime_ns >= 0 else None)


def _owned_by(path: Path, uid: int, gid: int) -> bool:
    """Does ``path`` (not followed) already belong to uid:gid? (A no-op chown still copies a file up in overlayfs.)"""
    st = os.lstat(path)
    return (st.st_uid, st.st_gid) == (uid, gid)


def _ancestors(paths: tuple[str, ...]) -> set[str]:
    """The directories strictly above each of ``paths`` (absolute, no trailing "/"): "/a/b" gives "/" and "/a"."""
    found: set[str] = set()
    for path in paths:
        parent = path
        while parent != "/":
            parent = parent.rsplit("/", 1)[0] or "/"
            found.add(parent)
    return found


def _remove(path: Path) -> None:
    """Remove a file, symlink or whole directory tree (never following a symlink)."""
    if stat.S_ISDIR(os.lstat(path).st_mode):
        failed = remove_trees([str(path)])  # several directories at once
        if failed:
            raise failed[0][1]
    else:
        os.unlink(path)


def unpack_layer(root: Path, source: Path | BinaryIO, *, description: str = "layer",
                 keep: tuple[str, ...] | None = None, present: set[str] | None = None,
                 reused: set[str] | None = None) -> UnpackStats:
    """Apply the layer tar `source` (a file, or a stream read once) to the directory `root` with OCI semantics.

    ``keep``: absolute paths inside `root` that entries and whiteouts must leave alone (skipped, as Kaniko's ignore
    list); only the inplace sandbox gives it, and only with it may `root` be ``/``. ``present``: unpack over files
    already there, leaving those that are exactly the entry in place, and collect every entry's host path (see
    ``_Unpacker``).

    Raises ``RootfsError`` naming `description` and the entry when an entry would land outside `root`, a hardlink
    points outside it or at nothing, or the archive is corrupt or cannot be written."""
    root = Path(os.path.abspath(root))
    if keep is None and (root == Path("/") or Path(os.path.realpath(root)) == Path("/")):
        raise RootfsError(f"{description}: refusing to unpack a layer over the host's / (use a rootfs directory)")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RootfsError(f"{description}: cannot create the root directory {root}: {e.strerror or e}") from e
    kept = tuple(k.rstrip("/") for k in keep or () if k.startswith("/") and k.rstrip("/"))
    unpacker = _Unpacker(root, description, kept, present=present, reused=reused)
    name = ""
    try:
        with source.open("rb") if isinstance(source, Path) else contextlib.nullcontext(source) as raw:
            stream = open_layer_stream(raw)
            if stream is None:  # a zero-byte blob: an empty layer
                return UnpackStats(entries=0, whiteouts=0, skipped=0)
            with contextlib.closing(stream):
                reader = TarReader(stream)
                try:
                    for member in reader:
                        name = member.name
                        try:
                            unpacker.apply(reader, member)
                        except RootfsError as e:
                            if str(e).startswith(f"{description}:"):
                                raise
                            raise unpacker.fail(name, str(e)) from e
                    name = ""
                    unpacker.finish()
                finally:
                    unpacker.close()
    except RootfsError:
        raise
    except (OSError, EOFError, TarError, zstandard.ZstdError) as e:
        where = f"entry {name!r}: " if name else ""
        detail = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        filename = f" ({e.filename})" if isinstance(e, OSError) and e.filename else ""
        raise RootfsError(f"{description}: {where}cannot unpack: {detail}{filename}") from e
    return UnpackStats(entries=unpacker.entries, whiteouts=unpacker.whiteouts, skipped=unpacker.skipped,
                       reused=unpacker.reused)

