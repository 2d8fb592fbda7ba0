"""Paths inside a root filesystem directory: resolving them as the image would see them, and their scan key form.

``resolve_in_root`` follows symlinks as if the rootfs directory were ``/``, so that no symlink planted by a layer
or a RUN step can lead a write outside the rootfs. ``rel_path`` gives the key form used by snapshot scans.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from lamina.errors import RootfsError

MAX_SYMLINK_HOPS = 255


def _components(path: str) -> list[str]:
    return [part for part in path.split("/") if part not in ("", ".")]


def rel_path(path: str) -> str:
    """Normalise an in-image path to the scan key form: ``"etc/passwd"`` (no leading slash, no ``.``, ``""`` for
    ``/``). ``..`` removes the previous component; one that would climb above ``/`` raises ``RootfsError``."""
    parts: list[str] = []
    for part in _components(path):
        if part == "..":
            if not parts:
                raise RootfsError(f"path {path!r} climbs above the root directory")
            parts.pop()
        else:
            parts.append(part)
    return "/".join(parts)


def resolve_in_root(root: Path, path: str, *, follow_final: bool = True) -> Path:
    """Resolve `path` (absolute or relative, as seen from inside the rootfs) to a host path under `root`, following
    symlinks as if `root` were `/` (absolute targets restart at root, `..` stops at root, at most 255 hops →
    RootfsError on a loop). Never returns a path outside root. Components that do not exist are appended as they are.

    With ``follow_final=False`` a symlink in the last component is returned itself instead of its target."""
    pending = _components(path)
    pending.reverse()  # a stack: the next component is at the end
    resolved: list[str] = []
    hops = 0
    while pending:
        part = pending.pop()
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        if not pending and not follow_final:
            resolved.append(part)
            break
        candidate = os.path.join(root, *resolved, part)
        try:
            mode = os.lstat(candidate).st_mode
        except (FileNotFoundError, NotADirectoryError):
            resolved.append(part)
            continue
        except OSError as e:
            raise RootfsError(f"cannot resolve {path!r} in {root}: {e.strerror or e}") from e
        if not stat.S_ISLNK(mode):
            resolved.append(part)
            continue
        hops += 1
        if hops > MAX_SYMLINK_HOPS:
            raise RootfsError(f"too many levels of symbolic links resolving {path!r} in {root}")
        try:
            target = os.readlink(candidate)
        except OSError as e:
            raise RootfsError(f"cannot read symlink {candidate}: {e.strerror or e}") from e
        if target.startswith("/"):
            resolved = []
        target_parts = _components(target)
        target_parts.reverse()
        pending.extend(target_parts)
    return Path(root, *resolved)


def set_directory_metadata(root: Path, path: Path, inode: int, *, mode: int | None = None,
                           mtime_ns: int | None = None) -> bool:
    """chmod/utime the directory ``path`` under ``root``, but only if ``path`` still reaches, with no symlink on
    the way, the directory with ``inode`` that was recorded when it was written. Directory metadata is applied after
    a layer's or a copy's last entry; by then a later entry may have replaced a parent with a link pointing out of
    the rootfs, and following it would change the host. Returns whether the metadata was applied."""
    rel = os.path.relpath(path, root)
    if rel == ".." or rel.startswith("../"):
        return False
    if rel != "." and resolve_in_root(root, rel, follow_final=False) != Path(root, rel):
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if st.st_ino != inode:
            return False
        if mode is not None and stat.S_IMODE(st.st_mode) != mode:  # no-op changes skipped: in overlayfs any
            os.fchmod(fd, mode)  # metadata change copies a directory of a lower layer up
        if mtime_ns is not None and st.st_mtime_ns != mtime_ns:
            os.utime(fd, ns=(mtime_ns, mtime_ns))
    finally:
        os.close(fd)
    return True
