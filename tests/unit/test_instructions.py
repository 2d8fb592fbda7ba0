"""Typed instructions and stages from Dockerfile text, and the errors a bad Dockerfile gives (file:line)."""

from __future__ import annotations

import pytest

from lamina.dockerfile.instructions import (
    Arg,
    Command,
    Copy,
    From,
    Healthcheck,
    KeyValues,
    Onbuild,
    Run,
    Single,
    Volume,
    load_dockerfile,
)
from lamina.errors import DockerfileError


def test_stages_and_meta_args() -> None:
    df = load_dockerfile("ARG BASE=busybox\nFROM $BASE AS build\nRUN make\nFROM build\nCOPY --from=build /a /b\n")
    assert [a.pairs for a in df.meta_args] == [(("BASE", "busybox"),)]
    assert [s.name for s in df.stages] == ["build", None]
    assert isinstance(df.stages[0].base, From) and df.stages[0].base.image == "$BASE"
    assert isinstance(df.stages[0].instructions[0], Run)
    copy = df.stages[1].instructions[0]
    assert isinstance(copy, Copy) and copy.from_stage == "build" and copy.sources == ("/a",) and copy.dest == "/b"


def test_env_and_arg_pairs() -> None:
    df = load_dockerfile('FROM scratch\nENV A=1 B="two words"\nENV C 3 4\nARG X Y=2\n')
    env1, env2, arg = df.stages[0].instructions
    assert isinstance(env1, KeyValues) and env1.pairs == (("A", "1"), ("B", "\"two words\""))
    assert isinstance(env2, KeyValues) and env2.pairs == (("C", "3 4"),)
    assert isinstance(arg, Arg) and arg.pairs == (("X", None), ("Y", "2"))


def test_every_keyword_is_typed() -> None:
    df = load_dockerfile(
        "FROM scratch\nADD --chown=1:1 --link a /b\nVOLUME /data [\"x\"]\nSTOPSIGNAL SIGINT\nMAINTAINER me\n"
        "SHELL [\"/bin/bash\", \"-c\"]\nHEALTHCHECK --interval=5s --retries=2 CMD curl -f http://x/\n"
        "HEALTHCHECK NONE\nONBUILD RUN echo hi\nRUN --mount=type=cache,target=/c --mount=type=tmpfs,target=/t "
        "--network=none make\nCOPY --parents --exclude=*.md --exclude=*.txt src/ /dst/\n")
    add, volume, stop, maint, shell, health, none, onbuild, run, copy = df.stages[0].instructions
    assert isinstance(add, Copy) and add.keyword == "ADD" and add.link and add.chown == "1:1"
    assert isinstance(volume, Volume) and volume.paths == ("/data", "[\"x\"]")
    assert isinstance(stop, Single) and stop.keyword == "STOPSIGNAL" and stop.value == "SIGINT"
    assert isinstance(maint, Single) and maint.keyword == "MAINTAINER"
    assert isinstance(shell, Command) and shell.args == ("/bin/bash", "-c")
    assert isinstance(health, Healthcheck) and health.test == ("CMD-SHELL", "curl -f http://x/")
    assert health.interval == "5s" and health.retries == "2"
    assert isinstance(none, Healthcheck) and none.test is None
    assert isinstance(onbuild, Onbuild) and onbuild.trigger == "RUN echo hi"
    assert isinstance(run, Run) and run.mounts == ("type=cache,target=/c", "type=tmpfs,target=/t")
    assert run.network == "none"
    assert isinstance(copy, Copy) and copy.parents and copy.excludes == ("*.md", "*.txt")


def test_heredocs_reach_the_instruction() -> None:
    df = load_dockerfile("FROM scratch\nRUN <<EOF\necho hi\nEOF\nCOPY <<A <<B /dst/\na\nA\nb\nB\n")
    run, copy = df.stages[0].instructions
    assert isinstance(run, Run) and [h.content for h in run.heredocs] == ["echo hi\n"]
    assert isinstance(copy, Copy) and [h.name for h in copy.heredocs] == ["A", "B"]


@pytest.mark.parametrize(("text", "fragment"), [
    ("FROM scratch\nFOO bar\n", "Dockerfile:2:1: unknown instruction: FOO"),
    ("RUN true\nFROM scratch\n", "Dockerfile:1:1: RUN before the first FROM"),
    ("FROM scratch\nCOPY --form=x a b\n", "Dockerfile:2:6: COPY: unknown flag --form"),
    ("FROM scratch\nCOPY a\n", "Dockerfile:2:1: COPY: expected COPY <src>... <dest>"),
    ("FROM a AS x\nFROM b AS x\n", "Dockerfile:2:1: duplicate stage name 'x'"),
    ("FROM scratch\nCOPY --link=maybe a b\n", "Dockerfile:2:6: COPY: --link takes true or false"),
    ("FROM scratch\nRUN --network=wifi x\n", "--network=wifi: expected default, none or host"),
    ("FROM scratch\nSHELL /bin/bash -c\n", "SHELL requires the arguments to be in JSON form"),
    ("FROM scratch\nONBUILD FROM x\n", "FROM isn't allowed as an ONBUILD trigger"),
    ("FROM scratch\nHEALTHCHECK --interval=5s NONE\n", "HEALTHCHECK NONE takes no arguments or options"),
    ("FROM scratch\nHEALTHCHECK WGET x\n", "unknown type 'WGET'"),
    ("FROM a AS 1x\n", "invalid stage name"),
    ("# only a comment\n", "the Dockerfile has no instructions"),
    ("ARG A=1\n", "no FROM instruction"),
])
def test_malformed_dockerfiles(text: str, fragment: str) -> None:
    with pytest.raises(DockerfileError) as info:
        load_dockerfile(text)
    assert fragment in str(info.value)
