"""Real registries for the tests: Debian's docker-registry (the CNCF distribution server) on loopback.

Each instance has its own config, data directory and free port; ``htpasswd`` puts it behind Basic auth
(bcrypt entries made with ``htpasswd -B`` from apache2-utils).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import requests

REGISTRY_BIN = "docker-registry"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningRegistry:
    host: str  # "127.0.0.1:PORT"
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    username: str | None = None
    password: str | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_registry(workdir: Path, *, htpasswd: tuple[str, str] | None = None) -> RunningRegistry:
    """Start docker-registry on 127.0.0.1 with storage under ``workdir``; return when it answers /v2/."""
    if shutil.which(REGISTRY_BIN) is None:
        raise RuntimeError("docker-registry is not installed (apt-get install docker-registry)")
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "data"
    data.mkdir(exist_ok=True)
    port = free_port()
    auth = ""
    if htpasswd is not None:
        user, password = htpasswd
        pw_file = workdir / "htpasswd"
        out = subprocess.run(["htpasswd", "-Bbn", user, password], check=True, capture_output=True)
        pw_file.write_bytes(out.stdout)
        auth = f"auth:\n  htpasswd:\n    realm: lamina-test\n    path: {pw_file}\n"
    config = workdir / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n  accesslog:\n    disabled: false\n"
        f"storage:\n  filesystem:\n    rootdirectory: {data}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: lamina-test-secret\n"
        + auth
    )
    log_path = workdir / "registry.log"
    with open(log_path, "wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    reg = RunningRegistry(f"127.0.0.1:{port}", data, proc, log_path,
                          htpasswd[0] if htpasswd else None, htpasswd[1] if htpasswd else None)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {log_path.read_text(errors='replace')[-2000:]}")
        try:
            r = requests.get(f"{reg.url}/v2/", timeout=1)
            if r.status_code in (200, 401):
                return reg
        except requests.RequestException:
            pass
        time.sleep(0.1)
    reg.stop()
    raise RuntimeError(f"docker-registry did not answer on {reg.host}")
