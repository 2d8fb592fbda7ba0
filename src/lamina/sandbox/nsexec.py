"""The process that enters the namespaces of a RUN: ``python -m lamina.sandbox.nsexec SPEC.json``.

It unshares mount, PID, UTS and IPC namespaces (and network, with only ``lo`` up, for ``network="none"``), makes
every mount private, mounts /dev (tmpfs with the usual nodes bound in), /sys (read-only) and the resolv.conf/hosts
files into the rootfs, then the ``RUN --mount`` binds and tmpfs mounts, then forks the command as PID 1 of
the new PID namespace, which mounts /proc, bounds its capabilities to Docker's default set, chroots, drops to the
user and execs. When PID 1 ends, the kernel kills everything else in the namespace; when this process ends, the
mounts go with the mount namespace. Its exit status is the command's (128 + signal when killed). Linux only, as root
(or root of a user namespace: the rootless sandbox).

``python -m lamina.sandbox.nsexec --chroot SPEC.json`` is the chroot sandbox's half: no namespaces and no mounts,
only capabilities, chroot, user and exec, in this process.

Capabilities are BuildKit's (containerd's default OCI spec): the bounding set is cut down to Docker's default set
(CapBnd 00000000a80425fb) and the inheritable and ambient sets to at most that, so the command run as root has
exactly that set permitted and effective, and as another user none (a setuid or file-capability program it runs
gets no more than that set either). ``security="insecure"`` (``RUN --security=insecure``, BuildKit's
``security.insecure`` entitlement) keeps the set lamina runs with. Without CAP_SETPCAP (an unprivileged container,
whose bounding set is Docker's default already) the bounding set is left as it is.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import socket
import stat
import struct
import sys
from pathlib import Path

from lamina.errors import RootfsError
from lamina.rootfs.paths import resolve_in_root
from lamina.syscalls import (
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUTS,
    DOCKER_DEFAULT_CAPS,
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    Libc,
)

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")


class SetupRefused(Exception):
    """A RUN --mount target the sandbox will not mount on."""


def _safe_target(rootfs: Path, rel: str, *, directory: bool) -> str | None:
    """The host path of a mount target inside the rootfs, or None when it is not a plain dir/file there
    (a symlink could point a mount at the host)."""
    path = rootfs
    for part in rel.strip("/").split("/"):
        path = path / part
        if path.is_symlink():
            return None
    if directory and not path.is_dir():
        return None
    if not directory and not path.is_file():
        return None
    return str(path)


def _setup_mounts(libc: Libc, spec: dict[str, object], rootfs: Path) -> None:
    libc.mount(None, "/", None, MS_REC | MS_PRIVATE)
    dev = _safe_target(rootfs, "dev", directory=True)
    if dev:
        libc.mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=65536k")
        for node in DEV_NODES:
            target = os.path.join(dev, node)
            Path(target).touch()
            libc.mount(f"/dev/{node}", target, None, MS_BIND)
        for sub in ("pts", "shm"):
            os.mkdir(os.path.join(dev, sub))
        libc.mount("devpts", os.path.join(dev, "pts"), "devpts", MS_NOSUID | MS_NOEXEC,
                   "newinstance,ptmxmode=0666,mode=0620")
        libc.mount("shm", os.path.join(dev, "shm"), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k")
        for name, target in (("ptmx", "pts/ptmx"), ("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
            os.symlink(target, os.path.join(dev, name))
    sys_dir = _safe_target(rootfs, "sys", directory=True)
    if sys_dir and spec.get("network") == "none":  # the host's /sys would show the host's interfaces
        libc.mount("sysfs", sys_dir, "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    elif sys_dir:
        libc.mount("/sys", sys_dir, None, MS_BIND | MS_REC)
        libc.remount_readonly(sys_dir)
    for key, rel in (("resolv_conf", "etc/resolv.conf"), ("hosts", "etc/hosts")):
        source = spec.get(key)
        file_target = _safe_target(rootfs, rel, directory=False)
        if isinstance(source, str) and file_target:
            libc.mount(source, file_target, None, MS_BIND)
            libc.remount_readonly(file_target)


def _mount_target(rootfs: Path, target: str, *, directory: bool) -> str:
    """The host path of a RUN --mount target: resolved inside the rootfs (symlinks followed as the image sees them,
    never out of it); a target missing here (inside an earlier mount) is created; a symlink left at the end or a
    file/directory mismatch is refused."""
    path = resolve_in_root(rootfs, target)
    if not os.path.lexists(path):
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        if directory:
            path.mkdir(mode=0o755)
        else:
            path.touch(mode=0o644)
    real = os.path.realpath(path)
    root = os.path.realpath(rootfs)
    if real != root and not real.startswith(root + os.sep):
        raise SetupRefused(f"mount target {target} leads out of the rootfs")
    mode = os.lstat(real).st_mode
    if directory and not stat.S_ISDIR(mode):
        raise SetupRefused(f"mount target {target} is not a directory")
    if not directory and stat.S_ISDIR(mode):
        raise SetupRefused(f"mount target {target} is a directory, the mount is a file")
    return real


def _extra_mounts(libc: Libc, spec: dict[str, object], rootfs: Path) -> None:
    """RUN --mount: binds (recursive, read-only when asked) and tmpfs mounts, in the order given."""
    mounts = spec.get("mounts") or []
    assert isinstance(mounts, list)
    for mount in mounts:
        assert isinstance(mount, dict)
        target = _mount_target(rootfs, str(mount["target"]), directory=bool(mount.get("directory", True)))
        if mount["kind"] == "tmpfs":
            size = mount.get("size")
            data = "mode=1777" + (f",size={int(str(size))}" if size is not None else "")
            readonly = MS_RDONLY if mount.get("readonly") else 0
            libc.mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV | readonly, data)
        else:
            libc.mount(str(mount["source"]), target, None, MS_BIND | MS_REC)
            if mount.get("readonly"):
                libc.remount_readonly(target)


def _loopback_up() -> None:
    """In a new network namespace ``lo`` exists but is down; bring it up, as BuildKit does for --network=none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def _secret_environment(spec: dict[str, object]) -> dict[str, str]:
    """``RUN --mount=type=secret,env=NAME``: the values, read from their files only now, never put in the spec."""
    out: dict[str, str] = {}
    items = spec.get("secret_env") or []
    assert isinstance(items, list)
    for name, path in items:
        with open(str(path), "rb") as f:
            out[str(name)] = f.read().decode("utf-8", "surrogateescape")
    return out


def _restrict_capabilities(libc: Libc, spec: dict[str, object]) -> None:
    """Bound this process's capabilities to Docker's default set before the exec (see the module's text)."""
    if spec.get("security") == "insecure":
        return
    keep = sum(1 << cap for cap in DOCKER_DEFAULT_CAPS)
    libc.ambient_clear()
    libc.restrict_inheritable(keep)
    for cap in range(libc.cap_last_cap() + 1):
        if cap in DOCKER_DEFAULT_CAPS:
            continue
        try:
            libc.capbset_drop(cap)
        except OSError as exc:
            if exc.errno == errno.EPERM:  # no CAP_SETPCAP: the container already bounds the set; leave it
                return
            if exc.errno == errno.EINVAL:  # beyond what this kernel knows
                return
            raise


def _exec_command(libc: Libc, spec: dict[str, object], rootfs: Path, *, mount_proc: bool = True) -> None:
    """In the child (PID 1 of the new namespace): /proc, capabilities, chroot, user, exec. Never returns.

    ``mount_proc=False`` (the chroot sandbox: no namespaces, no mounts) only bounds the capabilities, chroots,
    switches user and execs."""
    try:
        libc.pdeathsig(signal.SIGKILL)
        proc = _safe_target(rootfs, "proc", directory=True) if mount_proc else None
        if proc:
            libc.mount("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        secret_env = _secret_environment(spec)
        _restrict_capabilities(libc, spec)  # before chroot (/proc/sys may be missing there) and setuid (CAP_SETPCAP)
        os.chroot(str(rootfs))
        os.chdir(str(spec["cwd"]))
        groups = spec["groups"]
        assert isinstance(groups, list)
        os.setgroups([int(g) for g in groups])
        os.setgid(int(str(spec["gid"])))
        os.setuid(int(str(spec["uid"])))
        raw_argv, raw_env = spec["argv"], spec["env"]
        assert isinstance(raw_argv, list) and isinstance(raw_env, list)
        argv = [str(a) for a in raw_argv]
        env: dict[str, str] = {}
        for item in raw_env:
            name, _, value = str(item).partition("=")
            env[name] = value
        env.update(secret_env)
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        os.execvpe(argv[0], argv, env)
    except FileNotFoundError as exc:
        if exc.filename is None or str(spec.get("cwd")) != exc.filename:
            sys.stderr.write(f'lamina: exec: "{spec["argv"][0]}": executable file not found in $PATH\n')  # type: ignore[index]
            sys.stderr.flush()
            os._exit(127)
        sys.stderr.write(f"lamina: working directory {exc.filename} does not exist\n")
        sys.stderr.flush()
        os._exit(126)
    except PermissionError as exc:
        sys.stderr.write(f"lamina: exec: permission denied: {exc.filename or spec['argv']}\n")
        sys.stderr.flush()
        os._exit(126)
    except BaseException as exc:  # noqa: BLE001 - report anything and exit, never return into the caller
        sys.stderr.write(f"lamina: could not start the command: {exc}\n")
        sys.stderr.flush()
        os._exit(125)


def main(argv: list[str]) -> int:
    chroot_only = len(argv) > 2 and argv[1] == "--chroot"
    spec = json.loads(Path(argv[-1]).read_text())
    rootfs = Path(str(spec["rootfs"]))
    if rootfs.resolve() == Path("/"):
        sys.stderr.write("lamina: refusing to use / as the rootfs\n")
        return 125
    libc = Libc()
    if chroot_only:  # the chroot sandbox: this process becomes the command (the leader of its process group)
        _exec_command(libc, spec, rootfs, mount_proc=False)
    libc.pdeathsig(signal.SIGKILL)
    try:
        network_none = spec.get("network") == "none"
        libc.unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | (CLONE_NEWNET if network_none else 0))
        libc.sethostname(str(spec.get("hostname", "lamina")))
        if network_none:
            _loopback_up()
        _setup_mounts(libc, spec, rootfs)
        _extra_mounts(libc, spec, rootfs)
    except (OSError, SetupRefused, RootfsError) as exc:
        sys.stderr.write(f"lamina: sandbox setup failed: {exc}\n")
        return 125
    child = os.fork()
    if child == 0:
        _exec_command(libc, spec, rootfs)

    def forward(signum: int, _frame: object) -> None:
        os.kill(child, signal.SIGKILL)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except ChildProcessError:
            return 125
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
