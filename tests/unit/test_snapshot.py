from __future__ import annotations

import os
import shutil
import struct
import time
from pathlib import Path

import pytest

from lamina.snapshot.diff import Changes, diff_scans
from lamina.snapshot.scan import FileState, has_capability, scan_tree

IS_ROOT = os.geteuid() == 0
OLD = 1_500_000_000


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    r = tmp_path / "rootfs"
    (r / "etc" / "conf.d").mkdir(parents=True)
    (r / "usr" / "lib" / "deep").mkdir(parents=True)
    (r / "etc" / "passwd").write_text("root:x:0:0\n")
    (r / "etc" / "conf.d" / "a.conf").write_text("a=1\n")
    (r / "usr" / "lib" / "deep" / "x.so").write_text("x")
    (r / "usr" / "lib" / "y.so").write_text("y")
    os.symlink("usr/lib", r / "lib")
    for dirpath, dirnames, filenames in os.walk(r):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (OLD, OLD), follow_symlinks=False)
    return r


def settle() -> None:
    """ctime has the kernel's timestamp granularity (a jiffy on some filesystems): step past it."""
    time.sleep(0.02)


def rescan(root: Path, before: dict[str, FileState]) -> Changes:
    settle()
    return diff_scans(before, scan_tree(root))


def test_scan_keys_and_states(root: Path) -> None:
    states = scan_tree(root)
    assert sorted(states) == ["etc", "etc/conf.d", "etc/conf.d/a.conf", "etc/passwd", "lib", "usr", "usr/lib",
                              "usr/lib/deep", "usr/lib/deep/x.so", "usr/lib/y.so"]
    assert states["lib"].is_symlink and not states["lib"].is_dir
    assert states["etc"].is_dir
    assert states["etc/passwd"].is_file
    assert states["etc/passwd"].size == 11
    assert states["etc/passwd"].mtime_ns == OLD * 1_000_000_000
    st = os.lstat(root / "etc" / "passwd")
    assert states["etc/passwd"] == FileState.from_stat(st)


def test_scan_under_and_exclude(root: Path) -> None:
    assert sorted(scan_tree(root, under="/usr/lib")) == ["usr/lib", "usr/lib/deep", "usr/lib/deep/x.so",
                                                         "usr/lib/y.so"]
    assert sorted(scan_tree(root, under="etc/passwd")) == ["etc/passwd"]
    assert scan_tree(root, under="missing/dir") == {}
    assert sorted(scan_tree(root, under="lib")) == ["lib"]  # a symlink is not followed
    excluded = scan_tree(root, exclude=frozenset({"usr/lib", "etc/passwd"}))
    assert sorted(excluded) == ["etc", "etc/conf.d", "etc/conf.d/a.conf", "lib", "usr"]
    assert scan_tree(root, under="usr/lib/deep", exclude=frozenset({"usr/lib"})) == {}


def test_nothing_changed(root: Path) -> None:
    before = scan_tree(root)
    changes = rescan(root, before)
    assert changes.is_empty
    assert changes == Changes((), ())
    for key in ("etc/passwd", "usr/lib"):  # reading and listing change nothing
        path = root / key
        if path.is_dir():
            list(path.iterdir())
        else:
            path.read_bytes()
    assert rescan(root, before).is_empty


def test_ctime_alone_is_not_a_change_as_in_buildkit(root: Path) -> None:
    """BuildKit's differs compare mode, owner, size and mtime, never ctime: a chmod or chown to the same values,
    a file opened for writing and left alone, a name of it removed, are no change. (A content change keeping the
    size and setting the mtime back is missed too, as BuildKit misses it.)"""
    before = scan_tree(root)
    settle()
    path = root / "etc" / "passwd"
    os.chmod(path, path.stat().st_mode & 0o7777)
    os.chown(path, path.stat().st_uid, path.stat().st_gid)
    with open(path, "r+b"):
        pass
    after = scan_tree(root)
    assert after["etc/passwd"].ctime_ns != before["etc/passwd"].ctime_ns
    assert diff_scans(before, after).is_empty


@pytest.mark.skipif(not IS_ROOT, reason="setting a file capability needs root")
def test_a_file_capability_set_is_a_change(root: Path) -> None:
    """setcap changes only an xattr (and the ctime): a layer must carry it, as BuildKit compares
    security.capability."""
    before = scan_tree(root)
    settle()
    path = root / "usr" / "lib" / "y.so"
    os.setxattr(path, "security.capability", struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0))
    after = scan_tree(root)
    assert diff_scans(before, after).is_empty  # without the question, a ctime alone
    changes = diff_scans(before, after, lambda key: has_capability(root / key))
    assert changes.upserts == ("usr/lib/y.so",)


def test_chmod(root: Path) -> None:
    before = scan_tree(root)
    os.chmod(root / "usr" / "lib" / "y.so", 0o4755)
    os.chmod(root / "etc" / "conf.d", 0o700)
    assert rescan(root, before).upserts == ("etc/conf.d", "usr/lib/y.so")


@pytest.mark.skipif(not IS_ROOT, reason="chown needs root")
def test_chown(root: Path) -> None:
    before = scan_tree(root)
    os.lchown(root / "lib", 1234, 1234)
    os.chown(root / "etc" / "passwd", 1234, 0)
    assert rescan(root, before).upserts == ("etc/passwd", "lib")


def test_delete_file(root: Path) -> None:
    before = scan_tree(root)
    (root / "etc" / "passwd").unlink()
    os.utime(root / "etc", (OLD, OLD))  # the parent's mtime set back: the deletion is still seen
    changes = rescan(root, before)
    assert changes.deletions == ("etc/passwd",)
    assert changes.upserts == ()


def test_delete_dir_is_one_deletion(root: Path) -> None:
    before = scan_tree(root)
    shutil.rmtree(root / "usr" / "lib")
    changes = rescan(root, before)
    assert changes.deletions == ("usr/lib",)
    assert changes.upserts == ("usr",)  # its mtime changed


def test_add_files(root: Path) -> None:
    before = scan_tree(root)
    (root / "opt" / "app").mkdir(parents=True)
    (root / "opt" / "app" / "run").write_text("#!/bin/sh\n")
    (root / "etc" / "conf.d" / "b.conf").write_text("b")
    os.symlink("/opt/app/run", root / "usr" / "lib" / "run")
    changes = rescan(root, before)
    assert changes.upserts == ("etc/conf.d", "etc/conf.d/b.conf", "opt", "opt/app", "opt/app/run", "usr/lib",
                               "usr/lib/run")
    assert changes.deletions == ()


def test_directory_ctime_alone_is_not_a_change(root: Path) -> None:
    before = scan_tree(root)
    settle()
    (root / "etc" / "tmpfile").write_text("x")
    (root / "etc" / "tmpfile").unlink()
    os.utime(root / "etc", (OLD, OLD))
    after = scan_tree(root)
    assert after["etc"].ctime_ns != before["etc"].ctime_ns
    assert diff_scans(before, after).is_empty


def test_replaced_file_and_hardlink(root: Path) -> None:
    before = scan_tree(root)
    settle()
    tmp = root / "etc" / "passwd.new"
    tmp.write_text("root:x:0:0\n")
    os.utime(tmp, (OLD, OLD))
    os.replace(tmp, root / "etc" / "passwd")  # same content, size and mtime; another inode
    os.link(root / "usr" / "lib" / "y.so", root / "usr" / "lib" / "y2.so")
    changes = diff_scans(before, scan_tree(root))
    assert "etc/passwd" in changes.upserts
    assert "usr/lib/y.so" in changes.upserts  # its link count changed
    assert "usr/lib/y2.so" in changes.upserts


def test_recreated_dir_lists_what_it_lost(root: Path) -> None:
    """Removed and made again with another inode: no opaque marker, the lost children are whited out one by one
    (the same layer as when the filesystem reuses the inode, and as an overlay rootfs gives)."""
    before = scan_tree(root)
    os.rename(root / "etc", root / "old-etc")
    (root / "etc").mkdir()  # made while the old one still exists: another inode for sure
    shutil.rmtree(root / "old-etc")
    (root / "etc" / "hostname").write_text("box")
    changes = rescan(root, before)
    assert changes.upserts == ("etc", "etc/hostname")
    assert changes.deletions == ("etc/conf.d", "etc/passwd")


def test_recreated_dir_with_reused_inode(root: Path) -> None:
    before = scan_tree(root)
    shutil.rmtree(root / "etc")
    (root / "etc").mkdir()
    (root / "etc" / "hostname").write_text("box")
    changes = rescan(root, before)
    assert changes.upserts == ("etc", "etc/hostname")
    assert changes.deletions == ("etc/conf.d", "etc/passwd")


def test_dir_replaced_by_file(root: Path) -> None:
    before = scan_tree(root)
    shutil.rmtree(root / "usr" / "lib")
    (root / "usr" / "lib").write_text("now a file")
    changes = rescan(root, before)
    assert changes.upserts == ("usr", "usr/lib")
    assert changes.deletions == ()


def test_removing_another_name_of_a_file_is_not_a_change_of_it(root: Path) -> None:
    """rm of one hard link: the other name loses a link and gets a new ctime, nothing else: it is not in the layer
    (as an overlay's upper would not have it), only the removal is."""
    os.link(root / "usr" / "lib" / "y.so", root / "usr" / "lib" / "y2.so")
    before = scan_tree(root)
    settle()
    os.unlink(root / "usr" / "lib" / "y2.so")
    changes = rescan(root, before)
    assert changes.deletions == ("usr/lib/y2.so",)
    assert "usr/lib/y.so" not in changes.upserts


def test_adding_a_name_to_a_file_is_a_change_of_it(root: Path) -> None:
    before = scan_tree(root)
    settle()
    os.link(root / "usr" / "lib" / "y.so", root / "usr" / "lib" / "y2.so")
    changes = rescan(root, before)
    assert {"usr/lib/y.so", "usr/lib/y2.so"} <= set(changes.upserts)
