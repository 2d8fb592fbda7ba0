"""SSH agents for ``RUN --mount=type=ssh``, as ``docker buildx build --ssh`` gives them to BuildKit.

``--ssh ID`` names the agent of ``$SSH_AUTH_SOCK``; ``--ssh ID=SOCKET`` another agent's socket; ``--ssh
ID=KEY[,KEY...]`` private key files, which lamina serves through an ``ssh-agent`` of its own (OpenSSH's, started when
the build starts: in the inplace sandbox no program is left once ``/`` is cleared), stopped when the build ends.

A RUN never sees an agent's own socket. For each SSH mount, lamina listens on a socket of its own (the mount's mode
and owner, 0600 and 0:0 by default, as BuildKit's) and relays every connection to the agent, for that RUN only: the
sandbox binds that socket at the target, or links it there where it cannot mount (see ``sandbox/placed.py``).

Unix socket paths are limited to 107 bytes, and the work directory may be deeper than that: sockets are bound and
reached through ``/proc/<pid>/fd/<directory>/<name>``, which is short whatever the directory's path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from lamina.errors import OptionsError

log = logging.getLogger(__name__)

SOCKET_PATH_MAX = 107
START_TIMEOUT = 10.0
RELAY_CHUNK = 1 << 16


class ShortPaths:
    """Short names for files in one directory, for ``bind`` and ``connect`` (and for children of this process)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def __call__(self, name: str) -> str:
        full = str(self.directory / name)
        return full if len(full) <= SOCKET_PATH_MAX else f"/proc/{os.getpid()}/fd/{self.fd}/{name}"

    def close(self) -> None:
        os.close(self.fd)


class SshAgents:
    """The build's agents by id: the upstream socket each ``--ssh`` id names. ``start`` launches the agents of key
    files (call it before anything clears ``/``); ``close`` stops them."""

    def __init__(self, sources: Sequence[tuple[str, tuple[str, ...]]], environ: Mapping[str, str],
                 directory: Path) -> None:
        self.sources = dict(sources)
        self.environ = environ
        self.directory = directory
        self.agents: dict[str, Path] = {}
        self.processes: list[subprocess.Popen[bytes]] = []
        self.paths: ShortPaths | None = None

    def start(self) -> None:
        for ssh_id, paths in self.sources.items():
            if not paths:
                continue
            first = Path(paths[0])
            if len(paths) == 1 and first.is_socket():
                continue
            self.agents[ssh_id] = self._serve_keys(ssh_id, [Path(p) for p in paths])

    def _serve_keys(self, ssh_id: str, keys: list[Path]) -> Path:
        agent, adder = shutil.which("ssh-agent"), shutil.which("ssh-add")
        if agent is None or adder is None:
            raise OptionsError(f"--ssh {ssh_id}=KEY: serving key files needs OpenSSH's ssh-agent and ssh-add, which "
                               f"are not installed; pass an agent's socket instead (--ssh {ssh_id}=SOCKET)")
        for key in keys:
            if not key.is_file():
                raise OptionsError(f"--ssh {ssh_id}: {key} is neither an agent's socket nor a key file")
        if self.paths is None:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.paths = ShortPaths(self.directory)
        name = f"agent-{len(self.agents)}.sock"
        address = self.paths(name)
        process = subprocess.Popen([agent, "-D", "-a", address], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.processes.append(process)
        deadline = time.monotonic() + START_TIMEOUT
        while not (self.directory / name).is_socket():
            if process.poll() is not None or time.monotonic() > deadline:
                detail = process.stderr.read().decode(errors="replace").strip() if process.stderr else ""
                raise OptionsError(f"--ssh {ssh_id}: ssh-agent did not start ({detail or 'no socket'})")
            time.sleep(0.01)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SSH_AUTH_SOCK": address}
        added = subprocess.run([adder, "-q", *map(str, keys)], env=env, stdin=subprocess.DEVNULL,
                               capture_output=True, check=False)
        if added.returncode != 0:
            detail = added.stderr.decode(errors="replace").strip()
            raise OptionsError(f"--ssh {ssh_id}: ssh-add could not load the key file(s): {detail}")
        log.info("ssh: agent for --ssh %s serves %d key file(s)", ssh_id, len(keys))
        return self.directory / name

    def upstream(self, ssh_id: str) -> Path | None:
        """The socket of the agent for ``ssh_id``; None when no ``--ssh`` gives it (or $SSH_AUTH_SOCK is unset)."""
        if ssh_id in self.agents:
            return self.agents[ssh_id]
        if ssh_id not in self.sources:
            return None
        paths = self.sources[ssh_id]
        if paths:
            return Path(paths[0])
        sock = self.environ.get("SSH_AUTH_SOCK")
        return Path(sock) if sock else None

    def sockets(self) -> list[Path]:
        """The agents' sockets ``--ssh`` names (not those of key files, which lamina starts in the work directory):
        the inplace sandbox leaves them alone when it clears ``/``, where a CI job's ``ssh-agent`` listens
        (``/tmp/ssh-*/agent.*``)."""
        out = []
        for ssh_id, paths in self.sources.items():
            if len(paths) <= 1:
                path = self.upstream(ssh_id)
                if path is not None and (not paths or path.is_socket()):
                    out.append(path)
        return out

    def close(self) -> None:
        for process in self.processes:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
            if process.poll() is None:
                process.kill()
                process.wait()
            if process.stderr is not None:
                process.stderr.close()
        self.processes.clear()
        if self.paths is not None:
            self.paths.close()
            self.paths = None


def _connect(path: Path) -> socket.socket:
    short = ShortPaths(path.parent)
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(short(path.name))
        except OSError:
            conn.close()
            raise
        return conn
    finally:
        short.close()


def _pump(source: socket.socket, dest: socket.socket) -> None:
    try:
        while data := source.recv(RELAY_CHUNK):
            dest.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dest.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def forwarded(upstream: Path, path: Path, *, uid: int, gid: int, mode: int) -> Iterator[Path]:
    """A socket at ``path`` (owner and mode set) that relays each connection to the agent at ``upstream``, until
    the block ends; yields ``path``. Connections still open then are closed."""
    short = ShortPaths(path.parent)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stop = threading.Event()
    open_sockets: list[socket.socket] = []
    lock = threading.Lock()

    def serve(client: socket.socket) -> None:
        try:
            agent = _connect(upstream)
        except OSError as exc:
            log.warning("ssh: cannot reach the agent at %s: %s", upstream, exc.strerror or exc)
            client.close()
            return
        with lock:
            open_sockets.append(agent)
        back = threading.Thread(target=_pump, args=(agent, client), daemon=True)
        back.start()
        _pump(client, agent)
        back.join()
        client.close()
        agent.close()

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            with lock:
                open_sockets.append(client)
            threading.Thread(target=serve, args=(client,), daemon=True).start()

    try:
        listener.bind(short(path.name))
        os.chown(path, uid, gid)
        os.chmod(path, mode)
        listener.listen(16)
        listener.settimeout(0.1)
        acceptor = threading.Thread(target=accept, name="ssh-forward", daemon=True)
        acceptor.start()
        try:
            yield path
        finally:
            stop.set()
            acceptor.join()
            with lock:
                for sock in open_sockets:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
    finally:
        listener.close()
        short.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
