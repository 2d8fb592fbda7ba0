"""Heredoc semantics at build time (BuildKit's dispatchRun / dispatchCopy), table driven, no I/O."""

from __future__ import annotations

import pytest

from lamina.build.handlers.heredoc import (
    RunHeredocPlan,
    copy_heredoc_files,
    expand_heredoc,
    run_heredoc_plan,
)
from lamina.dockerfile.instructions import Copy, Run, load_dockerfile
from lamina.dockerfile.lex import ExpansionError
from lamina.dockerfile.parse import Heredoc

SH = ("/bin/sh", "-c")


def _run(text: str) -> Run:
    inst = load_dockerfile("FROM scratch\n" + text).stages[0].instructions[0]
    assert isinstance(inst, Run)
    return inst


def _copy(text: str) -> Copy:
    inst = load_dockerfile("FROM scratch\n" + text).stages[0].instructions[0]
    assert isinstance(inst, Copy)
    return inst


RUN_CASES = [
    # the command line is one heredoc marker: the body is the script, run by the shell
    ("RUN <<EOF\necho a\necho b\nEOF\n", RunHeredocPlan((*SH, "echo a\necho b\n"))),
    # <<- removes the tabs of the body too
    ("RUN <<-EOF\n\techo a\n\t\techo b\n\tEOF\n", RunHeredocPlan((*SH, "echo a\necho b\n"))),
    # quoting the delimiter does not stop the shell from expanding: BuildKit ignores "expand" for RUN
    ("RUN <<'EOF'\necho $HOME\nEOF\n", RunHeredocPlan((*SH, "echo $HOME\n"))),
    ("RUN <<EOF\necho $HOME\nEOF\n", RunHeredocPlan((*SH, "echo $HOME\n"))),
    # a file-descriptor marker alone is still "one heredoc marker"
    ("RUN 3<<EOF\necho x\nEOF\n", RunHeredocPlan((*SH, "echo x\n"))),
    # flags do not count as part of the command line
    ("RUN --network=none <<EOF\necho x\nEOF\n", RunHeredocPlan((*SH, "echo x\n"))),
    # a shebang: a 0755 file at /dev/pipes/<name>, run through the shell
    ("RUN <<EOF\n#!/bin/sh\necho hi\nEOF\n",
     RunHeredocPlan((*SH, "/dev/pipes/EOF"), (("/dev/pipes/EOF", b"#!/bin/sh\necho hi\n", 0o755),))),
    ("RUN <<-SCRIPT\n#!/usr/bin/env python3\n\tprint(1)\nSCRIPT\n",
     RunHeredocPlan((*SH, "/dev/pipes/SCRIPT"),
                    (("/dev/pipes/SCRIPT", b"#!/usr/bin/env python3\nprint(1)\n", 0o755),))),
    # <<- strips the tabs before BuildKit looks for the shebang (2eadae25e "Chomp heredoc before parsing shebang")
    ("RUN <<-EOF\n\t#!/bin/sh\n\techo x\nEOF\n",
     RunHeredocPlan((*SH, "/dev/pipes/EOF"), (("/dev/pipes/EOF", b"#!/bin/sh\necho x\n", 0o755),))),
    # anything else: the shell gets the line, then each body and its delimiter, raw (it handles <<- itself)
    ("RUN python3 <<EOF\nprint(1)\nEOF\n", RunHeredocPlan((*SH, "python3 <<EOF\nprint(1)\nEOF"))),
    ("RUN cat <<A > /a <<B\na\nA\nb\nB\n", RunHeredocPlan((*SH, "cat <<A > /a <<B\na\nA\nb\nB"))),
    ("RUN cat <<-A >/a\n\tx\n\tA\n", RunHeredocPlan((*SH, "cat <<-A >/a\n\tx\nA"))),
    ("RUN 3<<EOF cat <&3\nfd three\nEOF\n", RunHeredocPlan((*SH, "3<<EOF cat <&3\nfd three\nEOF"))),
    ("RUN <<EOF sh -s\necho x\nEOF\n", RunHeredocPlan((*SH, "<<EOF sh -s\necho x\nEOF"))),
    ("RUN cat <<'EOF' >/f\n$X\nEOF\n", RunHeredocPlan((*SH, "cat <<'EOF' >/f\n$X\nEOF"))),
]


@pytest.mark.parametrize(("text", "plan"), RUN_CASES, ids=[c[0].split("\n")[0] for c in RUN_CASES])
def test_run_heredoc_plan(text: str, plan: RunHeredocPlan) -> None:
    run = _run(text)
    assert run_heredoc_plan(run.args, run.heredocs, SH) == plan


def test_run_heredoc_plan_uses_the_shell_and_script_dir_given() -> None:
    run = _run("RUN <<EOF\n#!/bin/sh\ntrue\nEOF\n")
    plan = run_heredoc_plan(run.args, run.heredocs, ("/bin/bash", "-eo", "pipefail", "-c"), script_dir="/x/y/")
    assert plan.argv == ("/bin/bash", "-eo", "pipefail", "-c", "/x/y/EOF")
    assert plan.files == (("/x/y/EOF", b"#!/bin/sh\ntrue\n", 0o755),)


def test_run_heredoc_plan_rejects_exec_form_and_bad_script_names() -> None:
    with pytest.raises(ValueError):
        run_heredoc_plan(("a", "b"), (Heredoc("EOF", "x\n", True, False, 0),), SH)
    with pytest.raises(ValueError):
        run_heredoc_plan(("<<a/b",), (Heredoc("a/b", "#!/bin/sh\n", True, False, 0),), SH)


def test_run_without_heredocs_is_the_plain_shell_form() -> None:
    assert run_heredoc_plan(("echo hi",), (), SH) == RunHeredocPlan((*SH, "echo hi"))


ENV = {"NAME": "world", "EMPTY": ""}

COPY_CASES = [
    ("COPY <<EOF /f\nhello $NAME\nEOF\n", [("EOF", b"hello world\n")]),
    ("COPY <<'EOF' /f\nhello $NAME\nEOF\n", [("EOF", b"hello $NAME\n")]),
    ("COPY <<\"EOF\" /f\nhello ${NAME}\nEOF\n", [("EOF", b"hello ${NAME}\n")]),
    ("COPY <<E'O'F /f\nhello $NAME\nEOF\n", [("EOF", b"hello $NAME\n")]),
    # quotes stay, unset variables vanish, ${...} modifiers work, a backslash escapes the next character
    ("COPY <<EOF /f\n\"$NAME\" '$NAME' ${UNSET}|${UNSET:-dflt}|${EMPTY:+x}\nEOF\n",
     [("EOF", b"\"world\" 'world' |dflt|\n")]),
    ("COPY <<EOF /f\ncost \\$5 a\\\\b\nEOF\n", [("EOF", b"cost $5 a\\b\n")]),
    ("COPY <<-EOF /f\n\tindented $NAME\n\t\ttwice\n\tEOF\n", [("EOF", b"indented world\ntwice\n")]),
    ("COPY <<-'EOF' /f\n\tindented $NAME\n\tEOF\n", [("EOF", b"indented $NAME\n")]),
    ("COPY <<A <<B /dir/\none\nA\ntwo $NAME\nB\n", [("A", b"one\n"), ("B", b"two world\n")]),
    ("COPY <<file.txt /dir/\nx\nfile.txt\n", [("file.txt", b"x\n")]),
    ("COPY <<EOF /f\nEOF\n", [("EOF", b"")]),
    ("ADD <<EOF /f\n$NAME\nEOF\n", [("EOF", b"world\n")]),
]


@pytest.mark.parametrize(("text", "files"), COPY_CASES, ids=[c[0].split("\n")[0] for c in COPY_CASES])
def test_copy_heredoc_files(text: str, files: list[tuple[str, bytes]]) -> None:
    inst = _copy(text)
    assert copy_heredoc_files(inst.heredocs, lambda t: expand_heredoc(t, ENV)) == files


@pytest.mark.parametrize(("text", "expected"), [
    ("plain", "plain"),
    ("$NAME ${NAME}", "world world"),
    ("'$NAME' \"$NAME\"", "'world' \"world\""),
    ("it's", "it's"),  # an unbalanced quote is just a character
    ("a\\nb", "anb"),  # BuildKit eats the backslash
    ("${NAME/o/0}", "w0rld"),
    ("${NAME#w}", "orld"),
])
def test_expand_heredoc(text: str, expected: str) -> None:
    assert expand_heredoc(text, ENV) == expected


def test_expand_heredoc_errors() -> None:
    with pytest.raises(ExpansionError):
        expand_heredoc("${}", ENV)
    with pytest.raises(ExpansionError):
        expand_heredoc("${NAME", ENV)


def test_copy_heredoc_file_names_must_be_file_names() -> None:
    with pytest.raises(ValueError):
        copy_heredoc_files((Heredoc("a/b", "x\n", True, False, 0),), lambda t: t)
