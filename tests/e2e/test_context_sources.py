"""Every context source Kaniko reads, end to end against local servers: ``tar://`` (a file and standard input), a
git repository (``git://`` with ``GIT_PULL_METHOD=http``, a ``.git`` URL, a ref, a commit, ``--git branch=``), an
``http(s)://`` tar.gz, ``--context-sub-path`` inside each, and a ``--dockerfile`` URL. Buckets:
test_bucket_contexts.py."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Lamina
from tests.e2e.helpers import LAMINA_TIMEOUT, unpack
from tests.support.http_files import git, publish_bare, serve_directory


def context_tar(files: dict[str, str], *, gzip: bool = True) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gzip else "w") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def dockerfile(lamina: Lamina, marker: str) -> str:
    return f"FROM {lamina.images.busybox}\nCOPY . /ctx/\nRUN echo {marker} > /marker\n"


def built_files(lamina: Lamina, dest: str, tmp_path: Path) -> dict[str, str]:
    root = unpack(f"docker://{dest}", tmp_path / "unpacked").rootfs
    files = {str(p.relative_to(root / "ctx")): p.read_text() for p in (root / "ctx").rglob("*") if p.is_file()}
    return {"marker": (root / "marker").read_text().strip(), **files}


def test_tar_file_with_a_sub_path(lamina: Lamina, tmp_path: Path) -> None:
    archive = tmp_path / "context.tar.gz"
    archive.write_bytes(context_tar({"app/Dockerfile": dockerfile(lamina, "tar-file"), "app/a.txt": "a\n",
                                     "other/b.txt": "b\n"}))
    dest = lamina.dest("ctx-tar")
    run = lamina.build(tmp_path, "--context", f"tar://{archive}", "--context-sub-path", "app", "--destination",
                       dest).check()
    assert "context: fetching tar://" in run.stdout
    assert built_files(lamina, dest, tmp_path) == {"marker": "tar-file", "Dockerfile": dockerfile(lamina, "tar-file"),
                                                   "a.txt": "a\n"}


def test_tar_on_standard_input(lamina: Lamina, tmp_path: Path) -> None:
    dest = lamina.dest("ctx-stdin")
    data = context_tar({"Dockerfile": dockerfile(lamina, "stdin"), "s.txt": "from stdin\n"})
    proc = subprocess.run([sys.executable, "-m", "lamina.cli", "build", "--context", "tar://stdin",
                           "--insecure-registry", lamina.registry.host, "--destination", dest], input=data,
                          env=lamina.environ(), capture_output=True, timeout=LAMINA_TIMEOUT, check=False)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    assert built_files(lamina, dest, tmp_path)["s.txt"] == "from stdin\n"


@pytest.fixture
def repository(tmp_path: Path, lamina: Lamina) -> Iterator[tuple[str, str, str]]:
    """A repository over dumb HTTP: main (two commits), a feature branch, tag v1 at the first commit. Yields
    (base URL, first commit, second commit)."""
    work = tmp_path / "repo-work"
    (work / "app").mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=work)
    (work / "app" / "Dockerfile").write_text(dockerfile(lamina, "git-first"))
    (work / "app" / "v.txt").write_text("first\n")
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "first", cwd=work)
    first = git("rev-parse", "HEAD", cwd=work).strip()
    git("tag", "v1", cwd=work)
    (work / "app" / "Dockerfile").write_text(dockerfile(lamina, "git-second"))
    (work / "app" / "v.txt").write_text("second\n")
    git("commit", "-q", "-am", "second", cwd=work)
    second = git("rev-parse", "HEAD", cwd=work).strip()
    git("checkout", "-q", "-b", "feature", cwd=work)
    (work / "app" / "v.txt").write_text("feature\n")
    git("commit", "-q", "-am", "feature", cwd=work)
    git("checkout", "-q", "main", cwd=work)
    publish_bare(work, tmp_path / "www")
    with serve_directory(tmp_path / "www") as url:
        yield url, first, second


@pytest.mark.parametrize("form, extra, expected", [
    ("git://{host}/repo.git", [], "second"),  # HEAD of the default branch
    ("git://{host}/repo.git#refs/heads/feature", [], "feature"),
    ("git://{host}/repo.git#refs/heads/main#{first}", [], "first"),  # a ref, then a commit to check out
    ("git://{host}/repo.git#{first}", [], "first"),  # a commit alone
    ("git://{host}/repo.git#refs/tags/v1", [], "first"),
    ("git://{host}/repo.git", ["--git", "branch=feature,single-branch=true"], "feature"),
    ("http://{host}/repo.git#refs/heads/feature", [], "feature"),  # a .git URL is a repository, not a tarball
])
def test_git_contexts(lamina: Lamina, repository: tuple[str, str, str], tmp_path: Path, form: str,
                      extra: list[str], expected: str) -> None:
    url, first, _ = repository
    context = form.format(host=url.removeprefix("http://"), first=first)
    dest = lamina.dest("ctx-git")
    lamina.build(tmp_path, "--context", context, "--context-sub-path", "app", "--destination", dest, *extra,
                 extra_env={"GIT_PULL_METHOD": "http"}).check()
    files = built_files(lamina, dest, tmp_path)
    assert files["v.txt"] == f"{expected}\n"
    assert set(files) == {"marker", "Dockerfile", "v.txt"}  # the sub path of the clone (.git is above it)


def test_git_errors_name_the_repository(lamina: Lamina, repository: tuple[str, str, str], tmp_path: Path) -> None:
    url, _, _ = repository
    run = lamina.build(tmp_path, "--context", f"git://{url.removeprefix('http://')}/missing.git", "--no-push",
                       extra_env={"GIT_PULL_METHOD": "http", "GIT_PASSWORD": "hunter2-secret", "GIT_USERNAME": "u"})
    assert run.returncode != 0 and "missing.git" in run.stderr and "git clone failed" in run.stderr
    assert "hunter2-secret" not in run.stderr + run.stdout


def test_https_tarball_and_dockerfile_url(lamina: Lamina, tmp_path: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    (www / "ctx.tar.gz").write_bytes(context_tar({"Dockerfile": "FROM scratch\n", "h.txt": "over http\n"}))
    (www / "Dockerfile.remote").write_text(dockerfile(lamina, "remote-dockerfile"))
    dest = lamina.dest("ctx-https")
    with serve_directory(www) as url:
        lamina.build(tmp_path, "--context", f"{url}/ctx.tar.gz", "--dockerfile", f"{url}/Dockerfile.remote",
                     "--destination", dest).check()
        missing = lamina.build(tmp_path, "--context", f"{url}/missing.tar.gz", "--no-push")
    files = built_files(lamina, dest, tmp_path)
    assert files["marker"] == "remote-dockerfile" and files["h.txt"] == "over http\n"
    assert missing.returncode != 0 and "HTTP 404" in missing.stderr
