"""Which steps can be made on a stage's skeleton instead of its unpacked root filesystem (see rootfs/skeleton.py).

COPY and WORKDIR write below one path and read only the way there, so they can run on the skeleton of the stage's
layers. It pays only while no later step of the stage needs the whole filesystem: a RUN (any command can read
anything) or an ADD (which may unpack archives, fetch, clone) makes the stage unpacked anyway, and the files the
COPY made are then unpacked from its layer a second time. So a stage stays unpacked-free when, from the step on,
it holds nothing but COPY, WORKDIR and metadata instructions: the final stage of the common multi-stage build
(``FROM distroless`` or ``FROM debian`` with ``COPY --from=build``) never unpacks its base: its layers are read
once, for their metadata.

Pure functions of the Dockerfile's stages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lamina.dockerfile.instructions import Copy, Instruction, Run, Single, Stage

USER_DB = ("etc/passwd", "etc/group")  # what COPY --chown and WORKDIR read of the filesystem to resolve names


def needs_rootfs(inst: Instruction) -> bool:
    """Does the step need the stage's whole filesystem (RUN, ADD)?"""
    return isinstance(inst, Run) or (isinstance(inst, Copy) and inst.keyword == "ADD")


def on_skeleton(stage: Stage, inst: Instruction) -> bool:
    """May ``inst``, a step of ``stage`` (not an ONBUILD trigger), run on the stage's skeleton: it is a COPY or a
    WORKDIR, and no step after it needs the whole filesystem?"""
    if not (isinstance(inst, Copy) and inst.keyword == "COPY") and not (
            isinstance(inst, Single) and inst.keyword == "WORKDIR"):
        return False
    for index, candidate in enumerate(stage.instructions):
        if candidate is inst:
            return not any(needs_rootfs(later) for later in stage.instructions[index + 1:])
    return False


def rootfs_needed_after(stages: Sequence[Stage], parents: Mapping[int, int | None]) -> dict[int, bool]:
    """For each stage (by index), in build order: does a stage built after it need a whole filesystem, other than
    one that starts FROM it (or from a stage that does)? The inplace sandbox has to take the stage out of ``/`` for
    such a stage, while a descendant goes on from its files where they are. ``parents``: stage index -> the index of
    the stage it starts FROM (None: an image)."""

    def descends(stage: int, ancestor: int) -> bool:
        parent = parents.get(stage)
        while parent is not None:
            if parent == ancestor:
                return True
            parent = parents.get(parent)
        return False

    needing = [stage.index for stage in stages if any(needs_rootfs(inst) for inst in stage.instructions)]
    order = [stage.index for stage in stages]
    return {index: any(later in needing and not descends(later, index) for later in order[position + 1:])
            for position, index in enumerate(order)}
