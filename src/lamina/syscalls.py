"""The Linux system calls lamina makes through libc (ctypes): namespaces, mounts, hostname, parent-death signal,
capability sets; and the kernel's numbers for them and for capabilities.

Used by the RUN sandbox's namespace process (``sandbox/nsexec.py``) and by the overlay root filesystems
(``rootfs/mounts.py``). Flag values are the kernel's (``<sched.h>``, ``<sys/mount.h>``).
"""

from __future__ import annotations

import ctypes
import errno
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
CAP_DAC_OVERRIDE = 1
CAP_FOWNER = 3
CAP_FSETID = 4
CAP_KILL = 5
CAP_SETGID = 6
CAP_SETUID = 7
CAP_SETPCAP = 8
CAP_NET_BIND_SERVICE = 10
CAP_NET_RAW = 13
CAP_SYS_CHROOT = 18
CAP_SYS_ADMIN = 21
CAP_MKNOD = 27
CAP_AUDIT_WRITE = 29
CAP_SETFCAP = 31
# Docker's default capability set: what BuildKit gives RUN (containerd's default OCI spec, ``defaultUnixCaps`` in
# pkg/oci/spec.go): CapBnd, and for root CapPrm/CapEff, 00000000a80425fb.
DOCKER_DEFAULT_CAPS = frozenset({CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FSETID, CAP_FOWNER, CAP_MKNOD, CAP_NET_RAW,
                                 CAP_SETGID, CAP_SETUID, CAP_SETFCAP, CAP_SETPCAP, CAP_NET_BIND_SERVICE,
                                 CAP_SYS_CHROOT, CAP_KILL, CAP_AUDIT_WRITE})
PR_SET_PDEATHSIG = 1
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
LINUX_CAPABILITY_VERSION_3 = 0x20080522  # capget/capset: two 32-bit words per set
CAP_LAST_CAP = "/proc/sys/kernel/cap_last_cap"


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


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

    def prctl(self, option: int, arg: int, what: str) -> int:
        result: int = self.lib.prctl(ctypes.c_int(option), ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0),
                                     ctypes.c_ulong(0))
        if result < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")
        return result

    def cap_last_cap(self) -> int:
        """The highest capability number this kernel knows (``/proc/sys/kernel/cap_last_cap``; without /proc,
        found by asking for the bounding set's bits until the kernel says there is no such capability)."""
        try:
            with open(CAP_LAST_CAP) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            pass
        last = -1
        for cap in range(64):
            try:
                self.prctl(PR_CAPBSET_READ, cap, "prctl(PR_CAPBSET_READ)")
            except OSError:
                break
            last = cap
        return last

    def capbset_drop(self, cap: int) -> None:
        """Remove ``cap`` from this thread's capability bounding set (needs CAP_SETPCAP: EPERM without it)."""
        self.prctl(PR_CAPBSET_DROP, cap, f"prctl(PR_CAPBSET_DROP, {cap})")

    def ambient_clear(self) -> None:
        """Empty the ambient capability set (kernels before 4.3 have none: EINVAL, nothing to clear)."""
        try:
            self.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, "prctl(PR_CAP_AMBIENT_CLEAR_ALL)")
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise

    def restrict_inheritable(self, keep: int) -> None:
        """Keep in this thread's inheritable set only the capabilities of the bit mask ``keep`` (lowering it needs
        no privilege); effective and permitted stay as they are."""
        header = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
        data = (_CapData * 2)()
        self.check(self.lib.capget(ctypes.byref(header), data), "capget")
        for word in range(2):
            data[word].inheritable &= (keep >> (32 * word)) & 0xFFFFFFFF
        self.check(self.lib.capset(ctypes.byref(header), data), "capset")

    def remount_readonly(self, target: str, extra: int = 0) -> None:
        """Make a bind mount read-only, keeping the flags it already has: inside a user namespace (rootless) the
        kernel refuses a remount that would drop a locked nosuid/nodev/noexec/atime flag of the source mount."""
        kept = os.statvfs(target).f_flag & LOCKED_FLAGS
        self.mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | kept | extra)

    def umount(self, target: str, flags: int = 0) -> None:
        self.check(self.lib.umount2(target.encode(), ctypes.c_int(flags)), f"umount {target}")

