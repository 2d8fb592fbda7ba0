"""Typed instructions made from the raw syntax tree, and the stages they form.

Arguments stay unexpanded here (expansion needs the build state); flags are checked against what each keyword
accepts so that a typo fails before anything runs. Every Dockerfile keyword BuildKit knows for Linux is here.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from lamina.dockerfile.lex import ExpansionError, expand_word
from lamina.dockerfile.mounts import check_unexpanded
from lamina.dockerfile.parse import Heredoc, Node, ParsedDockerfile, parse_dockerfile
from lamina.errors import DockerfileError

KNOWN = ("add", "arg", "cmd", "copy", "entrypoint", "env", "expose", "from", "healthcheck", "label", "maintainer",
         "onbuild", "run", "shell", "stopsignal", "user", "volume", "workdir")

# Flags each keyword accepts: "value" (--x=v, once), "list" (--x=v, repeatable), "bool" (--x or --x=true|false).
FLAGS: dict[str, dict[str, str]] = {
    "from": {"platform": "value"},
    "run": {"mount": "list", "network": "value", "security": "value"},
    "copy": {"from": "value", "chown": "value", "chmod": "value", "link": "bool", "parents": "bool",
             "exclude": "list"},
    "add": {"chown": "value", "chmod": "value", "link": "bool", "checksum": "value", "keep-git-dir": "bool",
            "exclude": "list", "unpack": "bool"},
    "healthcheck": {"interval": "value", "timeout": "value", "start-period": "value", "start-interval": "value",
                    "retries": "value"},
}
ONBUILD_FORBIDDEN = ("onbuild", "from", "maintainer")


@dataclass(frozen=True)
class Instruction:
    """Fields every instruction has: where it is and how it was written."""

    keyword: str  # upper case, e.g. "RUN"
    line: int
    end_line: int
    original: str  # the instruction text, continuations joined
    file: str

    def error(self, message: str, *, column: int | None = None) -> DockerfileError:
        """A DockerfileError at this instruction: ``file:line:column: KEYWORD: message``."""
        return DockerfileError(f"{self.keyword}: {message}", file=self.file, line=self.line, column=column or 1)

    def column_of(self, text: str) -> int | None:
        """1-based column of ``text`` in the instruction's first line, when it is there."""
        first = self.original.split("\n", 1)[0]
        index = first.find(text) if text else -1
        return index + 1 if index >= 0 else None


@dataclass(frozen=True)
class From(Instruction):
    image: str  # unexpanded
    name: str | None
    platform: str | None


@dataclass(frozen=True)
class Run(Instruction):
    args: tuple[str, ...]  # exec form: the argv; shell form: one element, the command line
    json_form: bool
    mounts: tuple[str, ...] = ()  # raw --mount values, unexpanded
    network: str | None = None  # default, none, host
    security: str | None = None  # sandbox, insecure
    heredocs: tuple[Heredoc, ...] = ()


@dataclass(frozen=True)
class Copy(Instruction):
    """COPY, and ADD (``keyword == "ADD"``, with the ADD-only fields set)."""

    sources: tuple[str, ...]
    dest: str
    from_stage: str | None
    chown: str | None
    chmod: str | None
    json_form: bool
    link: bool = False
    parents: bool = False
    excludes: tuple[str, ...] = ()
    heredocs: tuple[Heredoc, ...] = ()
    checksum: str | None = None  # ADD
    keep_git_dir: bool = False  # ADD
    unpack: bool | None = None  # ADD: None = auto (local archives are extracted, remote files are not)

    @property
    def linked(self) -> bool:
        """Is the copy a layer of its own, made without the layers below it (``--link``)? BuildKit links only
        without ``--chmod`` (``dispatchCopy``: ``cfg.link && cfg.chmod == ""``); with it, ``--link`` is a plain copy
        onto the stage, so parents that exist keep their modes."""
        return self.link and not self.chmod


@dataclass(frozen=True)
class KeyValues(Instruction):
    """ENV and LABEL: (name, raw value) pairs."""

    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Arg(Instruction):
    pairs: tuple[tuple[str, str | None], ...]  # name, raw default (None: no default)


@dataclass(frozen=True)
class Single(Instruction):
    """WORKDIR, USER, STOPSIGNAL and MAINTAINER: one raw argument."""

    value: str


@dataclass(frozen=True)
class Expose(Instruction):
    ports: tuple[str, ...]


@dataclass(frozen=True)
class Volume(Instruction):
    paths: tuple[str, ...]
    json_form: bool


@dataclass(frozen=True)
class Command(Instruction):
    """CMD, ENTRYPOINT and SHELL (SHELL only in JSON form)."""

    args: tuple[str, ...]
    json_form: bool


@dataclass(frozen=True)
class Healthcheck(Instruction):
    """HEALTHCHECK NONE (``test is None``) or HEALTHCHECK [options] CMD command."""

    test: tuple[str, ...] | None  # ("CMD", argv...) or ("CMD-SHELL", line); None for NONE
    interval: str | None = None
    timeout: str | None = None
    start_period: str | None = None
    start_interval: str | None = None
    retries: str | None = None


@dataclass(frozen=True)
class Onbuild(Instruction):
    trigger: str  # the instruction to record, e.g. "RUN echo hi"
    trigger_keyword: str


@dataclass(frozen=True)
class Stage:
    index: int
    name: str | None
    base: From
    instructions: tuple[Instruction, ...]

    @property
    def label(self) -> str:
        return self.name or f"stage-{self.index}"


@dataclass(frozen=True)
class Dockerfile:
    file: str
    meta_args: tuple[Arg, ...]  # ARGs before the first FROM
    stages: tuple[Stage, ...]
    escape: str = "\\"
    warnings: tuple[str, ...] = field(default_factory=tuple)


def load_dockerfile(text: str, *, file: str = "Dockerfile") -> Dockerfile:
    """Parse Dockerfile text into typed stages; raises DockerfileError for anything malformed."""
    parsed = parse_dockerfile(text, file=file)
    return build_stages(parsed, file=file)


def build_stages(parsed: ParsedDockerfile, *, file: str) -> Dockerfile:
    meta: list[Arg] = []
    stages: list[Stage] = []
    current: tuple[From, list[Instruction]] | None = None
    for node in parsed.nodes:
        inst = instruction_from_node(node, file)
        if isinstance(inst, From):
            if current is not None:
                stages.append(_stage(len(stages), *current))
            current = (inst, [])
        elif current is None:
            if not isinstance(inst, Arg):
                raise DockerfileError(f"{inst.keyword} before the first FROM: only ARG may come before FROM",
                                      file=file, line=inst.line, column=1)
            meta.append(inst)
        else:
            current[1].append(inst)
    if current is None:
        raise DockerfileError("no FROM instruction: a Dockerfile must start its first stage with FROM", file=file,
                              line=parsed.nodes[-1].end_line, column=1)
    stages.append(_stage(len(stages), *current))
    seen: dict[str, int] = {}
    for stage in stages:
        if stage.name is None:
            continue
        if stage.name in seen:
            raise DockerfileError(f"duplicate stage name {stage.name!r} (first used on line "
                                  f"{stages[seen[stage.name]].base.line})", file=file, line=stage.base.line,
                                  column=1)
        seen[stage.name] = stage.index
    for stage in stages:
        for inst in stage.instructions:
            _check_copy_from(inst, parsed.directives.escape)
    args = [*meta, *(inst for stage in stages for inst in stage.instructions if isinstance(inst, Arg))]
    warnings = parsed.warnings + tuple(_arg_name_warnings(args, file))
    return Dockerfile(file, tuple(meta), tuple(stages), parsed.directives.escape, warnings)


def _check_copy_from(inst: Instruction, escape: str) -> None:
    """BuildKit refuses a COPY --from that variable expansion would change (``toCommand``): which stage it reads
    must be known before any ARG has a value."""
    if not isinstance(inst, Copy) or not inst.from_stage:
        return
    try:
        unchanged = expand_word(inst.from_stage, {}, escape) == inst.from_stage
    except ExpansionError:
        unchanged = False
    if not unchanged:
        raise inst.error(f"--from={inst.from_stage}: variable expansion is not supported for --from, define a new "
                         "stage with FROM using ARG from global scope as a workaround",
                         column=inst.column_of("--from"))


def _arg_name_warnings(args: list[Arg], file: str) -> Iterator[str]:
    """BuildKit takes an ARG's name as written (since Dockerfile frontend 1.8 its dispatch expands only the
    default), so ``ARG ${name}=x`` declares an ARG called ``${name}``: say so where it is written, instead of
    leaving the user with an unconsumed --build-arg later."""
    for inst in args:
        for name, _ in inst.pairs:
            if "$" in name:
                yield (f"{file}:{inst.line}: ARG {name}: variables are not expanded in an ARG name (as in BuildKit);"
                       f" this declares an ARG named {name!r}")


def _stage(index: int, base: From, instructions: list[Instruction]) -> Stage:
    return Stage(index, base.name, base, tuple(instructions))


def _flag_column(node: Node, flag: str) -> int:
    index = node.original.find(flag)
    return index + 1 if index >= 0 else 1


def parse_flags(node: Node, file: str) -> dict[str, Any]:
    """``--name=value`` words checked against FLAGS: str for values, list[str] for lists, bool for booleans."""
    accepted = FLAGS.get(node.keyword, {})
    upper = node.keyword.upper()
    out: dict[str, Any] = {}
    for flag in node.flags:
        name, eq, value = flag[2:].partition("=")
        column = _flag_column(node, flag)

        def fail(message: str, column: int = column) -> DockerfileError:
            return DockerfileError(f"{upper}: {message}", file=file, line=node.start_line, column=column)

        kind = accepted.get(name)
        if kind is None:
            known = ", ".join("--" + a for a in accepted) or "no flags"
            raise fail(f"unknown flag --{name} (accepted: {known})")
        if kind == "bool":
            if eq and value.lower() not in ("true", "false"):
                raise fail(f"--{name} takes true or false, not {value!r}")
            if name in out:
                raise fail(f"flag --{name} given twice")
            out[name] = not eq or value.lower() == "true"
            continue
        if not eq or not value:
            raise fail(f"flag --{name} needs a value (--{name}=VALUE)")
        if kind == "list":
            out.setdefault(name, []).append(value)
        elif name in out:
            raise fail(f"flag --{name} given twice")
        else:
            out[name] = value
    return out


def trigger_instruction(onbuild: Onbuild) -> Instruction | None:
    """The instruction an ONBUILD trigger of this Dockerfile runs in a child stage (for working out what that child
    needs); None when it does not parse, which the child's build reports when it runs the trigger."""
    try:
        parsed = parse_dockerfile(onbuild.trigger, file=f"{onbuild.file}:{onbuild.line} ONBUILD")
        return instruction_from_node(parsed.nodes[0], onbuild.file) if parsed.nodes else None
    except DockerfileError:
        return None


def instruction_from_node(node: Node, file: str) -> Instruction:
    kw = node.keyword
    upper = kw.upper()
    base: dict[str, Any] = {"keyword": upper, "line": node.start_line, "end_line": node.end_line,
                            "original": node.original.strip(), "file": file}
    if kw not in KNOWN:
        close = difflib.get_close_matches(kw, KNOWN, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0].upper()}?)" if close else ""
        raise DockerfileError(f"unknown instruction: {upper}{hint}", file=file, line=node.start_line, column=1)
    flags = parse_flags(node, file)
    args = node.args

    def need(condition: bool, message: str) -> None:
        if not condition:
            raise DockerfileError(f"{upper}: {message}", file=file, line=node.start_line, column=1)

    if kw == "from":
        need(len(args) in (1, 3), "expected FROM <image> [AS <name>]")
        name = None
        if len(args) == 3:
            need(args[1].lower() == "as", f"expected AS, found {args[1]!r}")
            name = args[2].lower()
            need(_valid_stage_name(name), f"invalid stage name {args[2]!r}: use letters, digits, '-', '_' and '.', "
                                          "starting with a letter")
        return From(**base, image=args[0], name=name, platform=flags.get("platform"))
    if kw == "run":
        need(bool(args), "a command is required" if not node.json_form else "the JSON array is empty")
        network = flags.get("network")
        need(network in (None, "default", "none", "host"), f"--network={network}: expected default, none or host")
        security = flags.get("security")
        need(security in (None, "sandbox", "insecure"), f"--security={security}: expected sandbox or insecure")
        for mount in flags.get("mount", []):
            try:
                check_unexpanded(mount)  # as BuildKit, when the Dockerfile is read: in every stage, built or not
            except ValueError as exc:
                need(False, f"--mount={mount}: {exc}")
        return Run(**base, args=tuple(args), json_form=node.json_form, mounts=tuple(flags.get("mount", [])),
                   network=network, security=security, heredocs=tuple(node.heredocs))
    if kw in ("copy", "add"):
        heredocs = tuple(node.heredocs)
        need(len(args) >= 2 or (bool(heredocs) and len(args) >= 1), f"expected {upper} <src>... <dest>")
        return Copy(**base, sources=tuple(args[:-1]), dest=args[-1], from_stage=flags.get("from"),
                    chown=flags.get("chown"), chmod=flags.get("chmod"), json_form=node.json_form,
                    link=bool(flags.get("link", False)), parents=bool(flags.get("parents", False)),
                    excludes=tuple(flags.get("exclude", [])), heredocs=heredocs, checksum=flags.get("checksum"),
                    keep_git_dir=bool(flags.get("keep-git-dir", False)), unpack=flags.get("unpack"))
    if kw in ("env", "label"):
        need(bool(args), f"{upper} needs at least one name=value")
        pairs = tuple((args[i], args[i + 1]) for i in range(0, len(args), 3))
        for name, _ in pairs:
            need(bool(name), "empty name")
        return KeyValues(**base, pairs=pairs)
    if kw == "arg":
        need(bool(args), "ARG needs a name")
        arg_pairs: list[tuple[str, str | None]] = []
        for word in args:
            name, eq, default = word.partition("=")
            need(bool(name), f"invalid ARG {word!r}")
            arg_pairs.append((name, default if eq else None))
        return Arg(**base, pairs=tuple(arg_pairs))
    if kw in ("workdir", "user", "stopsignal", "maintainer"):
        need(bool(args) and bool(args[0].strip()), f"{upper} needs an argument")
        return Single(**base, value=args[0])
    if kw == "expose":
        need(bool(args), "EXPOSE needs at least one port")
        return Expose(**base, ports=tuple(args))
    if kw == "volume":
        need(bool(args) and all(a.strip() for a in args), "VOLUME needs at least one path")
        return Volume(**base, paths=tuple(args), json_form=node.json_form)
    if kw == "healthcheck":
        return _healthcheck(node, base, flags, need)
    if kw == "onbuild":
        sub = node.sub
        need(sub is not None, "ONBUILD needs an instruction")
        assert sub is not None
        need(sub.keyword not in ONBUILD_FORBIDDEN, f"{sub.keyword.upper()} isn't allowed as an ONBUILD trigger")
        instruction_from_node(sub, file)  # validate the trigger now
        trigger = re.split(r"\s+", node.original.strip(), maxsplit=1)[1]
        # a heredoc's body and terminator follow the trigger's line, as BuildKit keeps them in the image's OnBuild
        trigger += "".join(f"\n{heredoc.content}{heredoc.name}" for heredoc in node.heredocs)
        return Onbuild(**base, trigger=trigger, trigger_keyword=sub.keyword.upper())
    if kw == "shell":
        need(node.json_form, "SHELL requires the arguments to be in JSON form, e.g. SHELL [\"/bin/bash\", \"-c\"]")
        need(bool(args), "SHELL needs at least one argument")
        return Command(**base, args=tuple(args), json_form=True)
    # cmd, entrypoint
    need(bool(args) or node.json_form, f"{upper} needs a command")
    return Command(**base, args=tuple(args), json_form=node.json_form)


def _healthcheck(node: Node, base: dict[str, Any], flags: dict[str, Any], need: Any) -> Healthcheck:
    args = node.args
    need(bool(args), "HEALTHCHECK needs NONE or CMD <command>")
    kind = args[0].upper()
    if kind == "NONE":
        need(len(args) == 1 and not flags, "HEALTHCHECK NONE takes no arguments or options")
        return Healthcheck(**base, test=None)
    need(kind == "CMD", f"unknown type {args[0]!r} (expected CMD or NONE)")
    command = args[1:]
    need(bool(command), "HEALTHCHECK CMD needs a command")
    test = ("CMD", *command) if node.json_form else ("CMD-SHELL", command[0])
    return Healthcheck(**base, test=test, interval=flags.get("interval"), timeout=flags.get("timeout"),
                       start_period=flags.get("start-period"), start_interval=flags.get("start-interval"),
                       retries=flags.get("retries"))


def _valid_stage_name(name: str) -> bool:
    return bool(re.fullmatch(r"[a-z][a-z0-9\-_.]*", name))
