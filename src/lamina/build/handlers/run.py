"""RUN: execute a command in the stage's rootfs through the sandbox, as Docker would."""

from __future__ import annotations

import os
import secrets
import shutil
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from lamina.build.handlers.heredoc import SCRIPT_DIR, RunHeredocPlan, run_heredoc_plan
from lamina.build.state import StageState
from lamina.dockerfile.instructions import Run
from lamina.errors import StepFailed
from lamina.rootfs.paths import resolve_in_root
from lamina.sandbox.base import DEFAULT_HOSTNAME, DEFAULT_PATH, MountSpec, Runner, RunSpec
from lamina.sandbox.users import UnknownUser, read_user_db, resolve_user

OUTPUT_TAIL_LINES = 40


def run_argv(state: StageState, inst: Run) -> list[str]:
    """The argv as BuildKit records it (a heredoc RUN: see handlers/heredoc.py, the shebang script at /dev/pipes)."""
    if inst.json_form:
        return list(inst.args)
    if inst.heredocs:
        return list(_heredoc_plan(state, inst).argv)
    return [*state.shell, inst.args[0]]


def created_by(state: StageState, inst: Run) -> str:
    """BuildKit's history text: ``RUN |2 A=1 B= /bin/sh -c cmd # buildkit``: the |N prefix lists every ARG the
    stage declared, in order, with its value (ENV wins over ARG; an unset ARG shows as ``B=``)."""
    prefix = ""
    if state.arg_order:
        env = state.env
        values = [f"{name}={env.get(name, state.args.get(name, ''))}" for name in state.arg_order]
        prefix = f"|{len(values)} " + " ".join(values) + " "
    return f"RUN {prefix}{' '.join(run_argv(state, inst))} # buildkit"


def _heredoc_plan(state: StageState, inst: Run, script_dir: str = SCRIPT_DIR) -> RunHeredocPlan:
    try:
        return run_heredoc_plan(inst.args, inst.heredocs, state.shell, script_dir=script_dir)
    except ValueError as exc:
        raise inst.error(str(exc)) from None


@contextmanager
def _placed(rootfs: Path, directory: str, files: tuple[tuple[str, bytes, int], ...]) -> Iterator[None]:
    """Write ``files`` (all in ``directory``, a new top-level directory) into the rootfs for the run; remove them
    afterwards and give / back its times when the run left it alone, so the snapshot never sees them."""
    if not files:
        yield
        return
    host = rootfs / directory.strip("/")
    before = rootfs.lstat()
    after: int | None = None
    host.mkdir(mode=0o755)
    try:
        host.chmod(0o755)
        for path, data, mode in files:
            target = rootfs / path.lstrip("/")
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with open(fd, "wb") as f:
                f.write(data)
            os.chmod(target, mode)
        after = rootfs.lstat().st_mtime_ns
        yield
    finally:
        untouched = after is None or rootfs.lstat().st_mtime_ns == after
        shutil.rmtree(host, ignore_errors=True)
        if untouched:
            os.utime(rootfs, ns=(before.st_atime_ns, before.st_mtime_ns), follow_symlinks=False)


def run_environment(state: StageState, home: str, extra: Mapping[str, str] | None = None) -> list[str]:
    """The environment of a RUN: the image's ENV, then ARGs not shadowed by ENV, then ``extra`` (the proxy build
    args, which need no ARG and are never persisted); PATH and HOME as Docker sets them."""
    env = state.env
    merged = dict(env)
    for name, value in state.args.items():
        merged.setdefault(name, value)
    for name, value in (extra or {}).items():
        merged.setdefault(name, value)
    merged.setdefault("PATH", DEFAULT_PATH)
    merged.setdefault("HOME", home)
    return [f"{k}={v}" for k, v in merged.items()]


def execute_run(state: StageState, inst: Run, runner: Runner, *, on_output: Callable[[str], None],
                resolv_conf: Path | None, hosts: Path | None, mounts: tuple[MountSpec, ...] = (),
                secret_env: tuple[tuple[str, Path], ...] = (), network: str = "default",
                extra_env: Mapping[str, str] | None = None, scratch: Path | None = None,
                hostname: str = DEFAULT_HOSTNAME) -> None:
    """Run the command; raise StepFailed with its exit code and the tail of its output when it fails."""
    try:
        user = resolve_user(state.user or "root", read_user_db(state.rootfs))
    except UnknownUser as exc:
        raise inst.error(str(exc)) from None
    workdir = state.workdir
    target = resolve_in_root(state.rootfs, workdir)
    if not target.exists():
        target.mkdir(parents=True, mode=0o755)
    argv = run_argv(state, inst)
    files: tuple[tuple[str, bytes, int], ...] = ()
    script_dir = f"/.lamina-heredoc-{secrets.token_hex(8)}"
    if inst.heredocs and not inst.json_form:
        plan = _heredoc_plan(state, inst, script_dir)
        argv, files = list(plan.argv), plan.files
    spec = RunSpec(rootfs=state.rootfs, argv=tuple(argv), env=tuple(run_environment(state, user.home, extra_env)),
                   cwd=workdir, uid=user.uid, gid=user.gid, groups=user.groups, resolv_conf=resolv_conf, hosts=hosts,
                   mounts=mounts, secret_env=secret_env, network=network, scratch=scratch, hostname=hostname)
    tail: deque[str] = deque(maxlen=OUTPUT_TAIL_LINES)
    pending = b""

    def output(chunk: bytes) -> None:
        nonlocal pending
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace").rstrip("\r")
            tail.append(line)
            on_output(line)

    with _placed(state.rootfs, script_dir, files):
        status = runner.run(spec, output)
    if pending:
        line = pending.decode("utf-8", "replace")
        tail.append(line)
        on_output(line)
    if status != 0:
        shown = inst.original if len(inst.original) < 200 else inst.original[:197] + "..."
        raise StepFailed(f"{shown} failed with exit code {status}", exit_code=status, output_tail="\n".join(tail),
                         file=inst.file, line=inst.line)
