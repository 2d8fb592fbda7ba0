"""What changed between two scans of a rootfs (pure: no I/O).

A non-directory changed when any of its stat fields differs: type, permission bits, owner, size, mtime, ctime,
inode, device or link count; ctime catches writes that keep size and mtime (a program cannot set it back). One
exception: fewer links and a new ctime, nothing else, is another name being removed, not a change of the file. A
directory changed only when its own metadata did (type, permission bits, owner, mtime) or it was replaced by a new
directory (another inode: removed and recreated, which makes it opaque). Its ctime, size and link count are not
compared: adding or removing a child changes them, and the child is what matters.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from lamina.snapshot.scan import FileState


@dataclass(frozen=True)
class Changes:
    upserts: tuple[str, ...]  # sorted keys whose current state must go into the layer (new or modified)
    deletions: tuple[str, ...]  # sorted keys removed (only the top-most: a removed dir's children are not listed)
    opaque: tuple[str, ...]  # sorted dir keys that were replaced by a new directory (removed and recreated)

    @property
    def is_empty(self) -> bool:
        return not (self.upserts or self.deletions or self.opaque)


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


def _covered(key: str, before: Mapping[str, FileState], after: Mapping[str, FileState], opaque: set[str]) -> bool:
    """Does an ancestor's change already remove the deleted `key` from the image (so it needs no whiteout)?"""
    for ancestor in ancestors(key):
        now = after.get(ancestor)
        if now is None:
            if ancestor in before:
                return True  # the ancestor is deleted itself
        elif not now.is_dir or ancestor in opaque:
            return True  # replaced by a non-directory, or an opaque directory hides everything below it
    return False


def diff_scans(before: Mapping[str, FileState], after: Mapping[str, FileState],
               recreated: Iterable[str] = ()) -> Changes:
    """The changes that turn `before` into `after`: upserts, top-most deletions and opaque (recreated) dirs.

    ``recreated``: directories known to have been removed and made again (an overlay's opaque directories), for
    scans whose inode numbers cannot tell."""
    opaque: set[str] = set(recreated)
    upserts: set[str] = set(opaque)
    for key, new in after.items():
        old = before.get(key)
        if old is None:
            upserts.add(key)
        elif _changed(old, new):
            upserts.add(key)
            if old.is_dir and new.is_dir and (old.ino, old.dev) != (new.ino, new.dev):
                opaque.add(key)
    if opaque:
        upserts.update(key for key in after if any(a in opaque for a in ancestors(key)))
    deletions = [key for key in before if key not in after and not _covered(key, before, after, opaque)]
    return Changes(upserts=tuple(sorted(upserts)), deletions=tuple(sorted(deletions)), opaque=tuple(sorted(opaque)))
