"""Which steps run on a stage's skeleton, and which stages the inplace sandbox may unpack over the runtime image
(build/sparse.py): pure functions of the Dockerfile."""

from __future__ import annotations

import textwrap

from lamina.build.sparse import on_skeleton, rootfs_needed_after
from lamina.dockerfile.instructions import load_dockerfile

DOCKERFILE = textwrap.dedent("""
    FROM debian AS deps
    RUN apt-get install -y gcc
    FROM deps AS build
    COPY . /src
    RUN make -C /src
    FROM deps AS tests
    RUN make test
    FROM busybox AS assets
    COPY assets /assets
    FROM gcr.io/distroless/base
    WORKDIR /app
    COPY --from=build /src/app ./app
    ENV A=1
    COPY --from=assets /assets ./assets
    ADD extra.tar /app/
    COPY config /app/config
""")


def test_copy_and_workdir_run_on_the_skeleton_when_no_run_or_add_follows() -> None:
    dockerfile = load_dockerfile(DOCKERFILE)
    deps, build, _tests, assets, final = dockerfile.stages
    assert not on_skeleton(deps, deps.instructions[0])  # a RUN
    assert not on_skeleton(build, build.instructions[0])  # a RUN follows
    assert on_skeleton(assets, assets.instructions[0])
    workdir, copy_app, _env, copy_assets, add, copy_config = final.instructions
    assert not on_skeleton(final, workdir) and not on_skeleton(final, copy_app) and not on_skeleton(final, copy_assets)
    assert not on_skeleton(final, add)  # ADD itself needs the stage
    assert on_skeleton(final, copy_config)
    assert not on_skeleton(final, build.instructions[0])  # not a step of this stage (an ONBUILD trigger, say)


def test_a_stage_may_stay_in_root_unless_a_later_stage_not_descending_from_it_needs_root() -> None:
    dockerfile = load_dockerfile(DOCKERFILE)
    order = [dockerfile.stages[i] for i in (0, 1, 3, 4)]  # deps, build, assets, final (tests is not needed)
    parents = {0: None, 1: 0, 2: 0, 3: None, 4: None}
    assert rootfs_needed_after(order, parents) == {0: True, 1: True, 3: True, 4: False}  # the final stage's ADD
    # without it: deps is needed after only by its children (build, tests); build by tests, its sibling
    with_tests = [dockerfile.stages[i] for i in (0, 1, 2, 3)]
    assert rootfs_needed_after(with_tests, parents) == {0: False, 1: True, 2: False, 3: False}
