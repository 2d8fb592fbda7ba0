"""``RUN --mount`` and ``RUN --network``: from the Dockerfile's words to the sandbox's ``MountSpec``s.

``parse_run_mounts`` expands and parses the raw ``--mount`` values (errors name the Dockerfile line).
``prepare_mounts`` is a context manager around one RUN: it makes what the mounts need on the host and yields a
``RunMounts`` for the ``RunSpec``; on exit it releases cache locks and deletes everything it made (secret files
included). Nothing it makes is inside the stage's rootfs, so none of it can reach a layer:

* ``bind``: a file or directory of the build context (``.dockerignore`` applies) or of ``from=`` (a stage or image
  rootfs, looked up by the caller's ``stage_rootfs``). Read-only mounts bind the source itself, read-only;
  ``rw`` mounts bind a copy made in the scratch directory (``clone_tree``, reflinked where possible), so writes are
  discarded.
* ``cache``: a directory under ``cache_dir`` (one per id, its name sanitised) kept across builds; created with the
  mount's mode/uid/gid, or as a copy of ``from=``'s ``source`` with its own (see ``CacheMount``);
  ``sharing=locked`` holds an exclusive ``flock`` for the whole RUN, ``sharing=private`` takes another directory
  when the first is in use.
* ``tmpfs``: a fresh tmpfs, read-only with ``ro``.
* ``secret``: the value (from ``--secret id=...,src=FILE`` or ``env=VAR``, read only now) is written to a file in
  the scratch directory with the mount's mode and owner and bound read-only at the target; ``env=NAME`` also hands
  the sandbox a file from which it sets ``NAME`` just before exec. A missing secret is an error naming its id when
  ``required``; otherwise its file is skipped and its variable set to the empty string (as BuildKit's exec op
  does). Values never reach the spec JSON, the history, the logs or the image.
* ``ssh``: a socket of the RUN's own, relaying to the agent ``--ssh ID`` names (``ssh_agents.py``), at the target
  or ``/run/buildkit/ssh_agent.<n>``; the first one is ``SSH_AUTH_SOCK`` unless the image sets it, as BuildKit
  does. A missing agent is skipped, or an error naming its id when ``required``.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from lamina.build.context import BuildContext
from lamina.build.handlers.metadata import expand
from lamina.build.ssh_agents import SshAgents, forwarded
from lamina.build.state import StageState
from lamina.dockerfile.instructions import Run
from lamina.dockerfile.mounts import (
    BindMount,
    CacheMount,
    Mount,
    SecretMount,
    SshMount,
    TmpfsMount,
    parse_mount,
)
from lamina.errors import DockerfileError, RootfsError
from lamina.rootfs.clone import clone_tree
from lamina.rootfs.paths import resolve_in_root
from lamina.sandbox.base import MountSpec

# id, "file", "env" or "auto" (the variable named like the id if set, else the file), the path or the variable
SecretSource = tuple[str, str, str]
PRIVATE_ATTEMPTS = 64
SSH_AGENT_DIR = "/run/buildkit"  # where BuildKit puts a RUN's SSH agent sockets


@dataclass(frozen=True)
class RunMounts:
    mounts: tuple[MountSpec, ...] = ()
    secret_env: tuple[tuple[str, Path], ...] = ()  # for RunSpec.secret_env
    scratch: Path | None = None  # for RunSpec.scratch: a private directory, removed after the RUN
    ssh_auth_sock: str | None = None  # the first SSH mount's target: SSH_AUTH_SOCK, unless the image sets it


def run_network(inst: Run) -> str:
    """``RunSpec.network`` for ``RUN --network``: ``none`` isolates; ``default`` and ``host`` use the host's network
    (lamina's sandbox never had a network namespace of its own: the default *is* the host's)."""
    return "none" if inst.network == "none" else "default"


def parse_run_mount(state: StageState, inst: Run, raw: str, escape: str) -> Mount:
    """One ``--mount`` value parsed, each field's value expanded with the stage's ARG/ENV; a bad one is a
    DockerfileError naming the line."""
    env = state.expansion_env()
    try:
        return parse_mount(raw, state.workdir, lambda value: expand(inst, value, env, escape))
    except ValueError as exc:
        raise inst.error(f"--mount={raw}: {exc}", column=inst.column_of(raw)) from None


def parse_run_mounts(state: StageState, inst: Run, escape: str) -> tuple[Mount, ...]:
    return tuple(parse_run_mount(state, inst, raw, escape) for raw in inst.mounts)


def mount_cache_location(configured: Path, *, is_default: bool, places_mounts: bool, workspace: Path,
                         builds_in_root: bool = False) -> Path:
    """Where this build keeps ``RUN --mount=type=cache`` directories. A sandbox that places mounts moves a cache
    directory into the root filesystem and back: a rename only on the same filesystem. When the directory is the
    default one (``~/.cache/lamina/mounts``) and lies on another filesystem than the work directory (a container
    whose HOME is a volume, as /github/home in a GitHub container action), the caches live in the work directory
    for this build instead: renamed, never copied, and gone with the build. An explicit ``--mount-cache-dir`` is
    always used (copied in and out across filesystems, with a warning). ``builds_in_root`` (the inplace sandbox,
    where ``~/.cache`` is inside the root filesystem being built): the default is always the work directory."""
    if not is_default or not places_mounts:
        return configured
    if builds_in_root:
        return workspace / "mount-cache"
    existing = configured
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    try:
        same = existing.stat().st_dev == workspace.stat().st_dev
    except OSError:
        same = False
    return configured if same else workspace / "mount-cache"


def cache_dir_name(cache_id: str) -> str:
    """A directory name for a cache id: readable, safe (no ``/``, no leading dot) and unique (a hash suffix)."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", cache_id).strip("._-")[:64] or "cache"
    return f"{readable}-{hashlib.sha256(cache_id.encode()).hexdigest()[:12]}"


def read_secret(inst: Run, secrets: Sequence[SecretSource], secret_id: str,
                environ: Mapping[str, str]) -> bytes | None:
    """The value of secret ``secret_id``, or None when no ``--secret`` provides it (or its variable is unset)."""
    for given_id, kind, where in reversed(secrets):  # the last --secret for an id wins
        if given_id != secret_id:
            continue
        if kind in ("env", "auto"):
            value = environ.get(where)
            if value is not None:
                return value.encode("utf-8", "surrogateescape")
            if kind == "env" or not os.path.isfile(where):
                return None
        try:
            return Path(where).read_bytes()
        except OSError as exc:
            raise inst.error(f"secret {secret_id}: cannot read {where}: {exc.strerror or exc}") from None
    return None


def _copy_filtered(context: BuildContext, rel: str, dest: Path) -> None:
    """A copy of the context directory ``rel`` without what ``.dockerignore`` excludes."""
    _copy_entry(context.host_path(rel), dest, directory_only=True)
    for child in context.walk(rel):
        sub = child[len(rel):].lstrip("/") if rel else child
        _copy_entry(context.host_path(child), dest / sub, directory_only=False)


def _copy_entry(source: Path, dest: Path, *, directory_only: bool) -> None:
    st = source.lstat()
    if source.is_dir() and not source.is_symlink():
        dest.mkdir(exist_ok=directory_only)
        shutil.copystat(source, dest, follow_symlinks=False)
    elif source.is_symlink():
        dest.symlink_to(os.readlink(source))
    else:
        shutil.copy2(source, dest, follow_symlinks=False)
    os.chown(dest, st.st_uid, st.st_gid, follow_symlinks=False)


class _Preparer:
    def __init__(self, inst: Run, context: BuildContext, stage_rootfs: Callable[[str], Path | None],
                 secrets: Sequence[SecretSource], environ: Mapping[str, str], cache_dir: Path, scratch: Path,
                 stack: ExitStack, exclusive_caches: bool, agents: SshAgents | None) -> None:
        self.inst = inst
        self.context = context
        self.stage_rootfs = stage_rootfs
        self.secrets = secrets
        self.environ = environ
        self.cache_dir = cache_dir
        self.scratch = scratch
        self.stack = stack
        self.exclusive_caches = exclusive_caches  # a placed cache is moved: never two RUNs at once
        self.agents = agents
        self.count = 0

    def error(self, mount: Mount, message: str) -> DockerfileError:
        return self.inst.error(f"--mount type={_kind(mount)}: {message}")

    def fresh(self, prefix: str) -> Path:
        self.count += 1
        return self.scratch / f"{prefix}-{self.count}"

    def from_root(self, mount: BindMount | CacheMount, name: str) -> Path:
        root = self.stage_rootfs(name)
        if root is None:
            raise self.error(mount, f"from={name}: no such stage or image")
        return root

    def bind(self, mount: BindMount) -> MountSpec:
        rel = mount.source.strip("/")
        if mount.from_stage is None:
            where = "the build context"
            if self.context.ignored(rel):
                raise self.error(mount, f"source {mount.source} is excluded by .dockerignore")
            root = self.context.root
        else:
            where = f"from={mount.from_stage}"
            root = self.from_root(mount, mount.from_stage)
        try:
            host = original = resolve_in_root(root, rel)
        except RootfsError as exc:
            raise self.error(mount, f"source {mount.source}: {exc}") from None
        if not os.path.exists(host):
            raise self.error(mount, f"source {mount.source} not found in {where}")
        directory = host.is_dir()
        if mount.from_stage is None and self.context.rules and directory:
            copy = self.fresh("bind")
            _copy_filtered(self.context, host.relative_to(root).as_posix() if host != root else "", copy)
            host = copy
        elif not mount.readonly:
            copy = self.fresh("bind")
            clone_tree(host, copy, f"{mount.source} from {where}")
            host = copy
        return MountSpec(mount.target, "bind", host, mount.readonly, directory, private=host != original)

    def cache_path(self, mount: CacheMount) -> Path:
        base = self.cache_dir / cache_dir_name(mount.id)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        if mount.sharing == "shared" and not self.exclusive_caches:
            return base
        for attempt in range(PRIVATE_ATTEMPTS):
            path = base if attempt == 0 else base.with_name(f"{base.name}.private-{attempt}")
            lock = open(path.with_name(path.name + ".lock"), "a")  # noqa: SIM115 - closed by the stack
            self.stack.callback(lock.close)
            try:
                if mount.sharing in ("locked", "shared"):
                    fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # waits for the other RUN holding it
                else:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    continue
                raise
            return path
        raise self.error(mount, f"id={mount.id}: every private cache directory is in use")

    def cache(self, mount: CacheMount) -> MountSpec:
        path = self.cache_path(mount)
        if not path.is_dir():
            partial = Path(tempfile.mkdtemp(prefix=path.name + ".new-", dir=path.parent))
            try:
                # as BuildKit's dispatchRunMounts: a copy of from's source, its owner and mode kept; but mode, uid
                # or gid without a source make a new empty directory instead (setCacheUIDGID), as does no from
                given = (mount.mode, mount.uid, mount.gid) != (None, None, None)
                seeded = False
                if mount.from_stage is not None and (mount.source != "/" or not given):
                    seed = resolve_in_root(self.from_root(mount, mount.from_stage), mount.source)
                    if seed.is_dir():
                        partial.rmdir()
                        clone_tree(seed, partial, f"{mount.source} from {mount.from_stage}")
                        seeded = True
                if not seeded:
                    os.chown(partial, mount.uid or 0, mount.gid or 0)
                    partial.chmod(0o755 if mount.mode is None else mount.mode)
                try:
                    partial.rename(path)
                except OSError:  # another build made it first: use theirs
                    shutil.rmtree(partial, ignore_errors=True)
            except BaseException:
                shutil.rmtree(partial, ignore_errors=True)
                raise
        host = path
        if mount.from_stage is None and mount.source != "/":
            host = resolve_in_root(path, mount.source)
            host.mkdir(parents=True, exist_ok=True)
        return MountSpec(mount.target, "bind", host, mount.readonly, True, cache=True)

    def secret(self, mount: SecretMount) -> tuple[MountSpec | None, tuple[str, Path] | None]:
        value = read_secret(self.inst, self.secrets, mount.id, self.environ)
        if value is None and mount.required:
            raise self.inst.error(f"secret {mount.id} is required but was not given: pass "
                                  f"--secret id={mount.id},src=PATH (or id={mount.id},env=VARIABLE)")
        spec = None
        if mount.target is not None and value is not None:
            path = self.write_private(self.fresh("secret"), value)
            os.chown(path, mount.uid, mount.gid)
            path.chmod(mount.mode)
            spec = MountSpec(mount.target, "bind", path, True, False, private=True)
        env = None
        if mount.env is not None:  # a missing optional secret still sets its variable, empty, as BuildKit does
            env = (mount.env, self.write_private(self.fresh("secret-env"), value or b""))
        return spec, env

    def ssh(self, mount: SshMount, index: int) -> MountSpec | None:
        """A socket of this RUN's own relaying to the agent ``--ssh`` names (see ssh_agents.py); None for a
        missing optional one, as BuildKit skips it."""
        upstream = self.agents.upstream(mount.id) if self.agents is not None else None
        if upstream is None:
            if mount.required:
                raise self.inst.error(f"ssh agent {mount.id} is required but was not given: pass --ssh {mount.id} "
                                      f"(the agent of $SSH_AUTH_SOCK), --ssh {mount.id}=SOCKET or "
                                      f"--ssh {mount.id}=KEYFILE")
            return None
        if not upstream.is_socket():
            raise self.inst.error(f"--mount type=ssh: the agent socket of --ssh {mount.id} ({upstream}) is missing")
        target = mount.target or f"{SSH_AGENT_DIR}/ssh_agent.{index}"
        path = self.stack.enter_context(forwarded(upstream, self.fresh("ssh"), uid=mount.uid, gid=mount.gid,
                                                  mode=mount.mode))
        return MountSpec(target, "bind", path, False, False, socket=True)

    @staticmethod
    def write_private(path: Path, value: bytes) -> Path:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(value)
        return path


def _kind(mount: Mount) -> str:
    return {BindMount: "bind", CacheMount: "cache", TmpfsMount: "tmpfs", SecretMount: "secret",
            SshMount: "ssh"}[type(mount)]


@contextmanager
def prepare_mounts(inst: Run, mounts: Sequence[Mount], *, context: BuildContext,
                   stage_rootfs: Callable[[str], Path | None], secrets: Sequence[SecretSource],
                   environ: Mapping[str, str], cache_dir: Path, scratch: Path,
                   exclusive_caches: bool = False, agents: SshAgents | None = None) -> Iterator[RunMounts]:
    """Make what ``mounts`` (from ``parse_run_mounts``) need for one RUN; yield the sandbox's view of them.

    ``scratch`` is a directory outside every rootfs (the workspace); a private directory is made in it and removed
    on exit, with cache locks released."""
    scratch.mkdir(parents=True, exist_ok=True)
    private = Path(tempfile.mkdtemp(prefix="run-mounts-", dir=scratch))
    private.chmod(0o700)
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, private, True)
        prep = _Preparer(inst, context, stage_rootfs, secrets, environ, cache_dir, private, stack,
                         exclusive_caches, agents)
        specs: list[MountSpec] = []
        secret_env: list[tuple[str, Path]] = []
        ssh_targets: list[str] = []
        for mount in mounts:
            if isinstance(mount, SshMount):
                ssh_spec = prep.ssh(mount, len(ssh_targets))
                ssh_targets.append(mount.target or f"{SSH_AGENT_DIR}/ssh_agent.{len(ssh_targets)}")
                if ssh_spec is not None:
                    specs.append(ssh_spec)
                continue
            if isinstance(mount, BindMount):
                specs.append(prep.bind(mount))
            elif isinstance(mount, CacheMount):
                specs.append(prep.cache(mount))
            elif isinstance(mount, TmpfsMount):
                specs.append(MountSpec(mount.target, "tmpfs", readonly=mount.readonly, size=mount.size))
            else:
                spec, env = prep.secret(mount)
                if spec is not None:
                    specs.append(spec)
                if env is not None:
                    secret_env.append(env)
        # Parents before children (a mount inside another lands in it); otherwise the Dockerfile's order.
        specs.sort(key=lambda s: s.target.rstrip("/").count("/"))
        yield RunMounts(tuple(specs), tuple(secret_env), private, ssh_targets[0] if ssh_targets else None)
