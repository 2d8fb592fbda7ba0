"""ADD: COPY, plus local tar archives extracted, http(s) URLs downloaded and Git repositories cloned.

Semantics follow BuildKit's Dockerfile frontend and file backend:

* A source is a Git repository when it is ``git://…``, ``ssh://…``, ``user@host:path`` or an ``http(s)://`` URL
  whose path ends in ``.git``; ``#ref[:subdir]`` picks a branch, tag or commit and a directory. The repository's
  tree is copied into the destination directory; ``.git`` is left out unless ``--keep-git-dir``.
* Any other ``http://`` or ``https://`` source is downloaded: the file is named after the URL path's last
  component (``__unnamed__`` when none), has mode 0600 (unless ``--chmod``) and the mtime of ``Last-Modified``
  (else 0), and is placed as COPY places a single file. It is not extracted unless ``--unpack=true``.
* Other sources come from the build context and behave as COPY, except that a source file that is a tar archive
  (plain, gzip, bzip2, xz or zstd, recognised by its content, never its name) is extracted into the destination,
  which is then a directory, unless ``--unpack=false``. Extracted entries keep the archive's modes, mtimes,
  symlinks and hard links, and its numeric owners unless ``--chown`` (which overrides them); ``--chmod`` does not
  apply to them; existing files are replaced and directories merged.
* ``--chown``, ``--chmod`` and ``--exclude`` work as for COPY (``--exclude`` filters sources, directory contents
  and a repository's tree; never an archive's entries).
* ``--checksum`` needs exactly one source, an http(s) URL (a digest of the content: sha256, sha384 or sha512) or a
  Git repository (a prefix of the commit's, or annotated tag's, hash).

Extraction is chrooted in spirit: every entry is resolved with ``resolve_in_root`` against the destination
directory, so ``..``, absolute names, and symlinks (from the archive or already in the image) can never lead a
write out of it; entry names that climb above it are refused.
"""

from __future__ import annotations

import bz2
import contextlib
import lzma
import os
import posixpath
import re
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast
from urllib.parse import parse_qs, urlsplit

import zstandard
from isal import igzip

from lamina.build import remote
from lamina.build.context import BuildContext, has_glob
from lamina.build.handlers.copy import (
    ContextSource,
    CopyPlan,
    RootfsSource,
    Writer,
    destination_path,
    expand_copy_arguments,
)
from lamina.build.handlers.metadata import expand
from lamina.build.state import StageState
from lamina.dockerfile.ignore import is_ignored
from lamina.dockerfile.instructions import Copy
from lamina.errors import RootfsError
from lamina.rootfs.paths import resolve_in_root, set_directory_metadata

CHUNK = 1 << 20
GIT_TIMEOUT = 900
_SCHEME = re.compile(r"^([a-zA-Z0-9]+)://")
_SCP_LIKE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*@[A-Za-z0-9][A-Za-z0-9.-]*:.+")

# -- archives ------------------------------------------------------------------------------------------------------

GZIP_MAGIC = b"\x1f\x8b"
BZIP2_MAGIC = b"BZh"
XZ_MAGIC = b"\xfd7zXZ\x00"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def compression_of(head: bytes) -> str:
    """``gzip``, ``bzip2``, ``xz``, ``zstd`` or ``none``, from the first bytes of a file."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(BZIP2_MAGIC):
        return "bzip2"
    if head.startswith(XZ_MAGIC):
        return "xz"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return "none"


@contextlib.contextmanager
def open_decompressed(path: Path) -> Iterator[IO[bytes]]:
    """``path``'s content, decompressed according to its magic bytes."""
    with contextlib.ExitStack() as stack:
        raw = stack.enter_context(open(path, "rb"))
        kind = compression_of(raw.read(6))
        raw.seek(0)
        stream: IO[bytes] = raw
        if kind == "gzip":
            gz = igzip.IGzipFile(fileobj=raw, mode="rb")  # type: ignore[no-untyped-call]
            stream = stack.enter_context(cast(IO[bytes], gz))
        elif kind == "bzip2":
            stream = stack.enter_context(bz2.BZ2File(raw, "rb"))
        elif kind == "xz":
            stream = stack.enter_context(lzma.LZMAFile(raw, "rb"))
        elif kind == "zstd":
            reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
            stream = stack.enter_context(cast(IO[bytes], reader))
        yield stream


_READ_ERRORS = (OSError, EOFError, tarfile.TarError, lzma.LZMAError, zstandard.ZstdError, ValueError)


def is_archive(path: Path) -> bool:
    """Whether ``path`` is a regular file holding a tar archive with at least one entry (as BuildKit decides)."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        with open_decompressed(path) as stream, \
                tarfile.open(fileobj=stream, mode="r|", encoding="utf-8", errors="surrogateescape") as tf:
            return tf.next() is not None
    except _READ_ERRORS:
        return False


def _entry_name(name: str) -> str | None:
    """An archive entry name relative to the extraction root ("" for the root itself), a leading ``/`` dropped as
    BuildKit drops it; None when the name climbs above the root."""
    stripped = name.lstrip("/")
    if not stripped:
        return ""
    cleaned = posixpath.normpath(stripped)
    if cleaned == ".." or cleaned.startswith("../"):
        return None
    return "" if cleaned == "." else cleaned


class ArchiveError(Exception):
    pass


@dataclass
class _Extractor:
    root: Path  # the host path of the destination directory (itself resolved inside the rootfs)
    owner: tuple[int, int] | None  # --chown; None keeps the archive's numeric owners

    def __post_init__(self) -> None:
        self.dir_times: dict[str, tuple[int, int]] = {}  # directory → (inode, mtime_ns), applied at the end
        self.is_root = os.geteuid() == 0

    def fail(self, name: str, reason: str) -> ArchiveError:
        return ArchiveError(f"entry {name!r}: {reason}")

    def parent_of(self, name: str, rel: str) -> Path:
        parent_rel = posixpath.dirname(rel)
        parent = resolve_in_root(self.root, parent_rel)
        missing: list[Path] = []
        probe = parent
        while probe != self.root and not os.path.lexists(probe):
            missing.append(probe)
            probe = probe.parent
        if not probe.is_dir() or probe.is_symlink():
            raise self.fail(name, f"{os.path.relpath(probe, self.root)!r} is not a directory")
        for directory in reversed(missing):
            os.mkdir(directory, 0o755)
            if self.is_root:
                os.lchown(directory, 0, 0)
            os.chmod(directory, 0o755)
        return parent

    def owner_of(self, member: tarfile.TarInfo) -> tuple[int, int]:
        return self.owner if self.owner is not None else (member.uid, member.gid)

    def apply(self, tf: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        rel = _entry_name(member.name)
        if rel is None:
            raise self.fail(member.name, "the path is outside the extraction directory")
        if not rel:
            return  # the root entry: the destination directory keeps its own metadata, as BuildKit
        parent = self.parent_of(member.name, rel)
        target = parent / posixpath.basename(rel)
        if os.path.commonpath([self.root, target]) != str(self.root) or target == self.root:
            raise self.fail(member.name, "the path is outside the extraction directory")
        if member.islnk():
            self.hardlink(member, target)
            return
        try:
            existing: int | None = os.lstat(target).st_mode
        except FileNotFoundError:
            existing = None
        if existing is not None and not (member.isdir() and stat.S_ISDIR(existing)):
            _remove(target)
        uid, gid = self.owner_of(member)
        mode = member.mode & 0o7777
        mtime = max(int(member.mtime), 0) * 1_000_000_000
        if member.isreg():
            source = tf.extractfile(member)
            if source is None:
                raise self.fail(member.name, "no data for a regular file")
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(source, out, CHUNK)
            self.chown(target, uid, gid)
            os.chmod(target, mode)
            os.utime(target, ns=(mtime, mtime))
        elif member.isdir():
            if existing is None or not stat.S_ISDIR(existing):
                os.mkdir(target, 0o700)
            self.chown(target, uid, gid)
            os.chmod(target, mode)
            self.dir_times[str(target)] = (os.lstat(target).st_ino, mtime)
        elif member.issym():
            os.symlink(member.linkname, target)
            self.chown(target, uid, gid)
            os.utime(target, ns=(mtime, mtime), follow_symlinks=False)
        elif member.isfifo() or member.ischr() or member.isblk():
            kind = stat.S_IFIFO if member.isfifo() else stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            device = os.makedev(member.devmajor, member.devminor) if not member.isfifo() else 0
            try:
                os.mknod(target, kind | mode, device)
            except PermissionError:
                return  # not permitted here (no CAP_MKNOD): left out
            self.chown(target, uid, gid)
            os.utime(target, ns=(mtime, mtime), follow_symlinks=False)
        else:
            raise self.fail(member.name, f"unsupported entry type {member.type!r}")

    def hardlink(self, member: tarfile.TarInfo, target: Path) -> None:
        link_rel = _entry_name(member.linkname)
        if link_rel is None or not link_rel:
            raise self.fail(member.name, f"hard link target {member.linkname!r} is outside the extraction directory")
        source = resolve_in_root(self.root, link_rel, follow_final=False)
        if not os.path.lexists(source):
            raise self.fail(member.name, f"hard link target {member.linkname!r} does not exist")
        if stat.S_ISDIR(os.lstat(source).st_mode):
            raise self.fail(member.name, f"hard link target {member.linkname!r} is a directory")
        if source == target:
            return
        if os.path.lexists(target):
            _remove(target)
        os.link(source, target, follow_symlinks=False)
        uid, gid = self.owner_of(member)
        self.chown(target, uid, gid)
        if not os.path.islink(target):
            mtime = max(int(member.mtime), 0) * 1_000_000_000
            os.chmod(target, member.mode & 0o7777)
            os.utime(target, ns=(mtime, mtime))

    def chown(self, path: Path, uid: int, gid: int) -> None:
        if self.is_root:
            os.lchown(path, uid, gid)

    def finish(self) -> None:
        """Directory mtimes, deepest first, on the directories extracted (never through a link made since)."""
        for path in sorted(self.dir_times, key=lambda p: -p.count("/")):
            inode, mtime = self.dir_times[path]
            set_directory_metadata(self.root, Path(path), inode, mtime_ns=mtime)


def extract_archive(archive: Path, root: Path, *, owner: tuple[int, int] | None = None) -> None:
    """Extract the tar ``archive`` (any supported compression) into the directory ``root``, safely.

    Raises ``ArchiveError`` naming the entry when an entry cannot be placed, or the archive is corrupt."""
    root = Path(os.path.abspath(root))
    if Path(os.path.realpath(root)) == Path("/"):
        raise ArchiveError("refusing to extract over the host's /")
    extractor = _Extractor(root, owner)
    name = ""
    try:
        with open_decompressed(archive) as stream, \
                tarfile.open(fileobj=stream, mode="r|", encoding="utf-8", errors="surrogateescape") as tf:
            while (member := tf.next()) is not None:
                name = member.name
                extractor.apply(tf, member)
                cast(Any, tf).members.clear()  # TarFile remembers every member; an archive may have millions
        extractor.finish()
    except ArchiveError:
        raise
    except RootfsError as exc:
        raise ArchiveError(f"entry {name!r}: {exc}") from None
    except _READ_ERRORS as exc:
        where = f"entry {name!r}: " if name else ""
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ArchiveError(f"{where}{detail}") from None


def _remove(path: Path) -> None:
    if stat.S_ISDIR(os.lstat(path).st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


# -- sources -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GitSource:
    url: str  # as written, for messages
    remote: str  # what git clones (no fragment, no BuildKit query)
    ref: str | None
    subdir: str
    checksum: str | None  # from ?checksum= / ?commit=
    keep_git_dir: bool | None  # from ?keep-git-dir=
    submodules: bool


def parse_git_source(src: str) -> GitSource | None:
    """The Git repository ``src`` names, or None when ``src`` is not a Git source (BuildKit's rules)."""
    if src.startswith(("./", "../")):
        return None
    match = _SCHEME.match(src)
    if match:
        scheme = match.group(1).lower()
        if scheme not in ("http", "https", "git", "ssh"):
            return None
        parts = urlsplit(src)
        if scheme in ("http", "https") and not parts.path.endswith(".git"):
            return None
        base = parts._replace(fragment="", query="").geturl()
        query, fragment = parts.query, parts.fragment
    elif _SCP_LIKE.match(src):
        base, _, fragment = src.partition("#")
        base, _, query = base.partition("?")
    else:
        return None
    ref, _, subdir = fragment.partition(":") if fragment else ("", "", "")
    checksum: str | None = None
    keep: bool | None = None
    submodules = True
    for key, values in parse_qs(query, keep_blank_values=True).items():
        value = values[-1]
        if key == "ref":
            ref = value
        elif key == "tag":
            ref = value if value.startswith("refs/tags/") else "refs/tags/" + value
        elif key == "branch":
            ref = value if value.startswith("refs/heads/") else "refs/heads/" + value
        elif key == "subdir":
            subdir = value
        elif key in ("checksum", "commit"):
            checksum = value
        elif key == "keep-git-dir":
            keep = value.lower() in ("", "1", "t", "true")
        elif key == "submodules":
            submodules = value.lower() in ("", "1", "t", "true")
        else:
            raise ValueError(f"unexpected query {key!r} in the Git URL {src}")
    if checksum and not ref:
        ref = checksum
    if ref and ref.startswith("-"):
        raise ValueError(f"invalid Git ref {ref!r} in {src}")
    return GitSource(src, base, ref or None, subdir, checksum, keep, submodules)


def is_http_source(src: str) -> bool:
    return src.lower().startswith(("http://", "https://")) and parse_git_source(src) is None


class GitError(Exception):
    pass


def _git(args: list[str], cwd: Path | None = None) -> str:
    # Only network transports, for the repository and its submodules alike (no file://, no ext::).
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ALLOW_PROTOCOL": "http:https:git:ssh", "LC_ALL": "C"}
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=GIT_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise GitError(f"git {args[0]} timed out after {GIT_TIMEOUT}s") from None
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        raise GitError(lines[-1] if lines else f"git {args[0]} exited {proc.returncode}")
    return proc.stdout.strip()


@dataclass(frozen=True)
class Clone:
    """A fetched repository: the directory to copy (its subdir) and the commit checked out."""

    tree: Path
    commit: str


def clone_git(source: GitSource, workdir: Path, *, keep_git_dir: bool, checksum: str | None) -> Clone:
    """Fetch ``source`` into ``workdir/repo`` with the git CLI; return the directory to copy (its subdir).

    Tries a shallow fetch of the ref first, then a plain fetch (dumb HTTP servers cannot do shallow), then every
    branch and tag. ``checksum`` must be a prefix of the fetched commit's (or annotated tag's) hash."""
    if shutil.which("git") is None:
        raise GitError("git is not installed (apt-get install git)")
    repo = workdir / "repo"
    _git(["init", "-q", str(repo)])
    _git(["remote", "add", "origin", source.remote], cwd=repo)
    wanted = source.ref or "HEAD"
    fetched: str | None = None
    errors: list[str] = []
    for extra in (["--depth=1"], []):
        try:
            _git(["fetch", "-q", "--no-tags", *extra, "origin", wanted], cwd=repo)
            fetched = "FETCH_HEAD"
            break
        except GitError as exc:
            errors.append(str(exc))
    if fetched is None and source.ref:
        _git(["fetch", "-q", "--tags", "origin", "+refs/heads/*:refs/remotes/origin/*"], cwd=repo)
        for candidate in (source.ref, f"refs/remotes/origin/{source.ref.removeprefix('refs/heads/')}",
                          f"refs/tags/{source.ref}"):
            try:
                _git(["rev-parse", "--verify", "-q", f"{candidate}^{{commit}}"], cwd=repo)
            except GitError:
                continue
            fetched = candidate
            break
    if fetched is None:
        raise GitError(f"cannot fetch {wanted}: {errors[-1] if errors else 'not found'}")
    named = _git(["rev-parse", fetched], cwd=repo)
    commit = _git(["rev-parse", f"{fetched}^{{commit}}"], cwd=repo)
    if checksum:
        want = checksum.lower()
        if not (commit.startswith(want) or named.startswith(want)):
            got = commit if named == commit else f"{named} or {commit}"
            raise GitError(f"expected checksum to match {checksum}, got {got}")
    _git(["-c", "advice.detachedHead=false", "checkout", "-q", commit], cwd=repo)
    if source.submodules and (repo / ".gitmodules").exists():
        _git(["submodule", "update", "-q", "--init", "--recursive"], cwd=repo)
    if not keep_git_dir:
        for dirpath, dirnames, filenames in os.walk(repo, topdown=True):
            for name in (".git",):
                path = Path(dirpath, name)
                if name in dirnames:
                    shutil.rmtree(path)
                    dirnames.remove(name)
                elif name in filenames:
                    path.unlink()
    tree = resolve_in_root(repo, source.subdir) if source.subdir else repo
    if not tree.is_dir():
        raise GitError(f"{source.subdir!r} is not a directory in the repository")
    return Clone(tree, commit)


# -- ADD -----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Item:
    kind: str  # "local", "http" or "git"
    text: str  # the source as expanded; for local: the context-relative path
    git: GitSource | None = None


@dataclass(frozen=True)
class GitFetch:
    """One clone an ADD makes: the repository, and what the instruction asks of it."""

    source: GitSource
    keep_git_dir: bool
    checksum: str | None


def git_fetch_of(inst: Copy, git: GitSource, checksum: str | None) -> GitFetch:
    """The clone for ``git`` as ADD ``inst`` (with its expanded ``--checksum``) wants it."""
    keep = inst.keep_git_dir
    if git.keep_git_dir is not None:
        if inst.keep_git_dir and not git.keep_git_dir:
            raise inst.error("inconsistent keep-git-dir configuration")
        keep = git.keep_git_dir
    if checksum and git.checksum and checksum != git.checksum:
        raise inst.error(f"checksum mismatch {checksum!r} != {git.checksum!r}")
    return GitFetch(git, bool(keep), checksum or git.checksum)


def git_fetches(state: StageState, inst: Copy, escape: str) -> list[GitFetch]:
    """The clones ADD ``inst`` will make, known before it runs (the inplace sandbox makes them before it clears
    ``/``, while the ``git`` program is still there)."""
    args = expand_copy_arguments(state, inst, escape)
    checksum = expand(inst, inst.checksum, state.expansion_env(), escape) if inst.checksum else None
    out = []
    for text in args.sources:
        try:
            git = parse_git_source(text)
        except ValueError:
            continue  # the step itself reports it
        if git is not None:
            out.append(git_fetch_of(inst, git, checksum))
    return out


def git_material_uri(source: GitSource) -> str:
    """A repository as BuildKit names it in provenance: its URL without credentials, ``#`` and the ref."""
    url = remote.redact(source.remote)
    return f"{url}#{source.ref}" if source.ref else url


def fetch_git(fetch: GitFetch, workdir: Path) -> Clone:
    return clone_git(fetch.source, workdir, keep_git_dir=fetch.keep_git_dir, checksum=fetch.checksum)


def add_files(state: StageState, inst: Copy, context: BuildContext, escape: str, scratch: Path, *,
              into: Path | None = None, prefetched: Mapping[GitFetch, Clone | GitError] | None = None,
              materials: list[tuple[str, str]] | None = None) -> None:
    """Carry out ADD ``inst`` into ``state.rootfs`` (or into the empty directory ``into``, for ``--link``, as
    ``copy_files`` does); downloads and clones go below ``scratch``, but for the clones in ``prefetched`` (made
    before the step, see ``git_fetches``). What was fetched goes to ``materials`` (for provenance): each URL
    (without credentials or query) with the digest of what was downloaded, each repository with its commit."""
    if inst.heredocs:
        raise inst.error("a heredoc is not supported yet in ADD")
    env = state.expansion_env()
    root = into if into is not None else state.rootfs
    args = expand_copy_arguments(state, inst, escape)
    sources, dest, uid, gid, chmod, excludes = args.sources, args.dest, args.uid, args.gid, args.chmod, args.excludes
    checksum = expand(inst, inst.checksum, env, escape) if inst.checksum else None

    items: list[_Item] = []
    source_tree = ContextSource(context)
    for text in sources:
        try:
            git = parse_git_source(text)
        except ValueError as exc:
            raise inst.error(str(exc)) from None
        if git is not None:
            items.append(_Item("git", text, git))
        elif is_http_source(text):
            items.append(_Item("http", text))
        else:
            found = source_tree.match(text)
            if not found and has_glob(text):
                continue  # BuildKit's AllowEmptyWildcard, as COPY
            if not found:
                where = source_tree.description + (" (or excluded by .dockerignore)" if context.rules else "")
                raise inst.error(f"{text}: not found in {where}", column=inst.column_of(text))
            items.extend(_Item("local", rel) for rel in found)
    if checksum:
        if len(sources) != 1:
            raise inst.error("--checksum can't be specified for multiple sources")
        if items[0].kind == "local":
            raise inst.error(f"--checksum requires an HTTP(S) or Git source, not {sources[0]}")
        if items[0].kind == "http":
            try:
                checksum = remote.parse_checksum(checksum)
            except ValueError as exc:
                raise inst.error(f"--checksum: {exc}") from None

    dest_is_dir = dest.endswith(("/", "/.")) or dest in (".", "..") or len(items) > 1
    plan = CopyPlan(uid, gid, chmod, destination_path(state.workdir, dest), dest_is_dir)
    writer = Writer(root, plan, inst)
    owner = (uid, gid) if inst.chown else None
    try:
        for index, item in enumerate(items):
            if item.kind == "local":
                host = source_tree.host_path(item.text)
                try:
                    st = host.lstat()
                except FileNotFoundError:
                    raise inst.error(f"{item.text}: not found in {source_tree.description}") from None
                if stat.S_ISDIR(st.st_mode):
                    writer.ensure_dir(plan.dest, st)
                    for below, child in source_tree.walk(host, item.text):
                        if excludes and is_ignored(below, excludes):
                            continue
                        writer.copy_entry(posixpath.join(plan.dest, below), child)
                elif inst.unpack is not False and is_archive(host):
                    _extract(inst, writer, plan, host, item.text, owner)
                else:
                    _place_file(root, writer, plan, host, posixpath.basename(item.text) or host.name)
            elif item.kind == "http":
                try:
                    got = remote.download(item.text, scratch / f"http-{index}", checksum=checksum)
                except remote.DownloadError as exc:
                    raise inst.error(str(exc)) from None
                if materials is not None:
                    materials.append((remote.redact(item.text), got.digest))
                if inst.unpack is True and is_archive(got.path):
                    _extract(inst, writer, plan, got.path, remote.redact(item.text), owner)
                else:
                    _place_file(root, writer, plan, got.path, got.path.name)
            else:
                assert item.git is not None
                fetch = git_fetch_of(inst, item.git, checksum)
                try:
                    done = (prefetched or {}).get(fetch)
                    if isinstance(done, GitError):
                        raise done
                    if done is None:
                        work = scratch / f"git-{index}"
                        work.mkdir(parents=True, exist_ok=True)
                        done = fetch_git(fetch, work)
                    tree = done.tree
                except GitError as exc:
                    raise inst.error(f"cannot add {remote.redact(item.text)}: {exc}") from None
                if materials is not None:
                    materials.append((git_material_uri(item.git), f"sha1:{done.commit}"))
                writer.ensure_dir(plan.dest, None)
                for below, child in RootfsSource(tree, item.text).walk(tree, ""):
                    if excludes and is_ignored(below, excludes):
                        continue
                    writer.copy_entry(posixpath.join(plan.dest, below), child)
        writer.finish()
    finally:
        writer.close()


def _place_file(root: Path, writer: Writer, plan: CopyPlan, host: Path, name: str) -> None:
    """One file, where COPY would put it: ``dest`` itself, or ``dest/name`` when dest is a directory."""
    target = plan.dest
    if plan.dest_is_dir or resolve_in_root(root, plan.dest).is_dir():
        writer.ensure_dir(plan.dest, None)
        target = posixpath.join(plan.dest, name)
    writer.copy_entry(target, host)


def _extract(inst: Copy, writer: Writer, plan: CopyPlan, archive: Path, what: str,
             owner: tuple[int, int] | None) -> None:
    root = writer.ensure_dir(plan.dest, None)
    writer.flush()  # the archive may replace files being written
    try:
        extract_archive(archive, root, owner=owner)
    except ArchiveError as exc:
        raise inst.error(f"cannot extract {what} into {plan.dest}: {exc}") from None
    except OSError as exc:
        raise inst.error(f"cannot extract {what} into {plan.dest}: {exc.strerror or exc}") from None

