"""Making the runner ``--sandbox`` names, and ending a build cleanly on SIGTERM/SIGHUP.

``terminating()`` turns SIGTERM and SIGHUP into an exception in the main thread (once: a second signal while the
build cleans up is ignored), so every ``finally`` runs: the runner kills the command's process group or PID
namespace, temporary mountpoints go, the work directory is removed, and a push stops before the manifest (a
registry never sees a tag for a half-pushed image).
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from lamina.errors import LaminaError, SandboxError
from lamina.sandbox.base import Runner


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: unwinds like Ctrl-C (``except Exception`` cannot swallow it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class Interrupted(LaminaError):
    """The build was ended by a signal; exit status 128 + its number."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by {signal.Signals(signum).name}; the build was cleaned up")
        self.exit_code = 128 + signum


@contextmanager
def terminating() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired: list[int] = []

    def handler(signum: int, _frame: object) -> None:
        if not fired:
            fired.append(signum)
            raise Terminated(signum)

    watched = (signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, handler) for sig in watched}
    try:
        yield
    except Terminated as exc:
        raise Interrupted(exc.signum) from None
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def make_runner(name: str, *, warn: Callable[[str], None], force: bool = False) -> Runner:
    """The runner for a chosen sandbox (``rootless`` is not a runner: it re-executes the build, see rootless.py)."""
    if name == "namespace":
        from lamina.sandbox.namespace import NamespaceRunner
        return NamespaceRunner()
    if name == "chroot":
        from lamina.sandbox.chroot import ChrootRunner
        return ChrootRunner(warn)
    if name == "inplace":
        from lamina.sandbox.inplace import InplaceRunner
        return InplaceRunner(force=force, warn=warn)
    raise SandboxError(f"no runner named {name}")


def first_missing(path: Path) -> Path | None:
    """The top-most ancestor of ``path`` (or ``path`` itself) that does not exist yet: what creating it makes."""
    path = Path(os.path.abspath(path))
    if os.path.lexists(path):
        return None
    while not os.path.lexists(path.parent) and path.parent != path:
        path = path.parent
    return path


@contextmanager
def cleanup_created(paths: Iterable[Path | None], enabled: bool) -> Iterator[None]:
    """``--cleanup``: remove the directories the build creates (work dir, mount cache, blob cache) when it ends."""
    created = [p for p in (first_missing(path) for path in paths if path is not None) if p is not None]
    try:
        yield
    finally:
        if enabled:
            for path in created:
                shutil.rmtree(path, ignore_errors=True)
