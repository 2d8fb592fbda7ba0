from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import stat
import tarfile
from pathlib import Path

import pytest
import zstandard

from lamina.errors import OptionsError
from lamina.oci.model import OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_LAYER_ZSTD
from lamina.rootfs.unpack import unpack_layer
from lamina.snapshot.diff import Changes, diff_scans
from lamina.snapshot.scan import scan_tree
from lamina.snapshot.tar import LayerBlob, write_layer

IS_ROOT = os.geteuid() == 0
OLD = 1_500_000_000
NEW = 1_700_000_000


def _set_all_mtimes(root: Path, when: int) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (when, when), follow_symlinks=False)


@pytest.fixture()
def base(tmp_path: Path) -> Path:
    r = tmp_path / "base"
    (r / "etc" / "conf.d").mkdir(parents=True)
    (r / "usr" / "lib" / "deep").mkdir(parents=True)
    (r / "var" / "cache" / "apt").mkdir(parents=True)
    (r / "etc" / "passwd").write_text("root:x:0:0\n")
    (r / "etc" / "conf.d" / "a.conf").write_text("a=1\n")
    (r / "usr" / "lib" / "deep" / "x.so").write_text("x")
    (r / "usr" / "lib" / "y.so").write_text("y")
    (r / "var" / "cache" / "apt" / "pkgcache.bin").write_bytes(os.urandom(3000))
    (r / "var" / "cache" / "apt" / "sub").mkdir()
    (r / "var" / "cache" / "apt" / "sub" / "z").write_text("z")
    os.symlink("usr/lib", r / "lib")
    _set_all_mtimes(r, OLD)
    os.utime(r, (OLD, OLD))
    return r


def copy_tree(src: Path, dest: Path) -> None:
    shutil.copytree(src, dest, symlinks=True)
    for dirpath, dirnames, filenames in os.walk(src):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            q = os.path.join(dest, os.path.relpath(p, src))
            os.utime(q, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def modify(root: Path) -> None:
    """Every kind of change a RUN step makes."""
    (root / "etc" / "passwd").write_text("root:x:0:0\nuser:x:1000:1000\n")
    (root / "etc" / "conf.d" / "a.conf").unlink()
    shutil.rmtree(root / "usr" / "lib" / "deep")
    (root / "opt" / "app" / "bin").mkdir(parents=True)
    (root / "opt" / "app" / "bin" / "tool").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "opt" / "app" / "bin" / "tool", 0o4755)
    os.link(root / "opt" / "app" / "bin" / "tool", root / "opt" / "app" / "bin" / "tool-alias")
    os.symlink("/opt/app/bin/tool", root / "usr" / "lib" / "tool")
    (root / "opt" / "app" / "data.bin").write_bytes(os.urandom(200_000))
    if IS_ROOT:
        os.chown(root / "opt" / "app" / "data.bin", 1234, 1234)
        os.lchown(root / "usr" / "lib" / "tool", 1234, 1234)
    # a directory removed and recreated (made before the old one goes, so it has another inode)
    os.rename(root / "var" / "cache" / "apt", root / "var" / "cache" / "apt-old")
    (root / "var" / "cache" / "apt").mkdir()
    shutil.rmtree(root / "var" / "cache" / "apt-old")
    (root / "var" / "cache" / "apt" / "new").write_text("n")


def snapshot(base: Path, tmp_path: Path) -> tuple[Path, Changes]:
    """A copy of `base` changed by `modify`, and the changes."""
    work = tmp_path / "work"
    copy_tree(base, work)
    before = scan_tree(work)
    modify(work)
    changes = diff_scans(before, scan_tree(work))
    return work, changes


def uncompressed(blob: LayerBlob) -> bytes:
    data = blob.path.read_bytes()
    if blob.media_type == OCI_LAYER_GZIP:
        return gzip.decompress(data)
    if blob.media_type == OCI_LAYER_ZSTD:
        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True).read()
    return data


def members(blob: LayerBlob) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(uncompressed(blob)), mode="r:") as tf:
        return tf.getmembers()


def summary(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything an image cares about, per path (whole-second mtimes; hardlinks as groups)."""
    out: dict[str, tuple[object, ...]] = {}
    inodes: dict[int, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            key = os.path.relpath(p, root)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                content: object = hashlib.sha256(Path(p).read_bytes()).hexdigest()
                if st.st_nlink > 1:
                    content = (content, inodes.setdefault(st.st_ino, key))
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(p)
            else:
                content = None
            out[key] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                        st.st_mtime_ns // 1_000_000_000, content)
    return out


def test_changes_cover_every_kind(base: Path, tmp_path: Path) -> None:
    _, changes = snapshot(base, tmp_path)
    # what the recreated directory lost, one by one
    assert changes.deletions == ("etc/conf.d/a.conf", "usr/lib/deep", "var/cache/apt/pkgcache.bin",
                                 "var/cache/apt/sub")
    assert "var/cache/apt/new" in changes.upserts
    assert "opt/app/bin/tool-alias" in changes.upserts


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_deterministic_and_digests(base: Path, tmp_path: Path, compression: str) -> None:
    work, changes = snapshot(base, tmp_path)
    first = write_layer(work, changes, tmp_path / "out1", compression=compression)
    second = write_layer(work, changes, tmp_path / "out2", compression=compression)
    assert first.digest == second.digest
    assert first.diff_id == second.diff_id
    assert first.path.read_bytes() == second.path.read_bytes()
    data = first.path.read_bytes()
    assert first.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert first.size == len(data)
    assert first.path == tmp_path / "out1" / first.digest.removeprefix("sha256:")
    tar = uncompressed(first)
    assert first.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert len(tar) % tarfile.RECORDSIZE == 0
    expected_type = {"gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD, "none": OCI_LAYER_TAR}[compression]
    assert first.media_type == expected_type
    if compression == "none":
        assert first.digest == first.diff_id
    assert [p.name for p in (tmp_path / "out1").iterdir()] == [first.path.name]  # no temporary left behind


def test_gzip_header_is_reproducible(base: Path, tmp_path: Path) -> None:
    work, changes = snapshot(base, tmp_path)
    blob = write_layer(work, changes, tmp_path / "out")
    header = blob.path.read_bytes()[:10]
    assert header[:3] == b"\x1f\x8b\x08"
    assert header[3] & 0x08 == 0  # no file name
    assert header[4:8] == b"\0\0\0\0"  # mtime 0


def test_entries(base: Path, tmp_path: Path) -> None:
    work, changes = snapshot(base, tmp_path)
    blob = write_layer(work, changes, tmp_path / "out")
    entries = members(blob)
    names = [m.name for m in entries]
    assert names == [
        "etc", "etc/conf.d", "etc/conf.d/.wh.a.conf", "etc/passwd",
        "opt", "opt/app", "opt/app/bin", "opt/app/bin/tool", "opt/app/bin/tool-alias", "opt/app/data.bin",
        "usr", "usr/lib", "usr/lib/.wh.deep", "usr/lib/tool",
        "var", "var/cache", "var/cache/apt", "var/cache/apt/.wh.pkgcache.bin", "var/cache/apt/.wh.sub",
        "var/cache/apt/new",
    ]
    assert names == sorted(names, key=lambda n: n.encode())
    by_name = {m.name: m for m in entries}
    for m in entries:
        assert m.uname == "" and m.gname == "", m.name
    # parents come with their real metadata
    assert by_name["var"].isdir() and by_name["var"].mtime == OLD
    assert by_name["etc"].mode == stat.S_IMODE(os.lstat(work / "etc").st_mode)
    assert by_name["etc/passwd"].size == len("root:x:0:0\nuser:x:1000:1000\n")
    for whiteout in ("etc/conf.d/.wh.a.conf", "usr/lib/.wh.deep", "var/cache/apt/.wh.sub"):
        assert by_name[whiteout].isreg() and by_name[whiteout].size == 0
    tool, alias = by_name["opt/app/bin/tool"], by_name["opt/app/bin/tool-alias"]
    assert tool.isreg() and tool.mode == 0o4755
    assert alias.islnk() and alias.linkname == "opt/app/bin/tool"
    assert by_name["usr/lib/tool"].issym() and by_name["usr/lib/tool"].linkname == "/opt/app/bin/tool"
    if IS_ROOT:
        assert (by_name["opt/app/data.bin"].uid, by_name["opt/app/data.bin"].gid) == (1234, 1234)
        assert by_name["usr/lib/tool"].uid == 1234


def test_source_date_epoch_clamps(base: Path, tmp_path: Path) -> None:
    work, changes = snapshot(base, tmp_path)
    _set_all_mtimes(work / "opt", NEW)
    epoch = (OLD + NEW) // 2
    blob = write_layer(work, changes, tmp_path / "out", source_date_epoch=epoch)
    mtimes = {m.name: m.mtime for m in members(blob)}
    assert mtimes["opt/app/data.bin"] == epoch
    assert mtimes["var"] == OLD  # older than the epoch: kept
    assert all(mtime <= epoch for mtime in mtimes.values())


def test_xattrs_become_pax_records(base: Path, tmp_path: Path) -> None:
    work, changes = snapshot(base, tmp_path)
    try:
        os.setxattr(work / "opt" / "app" / "data.bin", "user.lamina", b"\x01\xffbinary")
    except OSError:
        pytest.skip("this filesystem has no user xattrs")
    blob = write_layer(work, changes, tmp_path / "out")
    by_name = {m.name: m for m in members(blob)}
    value = by_name["opt/app/data.bin"].pax_headers["SCHILY.xattr.user.lamina"]
    assert value.encode("utf-8", "surrogateescape") == b"\x01\xffbinary"
    target = tmp_path / "unpacked"
    unpack_layer(target, blob.path)
    assert os.getxattr(target / "opt" / "app" / "data.bin", "user.lamina") == b"\x01\xffbinary"


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_unpacked_layer_reproduces_the_tree(base: Path, tmp_path: Path, compression: str) -> None:
    work, changes = snapshot(base, tmp_path)
    blob = write_layer(work, changes, tmp_path / "out", compression=compression)
    replay = tmp_path / "replay"
    copy_tree(base, replay)
    unpack_layer(replay, blob.path)
    assert summary(replay) == summary(work)


def test_empty_changes(base: Path, tmp_path: Path) -> None:
    blob = write_layer(base, Changes((), ()), tmp_path / "out")
    assert members(blob) == []
    assert len(uncompressed(blob)) == tarfile.RECORDSIZE


def test_bad_options(base: Path, tmp_path: Path) -> None:
    with pytest.raises(OptionsError):
        write_layer(base, Changes(("etc",), ()), tmp_path / "out", compression="bzip2")
    with pytest.raises(OptionsError):
        write_layer(base, Changes(("etc",), ()), tmp_path / "out", level=12)
    assert list((tmp_path / "out").iterdir()) == []
