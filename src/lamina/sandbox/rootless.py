"""The ``rootless`` sandbox: an ordinary user builds inside a user namespace that maps their subordinate ids.

Like ``buildah unshare``, the whole build is re-executed there: lamina forks, the child unshares a user namespace,
the parent maps it with ``newuidmap``/``newgidmap`` (id 0 → the user, ids 1... → the ranges of /etc/subuid and
/etc/subgid), and the child execs ``python -m <module> --rootless-inner IN OUT`` (``lamina.launch``), which reads
the build's request (its complete options) from the pipe IN and runs the build as root of the namespace with the
``namespace`` runner (mount, PID, UTS and IPC namespaces are allowed inside a user namespace). Unpacking chowns to
the image's ids, snapshots stat them back and layers record them, so ``RUN chown 1234:1234 /f`` gives a layer entry
owned by 1234:1234, while on the host the file belongs to the matching subordinate id. The environment passes
through unchanged (HOME, DOCKER_CONFIG: credentials of the user still work: their files are root's inside). The
work directory is created and removed inside the namespace, where root may delete files owned by any mapped id.

The inner build reports through the pipe OUT: every progress event, then its result or its error, as
length-prefixed pickles (both ends are this lamina, in processes it started itself). The parent replays the events
on the entry point's own progress and returns the result or raises the error, so a rootless build looks to every
entry point exactly like any other. The parent forwards SIGINT, SIGTERM and SIGHUP to the child (which runs in a
process group of its own).
"""

from __future__ import annotations

import ctypes
import os
import pickle
import signal
import struct
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import lamina
from lamina.errors import LaminaError, SandboxError
from lamina.progress import Progress, StepResult
from lamina.sandbox.detect import ROOTLESS_INNER_ENV, Facts
from lamina.sandbox.runners import Interrupted
from lamina.syscalls import CLONE_NEWUSER

_LENGTH = struct.Struct(">I")


def id_map(host_id: int, ranges: Sequence[tuple[int, int]]) -> list[str]:
    """The arguments of newuidmap/newgidmap after the pid: 0 → ``host_id``, then the ranges from 1 on."""
    args = ["0", str(host_id), "1"]
    inside = 1
    for first, count in ranges:
        args += [str(inside), str(first), str(count)]
        inside += count
    return args


def _child(ready_w: int, go_r: int, inherited: Sequence[int], argv: list[str], env: dict[str, str]) -> None:
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
        for fd in inherited:
            os.set_inheritable(fd, True)
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


def _write_frame(fd: int, item: object) -> None:
    data = pickle.dumps(item)
    _write_all(fd, _LENGTH.pack(len(data)) + data)


def _read_exactly(fd: int, size: int) -> bytes | None:
    chunks: list[bytes] = []
    while size:
        chunk = os.read(fd, size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _read_frames(fd: int) -> Iterator[Any]:
    while (header := _read_exactly(fd, _LENGTH.size)) is not None:
        body = _read_exactly(fd, _LENGTH.unpack(header)[0])
        if body is None:
            return
        yield pickle.loads(body)  # written by the lamina child we started


class ForwardingProgress:
    """The inner build's Progress: each event goes to the parent, which replays it on its own progress."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def _send(self, name: str, *args: object) -> None:
        _write_frame(self.fd, ("event", name, args))

    def transfer_started(self, key: str, description: str, total: int | None) -> None:
        self._send("transfer_started", key, description, total)

    def transfer_advanced(self, key: str, amount: int) -> None:
        self._send("transfer_advanced", key, amount)

    def transfer_finished(self, key: str) -> None:
        self._send("transfer_finished", key)

    def step_started(self, stage: str, index: int, total: int, text: str) -> None:
        self._send("step_started", stage, index, total, text)

    def step_output(self, line: str) -> None:
        self._send("step_output", line)

    def step_finished(self, result: StepResult) -> None:
        self._send("step_finished", result)

    def message(self, text: str) -> None:
        self._send("message", text)

    def close(self) -> None:
        pass  # the parent's progress is closed by its entry point


def serve(argv: Sequence[str], handle: Callable[[Any, Progress], object]) -> int:
    """The inner half (``--rootless-inner IN OUT``): read the request, run ``handle(request, progress)`` with a
    progress that reports to the parent, send its result or its error. Returns the process's exit status."""
    if len(argv) != 3 or argv[0] != "--rootless-inner":
        sys.stderr.write("usage: --rootless-inner IN OUT (started by lamina's rootless sandbox)\n")
        return 2
    request_fd, events_fd = int(argv[1]), int(argv[2])
    with os.fdopen(request_fd, "rb") as f:
        request = pickle.loads(f.read())  # written by the parent lamina that started us
    try:
        outcome: tuple[str, object] = ("result", handle(request, ForwardingProgress(events_fd)))
    except LaminaError as exc:
        outcome = ("error", exc)
    except KeyboardInterrupt:
        outcome = ("error", Interrupted(signal.SIGINT))
    except Exception as exc:  # noqa: BLE001 - a bug: its traceback here, a one-line error for the parent
        traceback.print_exc()
        outcome = ("error", SandboxError(f"rootless sandbox: the build failed inside the user namespace: "
                                         f"{type(exc).__name__}: {exc}"))
    _write_frame(events_fd, outcome)
    os.close(events_fd)
    return 0


def enter(request: object, progress: Progress, environ: Mapping[str, str], facts: Facts, *, module: str) -> Any:
    """Run ``python -m module --rootless-inner`` inside a new user namespace on ``request``, replaying its
    progress on ``progress``; return its result, or raise its error."""
    package_root = str(Path(lamina.__file__).resolve().parent.parent)
    env = dict(environ)
    env[ROOTLESS_INNER_ENV] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    payload = pickle.dumps(request)
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    request_r, request_w = os.pipe()
    events_r, events_w = os.pipe()
    argv = [sys.executable, "-m", module, "--rootless-inner", str(request_r), str(events_w)]
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        for fd in (ready_r, go_w, request_w, events_r):
            os.close(fd)
        _child(ready_w, go_r, (request_r, events_w), argv, env)
    for fd in (ready_w, go_r, request_r, events_w):
        os.close(fd)
    forwarded = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.getsignal(sig) for sig in forwarded}

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    outcome: tuple[str, Any] | None = None
    try:
        for sig in forwarded:
            signal.signal(sig, forward)
        try:
            if os.read(ready_r, 1) != b"u":
                raise SandboxError("rootless sandbox: the child could not create a user namespace")
            _map("newuidmap", pid, id_map(os.getuid(), facts.subuids))
            _map("newgidmap", pid, id_map(os.getgid(), facts.subgids))
            os.write(go_w, b"g")
            _write_all(request_w, payload)
            os.close(request_w)
            request_w = -1
        except BaseException:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            raise
        finally:
            for fd in (ready_r, go_w, request_w):
                if fd >= 0:
                    os.close(fd)
        try:
            for frame in _read_frames(events_r):
                if frame[0] == "event":
                    getattr(progress, frame[1])(*frame[2])
                else:
                    outcome = frame
        finally:
            os.close(events_r)
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if outcome is None:
        code = 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        raise SandboxError(f"rootless sandbox: the build inside the user namespace ended (status {code}) without "
                           "a result")
    if outcome[0] == "error":
        raise outcome[1]
    return outcome[1]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
