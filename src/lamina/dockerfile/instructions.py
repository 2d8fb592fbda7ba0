"""Typed instructions made from the raw syntax tree, and the stages they form.

Arguments stay unexpanded here (expansion needs the build state); flags are checked against what each keyword
accepts so that a typo fails before anything runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from lamina.dockerfile.parse import Node, ParsedDockerfile, parse_dockerfile
from lamina.errors import DockerfileError, UnsupportedInstruction

KNOWN = ("add", "arg", "cmd", "copy", "entrypoint", "env", "expose", "from", "healthcheck", "label", "maintainer",
         "onbuild", "run", "shell", "stopsignal", "user", "volume", "workdir")
SUPPORTED = ("arg", "cmd", "copy", "entrypoint", "env", "expose", "from", "label", "run", "user", "workdir")
ALLOWED_FLAGS: dict[str, tuple[str, ...]] = {
    "from": ("platform",),
    "copy": ("from", "chown", "chmod"),
    "run": (),
}


@dataclass(frozen=True)
class Instruction:
    """Fields every instruction has: where it is and how it was written."""

    keyword: str  # upper case, e.g. "RUN"
    line: int
    end_line: int
    original: str  # the instruction text, continuations joined
    file: str

    def error(self, message: str) -> DockerfileError:
        return DockerfileError(f"{self.keyword}: {message}", file=self.file, line=self.line)


@dataclass(frozen=True)
class From(Instruction):
    image: str  # unexpanded
    name: str | None
    platform: str | None


@dataclass(frozen=True)
class Run(Instruction):
    args: tuple[str, ...]  # exec form: the argv; shell form: one element, the command line
    json_form: bool


@dataclass(frozen=True)
class Copy(Instruction):
    sources: tuple[str, ...]
    dest: str
    from_stage: str | None
    chown: str | None
    chmod: str | None
    json_form: bool


@dataclass(frozen=True)
class KeyValues(Instruction):
    """ENV and LABEL: (name, raw value) pairs."""

    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Arg(Instruction):
    pairs: tuple[tuple[str, str | None], ...]  # name, raw default (None: no default)


@dataclass(frozen=True)
class Single(Instruction):
    """WORKDIR and USER: one raw argument."""

    value: str


@dataclass(frozen=True)
class Expose(Instruction):
    ports: tuple[str, ...]


@dataclass(frozen=True)
class Command(Instruction):
    """CMD and ENTRYPOINT."""

    args: tuple[str, ...]
    json_form: bool


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
    """Parse Dockerfile text into typed stages; raises DockerfileError for anything malformed or unsupported."""
    parsed = parse_dockerfile(text, file=file)
    return build_stages(parsed, file=file)


def build_stages(parsed: ParsedDockerfile, *, file: str) -> Dockerfile:
    meta: list[Arg] = []
    stages: list[Stage] = []
    current: tuple[From, list[Instruction]] | None = None
    for node in parsed.nodes:
        inst = _instruction(node, file, parsed.directives.escape)
        if isinstance(inst, From):
            if current is not None:
                stages.append(_stage(len(stages), *current))
            current = (inst, [])
        elif current is None:
            if not isinstance(inst, Arg):
                raise DockerfileError(f"{inst.keyword} before the first FROM: only ARG may come before FROM",
                                      file=file, line=inst.line)
            meta.append(inst)
        else:
            current[1].append(inst)
    if current is None:
        raise DockerfileError("no FROM instruction: a Dockerfile must start its first stage with FROM", file=file,
                              line=parsed.nodes[-1].end_line)
    stages.append(_stage(len(stages), *current))
    seen: dict[str, int] = {}
    for stage in stages:
        if stage.name is None:
            continue
        if stage.name in seen:
            raise DockerfileError(f"duplicate stage name {stage.name!r} (first used on line "
                                  f"{stages[seen[stage.name]].base.line})", file=file, line=stage.base.line)
        seen[stage.name] = stage.index
    return Dockerfile(file, tuple(meta), tuple(stages), parsed.directives.escape, parsed.warnings)


def _stage(index: int, base: From, instructions: list[Instruction]) -> Stage:
    return Stage(index, base.name, base, tuple(instructions))


def _flags(node: Node, file: str) -> dict[str, str]:
    allowed = ALLOWED_FLAGS.get(node.keyword, ())
    out: dict[str, str] = {}
    for flag in node.flags:
        name, eq, value = flag[2:].partition("=")
        if name not in allowed:
            accepted = ", ".join("--" + a for a in allowed) or "no flags"
            raise DockerfileError(f"{node.keyword.upper()}: unknown flag --{name} (accepted: {accepted})", file=file,
                                  line=node.start_line)
        if not eq or not value:
            raise DockerfileError(f"{node.keyword.upper()}: flag --{name} needs a value (--{name}=VALUE)",
                                  file=file, line=node.start_line)
        if name in out:
            raise DockerfileError(f"{node.keyword.upper()}: flag --{name} given twice", file=file,
                                  line=node.start_line)
        out[name] = value
    return out


def _instruction(node: Node, file: str, escape: str) -> Instruction:
    kw = node.keyword
    upper = kw.upper()
    base: dict[str, Any] = {"keyword": upper, "line": node.start_line, "end_line": node.end_line,
                            "original": node.original.strip(), "file": file}
    if kw not in KNOWN:
        raise DockerfileError(f"unknown instruction: {upper}", file=file, line=node.start_line)
    if kw not in SUPPORTED:
        raise UnsupportedInstruction(f"{upper} is not supported yet", file=file, line=node.start_line)
    if node.heredocs:
        raise UnsupportedInstruction(f"{upper}: heredocs are not supported yet", file=file, line=node.start_line)
    flags = _flags(node, file)
    args = node.args

    def need(condition: bool, message: str) -> None:
        if not condition:
            raise DockerfileError(f"{upper}: {message}", file=file, line=node.start_line)

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
        need(bool(args) or node.json_form, "a command is required")
        need(bool(args), "the JSON array is empty")
        return Run(**base, args=tuple(args), json_form=node.json_form)
    if kw == "copy":
        need(len(args) >= 2, "expected COPY <src>... <dest>")
        return Copy(**base, sources=tuple(args[:-1]), dest=args[-1], from_stage=flags.get("from"),
                    chown=flags.get("chown"), chmod=flags.get("chmod"), json_form=node.json_form)
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
    if kw in ("workdir", "user"):
        need(bool(args) and bool(args[0].strip()), f"{upper} needs an argument")
        return Single(**base, value=args[0])
    if kw == "expose":
        need(bool(args), "EXPOSE needs at least one port")
        return Expose(**base, ports=tuple(args))
    # cmd, entrypoint
    need(bool(args) or node.json_form, f"{upper} needs a command")
    return Command(**base, args=tuple(args), json_form=node.json_form)


def _valid_stage_name(name: str) -> bool:
    return bool(re.fullmatch(r"[a-z][a-z0-9\-_.]*", name))
