"""What changed between two scans of a rootfs (pure: no I/O).

A non-directory changed when any of its stat fields differs: type, permission bits, owner, size, mtime, ctime,
inode, device or link count; ctime catches writes that keep size and mtime (a program cannot set it back). One
exception: fewer links and a new ctime, nothing else, is another name being removed, not a change of the file.
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
from collections.abc import Mapping
from dataclasses import dataclass

from lamina.snapshot.scan import FileState


@dataclass(frozen=True)
class Changes:
    upserts: tuple[str, ...]  # sorted keys whose current state must go into the layer (new or modified)
    deletions: tuple[str, ...]  # sorted keys removed (only the top-most: a removed dir's children are not listed)

    @property
    def is_empty(self) -> bool:
        return not (self.upserts or self.deletions)


def ancestors(key: str) -> list[str]:
    """ "a/b/c" → ["a/b", "a"]."""
    out: list[str] = []
    while "/" in key:
        key = key.rpartition("/")[0]
        out.append(key)
    return out


def _changed(old: FileState, new: FileState) -> bool:
    if stat.S_IFMT(old.mode) != stat.S_IFMT(new.mode) or stat.S_IMODE(old.mode) != stat.S_IMODE(new.mode):
        return True
    if (old.uid, old.gid, old.mtime_ns, old.ino, old.dev) != (new.uid, new.gid, new.mtime_ns, new.ino, new.dev):
        return True
    if new.is_dir:
        return False
    if old.size != new.size:
        return True
    if new.nlink < old.nlink:
        # another name of this file was removed (that changes the ctime too): the file itself is as it was, and an
        # overlay's upper, which the overlay root filesystem diffs, does not have it either
        return False
    return (old.ctime_ns, old.nlink) != (new.ctime_ns, new.nlink)


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


def diff_scans(before: Mapping[str, FileState], after: Mapping[str, FileState]) -> Changes:
    """The changes that turn `before` into `after`: upserts and top-most deletions."""
    upserts = [key for key, new in after.items() if (old := before.get(key)) is None or _changed(old, new)]
    deletions = [key for key in before if key not in after and not _covered(key, before, after)]
    return Changes(upserts=tuple(sorted(upserts)), deletions=tuple(sorted(deletions)))
