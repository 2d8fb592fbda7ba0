"""Which RUN sandbox fits where lamina runs: ``choose`` (pure, fed with ``Facts``) and ``probe`` (gathers them).

``auto`` prefers, in order: ``namespace`` (root, namespaces allowed), ``rootless`` (an ordinary user with
subordinate ids, user namespaces allowed, newuidmap/newgidmap installed), ``inplace`` (root without namespaces,
inside lamina's runtime image: an unprivileged container running lamina's image, where the container's own /proc,
/sys and /dev are what RUN needs and only a build in ``/`` can use them), ``chroot`` (root without namespaces but
with CAP_SYS_CHROOT anywhere else: it never touches the machine's ``/``, but RUN has no /proc or /sys).
"""

from __future__ import annotations

import ctypes
import os
import pwd
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lamina.errors import SandboxError
from lamina.syscalls import (
    CAP_SYS_CHROOT,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUSER,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_REC,
)

SANDBOXES = ("auto", "namespace", "rootless", "chroot", "inplace")
RUNTIME_MARKER = Path("/lamina/.lamina-runtime")
ROOTLESS_INNER_ENV = "LAMINA_ROOTLESS_INNER"  # set in the re-executed lamina inside the user namespace


@dataclass(frozen=True)
class Facts:
    euid: int
    capabilities: int  # the effective capability set, as a bit mask
    can_unshare: bool  # new mount + PID namespaces and a mount in them work (root's namespace runner)
    can_unshare_user: bool  # a new user namespace can be created (the rootless runner)
    subuids: tuple[tuple[int, int], ...] = ()  # (first, count) ranges of /etc/subuid for this user
    subgids: tuple[tuple[int, int], ...] = ()
    has_newidmap: bool = False  # newuidmap and newgidmap installed
    in_runtime_image: bool = False  # /lamina/.lamina-runtime exists
    rootless_inner: bool = False  # already re-executed inside the rootless user namespace
    refusals: tuple[str, ...] = field(default=(), compare=False)  # why probes failed, for messages

    def has(self, cap: int) -> bool:
        return bool(self.capabilities >> cap & 1)


@dataclass(frozen=True)
class Choice:
    name: str  # "namespace", "rootless", "chroot" or "inplace"
    reason: str  # one line: why this one


def _why_not(facts: Facts) -> str:
    return "; ".join(facts.refusals) if facts.refusals else "refused"


def _namespace_problem(facts: Facts) -> str | None:
    if facts.euid != 0:
        return "needs root (use --sandbox rootless as an ordinary user)"
    if not facts.can_unshare:
        return f"mount/PID namespaces are not allowed here ({_why_not(facts)})"
    return None


def _rootless_problem(facts: Facts) -> str | None:
    if facts.euid == 0:
        return "lamina already runs as root (use --sandbox namespace)"
    if not facts.can_unshare_user:
        return f"user namespaces are not allowed here ({_why_not(facts)})"
    if not facts.subuids or not facts.subgids:
        return "the user has no subordinate ids in /etc/subuid and /etc/subgid (e.g. usermod --add-subuids " \
               "100000-165535 --add-subgids 100000-165535 USER)"
    if not facts.has_newidmap:
        return "newuidmap/newgidmap are not installed (apt-get install uidmap)"
    return None


def _chroot_problem(facts: Facts) -> str | None:
    if facts.euid != 0:
        return "needs root (use --sandbox rootless as an ordinary user)"
    if not facts.has(CAP_SYS_CHROOT):
        return "needs CAP_SYS_CHROOT"
    return None


def _inplace_problem(facts: Facts, force: bool) -> str | None:
    if facts.euid != 0:
        return "needs root"
    if not facts.in_runtime_image and not force:
        return f"runs only inside lamina's runtime image ({RUNTIME_MARKER} is missing): it makes / the build's " \
               "root filesystem; pass --force to do it anyway"
    return None


def choose(requested: str, facts: Facts, *, force: bool = False) -> Choice:
    """The sandbox for ``--sandbox requested``; SandboxError when it cannot run here (the reason says why)."""
    if requested not in SANDBOXES:
        raise SandboxError(f"--sandbox {requested}: expected one of {', '.join(SANDBOXES)}")
    if facts.rootless_inner:
        return Choice("namespace", "inside the rootless user namespace")
    problems = {
        "namespace": _namespace_problem(facts),
        "rootless": _rootless_problem(facts),
        "chroot": _chroot_problem(facts),
        "inplace": _inplace_problem(facts, force),
    }
    if requested != "auto":
        problem = problems[requested]
        if problem is not None:
            raise SandboxError(f"--sandbox {requested}: {problem}")
        return Choice(requested, "asked for with --sandbox")
    if problems["namespace"] is None:
        return Choice("namespace", "running as root with mount and PID namespaces allowed")
    if problems["rootless"] is None:
        return Choice("rootless", f"running as uid {facts.euid} with subordinate ids and user namespaces")
    if facts.in_runtime_image and problems["inplace"] is None:
        return Choice("inplace", f"inside lamina's runtime image without namespaces ({_why_not(facts)}): the "
                      "container's own / is the build's root filesystem, so RUN has its /proc, /sys and /dev")
    if problems["chroot"] is None:
        return Choice("chroot", f"root without namespaces ({_why_not(facts)}) but with CAP_SYS_CHROOT: "
                      "an unprivileged container (RUN has no /proc or /sys; lamina's runtime image uses inplace)")
    detail = "; ".join(f"{name}: {problem}" for name, problem in problems.items() if problem)
    raise SandboxError(f"no sandbox can run RUN steps here ({detail})")


# ---------------------------------------------------------------------------------------------------------------
# probing


def effective_capabilities(status: str | None = None) -> int:
    if status is None:
        try:
            status = Path("/proc/self/status").read_text()
        except OSError:
            return 0
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def parse_subordinate(text: str, user: str, uid: int) -> tuple[tuple[int, int], ...]:
    """The ranges ``/etc/subuid`` (or subgid) gives ``user`` (by name or numeric id)."""
    out: list[tuple[int, int]] = []
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) != 3 or line.startswith("#"):
            continue
        name, first, count = parts
        if name not in (user, str(uid)) or not first.isdigit() or not count.isdigit() or int(count) == 0:
            continue
        out.append((int(first), int(count)))
    return tuple(out)


def _child_probe(flags: int, mount: bool) -> str | None:
    """Fork; the child unshares ``flags`` (with ``mount``: makes / private and mounts a /proc of the new PID
    namespace, all inside its own mount namespace). None when it worked, else why."""
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before fork: the child must not take the loader's locks
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child only reports through the pipe
        os.close(read_end)
        message = b""
        try:
            if libc.unshare(flags) != 0:
                message = f"unshare: {os.strerror(ctypes.get_errno())}".encode()
            elif mount and libc.mount(None, b"/", None, ctypes.c_ulong(MS_REC | MS_PRIVATE), None) != 0:
                message = f"mount: {os.strerror(ctypes.get_errno())}".encode()
            elif mount:  # a new /proc, from PID 1 of the new PID namespace (masked /proc paths forbid it)
                inner = os.fork()
                if inner == 0:
                    failed = libc.mount(b"proc", b"/proc", b"proc", ctypes.c_ulong(MS_NOSUID | MS_NODEV | MS_NOEXEC),
                                        None) != 0
                    if failed:
                        os.write(write_end, f"mount proc: {os.strerror(ctypes.get_errno())}".encode())
                    os._exit(0)
                os.waitpid(inner, 0)
        except BaseException as exc:  # noqa: BLE001
            message = str(exc).encode() or b"failed"
        os.write(write_end, message)
        os._exit(0)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 4096):
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(pid, 0)
    text = b"".join(chunks).decode(errors="replace")
    return text or None


def probe(environ: Mapping[str, str] | None = None) -> Facts:
    env = os.environ if environ is None else environ
    euid = os.geteuid()
    refusals: list[str] = []
    can_unshare = can_unshare_user = False
    if euid == 0:
        problem = _child_probe(CLONE_NEWNS | CLONE_NEWPID, mount=True)
        can_unshare = problem is None
        if problem:
            refusals.append(problem)
    else:
        problem = _child_probe(CLONE_NEWUSER, mount=False)
        can_unshare_user = problem is None
        if problem:
            refusals.append(problem)
    try:
        entry = pwd.getpwuid(os.getuid())
        name, uid = entry.pw_name, entry.pw_uid
    except KeyError:
        name, uid = str(os.getuid()), os.getuid()

    def ranges(path: str) -> tuple[tuple[int, int], ...]:
        try:
            return parse_subordinate(Path(path).read_text(), name, uid)
        except OSError:
            return ()

    return Facts(euid=euid, capabilities=effective_capabilities(), can_unshare=can_unshare,
                 can_unshare_user=can_unshare_user, subuids=ranges("/etc/subuid"), subgids=ranges("/etc/subgid"),
                 has_newidmap=bool(shutil.which("newuidmap") and shutil.which("newgidmap")),
                 in_runtime_image=RUNTIME_MARKER.exists(), rootless_inner=env.get(ROOTLESS_INNER_ENV) == "1",
                 refusals=tuple(refusals))
