"""Stages of a Dockerfile: which ones a target needs and in what order, stage lookup by name or index, the
global ARG scope of FROM lines. Pure: no I/O."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence

from lamina.dockerfile.instructions import Arg, Copy, Dockerfile, Instruction, Onbuild, Run, Stage, trigger_instruction
from lamina.dockerfile.lex import ExpansionError, expand_word
from lamina.dockerfile.mounts import mount_from
from lamina.errors import OptionsError
from lamina.oci.model import Platform


def needed_stages(dockerfile: Dockerfile, target: Stage, meta: Mapping[str, str]) -> list[Stage]:
    """The stages ``target`` depends on (FROM <stage>, COPY --from, RUN --mount from=, and those the ONBUILD triggers
    of a parent stage name, which run in its child), each after the stages it needs.

    A stage is only looked up by FROM among the stages before it (a later name is an image, as BuildKit); COPY
    --from naming a later stage is an error, as in BuildKit; RUN --mount from= may name any stage, so a cycle is
    possible and is an error."""
    order: list[Stage] = []
    state: dict[int, str] = {}  # "visiting" or "done"

    def visit(stage: Stage, via: Instruction | None) -> None:
        if state.get(stage.index) == "done":
            return
        if state.get(stage.index) == "visiting":
            assert via is not None
            raise via.error(f"circular dependency detected on stage {stage.label}")
        state[stage.index] = "visiting"
        parent = find_stage(dockerfile, expand_meta(stage.base, stage.base.image, meta), before=stage.index)
        triggers: list[Instruction] = []  # the parent stage's ONBUILD triggers run first in this one
        if parent is not None:
            visit(parent, stage.base)
            triggers = [t for t in (trigger_instruction(i) for i in parent.instructions if isinstance(i, Onbuild))
                        if t is not None]
        for inst in [*triggers, *stage.instructions]:
            if isinstance(inst, Copy) and inst.from_stage:  # load_dockerfile refused variables in it
                source = find_stage(dockerfile, inst.from_stage)
                if source is not None:
                    if source.index >= stage.index:
                        forward.append((inst, source, stage))
                    visit(source, inst)
            if isinstance(inst, Run):
                for raw in filter(None, (mount_from(m) for m in inst.mounts)):
                    try:
                        name = expand_word(raw, meta, dockerfile.escape)
                    except ExpansionError:
                        continue
                    source = find_stage(dockerfile, name)
                    if source is not None:
                        visit(source, inst)
        state[stage.index] = "done"
        order.append(stage)

    forward: list[tuple[Copy, Stage, Stage]] = []  # COPY --from a stage defined later: an error after cycles
    visit(target, None)
    for inst, source, stage in forward:
        raise inst.error(f"--from={inst.from_stage}: cannot copy from stage {source.label!r}, it needs to be defined "
                         f"before current stage {stage.label!r}", column=inst.column_of("--from"))
    return order


def find_stage(dockerfile: Dockerfile, name: str, *, before: int | None = None) -> Stage | None:
    """The stage called ``name`` (or numbered, for COPY --from=0), among the stages before index ``before``."""
    lowered = name.lower()
    for stage in dockerfile.stages[:before]:
        if stage.name == lowered or (lowered.isdigit() and int(lowered) == stage.index):
            return stage
    return None


def automatic_args(target: Platform, build: Platform, stage: Stage) -> dict[str, str]:
    """BuildKit's automatic args (``defaultArgs``), in the global scope (FROM lines; a stage declares ``ARG X`` to
    use one): the platforms, and TARGETSTAGE, the name of the stage being built (``default`` when it has none)."""
    return {"TARGETSTAGE": stage.name or "default", **platform_args(target, build)}


def platform_args(target: Platform, build: Platform) -> dict[str, str]:
    """BuildKit's automatic platform args."""
    return {
        "TARGETPLATFORM": str(target), "TARGETOS": target.os, "TARGETARCH": target.architecture,
        "TARGETVARIANT": target.variant,
        "BUILDPLATFORM": str(build), "BUILDOS": build.os, "BUILDARCH": build.architecture,
        "BUILDVARIANT": build.variant,
    }


def evaluate_meta_args(meta_args: Sequence[Arg], build_args: Mapping[str, str], meta: dict[str, str]) -> set[str]:
    """The ARGs before the first FROM into ``meta``, in order (a build arg wins over the default, which may use the
    ARGs before it); returns the names of the build args they consumed."""
    used: set[str] = set()
    for inst in meta_args:
        for name, default in inst.pairs:
            if name in build_args:
                meta[name] = build_args[name]
                used.add(name)
            elif default is not None:
                meta[name] = expand_meta(inst, default, meta)
    return used


def expand_meta(inst: Instruction, text: str, meta: Mapping[str, str]) -> str:
    try:
        return expand_word(text, meta, "\\")
    except ExpansionError as exc:
        raise inst.error(f"{exc} in {text!r}") from None


def select_target(dockerfile: Dockerfile, target: str | None) -> Stage:
    if target is None:
        return dockerfile.stages[-1]
    lowered = target.lower()
    for stage in dockerfile.stages:
        if stage.name == lowered:
            return stage
    named = [s.name for s in dockerfile.stages if s.name]
    close = difflib.get_close_matches(lowered, named, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise OptionsError(f'--target {target}: target stage "{target}" could not be found{hint} in {dockerfile.file} '
                       f"(named stages: {', '.join(named) or 'none'})")


