"""Copying a file tree with everything a layer records: ``clone_tree`` (no external ``cp``).

Owners, modes (setuid bits included), times, symlinks, hard links inside the tree, device nodes, fifos and extended
attributes are kept; file data is reflinked where the filesystem can (``FICLONE``), else copied in the kernel. It is
Python on purpose: the inplace sandbox clears ``/``, and with it every program a build could have called.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path

from lamina.errors import RootfsError

FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)
CHUNK = 1 << 30


def _copy_data(source: str, dest: str, mode: int) -> None:
    src = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        dst = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode & 0o777 | 0o200)
        try:
            try:
                fcntl.ioctl(dst, FICLONE, src)
                return
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY, errno.EPERM):
                    raise
            while os.sendfile(dst, src, None, CHUNK) > 0:
                pass
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _copy_xattrs(source: str, dest: str) -> None:
    try:
        names = os.listxattr(source, follow_symlinks=False)
    except OSError:
        return
    for name in names:
        try:
            os.setxattr(dest, name, os.getxattr(source, name, follow_symlinks=False), follow_symlinks=False)
        except OSError:
            pass  # e.g. security.* without the capability: the copy goes on without it


def _finish(dest: str, st: os.stat_result, *, is_link: bool) -> None:
    os.chown(dest, st.st_uid, st.st_gid, follow_symlinks=False)
    if not is_link:
        os.chmod(dest, stat.S_IMODE(st.st_mode))  # after chown, which clears setuid/setgid
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def clone_entry(source: str, dest: str, st: os.stat_result, links: dict[tuple[int, int], str] | None = None) -> None:
    """One entry (not a directory's contents): ``dest`` must not exist."""
    mode = st.st_mode
    if links is not None and not stat.S_ISDIR(mode) and st.st_nlink > 1:
        first = links.get((st.st_dev, st.st_ino))
        if first is not None:
            os.link(first, dest)
            return
        links[(st.st_dev, st.st_ino)] = dest
    if stat.S_ISDIR(mode):
        os.mkdir(dest, 0o700)
    elif stat.S_ISLNK(mode):
        os.symlink(os.readlink(source), dest)
    elif stat.S_ISREG(mode):
        _copy_data(source, dest, mode)
    elif stat.S_ISFIFO(mode):
        os.mkfifo(dest, 0o600)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        os.mknod(dest, stat.S_IFMT(mode) | 0o600, st.st_rdev)
    else:  # sockets are left out, as from a layer
        return
    _copy_xattrs(source, dest)
    if not stat.S_ISDIR(mode):
        _finish(dest, st, is_link=stat.S_ISLNK(mode))


def clone_tree(source: Path, dest: Path, what: str = "") -> None:
    """``dest`` (absent) becomes a copy of ``source`` (a directory, a file or a link)."""
    links: dict[tuple[int, int], str] = {}
    directories: list[tuple[str, os.stat_result]] = []

    def walk(src: str, dst: str) -> None:
        st = os.lstat(src)
        clone_entry(src, dst, st, links)
        if not stat.S_ISDIR(st.st_mode):
            return
        directories.append((dst, st))
        with os.scandir(src) as it:
            names = sorted(entry.name for entry in it)
        for name in names:
            walk(os.path.join(src, name), os.path.join(dst, name))

    try:
        walk(str(source), str(dest))
        for path, st in reversed(directories):  # children first: their creation changed the parents' times
            _finish(path, st, is_link=False)
    except OSError as exc:
        raise RootfsError(f"could not copy {what or source}: {exc.strerror or exc} ({exc.filename})") from None
