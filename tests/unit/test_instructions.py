"""Typed instructions and stages from Dockerfile text, and the errors a bad Dockerfile gives (file:line)."""

from __future__ import annotations

import pytest

from lamina.dockerfile.instructions import Arg, Copy, From, KeyValues, Run, load_dockerfile
from lamina.errors import DockerfileError, UnsupportedInstruction


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


@pytest.mark.parametrize(("text", "message"), [
    ("FROM scratch\nHEALTHCHECK NONE\n", "Dockerfile:2: HEALTHCHECK is not supported yet"),
    ("FROM scratch\nADD a /b\n", "Dockerfile:2: ADD is not supported yet"),
    ("FROM scratch\n\nRUN <<EOF\necho\nEOF\n", "Dockerfile:3: RUN: heredocs are not supported yet"),
])
def test_unsupported_instructions_name_the_line(text: str, message: str) -> None:
    with pytest.raises(UnsupportedInstruction) as info:
        load_dockerfile(text)
    assert str(info.value) == message


@pytest.mark.parametrize(("text", "fragment"), [
    ("FROM scratch\nFOO bar\n", "Dockerfile:2: unknown instruction: FOO"),
    ("RUN true\nFROM scratch\n", "Dockerfile:1: RUN before the first FROM"),
    ("FROM scratch\nCOPY --form=x a b\n", "Dockerfile:2: COPY: unknown flag --form"),
    ("FROM scratch\nCOPY a\n", "Dockerfile:2: COPY: expected COPY <src>... <dest>"),
    ("FROM a AS x\nFROM b AS x\n", "Dockerfile:2: duplicate stage name 'x'"),
    ("FROM a AS 1x\n", "invalid stage name"),
    ("# only a comment\n", "the Dockerfile has no instructions"),
    ("ARG A=1\n", "no FROM instruction"),
])
def test_malformed_dockerfiles(text: str, fragment: str) -> None:
    with pytest.raises(DockerfileError) as info:
        load_dockerfile(text)
    assert fragment in str(info.value)
