"""Removing many files at once: several directories in parallel.

Creating and removing directory entries is mostly kernel time (in a container's overlayfs, on a busy ext4, tenths of
a millisecond each), and the kernel serialises it per directory (the parent's lock), not per filesystem. So the
files of different directories are removed by a few threads at once, then the directories, deepest first. Symlinks
are never followed, nor mountpoints crossed; nothing outside the given paths is touched.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

WORKERS = min(4, os.cpu_count() or 2)  # threads creating or removing files (unpacking on 2 cores: 2 beat 1 and 4)


def _walk(path: str, device: int, files: dict[str, list[str]], directories: list[str]) -> None:
    """Collect ``path``'s files by directory, and its directories parents first (``path`` itself first); a
    directory on another filesystem than ``device`` (a mountpoint) is left out, with all it holds."""
    pending = [path]
    while pending:
        directory = pending.pop()
        directories.append(directory)
        try:
            with os.scandir(directory) as it:
                for entry in it:
                    if not entry.is_dir(follow_symlinks=False):
                        files.setdefault(directory, []).append(entry.path)
                    elif entry.stat(follow_symlinks=False).st_dev == device:
                        pending.append(entry.path)
        except OSError:
            continue  # removing it reports why


def remove_trees(paths: Iterable[str], *, workers: int = WORKERS) -> list[tuple[str, OSError]]:
    """Remove each path: a file, or a directory with everything below it on its filesystem (never crossing into a
    filesystem mounted below it, which stays with the directories holding it). Returns what could not be removed,
    with why (the rest is gone)."""
    files: dict[str, list[str]] = {}
    directories: list[str] = []
    failed: list[tuple[str, OSError]] = []
    for path in paths:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            failed.append((path, exc))
            continue
        if stat.S_ISDIR(st.st_mode):
            _walk(path, st.st_dev, files, directories)
        else:
            files.setdefault(os.path.dirname(path), []).append(path)

    def unlink_all(names: Sequence[str]) -> None:
        for name in names:
            try:
                os.unlink(name)
            except FileNotFoundError:
                pass
            except OSError as exc:
                failed.append((name, exc))

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="remove") as pool:
        list(pool.map(unlink_all, files.values()))
    remove_empty_directories(directories, workers=workers)
    failed += [(d, OSError(errno.ENOTEMPTY, os.strerror(errno.ENOTEMPTY), d)) for d in directories
               if os.path.lexists(d) and not any(d == f or f.startswith(d + "/") for f, _ in failed)]
    return failed


def remove_empty_directories(directories: Iterable[str], *, workers: int = WORKERS) -> None:
    """rmdir each directory that is empty by then, deepest first (those of one depth at once); the others stay."""
    by_depth: dict[int, list[str]] = {}
    for directory in directories:
        by_depth.setdefault(directory.count("/"), []).append(directory)

    def rmdir(name: str) -> None:
        try:
            os.rmdir(name)
        except OSError:
            pass  # not empty (it holds what stays), or gone

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="remove") as pool:
        for depth in sorted(by_depth, reverse=True):
            list(pool.map(rmdir, by_depth[depth]))
