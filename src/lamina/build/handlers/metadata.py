"""Instructions that only change the image config: ENV, ARG, LABEL, EXPOSE, USER, CMD, ENTRYPOINT.

Each returns the history ``created_by`` text, written as BuildKit writes it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from lamina.build.state import StageState
from lamina.dockerfile.instructions import (
    Arg,
    Command,
    Expose,
    Healthcheck,
    Instruction,
    KeyValues,
    Onbuild,
    Single,
    Volume,
)
from lamina.dockerfile.lex import ExpansionError, expand_word, expand_words


def expand(inst: Instruction, text: str, env: Mapping[str, str], escape: str) -> str:
    try:
        return expand_word(text, env, escape)
    except ExpansionError as exc:
        raise inst.error(f"{exc} in {text!r}", column=inst.column_of(text)) from None


def expand_list(inst: Instruction, text: str, env: Mapping[str, str], escape: str) -> list[str]:
    try:
        return expand_words(text, env, escape)
    except ExpansionError as exc:
        raise inst.error(f"{exc} in {text!r}", column=inst.column_of(text)) from None


def go_list(values: list[str]) -> str:
    """Go's %q of a []string, as BuildKit prints CMD/ENTRYPOINT in history."""
    return "[" + " ".join(json.dumps(v, ensure_ascii=False) for v in values) + "]"


def apply_env(state: StageState, inst: KeyValues, escape: str) -> str:
    env = state.expansion_env()  # every value on the line sees the environment from before the line
    parts = []
    for raw_name, raw_value in inst.pairs:
        name = expand(inst, raw_name, env, escape)
        value = expand(inst, raw_value, env, escape)
        state.set_env(name, value)
        parts.append(f"{name}={value}")
    return "ENV " + " ".join(parts)


def apply_label(state: StageState, inst: KeyValues, escape: str) -> str:
    env = state.expansion_env()
    labels = dict(state.config.get("Labels") or {})
    parts = []
    for raw_name, raw_value in inst.pairs:
        name = expand(inst, raw_name, env, escape)
        value = expand(inst, raw_value, env, escape)
        labels[name] = value
        parts.append(f"{name}={value}")
    state.config["Labels"] = labels
    return "LABEL " + " ".join(parts)


def apply_arg(state: StageState, inst: Arg, escape: str, build_args: Mapping[str, str],
              meta_args: Mapping[str, str], used: set[str]) -> str:
    """Declare ARGs; history shows each with the value it ends up with, as current BuildKit writes it."""
    parts = []
    for name, raw_default in inst.pairs:
        if name in build_args:
            value: str | None = build_args[name]
            used.add(name)
        elif raw_default is not None:
            value = expand(inst, raw_default, state.expansion_env(), escape)
        else:
            value = meta_args.get(name)
        if value is not None:
            state.args[name] = value
        if name not in state.arg_order:
            state.arg_order.append(name)
        parts.append(name if value is None else f"{name}={value}")
    return "ARG " + " ".join(parts)


def apply_expose(state: StageState, inst: Expose, escape: str) -> str:
    env = state.expansion_env()
    ports = dict(state.config.get("ExposedPorts") or {})
    added = []
    for raw in inst.ports:
        for word in expand_list(inst, raw, env, escape):
            port, _, proto = word.partition("/")
            proto = (proto or "tcp").lower()
            if proto not in ("tcp", "udp", "sctp"):
                raise inst.error(f"invalid protocol {proto!r} in {word!r} (use tcp, udp or sctp)")
            if not re.fullmatch(r"[0-9]+(-[0-9]+)?", port):
                raise inst.error(f"invalid port {word!r}")
            first, _, last = port.partition("-")
            for number in range(int(first), int(last or first) + 1):
                if not 0 < number < 65536:
                    raise inst.error(f"port {number} is out of range 1-65535")
                key = f"{number}/{proto}"
                ports[key] = {}
                added.append(key)
    state.config["ExposedPorts"] = ports
    return "EXPOSE map[" + " ".join(f"{k}:{{}}" for k in sorted(added)) + "]"


def apply_user(state: StageState, inst: Single, escape: str) -> str:
    user = expand(inst, inst.value, state.expansion_env(), escape)
    state.config["User"] = user
    return f"USER {user}"


def command_argv(state: StageState, inst: Command) -> list[str]:
    if inst.json_form:
        return list(inst.args)
    return [*state.shell, inst.args[0]]


def apply_cmd(state: StageState, inst: Command) -> str:
    argv = command_argv(state, inst)
    state.config["Cmd"] = argv
    state.config["ArgsEscaped"] = True  # BuildKit sets it on every CMD, for the Docker image spec
    state.cmd_set = True
    return f"CMD {go_list(argv)}"


def apply_entrypoint(state: StageState, inst: Command) -> str:
    argv = command_argv(state, inst)
    state.config["Entrypoint"] = argv
    if not state.cmd_set:
        state.config["Cmd"] = None
    return f"ENTRYPOINT {go_list(argv)}"


def apply_volume(state: StageState, inst: Volume, escape: str) -> str:
    env = state.expansion_env()
    volumes = dict(state.config.get("Volumes") or {})
    added = []
    for raw in inst.paths:
        path = expand(inst, raw, env, escape)
        if not path:
            raise inst.error("VOLUME paths must not be empty", column=inst.column_of(raw))
        volumes[path] = {}
        added.append(path)
    state.config["Volumes"] = volumes
    return "VOLUME [" + " ".join(added) + "]"


SIGNALS = ["HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2", "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG", "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS"]


def apply_stopsignal(state: StageState, inst: Single, escape: str) -> str:
    signal = expand(inst, inst.value, state.expansion_env(), escape)
    name = signal.upper().removeprefix("SIG")
    valid = (signal.isdigit() and 0 < int(signal) < 65) or name in SIGNALS or re.fullmatch(
        r"RTM(IN|AX)([+-]\d+)?", name) is not None
    if not valid:
        raise inst.error(f"invalid signal {signal!r}", column=inst.column_of(inst.value))
    state.config["StopSignal"] = signal
    return f"STOPSIGNAL {signal}"


def apply_maintainer(state: StageState, inst: Single) -> str:
    state.author = inst.value  # MAINTAINER is not expanded (BuildKit); deprecated in favour of LABEL
    return f"MAINTAINER {inst.value}"


def apply_shell(state: StageState, inst: Command) -> str:
    state.config["Shell"] = list(inst.args)
    return "SHELL [" + " ".join(inst.args) + "]"  # Go's %v of a []string, as BuildKit writes it


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000,
            "h": 3_600_000_000_000}


def parse_duration(text: str) -> int:
    """Go's time.ParseDuration, in nanoseconds (``1m30s``, ``500ms``, ``0``); ValueError when malformed."""
    if text == "0":
        return 0
    pos, total = 0, 0.0
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if match is None:
            raise ValueError(f"invalid duration {text!r}")
        total += float(match.group(1)) * _UNIT_NS[match.group(2)]
        pos = match.end()
    if not text:
        raise ValueError("empty duration")
    return int(total)


def apply_healthcheck(state: StageState, inst: Healthcheck) -> str:
    if inst.test is None:
        state.config["Healthcheck"] = {"Test": ["NONE"]}
        return "HEALTHCHECK NONE"
    check: dict[str, object] = {"Test": list(inst.test)}
    for key, raw, flag in (("Interval", inst.interval, "interval"), ("Timeout", inst.timeout, "timeout"),
                           ("StartPeriod", inst.start_period, "start-period"),
                           ("StartInterval", inst.start_interval, "start-interval")):
        if raw is None:
            continue
        try:
            value = parse_duration(raw)
        except ValueError as exc:
            raise inst.error(f"--{flag}: {exc}", column=inst.column_of(f"--{flag}")) from None
        if 0 < value < 1_000_000:
            raise inst.error(f"--{flag}={raw} cannot be less than 1ms", column=inst.column_of(f"--{flag}"))
        if value < 0:
            raise inst.error(f"--{flag}={raw} cannot be negative", column=inst.column_of(f"--{flag}"))
        if value:
            check[key] = value
    if inst.retries is not None:
        if not inst.retries.isdigit():
            raise inst.error(f"--retries={inst.retries}: expected a whole number", column=inst.column_of("--retries"))
        if int(inst.retries):
            check["Retries"] = int(inst.retries)
    state.config["Healthcheck"] = check
    return inst.original


def apply_onbuild(state: StageState, inst: Onbuild) -> str:
    triggers = list(state.config.get("OnBuild") or [])
    triggers.append(inst.trigger)
    state.config["OnBuild"] = triggers
    return f"ONBUILD {inst.trigger}"
