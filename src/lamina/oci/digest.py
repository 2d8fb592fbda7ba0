"""Content digests (``sha256:<64 hex>``): computing them over bytes and streams, and checking them."""

from __future__ import annotations

import hashlib
import re
from typing import BinaryIO

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
CHUNK = 1 << 20


def is_digest(text: str) -> bool:
    return bool(_DIGEST.match(text))


def compute_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_hex(digest: str) -> str:
    """The hex part of ``sha256:<hex>`` (the file name inside ``blobs/sha256/``)."""
    algorithm, _, hexpart = digest.partition(":")
    if algorithm != "sha256" or not hexpart:
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return hexpart


def digest_file(path: str) -> tuple[str, int]:
    """Digest and size of a file, read in chunks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return "sha256:" + h.hexdigest(), size


class DigestingWriter:
    """A write-only file object that hashes and counts what passes through it to ``target``."""

    def __init__(self, target: BinaryIO) -> None:
        self._target = target
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        self.size += len(data)
        self._target.write(data)
        return len(data)

    def flush(self) -> None:
        self._target.flush()

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()
