"""Build contexts that are not a local directory, as Kaniko reads them, made a local directory before the build.

* ``tar://PATH`` (a tar, gzip or zstd archive) and ``tar://stdin`` (a tar.gz on standard input);
* ``git://HOST/REPO.git[#REF[#COMMIT]]`` cloned over HTTPS (``GIT_PULL_METHOD=http`` for plain HTTP), and
  ``https://HOST/REPO.git[#REF[#COMMIT]]`` (a URL ending in ``.git``); ``--git branch=...,single-branch=...,
  recurse-submodules=...``; credentials from ``GIT_USERNAME``/``GIT_PASSWORD`` or ``GIT_TOKEN`` (never on a command
  line);
* ``https://...`` (and ``http://``) anything else: a tar.gz downloaded and unpacked;
* ``gs://BUCKET/OBJECT``, ``s3://BUCKET/KEY`` and Azure blob URLs (``https://ACCOUNT.blob.core.windows.net/...``)
  through their vendors' Python clients, optional extras (``lamina[gcs]``, ``lamina[s3]``, ``lamina[azure]``);
  refused with what to install when missing. Kaniko's variables: ``S3_ENDPOINT``, ``S3_FORCE_PATH_STYLE``,
  ``AZURE_STORAGE_ACCESS_KEY``.

Then ``--context-sub-path`` picks a directory inside, and a relative ``--dockerfile`` is found in it; a
``--dockerfile`` given as an ``http(s)://`` URL is downloaded. :func:`parse_context` is pure; :func:`fetch_context`
does the I/O into a directory the caller removes.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

import requests

from lamina.errors import ContextError, OptionsError, RootfsError
from lamina.options import BuildOptions
from lamina.rootfs.unpack import unpack_layer

SCHEMES = ("tar", "git", "https", "http", "gs", "s3")
# Azure blob storage in each of Azure's clouds (as Kaniko's ValidAzureBlobStorageHost): an account name, then the host
AZURE_BLOB_HOST = re.compile(r"^https://[a-z0-9]+\.blob\.core\.(windows\.net|chinacloudapi\.cn|cloudapi\.de|"
                             r"usgovcloudapi\.net)/", re.IGNORECASE)
HASH = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
TIMEOUT = 60
CHUNK = 1 << 20


@dataclass(frozen=True)
class ContextSource:
    kind: str  # "tar", "stdin", "git", "https", "gs", "s3", "azure"
    location: str  # the path, URL or bucket object
    ref: str | None = None  # git: the ref after the first '#'
    commit: str | None = None  # git: the commit after the second '#'


@dataclass(frozen=True)
class GitOptions:
    branch: str | None = None
    single_branch: bool = False
    recurse_submodules: bool = False


def is_remote(text: str) -> bool:
    """Is ``text`` a context lamina must fetch (a scheme other than ``dir://``)?"""
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.lower() in SCHEMES


def parse_context(text: str) -> ContextSource:
    """``--context`` with a scheme → what to fetch. Raises :class:`OptionsError` for an unknown scheme."""
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in SCHEMES:
        raise OptionsError(f"--context {text}: unknown context scheme {scheme}:// (lamina reads a directory, dir://, "
                           "tar://, git://, https://, gs:// and s3://)")
    if scheme == "tar":
        return ContextSource("stdin", "-") if rest == "stdin" else ContextSource("tar", rest)
    if scheme == "git" or (scheme in ("https", "http") and rest.split("#", 1)[0].rstrip("/").endswith(".git")):
        repository, _, fragment = (rest if scheme == "git" else text).partition("#")
        ref, _, commit = fragment.partition("#")
        return ContextSource("git", repository, ref or None, commit or None)
    if scheme in ("https", "http"):
        return ContextSource("azure" if AZURE_BLOB_HOST.match(text) else "https", text)
    return ContextSource(scheme, text)


def parse_git_options(text: str | None) -> GitOptions:
    """``--git branch=NAME,single-branch=true,recurse-submodules=true`` (Kaniko's keys)."""
    if not text:
        return GitOptions()
    values: dict[str, str] = {}
    for item in text.split(","):
        key, eq, value = item.partition("=")
        if not eq or key.strip() not in ("branch", "single-branch", "recurse-submodules"):
            raise OptionsError(f"--git {text}: expected branch=NAME,single-branch=true|false,"
                               "recurse-submodules=true|false")
        values[key.strip()] = value.strip()

    def flag(name: str) -> bool:
        value = values.get(name, "false").lower()
        if value not in ("true", "false"):
            raise OptionsError(f"--git {text}: {name} is true or false, not {value!r}")
        return value == "true"

    return GitOptions(values.get("branch") or None, flag("single-branch"), flag("recurse-submodules"))


def fetch_context(options: BuildOptions, into: Path, environ: Mapping[str, str],
                  stdin: BinaryIO | None = None) -> BuildOptions:
    """The build's context (and a URL Dockerfile) made local under ``into``: ``options`` with ``context`` and
    ``dockerfile`` pointing there. Unchanged options when both are local already."""
    context = options.context
    dockerfile = options.dockerfile
    if options.context_source is not None:
        source = parse_context(options.context_source)
        context = into / "context"
        context.mkdir(parents=True)
        if source.kind == "git":
            clone(source, context, parse_git_options(options.git_options), environ)
        else:
            with ArchiveStream(source, into, environ, stdin) as archive:
                try:
                    unpack_layer(context, archive, description=f"the context {options.context_source}")
                except RootfsError as exc:  # names the context and what is wrong with the archive
                    raise ContextError(str(exc)) from exc
        if options.context_sub_path:
            context = context / options.context_sub_path
            if not context.is_dir():
                raise ContextError(f"--context-sub-path {options.context_sub_path}: no such directory in the "
                                   f"context {options.context_source}")
        if not dockerfile.is_absolute() and ((context / dockerfile).exists() or not dockerfile.exists()):
            dockerfile = context / dockerfile  # a relative --dockerfile: in the fetched context first
    if options.dockerfile_url is not None:
        dockerfile = into / "Dockerfile"
        download(options.dockerfile_url, dockerfile, "the Dockerfile")
    return replace(options, context=context, dockerfile=dockerfile, context_source=None, dockerfile_url=None)


def download(url: str, dest: Path, what: str) -> None:
    try:
        with requests.get(url, stream=True, timeout=TIMEOUT) as resp:
            if resp.status_code != 200:
                raise ContextError(f"{what} {url}: HTTP {resp.status_code} from the server")
            with dest.open("wb") as out:
                for chunk in resp.iter_content(CHUNK):
                    out.write(chunk)
    except requests.RequestException as exc:
        raise ContextError(f"{what} {url}: cannot download it: {exc}") from None


class ArchiveStream:
    """The context's archive as a readable stream (a context manager): stdin, a local file, or a download into
    ``scratch``."""

    def __init__(self, source: ContextSource, scratch: Path, environ: Mapping[str, str],
                 stdin: BinaryIO | None) -> None:
        self.source, self.scratch, self.environ, self.stdin = source, scratch, environ, stdin
        self.file: BinaryIO | None = None

    def __enter__(self) -> BinaryIO:
        source = self.source
        if source.kind == "stdin":
            stream = self.stdin if self.stdin is not None else sys.stdin.buffer
            if stream.isatty():
                raise ContextError("--context tar://stdin: standard input is a terminal; pipe a tar.gz into lamina "
                                   "(docker run -i, not -t)")
            return stream
        if source.kind == "tar":
            path = Path(source.location)
            if not path.is_file():
                raise ContextError(f"--context tar://{source.location}: no such file")
            self.file = path.open("rb")
            return self.file
        archive = self.scratch / "context.tar"
        if source.kind == "https":
            download(source.location, archive, "the context")
        else:
            download_from_bucket(source, archive, self.environ)
        self.file = archive.open("rb")
        return self.file

    def __exit__(self, *exc: object) -> None:
        if self.file is not None:
            self.file.close()


def download_from_bucket(source: ContextSource, dest: Path, environ: Mapping[str, str]) -> None:
    """gs://, s3:// and Azure blob contexts, through the vendor's client (an optional extra)."""
    extra, module = {"gs": ("gcs", "google.cloud.storage"), "s3": ("s3", "boto3"),
                     "azure": ("azure", "azure.storage.blob")}[source.kind]
    try:
        client_module = __import__(module, fromlist=["_"])
    except ImportError:
        raise OptionsError(f"--context {source.location}: {source.kind} contexts need the {module} package: "
                           f"pip install 'lamina[{extra}]' (it is not in lamina's image)") from None
    bucket, _, key = source.location.split("://", 1)[1].partition("/")
    try:
        if source.kind == "gs":  # Application Default Credentials; STORAGE_EMULATOR_HOST for an emulator
            client_module.Client().bucket(bucket).blob(key).download_to_filename(str(dest))
        elif source.kind == "s3":
            client_module.client("s3", **s3_settings(environ)).download_file(bucket, key, str(dest))
        else:
            key_text = environ.get("AZURE_STORAGE_ACCESS_KEY")  # Kaniko's: a shared key of the URL's account
            credential = {"account_name": azure_account(source.location), "account_key": key_text} if key_text else None
            blob = client_module.BlobClient.from_blob_url(source.location, credential=credential)
            with dest.open("wb") as out:
                blob.download_blob().readinto(out)
    except Exception as exc:  # noqa: BLE001 - each vendor's client has an error tree of its own
        raise ContextError(f"--context {source.location}: the download failed: {exc}") from None


def s3_settings(environ: Mapping[str, str]) -> dict[str, object]:
    """boto3 client arguments from Kaniko's variables: ``S3_ENDPOINT`` (an S3-compatible server such as MinIO) and
    ``S3_FORCE_PATH_STYLE=true``; the region and credentials come from boto3's own (``AWS_REGION``, ...)."""
    settings: dict[str, object] = {}
    if environ.get("S3_ENDPOINT"):
        settings["endpoint_url"] = environ["S3_ENDPOINT"]
    if environ.get("S3_FORCE_PATH_STYLE", "").lower() == "true":
        from botocore.config import Config

        settings["config"] = Config(s3={"addressing_style": "path"})
    return settings


def azure_account(url: str) -> str:
    """The storage account of a blob URL: the host's first label (``ACCOUNT.blob.core.windows.net``), or the first
    path segment of an IP-style URL (an emulator: ``http://127.0.0.1:10000/ACCOUNT/container/blob``)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host == "localhost" or re.fullmatch(r"[0-9.]+|\[?[0-9a-f:]+\]?", host):
        return parts.path.lstrip("/").split("/", 1)[0]
    return host.split(".", 1)[0]


def git_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """git's environment: no prompts, and Kaniko's GIT_USERNAME/GIT_PASSWORD or GIT_TOKEN as an HTTP Basic header
    passed through GIT_CONFIG_* variables (never on a command line, where ``ps`` would show it)."""
    env = {key: value for key, value in environ.items() if not key.startswith("GIT_CONFIG")}
    env["GIT_TERMINAL_PROMPT"] = "0"
    username, password = environ.get("GIT_USERNAME", ""), environ.get("GIT_PASSWORD", "")
    if environ.get("GIT_TOKEN"):
        username, password = environ["GIT_TOKEN"], ""
    if username or password:
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        env.update(GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="http.extraHeader",
                   GIT_CONFIG_VALUE_0=f"Authorization: Basic {token}")
    return env


def clone(source: ContextSource, dest: Path, git: GitOptions, environ: Mapping[str, str]) -> None:
    """Kaniko's git context: clone (a branch, or HEAD), fetch a non-branch ref, check out a commit."""
    if "://" in source.location:
        url = source.location
    else:
        method = environ.get("GIT_PULL_METHOD", "https").lower()
        if method not in ("https", "http"):
            raise OptionsError(f"GIT_PULL_METHOD={method}: expected https or http")
        url = f"{method}://{source.location}"
    git_program = shutil.which("git")
    if git_program is None:
        raise ContextError(f"--context {source.location}: git contexts need git, which is not installed")
    env = git_environ(environ)
    ref = source.ref
    branch = git.branch
    if ref and ref.startswith("refs/heads/") and not branch:
        branch = ref.removeprefix("refs/heads/")
        ref = None
    argv = [git_program, "clone", "--quiet"]
    if branch:
        argv += ["--branch", branch.removeprefix("refs/tags/")]
    if git.single_branch:
        argv.append("--single-branch")
    if git.recurse_submodules:
        argv.append("--recurse-submodules")
    _git(argv + ["--", url, str(dest)], env, url)
    checkout = source.commit
    if ref:
        if HASH.fullmatch(ref):
            checkout = checkout or ref
        else:
            _git([git_program, "-C", str(dest), "fetch", "--quiet", "origin", f"{ref}:{ref}"], env, url)
            checkout = checkout or ref
    if checkout:
        _git([git_program, "-C", str(dest), "checkout", "--quiet", "--detach", checkout], env, url)
        if git.recurse_submodules:
            _git([git_program, "-C", str(dest), "submodule", "update", "--init", "--recursive", "--quiet"], env, url)


def _git(argv: list[str], env: Mapping[str, str], url: str) -> None:
    result = subprocess.run(argv, env=dict(env), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise ContextError(f"the git context {url}: git {argv[1] if argv[1] != '-C' else argv[3]} failed "
                           f"(exit {result.returncode}): {detail}")
