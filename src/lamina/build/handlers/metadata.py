"""Instructions that only change the image config: ENV, ARG, LABEL, EXPOSE, USER, CMD, ENTRYPOINT.

Each returns the history ``created_by`` text, written as BuildKit writes it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from lamina.build.state import StageState
from lamina.dockerfile.instructions import Arg, Command, Expose, Instruction, KeyValues, Single
from lamina.dockerfile.lex import ExpansionError, expand_word, expand_words


def expand(inst: Instruction, text: str, env: Mapping[str, str], escape: str) -> str:
    try:
        return expand_word(text, env, escape)
    except ExpansionError as exc:
        raise inst.error(f"{exc} in {text!r}") from None


def expand_list(inst: Instruction, text: str, env: Mapping[str, str], escape: str) -> list[str]:
    try:
        return expand_words(text, env, escape)
    except ExpansionError as exc:
        raise inst.error(f"{exc} in {text!r}") from None


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
        parts.append(name + (f"={raw_default}" if raw_default is not None else ""))
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
    state.cmd_set = True
    return f"CMD {go_list(argv)}"


def apply_entrypoint(state: StageState, inst: Command) -> str:
    argv = command_argv(state, inst)
    state.config["Entrypoint"] = argv
    if not state.cmd_set:
        state.config["Cmd"] = None
    return f"ENTRYPOINT {go_list(argv)}"
