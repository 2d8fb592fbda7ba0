"""The ``namespace`` runner: RUN in new mount, PID, UTS and IPC namespaces, chrooted into the rootfs (as root).

Mountpoints the image lacks (/proc, /dev, /sys, /etc/resolv.conf, /etc/hosts, and the targets of ``RUN --mount``)
are created for the run and removed afterwards, with their parent directory's mtime restored, so they never show up
in the layer. ``network="none"`` adds a network namespace of its own (only ``lo``, up).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import lamina
from lamina.errors import RootfsError, SandboxError
from lamina.rootfs.paths import resolve_in_root
from lamina.sandbox.base import RunSpec

MOUNT_DIRS = ("proc", "dev", "sys")
MOUNT_FILES = ("etc/resolv.conf", "etc/hosts")


@contextmanager
def temporary_mountpoints(rootfs: Path, extra: Sequence[tuple[str, bool]] = ()) -> Iterator[None]:
    """Create the mountpoints the rootfs lacks; remove them (and restore parent mtimes) afterwards.

    ``extra`` adds (absolute target, is a directory) pairs (``RUN --mount`` targets), resolved inside the rootfs as
    the image sees them (symlinks followed, never out of the rootfs); their missing parents are created too. A
    parent's times are restored only when the run left them as they were after the mountpoints were made.
    """
    created: list[Path] = []
    parents: dict[Path, tuple[int, int]] = {}

    def remember(parent: Path) -> None:
        if parent not in parents:
            st = parent.lstat()
            parents[parent] = (st.st_atime_ns, st.st_mtime_ns)

    def ensure(rel: str, directory: bool) -> None:
        path = rootfs
        parts = [p for p in rel.split("/") if p]
        for i, part in enumerate(parts):
            parent, path = path, path / part
            if os.path.islink(path):
                return  # never create through a link the image holds: it may point out of the rootfs (nsexec
                # skips such mountpoints too)
            if os.path.lexists(path):
                continue
            last = i == len(parts) - 1
            remember(parent)
            try:
                if last and not directory:
                    path.touch(mode=0o644)
                else:
                    path.mkdir(mode=0o755)
            except OSError as exc:
                raise SandboxError(f"cannot create the mountpoint /{rel} in the rootfs: {exc.strerror or exc}") from None
            created.append(path)

    after: dict[Path, int] = {}
    try:
        for rel in MOUNT_DIRS:
            ensure(rel, True)
        for rel in MOUNT_FILES:
            ensure(rel, False)
        for target, directory in extra:
            try:
                resolved = resolve_in_root(rootfs, target)
            except RootfsError as exc:
                raise SandboxError(f"mount target {target}: {exc}") from None
            ensure(resolved.relative_to(rootfs).as_posix(), directory)
        for parent in parents:
            after[parent] = parent.lstat().st_mtime_ns
        yield
    finally:
        untouched = set()
        for parent, mtime in after.items():
            try:
                if parent.lstat().st_mtime_ns == mtime:
                    untouched.add(parent)
            except OSError:
                pass
        for path in reversed(created):
            try:
                if path.is_dir() and not path.is_symlink():
                    path.rmdir()
                else:
                    path.unlink()
            except OSError:
                pass
        for parent, (atime, mtime) in parents.items():
            if after and parent not in untouched:
                continue
            try:
                os.utime(parent, ns=(atime, mtime), follow_symlinks=False)
            except OSError:
                pass


def _jsonable(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class NamespaceRunner:
    name = "namespace"
    places_mounts = False

    def run(self, spec: RunSpec, output: Callable[[bytes], None]) -> int:
        if spec.rootfs.resolve() == Path("/"):
            raise SandboxError("refusing to run in / as the rootfs")
        payload = _jsonable(asdict(spec))
        package_root = str(Path(lamina.__file__).resolve().parent.parent)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": package_root, "LANG": "C.UTF-8"}
        extra = [(m.target, m.directory) for m in spec.mounts]
        with temporary_mountpoints(spec.rootfs, extra), tempfile.NamedTemporaryFile(
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
