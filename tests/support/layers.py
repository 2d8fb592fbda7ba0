"""Test layer tars and archives, entry by entry: ``tar_bytes([f("etc/x", b"..."), d("etc"), sym(...), ...])``."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

MTIME = 1_600_000_000


@dataclass
class E:
    """One entry of a test layer or archive."""

    name: str
    kind: bytes = tarfile.REGTYPE
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    link: str = ""
    mtime: int = MTIME
    pax: dict[str, str] = field(default_factory=dict)
    major: int = 0
    minor: int = 0


def f(name: str, data: bytes = b"", **kw: object) -> E:
    return E(name, tarfile.REGTYPE, data, **kw)  # type: ignore[arg-type]


def d(name: str, **kw: object) -> E:
    kw.setdefault("mode", 0o755)
    return E(name, tarfile.DIRTYPE, **kw)  # type: ignore[arg-type]


def sym(name: str, target: str, **kw: object) -> E:
    return E(name, tarfile.SYMTYPE, link=target, mode=0o777, **kw)  # type: ignore[arg-type]


def hard(name: str, target: str) -> E:
    return E(name, tarfile.LNKTYPE, link=target)


def special(name: str, kind: bytes, mode: int, major: int = 0, minor: int = 0) -> E:
    return E(name, kind, mode=mode, major=major, minor=minor)


def wh(name: str) -> E:
    """A whiteout or opaque marker (``.wh.NAME``, ``.wh..wh..opq``): an empty regular file by that name."""
    return E(name)


def xattr(name: str, value: bytes) -> dict[str, str]:
    """The PAX record of one extended attribute (binary values kept through surrogateescape)."""
    return {f"SCHILY.xattr.{name}": value.decode("utf-8", "surrogateescape")}


def tar_info(e: E) -> tarfile.TarInfo:
    info = tarfile.TarInfo(e.name)
    info.type = e.kind
    info.mode = e.mode
    info.uid, info.gid = e.uid, e.gid
    info.mtime = e.mtime
    info.linkname = e.link
    info.pax_headers = dict(e.pax)
    info.devmajor, info.devminor = e.major, e.minor
    info.size = len(e.data) if e.kind in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE) else 0
    return info


def tar_bytes(entries: list[E], fmt: int = tarfile.PAX_FORMAT, *,
              global_pax: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="utf-8", errors="surrogateescape",
                      pax_headers=global_pax) as tf:
        for e in entries:
            info = tar_info(e)
            tf.addfile(info, io.BytesIO(e.data) if info.size else None)
    return buf.getvalue()


def compressed(data: bytes, compression: str) -> bytes:
    """``data`` as a layer blob: "none", "gzip" or "zstd"."""
    if compression == "gzip":
        return gzip.compress(data, compresslevel=1)
    if compression == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    assert compression == "none", compression
    return data


def write_layer(directory: Path, name: str, entries: list[E] | None, compression: str = "none") -> Path:
    """A layer blob file: ``entries`` as a tar, compressed; None gives a zero-byte blob (an empty layer)."""
    path = directory / f"{name}.tar"
    path.write_bytes(compressed(tar_bytes(entries), compression) if entries is not None else b"")
    return path


def dir_summary(root: Path) -> dict[str, str]:
    """A readable summary of a directory tree: path -> "dir", "-> target", "fifo" or "file <content>"."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            key = os.path.relpath(path, root)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                out[key] = "-> " + os.readlink(path)
            elif stat.S_ISDIR(st.st_mode):
                out[key] = "dir"
            elif stat.S_ISFIFO(st.st_mode):
                out[key] = "fifo"
            else:
                out[key] = "file " + Path(path).read_bytes().decode("utf-8", "surrogateescape")
    return out
