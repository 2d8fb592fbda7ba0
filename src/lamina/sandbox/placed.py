"""``RUN --mount`` where mount(2) is not allowed (the chroot and inplace sandboxes): each mount is *placed*.

For the run, each target shows what a mount would show; afterwards the rootfs is as it was, so the snapshot (taken
after this context ends) sees only what the command itself did, and the layer is the one a real mount gives:

* a cache directory is renamed into place and renamed back afterwards (a rename, not a copy: same filesystem; on
  another filesystem it is copied in and back, with a warning);
* a bind shows a copy of its source (reflinked where the filesystem can), or the source itself when it is already
  a copy made for this RUN; it is removed afterwards, so writes are discarded. Read-only cannot be enforced
  without a mount (root writes anyway): writes to a read-only bind are discarded too;
* a secret is its file, put in place (mode and owner set) and removed afterwards;
* an SSH agent's socket (one lamina relays from, see ``build/ssh_agents.py``) is linked into place (a hard link,
  else a symbolic one) and unlinked afterwards;
* a tmpfs is an empty directory (mode 1777), removed afterwards with what the command wrote into it (so a read-only
  one can be written, and the writes are thrown away, as for a read-only bind).

What the target held before is moved aside (into ``stash``, else next to it under a hidden name) and put back.
Directories created to reach a target (mount stubs) are removed afterwards when empty, as BuildKit does, and the
times of every directory this changed are restored unless the command itself changed that directory.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from lamina.errors import RootfsError, SandboxError
from lamina.rootfs.clone import clone_tree
from lamina.rootfs.paths import resolve_in_root
from lamina.sandbox.base import MountSpec

HIDDEN_PREFIX = ".lamina-hidden-"


def _is_bind_mounted_file(path: Path) -> bool:
    """A file bind-mounted over (ismount sees directories only): its device differs from its directory's."""
    try:
        return not path.is_dir() and path.lstat().st_dev != path.parent.lstat().st_dev
    except OSError:
        return False


def _remove(path: Path) -> None:
    if not os.path.lexists(path):
        return
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink()


def _move(source: Path, dest: Path, what: str, warn: Callable[[str], None]) -> None:
    """Rename ``source`` to ``dest``; across filesystems, copy and remove (saying so)."""
    try:
        os.rename(source, dest)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise SandboxError(f"RUN --mount: cannot move {what} into place: {exc.strerror or exc}") from None
    warn(f"warning: RUN --mount: {what} is on another filesystem than the root filesystem: copied, not moved "
         "(put it on the same filesystem, e.g. --mount-cache-dir under --work-dir, to make this a rename)")
    try:
        clone_tree(source, dest, what)
    except RootfsError as exc:
        raise SandboxError(f"RUN --mount: {exc}") from None
    _remove(source)


@dataclass
class _Placement:
    spec: MountSpec
    target: Path
    hidden: Path | None = None  # what the target held before, moved aside
    placed: bool = False
    source_mode: tuple[int, int, int] | None = None  # a cache directory's mode and owner, to remake it if lost


@dataclass
class _Placer:
    rootfs: Path
    stash: Path | None
    warn: Callable[[str], None]
    placements: list[_Placement] = field(default_factory=list)
    stubs: list[Path] = field(default_factory=list)
    times: dict[Path, tuple[int, int]] = field(default_factory=dict)  # directory -> (atime, mtime) before

    def remember(self, directory: Path) -> None:
        if directory not in self.times:
            try:
                st = directory.lstat()
            except OSError:
                return
            self.times[directory] = (st.st_atime_ns, st.st_mtime_ns)

    def target_of(self, spec: MountSpec) -> Path:
        try:
            target = resolve_in_root(self.rootfs, spec.target)
        except RootfsError as exc:
            raise SandboxError(f"RUN --mount target {spec.target}: {exc}") from None
        if target == self.rootfs:
            raise SandboxError(f"RUN --mount target {spec.target}: cannot replace the root directory")
        return target

    def make_parents(self, target: Path) -> None:
        missing: list[Path] = []
        parent = target.parent
        while not os.path.lexists(parent):
            missing.append(parent)
            parent = parent.parent
        if parent.is_symlink() or not parent.is_dir():
            raise SandboxError(f"RUN --mount target /{target.relative_to(self.rootfs)}: "
                               f"/{parent.relative_to(self.rootfs)} is not a directory")
        self.remember(parent)
        for directory in reversed(missing):
            directory.mkdir(mode=0o755)
            directory.chmod(0o755)
            self.stubs.append(directory)
            self.remember(directory)

    def hide(self, placement: _Placement) -> None:
        target = placement.target
        if not os.path.lexists(target):
            return
        self.remember(target.parent)
        token = secrets.token_hex(6)
        if os.path.ismount(target) or _is_bind_mounted_file(target):
            raise SandboxError(f"RUN --mount target /{target.relative_to(self.rootfs)} is a mountpoint of the "
                               "container lamina runs in, which a RUN --mount cannot replace without mounts; "
                               "choose another target")
        if self.stash is not None:
            aside = self.stash / f"hidden-{token}"
            try:
                os.rename(target, aside)
                placement.hidden = aside
                return
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise SandboxError(f"RUN --mount: cannot move {target} aside: {exc.strerror or exc}") from None
        aside = target.with_name(HIDDEN_PREFIX + token + "-" + target.name)
        os.rename(target, aside)
        placement.hidden = aside

    def place(self, spec: MountSpec) -> None:
        target = self.target_of(spec)
        placement = _Placement(spec, target)
        self.placements.append(placement)
        self.make_parents(target)
        self.remember(target.parent)
        self.hide(placement)
        name = f"/{target.relative_to(self.rootfs).as_posix()}"
        if spec.kind == "tmpfs":
            target.mkdir(mode=0o1777)
            target.chmod(0o1777)
        elif spec.source is None:
            raise SandboxError(f"RUN --mount target {name}: no source")
        elif spec.socket:
            try:
                os.link(spec.source, target)  # a socket cannot be copied: the same socket under a second name
            except OSError:  # another filesystem: a link to it, which / (the inplace sandbox) can follow
                os.symlink(spec.source, target)
        elif spec.cache:
            st = spec.source.lstat()
            placement.source_mode = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
            _move(spec.source, target, f"the cache directory for {name}", self.warn)
        elif spec.private:
            _move(spec.source, target, f"the source of {name}", lambda _text: None)
        else:
            try:
                clone_tree(spec.source, target, f"the source of {name}")
            except RootfsError as exc:
                raise SandboxError(f"RUN --mount: {exc}") from None
        placement.placed = True

    def undo(self, placement: _Placement) -> None:
        spec, target = placement.spec, placement.target
        if placement.placed:
            if spec.cache and spec.source is not None:
                if target.is_dir() and not target.is_symlink():
                    _move(target, spec.source, f"the cache directory for {spec.target}", self.warn)
                else:  # the command removed it: the cache starts again empty, as the command left it
                    _remove(target)
                    spec.source.mkdir()
                    if placement.source_mode is not None:
                        mode, uid, gid = placement.source_mode
                        os.chown(spec.source, uid, gid)
                        spec.source.chmod(mode)
            else:
                _remove(target)
        if placement.hidden is not None:
            _remove(target)
            os.rename(placement.hidden, target)

    def restore(self, untouched: set[Path]) -> None:
        for directory in reversed(self.stubs):
            try:
                directory.rmdir()
            except OSError:
                pass  # the command wrote into it: it stays, and so goes into the layer
        for directory, (atime, mtime) in self.times.items():
            if directory in untouched and os.path.lexists(directory):
                try:
                    os.utime(directory, ns=(atime, mtime), follow_symlinks=False)
                except OSError:
                    pass


def _mtimes(paths: Iterator[Path] | Sequence[Path]) -> dict[Path, int]:
    out: dict[Path, int] = {}
    for path in paths:
        try:
            out[path] = path.lstat().st_mtime_ns
        except OSError:
            pass
    return out


@contextmanager
def placed_mounts(rootfs: Path, mounts: Sequence[MountSpec], *, stash: Path | None,
                  warn: Callable[[str], None]) -> Iterator[None]:
    """Place ``mounts`` (parents first, as ``prepare_mounts`` orders them) in ``rootfs`` for the body; undo."""
    if not mounts:
        yield
        return
    placer = _Placer(rootfs, stash, warn)
    placed_times: dict[Path, int] = {}
    try:
        for spec in mounts:
            placer.place(spec)
        placed_times = _mtimes(list(placer.times))
        yield
    finally:
        # which directories the command left alone, judged before undoing changes their times again
        now = _mtimes(list(placed_times))
        untouched = {path for path, mtime in placed_times.items() if now.get(path) == mtime}
        if not placed_times:  # placing failed part way: put back everything it changed
            untouched = set(placer.times)
        errors: list[str] = []
        for placement in reversed(placer.placements):
            try:
                placer.undo(placement)
            except (OSError, SandboxError) as exc:
                errors.append(str(exc))
        placer.restore(untouched)
        if errors:
            raise SandboxError("RUN --mount: could not restore the root filesystem: " + "; ".join(errors))
