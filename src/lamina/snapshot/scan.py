"""Walking a rootfs into ``{key: FileState}``: one lstat per entry, never following a symlink.

Snapshots compare these states instead of file contents: a write changes a file's mtime (and size, mostly), a chmod
or chown its mode or owner (see ``diff.py`` for what counts).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from lamina.errors import RootfsError
from lamina.rootfs.paths import rel_path


@dataclass(frozen=True, slots=True)
class FileState:
    mode: int  # full st_mode (type + permission bits)
    uid: int
    gid: int
    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    dev: int
    nlink: int

    @classmethod
    def from_stat(cls, st: os.stat_result) -> FileState:
        return cls(st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino,
                   st.st_dev, st.st_nlink)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.mode)


CAPABILITY_XATTR = "security.capability"


def has_capability(path: Path | str) -> bool:
    """Does ``path`` carry a file capability (setcap)?"""
    try:
        return CAPABILITY_XATTR in os.listxattr(path, follow_symlinks=False)
    except OSError:
        return False


def scan_tree(root: Path, *, under: str = "", exclude: frozenset[str] = frozenset()) -> dict[str, FileState]:
    """lstat every entry below root/under (os.scandir, iterative, no following of symlinks); keys are rel_path form
    ("etc/passwd"), the root itself excluded; `exclude` holds keys whose whole subtree is skipped
    (e.g. {"proc", "sys", "dev"} contents when mounted). `under` limits the walk to one subtree (keys still relative
    to root).

    An excluded key is left out itself as well as everything below it: give both scans of a diff the same `exclude`.
    With `under`, the entry at `under` itself is part of the result (when it exists and is not excluded); `under` is
    taken literally (a symlink in it is not followed) and a missing `under` gives an empty result."""
    states: dict[str, FileState] = {}
    start = rel_path(under)
    if start:
        if any(start == key or start.startswith(key + "/") for key in exclude):
            return states
        try:
            st = os.lstat(os.path.join(root, start))
        except (FileNotFoundError, NotADirectoryError):
            return states
        except OSError as e:
            raise RootfsError(f"cannot scan {start!r} in {root}: {e.strerror or e}") from e
        states[start] = FileState.from_stat(st)
        if not stat.S_ISDIR(st.st_mode):
            return states
    pending = [start]
    while pending:
        directory = pending.pop()
        prefix = directory + "/" if directory else ""
        try:
            with os.scandir(os.path.join(root, directory)) as it:
                for entry in it:
                    key = prefix + entry.name
                    if key in exclude:
                        continue
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # removed while we walked: what is gone is gone
                    states[key] = FileState.from_stat(st)
                    if stat.S_ISDIR(st.st_mode):
                        pending.append(key)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise RootfsError(f"cannot scan {directory or '/'!r} in {root}: {e.strerror or e}") from e
    return states
