"""COPY: files from the build context or from another stage's rootfs into this stage's rootfs.

Semantics follow BuildKit: sources are relative to their root and never leave it; a directory source copies its
contents; several sources, or a destination ending in ``/``, make the destination a directory; a relative destination
is relative to WORKDIR; files keep their mode and mtime. ``--chown`` sets the owner of everything copied (names
resolved in this stage's /etc/passwd and /etc/group); without it files from the build context become 0:0 and files
from another stage or an image keep their owners. ``--chmod`` sets the mode of everything copied and of the parent
directories COPY has to create (0755 without it; owned by ``--chown``'s owner, else 0:0), as BuildKit's fsutil does.
A wildcard that matches nothing is skipped (BuildKit's ``AllowEmptyWildcard``); a plain path that is missing is an
error. A symlink named as a source is followed (inside its root); symlinks inside a copied directory are copied as
links. Every write goes through ``resolve_in_root``: nothing lands outside the rootfs.
"""

from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import shutil
import stat
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from lamina.build.context import BuildContext, clean_source, has_glob, match_components
from lamina.build.handlers.metadata import expand
from lamina.build.state import StageState
from lamina.dockerfile.chmod import Chmod, parse_chmod
from lamina.dockerfile.ignore import IgnoreRule, is_ignored, parse_ignore
from lamina.dockerfile.instructions import Copy
from lamina.errors import DockerfileError
from lamina.rootfs.paths import resolve_in_root, set_directory_metadata
from lamina.rootfs.removal import WORKERS
from lamina.sandbox.users import UnknownUser, read_user_db, resolve_owner


class SourceTree(Protocol):
    @property
    def description(self) -> str:
        """How to name the tree in messages ("the build context", "stage build")."""
        ...

    @property
    def keeps_owners(self) -> bool:
        """Do copies keep the owners the files have here (another stage, an image), or become 0:0 (the context)?"""
        ...

    def match(self, source: str, *, deep: bool = False) -> list[str]:
        """Relative paths named by ``source`` (wildcards expanded), sorted; empty when none. ``deep``: a ``**``
        component matches any number of directories, zero included (``COPY --parents`` patterns)."""
        ...

    def host_path(self, rel: str) -> Path:
        """The host path of ``rel``, a top-level symlink followed inside the tree."""
        ...

    def walk(self, directory: Path, rel: str) -> Iterator[tuple[str, Path]]:
        """(relative path below ``directory``, host path) of every entry to copy, parents first."""
        ...


@dataclass(frozen=True)
class ContextSource:
    context: BuildContext
    description: str = "the build context"
    keeps_owners: bool = False

    def match(self, source: str, *, deep: bool = False) -> list[str]:
        return self.context.match(source, deep=deep)

    def host_path(self, rel: str) -> Path:
        return resolve_in_root(self.context.root, rel)

    def walk(self, directory: Path, rel: str) -> Iterator[tuple[str, Path]]:
        # ``rel`` is the context path of ``directory`` (after following a top-level symlink), for .dockerignore
        base = os.path.relpath(directory, self.context.root)
        base = "" if base == "." else base
        for child in self.context.walk(base):
            below = child[len(base) + 1:] if base else child
            yield below, self.context.root / child


@dataclass(frozen=True)
class RootfsSource:
    """Another stage's or an image's root filesystem. ``ignored``: absolute paths in it that are not the stage's
    (the inplace sandbox's, when the stage is still in ``/``): never matched, never walked into."""

    root: Path
    description: str
    keeps_owners: bool = True
    ignored: tuple[str, ...] = ()

    def _ignored(self, host: Path | str) -> bool:
        if not self.ignored:
            return False
        rel = os.path.relpath(host, self.root)
        inner = "/" if rel == "." else "/" + rel
        return any(inner == p or inner.startswith(p.rstrip("/") + "/") for p in self.ignored)

    def _exists(self, rel: str) -> bool:
        host = resolve_in_root(self.root, rel)
        return os.path.lexists(host) and not self._ignored(host)

    def _below(self, rel: str) -> Iterator[str]:
        """Every path below the directory ``rel`` (not followed through links), but the ignored ones."""
        top = resolve_in_root(self.root, rel)
        for directory, dirs, files in os.walk(top):
            inner = os.path.relpath(directory, top)
            base = rel if inner == "." else posixpath.join(rel, inner) if rel else inner
            for name in sorted(dirs + files):
                child = posixpath.join(base, name) if base else name
                if not self._ignored(resolve_in_root(self.root, child, follow_final=False)):
                    yield child
            dirs[:] = [d for d in dirs if not self._ignored(os.path.join(directory, d))]

    def match(self, source: str, *, deep: bool = False) -> list[str]:
        rel = clean_source(source)
        if not has_glob(rel):
            return [rel] if self._exists(rel) else []

        def names(parent: str) -> list[str] | None:
            try:
                return sorted(os.listdir(resolve_in_root(self.root, parent)))
            except (NotADirectoryError, FileNotFoundError):
                return None

        return match_components(rel, exists=self._exists, names=names, below=self._below, deep=deep,
                                keep=lambda path: not self._ignored(resolve_in_root(self.root, path,
                                                                                    follow_final=False)))

    def host_path(self, rel: str) -> Path:
        return resolve_in_root(self.root, rel)

    def walk(self, directory: Path, rel: str) -> Iterator[tuple[str, Path]]:
        for dirpath, dirnames, filenames in os.walk(directory):
            dirnames[:] = sorted(d for d in dirnames if not self._ignored(os.path.join(dirpath, d)))
            names = sorted(dirnames + [f for f in filenames if not self._ignored(os.path.join(dirpath, f))])
            for name in names:
                host = Path(dirpath, name)
                yield os.path.relpath(host, directory), host


@dataclass(frozen=True)
class CopyPlan:
    uid: int
    gid: int
    chmod: Chmod | None  # --chmod
    dest: str  # absolute path in the image
    dest_is_dir: bool
    keep_owners: bool = False  # copies keep their source's owner (COPY --from without --chown)

    def owner(self, source: os.stat_result | None) -> tuple[int, int]:
        """The owner of a copy of ``source`` (None: a directory the copy has to create)."""
        if self.keep_owners and source is not None:
            return source.st_uid, source.st_gid
        return self.uid, self.gid


@dataclass(frozen=True)
class CopyArguments:
    """COPY's and ADD's arguments, expanded: sources, destination, owner (--chown, 0:0 by default), --chmod,
    --exclude rules."""

    sources: list[str]
    dest: str
    uid: int
    gid: int
    chmod: Chmod | None
    excludes: tuple[IgnoreRule, ...]


def expand_copy_arguments(state: StageState, inst: Copy, escape: str) -> CopyArguments:
    env = state.expansion_env()
    sources = [expand(inst, s, env, escape) for s in inst.sources]
    dest = expand(inst, inst.dest, env, escape) or "./"  # BuildKit: "" is the working directory
    uid, gid = 0, 0
    if inst.chown:
        chown = expand(inst, inst.chown, env, escape)
        try:
            uid, gid = resolve_owner(chown, read_user_db(state.rootfs))
        except UnknownUser as exc:
            raise inst.error(f"--chown={chown}: {exc}", column=inst.column_of("--chown")) from None
    chmod = None
    if inst.chmod:
        try:
            chmod = parse_chmod(expand(inst, inst.chmod, env, escape))
        except ValueError as exc:
            raise inst.error(str(exc), column=inst.column_of("--chmod")) from None
    return CopyArguments(sources, dest, uid, gid, chmod, expand_excludes(inst, env, escape))


def destination_path(workdir: str, dest: str) -> str:
    """COPY's destination as an absolute, normalized path in the image (relative to WORKDIR)."""
    return posixpath.normpath(dest if dest.startswith("/") else posixpath.join(workdir, dest))


def copy_destination(state: StageState, inst: Copy, escape: str) -> str:
    """Where COPY ``inst`` writes: everything it writes is at or below this absolute path."""
    dest = expand(inst, inst.dest, state.expansion_env(), escape) or "./"
    return destination_path(state.workdir, dest)


def matched_source(source: SourceTree, text: str, *, parents: bool) -> list[tuple[str, str]]:
    """What one (expanded) COPY source names in ``source``: (path in the source, the part kept under the
    destination with ``--parents``), sorted. With ``--parents``, as BuildKit's dispatchCopy: the part before a
    ``/./`` pivot names the directories copied from (wildcards match one level each) and the rest is an include
    pattern below them (``**`` matches any number of levels), whose matches keep their path from the pivot on; a
    match inside another one is left to the walk of that one. --exclude applies inside what a source names,
    relative to it (fsutil)."""
    found = source.match(text, deep=parents)
    if not parents:
        return [(rel, rel) for rel in found]
    pivot = clean_source(text.split("/./", 1)[0]) if "/./" in text else ""
    depth = len(pivot.split("/")) if pivot else 0
    out: list[tuple[str, str]] = []
    for rel in found:
        if any(rel.startswith(taken + "/") for taken, _ in out):
            continue  # copied with the directory matched above it
        out.append((rel, "/".join(rel.split("/")[depth:])))
    return out


def expand_excludes(inst: Copy, env: Mapping[str, str], escape: str) -> tuple[IgnoreRule, ...]:
    """The --exclude patterns, expanded; matched against the paths inside each source, relative to it."""
    try:
        return parse_ignore("\n".join(expand(inst, e, env, escape) for e in inst.excludes))
    except ValueError as exc:
        raise inst.error(f"--exclude: {exc}", column=inst.column_of("--exclude")) from None


def copy_files(state: StageState, inst: Copy, source: SourceTree, escape: str, *, into: Path | None = None) -> None:
    """Carry out COPY ``inst`` from ``source`` into ``state.rootfs`` (or into the empty directory ``into``, for
    ``--link``: the layer then holds only what was copied, independent of the rootfs below it)."""
    root = into if into is not None else state.rootfs
    args = expand_copy_arguments(state, inst, escape)
    sources, dest, uid, gid, chmod, excludes = args.sources, args.dest, args.uid, args.gid, args.chmod, args.excludes

    matched: list[tuple[str, str]] = []  # (path in the source, the part kept under dest with --parents)
    for text in sources:
        found = matched_source(source, text, parents=inst.parents)
        if not found and has_glob(text):
            continue  # BuildKit's AllowEmptyWildcard: a pattern may match nothing
        if not found:
            where = source.description
            if isinstance(source, ContextSource) and source.context.rules:
                where += " (or excluded by .dockerignore)"
            raise inst.error(f"{text}: not found in {where}", column=inst.column_of(text))
        matched.extend(found)
    dest_is_dir = dest.endswith(("/", "/.")) or dest in (".", "..") or len(matched) > 1 or inst.parents
    plan = CopyPlan(uid, gid, chmod, destination_path(state.workdir, dest), dest_is_dir,
                    keep_owners=source.keeps_owners and not inst.chown)
    writer = Writer(root, plan, inst)
    try:
        if inst.parents and not matched:
            writer.ensure_dir(plan.dest, None)  # BuildKit's CreateDestPath: the destination even for no match
        _copy_matched(writer, source, matched, plan, inst, excludes, root)
        writer.finish()
    finally:
        writer.close()


def _copy_matched(writer: Writer, source: SourceTree, matched: list[tuple[str, str]], plan: CopyPlan, inst: Copy,
                  excludes: tuple[IgnoreRule, ...], root: Path) -> None:
    for rel, kept in matched:
        host = source.host_path(rel)
        try:
            st = host.lstat()
        except FileNotFoundError:
            raise inst.error(f"{rel}: not found in {source.description}") from None
        if stat.S_ISDIR(st.st_mode):
            top = posixpath.join(plan.dest, kept) if inst.parents and kept else plan.dest
            if inst.parents:
                writer.ensure_dir(posixpath.dirname(top), None)
            writer.ensure_dir(top, st)
            for below, child in source.walk(host, rel):
                if excludes and is_ignored(below, excludes):
                    continue
                writer.copy_entry(posixpath.join(top, below), child)
        else:
            target = plan.dest
            existing = resolve_in_root(root, plan.dest)
            if plan.dest_is_dir or existing.is_dir():
                writer.ensure_dir(plan.dest, None)
                name = kept if inst.parents else (posixpath.basename(rel) or host.name)
                target = posixpath.join(plan.dest, name)
            writer.copy_entry(target, host)


class Writer:
    """Writes entries into the rootfs; directory mtimes are applied last, deepest first. New regular files are
    written by a few threads (creating a file is mostly kernel time, serialised per directory only); anything else
    waits for them first."""

    def __init__(self, rootfs: Path, plan: CopyPlan, inst: Copy) -> None:
        self.rootfs = rootfs
        self.plan = plan
        self.inst = inst
        self.pool: ThreadPoolExecutor | None = None
        self.pending: dict[str, tuple[str, Future[None]]] = {}  # host path -> (path in the image, its write)
        self.dir_times: list[tuple[Path, int, int]] = []  # (host directory, inode, mtime_ns), applied at the end
        self.links: dict[tuple[int, int], Path] = {}  # (st_dev, st_ino) of a source with nlink > 1 -> its copy
        self.dirs: dict[str, Path] = {}  # in-image directory -> host directory, resolved during this copy

    def flush(self) -> None:
        """Wait for the files being written; the first error is raised."""
        pending, self.pending = self.pending, {}
        for path, future in pending.values():
            try:
                future.result()
            except OSError as exc:
                raise self._error(path, exc) from None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None

    def _error(self, path: str, exc: OSError) -> DockerfileError:
        return self.inst.error(f"cannot write {path}: {exc.strerror or exc}")

    def _parent(self, path: str) -> Path:
        """The host directory to write ``path`` into (made when missing). Directories this copy has already
        resolved are remembered: a walk writes parents first, so none of them can turn into a link meanwhile."""
        parent = posixpath.dirname(path)
        known = self.dirs.get(parent)
        if known is not None:
            return known
        self.ensure_dir(parent, None)
        host = resolve_in_root(self.rootfs, parent)
        self.dirs[parent] = host
        return host

    def ensure_dir(self, path: str, source: os.stat_result | None) -> Path:
        """Make directory ``path`` (and its parents) exist, as BuildKit's fsutil makes the directories a copy needs:
        a new one gets mode --chmod or else 0755 and owner --chown or else 0:0 (its testCopyChmod: ``COPY
        --chmod=770 foo /parent/sub/foo`` makes /parent/sub 0770; testCopyChownExistingDir: ``COPY --from=s /dir
        /dir`` makes /dir 0:0 whatever the source's owner). ``source`` is the directory whose contents are copied
        into ``path``: ``path`` then takes its mtime, new or not, and nothing else of it."""
        host = resolve_in_root(self.rootfs, path)
        if str(host) in self.pending:
            self.flush()
        if not host.is_dir():
            # the parents of where ``path`` leads: a link to a directory yet to be made (/symlink ->
            # ../tmp/symlink-target) is followed and its target made, as BuildKit does (testSymlinkDestination)
            inner = "/" + host.relative_to(self.rootfs).as_posix()
            if inner != "/":
                self._parent(inner)
            try:
                if os.path.lexists(host):
                    os.unlink(host)
                os.mkdir(host)
            except OSError as exc:
                raise self._error(path, exc) from None
            self._meta(host, self.plan.chmod.directory_mode if self.plan.chmod else 0o755, None)
        if source is not None:
            self.dir_times.append((host, host.lstat().st_ino, source.st_mtime_ns))
        return host

    def _meta(self, host: Path, mode: int, source: os.stat_result | None) -> None:
        os.lchown(host, *self.plan.owner(source))
        os.chmod(host, mode)  # after chown, which clears set-id bits

    def copy_entry(self, path: str, source: Path) -> None:
        st = source.lstat()
        parent = self._parent(path)
        host = parent / posixpath.basename(path)
        chmod = self.plan.chmod
        mode = chmod.apply(st.st_mode, is_dir=stat.S_ISDIR(st.st_mode)) if chmod else stat.S_IMODE(st.st_mode)
        if stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and str(host) not in self.pending \
                and not os.path.lexists(host):
            if self.pool is None:
                self.pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="copy")
            self.pending[str(host)] = (path, self.pool.submit(self._create_new, host, source, st, mode))
            return
        self.flush()
        try:
            if stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and self._create_file(host, source, st, mode):
                return
            if stat.S_ISDIR(st.st_mode):
                resolved = resolve_in_root(self.rootfs, path)
                if resolved.is_dir():  # a directory, or a link to one (merged /usr: /lib -> usr/lib): copy into it,
                    host = resolved  # keeping its mode and owner (fsutil copies a directory's metadata only when
                else:  # it creates it); it takes the source's mtime either way
                    if os.path.lexists(host):
                        os.unlink(host)
                    os.mkdir(host)
                    self._meta(host, mode, st)
                self.dir_times.append((host, host.lstat().st_ino, st.st_mtime_ns))
                return
            self._remove(host)
            self.forget(path)
            if stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(source), host)
                os.lchown(host, *self.plan.owner(st))
                os.utime(host, ns=(st.st_mtime_ns, st.st_mtime_ns), follow_symlinks=False)
                return
            if stat.S_ISSOCK(st.st_mode) and self.inst.from_stage is None:
                # a socket of the build context arrives as an empty regular file, as through BuildKit's context
                # transfer (testCopySocket)
                os.close(os.open(host, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
                self._meta(host, mode, st)
                os.utime(host, ns=(st.st_mtime_ns, st.st_mtime_ns))
                return
            if not stat.S_ISREG(st.st_mode):
                return  # fifos and devices are not copied, as BuildKit
            if st.st_nlink > 1:
                first = self.links.get((st.st_dev, st.st_ino))
                if first is not None:
                    os.link(first, host)  # hard links within one COPY stay links, as BuildKit keeps them
                    return
                self.links[(st.st_dev, st.st_ino)] = host
            with open(source, "rb") as src, open(os.open(host, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                                                         0o600), "wb") as dst:
                shutil.copyfileobj(src, dst, 1024 * 1024)
            self._meta(host, mode, st)
            os.utime(host, ns=(st.st_mtime_ns, st.st_mtime_ns))
        except OSError as exc:
            raise self._error(path, exc) from None

    def _create_file(self, host: Path, source: Path, st: os.stat_result, mode: int) -> bool:
        """The common case, in few system calls: a new regular file where nothing is yet, its data, owner, mode and
        mtime set through its descriptor. False when something is already at ``host`` (the caller replaces it)."""
        try:
            fd = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            return False
        try:
            with open(source, "rb") as src:
                offset = 0
                while offset < st.st_size:
                    sent = os.sendfile(fd, src.fileno(), offset, min(st.st_size - offset, 1 << 30))
                    if sent == 0:
                        break  # the source shrank while we copied: what was read is what the layer gets
                    offset += sent
            os.fchown(fd, *self.plan.owner(st))
            os.fchmod(fd, mode)  # after chown, which clears set-id bits
            os.utime(fd, ns=(st.st_mtime_ns, st.st_mtime_ns))
        finally:
            os.close(fd)
        return True

    def _create_new(self, host: Path, source: Path, st: os.stat_result, mode: int) -> None:
        if not self._create_file(host, source, st, mode):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(host))

    def forget(self, path: str) -> None:
        """``path`` is no longer a directory: drop it and what is below it from the resolved directories."""
        prefix = path.rstrip("/") + "/"
        for known in [d for d in self.dirs if d == path or d.startswith(prefix)]:
            del self.dirs[known]

    @staticmethod
    def _remove(host: Path) -> None:
        if host.is_dir() and not host.is_symlink():
            shutil.rmtree(host)
        elif os.path.lexists(host):
            os.unlink(host)

    def finish(self) -> None:
        """Directory mtimes, deepest first, on the directories written (never through a link made since)."""
        self.flush()
        for host, inode, mtime in sorted(self.dir_times, key=lambda item: -len(item[0].parts)):
            set_directory_metadata(self.rootfs, host, inode, mtime_ns=mtime)


def hash_copy_sources(state: StageState, inst: Copy, source: SourceTree, escape: str) -> str:
    """A digest of everything COPY/ADD would read from ``source`` (heredoc sources aside: their bodies are in the
    instruction), after ``--exclude``; see ``hash_source_paths``."""
    env = state.expansion_env()
    excludes = expand_excludes(inst, env, escape)
    texts = [expand(inst, text, env, escape) for text in inst.sources
             if not any(text.startswith(f"<<{h.name}") or text.lstrip("0123456789").startswith("<<")
                        for h in inst.heredocs)]
    return hash_source_paths(source, texts, excludes, parents=inst.parents)


def hash_source_paths(source: SourceTree, texts: Sequence[str], excludes: tuple[IgnoreRule, ...] = (), *,
                      parents: bool = False) -> str:
    """A digest of what the (expanded) source paths ``texts`` name in ``source``: each path (after .dockerignore
    and ``excludes``), its type, permission bits and content (or link target), directories walked. Owners and mtimes
    are left out: a fresh checkout has new mtimes, and a copy from the context sets owners itself. Sources that do
    not exist are hashed as missing (the step fails when it runs). Used for COPY/ADD sources and for the context
    files a ``RUN --mount=type=bind`` shows."""
    digest = hashlib.sha256()

    def add(name: str, host: Path) -> None:
        try:
            st = host.lstat()
        except OSError:
            digest.update(f"{name}\0missing\n".encode())
            return
        kind = stat.S_IFMT(st.st_mode)
        digest.update(f"{name}\0{kind:o}\0{stat.S_IMODE(st.st_mode):o}\0".encode())
        if stat.S_ISLNK(st.st_mode):
            digest.update(os.readlink(host).encode(errors="surrogateescape"))
        elif stat.S_ISREG(st.st_mode):
            with open(host, "rb") as f:
                while chunk := f.read(1024 * 1024):
                    digest.update(chunk)
        digest.update(b"\n")

    for text in texts:
        found = [rel for rel, _ in matched_source(source, text, parents=parents)]
        digest.update(f"source\0{text}\0{len(found)}\n".encode())
        for rel in found:
            host = source.host_path(rel)
            add(rel, host)
            if host.is_dir() and not host.is_symlink():
                for below, child in source.walk(host, rel):
                    if excludes and is_ignored(below, excludes):
                        continue
                    add(posixpath.join(rel, below), child)
    return "sha256:" + digest.hexdigest()


def copy_created_by(state: StageState, inst: Copy, escape: str) -> str:
    """BuildKit's history text for COPY: ``COPY [--parents] [--chown=X] [--chmod=Y] <sources> <dest> # buildkit``
    with expanded values; --from, --link and --exclude are not shown; heredoc sources as ``<<NAME``."""
    env = state.expansion_env()
    parts = [inst.keyword]
    if inst.parents:
        parts.append("--parents")
    if inst.chown:
        parts.append("--chown=" + expand(inst, inst.chown, env, escape))
    if inst.chmod:
        parts.append("--chmod=" + expand(inst, inst.chmod, env, escape))
    heredoc_words = {f"<<{h.name}" for h in inst.heredocs}
    sources = [expand(inst, s, env, escape) for s in inst.sources if not _is_heredoc_word(s, heredoc_words)]
    parts += sources + [f"<<{h.name}" for h in inst.heredocs]
    parts.append(expand(inst, inst.dest, env, escape))
    return " ".join(parts) + " # buildkit"


def _is_heredoc_word(word: str, markers: set[str]) -> bool:
    return word.lstrip("0123456789").startswith("<<") and bool(markers)
