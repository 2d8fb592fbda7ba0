"""needed_stages: which stages a target needs and in what order, including those named by the ONBUILD triggers a
parent stage of the same Dockerfile runs in its child (BuildKit's testOnBuildInheritedStageWithFrom)."""

from __future__ import annotations

import pytest

from lamina.dockerfile.instructions import load_dockerfile
from lamina.dockerfile.stages import needed_stages
from lamina.errors import DockerfileError


def labels(text: str) -> list[str]:
    dockerfile = load_dockerfile(text)
    return [stage.label for stage in needed_stages(dockerfile, dockerfile.stages[-1], {})]


def test_copy_from_and_from_a_stage() -> None:
    assert labels("FROM busybox AS a\nFROM busybox AS unused\nFROM a AS b\nFROM scratch\nCOPY --from=b / /\n") \
        == ["a", "b", "stage-3"]


def test_a_parent_stages_onbuild_trigger_names_a_stage_its_child_needs() -> None:
    text = ("FROM busybox AS src\nFROM busybox AS base\nONBUILD COPY --from=src /in /out\n"
            "FROM base AS mid\nRUN true\nFROM scratch\nCOPY --from=mid /out /\n")
    assert labels(text) == ["base", "src", "mid", "stage-3"]


def test_a_trigger_with_a_mount_from_a_stage() -> None:
    text = ("FROM busybox AS src\nFROM busybox AS base\nONBUILD RUN --mount=from=src,target=/in true\n"
            "FROM base\n")
    assert labels(text) == ["base", "src", "stage-2"]


def test_the_parent_stage_itself_does_not_need_its_triggers() -> None:
    assert labels("FROM busybox AS src\nFROM busybox AS base\nONBUILD COPY --from=src /in /out\n") == ["base"]


def test_a_copy_from_a_later_stage_is_an_error() -> None:
    with pytest.raises(DockerfileError, match="needs to be defined before"):
        labels("FROM busybox AS a\nCOPY --from=b /x /x\nFROM busybox AS b\nFROM a\n")
