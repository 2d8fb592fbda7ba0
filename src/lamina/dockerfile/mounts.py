"""``RUN --mount=...`` values, parsed the way BuildKit's Dockerfile frontend reads them.

A value is one CSV record of ``key=value`` fields (``readonly``/``ro``, ``readwrite``/``rw`` and ``required`` may
stand alone). ``parse_mount`` takes an *expanded* value and returns one of the frozen mount types below, with
BuildKit's defaults applied; anything BuildKit refuses raises ``ValueError`` with the reason (the caller names the
Dockerfile line). Pure: no filesystem access.

Defaults, as BuildKit has them: the type is ``bind``; bind and secret mounts are read-only and cache and tmpfs
mounts writable unless ``ro``/``rw`` say otherwise; a relative target is relative to the working directory; a cache
id defaults to the target as written, its directory to mode 0755 owned by 0:0, its sharing to ``shared``; a secret
id defaults to ``source`` or else the target's basename, its target to ``/run/secrets/<id>`` unless only ``env`` is
given, its file to mode 0400 owned by 0:0; a secret is optional unless ``required``.
"""

from __future__ import annotations

import csv
import posixpath
import re
from dataclasses import dataclass

MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
SHARING_MODES = ("shared", "private", "locked")
KNOWN_KEYS = ("type", "from", "source", "src", "target", "dst", "destination", "readonly", "ro", "readwrite", "rw",
              "id", "sharing", "required", "size", "mode", "uid", "gid", "env")
SECRETS_DIR = "/run/secrets"
MAX_ID = 2**32 - 1
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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
    mode: int = 0o755
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class TmpfsMount:
    target: str
    size: int | None = None  # bytes; None: the kernel's default


@dataclass(frozen=True)
class SecretMount:
    id: str
    target: str | None  # None: only exposed as ``env``
    env: str | None = None
    required: bool = False
    mode: int = 0o400
    uid: int = 0
    gid: int = 0


Mount = BindMount | CacheMount | TmpfsMount | SecretMount


def parse_size(text: str) -> int:
    """A tmpfs size as Docker's ``units.RAMInBytes`` reads it: ``65536``, ``64m``, ``1.5g``, ``64MiB``, ``512kb``."""
    match = _SIZE.match(text.strip())
    if not match:
        raise ValueError(f"invalid value for size: {text}")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def _bool(key: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "t", "true"):
        return True
    if lowered in ("0", "f", "false"):
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


def _target(raw: str, workdir: str) -> str:
    target = posixpath.normpath(posixpath.join("/", workdir, raw))
    if target.startswith("//"):
        target = "/" + target.lstrip("/")
    if target == "/":
        raise ValueError(f"invalid mount target {raw!r}")
    return target


def parse_mount(value: str, workdir: str = "/") -> Mount:
    """Parse one expanded ``--mount`` value; ``workdir`` anchors a relative target."""
    pairs: list[tuple[str, str | None, str]] = []  # key, value (None: a bare flag), the field as written
    for field in _fields(value):
        key, eq, val = field.partition("=")
        pairs.append((key.strip().lower(), val if eq else None, field))
    kind = "bind"
    for key, given, _ in pairs:
        if key == "type" and given is not None:
            kind = given.strip().lower()
            if kind not in MOUNT_TYPES:
                raise ValueError(f"unsupported mount type {given!r} (expected one of {', '.join(MOUNT_TYPES)})")
    if kind == "ssh":
        raise ValueError("type=ssh mounts are not supported (lamina has no SSH agent forwarding); "
                         "use a type=secret mount for a key instead")
    got: dict[str, str] = {}
    readonly: bool | None = None
    required = False
    for key, maybe, field in pairs:
        if maybe is None:
            if key in ("readonly", "ro"):
                readonly = True
            elif key in ("readwrite", "rw"):
                readonly = False
            elif key == "required":
                if kind != "secret":
                    raise ValueError(f"unexpected key 'required' for mount type '{kind}'")
                required = True
            else:
                raise ValueError(f"invalid field '{field}' must be a key=value pair")
            continue
        val = maybe
        if key not in KNOWN_KEYS:
            raise ValueError(f"unexpected key '{key}' in '{field}' (expected one of {', '.join(KNOWN_KEYS)})")
        if key in ("readonly", "ro"):
            readonly = _bool(key, val)
        elif key in ("readwrite", "rw"):
            readonly = not _bool(key, val)
        elif key == "required":
            if kind != "secret":
                raise ValueError(f"unexpected key 'required' for mount type '{kind}'")
            required = _bool(key, val)
        elif key != "type":
            canonical = {"src": "source", "dst": "target", "destination": "target"}.get(key, key)
            got[canonical] = val
    if kind not in ("secret", "cache"):
        for key in ("mode", "uid", "gid"):
            if key in got:
                raise ValueError(f"{key} not allowed for {kind!r} type mounts")
    if "size" in got and kind != "tmpfs":
        raise ValueError(f"unexpected key 'size' for mount type '{kind}'")
    if "sharing" in got and kind != "cache":
        raise ValueError(f"invalid cache sharing set for {kind} mount")
    if "env" in got and kind != "secret":
        raise ValueError(f"unexpected key 'env' for mount type '{kind}'")
    mode = _uint("mode", got["mode"], 8) if "mode" in got else None
    uid = _uint("uid", got["uid"], 10) if "uid" in got else None
    gid = _uint("gid", got["gid"], 10) if "gid" in got else None
    raw_target = got.get("target", "")
    source = got.get("source", "")
    from_stage = got.get("from") or None

    if kind == "secret":
        if from_stage is not None:
            raise ValueError("secret mount should not have a from")
        if not source and not raw_target and not got.get("id"):
            raise ValueError("invalid secret mount: one of id, source or target is required")
        if source and got.get("id"):
            raise ValueError("both source and id can't be set on a secret mount")
        secret_id = got.get("id") or source or posixpath.basename(raw_target.rstrip("/"))
        if not secret_id:
            raise ValueError(f"invalid secret mount: no id can be derived from target {raw_target!r}")
        env = got.get("env")
        if env is not None and not _ENV_NAME.match(env):
            raise ValueError(f"invalid environment variable name for a secret: {env!r}")
        target: str | None
        if raw_target:
            target = _target(raw_target, "/")
        elif env is None:
            target = posixpath.join(SECRETS_DIR, posixpath.basename(secret_id))
        else:
            target = None
        return SecretMount(secret_id, target, env, required, 0o400 if mode is None else mode, uid or 0, gid or 0)

    if not raw_target:
        raise ValueError(f"a type={kind} mount needs a target (target=/path)")
    target = _target(raw_target, workdir)
    if kind == "tmpfs":
        return TmpfsMount(target, parse_size(got["size"]) if "size" in got else None)
    clean_source = posixpath.normpath(posixpath.join("/", source)) if source else "/"
    if clean_source.startswith("//"):
        clean_source = "/" + clean_source.lstrip("/")
    if kind == "bind":
        return BindMount(target, clean_source, from_stage, True if readonly is None else readonly)
    sharing = got.get("sharing", "shared").strip().lower()
    if sharing not in SHARING_MODES:
        raise ValueError(f"unsupported sharing value {got['sharing']!r} (expected one of {', '.join(SHARING_MODES)})")
    return CacheMount(target, got.get("id") or raw_target, sharing, False if readonly is None else readonly,
                      from_stage, clean_source, 0o755 if mode is None else mode, uid or 0, gid or 0)


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
