"""Downloads for ``ADD <url>``: streamed to a file, never held in memory, checked against ``--checksum``.

As BuildKit's HTTP source does it: a GET that follows redirects; a status outside 200-399 is an error; the file is
written with mode 0600; its mtime is the ``Last-Modified`` header when there is one that parses, else the Unix
epoch; the digest of what was received is compared with the pinned one, if any. The file's name is the last
component of the URL path (``__unnamed__`` when the path has none), as the Dockerfile frontend names it.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urlsplit

import requests
import urllib3

from lamina import __version__

CHUNK = 1 << 20
TIMEOUT = (30, 300)  # connect, read (seconds between bytes)
UNNAMED = "__unnamed__"
ALGORITHMS = {"sha256": 64, "sha384": 96, "sha512": 128}  # what go-digest accepts, with their hex lengths


class DownloadError(Exception):
    """The URL could not be fetched (connection, HTTP status, local write)."""


class ChecksumMismatch(DownloadError):
    def __init__(self, url: str, expected: str, actual: str) -> None:
        super().__init__(f"digest mismatch for {redact(url)}: got {actual}, expected {expected}")
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True)
class Download:
    path: Path
    digest: str  # "<algorithm>:<hex>" of the content, in the pinned checksum's algorithm (sha256 otherwise)
    mtime: float  # seconds since the epoch: Last-Modified, or 0


def parse_checksum(text: str) -> str:
    """A ``--checksum`` value as ``algorithm:hex`` (lower case); ValueError when it is not a digest."""
    algorithm, sep, hex_ = text.partition(":")
    algorithm = algorithm.lower()
    if not sep or algorithm not in ALGORITHMS:
        raise ValueError(f"invalid checksum digest format {text!r} (expected sha256:<hex>, sha384:<hex> or "
                         f"sha512:<hex>)")
    if not re.fullmatch(f"[0-9a-fA-F]{{{ALGORITHMS[algorithm]}}}", hex_):
        raise ValueError(f"invalid checksum digest format {text!r}: {algorithm} needs {ALGORITHMS[algorithm]} "
                         f"hexadecimal digits")
    return f"{algorithm}:{hex_.lower()}"


def url_filename(url: str) -> str:
    """The name ADD gives a download: the URL path's last component, or ``__unnamed__``."""
    base = posixpath.basename(urlsplit(url).path)
    if base in ("", ".", "..", "/"):
        return UNNAMED
    return base


def redact(url: str) -> str:
    """``url`` without a password (``https://user:xxxxx@host/...``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"{parts.username}:xxxxx@{netloc}").geturl()


def last_modified(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def download(url: str, directory: Path, *, checksum: str | None = None, filename: str | None = None,
             session: requests.Session | None = None) -> Download:
    """GET ``url`` into ``directory/<filename>`` (mode 0600, mtime from Last-Modified or 0).

    ``checksum`` (``algorithm:hex``, see ``parse_checksum``) is checked once the body is complete; on a mismatch
    the file is removed and ``ChecksumMismatch`` raised."""
    expected = parse_checksum(checksum) if checksum else None
    algorithm = expected.split(":", 1)[0] if expected else "sha256"
    name = filename or url_filename(url)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    own = session is None
    http = session or requests.Session()
    hasher = hashlib.new(algorithm)
    try:
        try:
            resp = http.get(url, stream=True, timeout=TIMEOUT, allow_redirects=True,
                            headers={"User-Agent": f"lamina/{__version__}", "Accept-Encoding": "identity"})
        except requests.RequestException as exc:
            raise DownloadError(f"cannot fetch {redact(url)}: {_reason(exc)}") from None
        with resp:
            if not 200 <= resp.status_code < 400:
                raise DownloadError(f"HTTP {resp.status_code} from {redact(url)}")
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                with os.fdopen(fd, "wb") as out:
                    for chunk in resp.raw.stream(CHUNK, decode_content=False):
                        hasher.update(chunk)
                        out.write(chunk)
            except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:  # mid-body failures
                path.unlink(missing_ok=True)
                raise DownloadError(f"cannot fetch {redact(url)}: {_reason(exc)}") from None
            except OSError as exc:
                path.unlink(missing_ok=True)
                raise DownloadError(f"cannot write {path}: {exc.strerror or exc}") from None
            mtime = last_modified(resp.headers.get("Last-Modified"))
    finally:
        if own:
            http.close()
    actual = f"{algorithm}:{hasher.hexdigest()}"
    if expected is not None and actual != expected:
        path.unlink(missing_ok=True)
        raise ChecksumMismatch(url, expected, actual)
    os.chmod(path, 0o600)
    when = mtime if mtime is not None and mtime >= 0 else 0.0
    os.utime(path, (when, when))
    return Download(path, actual, when)


def _reason(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) < 300 else text[:300] + "..."
