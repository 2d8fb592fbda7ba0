"""The machinery of the Dockerfile table (tests/e2e/test_language_table.py): a case describes one build and what
``docker build`` (BuildKit) makes of it; ``check_case`` builds it with lamina, pulls it back with skopeo + umoci
and lists every difference (all of them, not only the first).
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e.conftest import Lamina
from tests.e2e.helpers import LaminaRun, Unpacked, skopeo, unpack, write_context


class _Absent:
    """Config value marker: the key is missing, null or empty."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


@dataclass(frozen=True)
class F:
    """What one path of the unpacked tree must be. ``None`` fields are not checked."""

    content: str | None = None
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    link: str | None = None  # a symlink with this target
    kind: str | None = None  # "file", "dir", "link", "fifo"
    same_as: str | None = None  # a hard link of this path (same inode)


@dataclass(frozen=True)
class H:
    """One history entry this build adds: ``created_by`` equals ``text`` (``exact``) or starts with it."""

    text: str
    empty: bool
    exact: bool = True


@dataclass(frozen=True)
class Case:
    name: str
    dockerfile: str  # @BUSYBOX@, @DEBIAN@, @BUSYBOX_REPO@ are replaced by the test registry's references
    context: Mapping[str, str | bytes] = field(default_factory=dict)
    links: Mapping[str, str] = field(default_factory=dict)  # context symlinks: path -> target
    modes: Mapping[str, int] = field(default_factory=dict)  # chmod of context files
    build_args: tuple[str, ...] = ()  # "K=V"
    target: str | None = None
    files: Mapping[str, F] = field(default_factory=dict)
    absent: tuple[str, ...] = ()
    listing: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # directory -> exactly these entries
    config: Mapping[str, Any] = field(default_factory=dict)  # config.config fragments (ABSENT: missing/empty)
    env: tuple[str, ...] = ()  # entries config.Env must hold
    env_lacks: tuple[str, ...] = ()  # names config.Env must not define
    top: Mapping[str, Any] = field(default_factory=dict)  # top-level config fields (author, architecture, ...)
    base_history: int | None = 1  # history entries inherited from the base (None: do not check the count)
    history: tuple[H, ...] | None = None  # the entries this build adds, in order
    layer_entries: Mapping[int, tuple[str, ...]] = field(default_factory=dict)  # layer index -> names it holds
    output_lacks: tuple[str, ...] = ()
    output_has: tuple[str, ...] = ()  # texts the build's output holds, verbatim
    fails_with: str | None = None  # a regex the output of a failing build matches
    dockerfile_name: str = "Dockerfile"  # the name the Dockerfile is written under (pass --dockerfile in extra_args)
    extra_args: tuple[str, ...] = ()  # more `lamina build` arguments; @CONTEXT@ is the context directory


def substitute(text: str, lamina: Lamina) -> str:
    repo = lamina.images.busybox.rsplit(":", 1)[0]
    return (text.replace("@BUSYBOX_REPO@", repo).replace("@BUSYBOX@", lamina.images.busybox)
            .replace("@DEBIAN@", lamina.images.debian))


def build_case(case: Case, lamina: Lamina, tmp: Path) -> tuple[LaminaRun, str]:
    renamed = case.dockerfile_name != "Dockerfile"
    context = write_context(tmp / "context", substitute(case.dockerfile, lamina), None if renamed else case.context)
    if renamed:  # the Dockerfile first, so that the context may hold another file named Dockerfile
        os.rename(context / "Dockerfile", context / case.dockerfile_name)
        for rel, content in case.context.items():
            path = context / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content if isinstance(content, bytes) else content.encode())
    for rel, target in case.links.items():
        path = context / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, path)
    for rel, mode in case.modes.items():
        os.chmod(context / rel, mode)
    dest = lamina.dest(re.sub(r"[^a-z0-9-]", "-", case.name.lower()))
    args = ["--destination", dest]
    for arg in case.build_args:
        args += ["--build-arg", substitute(arg, lamina)]
    if case.target:
        args += ["--target", case.target]
    args += [substitute(arg, lamina).replace("@CONTEXT@", str(context)) for arg in case.extra_args]
    return lamina.build(context, *args), dest


def raw_config(dest: str) -> dict[str, Any]:
    """The config blob as pushed (``skopeo inspect --config --raw``): keeps Docker-only fields."""
    result: dict[str, Any] = json.loads(skopeo("inspect", "--config", "--raw", "--tls-verify=false",
                                               f"docker://{dest}").stdout)
    return result


def _kind(st: os.stat_result) -> str:
    if stat.S_ISLNK(st.st_mode):
        return "link"
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    if stat.S_ISFIFO(st.st_mode):
        return "fifo"
    return "file" if stat.S_ISREG(st.st_mode) else "other"


def check_files(case: Case, image: Unpacked) -> list[str]:
    problems: list[str] = []
    for rel, want in case.files.items():
        if not image.exists(rel):
            problems.append(f"{rel}: missing")
            continue
        st = image.lstat(rel)
        kind = _kind(st)
        if want.kind is not None and kind != want.kind:
            problems.append(f"{rel}: is a {kind}, expected a {want.kind}")
        if want.link is not None:
            if kind != "link":
                problems.append(f"{rel}: is a {kind}, expected a symlink to {want.link!r}")
            elif os.readlink(image.path(rel)) != want.link:
                problems.append(f"{rel}: symlink to {os.readlink(image.path(rel))!r}, expected {want.link!r}")
        if want.content is not None:
            if kind != "file":
                problems.append(f"{rel}: is a {kind}, expected a file holding {want.content!r}")
            elif (got := image.read(rel)) != want.content:
                problems.append(f"{rel}: content {got!r}, expected {want.content!r}")
        if want.mode is not None and stat.S_IMODE(st.st_mode) != want.mode:
            problems.append(f"{rel}: mode {stat.S_IMODE(st.st_mode):o}, expected {want.mode:o}")
        if want.uid is not None and st.st_uid != want.uid:
            problems.append(f"{rel}: uid {st.st_uid}, expected {want.uid}")
        if want.gid is not None and st.st_gid != want.gid:
            problems.append(f"{rel}: gid {st.st_gid}, expected {want.gid}")
        if want.same_as is not None:
            if not image.exists(want.same_as):
                problems.append(f"{rel}: its hard-link partner {want.same_as} is missing")
            else:
                other = image.lstat(want.same_as)
                if (other.st_ino, other.st_dev) != (st.st_ino, st.st_dev):
                    problems.append(f"{rel}: not a hard link of {want.same_as}")
    for rel in case.absent:
        if image.exists(rel):
            problems.append(f"{rel}: present, expected absent")
    for rel, names in case.listing.items():
        path = image.path(rel)
        entries = sorted(os.listdir(path)) if path.is_dir() else None
        if entries != sorted(names):
            problems.append(f"{rel or '/'}: holds {entries}, expected {sorted(names)}")
    return problems


def check_config(case: Case, config: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    inner: Mapping[str, Any] = config.get("config") or {}
    for key, want in case.config.items():
        got = inner.get(key)
        if want is ABSENT:
            if got:
                problems.append(f"config.{key}: {got!r}, expected absent")
        elif got != want:
            problems.append(f"config.{key}: {got!r}, expected {want!r}")
    env: list[str] = list(inner.get("Env") or [])
    for entry in case.env:
        if entry not in env:
            problems.append(f"config.Env lacks {entry!r}: {env}")
    for name in case.env_lacks:
        if any(e.split("=", 1)[0] == name for e in env):
            problems.append(f"config.Env defines {name}: {env}")
    for key, want in case.top.items():
        if config.get(key) != want:
            problems.append(f"{key}: {config.get(key)!r}, expected {want!r}")
    return problems


def check_history(case: Case, config: Mapping[str, Any], image: Unpacked) -> list[str]:
    problems: list[str] = []
    history: list[dict[str, Any]] = list(config.get("history") or [])
    non_empty = [h for h in history if not h.get("empty_layer")]
    layers = len(image.manifest["layers"])
    if len(non_empty) != layers or len(config["rootfs"]["diff_ids"]) != layers:
        problems.append(f"history has {len(non_empty)} non-empty entries, {len(config['rootfs']['diff_ids'])}"
                        f" diff_ids, the manifest {layers} layers")
    if case.history is None:
        return problems
    shown = "\n    ".join(f"{h.get('created_by')!r} empty={bool(h.get('empty_layer'))}" for h in history)
    if case.base_history is not None and len(history) != case.base_history + len(case.history):
        problems.append(f"history has {len(history)} entries, expected {case.base_history} inherited + "
                        f"{len(case.history)}:\n    {shown}")
    for want, got in zip(reversed(case.history), reversed(history), strict=False):
        text = str(got.get("created_by", ""))
        if (text != want.text) if want.exact else not text.startswith(want.text):
            problems.append(f"history created_by {text!r}, expected {'' if want.exact else 'a prefix '}"
                            f"{want.text!r}")
        if bool(got.get("empty_layer")) != want.empty:
            problems.append(f"history {text!r}: empty_layer={bool(got.get('empty_layer'))}, expected {want.empty}")
    return problems


def check_layers(case: Case, image: Unpacked) -> list[str]:
    problems: list[str] = []
    for index, names in case.layer_entries.items():
        entries = image.layer(index)
        for name in names:
            if name not in entries:
                problems.append(f"layer {index} lacks {name!r}: {sorted(entries)[:40]}")
    return problems


def check_case(case: Case, lamina: Lamina, tmp: Path) -> list[str]:
    """Build ``case``; every way the result differs from the expectations (empty when it matches)."""
    run, dest = build_case(case, lamina, tmp)
    if case.fails_with is not None:
        if run.returncode == 0:
            return [f"the build succeeded, expected a failure matching {case.fails_with!r}"]
        if not re.search(case.fails_with, run.output, re.IGNORECASE):
            return [f"the failure does not match {case.fails_with!r}:\n{run.output[-3000:]}"]
        return []
    if run.returncode != 0:
        return [run.describe()]
    problems = [f"output holds {text!r}" for text in case.output_lacks if text in run.output]
    problems += [f"output lacks {text!r}:\n{run.output[-3000:]}" for text in case.output_has if text not in run.output]
    image = unpack(f"docker://{dest}", tmp / "pulled")
    config = raw_config(dest)
    problems += check_files(case, image)
    problems += check_config(case, config)
    problems += check_history(case, config, image)
    problems += check_layers(case, image)
    return problems
