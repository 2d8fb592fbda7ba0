"""The ``inplace`` runner, Kaniko's way: the container's ``/`` is the build's root filesystem.

Only inside lamina's runtime image (the marker file ``/lamina/.lamina-runtime``, which the image's Dockerfile
creates), where lamina's own files live under ``/lamina`` and survive the build; anywhere else it is refused unless
``--force``, because the build replaces the files of ``/``. It is the last resort of ``--sandbox auto``: a container
without CAP_SYS_CHROOT cannot use the chroot runner.

What is here: the refusal logic (``check_allowed``), the paths a build of ``/`` must leave alone (``ignored_paths``:
/lamina, /proc, /sys, /dev and every other mountpoint, as Kaniko's ignore list does), and the runner, which runs the
command in ``/`` without chroot (user, groups, environment and working directory as Docker sets them; the process
group killed when it ends). Unpacking the base image into ``/`` and snapshotting ``/`` with these exclusions belong
to the build executor, which does not do it yet: until it does, the runner refuses any rootfs but ``/``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path

from lamina.errors import SandboxError
from lamina.sandbox.base import RunSpec
from lamina.sandbox.chroot import helper_environment, run_group
from lamina.sandbox.detect import RUNTIME_MARKER
from lamina.sandbox.namespace import _jsonable

LAMINA_HOME = "/lamina"
ALWAYS_IGNORED = (LAMINA_HOME, "/proc", "/sys", "/dev", "/etc/mtab", "/etc/resolv.conf", "/etc/hosts",
                  "/etc/hostname", "/var/run", "/run/secrets")


def check_allowed(*, force: bool, marker: Path = RUNTIME_MARKER) -> None:
    if marker.exists() or force:
        return
    raise SandboxError(f"--sandbox inplace makes / the build's root filesystem and runs only inside lamina's "
                       f"runtime image ({marker} is missing); pass --force to do it anyway")


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def ignored_paths(mountinfo: str, extra: Iterable[str] = ()) -> tuple[str, ...]:
    """The absolute paths a build of ``/`` must neither unpack over, nor snapshot, nor clean: the fixed list plus
    every mountpoint but ``/`` itself (``/proc/self/mountinfo``, field 5), sorted, without duplicates."""
    paths = set(ALWAYS_IGNORED) | {p for p in extra if p.startswith("/")}
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4:
            point = _unescape(fields[4])
            if point != "/":
                paths.add(point.rstrip("/"))
    return tuple(sorted(paths))


def is_ignored(path: str, ignored: Iterable[str]) -> bool:
    return any(path == p or path.startswith(p + "/") for p in ignored)


class InplaceRunner:
    name = "inplace"

    def __init__(self, *, force: bool = False, marker: Path = RUNTIME_MARKER) -> None:
        check_allowed(force=force, marker=marker)

    def run(self, spec: RunSpec, output: Callable[[bytes], None]) -> int:
        if spec.rootfs.resolve() != Path("/"):
            raise SandboxError("the inplace sandbox runs in / only, and lamina's executor still builds in a work "
                               "directory: use --sandbox chroot (or namespace, rootless) instead")
        if spec.mounts:
            raise SandboxError("RUN --mount is not supported by the inplace sandbox")
        with tempfile.NamedTemporaryFile("w", suffix=".json", dir=LAMINA_HOME if os.path.isdir(LAMINA_HOME)
                                         else None, delete=False) as f:
            json.dump(_jsonable(asdict(spec)), f)
            f.close()
            try:
                return run_group([sys.executable, "-m", "lamina.sandbox.inplace", f.name], output,
                                 env=helper_environment())
            finally:
                os.unlink(f.name)


def main(argv: list[str]) -> int:
    """The helper: become the command (user, groups, cwd, environment), in / without chroot."""
    spec = json.loads(Path(argv[1]).read_text())
    try:
        secret_env = {}
        for name, path in spec.get("secret_env") or []:
            secret_env[str(name)] = Path(str(path)).read_text(encoding="utf-8", errors="surrogateescape")
        os.chdir(str(spec["cwd"]))
        os.setgroups([int(g) for g in spec["groups"]])
        os.setgid(int(spec["gid"]))
        os.setuid(int(spec["uid"]))
        env = dict(str(item).partition("=")[::2] for item in spec["env"])
        env.update(secret_env)
        argv_ = [str(a) for a in spec["argv"]]
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        os.execvpe(argv_[0], argv_, env)
    except FileNotFoundError as exc:
        if exc.filename is not None and exc.filename == spec.get("cwd"):
            sys.stderr.write(f"lamina: working directory {exc.filename} does not exist\n")
            return 126
        sys.stderr.write(f'lamina: exec: "{spec["argv"][0]}": executable file not found in $PATH\n')
        return 127
    except PermissionError as exc:
        sys.stderr.write(f"lamina: exec: permission denied: {exc.filename or spec['argv']}\n")
        return 126
    except OSError as exc:
        sys.stderr.write(f"lamina: could not start the command: {exc}\n")
        return 125
    return 125  # not reached: execvpe does not return


if __name__ == "__main__":
    sys.exit(main(sys.argv))
