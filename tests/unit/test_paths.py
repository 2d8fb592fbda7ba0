from __future__ import annotations

import os
from pathlib import Path

import pytest

from lamina.errors import RootfsError
from lamina.rootfs.paths import rel_path, resolve_in_root


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "usr" / "lib").mkdir(parents=True)
    (r / "etc").mkdir()
    (r / "etc" / "passwd").write_text("root:x:0:0\n")
    return r


@pytest.mark.parametrize(("path", "expected"), [
    ("/", ""),
    ("", ""),
    (".", ""),
    ("/etc/passwd", "etc/passwd"),
    ("etc/passwd", "etc/passwd"),
    ("./etc//passwd/", "etc/passwd"),
    ("/usr/lib/../bin", "usr/bin"),
    ("a/./b/.", "a/b"),
    ("a/..", ""),
])
def test_rel_path(path: str, expected: str) -> None:
    assert rel_path(path) == expected


@pytest.mark.parametrize("path", ["..", "/..", "../etc", "a/../../b", "/usr/../../x"])
def test_rel_path_refuses_climbing_above_root(path: str) -> None:
    with pytest.raises(RootfsError):
        rel_path(path)


def test_plain_paths(root: Path) -> None:
    assert resolve_in_root(root, "/etc/passwd") == root / "etc" / "passwd"
    assert resolve_in_root(root, "etc/passwd") == root / "etc" / "passwd"
    assert resolve_in_root(root, "/") == root
    assert resolve_in_root(root, "") == root


def test_missing_components_are_appended(root: Path) -> None:
    assert resolve_in_root(root, "/usr/share/doc/x") == root / "usr" / "share" / "doc" / "x"
    assert resolve_in_root(root, "/etc/passwd/child") == root / "etc" / "passwd" / "child"


def test_dotdot_stops_at_root(root: Path) -> None:
    assert resolve_in_root(root, "../../../etc/passwd") == root / "etc" / "passwd"
    assert resolve_in_root(root, "/usr/../../..") == root
    assert resolve_in_root(root, "/usr/lib/../../etc") == root / "etc"


def test_absolute_symlink_restarts_at_root(root: Path) -> None:
    os.symlink("/etc", root / "usr" / "lib" / "conf")
    assert resolve_in_root(root, "/usr/lib/conf/passwd") == root / "etc" / "passwd"
    os.symlink("/", root / "evil")
    assert resolve_in_root(root, "/evil/etc/passwd") == root / "etc" / "passwd"
    assert resolve_in_root(root, "/evil") == root


def test_relative_symlink_clamped_at_root(root: Path) -> None:
    os.symlink("../../../../..", root / "usr" / "up")
    assert resolve_in_root(root, "usr/up/etc/passwd") == root / "etc" / "passwd"
    os.symlink("../../../tmp", root / "escape")
    assert resolve_in_root(root, "escape/x") == root / "tmp" / "x"


def test_chain_of_links(root: Path) -> None:
    os.symlink("usr/lib", root / "lib")
    os.symlink("/lib", root / "lib64")
    os.symlink("../lib64", root / "etc" / "l")
    (root / "usr" / "lib" / "libc.so").write_text("")
    assert resolve_in_root(root, "/etc/l/libc.so") == root / "usr" / "lib" / "libc.so"


def test_follow_final(root: Path) -> None:
    os.symlink("/etc/passwd", root / "link")
    assert resolve_in_root(root, "/link") == root / "etc" / "passwd"
    assert resolve_in_root(root, "/link", follow_final=False) == root / "link"
    os.symlink("/etc", root / "etcl")
    # intermediate links are always followed
    assert resolve_in_root(root, "/etcl/passwd", follow_final=False) == root / "etc" / "passwd"


def test_dangling_link_target_appended(root: Path) -> None:
    os.symlink("/nowhere/deep", root / "dangling")
    assert resolve_in_root(root, "/dangling/file") == root / "nowhere" / "deep" / "file"


def test_symlink_loop_raises(root: Path) -> None:
    os.symlink("b", root / "a")
    os.symlink("a", root / "b")
    with pytest.raises(RootfsError):
        resolve_in_root(root, "/a/x")
    os.symlink("self", root / "self")
    with pytest.raises(RootfsError):
        resolve_in_root(root, "/self")
    # not followed, so no loop
    assert resolve_in_root(root, "/self", follow_final=False) == root / "self"


def test_long_but_finite_chain_is_fine(root: Path) -> None:
    for i in range(200):
        os.symlink(f"l{i + 1}", root / f"l{i}")
    (root / "l200").mkdir()
    assert resolve_in_root(root, "/l0/x") == root / "l200" / "x"


@pytest.mark.parametrize("target", ["/", "..", "../..", "/../../..", "../../../../etc", "/etc/../../.."])
def test_never_outside_root(root: Path, target: str) -> None:
    os.symlink(target, root / "evil")
    for path in ("evil", "evil/x", "evil/../../x", "../evil/../../x"):
        resolved = resolve_in_root(root, path)
        assert os.path.commonpath([root, resolved]) == str(root), (target, path, resolved)
