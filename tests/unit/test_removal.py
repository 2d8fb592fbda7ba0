"""Removing many files at once (rootfs/removal.py): everything named goes, nothing else, links never followed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from lamina.rootfs.removal import remove_empty_directories, remove_trees


def tree(root: Path) -> None:
    for d in range(6):
        for f in range(20):
            path = root / "gone" / f"d{d}" / "sub" / f"f{f}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("x")
    (root / "outside").mkdir()
    (root / "outside" / "kept").write_text("kept")
    (root / "gone" / "link").symlink_to(root / "outside")
    (root / "file").write_text("x")
    (root / "stays").write_text("x")


def test_trees_and_files_go_and_links_are_not_followed(tmp_path: Path) -> None:
    tree(tmp_path)
    failed = remove_trees([str(tmp_path / "gone"), str(tmp_path / "file"), str(tmp_path / "missing")])
    assert failed == []
    assert sorted(os.listdir(tmp_path)) == ["outside", "stays"]
    assert (tmp_path / "outside" / "kept").read_text() == "kept"


def test_what_cannot_go_is_reported(tmp_path: Path) -> None:
    """An immutable file (chattr +i: even root cannot unlink it) stays with its directories; the rest goes."""
    tree(tmp_path)
    stuck = tmp_path / "gone" / "d0" / "sub" / "f0"
    if subprocess.run(["chattr", "+i", str(stuck)], capture_output=True, check=False).returncode != 0:
        pytest.skip("chattr +i is not possible here")
    try:
        failed = remove_trees([str(tmp_path / "gone")])
    finally:
        subprocess.run(["chattr", "-i", str(stuck)], check=True)
    assert [path for path, _ in failed] == [str(stuck)]
    assert isinstance(failed[0][1], PermissionError)
    assert sorted(os.listdir(tmp_path / "gone")) == ["d0"] and os.listdir(stuck.parent) == ["f0"]


def test_only_empty_directories_are_removed(tmp_path: Path) -> None:
    for name in ("a/b/c", "a/keep", "d/e"):
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / "a" / "keep" / "file").write_text("x")
    remove_empty_directories(str(tmp_path / name) for name in ("a", "a/b", "a/b/c", "a/keep", "d", "d/e"))
    assert sorted(os.listdir(tmp_path)) == ["a"]
    assert sorted(os.listdir(tmp_path / "a")) == ["keep"]


def test_a_filesystem_mounted_below_is_never_entered(tmp_path: Path) -> None:
    """A mountpoint inside a removed tree keeps what it holds; the directories holding it stay, and are reported."""
    tree(tmp_path)
    mountpoint = tmp_path / "gone" / "d1" / "mnt"
    mountpoint.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mountpoint)], capture_output=True,
                                           check=False).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        (mountpoint / "inside").write_text("kept")
        failed = remove_trees([str(tmp_path / "gone")])
        assert (mountpoint / "inside").read_text() == "kept"
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)
    assert sorted(path for path, _ in failed) == [str(tmp_path / "gone"), str(tmp_path / "gone" / "d1")]
    assert sorted(os.listdir(tmp_path / "gone" / "d1")) == ["mnt"]
