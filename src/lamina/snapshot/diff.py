"""What changed between two scans of a rootfs (pure: no I/O).

A non-directory changed when any of its stat fields differs: type, permission bits, owner, size, mtime, inode,
device, or more links. A new ctime alone is not a change, as in BuildKit's differs (which compare mode, owner,
size and mtime, never ctime): a file opened for writing and left alone, a chmod or chown to the values it had, or
another name of it removed, change the ctime (or make an overlay copy the file up) but not the file. One exception,
also BuildKit's: a file capability (``security.capability``, setcap) is metadata a layer carries, so a ctime-only
change of a file that has one counts (``has_capability``, asked only for those).
A directory changed only when its own metadata did (type, permission bits, owner, mtime) or it is another inode.
Its ctime, size and link count are not compared: adding or removing a child changes them, and the child is what
matters.

What is gone is listed as deletions, the top-most only. A directory removed and made again is treated like one whose
children were removed: what it lost is deleted one by one, never with an opaque marker, because the inode number
that would tell is often reused at once by the filesystem (and an overlay's diff knows it another way): the same
change must give the same layer whichever way the rootfs is kept.
"""

from __future__ import annotations

import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from lamina.snapshot.scan import FileState


@dataclass(frozen=True)
class Changes:
    upserts: tuple[str, ...]  # sorted keys whose current state must go into the layer (new or modified)
    deletions: tuple[str, ...]  # sorted keys removed (only the top-most: a removed dir's children are not listed)

    @property
    def is_empty(self) -> bool:
        return not (self.upserts or self.deletions)


def without_paths(changes: Changes, paths: Sequence[str]) -> Changes:
    """``changes`` minus everything at or below ``paths`` (absolute, as --ignore-path gives them): Kaniko's ignore
    list, for paths whose changes must never reach a layer."""
    keys = tuple(path.strip("/") for path in paths if path.strip("/"))
    if not keys:
        return changes

    def kept(key: str) -> bool:
        return not any(key == ignored or key.startswith(ignored + "/") for ignored in keys)

    return Changes(tuple(k for k in changes.upserts if kept(k)), tuple(k for k in changes.deletions if kept(k)))


def ancestors(key: str) -> list[str]:
    """ "a/b/c" → ["a/b", "a"]."""
    out: list[str] = []
    while "/" in key:
        key = key.rpartition("/")[0]
        out.append(key)
    return out


def _changed(old: FileState, new: FileState) -> bool | None:
    """True/False; None when only the ctime differs (the caller then asks about a file capability)."""
    if stat.S_IFMT(old.mode) != stat.S_IFMT(new.mode) or stat.S_IMODE(old.mode) != stat.S_IMODE(new.mode):
        return True
    if (old.uid, old.gid, old.mtime_ns, old.ino, old.dev) != (new.uid, new.gid, new.mtime_ns, new.ino, new.dev):
        return True
    if new.is_dir:
        return False
    if old.size != new.size or new.nlink > old.nlink:
        return True
    return None if old.ctime_ns != new.ctime_ns else False


def _covered(key: str, before: Mapping[str, FileState], after: Mapping[str, FileState]) -> bool:
    """Does an ancestor's change already remove the deleted `key` from the image (so it needs no whiteout)?"""
    for ancestor in ancestors(key):
        now = after.get(ancestor)
        if now is None:
            if ancestor in before:
                return True  # the ancestor is deleted itself
        elif not now.is_dir:
            return True  # replaced by a non-directory, which hides everything below it
    return False


def _no_capability(_key: str) -> bool:
    return False


def diff_scans(before: Mapping[str, FileState], after: Mapping[str, FileState],
               has_capability: Callable[[str], bool] = _no_capability) -> Changes:
    """The changes that turn `before` into `after`: upserts and top-most deletions. ``has_capability(key)``: does
    the file carry a ``security.capability`` now (asked for files whose ctime alone changed)."""
    upserts = []
    for key, new in after.items():
        old = before.get(key)
        changed = True if old is None else _changed(old, new)
        if changed or (changed is None and has_capability(key)):
            upserts.append(key)
    deletions = [key for key in before if key not in after and not _covered(key, before, after)]
    return Changes(upserts=tuple(sorted(upserts)), deletions=tuple(sorted(deletions)))
