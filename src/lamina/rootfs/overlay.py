"""A stage's root filesystem as an overlay: its layers as one read-only EROFS image below, a writable upper
directory on top (root only, with loop devices, EROFS and overlayfs in the kernel).

Why: unpacking a base image creates one inode per entry, and on a busy ext4 that is most of a build's time (here
~0.1-0.3 ms each, ~7,000 for Debian). Writing the layers into one image file creates none; the kernel then reads
the files on demand. Every step still sees a plain directory (the merged mount), so COPY, RUN and the snapshot
scan are unchanged; what a step writes lands in the upper directory.

Mounts are made in lamina's own mount namespace when it could enter one (``private_mount_namespace``, done by the
CLI before any thread starts), so they vanish with the process whatever happens; ``LayerMounts.unmount_all``
also removes them explicitly, deepest first, before the work directory is deleted.

When any of this is unavailable (not root, a user namespace, no loop device, an upper directory on a filesystem
overlayfs refuses), ``LayerMounts.mount`` says why and the caller unpacks the layers into the directory instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import stat
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from lamina.errors import RootfsError
from lamina.rootfs.erofs import ImageWriter, UnsupportedContent
from lamina.rootfs.tarstream import TarError, TarReader
from lamina.rootfs.tree import LayerTree
from lamina.rootfs.unpack import open_layer_stream

log = logging.getLogger(__name__)

CLONE_NEWNS = 0x00020000
CAP_MKNOD = 27
CAP_SYS_ADMIN = 21
MS_REC = 16384
MS_PRIVATE = 1 << 18
UNSAFE_PATH_CHARACTERS = (",", ":", "\\", "\n")  # would split or escape overlayfs mount options


def private_mount_namespace() -> bool:
    """Move this process into a mount namespace of its own (mounts private), once; True when it is in one.

    Only possible as root and before any other thread starts (unshare refuses a threaded process)."""
    if os.geteuid() != 0:
        return False
    with contextlib.suppress(OSError):
        if os.readlink("/proc/self/ns/mnt") != os.readlink("/proc/1/ns/mnt"):
            return True  # already in one (an earlier build in this process, or started in one)
    if threading.active_count() > 1:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        return False
    if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        log.debug("could not make the new mount namespace private (errno %d)", ctypes.get_errno())
    return True


def effective_capabilities(status: str | None = None) -> int:
    """The CapEff bit mask of this process (from /proc/self/status, or the text of it given)."""
    if status is None:
        try:
            status = Path("/proc/self/status").read_text()
        except OSError:
            return 0
    return int(next((line.split()[1] for line in status.splitlines() if line.startswith("CapEff:")), "0"), 16)


def unavailable_reason(work_root: Path) -> str | None:
    """Why stage root filesystems cannot be overlays here, or None when they can be tried."""
    if os.geteuid() != 0:
        return "not running as root"
    try:
        uid_map = Path("/proc/self/uid_map").read_text().split()
        status = Path("/proc/self/status").read_text()
    except OSError:
        return "/proc is not readable"
    if uid_map[:3] != ["0", "0", "4294967295"]:
        return "in a user namespace (images cannot be mounted there)"
    if not effective_capabilities(status) & (1 << CAP_SYS_ADMIN):
        return "no CAP_SYS_ADMIN (an unprivileged container)"
    try:
        filesystems = Path("/proc/filesystems").read_text()
    except OSError:
        return "/proc/filesystems is unreadable"
    for fs in ("erofs", "overlay"):
        if f"\t{fs}\n" not in filesystems:
            return f"the kernel has no {fs} filesystem"
    if not os.path.exists("/dev/loop-control"):
        return "no loop devices (/dev/loop-control)"
    for tool in ("mount", "umount"):
        if shutil.which(tool) is None:
            return f"no {tool} program"
    if any(c in str(work_root) for c in UNSAFE_PATH_CHARACTERS):
        return f"the work directory {work_root} has characters overlayfs options cannot carry"
    return None


@dataclass
class LayerMounts:
    """The images and overlays a build mounted: ``mount`` one per stage root filesystem, ``unmount_all`` at the
    end. ``reason`` holds why overlays are off (given, or learnt from the first failure)."""

    mode: str = "auto"  # auto: overlay when possible, else unpack; overlay: fail when impossible; unpack: never
    reason: str | None = None
    points: list[Path] = field(default_factory=list)

    @property
    def enabled(self) -> bool:
        return self.mode != "unpack" and self.reason is None

    def mount(self, rootfs: Path, layers: Sequence[tuple[Path, str]], description: str) -> bool:
        """Make ``rootfs`` (an empty directory) an overlay of ``layers`` ((blob path, description), bottom first).
        False when overlays are off here (the caller unpacks instead); RootfsError naming the layer and the entry
        for a broken or hostile layer."""
        if not self.enabled:
            return False
        home = rootfs.parent
        image, lower, upper, work = home / "layers.erofs", home / "lower", home / "upper", home / "work"
        try:
            root_meta = write_image(image, layers)
        except UnsupportedContent as exc:
            log.info("%s: unpacking instead of mounting: %s", description, exc)
            image.unlink(missing_ok=True)
            return False
        for directory in (lower, upper, work):
            directory.mkdir(exist_ok=True)
        mode, uid, gid, mtime_ns = root_meta
        os.chown(upper, uid, gid)
        os.chmod(upper, mode)
        failure = _run_mount(["mount", "-t", "erofs", "-o", "ro,loop", str(image), str(lower)])
        if failure is None:
            self.points.append(lower)
            failure = _run_mount(["mount", "-t", "overlay", "lamina", "-o",
                                  f"lowerdir={lower},upperdir={upper},workdir={work},xino=on", str(rootfs)])
            if failure is not None:
                self._unmount(lower)
        if failure is not None:
            image.unlink(missing_ok=True)
            if self.mode == "overlay":
                raise RootfsError(f"{description}: cannot mount the layers (--rootfs-mode overlay): {failure}")
            self.reason = failure
            log.info("overlay root filesystems are off: %s; unpacking instead", failure)
            return False
        self.points.append(rootfs)
        os.utime(upper, ns=(mtime_ns, mtime_ns))
        return True

    def _unmount(self, point: Path) -> None:
        if _run_mount(["umount", str(point)]) is not None:
            _run_mount(["umount", "-l", str(point)])
        with contextlib.suppress(ValueError):
            self.points.remove(point)

    def unmount_all(self) -> None:
        """Unmount every overlay, then every image (the reverse of mounting); loop devices are released with them."""
        for point in reversed(list(self.points)):
            self._unmount(point)


def _run_mount(argv: list[str]) -> str | None:
    """Run mount/umount; None on success, else its message."""
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode == 0:
        return None
    return f"{' '.join(argv[:3])}: {result.stderr.strip() or f'exit status {result.returncode}'}"


def write_image(image: Path, layers: Sequence[tuple[Path, str]]) -> tuple[int, int, int, int]:
    """Write the EROFS image of ``layers`` applied in order; return the root directory's (mode, uid, gid,
    mtime_ns), which the overlay takes from its upper directory."""
    with open(image, "wb") as out:
        writer = ImageWriter(out)
        tree = LayerTree(writer, devices=bool(effective_capabilities() & (1 << CAP_MKNOD)))
        for path, what in layers:
            try:
                with path.open("rb") as raw:
                    stream = open_layer_stream(raw)
                    if stream is None:
                        continue
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
