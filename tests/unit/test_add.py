"""ADD: archive detection and safe extraction, downloads (against a local http.server), Git sources, add_files."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import os
import shutil
import stat
import subprocess
import tarfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.utils import formatdate
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import zstandard

from lamina.build import remote
from lamina.build.context import BuildContext
from lamina.build.handlers.add import (
    ArchiveError,
    add_files,
    compression_of,
    extract_archive,
    is_archive,
    is_http_source,
    parse_git_source,
)
from lamina.build.state import StageState
from lamina.dockerfile.instructions import Copy, load_dockerfile
from lamina.errors import DockerfileError
from lamina.oci.model import Platform
from tests.support.layers import E, tar_bytes

IS_ROOT = os.geteuid() == 0
MTIME = 1_600_000_000
LAST_MODIFIED = 1_500_000_000


# ---------------------------------------------------------------------------------------------------------------
# archives


def _zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


def _none(data: bytes) -> bytes:
    return data


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "none": _none,
    "gzip": gzip.compress,
    "bzip2": bz2.compress,
    "xz": lzma.compress,
    "zstd": _zstd,
}

SAMPLE = [
    E("app", tarfile.DIRTYPE, mode=0o750, uid=1000, gid=1001),
    E("app/run.sh", data=b"#!/bin/sh\necho hi\n", mode=0o755, uid=1000, gid=1001),
    E("app/config", data=b"key=value\n", mode=0o600, uid=33, gid=33),
    E("app/link", tarfile.SYMTYPE, link="run.sh", mode=0o777),
    E("app/hard", tarfile.LNKTYPE, link="app/config", mode=0o600, uid=33, gid=33),  # as tar writes links
    E("top.txt", data=b"top\n"),
]


def write_archive(path: Path, entries: list[E], compression: str = "none") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(COMPRESSORS[compression](tar_bytes(entries)))
    return path


@pytest.fixture()
def dest(tmp_path: Path) -> Path:
    d = tmp_path / "dest"
    d.mkdir()
    return d


@pytest.fixture()
def canary(tmp_path: Path) -> Path:
    c = tmp_path / "canary"
    c.mkdir()
    (c / "keep").write_text("untouched")
    return c


def listing(root: Path) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, ds, fs in os.walk(root) for n in ds + fs)


@pytest.mark.parametrize("compression", sorted(COMPRESSORS))
def test_archives_are_recognised_by_content_whatever_their_name(tmp_path: Path, dest: Path,
                                                                  compression: str) -> None:
    archive = write_archive(tmp_path / "payload.bin", SAMPLE, compression)
    assert compression_of(archive.read_bytes()[:6]) == compression
    assert is_archive(archive)
    extract_archive(archive, dest)
    assert (dest / "app/run.sh").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert (dest / "top.txt").read_text() == "top\n"


@pytest.mark.parametrize("content", [b"", b"plain text\n", gzip.compress(b"not a tar\n"), tar_bytes([]),
                                     bz2.compress(b"x" * 2000)])
def test_non_archives_are_not_extracted(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "file.tar.gz"  # the name does not matter either way
    path.write_bytes(content)
    assert not is_archive(path)


def test_a_directory_or_symlink_is_not_an_archive(tmp_path: Path) -> None:
    archive = write_archive(tmp_path / "a.tar", SAMPLE)
    (tmp_path / "link.tar").symlink_to(archive)
    assert not is_archive(tmp_path)
    assert not is_archive(tmp_path / "link.tar")


def test_extraction_keeps_modes_mtimes_links_and_owners(tmp_path: Path, dest: Path) -> None:
    extract_archive(write_archive(tmp_path / "a.tar", SAMPLE), dest)
    run = dest / "app/run.sh"
    assert stat.S_IMODE(run.stat().st_mode) == 0o755
    assert run.stat().st_mtime == MTIME
    assert stat.S_IMODE((dest / "app").stat().st_mode) == 0o750
    assert (dest / "app").stat().st_mtime == MTIME
    assert os.readlink(dest / "app/link") == "run.sh"
    assert (dest / "app/hard").stat().st_ino == (dest / "app/config").stat().st_ino
    if IS_ROOT:
        assert (run.stat().st_uid, run.stat().st_gid) == (1000, 1001)
        assert ((dest / "app/config").stat().st_uid, (dest / "app/config").stat().st_gid) == (33, 33)


@pytest.mark.skipif(not IS_ROOT, reason="chown needs root")
def test_chown_overrides_the_archive_owners(tmp_path: Path, dest: Path) -> None:
    extract_archive(write_archive(tmp_path / "a.tar", SAMPLE), dest, owner=(7, 8))
    for rel in ("app", "app/run.sh", "app/config", "top.txt"):
        st = (dest / rel).lstat()
        assert (st.st_uid, st.st_gid) == (7, 8), rel


def test_existing_files_are_replaced_and_directories_merged(tmp_path: Path, dest: Path) -> None:
    (dest / "app").mkdir()
    (dest / "app/old").write_text("old")
    (dest / "app/run.sh").mkdir()  # a directory where the archive has a file
    (dest / "top.txt").write_text("previous")
    extract_archive(write_archive(tmp_path / "a.tar", SAMPLE), dest)
    assert (dest / "app/old").read_text() == "old"
    assert (dest / "app/run.sh").is_file()
    assert (dest / "top.txt").read_text() == "top\n"


def test_whiteout_names_are_ordinary_files(tmp_path: Path, dest: Path) -> None:
    (dest / "victim").write_text("stays")
    extract_archive(write_archive(tmp_path / "a.tar", [E(".wh.victim", data=b"x"), E(".wh..wh..opq")]), dest)
    assert (dest / "victim").read_text() == "stays"
    assert (dest / ".wh.victim").read_bytes() == b"x"
    assert (dest / ".wh..wh..opq").exists()


def test_missing_parents_are_created(tmp_path: Path, dest: Path) -> None:
    extract_archive(write_archive(tmp_path / "a.tar", [E("a/b/c.txt", data=b"c")]), dest)
    assert (dest / "a/b/c.txt").read_bytes() == b"c"
    assert stat.S_IMODE((dest / "a").stat().st_mode) == 0o755


@pytest.mark.parametrize("name", ["../escape", "a/../../escape", "../canary/keep"])
def test_dotdot_names_are_refused(tmp_path: Path, dest: Path, canary: Path, name: str) -> None:
    archive = write_archive(tmp_path / "a.tar", [E(name, data=b"evil")])
    with pytest.raises(ArchiveError, match="outside the extraction directory"):
        extract_archive(archive, dest)
    assert not (tmp_path / "escape").exists()
    assert (canary / "keep").read_text() == "untouched"
    assert listing(canary) == ["keep"]


def test_absolute_names_land_inside_the_destination(tmp_path: Path, dest: Path, canary: Path) -> None:
    archive = write_archive(tmp_path / "a.tar", [E(f"{canary}/keep", data=b"evil"), E("/abs.txt", data=b"a")])
    extract_archive(archive, dest)
    assert (canary / "keep").read_text() == "untouched"
    assert (dest / str(canary).lstrip("/") / "keep").read_bytes() == b"evil"
    assert (dest / "abs.txt").read_bytes() == b"a"


@pytest.mark.parametrize("target", ["{canary}", "../canary", "../../../../../../../../{canary}"])
def test_writes_through_an_archive_symlink_stay_inside(tmp_path: Path, dest: Path, canary: Path,
                                                       target: str) -> None:
    link = target.format(canary=canary)
    archive = write_archive(tmp_path / "a.tar", [E("lnk", tarfile.SYMTYPE, link=link, mode=0o777),
                                                 E("lnk/keep", data=b"evil"), E("lnk/new", data=b"evil")])
    extract_archive(archive, dest)
    assert (canary / "keep").read_text() == "untouched"
    assert listing(canary) == ["keep"]
    assert os.path.islink(dest / "lnk")  # the link itself is kept as written
    written = [p for p in listing(dest) if p.endswith("new")]
    assert written, listing(dest)


def test_writes_through_an_existing_symlink_stay_inside(tmp_path: Path, dest: Path, canary: Path) -> None:
    (dest / "etc").symlink_to(canary)  # planted by an earlier layer, pointing at a host path
    extract_archive(write_archive(tmp_path / "a.tar", [E("etc/keep", data=b"evil")]), dest)
    assert (canary / "keep").read_text() == "untouched"
    assert listing(canary) == ["keep"]


def test_a_symlink_entry_replacing_a_file_does_not_follow_it(tmp_path: Path, dest: Path, canary: Path) -> None:
    archive = write_archive(tmp_path / "a.tar", [E("x", tarfile.SYMTYPE, link=str(canary / "keep"), mode=0o777),
                                                 E("x", data=b"evil")])
    extract_archive(archive, dest)
    assert (canary / "keep").read_text() == "untouched"
    assert (dest / "x").read_bytes() == b"evil"


def test_hardlinks_outside_are_refused(tmp_path: Path, dest: Path, canary: Path) -> None:
    archive = write_archive(tmp_path / "a.tar", [E("h", tarfile.LNKTYPE, link="../canary/keep")])
    with pytest.raises(ArchiveError, match="outside"):
        extract_archive(archive, dest)
    archive = write_archive(tmp_path / "b.tar", [E("lnk", tarfile.SYMTYPE, link=str(canary), mode=0o777),
                                                 E("h", tarfile.LNKTYPE, link="lnk/keep")])
    with pytest.raises(ArchiveError, match="does not exist"):
        extract_archive(archive, dest)  # resolved inside the destination, where there is no such file
    assert (canary / "keep").stat().st_nlink == 1


def test_corrupt_archive_names_the_problem(tmp_path: Path, dest: Path) -> None:
    data = gzip.compress(tar_bytes(SAMPLE))[:-40]
    (tmp_path / "bad.tgz").write_bytes(data)
    with pytest.raises(ArchiveError):
        extract_archive(tmp_path / "bad.tgz", dest)


# ---------------------------------------------------------------------------------------------------------------
# downloads


class _Handler(SimpleHTTPRequestHandler):
    """Serves the directory; /missing is a 404; files get Last-Modified unless their name starts with 'nolm'."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def send_header(self, keyword: str, value: str) -> None:
        if keyword == "Last-Modified":
            if self.path.rsplit("/", 1)[-1].startswith("nolm"):
                return
            value = formatdate(LAST_MODIFIED, usegmt=True)
        super().send_header(keyword, value)

    def do_GET(self) -> None:
        if self.path.startswith("/redirect/"):
            self.send_response(302)
            self.send_header("Location", self.path.removeprefix("/redirect"))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()


@dataclass
class Server:
    root: Path
    url: str


@pytest.fixture()
def http_server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "www"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield Server(root, f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_download_streams_to_a_0600_file_with_last_modified(http_server: Server, tmp_path: Path) -> None:
    (http_server.root / "tool.bin").write_bytes(b"binary" * 1000)
    got = remote.download(f"{http_server.url}/tool.bin", tmp_path / "dl", checksum=sha256(b"binary" * 1000))
    assert got.path == tmp_path / "dl" / "tool.bin"
    assert got.path.read_bytes() == b"binary" * 1000
    assert stat.S_IMODE(got.path.stat().st_mode) == 0o600
    assert got.path.stat().st_mtime == LAST_MODIFIED
    assert got.digest == sha256(b"binary" * 1000)


def test_download_without_last_modified_gets_the_epoch(http_server: Server, tmp_path: Path) -> None:
    (http_server.root / "nolm.txt").write_text("x")
    got = remote.download(f"{http_server.url}/nolm.txt", tmp_path / "dl")
    assert got.path.stat().st_mtime == 0


def test_download_follows_redirects(http_server: Server, tmp_path: Path) -> None:
    (http_server.root / "real.txt").write_text("real")
    got = remote.download(f"{http_server.url}/redirect/real.txt", tmp_path / "dl")
    assert got.path.name == "real.txt"  # named after the URL asked for, which here has the same last component
    assert got.path.read_text() == "real"


def test_download_checksum_mismatch_names_both_digests(http_server: Server, tmp_path: Path) -> None:
    (http_server.root / "f.txt").write_text("content")
    wrong = sha256(b"something else")
    with pytest.raises(remote.ChecksumMismatch) as info:
        remote.download(f"{http_server.url}/f.txt", tmp_path / "dl", checksum=wrong)
    assert wrong in str(info.value)
    assert sha256(b"content") in str(info.value)
    assert not (tmp_path / "dl" / "f.txt").exists()


def test_download_404(http_server: Server, tmp_path: Path) -> None:
    with pytest.raises(remote.DownloadError, match=r"HTTP 404 from http://127\.0\.0\.1:\d+/missing"):
        remote.download(f"{http_server.url}/missing", tmp_path / "dl")


def test_download_connection_refused(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(remote.DownloadError, match="cannot fetch"):
        remote.download(f"http://127.0.0.1:{port}/x", tmp_path / "dl")


@pytest.mark.parametrize("url,name", [("https://example.com/a/b/tool.tar.gz?x=1#f", "tool.tar.gz"),
                                      ("https://example.com/", "__unnamed__"),
                                      ("https://example.com", "__unnamed__")])
def test_url_filename(url: str, name: str) -> None:
    assert remote.url_filename(url) == name


def test_parse_checksum() -> None:
    assert remote.parse_checksum("SHA256:" + "A" * 64) == "sha256:" + "a" * 64
    assert remote.parse_checksum("sha512:" + "0" * 128).startswith("sha512:")
    for bad in ("abc", "sha256:abc", "md5:" + "0" * 32, "sha256:" + "g" * 64):
        with pytest.raises(ValueError, match="invalid checksum"):
            remote.parse_checksum(bad)


def test_redact() -> None:
    assert remote.redact("https://u:secret@h/x") == "https://u:xxxxx@h/x"
    assert remote.redact("https://h/x") == "https://h/x"


# ---------------------------------------------------------------------------------------------------------------
# source kinds


@pytest.mark.parametrize("src,remote_url,ref,subdir", [
    ("https://github.com/moby/buildkit.git", "https://github.com/moby/buildkit.git", None, ""),
    ("https://github.com/moby/buildkit.git#v0.14.1:docs", "https://github.com/moby/buildkit.git", "v0.14.1", "docs"),
    ("git@github.com:moby/buildkit.git#main", "git@github.com:moby/buildkit.git", "main", ""),
    ("git://example.com/r#abc", "git://example.com/r", "abc", ""),
    ("ssh://git@example.com/r.git", "ssh://git@example.com/r.git", None, ""),
    ("https://example.com/r.git?tag=v1&subdir=d", "https://example.com/r.git", "refs/tags/v1", "d"),
])
def test_git_sources(src: str, remote_url: str, ref: str | None, subdir: str) -> None:
    git = parse_git_source(src)
    assert git is not None
    assert (git.remote, git.ref, git.subdir) == (remote_url, ref, subdir)
    assert not is_http_source(src)


@pytest.mark.parametrize("src", ["https://example.com/file.tar.gz", "http://example.com/repo", "HTTPS://x.org/a"])
def test_http_sources(src: str) -> None:
    assert parse_git_source(src) is None
    assert is_http_source(src)


@pytest.mark.parametrize("src", ["file.txt", "./dir", "file:///tmp/repo.git", "ftp://x/y", "c:thing"])
def test_local_sources(src: str) -> None:
    assert parse_git_source(src) is None
    assert not is_http_source(src)


# ---------------------------------------------------------------------------------------------------------------
# add_files


@dataclass
class Setup:
    state: StageState
    context: BuildContext
    scratch: Path

    @property
    def rootfs(self) -> Path:
        return self.state.rootfs


@pytest.fixture()
def setup(tmp_path: Path) -> Setup:
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\napp:x:1234:2345::/home/app:/bin/sh\n")
    (rootfs / "etc/group").write_text("root:x:0:\napp:x:2345:\n")
    context = tmp_path / "context"
    context.mkdir()
    stage = load_dockerfile("FROM scratch\n").stages[0]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    return Setup(StageState(stage, rootfs, Platform()), BuildContext(context, ()), scratch)


def add_inst(line: str) -> Copy:
    inst = load_dockerfile(f"FROM scratch\n{line}\n").stages[0].instructions[0]
    assert isinstance(inst, Copy)
    return inst


def run_add(s: Setup, line: str) -> None:
    add_files(s.state, add_inst(line), s.context, "\\", s.scratch)


def test_add_extracts_a_local_archive_into_the_destination(setup: Setup) -> None:
    write_archive(setup.context.root / "bundle.tgz", SAMPLE, "gzip")
    run_add(setup, "ADD bundle.tgz /opt")
    assert (setup.rootfs / "opt/app/run.sh").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert not (setup.rootfs / "opt/bundle.tgz").exists()


@pytest.mark.skipif(not IS_ROOT, reason="chown needs root")
def test_add_chown_applies_to_extracted_entries_but_chmod_does_not(setup: Setup) -> None:
    write_archive(setup.context.root / "bundle.tar.xz", SAMPLE, "xz")
    run_add(setup, "ADD --chown=app --chmod=700 bundle.tar.xz /opt/")
    st = (setup.rootfs / "opt/app/config").stat()
    assert (st.st_uid, st.st_gid) == (1234, 2345)
    assert stat.S_IMODE(st.st_mode) == 0o600


def test_add_unpack_false_copies_the_archive(setup: Setup) -> None:
    write_archive(setup.context.root / "bundle.tar", SAMPLE)
    run_add(setup, "ADD --unpack=false bundle.tar /opt/")
    assert (setup.rootfs / "opt/bundle.tar").read_bytes() == tar_bytes(SAMPLE)


def test_add_plain_file_and_directory_behave_like_copy(setup: Setup) -> None:
    (setup.context.root / "notes.txt").write_text("notes")
    (setup.context.root / "dir/sub").mkdir(parents=True)
    (setup.context.root / "dir/sub/f").write_text("f")
    run_add(setup, "ADD notes.txt /n.txt")
    run_add(setup, "ADD dir /d/")
    assert (setup.rootfs / "n.txt").read_text() == "notes"
    assert (setup.rootfs / "d/sub/f").read_text() == "f"


def test_add_archive_inside_a_directory_is_not_extracted(setup: Setup) -> None:
    write_archive(setup.context.root / "dir/inner.tar", SAMPLE)
    run_add(setup, "ADD dir /d/")
    assert (setup.rootfs / "d/inner.tar").is_file()


def test_add_missing_local_source(setup: Setup) -> None:
    with pytest.raises(DockerfileError, match="nope: not found in the build context"):
        run_add(setup, "ADD nope /x")


def test_add_checksum_on_a_local_source_is_an_error(setup: Setup) -> None:
    (setup.context.root / "f").write_text("f")
    with pytest.raises(DockerfileError, match="requires an HTTP\\(S\\) or Git source"):
        run_add(setup, f"ADD --checksum={sha256(b'f')} f /f")


def test_add_checksum_with_several_sources_is_an_error(setup: Setup, http_server: Server) -> None:
    with pytest.raises(DockerfileError, match="multiple sources"):
        run_add(setup, f"ADD --checksum={sha256(b'f')} {http_server.url}/a {http_server.url}/b /d/")


def test_add_url_into_a_directory(setup: Setup, http_server: Server) -> None:
    content = b"#!/bin/sh\n"
    (http_server.root / "tool").write_bytes(content)
    run_add(setup, f"ADD --checksum={sha256(content)} {http_server.url}/tool /usr/local/bin/")
    path = setup.rootfs / "usr/local/bin/tool"
    assert path.read_bytes() == b"#!/bin/sh\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.stat().st_mtime == LAST_MODIFIED


def test_add_url_to_a_file_name_with_chmod(setup: Setup, http_server: Server) -> None:
    (http_server.root / "tool").write_bytes(b"x")
    run_add(setup, f"ADD --chmod=755 {http_server.url}/tool /bin-tool")
    assert stat.S_IMODE((setup.rootfs / "bin-tool").stat().st_mode) == 0o755


def test_add_url_archive_is_not_extracted_unless_asked(setup: Setup, http_server: Server) -> None:
    write_archive(http_server.root / "b.tgz", SAMPLE, "gzip")
    run_add(setup, f"ADD {http_server.url}/b.tgz /x/")
    assert (setup.rootfs / "x/b.tgz").is_file()
    run_add(setup, f"ADD --unpack=true {http_server.url}/b.tgz /y/")
    assert (setup.rootfs / "y/app/run.sh").is_file()


def test_add_url_checksum_mismatch(setup: Setup, http_server: Server) -> None:
    (http_server.root / "f").write_text("real")
    wrong = sha256(b"other")
    with pytest.raises(DockerfileError) as info:
        run_add(setup, f"ADD --checksum={wrong} {http_server.url}/f /f")
    message = str(info.value)
    assert message.startswith("Dockerfile:2:1: ADD: digest mismatch")
    assert wrong in message and sha256(b"real") in message


def test_add_url_404(setup: Setup, http_server: Server) -> None:
    with pytest.raises(DockerfileError, match=r"ADD: HTTP 404 from http://127\.0\.0\.1:\d+/missing"):
        run_add(setup, f"ADD {http_server.url}/missing /x")


def test_add_bad_checksum_format(setup: Setup, http_server: Server) -> None:
    with pytest.raises(DockerfileError, match="invalid checksum digest format"):
        run_add(setup, f"ADD --checksum=sha256:abc {http_server.url}/f /f")


# ---------------------------------------------------------------------------------------------------------------
# Git, from a bare repository served over "dumb" HTTP by http.server


def git(*args: str, cwd: Path) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture()
def git_repo(http_server: Server, tmp_path: Path) -> tuple[str, str]:
    """``(url of repo.git, commit of tag v1)``; main has one more commit than v1."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    work = tmp_path / "work"
    work.mkdir()
    git("init", "-q", "-b", "main", cwd=work)
    (work / "docs").mkdir()
    (work / "docs/readme.md").write_text("v1 docs\n")
    (work / "run.sh").write_text("#!/bin/sh\n")
    (work / "run.sh").chmod(0o755)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "one", cwd=work)
    git("tag", "-a", "v1", "-m", "v1", cwd=work)
    v1 = git("rev-parse", "HEAD", cwd=work)
    (work / "docs/readme.md").write_text("main docs\n")
    git("commit", "-q", "-am", "two", cwd=work)
    bare = http_server.root / "repo.git"
    git("clone", "-q", "--bare", str(work), str(bare), cwd=tmp_path)
    git("update-server-info", cwd=bare)
    return f"{http_server.url}/repo.git", v1


def test_add_git_default_branch(setup: Setup, git_repo: tuple[str, str]) -> None:
    url, _ = git_repo
    run_add(setup, f"ADD {url} /src")
    assert (setup.rootfs / "src/docs/readme.md").read_text() == "main docs\n"
    assert stat.S_IMODE((setup.rootfs / "src/run.sh").stat().st_mode) == 0o755
    assert not (setup.rootfs / "src/.git").exists()


def test_add_git_tag_and_subdir(setup: Setup, git_repo: tuple[str, str]) -> None:
    url, v1 = git_repo
    run_add(setup, f"ADD --checksum={v1[:12]} {url}#v1:docs /docs")
    assert (setup.rootfs / "docs/readme.md").read_text() == "v1 docs\n"
    assert not (setup.rootfs / "docs/run.sh").exists()


def test_add_git_keep_git_dir(setup: Setup, git_repo: tuple[str, str]) -> None:
    url, _ = git_repo
    run_add(setup, f"ADD --keep-git-dir=true {url}#main /src")
    assert (setup.rootfs / "src/.git").is_dir()


def test_add_git_checksum_mismatch(setup: Setup, git_repo: tuple[str, str]) -> None:
    url, _ = git_repo
    with pytest.raises(DockerfileError, match="expected checksum to match 0000000"):
        run_add(setup, f"ADD --checksum=0000000 {url}#v1 /src")


def test_add_git_unknown_ref(setup: Setup, git_repo: tuple[str, str]) -> None:
    url, _ = git_repo
    with pytest.raises(DockerfileError, match="cannot add"):
        run_add(setup, f"ADD {url}#no-such-branch /src")


def test_add_git_without_git_installed(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(DockerfileError, match="git is not installed"):
        run_add(setup, "ADD https://example.com/r.git /src")


def test_add_exclude_filters_inside_directories(setup: Setup) -> None:
    (setup.context.root / "dir").mkdir()
    (setup.context.root / "dir/keep.txt").write_text("k")
    (setup.context.root / "dir/skip.log").write_text("s")
    (setup.context.root / "top.log").write_text("t")
    run_add(setup, "ADD --exclude=*.log dir /d/")
    assert sorted(os.listdir(setup.rootfs / "d")) == ["keep.txt"]
    # patterns apply inside what a source names, relative to it (fsutil's copy checks them below its root only,
    # BuildKit's testExcludedFilesOnCopy): a source named outright is copied
    run_add(setup, "ADD --exclude=*.log top.log /t/")
    assert os.listdir(setup.rootfs / "t") == ["top.log"]


def test_add_into_a_separate_directory_for_link(setup: Setup, tmp_path: Path) -> None:
    write_archive(setup.context.root / "b.tar", SAMPLE)
    into = tmp_path / "link-layer"
    into.mkdir()
    add_files(setup.state, add_inst("ADD --link b.tar /opt/"), setup.context, "\\", setup.scratch, into=into)
    assert (into / "opt/app/run.sh").is_file()
    assert not (setup.rootfs / "opt").exists()


def test_git_refs_that_look_like_options_are_refused() -> None:
    with pytest.raises(ValueError, match="invalid Git ref"):
        parse_git_source("https://example.com/r.git#--upload-pack=touch /tmp/x")
    assert parse_git_source("-oProxyCommand=x@host:path") is None
