"""The ``chroot`` runner, for unprivileged containers (Docker's default profile: CAP_SYS_CHROOT and CAP_MKNOD, but no
CAP_SYS_ADMIN, and seccomp refusing unshare, mount and namespace clones).

No namespaces and no mounts: the command runs chrooted into the rootfs, as the image's user, in a process group of
its own that is killed when the command ends, and so is any process still rooted in the rootfs after it (one that
left the group with setsid). For the run, /dev gets the usual character devices made with mknod
(null, zero, full, random, urandom, tty) and a /dev/shm directory; /etc/resolv.conf and /etc/hosts, when the image
lacks them, are the host's copied in; all of it is removed afterwards (parent mtimes restored), so none of it shows up
in the layer. ``RUN --mount`` targets are placed instead of mounted (see placed.py). /proc and /sys stay empty
(one warning per build) and ``--network=none`` cannot be honoured (one warning): the command shares the
container's network.
"""

from __future__ import annotations

import json
import logging
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import lamina
from lamina.errors import SandboxError
from lamina.sandbox.base import RunSpec
from lamina.sandbox.namespace import _jsonable, temporary_mountpoints
from lamina.sandbox.placed import placed_mounts

log = logging.getLogger(__name__)

DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0))
GRACE_SECONDS = 2.0  # after the command ends, how long output from processes outside its group is still read


def helper_environment() -> dict[str, str]:
    package_root = str(Path(lamina.__file__).resolve().parent.parent)
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": package_root, "LANG": "C.UTF-8"}


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def kill_rooted_in(rootfs: Path, rounds: int = 5) -> int:
    """SIGKILL every process whose root directory is ``rootfs``: what a RUN left running outside the process group
    the runner kills (a daemon that called setsid). A few rounds, as one may fork while the others die. Returns
    how many were killed."""
    target = os.path.realpath(rootfs)
    killed = 0
    for _ in range(rounds):
        found = []
        with os.scandir("/proc") as it:
            for entry in it:
                if entry.name.isdigit():
                    try:
                        if os.readlink(f"/proc/{entry.name}/root") == target:
                            found.append(int(entry.name))
                    except OSError:
                        continue
        if not found:
            break
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.05)
    return killed


def _status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def run_group(argv: list[str], output: Callable[[bytes], None], *, env: dict[str, str], **popen: Any) -> int:
    """Start ``argv`` as the leader of a new session and process group (``popen``: more arguments of Popen, e.g.
    ``user``, ``cwd``), stream its output, and when it ends kill
    whatever else is left in its group (before reaping it, so the group id cannot be reused). On any exception
    (Ctrl-C, SIGTERM turned into an exception) the whole group is killed and reaped before re-raising."""
    try:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True, **popen)
    except OSError as exc:
        raise SandboxError(f"could not start the sandbox helper: {exc}") from exc
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    try:
        leader_done = False
        deadline = 0.0
        while True:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                output(chunk)
                continue
            if not leader_done:
                result = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                if result is not None and result.si_pid == proc.pid:
                    leader_done = True
                    _kill_group(proc.pid)
                    deadline = time.monotonic() + GRACE_SECONDS
            elif time.monotonic() > deadline:
                break  # a process that left the group still holds the pipe: stop reading
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        _kill_group(proc.pid)
        return _status(proc.wait())
    except BaseException:
        _kill_group(proc.pid)
        proc.kill()
        proc.wait()
        raise
    finally:
        proc.stdout.close()


@contextmanager
def device_nodes(rootfs: Path, warn: Callable[[str], None]) -> Iterator[None]:
    """mknod the usual /dev nodes the rootfs lacks (and /dev/shm); remove them and restore /dev's times after."""
    dev = rootfs / "dev"
    if dev.is_symlink() or not dev.is_dir():
        yield
        return
    st = dev.lstat()
    created: list[Path] = []
    try:
        for name, major, minor in DEVICES:
            node = dev / name
            if os.path.lexists(node):
                continue
            try:
                os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(major, minor))
                os.chmod(node, 0o666)
            except OSError as exc:
                warn(f"warning: cannot create /dev/{name} in the rootfs ({exc.strerror or exc}); RUN goes without it")
                continue
            created.append(node)
        shm = dev / "shm"
        if not os.path.lexists(shm):
            shm.mkdir()
            shm.chmod(0o1777)
            created.append(shm)
        yield
    finally:
        for path in reversed(created):
            try:
                if path.is_dir() and not path.is_symlink():
                    for child in path.iterdir():  # what the command left in /dev/shm
                        if child.is_dir() and not child.is_symlink():
                            shutil.rmtree(child, ignore_errors=True)
                        else:
                            child.unlink()
                    path.rmdir()
                else:
                    path.unlink()
            except OSError:
                pass
        if created:
            try:
                os.utime(dev, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
            except OSError:
                pass


class ChrootRunner:
    name = "chroot"
    places_mounts = True

    def __init__(self, warn: Callable[[str], None] | None = None) -> None:
        self.warn: Callable[[str], None] = warn or (lambda text: log.warning("%s", text))
        self.warned: set[str] = set()

    def warn_once(self, key: str, text: str) -> None:
        if key not in self.warned:
            self.warned.add(key)
            self.warn(text)

    def run(self, spec: RunSpec, output: Callable[[bytes], None]) -> int:
        if spec.rootfs.resolve() == Path("/"):
            raise SandboxError("refusing to run in / as the rootfs")
        self.warn_once("proc", "warning: sandbox chroot: no /proc or /sys in RUN (mounts are not allowed here)")
        if spec.network == "none":
            self.warn_once("network", "warning: sandbox chroot: RUN --network=none cannot be isolated here; "
                           "the command shares the container's network")
        copies = [(rel, source) for rel, source in (("etc/resolv.conf", spec.resolv_conf), ("etc/hosts", spec.hosts))
                  if source is not None and not os.path.lexists(spec.rootfs / rel)
                  and (spec.rootfs / rel).parent.is_dir() and not (spec.rootfs / rel).parent.is_symlink()]
        payload = _jsonable(asdict(replace(spec, mounts=())))
        with temporary_mountpoints(spec.rootfs), device_nodes(spec.rootfs, self.warn), \
                placed_mounts(spec.rootfs, spec.mounts, stash=spec.scratch, warn=self.warn), \
                tempfile.NamedTemporaryFile("w", suffix=".json", dir=spec.rootfs.parent, delete=False) as f:
            for rel, source in copies:
                target = spec.rootfs / rel
                if target.is_file() and not target.is_symlink() and target.stat().st_size == 0:
                    try:
                        target.write_bytes(Path(source).read_bytes())
                    except OSError:
                        pass
            json.dump(payload, f)
            f.close()
            try:
                return run_group([sys.executable, "-m", "lamina.sandbox.nsexec", "--chroot", f.name], output,
                                 env=helper_environment())
            finally:
                os.unlink(f.name)
                left = kill_rooted_in(spec.rootfs)
                if left:
                    self.warn(f"warning: sandbox chroot: killed {left} process(es) the RUN left running outside its "
                              "process group (setsid)")
