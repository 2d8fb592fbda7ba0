"""ADD end to end on busybox: local archives extracted, plain files copied, URLs from a loopback HTTP server
downloaded (with --checksum), a Git repository cloned over HTTP; results pulled with skopeo and unpacked by umoci."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from email.utils import formatdate
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.e2e.conftest import Lamina
from tests.e2e.helpers import Unpacked, unpack, write_context

pytestmark = pytest.mark.e2e

MTIME = 1_600_000_000
LAST_MODIFIED = 1_500_000_000
TOOL = b"#!/bin/sh\necho tool ran\n"
SCRIPT = b"#!/bin/sh\necho script ran > /script-ran\n"


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def send_header(self, keyword: str, value: str) -> None:
        if keyword == "Last-Modified":
            value = formatdate(LAST_MODIFIED, usegmt=True)
        super().send_header(keyword, value)


@pytest.fixture(scope="module")
def www(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A directory served on 127.0.0.1 (random port): ``(directory, base URL)``."""
    root = tmp_path_factory.mktemp("www")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def tar_gz(entries: list[tuple[str, bytes | None, int, int, int]]) -> bytes:
    """(name, content or None for a directory, mode, uid, gid) → a .tar.gz."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data, mode, uid, gid in entries:
            info = tarfile.TarInfo(name)
            info.mode, info.uid, info.gid, info.mtime = mode, uid, gid, MTIME
            if data is None:
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue())


BUNDLE = tar_gz([("app", None, 0o750, 1000, 1000), ("app/bin", None, 0o755, 1000, 1000),
                 ("app/bin/hello", b"#!/bin/sh\necho hello\n", 0o755, 1000, 1000),
                 ("app/secret.conf", b"key=1\n", 0o600, 33, 50)])


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def mode(image: Unpacked, rel: str) -> int:
    return stat.S_IMODE(image.lstat(rel).st_mode)


def owner(image: Unpacked, rel: str) -> tuple[int, int]:
    st = image.lstat(rel)
    return st.st_uid, st.st_gid


@pytest.fixture(scope="module")
def added(lamina: Lamina, www: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Unpacked:
    root, url = www
    (root / "tool").write_bytes(TOOL)
    (root / "script.sh").write_bytes(SCRIPT)
    (root / "bundle.tgz").write_bytes(BUNDLE)
    tmp = tmp_path_factory.mktemp("add")
    context = write_context(tmp / "context", f"""
        FROM {lamina.images.busybox}
        ADD bundle.data /opt/
        ADD --chown=www-data:staff bundle.data /owned
        ADD notes.txt /notes/
        ADD --unpack=false bundle.data /raw/
        ADD --checksum={sha256(TOOL)} {url}/tool /usr/local/bin/
        ADD --chmod=755 {url}/script.sh /usr/local/bin/script
        ADD {url}/bundle.tgz /remote/
        RUN /usr/local/bin/script && /opt/app/bin/hello > /hello-ran
    """, {"bundle.data": BUNDLE, "notes.txt": "notes\n"})
    os.chmod(context / "notes.txt", 0o640)
    dest = lamina.dest("add")
    lamina.build(context, "--destination", dest).check()
    return unpack(f"docker://{dest}", tmp / "pulled")


def test_local_tar_gz_is_extracted_with_modes_and_owners(added: Unpacked) -> None:
    assert added.read("opt/app/bin/hello") == "#!/bin/sh\necho hello\n"
    assert mode(added, "opt/app/bin/hello") == 0o755
    assert mode(added, "opt/app") == 0o750
    assert mode(added, "opt/app/secret.conf") == 0o600
    assert owner(added, "opt/app/bin/hello") == (1000, 1000)
    assert owner(added, "opt/app/secret.conf") == (33, 50)
    assert added.lstat("opt/app/bin/hello").st_mtime == MTIME
    assert not added.exists("opt/bundle.data")
    assert added.read("hello-ran") == "hello\n"


def test_chown_overrides_the_archive_owners(added: Unpacked) -> None:
    # BuildKit (solver/llbsolver/file/unpack_root.go, mapArchiveHeaderOwner): --chown replaces the header's owner.
    assert owner(added, "owned/app/bin/hello") == (33, 50)
    assert owner(added, "owned/app/secret.conf") == (33, 50)
    assert mode(added, "owned/app/secret.conf") == 0o600


def test_plain_file_is_copied(added: Unpacked) -> None:
    assert added.read("notes/notes.txt") == "notes\n"
    assert mode(added, "notes/notes.txt") == 0o640
    assert owner(added, "notes/notes.txt") == (0, 0)


def test_unpack_false_copies_the_archive(added: Unpacked) -> None:
    assert added.path("raw/bundle.data").read_bytes() == BUNDLE


def test_url_download_with_checksum(added: Unpacked) -> None:
    assert added.path("usr/local/bin/tool").read_bytes() == TOOL
    assert mode(added, "usr/local/bin/tool") == 0o600
    assert owner(added, "usr/local/bin/tool") == (0, 0)
    assert added.lstat("usr/local/bin/tool").st_mtime == LAST_MODIFIED


def test_url_download_with_chmod_runs(added: Unpacked) -> None:
    assert mode(added, "usr/local/bin/script") == 0o755
    assert added.read("script-ran") == "script ran\n"


def test_remote_archive_is_not_extracted(added: Unpacked) -> None:
    assert added.path("remote/bundle.tgz").read_bytes() == BUNDLE
    assert not added.exists("remote/app")


def test_history_names_the_add_steps(added: Unpacked) -> None:
    created_by = [h.get("created_by", "") for h in added.config["history"]]
    assert sum(1 for c in created_by if c.startswith("ADD ")) == 7


def test_checksum_mismatch_fails_the_build(lamina: Lamina, www: tuple[Path, str], tmp_path: Path) -> None:
    root, url = www
    (root / "tool").write_bytes(TOOL)
    wrong = sha256(b"not the tool")
    context = write_context(tmp_path / "context", f"""
        FROM {lamina.images.busybox}
        ADD --checksum={wrong} {url}/tool /tool
    """)
    run = lamina.build(context, "--destination", lamina.dest("add-mismatch"))
    assert run.returncode != 0
    assert "Dockerfile:2" in run.stderr and "digest mismatch" in run.stderr, run.describe()
    assert wrong in run.stderr and sha256(TOOL) in run.stderr, run.describe()


def test_missing_url_fails_the_build(lamina: Lamina, www: tuple[Path, str], tmp_path: Path) -> None:
    _, url = www
    context = write_context(tmp_path / "context", f"""
        FROM {lamina.images.busybox}
        ADD {url}/no-such-file /x
    """)
    run = lamina.build(context, "--destination", lamina.dest("add-404"))
    assert run.returncode != 0
    assert f"HTTP 404 from {url}/no-such-file" in run.stderr, run.describe()


def test_checksum_on_a_local_file_fails_the_build(lamina: Lamina, tmp_path: Path) -> None:
    context = write_context(tmp_path / "context", f"""
        FROM {lamina.images.busybox}
        ADD --checksum={sha256(b"x")} x.txt /x
    """, {"x.txt": "x"})
    run = lamina.build(context, "--destination", lamina.dest("add-local-checksum"))
    assert run.returncode != 0
    assert "requires an HTTP(S) or Git source" in run.stderr, run.describe()


def test_git_repository_over_http(lamina: Lamina, www: tuple[Path, str], tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.fail("git is not installed (apt-get install git)", pytrace=False)
    root, url = www
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@e"}
    work = tmp_path / "work"
    (work / "docs").mkdir(parents=True)
    (work / "docs/index.md").write_text("# docs\n")
    (work / "top.txt").write_text("top\n")

    def git(*args: str, cwd: Path = work) -> str:
        return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                              text=True).stdout.strip()

    git("init", "-q", "-b", "main")
    git("add", "-A")
    git("commit", "-q", "-m", "docs")
    git("tag", "v1")
    commit = git("rev-parse", "HEAD")
    git("clone", "-q", "--bare", str(work), str(root / "docs.git"), cwd=tmp_path)
    git("update-server-info", cwd=root / "docs.git")
    context = write_context(tmp_path / "context", f"""
        FROM {lamina.images.busybox}
        ADD --checksum={commit} {url}/docs.git#v1:docs /docs
        ADD {url}/docs.git /whole
    """)
    dest = lamina.dest("add-git")
    lamina.build(context, "--destination", dest).check()
    image = unpack(f"docker://{dest}", tmp_path / "pulled")
    assert image.read("docs/index.md") == "# docs\n"
    assert not image.exists("docs/top.txt")
    assert image.read("whole/top.txt") == "top\n"
    assert not image.exists("whole/.git")
