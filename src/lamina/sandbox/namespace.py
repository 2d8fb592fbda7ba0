"""The ``namespace`` runner: RUN in new mount, PID, UTS and IPC namespaces, chrooted into the rootfs (as root).

Mountpoints the image lacks (/proc, /dev, /sys, /etc/resolv.conf, /etc/hosts) are created for the run and removed
afterwards, with their parent directory's mtime restored, so they never show up in the layer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import lamina
from lamina.errors import SandboxError
from lamina.sandbox.base import RunSpec

MOUNT_DIRS = ("proc", "dev", "sys")
MOUNT_FILES = ("etc/resolv.conf", "etc/hosts")


@contextmanager
def temporary_mountpoints(rootfs: Path) -> Iterator[None]:
    """Create the mountpoints the rootfs lacks; remove them (and restore parent mtimes) afterwards."""
    created: list[Path] = []
    parents: dict[Path, tuple[int, int]] = {}

    def remember(parent: Path) -> None:
        if parent not in parents:
            st = parent.lstat()
            parents[parent] = (st.st_atime_ns, st.st_mtime_ns)

    def ensure(rel: str, directory: bool) -> None:
        path = rootfs
        for i, part in enumerate(rel.split("/")):
            parent, path = path, path / part
            if os.path.lexists(path):
                continue
            last = i == len(rel.split("/")) - 1
            remember(parent)
            if last and not directory:
                path.touch(mode=0o644)
            else:
                path.mkdir(mode=0o755)
            created.append(path)

    try:
        for rel in MOUNT_DIRS:
            ensure(rel, True)
        for rel in MOUNT_FILES:
            ensure(rel, False)
        yield
    finally:
        for path in reversed(created):
            try:
                if path.is_dir() and not path.is_symlink():
                    path.rmdir()
                else:
                    path.unlink()
            except OSError:
                pass
        for parent, (atime, mtime) in parents.items():
            try:
                os.utime(parent, ns=(atime, mtime), follow_symlinks=False)
            except OSError:
                pass


class NamespaceRunner:
    name = "namespace"

    def run(self, spec: RunSpec, output: Callable[[bytes], None]) -> int:
        if spec.rootfs.resolve() == Path("/"):
            raise SandboxError("refusing to run in / as the rootfs")
        payload = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(spec).items()}
        package_root = str(Path(lamina.__file__).resolve().parent.parent)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": package_root, "LANG": "C.UTF-8"}
        with temporary_mountpoints(spec.rootfs), tempfile.NamedTemporaryFile(
                "w", suffix=".json", dir=spec.rootfs.parent, delete=False) as f:
            json.dump(payload, f)
            f.close()
            try:
                proc = subprocess.Popen([sys.executable, "-m", "lamina.sandbox.nsexec", f.name], env=env,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        start_new_session=True)
            except OSError as exc:
                raise SandboxError(f"could not start the namespace sandbox: {exc}") from exc
            try:
                assert proc.stdout is not None
                while chunk := os.read(proc.stdout.fileno(), 65536):
                    output(chunk)
                return proc.wait()
            except BaseException:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                raise
            finally:
                os.unlink(f.name)
