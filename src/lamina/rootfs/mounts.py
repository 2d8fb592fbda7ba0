"""The mounts of a build's overlay root filesystems: whether they are possible here, making them (by system call,
or the mount program for loop images), tracking them so that ``unmount_all`` undoes them, and the memory budget
of in-memory upper directories.

Mounts are made in lamina's own mount namespace when it could enter one (``private_mount_namespace``, done by the
CLI before any thread starts), so they vanish with the process whatever happens; ``LayerMounts.unmount_all`` also
removes them explicitly, last made first, before the work directory is deleted.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from lamina.errors import RootfsError
from lamina.sandbox.detect import effective_capabilities
from lamina.syscalls import CAP_SYS_ADMIN, CLONE_NEWNS, MNT_DETACH, MS_PRIVATE, MS_REC, Libc

log = logging.getLogger(__name__)

MOUNT_DATA_LIMIT = 4000  # mount(2) takes one page of options
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
    libc = Libc()
    try:
        libc.unshare(CLONE_NEWNS)
    except OSError:
        return False
    try:
        libc.mount(None, "/", None, MS_REC | MS_PRIVATE)
    except OSError as exc:
        log.debug("could not make the new mount namespace private: %s", exc)
    return True


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
    for fs, module in (("erofs", "fs/erofs/erofs.ko"), ("overlay", "fs/overlayfs/overlay.ko")):
        if f"\t{fs}\n" not in filesystems and not glob.glob(f"/lib/modules/{os.uname().release}/*/{module}*"):
            return f"the kernel has no {fs} filesystem (built in, or as a module mount can load)"
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
    """The mounts of a build (images, tmpfs, overlays), in the order made: ``unmount_all`` at the end undoes them in
    reverse. ``reason`` holds why overlay root filesystems are off (given, or learnt from the first failure)."""

    mode: str = "auto"  # auto: overlay when possible, else unpack; overlay: fail when impossible; unpack: never
    reason: str | None = None
    points: list[Path] = field(default_factory=list)
    memory_left: int = 0  # bytes of step changes still allowed in memory (tmpfs uppers), see StageOverlay

    @property
    def enabled(self) -> bool:
        return self.mode != "unpack" and self.reason is None

    def mount(self, argv: list[str], point: Path, *, cwd: Path | None = None) -> None:
        """``mount ARGV... POINT`` (relative paths in ARGV are taken from ``cwd``); RootfsError when it fails."""
        failure = _run_mount(["mount", *argv, str(point)], cwd)
        if failure is not None:
            raise RootfsError(f"cannot mount {point}: {failure}")
        self.points.append(point)

    def mount_fs(self, fstype: str, options: str, point: Path, *, home: Path, relative: str) -> None:
        """Mount a tmpfs or an overlay by the system call (a fraction of a millisecond, where the mount program
        takes ~10 ms): ``options`` with absolute paths; when they are too long for one page (many layers),
        ``relative`` (the same options, paths relative to ``home``) through the mount program instead."""
        if len(options) >= MOUNT_DATA_LIMIT:
            self.mount(["-t", fstype, "-o", relative, "lamina"], point, cwd=home)
            return
        try:
            Libc().mount("lamina", str(point), fstype, 0, options)
        except OSError as exc:
            raise RootfsError(f"cannot mount {fstype} on {point}: {exc.strerror} (options {options})") from None
        self.points.append(point)

    def unmount(self, point: Path) -> None:
        libc = Libc()
        try:
            libc.umount(str(point))
        except OSError:
            try:
                libc.umount(str(point), MNT_DETACH)
            except OSError as exc:
                log.warning("could not unmount %s: %s", point, exc.strerror)
        with contextlib.suppress(ValueError):
            self.points.remove(point)

    def unmount_all(self) -> None:
        """Unmount everything, the last mounted first; loop devices are released with their images."""
        for point in reversed(list(self.points)):
            self.unmount(point)

    def disable(self, reason: str, description: str) -> None:
        if self.mode == "overlay":
            raise RootfsError(f"{description}: cannot make an overlay root filesystem (--rootfs-mode overlay): "
                              f"{reason}")
        self.reason = reason
        log.info("overlay root filesystems are off: %s; unpacking instead", reason)


def free_space(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem of ``path`` (0 when it cannot be told)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


def is_full(path: Path) -> bool:
    """Has the filesystem of ``path`` (nearly) no room, or no inode, left? A step that failed writing into memory
    (a tmpfs upper, a skeleton in /dev/shm) then runs again on disk."""
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < (1 << 20) or st.f_favail == 0


def memory_budget(available: int) -> int:
    """Default bytes of step changes kept in memory for a build: a quarter of the available memory, at most 1 GiB."""
    return max(0, min(1 << 30, available // 4))


def available_memory() -> int:
    """Memory this process may still use: MemAvailable, or less where its cgroup's limit leaves less (a container
    with a memory limit: tmpfs pages count against it)."""
    available = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    headroom = _cgroup_headroom()
    return available if headroom is None else min(available, headroom)


def _cgroup_headroom() -> int | None:
    """The least (limit - usage) over this process's memory cgroup and its ancestors (v2 or v1); None: no limit."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    headroom: int | None = None
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":
            base, files = Path("/sys/fs/cgroup"), ("memory.max", "memory.current")
        elif "memory" in controllers.split(","):
            base, files = Path("/sys/fs/cgroup/memory"), ("memory.limit_in_bytes", "memory.usage_in_bytes")
        else:
            continue
        directory = base / path.strip("/")
        while True:
            with contextlib.suppress(OSError, ValueError):
                limit_text = (directory / files[0]).read_text().strip()
                if limit_text != "max" and int(limit_text) < 1 << 60:
                    left = int(limit_text) - int((directory / files[1]).read_text().strip())
                    headroom = left if headroom is None else min(headroom, left)
            if directory == base or base not in directory.parents:
                break
            directory = directory.parent
    return headroom


def _run_mount(argv: list[str], cwd: Path | None = None) -> str | None:
    """Run mount/umount; None on success, else its message."""
    result = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=cwd)
    if result.returncode == 0:
        return None
    return f"{' '.join(argv[:3])}: {result.stderr.strip() or f'exit status {result.returncode}'}"


