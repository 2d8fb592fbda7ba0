"""A real Docker engine for the tests: Debian's ``dockerd``, private to the test session.

It is the environment users run lamina in (a GitHub container action, a GitLab Docker executor job), never a
dependency of lamina itself. Everything of its own lives under one temporary directory: ``--data-root``,
``--exec-root``, ``--pidfile`` and the API socket; no iptables rules, no bridge (containers use ``--network host``).
It runs in a session of its own (``setsid``) and is stopped by its pid.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DOCKERD = "/usr/sbin/dockerd"
DOCKER = "/usr/bin/docker"  # Debian's client (docker.io), matching the engine
START_TIMEOUT = 60.0

# `docker run --privileged` fails on this VM (root lacks CAP_SYS_RESOURCE, runc cannot set it): the equivalent
PRIVILEGED = ("--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE", "--security-opt", "seccomp=unconfined",
              "--security-opt", "apparmor=unconfined")


class EngineError(RuntimeError):
    """dockerd did not start, or a docker command failed."""


@dataclass
class DockerEngine:
    root: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def environ(self) -> dict[str, str]:
        """For the docker client: this engine, and a client config directory of its own."""
        config = self.root / "client-config"
        config.mkdir(exist_ok=True)
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DOCKER_HOST": self.host,
                "DOCKER_CONFIG": str(config), "HOME": str(self.root)}

    def docker(self, *args: str, input: bytes | None = None, timeout: float = 600,
               check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([DOCKER, *args], env=self.environ(), input=input.decode() if input else None,
                                capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise EngineError(f"docker {' '.join(args[:3])} ...: exit {result.returncode}\n{result.stdout[-3000:]}\n"
                              f"{result.stderr[-3000:]}")
        return result

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        # containerd-shims of containers still running would keep the exec root busy: kill what is left in it
        _kill_leftovers(self.root)
        subprocess.run(["umount", "-R", "-l", str(self.root / "data")], capture_output=True, check=False)
        subprocess.run(["umount", "-R", "-l", str(self.root / "exec")], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def _kill_leftovers(root: Path) -> None:
    marker = str(root)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and int(entry.name) != os.getpid():
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except OSError:
                pass


def start_engine(root: Path, *, insecure_registries: Sequence[str] = ()) -> DockerEngine:
    """Start dockerd with everything under ``root`` (a short path: the socket path must fit in 108 bytes)."""
    if not os.access(DOCKERD, os.X_OK):
        raise EngineError("dockerd is not installed (apt-get install docker.io)")
    root.mkdir(parents=True, exist_ok=True)
    config = {"insecure-registries": list(insecure_registries), "features": {"buildkit": False},
              "log-driver": "json-file"}
    (root / "daemon.json").write_text(json.dumps(config))
    log_path = root / "dockerd.log"
    argv = [DOCKERD, "--config-file", str(root / "daemon.json"), "--data-root", str(root / "data"),
            "--exec-root", str(root / "exec"), "--pidfile", str(root / "dockerd.pid"), "--host",
            f"unix://{root / 'docker.sock'}", "--iptables=false", "--ip6tables=false", "--bridge=none",
            "--containerd-namespace", f"lamina-tests-{os.getpid()}", "--containerd-plugins-namespace",
            f"lamina-tests-{os.getpid()}-plugins"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    engine = DockerEngine(root, process, log_path)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EngineError(f"dockerd exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        if engine.socket.exists() and engine.docker("version", "--format", "{{.Server.Version}}",
                                                    check=False).returncode == 0:
            return engine
        time.sleep(0.3)
    engine.stop()
    raise EngineError(f"dockerd did not answer within {START_TIMEOUT} s:\n{log_path.read_text()[-3000:]}")
