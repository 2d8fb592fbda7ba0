"""RUN: execute a command in the stage's rootfs through the sandbox, as Docker would."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from pathlib import Path

from lamina.build.state import StageState
from lamina.dockerfile.instructions import Run
from lamina.errors import StepFailed
from lamina.rootfs.paths import resolve_in_root
from lamina.sandbox.base import DEFAULT_PATH, Runner, RunSpec
from lamina.sandbox.users import UnknownUser, read_user_db, resolve_user

OUTPUT_TAIL_LINES = 40


def run_argv(state: StageState, inst: Run) -> list[str]:
    if inst.json_form:
        return list(inst.args)
    return [*state.shell, inst.args[0]]


def created_by(state: StageState, inst: Run, build_args_used: dict[str, str]) -> str:
    """BuildKit's history text: ``RUN |2 A=1 B=2 /bin/sh -c cmd # buildkit`` (the |N prefix lists build args)."""
    prefix = ""
    if build_args_used:
        prefix = f"|{len(build_args_used)} " + " ".join(f"{k}={v}" for k, v in sorted(build_args_used.items())) + " "
    return f"RUN {prefix}{' '.join(run_argv(state, inst))} # buildkit"


def run_environment(state: StageState, home: str) -> list[str]:
    """The environment of a RUN: the image's ENV, then ARGs not shadowed by ENV; PATH and HOME as Docker sets them."""
    env = state.env
    merged = dict(env)
    for name, value in state.args.items():
        merged.setdefault(name, value)
    merged.setdefault("PATH", DEFAULT_PATH)
    merged.setdefault("HOME", home)
    return [f"{k}={v}" for k, v in merged.items()]


def execute_run(state: StageState, inst: Run, runner: Runner, *, on_output: Callable[[str], None],
                resolv_conf: Path | None, hosts: Path | None) -> None:
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
    spec = RunSpec(rootfs=state.rootfs, argv=tuple(argv), env=tuple(run_environment(state, user.home)), cwd=workdir,
                   uid=user.uid, gid=user.gid, groups=user.groups, resolv_conf=resolv_conf, hosts=hosts)
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

    status = runner.run(spec, output)
    if pending:
        line = pending.decode("utf-8", "replace")
        tail.append(line)
        on_output(line)
    if status != 0:
        shown = inst.original if len(inst.original) < 200 else inst.original[:197] + "..."
        raise StepFailed(f"{inst.file}:{inst.line}: {shown} failed with exit code {status}", exit_code=status,
                         output_tail="\n".join(tail))
