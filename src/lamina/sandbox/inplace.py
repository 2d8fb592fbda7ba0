"""The ``inplace`` sandbox, Kaniko's way: the container's ``/`` is the root filesystem of the stage being built.

Only inside lamina's runtime image (the marker file ``/lamina/.lamina-runtime``, which the image's Dockerfile
creates), where lamina's own files live under ``/lamina`` and survive the build; anywhere else it is refused unless
``--force``, because the build replaces the files of ``/``. ``--sandbox auto`` picks it in lamina's image when
namespaces are not allowed (an unprivileged container): the container's own /proc, /sys and /dev are then RUN's,
which no chroot could show without mounts.

How a build goes (the executor does this when its runner is this one, see ``InplaceRoot``):

- What is never touched (``ignored_paths``): /lamina, /proc, /sys, /dev, /etc/hosts, /etc/resolv.conf, ... and
  every mountpoint, as Kaniko's ignore list; plus the build's own directories (the work directory with the blobs,
  the context, the Dockerfile, the blob and mount caches). Nothing below them is removed, unpacked over, or
  snapshotted (so none of it is in a layer).
- Every stage is built in ``/`` in turn. When a stage first needs its root filesystem (no cache, or the first step
  that misses), ``/`` is cleared (everything but the ignored paths; never crossing into another filesystem) and the
  stage's layers are unpacked into it. RUN executes the command directly (no chroot): a child process in its own
  process group with the user, groups, environment and working directory set, killed with its group when it ends.
  Snapshots scan ``/`` without the ignored paths.
- When a stage ends (but the last), its files are moved out of ``/`` into its work-directory rootfs (``clear_root``
  with ``into``: renames, the directories holding ignored paths recreated), so a later ``COPY --from`` or
  ``RUN --mount from=`` reads them there and a later stage ``FROM`` it moves them back (``move_into_root``) and
  unpacks only the layers it adds. Where the work directory is on another filesystem, they are removed instead and
  unpacked again from the layers when needed. What a stage writes into an ignored path is lost, as with Kaniko.
- lamina keeps running while the files of its interpreter may be gone: before the first clearing every module of
  lamina (and the lazily imported ones of the standard library it needs) is imported, and nothing re-executes
  Python afterwards. External programs are gone after the first clearing: the repositories ADD clones are cloned
  before it (the executor plans the build first), and lamina copies trees in Python (``rootfs/clone.py``).
- The files lamina's interpreter needs to start again are read into memory at the first clearing
  (``interpreter_files.py``); when the build ends (``InplaceRoot.restore``), ``/`` is cleared once more, as Kaniko's
  ``--cleanup``, and they are written back: the CI job can run lamina again, with ``/busybox``'s tools.

``RUN --mount`` targets are placed instead of mounted (see placed.py). Not supported here: ``--network=none`` (the
command shares the container's network), and a stage whose files must not see lamina's (``/lamina`` is visible to
RUN).
"""

from __future__ import annotations

import errno
import importlib
import logging
import os
import pkgutil
import shutil
import stat
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import lamina
from lamina.errors import SandboxError
from lamina.rootfs.removal import remove_empty_directories, remove_trees
from lamina.sandbox.base import RunSpec
from lamina.sandbox.chroot import run_group
from lamina.sandbox.detect import RUNTIME_MARKER
from lamina.sandbox.interpreter_files import InterpreterFiles, capture
from lamina.sandbox.placed import placed_mounts
from lamina.snapshot.scan import FileState

log = logging.getLogger(__name__)

ROOT = Path("/")
MOUNTINFO = Path("/proc/self/mountinfo")
LAMINA_HOME = "/lamina"
KANIKO_HOME = "/kaniko"  # Kaniko's paths in lamina's image (/kaniko/executor, /kaniko/.docker), as Kaniko keeps them
BUSYBOX_HOME = "/busybox"  # the static shell and tools of Kaniko's :debug image, which a CI job's script runs on
ALWAYS_IGNORED = (LAMINA_HOME, KANIKO_HOME, BUSYBOX_HOME, "/proc", "/sys", "/dev", "/etc/mtab", "/etc/resolv.conf", "/etc/hosts",
                  "/etc/hostname", "/var/run", "/run/secrets")


def check_allowed(*, force: bool, marker: Path = RUNTIME_MARKER) -> None:
    if marker.exists() or force:
        return
    raise SandboxError(f"--sandbox inplace makes / the build's root filesystem and runs only inside lamina's "
                       f"runtime image ({marker} is missing); pass --force to do it anyway")


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def ignored_paths(mountinfo: str, extra: Iterable[str] = ()) -> tuple[str, ...]:
    """The absolute paths a build of ``/`` must neither unpack over, nor snapshot, nor clean: the fixed list plus
    every mountpoint but ``/`` itself (``/proc/self/mountinfo``, field 5), sorted, without duplicates."""
    paths = set(ALWAYS_IGNORED) | {p for p in extra if p.startswith("/")}
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4:
            point = _unescape(fields[4])
            if point != "/":
                paths.add(point.rstrip("/"))
    return tuple(sorted(paths))


def is_ignored(path: str, ignored: Iterable[str]) -> bool:
    return any(path == p or path.startswith(p + "/") for p in ignored)


# standard modules imported lazily by lamina or its dependencies: loaded before / is cleared (see preload)
LAZY_MODULES = ("encodings.idna", "encodings.ascii", "encodings.latin_1", "encodings.utf_8", "encodings.punycode",
                "stringprep", "unicodedata", "_strptime", "gzip", "zlib", "bz2", "lzma", "netrc", "mimetypes",
                "http.client", "http.cookiejar", "email.parser", "email.feedparser", "json.decoder", "locale",
                "concurrent.futures.thread", "multiprocessing.pool", "ssl", "hmac", "secrets", "uuid", "shlex",
                "fnmatch", "glob", "zipfile", "tarfile", "traceback", "linecache", "tokenize", "difflib")


# the CI adapters' modules a build never imports (their adapter, if any, imported what it needs when it started),
# but ``lamina ci gitlab``, which imports the GitLab API client (python-gitlab, ~30 ms) after its build
ADAPTERS = "lamina.ci."
LATE_IMPORTER = "lamina.ci.gitlab"


def skipped_by_preload(name: str, loaded: Mapping[str, object]) -> bool:
    return name.startswith(ADAPTERS) and LATE_IMPORTER not in loaded


def preload() -> None:
    """Import every module of lamina (but the CI adapters' a build cannot need, see ``skipped_by_preload``) and the
    lazily imported standard ones, so nothing has to be read from the interpreter's files once ``/`` is cleared
    (lamina itself lives under /lamina, its interpreter may not)."""
    names = list(LAZY_MODULES)
    for module in pkgutil.walk_packages(lamina.__path__, "lamina."):
        if not module.name.endswith("__main__") and not skipped_by_preload(module.name, sys.modules):
            names.append(module.name)
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:  # an optional module missing is not fatal: say which, in case it is needed later
            log.debug("inplace: could not preload %s: %s", name, exc)


def _holds(path: str, ignored: Iterable[str]) -> bool:
    """Is an ignored path strictly below ``path``?"""
    prefix = path.rstrip("/") + "/"
    return any(p.startswith(prefix) for p in ignored)


def _entries(directory: Path, inner: str, ignored: tuple[str, ...], device: int
             ) -> Iterator[tuple[os.DirEntry[str], str, os.stat_result, bool]]:
    """The entries of ``directory`` (``inner`` as seen from the root) a clearing may touch, sorted: (entry, path,
    its lstat, is a directory); not the ignored paths, nor directories of another filesystem or mountpoints."""
    with os.scandir(directory) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        path = inner.rstrip("/") + "/" + entry.name
        if is_ignored(path, ignored):
            continue
        st = entry.stat(follow_symlinks=False)
        is_dir = stat.S_ISDIR(st.st_mode)
        if is_dir and (st.st_dev != device or os.path.ismount(entry.path)):
            continue
        yield entry, path, st, is_dir


def clear_root(ignored: tuple[str, ...], *, force: bool, root: Path = ROOT, marker: Path = RUNTIME_MARKER,
               into: Path | None = None) -> bool:
    """Empty ``root`` but for the ignored paths (absolute, as seen from ``root``) and the directories leading to
    them (kept, as their *holders*); never cross into another filesystem (a mountpoint missed by the ignore list
    stays too). With ``into``, each entry is moved there instead (a rename: the stage's tree stays whole at
    ``into``, holders recreated with their metadata), which is what ending a stage costs; True when everything was
    moved, False when ``into`` is on another filesystem and the rest was removed instead.
    Refused outside lamina's runtime image unless ``force``, as the runner is."""
    check_allowed(force=force, marker=marker)
    device = os.lstat(root).st_dev
    moving = [into is not None]
    victims: list[str] = []  # removed together at the end, several directories at once

    def clear(directory: Path, inner: str, dest: Path | None) -> None:
        for entry, path, st, is_dir in _entries(directory, inner, ignored, device):
            if is_dir and _holds(path, ignored):
                target = None
                if dest is not None and moving[0]:
                    target = dest / entry.name
                    target.mkdir(mode=0o700)
                clear(Path(entry.path), path, target)
                if target is not None:
                    os.chown(target, st.st_uid, st.st_gid)
                    os.chmod(target, stat.S_IMODE(st.st_mode))
                    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
                continue
            if dest is not None and moving[0]:
                try:
                    os.rename(entry.path, dest / entry.name)
                    continue
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise SandboxError(f"inplace: cannot move {path} out of /: {exc.strerror or exc}") from None
                    moving[0] = False  # another filesystem: the stage is removed, and unpacked again if needed
            victims.append(entry.path)

    clear(root, "/", into)
    for path, exc in remove_trees(victims):  # what could not go is still there: the rest still goes
        log.warning("inplace: cannot remove %s: %s", path, exc.strerror or exc)
    return into is None or moving[0]


def sweep_root(ignored: tuple[str, ...], present: set[str], scan: dict[str, FileState], *,
               root: Path = ROOT) -> int:
    """Remove from ``root`` what is not in ``present`` (host paths an unpack wrote or found already right), but the
    ignored paths and their holders, as found by ``scan`` (``scan_tree`` of ``root`` with the ignored paths
    excluded, taken after the unpack: no second walk), which is brought up to date: the removed entries leave it,
    the directories that lost entries are read again. A directory keeps the mtime its layers gave it. Returns how
    many entries were removed (counting a directory once). ``remove_trees`` never crosses into another filesystem.
    """
    prefix = str(root).rstrip("/") + "/"
    victims: list[str] = []
    gone: set[str] = set()
    for key in sorted(scan):  # a directory before what it holds
        parent = key.rpartition("/")[0]
        if parent in gone:
            gone.add(key)
            continue
        path = prefix + key
        if path in present or (scan[key].is_dir and _holds("/" + key, ignored)):
            continue
        gone.add(key)
        victims.append(key)
    if not victims:
        return 0
    touched = {key.rpartition("/")[0] for key in victims}  # directories that lose entries ("" is the root)
    root_mtime = os.lstat(root).st_mtime_ns
    failed: set[str] = set()
    for path, exc in remove_trees([prefix + key for key in victims]):
        log.warning("inplace: cannot remove %s: %s", path, exc.strerror or exc)
        failed.add(path)
    for key in gone:  # what could not be removed stays in the scan
        if not failed or not os.path.lexists(prefix + key):
            del scan[key]
    for key in touched:
        path = prefix + key if key else str(root)
        mtime = scan[key].mtime_ns if key else root_mtime
        os.utime(path, ns=(mtime, mtime), follow_symlinks=False)
        if key:
            scan[key] = FileState.from_stat(os.lstat(path))
    return len(victims)


def clear_except(ignored: tuple[str, ...], originals: dict[str, tuple[int, int]], *, root: Path = ROOT) -> None:
    """Empty ``root`` as ``clear_root`` does, but leave the files of ``originals`` still as they were recorded
    (path → inode, ctime): the runtime image's own files no build step changed. Directories left empty go."""
    device = os.lstat(root).st_dev
    files: list[str] = []
    directories: list[str] = []

    def collect(directory: Path, inner: str) -> None:
        for entry, path, st, is_dir in _entries(directory, inner, ignored, device):
            if is_dir:
                collect(Path(entry.path), path)
                if not _holds(path, ignored):
                    directories.append(entry.path)
            elif originals.get(entry.path) != (st.st_ino, st.st_ctime_ns):
                files.append(entry.path)

    collect(root, "/")
    for path, exc in remove_trees(files):
        log.warning("inplace: cannot remove %s: %s", path, exc.strerror or exc)
    remove_empty_directories(directories)


def move_into_root(source: Path, ignored: tuple[str, ...], *, root: Path = ROOT) -> None:
    """Put a tree moved out by ``clear_root(into=...)`` back into the (cleared) ``root``: entries renamed, the
    holders' metadata given back; ``source`` is removed."""

    def move(directory: Path, inner: str) -> None:
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            path = inner.rstrip("/") + "/" + entry.name
            dest = Path(str(root).rstrip("/") + path)
            if is_ignored(path, ignored):
                continue
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode) and os.path.isdir(dest) and not os.path.islink(dest):
                move(Path(entry.path), path)  # a holder: what it held is in place already
                os.chown(dest, st.st_uid, st.st_gid)
                os.chmod(dest, stat.S_IMODE(st.st_mode))
                os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))
                continue
            if os.path.lexists(dest):
                raise SandboxError(f"inplace: {path} is in the way of the stage moved back into /")
            os.rename(entry.path, dest)

    move(source, "/")
    shutil.rmtree(source, ignore_errors=True)


@dataclass
class InplaceRoot:
    """What the executor needs to build in ``/``: the paths to leave alone, ``--force``, and the files lamina's
    interpreter needs to start again (read before the first clearing, written back by ``restore``).

    ``restores``: can anything run in this container after lamina? Not when lamina is its first process (PID 1:
    the GitHub runner's ``docker run`` of the Action, a ``docker run IMAGE build ...``), since the container ends
    with it: then ``/`` is neither restored nor its interpreter kept, which saves reading and writing back a few
    hundred files. A CI job's shell (GitLab, Kaniko's :debug recipes) is the first process there, so lamina is not."""

    ignored: tuple[str, ...]
    force: bool = False
    restores: bool = True
    begun: bool = False  # has a stage been put in / (its first clearing done or started)?
    interpreter: InterpreterFiles | None = None
    originals: dict[str, tuple[int, int]] = field(default_factory=dict)  # see keep_originals

    @classmethod
    def create(cls, extra: Iterable[Path | None], *, force: bool, marker: Path = RUNTIME_MARKER,
               made: Iterable[Path | None] = ()) -> InplaceRoot:
        """Refused outside the runtime image; ``extra``: the build's own paths (work dir, context, Dockerfile);
        ``made``: its directories that may not exist yet (the blob and mount caches), created now."""
        check_allowed(force=force, marker=marker)
        try:
            mountinfo = MOUNTINFO.read_text()
        except OSError:
            mountinfo = ""
        paths = [os.path.abspath(p) for p in (*extra, *made) if p is not None]
        ignored = ignored_paths(mountinfo, [p for p in paths if p != "/"])
        for path in made:  # made now, before any snapshot, so the directories leading to them are in no layer
            if path is not None:
                os.makedirs(path, exist_ok=True)
        preload()
        return cls(ignored, force, restores=os.getpid() != 1)

    @property
    def exclude(self) -> frozenset[str]:
        """The ignored paths as ``scan_tree`` keys."""
        return frozenset(p.strip("/") for p in self.ignored if p.strip("/"))

    def begin(self) -> bool:
        """Before a stage is first put in ``/``: True (and lamina's interpreter files kept) when ``/`` still holds
        the runtime image's own files, which the stage's layers are then unpacked over (files already right are
        left in place: the runtime image and the stage often share a Debian base) before ``sweep`` removes the
        rest; False once ``/`` has been cleared."""
        if self.begun:
            return False
        check_allowed(force=self.force)
        self.begun = True
        if not self.restores:
            log.info("inplace: lamina is the container's first process, which ends with it: / is not restored "
                     "after the build")
            return True
        self.interpreter = capture(self.ignored)
        log.info("inplace: kept %d files (%.1f MB) of lamina's interpreter for after the build",
                 len(self.interpreter.entries), self.interpreter.size / 1e6)
        return True

    def sweep(self, present: set[str], scan: dict[str, FileState]) -> int:
        return sweep_root(self.ignored, present, scan)

    def keep_originals(self, paths: Iterable[str]) -> None:
        """The runtime image's own files a stage found already in place: ``restore`` leaves those still unchanged
        (same inode and ctime) where they are instead of removing them (which, in the container's lower layers,
        would write a whiteout for each)."""
        if not self.restores:
            return
        for path in paths:
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                self.originals[path] = (st.st_ino, st.st_ctime_ns)

    def clear(self, into: Path | None = None) -> bool:
        self.begin()  # the interpreter's files are kept before the first clearing
        return clear_root(self.ignored, force=self.force, into=into)

    def restore(self, aside: Path | None = None) -> None:
        """The build is over: clear what it left in ``/`` and write lamina's interpreter back, so that the CI job
        can run lamina again (with /busybox's tools, as Kaniko's :debug image). Nothing to do if ``/`` was never
        cleared. ``aside``: a new directory inside an ignored path where the built files are moved (renames, which
        cost nothing: they are this container's own files) instead of removed; its caller disposes of it."""
        if self.interpreter is None:
            return  # / was never cleared, or nothing runs after lamina (see ``restores``)
        started = time.monotonic()
        if self.originals:  # a stage was unpacked over the runtime image: what is still the image's own stays
            clear_except(self.ignored, self.originals)
        else:
            if aside is not None:
                aside.mkdir(mode=0o700)
            clear_root(self.ignored, force=self.force, into=aside)
        failed = self.interpreter.write_back()
        log.info("inplace: / cleared and lamina's interpreter written back in %.2f s", time.monotonic() - started)
        if failed:
            log.warning("inplace: could not write back %d file(s) of lamina's interpreter, such as %s",
                        len(failed), failed[0])
        self.interpreter = None

    def move_in(self, source: Path) -> None:
        move_into_root(source, self.ignored)


def is_root(path: Path) -> bool:
    return Path(os.path.abspath(path)) == ROOT


class InplaceRunner:
    name = "inplace"
    places_mounts = True

    def __init__(self, *, force: bool = False, marker: Path = RUNTIME_MARKER,
                 warn: Callable[[str], None] | None = None) -> None:
        check_allowed(force=force, marker=marker)
        self.warn: Callable[[str], None] = warn or (lambda text: log.warning("%s", text))

    def run(self, spec: RunSpec, output: Callable[[bytes], None]) -> int:
        """The command as a child of lamina in ``/``, without chroot and without re-executing Python (whose files
        may be gone): user, groups, working directory and environment set by ``subprocess``."""
        if not is_root(spec.rootfs):
            raise SandboxError("the inplace sandbox runs in / only (the executor gives it / when it builds with it)")
        if not os.path.isdir(spec.cwd):
            output(f"lamina: working directory {spec.cwd} does not exist\n".encode())
            return 126
        env = dict(str(item).partition("=")[::2] for item in spec.env)
        for name, path in spec.secret_env:
            env[name] = Path(path).read_text(encoding="utf-8", errors="surrogateescape")
        try:
            with placed_mounts(spec.rootfs, spec.mounts, stash=spec.scratch, warn=self.warn):
                return run_group(list(spec.argv), output, env=env, cwd=spec.cwd, user=spec.uid, group=spec.gid,
                                 extra_groups=list(spec.groups))
        except SandboxError as exc:
            cause = exc.__cause__
            if isinstance(cause, FileNotFoundError):
                output(f'lamina: exec: "{spec.argv[0]}": executable file not found in $PATH\n'.encode())
                return 127
            if isinstance(cause, PermissionError):
                output(f"lamina: exec: permission denied: {spec.argv[0]}\n".encode())
                return 126
            raise
