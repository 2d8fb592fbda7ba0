"""The ``rootless`` sandbox: an ordinary user builds inside a user namespace that maps their subordinate ids.

Like ``buildah unshare``, the whole build is re-executed there: lamina forks, the child unshares a user namespace,
the parent maps it with ``newuidmap``/``newgidmap`` (id 0 → the user, ids 1... → the ranges of /etc/subuid and
/etc/subgid), and the child execs ``python -m lamina.sandbox.rootless --values-fd N``, which reads the build's
resolved flags from the pipe and runs the build as root of the namespace with the ``namespace`` runner (mount, PID,
UTS and IPC namespaces are allowed inside a user namespace). Unpacking chowns to the image's ids, snapshots stat
them back and layers record them, so ``RUN chown 1234:1234 /f`` gives a layer entry owned by 1234:1234, while on
the host the file belongs to the matching subordinate id. The environment passes through unchanged (HOME,
DOCKER_CONFIG: credentials of the user still work: their files are root's inside). The work directory is created
and removed inside the namespace, where root may delete files owned by any mapped id.

The parent forwards SIGINT, SIGTERM and SIGHUP to the child (which runs in a process group of its own) and exits
with its status.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import lamina
from lamina.errors import SandboxError
from lamina.sandbox.detect import ROOTLESS_INNER_ENV, Facts
from lamina.syscalls import CLONE_NEWUSER


def id_map(host_id: int, ranges: Sequence[tuple[int, int]]) -> list[str]:
    """The arguments of newuidmap/newgidmap after the pid: 0 → ``host_id``, then the ranges from 1 on."""
    args = ["0", str(host_id), "1"]
    inside = 1
    for first, count in ranges:
        args += [str(inside), str(first), str(count)]
        inside += count
    return args


def _child(ready_w: int, go_r: int, values_r: int, argv: list[str], env: dict[str, str]) -> None:
    """After fork: unshare, tell the parent, wait for the maps, exec the inner lamina. Never returns."""
    try:
        os.setpgid(0, 0)  # the parent forwards signals: a Ctrl-C on the terminal must not arrive twice
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWUSER) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"unshare(CLONE_NEWUSER): {os.strerror(err)}")
        os.write(ready_w, b"u")
        os.close(ready_w)
        if os.read(go_r, 1) != b"g":
            os._exit(125)
        os.close(go_r)
        try:
            os.setgroups([])
        except OSError:
            pass
        os.set_inheritable(values_r, True)
        os.execve(argv[0], argv, env)
    except BaseException as exc:  # noqa: BLE001 - report and exit, never return into the caller's code
        os.write(2, f"error: rootless sandbox: {exc}\n".encode())
        os._exit(125)


def _map(tool: str, pid: int, args: list[str]) -> None:
    try:
        proc = subprocess.run([tool, str(pid), *args], capture_output=True, text=True, timeout=30, check=False)
    except OSError as exc:
        raise SandboxError(f"rootless sandbox: {tool}: {exc.strerror or exc} (apt-get install uidmap)") from None
    if proc.returncode != 0:
        raise SandboxError(f"rootless sandbox: {tool} {pid} {' '.join(args)} failed: "
                           f"{(proc.stderr or proc.stdout).strip()}")


def enter(values: Mapping[str, object], environ: Mapping[str, str], facts: Facts) -> int:
    """Run the build described by ``values`` (the CLI's resolved flags) inside a new user namespace; return its
    exit status (128 + N when it died of signal N)."""
    package_root = str(Path(lamina.__file__).resolve().parent.parent)
    env = dict(environ)
    env[ROOTLESS_INNER_ENV] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    inner_values = dict(values)
    inner_values["sandbox"] = "namespace"
    payload = json.dumps(inner_values).encode()
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    values_r, values_w = os.pipe()
    argv = [sys.executable, "-m", "lamina.sandbox.rootless", "--values-fd", str(values_r)]
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(ready_r)
        os.close(go_w)
        os.close(values_w)
        _child(ready_w, go_r, values_r, argv, env)
    os.close(ready_w)
    os.close(go_r)
    os.close(values_r)
    forwarded = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.getsignal(sig) for sig in forwarded}

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    try:
        for sig in forwarded:
            signal.signal(sig, forward)
        try:
            if os.read(ready_r, 1) != b"u":
                raise SandboxError("rootless sandbox: the child could not create a user namespace")
            _map("newuidmap", pid, id_map(os.getuid(), facts.subuids))
            _map("newgidmap", pid, id_map(os.getgid(), facts.subgids))
            os.write(values_w, payload)
            os.close(values_w)
            values_w = -1
            os.write(go_w, b"g")
        except BaseException:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            raise
        finally:
            for fd in (ready_r, go_w, values_w):
                if fd >= 0:
                    os.close(fd)
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
        return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str]) -> int:
    """The inner half: root of the user namespace, run the build with the flags read from the pipe."""
    from lamina.cli import run_build_reporting
    from lamina.console import make_console

    if len(argv) != 3 or argv[1] != "--values-fd":
        sys.stderr.write("usage: python -m lamina.sandbox.rootless --values-fd FD (started by lamina build)\n")
        return 2
    with os.fdopen(int(argv[2]), "rb") as f:
        values = json.loads(f.read())
    out = make_console()
    err = make_console(stderr=True)
    return run_build_reporting(values, dict(os.environ), out, err)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
