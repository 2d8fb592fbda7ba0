"""A stage's root filesystem as an overlay: its layers as one read-only EROFS image below, a writable upper
directory per step on top (root only, with loop devices, EROFS and overlayfs in the kernel; ``mounts.py`` makes
and tracks the mounts and says when they are not possible).

Why: unpacking a base image creates one inode per entry, and on a busy ext4 that is most of a build's time (here
~0.1-0.3 ms each, ~7,000 for Debian). Writing the layers into one image file creates none; the kernel then reads
the files on demand. Every step still sees a plain directory (the merged mount), so COPY and RUN are unchanged;
what a step writes lands in its upper directory, and that is all its snapshot has to look at.

When this is unavailable, ``StageOverlay.create`` returns None and the caller unpacks the layers into the
directory instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from lamina.errors import RootfsError
from lamina.rootfs.erofs import OPAQUE_XATTR, ImageWriter, UnsupportedContent
from lamina.rootfs.mounts import LayerMounts, is_full
from lamina.rootfs.tarstream import TarError, TarReader
from lamina.rootfs.tree import LayerTree
from lamina.rootfs.unpack import open_layer_stream
from lamina.sandbox.detect import effective_capabilities
from lamina.snapshot.diff import Changes, diff_scans
from lamina.snapshot.scan import FileState, has_capability, scan_tree
from lamina.syscalls import CAP_MKNOD

log = logging.getLogger(__name__)



@dataclass
class StageOverlay:
    """A stage's root filesystem as a stack: read-only lowers (the image it starts from, as one EROFS image, then
    what each executed step changed) under the upper directory of the step being run; ``rootfs`` is the merged
    mount every step works on.

    A step starts on a fresh, empty upper: what it changed is exactly what is in that upper (``changes`` compares
    those paths between the view of the lowers and the merged mount), so no step walks the whole tree. ``commit``
    then stacks the upper, as it is, as a new lower. Uppers live in memory (a tmpfs each) while the build's
    memory budget (``LayerMounts.memory_left``) lasts, else on disk: creating a file on a tmpfs takes microseconds,
    on a busy disk a fraction of a millisecond, and a step that copies thousands of files (COPY, a RUN that
    installs packages, a chmod -R that copies them up) is mostly that. A step that fills its tmpfs runs again on
    disk (``memory_full``, ``retry_on_disk``). Between steps the merged mount stays (with an empty upper), so other
    stages can read it."""

    mounts: LayerMounts
    home: Path  # holds every part: lower images and their mountpoints, uppers, work dirs, the view
    rootfs: Path
    lowers: list[str] = field(default_factory=list)  # names under home, bottom first
    upper: str = ""  # name of the current upper directory under home
    tmpfs: str = ""  # the tmpfs holding the current upper ("" when it is on disk)
    serial: int = 0

    MAX_LOWERS = 400  # overlayfs takes up to 500
    MIN_MEMORY_UPPER = 64 << 20  # below this much budget left, uppers go to disk

    @classmethod
    def create(cls, mounts: LayerMounts, rootfs: Path, layers: Sequence[tuple[Path, str]],
               description: str) -> StageOverlay | None:
        """Mount ``layers`` ((blob path, description), bottom first) as one image under ``rootfs`` (an empty
        directory). None when overlays are off here (the caller unpacks instead); RootfsError naming the layer
        and the entry for a broken or hostile layer."""
        if not mounts.enabled:
            return None
        stack = cls(mounts, rootfs.parent, rootfs)
        image = stack.home / "base.erofs"
        try:
            root = write_image(image, layers)
        except UnsupportedContent as exc:
            log.info("%s: unpacking instead of mounting: %s", description, exc)
            image.unlink(missing_ok=True)
            return None
        try:
            stack.mount_image(image, "base")
            # an upper on disk first, even when steps will get memory ones: overlayfs refuses some filesystems as
            # upper (an overlayfs: the root of a container), and the memory budget may run out in a later step
            stack.new_upper(root, on_disk=True)
            stack.mount_merged()
            if mounts.memory_left >= stack.MIN_MEMORY_UPPER:
                stack._restart(keep_upper=False)
        except RootfsError as exc:
            for point in reversed(list(mounts.points)):
                if point == stack.home or stack.home in point.parents:
                    mounts.unmount(point)
            image.unlink(missing_ok=True)
            mounts.disable(str(exc), description)
            return None
        return stack

    # -- parts ------------------------------------------------------------------------------------------------------

    def _name(self, prefix: str) -> str:
        self.serial += 1
        return f"{prefix}{self.serial}"

    def mount_image(self, image: Path, name: str) -> None:
        (self.home / name).mkdir(exist_ok=True)
        self.mounts.mount(["-t", "erofs", "-o", "ro,loop", str(image)], self.home / name)
        self.lowers.append(name)

    def new_upper(self, root: tuple[int, int, int, int], *, on_disk: bool = False) -> None:
        """A fresh upper (and work directory): on a tmpfs as large as the memory budget left, else on disk. It
        carries the root directory's (mode, uid, gid, mtime_ns): an overlay's root takes the upper's attributes."""
        if not on_disk and self.mounts.memory_left >= self.MIN_MEMORY_UPPER:
            self.tmpfs = self._name("t")
            (self.home / self.tmpfs).mkdir()
            options = f"mode=0700,size={self.mounts.memory_left}"
            self.mounts.mount_fs("tmpfs", options, self.home / self.tmpfs, home=self.home, relative=options)
            self.upper = f"{self.tmpfs}/upper"
            (self.home / self.tmpfs / "work").mkdir()
        else:
            self.tmpfs = ""
            self.upper = self._name("u")
        upper = self.home / self.upper
        upper.mkdir()
        mode, uid, gid, mtime_ns = root
        os.chown(upper, uid, gid)
        os.chmod(upper, mode)
        os.utime(upper, ns=(mtime_ns, mtime_ns))

    def _work(self) -> str:
        if self.tmpfs:
            return f"{self.tmpfs}/work"
        (self.home / "work").mkdir(exist_ok=True)
        return "work"

    def mount_merged(self) -> None:
        lowers = ":".join(reversed(self.lowers))  # overlayfs lists the top layer first
        # explicit, whatever the kernel's defaults: a renamed lower directory is copied (no redirect), a changed file
        # is copied whole (no metacopy), hard links are not tracked across copy-up (no index), so that the upper
        # holds every path a step changed, with its content
        options = (f"lowerdir={lowers},upperdir={self.upper},workdir={self._work()},xino=on,redirect_dir=off,"
                   "metacopy=off,index=off")
        self.mounts.mount_fs("overlay", self._absolute(options), self.rootfs, home=self.home, relative=options)
        view = self.view
        if view in self.mounts.points:
            self.mounts.unmount(view)
        # the lowers alone, read-only: what the paths of the upper were before the step (an empty directory on top:
        # overlayfs wants two lowers at least without an upper)
        view.mkdir(exist_ok=True)
        (self.home / "empty").mkdir(exist_ok=True)
        options = f"lowerdir=empty:{lowers},xino=on"
        self.mounts.mount_fs("overlay", self._absolute(options), view, home=self.home, relative=options)

    def _absolute(self, options: str) -> str:
        """Overlay options with the directories under home as absolute paths."""
        out = []
        for option in options.split(","):
            name, eq, value = option.partition("=")
            if eq and name in ("lowerdir", "upperdir", "workdir"):
                value = ":".join(f"{self.home}/{part}" for part in value.split(":"))
            out.append(f"{name}{eq}{value}")
        return ",".join(out)

    @property
    def view(self) -> Path:
        return self.home / "view"

    def _root_attributes(self) -> tuple[int, int, int, int]:
        st = os.lstat(self.rootfs)
        return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns

    def _upper_is_empty(self) -> bool:
        with os.scandir(self.home / self.upper) as it:
            return next(it, None) is None

    def _drop_upper(self) -> None:
        if self.tmpfs:
            self.mounts.unmount(self.home / self.tmpfs)
            shutil.rmtree(self.home / self.tmpfs, ignore_errors=True)
        else:
            shutil.rmtree(self.home / self.upper, ignore_errors=True)

    def _restart(self, *, keep_upper: bool, on_disk: bool = False, image: Path | None = None) -> None:
        """Unmount the merged view; stack the upper as a lower (``keep_upper``) or drop it; stack ``image`` (an
        EROFS image under home) on top; mount again on a fresh upper."""
        root = self._root_attributes()
        self.mounts.unmount(self.rootfs)
        if keep_upper:
            self.lowers.append(self.upper)
            if self.tmpfs:
                used = os.statvfs(self.home / self.tmpfs)
                self.mounts.memory_left -= (used.f_blocks - used.f_bfree) * used.f_frsize
        else:
            self._drop_upper()
        if image is not None:
            self.mount_image(image, image.stem)
        self.new_upper(root, on_disk=on_disk)
        self.mount_merged()

    # -- steps ------------------------------------------------------------------------------------------------------

    def memory_full(self) -> bool:
        """Did the step fill its in-memory upper (the caller then runs it again: ``retry_on_disk``)?"""
        return bool(self.tmpfs) and is_full(self.home / self.tmpfs)

    def retry_on_disk(self) -> None:
        """Drop what the step wrote in memory and give it a disk upper; no more memory uppers in this build."""
        self.mounts.memory_left = 0
        self._restart(keep_upper=False, on_disk=True)

    def changes(self) -> Changes:
        """What the step changed: the paths in its upper, compared between the lowers' view and the merged mount
        (the same comparison as a whole-tree scan, on the only paths that can differ)."""
        upper = self.home / self.upper
        keys: list[str] = []
        directories: list[str] = []
        pending = [""]
        while pending:
            directory = pending.pop()
            with os.scandir(upper / directory if directory else upper) as it:
                for entry in it:
                    key = f"{directory}/{entry.name}" if directory else entry.name
                    keys.append(key)
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(key)
                        directories.append(key)
        # a directory removed and made again is opaque in the upper: what the lowers had below it is gone too
        for key in [key for key in directories if _opaque(upper / key)]:
            keys.extend(scan_tree(self.view, under=key))
        return diff_scans(_states(self.view, keys), _states(self.rootfs, keys),
                          lambda key: has_capability(self.rootfs / key))

    def commit(self, changed: bool, description: str) -> None:
        """After the step's layer is written: stack its upper as a lower (when it ``changed`` anything; an upper
        holding only copied-up directories is dropped) and start the next step on a fresh one."""
        if self._upper_is_empty():
            return
        if changed:
            self._check_depth(description)
        self._restart(keep_upper=changed)

    def add_layer(self, blob: Path, description: str) -> None:
        """Stack a layer made elsewhere (a cache hit after a step ran, a --link layer) on top, between steps."""
        self._check_depth(description)
        image = self.home / f"{self._name('l')}.erofs"
        write_image(image, [(blob, description)], markers=True)
        self._restart(keep_upper=False, image=image)

    def _check_depth(self, description: str) -> None:
        if len(self.lowers) >= self.MAX_LOWERS:
            raise RootfsError(f"{description}: more than {self.MAX_LOWERS} layers in one stage for an overlay; build "
                              "with --rootfs-mode unpack")


def _states(root: Path, keys: Sequence[str]) -> dict[str, FileState]:
    """The states of ``keys`` under ``root``, without inode and device: two overlay mounts of the same layers do
    not number them alike (a replaced file is told by its ctime, a replaced directory by its opaque marker)."""
    states: dict[str, FileState] = {}
    for key in keys:
        try:
            st = os.lstat(root / key)
        except (FileNotFoundError, NotADirectoryError):
            continue
        states[key] = FileState(st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, st.st_ctime_ns, 0, 0,
                                st.st_nlink)
    return states


def _opaque(directory: Path) -> bool:
    try:
        return os.getxattr(directory, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def write_image(image: Path, layers: Sequence[tuple[Path, str]], *, markers: bool = False) -> tuple[int, int, int, int]:
    """Write the EROFS image of ``layers`` applied in order (``markers``: one layer to stack, its whiteouts kept
    as overlayfs markers); return the root directory's (mode, uid, gid, mtime_ns), which an overlay takes from
    its upper directory."""
    with open(image, "wb") as out:
        writer = ImageWriter(out)
        tree = LayerTree(writer, devices=bool(effective_capabilities() & (1 << CAP_MKNOD)), markers=markers)
        for path, what in layers:
            try:
                with path.open("rb") as raw:
                    stream = open_layer_stream(raw)
                    if stream is None:
                        continue
                    with contextlib.closing(stream):
                        tree.apply_layer(TarReader(stream), what)
            except TarError as exc:
                raise UnsupportedContent(f"{what}: {exc}") from exc
            except (OSError, EOFError, zstandard.ZstdError) as exc:
                detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                raise RootfsError(f"{what}: cannot read the layer: {detail}") from exc
        for warning in tree.warnings:
            log.warning("%s", warning)
        writer.finish(tree.root)
    root = tree.root
    return stat.S_IMODE(root.mode), root.uid, root.gid, root.mtime_ns
