"""The Linux system calls lamina makes through libc (ctypes): namespaces, mounts, hostname, parent-death signal;
and the kernel's numbers for them and for capabilities.

Used by the RUN sandbox's namespace process (``sandbox/nsexec.py``) and by the overlay root filesystems
(``rootfs/mounts.py``). Flag values are the kernel's (``<sched.h>``, ``<sys/mount.h>``).
"""

from __future__ import annotations

import ctypes
import os

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWUSER = 0x10000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
LOCKED_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME | MS_RELATIME  # statvfs's ST_* values
MNT_DETACH = 2
CAP_CHOWN = 0
CAP_SETGID = 6
CAP_SETUID = 7
CAP_SYS_CHROOT = 18
CAP_SYS_ADMIN = 21
CAP_MKNOD = 27
PR_SET_PDEATHSIG = 1


class Libc:
    """libc's calls for namespaces and mounts; a failure raises OSError naming the call and the target."""

    def __init__(self) -> None:
        self.lib = ctypes.CDLL(None, use_errno=True)

    def check(self, result: int, what: str) -> None:
        if result != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    def unshare(self, flags: int) -> None:
        self.check(self.lib.unshare(flags), "unshare")

    def mount(self, source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
        def enc(text: str | None) -> bytes | None:
            return text.encode() if text is not None else None

        self.check(self.lib.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
                   f"mount {target}")

    def sethostname(self, name: str) -> None:
        raw = name.encode()
        self.check(self.lib.sethostname(raw, len(raw)), "sethostname")

    def pdeathsig(self, sig: int) -> None:
        self.lib.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)

    def remount_readonly(self, target: str, extra: int = 0) -> None:
        """Make a bind mount read-only, keeping the flags it already has: inside a user namespace (rootless) the
        kernel refuses a remount that would drop a locked nosuid/nodev/noexec/atime flag of the source mount."""
        kept = os.statvfs(target).f_flag & LOCKED_FLAGS
        self.mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | kept | extra)

    def umount(self, target: str, flags: int = 0) -> None:
        self.check(self.lib.umount2(target.encode(), ctypes.c_int(flags)), f"umount {target}")

