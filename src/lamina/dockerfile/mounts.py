"""``RUN --mount=...`` values, parsed the way BuildKit's Dockerfile frontend reads them.

A value is one CSV record of ``key=value`` fields (``readonly``/``ro``, ``readwrite``/``rw`` and ``required`` may
stand alone). ``parse_mount`` takes a value (and how to expand each field's value) and returns one of the frozen
mount types below, with
BuildKit's defaults applied; anything BuildKit refuses raises ``ValueError`` with the reason (the caller names the
Dockerfile line). Pure: no filesystem access.

Defaults, as BuildKit has them: the type is ``bind``; bind and secret mounts are read-only and cache and tmpfs
mounts writable unless ``ro``/``rw`` say otherwise; a relative target is relative to the working directory, and a
missing one is the working directory itself (except for a secret); a cache id defaults to the target as written,
cleaned (``/root/.cache/`` is ``/root/.cache``), its new directory to mode 0755 owned by 0:0 (or a copy of
``from``'s ``source``, see ``CacheMount``), its sharing to
``shared``; a secret id defaults to ``source`` or else the target's basename, its target to
``/run/secrets/<basename of id>`` unless only ``env`` is given, its file to mode 0400 owned by 0:0; a secret is
optional unless ``required``; an SSH mount's id defaults to ``default``, its socket to mode 0600 owned by 0:0,
and it is optional unless ``required``. ``id`` and ``env`` are accepted, and ignored, on types that do not use them.
BuildKit's integration tests for all this are mirrored, with their sources, in tests/unit/test_buildkit_mounts.py.
"""

from __future__ import annotations

import csv
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass

MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
SHARING_MODES = ("shared", "private", "locked")
KNOWN_KEYS = ("type", "from", "source", "src", "target", "dst", "destination", "readonly", "ro", "readwrite", "rw",
              "id", "sharing", "required", "size", "mode", "uid", "gid", "env")
SECRETS_DIR = "/run/secrets"
MAX_ID = 2**32 - 1
_GO_FLOAT = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")  # strconv.ParseFloat's decimal form
_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


@dataclass(frozen=True)
class BindMount:
    target: str  # absolute, normalised
    source: str = "/"  # inside the context or the ``from`` root; "/" is the root itself
    from_stage: str | None = None  # a stage name/index or an image; None: the build context
    readonly: bool = True


@dataclass(frozen=True)
class CacheMount:
    target: str
    id: str  # defaults to the target as written
    sharing: str = "shared"
    readonly: bool = False
    from_stage: str | None = None  # seeds a new cache directory
    source: str = "/"  # sub-path of the cache (or of ``from``) to mount
    # as given (None: not): BuildKit makes a new cache directory with them (0755, 0, 0 for those not given) when
    # one is given and ``source`` is not; else a new cache is the source's copy, its owner and mode kept
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None


@dataclass(frozen=True)
class TmpfsMount:
    target: str
    size: int | None = None  # bytes; None: the kernel's default
    readonly: bool = False  # ``ro``: mounted read-only, as BuildKit mounts it


@dataclass(frozen=True)
class SecretMount:
    id: str
    target: str | None  # None: only exposed as ``env``
    env: str | None = None
    required: bool = False
    mode: int = 0o400
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class SshMount:
    """An SSH agent socket (``--ssh ID``) at ``target``; None: ``/run/buildkit/ssh_agent.<n>`` for the RUN's n-th
    (from 0) SSH mount, as BuildKit places it."""

    id: str = "default"
    target: str | None = None
    required: bool = False
    mode: int = 0o600
    uid: int = 0
    gid: int = 0


Mount = BindMount | CacheMount | TmpfsMount | SecretMount | SshMount


def parse_size(text: str) -> int:
    """A tmpfs size as Docker's ``units.RAMInBytes`` reads it: ``65536``, ``64m``, ``1.5g``, ``64MiB``, ``512kb``,
    ``64 m``, ``1e3``. The number ends at the last digit, dot or space (one space may separate it from the suffix);
    the suffix is ``b`` alone, or ``k``, ``m``, ``g``, ``t`` or ``p`` (powers of 1024) with ``b`` or ``ib`` after
    it, in any case. Nothing is trimmed: ``" 64m"`` is refused."""
    sep = max(text.rfind(c) for c in "0123456789. ")
    if sep < 0:
        raise ValueError(f"invalid value for size: {text}")
    number, suffix = (text[:sep], text[sep + 1:]) if text[sep] == " " else (text[:sep + 1], text[sep + 1:])
    if not _GO_FLOAT.match(number):
        raise ValueError(f"invalid value for size: {text}")
    size = float(number)
    lowered = suffix.lower()
    if lowered and lowered != "b":
        if len(lowered) > 3 or lowered[0] not in _UNITS or lowered[1:] not in ("", "b", "ib"):
            raise ValueError(f"invalid value for size: {text}")
        size *= _UNITS[lowered[0]]
    if not 0 <= size < 2**63:  # negative, or beyond an int64 (Go: a range error or a wrapped number)
        raise ValueError(f"invalid value for size: {text}")
    return int(size)


def _bool(key: str, value: str) -> bool:
    """Go's ``strconv.ParseBool``: exactly these spellings, nothing trimmed."""
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"invalid value for {key}: {value}")


def _uint(key: str, value: str, base: int) -> int:
    if not value or not all(c in "0123456789"[:base] for c in value):
        raise ValueError(f"invalid value {value} for {key}")
    number = int(value, base)
    if number > MAX_ID:
        raise ValueError(f"invalid value {value} for {key}")
    return number


def _fields(value: str) -> list[str]:
    try:
        rows = list(csv.reader([value], strict=True))
    except csv.Error as exc:
        raise ValueError(f"failed to parse csv mounts: {exc}") from None
    return rows[0] if rows else []


def _clean(path: str) -> str:
    """Go's ``path.Clean``: ``""`` is ``"."`` and a path never starts with two slashes."""
    cleaned = posixpath.normpath(path)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def _base(path: str) -> str:
    """Go's ``path.Base``: the last element, trailing slashes ignored; ``""`` is ``"."`` and ``"///"`` is ``"/"``."""
    if not path:
        return "."
    stripped = path.rstrip("/")
    return stripped.rsplit("/", 1)[-1] if stripped else "/"


def _target(raw: str, workdir: str) -> str:
    target = _clean(posixpath.join("/", workdir, raw))
    if target == "/":
        where = repr(raw) if raw else "'/' (no target given: the working directory, which is /)"
        raise ValueError(f"invalid mount target {where}")
    return target


def check_unexpanded(value: str) -> None:
    """What BuildKit refuses in a ``--mount`` value when it reads the Dockerfile, before any expansion: a ``from=``
    naming a variable (a ``$`` anywhere but last). A value that is not valid CSV passes here; ``parse_mount``
    reports it when the RUN runs."""
    try:
        fields = _fields(value)
    except ValueError:
        return
    for field in fields:
        key, eq, val = field.partition("=")
        if eq and key.lower() == "from" and "$" in val[:-1]:
            raise ValueError("'from' doesn't support variable expansion, define alias stage instead")


def parse_mount(value: str, workdir: str = "/", expand: Callable[[str], str] | None = None) -> Mount:
    """Parse one ``--mount`` value; ``workdir`` anchors a relative (or missing) target.

    The value is split into fields first, then ``expand`` (the stage's ARG and ENV) is applied to each field's value,
    as BuildKit does: never to a key or a bare flag, and a comma or ``=`` in a variable stays in its value.
    Fields are read in order, as BuildKit reads them: ``required`` and ``size`` are checked against the type given
    *before* them (``size=1m,type=tmpfs`` is refused), and a later field overrides an earlier one. Keys, ``type``
    and ``sharing`` are case-insensitive; nothing is trimmed."""
    kind = "bind"
    got: dict[str, str] = {}
    readonly: bool | None = None
    required = False
    size: int | None = None
    numbers: dict[str, int] = {}
    for field in _fields(value):
        key, eq, val = field.partition("=")
        key = key.lower()
        if eq and expand is not None:
            val = expand(val)
        if not eq:
            if key in ("readonly", "ro"):
                readonly = True
            elif key in ("readwrite", "rw"):
                readonly = False
            elif key == "required":
                if kind not in ("secret", "ssh"):
                    raise ValueError(f"unexpected key 'required' for mount type '{kind}'")
                required = True
            else:
                raise ValueError(f"invalid field '{field}' must be a key=value pair")
            continue
        if key not in KNOWN_KEYS:
            raise ValueError(f"unexpected key '{key}' in '{field}' (expected one of {', '.join(KNOWN_KEYS)})")
        if key == "type":
            kind = val.lower()
            if kind not in MOUNT_TYPES:
                raise ValueError(f"unsupported mount type {val!r} (expected one of {', '.join(MOUNT_TYPES)})")
        elif key in ("readonly", "ro"):
            readonly = _bool(key, val)
        elif key in ("readwrite", "rw"):
            readonly = not _bool(key, val)
        elif key == "required":
            if kind not in ("secret", "ssh"):
                raise ValueError(f"unexpected key 'required' for mount type '{kind}'")
            required = _bool(key, val)
        elif key == "size":
            if kind != "tmpfs":
                raise ValueError(f"unexpected key 'size' for mount type '{kind}'")
            size = parse_size(val)
        elif key == "sharing":
            if val.lower() not in SHARING_MODES:
                raise ValueError(f"unsupported sharing value {val!r} (expected one of {', '.join(SHARING_MODES)})")
            got["sharing"] = val.lower()
        elif key in ("mode", "uid", "gid"):
            numbers[key] = _uint(key, val, 8 if key == "mode" else 10)
        else:
            got[{"src": "source", "dst": "target", "destination": "target"}.get(key, key)] = val
    if kind not in ("secret", "cache", "ssh"):
        for key in ("mode", "uid", "gid"):
            if key in numbers:
                raise ValueError(f"{key} not allowed for {kind!r} type mounts")
    raw_target = got.get("target", "")
    source = got.get("source", "")
    from_stage = got.get("from") or None
    mode, uid, gid = numbers.get("mode"), numbers.get("uid", 0), numbers.get("gid", 0)

    if kind == "secret":
        if from_stage is not None:
            raise ValueError("secret mount should not have a from")
        if "sharing" in got:
            raise ValueError("secret mount should not define sharing")
        if not source and not raw_target and not got.get("id"):
            raise ValueError("invalid secret mount: one of id, source or target is required")
        if source and got.get("id"):
            raise ValueError("both source and id can't be set on a secret mount")
        secret_id = source or got.get("id") or _base(raw_target)
        env = got.get("env")
        if env is not None and (not env or "=" in env or "\0" in env):
            raise ValueError(f"invalid environment variable name for a secret: {env!r}")
        target: str | None
        if raw_target:
            target = _target(raw_target, "/")
        elif env is None:
            target = _target(posixpath.join(SECRETS_DIR, _base(secret_id)), "/")
        else:
            target = None
        return SecretMount(secret_id, target, env, required, 0o400 if mode is None else mode, uid, gid)

    if "sharing" in got and kind != "cache":
        raise ValueError(f"invalid cache sharing set for {kind} mount")
    if kind == "ssh":
        if source:
            raise ValueError("ssh does not support source")
        return SshMount(got.get("id") or "default", _target(raw_target, "/") if raw_target else None, required,
                        0o600 if mode is None else mode, uid, gid)
    target = _target(raw_target, workdir)  # none given: the working directory itself, as BuildKit joins it
    if kind == "tmpfs":
        return TmpfsMount(target, size or None, bool(readonly))
    clean_source = _clean(posixpath.join("/", source))
    if kind == "bind":
        return BindMount(target, clean_source, from_stage, True if readonly is None else readonly)
    return CacheMount(target, got.get("id") or _clean(raw_target), got.get("sharing", "shared"),
                      False if readonly is None else readonly, from_stage, clean_source,
                      numbers.get("mode"), numbers.get("uid"), numbers.get("gid"))


def mount_from(value: str) -> str | None:
    """The ``from=`` of a raw (unexpanded) ``--mount`` value, for working out which stages a RUN needs; None when
    it has none (or does not parse: the RUN reports that)."""
    try:
        fields = _fields(value)
    except ValueError:
        return None
    found = None
    for field in fields:
        key, eq, val = field.partition("=")
        if eq and key.strip().lower() == "from" and val:
            found = val
    return found
