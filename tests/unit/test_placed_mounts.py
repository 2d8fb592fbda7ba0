"""``placed_mounts``: RUN --mount without mount(2), on real directories. For the run each target shows what a mount
would; afterwards the rootfs is exactly as before (names, contents, directory times), the cache directory holds
what the run wrote, and nothing of a bind or secret is left."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lamina.errors import SandboxError
from lamina.sandbox.base import MountSpec
from lamina.sandbox.placed import placed_mounts
from lamina.snapshot.diff import diff_scans
from lamina.snapshot.scan import scan_tree

OLD = 1_600_000_000


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    for directory in ("var/cache/apt", "etc", "root", "opt/real"):
        (root / directory).mkdir(parents=True)
    (root / "var/cache/apt/archives.bin").write_text("image's own\n")
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n")
    (root / "linked").symlink_to("/opt/real")
    for path in sorted(root.rglob("*"), reverse=True):
        os.utime(path, (OLD, OLD), follow_symlinks=False)
    os.utime(root, (OLD, OLD))
    return root


def test_everything_is_as_before_and_the_cache_keeps_what_the_run_wrote(rootfs: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "apt"
    cache.mkdir(parents=True)
    (cache / "old.deb").write_text("cached\n")
    bind_source = tmp_path / "context" / "req.txt"
    bind_source.parent.mkdir()
    bind_source.write_text("six\n")
    secret = tmp_path / "secret"
    secret.write_text("s3cret")
    stash = tmp_path / "stash"
    stash.mkdir()
    before = scan_tree(rootfs)
    mounts = (
        MountSpec("/var/cache/apt", "bind", cache, cache=True),
        MountSpec("/root/.cache/pip/http", "tmpfs"),
        MountSpec("/run/secrets/tok", "bind", secret, readonly=True, directory=False, private=True),
        MountSpec("/etc/req.txt", "bind", bind_source, readonly=True, directory=False),
        MountSpec("/linked/inner", "tmpfs"),
    )
    with placed_mounts(rootfs, mounts, stash=stash, warn=lambda _t: None):
        assert sorted(p.name for p in (rootfs / "var/cache/apt").iterdir()) == ["old.deb"]  # the image's hidden
        (rootfs / "var/cache/apt/new.deb").write_text("downloaded\n")
        assert (rootfs / "run/secrets/tok").read_text() == "s3cret"
        assert (rootfs / "etc/req.txt").read_text() == "six\n"
        (rootfs / "etc/req.txt").write_text("changed by the run\n")  # read-only cannot be enforced: thrown away
        assert oct((rootfs / "root/.cache/pip/http").stat().st_mode & 0o7777) == "0o1777"
        assert (rootfs / "opt/real/inner").is_dir()  # the symlink resolved inside the rootfs
    assert diff_scans(before, scan_tree(rootfs)).is_empty
    assert (rootfs / "var/cache/apt/archives.bin").read_text() == "image's own\n"
    assert sorted(p.name for p in cache.iterdir()) == ["new.deb", "old.deb"]
    assert bind_source.read_text() == "six\n"
    assert not (rootfs / "root/.cache").exists() and not (rootfs / "run").exists()
    assert list(stash.iterdir()) == []


def test_what_the_run_wrote_next_to_a_stub_stays(rootfs: Path, tmp_path: Path) -> None:
    with placed_mounts(rootfs, (MountSpec("/srv/a/b", "tmpfs"),), stash=None, warn=lambda _t: None):
        (rootfs / "srv/a/kept.txt").write_text("made by the run\n")
    assert (rootfs / "srv/a/kept.txt").exists() and not (rootfs / "srv/a/b").exists()


def test_a_failing_run_is_undone_too(rootfs: Path, tmp_path: Path) -> None:
    before = scan_tree(rootfs)
    cache = tmp_path / "c"
    cache.mkdir()
    with pytest.raises(RuntimeError), placed_mounts(rootfs, (MountSpec("/etc", "bind", cache, cache=True),),
                                                    stash=tmp_path, warn=lambda _t: None):
        raise RuntimeError("the command failed")
    assert diff_scans(before, scan_tree(rootfs)).is_empty and cache.is_dir()
    assert (rootfs / "etc/hosts").exists()


def test_a_cache_the_run_removed_starts_again_empty(rootfs: Path, tmp_path: Path) -> None:
    cache = tmp_path / "c"
    cache.mkdir(mode=0o750)
    (cache / "x").write_text("x")
    with placed_mounts(rootfs, (MountSpec("/opt/c", "bind", cache, cache=True),), stash=None, warn=lambda _t: None):
        os.rename(rootfs / "opt/c", tmp_path / "gone")
    assert cache.is_dir() and list(cache.iterdir()) == [] and cache.stat().st_mode & 0o777 == 0o750


def test_a_target_through_a_file_is_refused(rootfs: Path) -> None:
    with pytest.raises(SandboxError, match="not a directory"), \
            placed_mounts(rootfs, (MountSpec("/etc/hosts/x", "tmpfs"),), stash=None, warn=lambda _t: None):
        pass
