"""The skeleton of an image's filesystem: only the entries that a step writing below one path can see.

A COPY changes only what is at and below its destination, and what it reads of the filesystem it writes into is
the directories on the way there (with the symlinks it follows) and, for ``--chown`` names, /etc/passwd and
/etc/group; a WORKDIR, the directories on the way to its path. So a stage whose steps are all such steps need not
be unpacked: its layers are read into a metadata tree (``image_files.FinalTree``, with the OCI semantics of
unpacking), and the entries the step can see are made in an empty directory with the image's modes, owners, times
and xattrs. The step runs there and is snapshotted as usual, and what it changed is what it would have changed in
the whole filesystem (the tests compare the layers, digest for digest, with those of unpacked stages).

Regular files are made with their size and no data (no step reads them: a snapshot compares metadata), but those
given with their content. Pure selection (``select``) is apart from writing (``write_skeleton``).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

from lamina.errors import RootfsError
from lamina.rootfs.tree import MAX_SYMLINK_HOPS, Node, walk


class SkeletonError(RootfsError):
    """An entry the skeleton cannot make here (a device node without CAP_MKNOD, an xattr the kernel refuses): the
    stage is unpacked instead."""


def _components(path: str) -> list[str]:
    return [part for part in path.split("/") if part not in ("", ".")]


def _visit(root: Node, path: str, chosen: dict[str, Node], *, whole: bool) -> None:
    """Choose every entry that resolving ``path`` inside the tree passes (symlinks followed as ``resolve_in_root``
    follows them: an absolute target restarts at the root, ``..`` stops there; the links are chosen too), and with
    ``whole`` everything below the directory it resolves to. A missing component ends it: the step makes it."""
    pending = _components(path)
    pending.reverse()
    resolved: list[str] = []
    trail = [root]
    hops = 0
    while pending:
        part = pending.pop()
        if part == "..":
            if resolved:
                resolved.pop()
                trail.pop()
            continue
        children = trail[-1].children
        if children is None:
            return  # a non-directory on the way (chosen already): the step replaces it or fails
        child = children.get(part)
        if child is None:
            return
        key = "/".join([*resolved, part])
        chosen[key] = child
        if stat.S_ISLNK(child.mode):
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                return  # the step reports the loop when it resolves the path itself
            target = child.target.decode("utf-8", "surrogateescape")
            if target.startswith("/"):
                resolved, trail = [], [root]
            pending.extend(reversed(_components(target)))
            continue
        resolved.append(part)
        trail.append(child)
    if whole and trail[-1].is_dir:
        prefix = "/".join(resolved)
        for below, node in walk(trail[-1]):
            chosen[f"{prefix}/{below}" if prefix else below] = node


def select(root: Node, *, whole: Iterable[str] = (), paths: Iterable[str] = ()) -> dict[str, Node]:
    """The entries of the tree at ``root`` to make, by path ("etc/passwd" form): those on the way to each of
    ``paths`` and ``whole`` (and what they name), and everything below each of ``whole``. Every parent of a chosen
    entry is chosen."""
    chosen: dict[str, Node] = {}
    for path in whole:
        _visit(root, path, chosen, whole=True)
    for path in paths:
        _visit(root, path, chosen, whole=False)
    return chosen


def _device_number(rdev: int) -> int:
    """The tree keeps a device number as the kernel's new_encode_dev (what EROFS stores): back to st_rdev."""
    major = (rdev & 0xFFF00) >> 8
    minor = (rdev & 0xFF) | ((rdev >> 12) & ~0xFF)
    return os.makedev(major, minor)


def write_skeleton(directory: Path, root: Node, chosen: Mapping[str, Node], data: Mapping[str, bytes]) -> int:
    """Make the ``chosen`` entries in the empty ``directory`` (the tree's root): types, modes, owners, xattrs and
    times as the tree has them, hardlinks among them kept; regular files hold ``data[path]`` when given, else only
    their size. Returns how many entries were made. Raises SkeletonError for an entry that cannot be made here."""
    first_names: dict[int, Path] = {}  # id of a regular file's node -> where it was made (its hardlinks link to it)
    directories: list[tuple[Path, Node]] = []
    for key in sorted(chosen, key=lambda k: (k.count("/"), k)):  # parents first
        node = chosen[key]
        path = directory / key
        kind = stat.S_IFMT(node.mode)
        try:
            if kind == stat.S_IFDIR:
                os.mkdir(path, 0o700)
                directories.append((path, node))
                continue
            if kind == stat.S_IFREG:
                if id(node) in first_names:
                    os.link(first_names[id(node)], path)
                    continue
                first_names[id(node)] = path
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                try:
                    content = data.get(key)
                    if content is not None:
                        os.write(fd, content)
                    else:
                        os.ftruncate(fd, node.size)
                finally:
                    os.close(fd)
            elif kind == stat.S_IFLNK:
                os.symlink(node.target, path)
            elif kind in (stat.S_IFCHR, stat.S_IFBLK):
                os.mknod(path, kind | 0o600, _device_number(node.rdev))
            elif kind == stat.S_IFIFO:
                os.mkfifo(path, 0o600)
            else:
                raise SkeletonError(f"cannot make {key!r}: unknown file type {kind:o}")
            _metadata(path, node)
        except OSError as exc:
            raise SkeletonError(f"cannot make {key!r} of the stage's skeleton: {exc.strerror or exc}") from exc
    for path, node in [(directory, root), *directories][::-1]:  # deepest last made first: children set their times
        try:
            _metadata(path, node)
        except OSError as exc:
            raise SkeletonError(f"cannot set the metadata of {path}: {exc.strerror or exc}") from exc
    return len(chosen)


def _metadata(path: Path, node: Node) -> None:
    os.lchown(path, node.uid, node.gid)
    if not stat.S_ISLNK(node.mode):
        os.chmod(path, stat.S_IMODE(node.mode))  # after chown, which clears set-id bits
    for name, value in node.xattrs.items():
        os.setxattr(path, name, value, follow_symlinks=False)
    os.utime(path, ns=(node.mtime_ns, node.mtime_ns), follow_symlinks=False)
