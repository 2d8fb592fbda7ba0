"""The streaming tar reader (``rootfs/tarstream.py``) against Python's tarfile: ustar, GNU and PAX archives."""

from __future__ import annotations

import io
import os
import random
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Literal

import pytest

from lamina.rootfs.tarstream import (
    BLOCKDEV,
    CHAR,
    DIRECTORY,
    FIFO,
    HARDLINK,
    REGULAR,
    SYMLINK,
    XATTR_PREFIX,
    Entry,
    TarError,
    TarReader,
)
from tests.support.layers import E, tar_bytes, tar_info

Format = Literal[0, 1, 2]  # tarfile.USTAR_FORMAT, GNU_FORMAT, PAX_FORMAT

MTIME = 1_600_000_000
BLOCK = 512
CHECKSUM = slice(148, 156)
TYPEFLAG = 156

# tarfile's type flags as the reader names them
KINDS = {tarfile.REGTYPE: REGULAR, tarfile.AREGTYPE: REGULAR, tarfile.CONTTYPE: REGULAR, tarfile.LNKTYPE: HARDLINK,
         tarfile.SYMTYPE: SYMLINK, tarfile.CHRTYPE: CHAR, tarfile.BLKTYPE: BLOCKDEV, tarfile.DIRTYPE: DIRECTORY,
         tarfile.FIFOTYPE: FIFO}

# non-UTF-8 bytes in a name and in xattr values travel as surrogate escapes (tarfile and TarReader alike)
NOT_UTF8_NAME = b"latin1-caf\xe9".decode("utf-8", "surrogateescape")
BINARY_VALUE = b"\x00\xff\xfe\n=\x80 binary"
CAPABILITY = b"\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"


def _escaped(value: bytes) -> str:
    return value.decode("utf-8", "surrogateescape")


def member_bytes(m: E, fmt: Format) -> bytes:
    """One member's header blocks (with its GNU/PAX extension headers) and padded data, no end of archive."""
    info = tar_info(m)
    data = m.data if info.size else b""
    return info.tobuf(fmt, "utf-8", "surrogateescape") + data + b"\0" * (-len(data) % BLOCK)


def global_header(records: dict[str, bytes]) -> bytes:
    """A PAX global header ('g') with these records."""
    body = b""
    for key, value in records.items():
        record = b" " + key.encode() + b"=" + value + b"\n"
        length = len(record) + 1
        while len(str(length).encode()) + len(record) != length:
            length += 1
        body += str(length).encode() + record
    info = tarfile.TarInfo("pax_global_header")
    info.type = tarfile.XGLTYPE
    info.size = len(body)
    return info.tobuf(tarfile.USTAR_FORMAT) + body + b"\0" * (-len(body) % BLOCK)


END = b"\0" * (2 * BLOCK)


def fix_checksum(header: bytearray) -> None:
    header[CHECKSUM] = b" " * 8
    header[CHECKSUM] = b"%06o\0 " % sum(header)


def exact_ns(text: str) -> int:
    """A PAX time string in nanoseconds, independently of the reader (digits past the 9th are dropped)."""
    return int(Decimal(text).scaleb(9))


@dataclass
class Seen:
    """What one reader saw of one entry."""

    name: str
    kind: str
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    linkname: str
    dev: tuple[int, int]
    xattrs: dict[str, bytes]
    data: bytes


def with_tarfile(archive: bytes) -> list[Seen]:
    out: list[Seen] = []
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:", encoding="utf-8", errors="surrogateescape") as tf:
        for info in tf:
            source = tf.extractfile(info) if info.isreg() else None
            pax = info.pax_headers
            out.append(Seen(
                name=info.name,
                kind=KINDS[info.type],
                mode=info.mode & 0o7777,
                uid=info.uid,
                gid=info.gid,
                size=info.size if info.isreg() else 0,
                mtime_ns=exact_ns(pax["mtime"]) if "mtime" in pax else int(info.mtime) * 1_000_000_000,
                linkname=info.linkname,
                dev=(info.devmajor, info.devminor) if info.ischr() or info.isblk() else (0, 0),
                xattrs={key[len(XATTR_PREFIX):]: value.encode("utf-8", "surrogateescape")
                        for key, value in pax.items() if key.startswith(XATTR_PREFIX)},
                data=source.read() if source is not None else b"",
            ))
    return out


def _seen(entry: Entry, data: bytes) -> Seen:
    # tarfile drops a directory's trailing slash; the reader gives the name as stored
    name = entry.name.rstrip("/") if entry.kind == DIRECTORY else entry.name
    return Seen(name, entry.kind, entry.mode, entry.uid, entry.gid, entry.size, entry.mtime_ns, entry.linkname,
                (entry.devmajor, entry.devminor), dict(entry.xattrs), data)


def read_all(reader: TarReader, chunk: int = 4096) -> list[Seen]:
    out: list[Seen] = []
    for entry in reader:
        data = b""
        while True:
            more = reader.read(chunk)
            if not more:
                break
            data += more
        out.append(_seen(entry, data))
    return out


def with_reader(archive: bytes) -> list[Seen]:
    return read_all(TarReader(io.BytesIO(archive)))


class Trickle(io.BytesIO):
    """A stream that returns at most a few bytes per read, as a pipe or a decompressor may."""

    def read(self, size: int | None = -1, /) -> bytes:
        return super().read(7 if size is None or size < 0 else min(size, 7))


# ---------------------------------------------------------------------------------------------------------------
# archives of every kind of entry, in the three formats


RANDOM = random.Random(1234)
BIG = RANDOM.randbytes(100_000)

COMMON = [
    E("etc", tarfile.DIRTYPE, mode=0o755),
    E("etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\n"),
    E("etc/passwd-hardlink", tarfile.LNKTYPE, link="etc/passwd"),
    E("usr/bin/setuid", data=b"#!/bin/sh\n", mode=0o4755, uid=1000, gid=1001),
    E("usr/bin/sticky-dir", tarfile.DIRTYPE, mode=0o1777),
    E("usr/bin/setgid", data=b"g", mode=0o2711),
    E("empty"),
    E("one-block", data=b"b" * 512),
    E("one-block-and-a-byte", data=b"c" * 513),
    E("big", data=BIG, mtime=1_700_000_001),
    E("bin", tarfile.SYMTYPE, mode=0o777, link="usr/bin"),
    E("dev/null", tarfile.CHRTYPE, mode=0o666, major=1, minor=3),
    E("dev/nvme0n1", tarfile.BLKTYPE, mode=0o660, gid=6, major=259, minor=70_000),
    E("run/fifo", tarfile.FIFOTYPE, mode=0o600),
    E("old-style", tarfile.AREGTYPE, data=b"a regular file with the NUL type flag"),
    E("contiguous", tarfile.CONTTYPE, data=b"a contiguous file"),
    E("caf\u00e9/\u00fcnicode", data=b"utf-8 name"),
    E(NOT_UTF8_NAME, data=b"not utf-8"),
    E("epoch", mtime=0),
    E("uid-just-fits", uid=2**21 - 1, gid=2**21 - 1),
    # 150 characters: ustar splits it into prefix and name, GNU and PAX use their own long names
    E("/".join(["d" * 49, "e" * 50, "f" * 48]), data=b"long-ish name"),
]

LONG_ONLY = [  # what ustar cannot hold
    E("long/" + "n" * 250 + "/" + "m" * 100, data=b"very long name"),
    E("long-symlink", tarfile.SYMTYPE, mode=0o777, link="/" + "t" * 200),
    E("long-hardlink-target-" + "h" * 120, data=b"target with a long name"),
    E("long-hardlink", tarfile.LNKTYPE, link="long-hardlink-target-" + "h" * 120),
    E("big-ids", uid=2**21 + 5, gid=3_000_000_000),
    E("far-future", mtime=2**34 + 7),  # more than 11 octal digits
    E("long-dir-" + "x" * 120, tarfile.DIRTYPE, mode=0o700),
]

GNU_ONLY = [
    E("before-1970", mtime=-1000),  # base-256, negative
]

PAX_ONLY = [
    E("ns-mtime", data=b"n", pax={"mtime": "1700000000.123456789"}),
    E("ns-mtime-dir", tarfile.DIRTYPE, mode=0o755, pax={"mtime": "1700000000.000000001"}),
    E("negative-fraction", pax={"mtime": "-1.25"}),
    E("too-many-digits", pax={"mtime": "1700000000.1234567899"}),
    E("xattrs", data=b"x", pax={
        "SCHILY.xattr.security.capability": _escaped(CAPABILITY),
        "SCHILY.xattr.user.text": "hello",
        "SCHILY.xattr.user.binary": _escaped(BINARY_VALUE),
        "SCHILY.xattr.user.empty": "",
    }),
    E("xattr-dir", tarfile.DIRTYPE, mode=0o755, pax={"SCHILY.xattr.user.d": "on a directory"}),
    E("pax-ids", uid=7, gid=8, pax={"uid": "4000000000", "gid": "4000000001"}),
    E("header-name-replaced-by-pax-path", data=b"renamed", pax={"path": "renamed/by/pax"}),
    E("pax-linkpath", tarfile.SYMTYPE, mode=0o777, link="short", pax={"linkpath": "replaced/by/pax"}),
    E("pax-comment", data=b"c", pax={"comment": "unknown keys are ignored", "atime": "1.5", "ctime": "2.5"}),
]

FORMATS: dict[str, tuple[Format, list[E]]] = {
    "ustar": (tarfile.USTAR_FORMAT, COMMON),
    "gnu": (tarfile.GNU_FORMAT, COMMON + LONG_ONLY + GNU_ONLY),
    "pax": (tarfile.PAX_FORMAT, COMMON + LONG_ONLY + PAX_ONLY),
}


@pytest.mark.parametrize("fmt", FORMATS)
def test_same_entries_as_tarfile(fmt: str) -> None:
    number, members = FORMATS[fmt]
    archive = tar_bytes(members, number)
    expected = with_tarfile(archive)
    assert len(expected) == len(members)
    assert with_reader(archive) == expected


@pytest.mark.parametrize("fmt", FORMATS)
def test_short_reads_of_the_stream(fmt: str) -> None:
    number, members = FORMATS[fmt]
    archive = tar_bytes(members, number)
    assert read_all(TarReader(Trickle(archive)), chunk=1000) == with_tarfile(archive)


def test_values_as_written() -> None:
    """Spot checks of the decoded values themselves, not only agreement with tarfile."""
    archive = tar_bytes(COMMON + LONG_ONLY + PAX_ONLY, tarfile.PAX_FORMAT)
    seen = {s.name: s for s in with_reader(archive)}
    assert seen["ns-mtime"].mtime_ns == 1_700_000_000_123_456_789
    assert seen["ns-mtime-dir"].mtime_ns == 1_700_000_000_000_000_001
    assert seen["ns-mtime-dir"].kind == DIRECTORY
    assert seen["negative-fraction"].mtime_ns == -1_250_000_000
    assert seen["too-many-digits"].mtime_ns == 1_700_000_000_123_456_789
    assert seen["xattrs"].xattrs == {"security.capability": CAPABILITY, "user.text": b"hello",
                                     "user.binary": BINARY_VALUE, "user.empty": b""}
    assert seen["pax-ids"].uid == 4_000_000_000 and seen["pax-ids"].gid == 4_000_000_001
    assert seen["renamed/by/pax"].data == b"renamed"
    assert seen["pax-linkpath"].linkname == "replaced/by/pax"
    assert seen["dev/nvme0n1"].kind == BLOCKDEV and seen["dev/nvme0n1"].dev == (259, 70_000)
    assert seen["dev/null"].kind == CHAR and seen["dev/null"].dev == (1, 3)
    assert seen["run/fifo"].kind == FIFO
    assert seen["etc/passwd-hardlink"].kind == HARDLINK and seen["etc/passwd-hardlink"].size == 0
    assert seen["usr/bin/setuid"].mode == 0o4755
    assert seen["usr/bin/sticky-dir"].mode == 0o1777
    assert seen["big"].data == BIG
    assert seen[NOT_UTF8_NAME].data == b"not utf-8"


def test_gnu_base256_numbers() -> None:
    archive = tar_bytes(LONG_ONLY + GNU_ONLY, tarfile.GNU_FORMAT)
    seen = {s.name: s for s in with_reader(archive)}
    assert seen["big-ids"].uid == 2**21 + 5
    assert seen["big-ids"].gid == 3_000_000_000
    assert seen["far-future"].mtime_ns == (2**34 + 7) * 1_000_000_000
    assert seen["before-1970"].mtime_ns == -1000 * 1_000_000_000
    assert seen["long-symlink"].linkname == "/" + "t" * 200


def test_base256_size_field() -> None:
    """A size written in base-256 (as GNU tar does past 8 GiB) is read, and the data after it stays in step."""
    header = bytearray(member_bytes(E("sized", data=b"hello"), tarfile.GNU_FORMAT)[:BLOCK])
    header[124:136] = b"\x80" + (5).to_bytes(11, "big")
    fix_checksum(header)
    archive = bytes(header) + b"hello".ljust(BLOCK, b"\0") + member_bytes(E("next", data=b"n"),
                                                                           tarfile.GNU_FORMAT) + END
    seen = with_reader(archive)
    assert [(s.name, s.size, s.data) for s in seen] == [("sized", 5, b"hello"), ("next", 1, b"n")]


def test_pax_size_overrides_the_header() -> None:
    """Past 8 GiB the size is only in the PAX header (the ustar field says 0)."""
    archive = bytearray(tar_bytes([E("f", data=b"hello", pax={"size": "5"}), E("g", data=b"g")], tarfile.PAX_FORMAT))
    with tarfile.open(fileobj=io.BytesIO(bytes(archive)), mode="r:") as tf:
        header = tf.getmembers()[0].offset_data - BLOCK
    block = bytearray(archive[header:header + BLOCK])
    block[124:136] = b"%011o\0" % 0
    fix_checksum(block)
    archive[header:header + BLOCK] = block
    expected = with_tarfile(bytes(archive))
    assert [(s.name, s.size, s.data) for s in expected] == [("f", 5, b"hello"), ("g", 1, b"g")]
    assert with_reader(bytes(archive)) == expected


def test_ustar_prefix_field_is_used() -> None:
    name = "/".join(["p" * 60, "q" * 60, "r" * 60])
    archive = tar_bytes([E(name, data=b"split")], tarfile.USTAR_FORMAT)
    assert archive[345:346] != b"\0"  # tarfile did put part of it in the prefix field
    [seen] = with_reader(archive)
    assert seen.name == name and seen.data == b"split"


def test_pax_path_decides_the_kind_not_the_truncated_header_name() -> None:
    """A regular file with a long PAX path: tarfile fills the ustar name field with its first 100 characters, which
    here end with "/". The trailing-slash rule for old directories must look at the real name (the PAX path), as
    tarfile does, else the file is read as a directory and its data is lost."""
    name = "d" * 49 + "/" + "e" * 49 + "/" + "f" * 50
    archive = tar_bytes([E(name, data=b"file data"), E("next", data=b"n")], tarfile.PAX_FORMAT)
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tf:
        header = tf.getmembers()[0].offset_data - BLOCK
    assert archive[header:header + 100] == name[:100].encode() and name[99] == "/"  # the truncated name field
    expected = with_tarfile(archive)
    assert [(s.name, s.kind, s.data) for s in expected] == [(name, REGULAR, b"file data"), ("next", REGULAR, b"n")]
    assert with_reader(archive) == expected


def test_trailing_slash_marks_an_old_style_directory() -> None:
    archive = member_bytes(E("olddir/", tarfile.AREGTYPE, mode=0o755), tarfile.USTAR_FORMAT) + END
    [seen] = with_reader(archive)
    assert seen.kind == DIRECTORY


def test_signed_checksum_is_accepted() -> None:
    """Old tars summed the header as signed chars; tarfile accepts both sums, and so must the reader."""
    header = bytearray(member_bytes(E(NOT_UTF8_NAME + "\u00e9", data=b"s"), tarfile.USTAR_FORMAT)[:BLOCK])
    header[CHECKSUM] = b" " * 8
    signed = sum(b - 256 if b > 127 else b for b in header)
    header[CHECKSUM] = b"%06o\0 " % signed
    archive = bytes(header) + b"s".ljust(BLOCK, b"\0") + END
    assert [s.data for s in with_tarfile(archive)] == [b"s"]
    assert [s.data for s in with_reader(archive)] == [b"s"]


# ---------------------------------------------------------------------------------------------------------------
# global PAX headers


def test_global_pax_header_from_tarfile() -> None:
    members = [
        E("inherits", data=b"i"),
        E("overrides", data=b"o", pax={"uid": "99", "SCHILY.xattr.user.own": "mine"}),
        E("dir", tarfile.DIRTYPE, mode=0o755),
    ]
    archive = tar_bytes(members, tarfile.PAX_FORMAT,
                    global_pax={"uid": "4242", "comment": "hello", "SCHILY.xattr.user.global": "g"})
    expected = with_tarfile(archive)
    seen = with_reader(archive)
    assert seen == expected
    by_name = {s.name: s for s in seen}
    assert by_name["inherits"].uid == 4242
    assert by_name["overrides"].uid == 99
    assert by_name["overrides"].xattrs == {"user.global": b"g", "user.own": b"mine"}
    assert by_name["dir"].xattrs == {"user.global": b"g"}


def test_global_pax_headers_accumulate_mid_archive() -> None:
    archive = (member_bytes(E("first", data=b"1"), tarfile.PAX_FORMAT)
               + global_header({"gid": b"77", "mtime": b"1234.5"})
               + member_bytes(E("second", data=b"2"), tarfile.PAX_FORMAT)
               + global_header({"gid": b"88"})
               + member_bytes(E("third", data=b"3", pax={"mtime": "99"}), tarfile.PAX_FORMAT)
               + END)
    seen = {s.name: s for s in with_reader(archive)}
    assert (seen["first"].gid, seen["first"].mtime_ns) == (0, MTIME * 1_000_000_000)
    assert (seen["second"].gid, seen["second"].mtime_ns) == (77, 1_234_500_000_000)
    assert (seen["third"].gid, seen["third"].mtime_ns) == (88, 99_000_000_000)
    assert [s.data for s in seen.values()] == [b"1", b"2", b"3"]


def test_pax_record_with_newlines_and_equals_in_the_value() -> None:
    value = "line one\nkey=value\nline three"
    archive = tar_bytes([E("f", data=b"d", pax={"SCHILY.xattr.user.multi": value})], tarfile.PAX_FORMAT)
    [seen] = with_reader(archive)
    assert seen.xattrs == {"user.multi": value.encode()}


# ---------------------------------------------------------------------------------------------------------------
# reading data


def test_partial_reads_do_not_desynchronise() -> None:
    members = [E("a", data=BIG), E("b", data=b"second"), E("c", data=b"c" * 1000), E("d", data=b"last")]
    reader = TarReader(io.BytesIO(tar_bytes(members, tarfile.PAX_FORMAT)))
    names: list[str] = []
    datas: list[bytes] = []
    for entry in reader:
        names.append(entry.name)
        if entry.name == "a":
            datas.append(reader.read(100))  # most of it left unread
        elif entry.name == "b":
            datas.append(reader.read(3) + reader.read(0) + reader.read(1000) + reader.read(10))
        elif entry.name == "c":
            datas.append(b"")  # not read at all
        else:
            datas.append(reader.read(1 << 20))
    assert names == ["a", "b", "c", "d"]
    assert datas == [BIG[:100], b"second", b"", b"last"]


def test_read_never_goes_past_the_entry() -> None:
    reader = TarReader(io.BytesIO(tar_bytes([E("a", data=b"12345"), E("b", data=b"x")], tarfile.GNU_FORMAT)))
    entries = iter(reader)
    assert next(entries).name == "a"
    assert reader.read(1000) == b"12345"
    assert reader.read(1000) == b""
    assert next(entries).name == "b"
    assert reader.read(1) == b"x"
    assert list(entries) == []


def test_non_regular_entries_have_no_data() -> None:
    archive = tar_bytes([E("dir", tarfile.DIRTYPE), E("link", tarfile.SYMTYPE, link="dir"), E("f", data=b"after")],
                    tarfile.PAX_FORMAT)
    reader = TarReader(io.BytesIO(archive))
    got = [(entry.name, entry.size, reader.read(100)) for entry in reader]
    assert got == [("dir/", 0, b""), ("link", 0, b""), ("f", 5, b"after")]


def test_hardlink_with_data_is_skipped() -> None:
    """Some writers give a hardlink entry the data again; it is skipped, and the next header found."""
    header = bytearray(member_bytes(E("link", tarfile.LNKTYPE, link="target"), tarfile.USTAR_FORMAT))
    header[124:136] = b"%011o\0" % 600
    fix_checksum(header)
    archive = (member_bytes(E("target", data=b"t"), tarfile.USTAR_FORMAT) + bytes(header) + b"z" * 1024
               + member_bytes(E("after", data=b"a"), tarfile.USTAR_FORMAT) + END)
    reader = TarReader(io.BytesIO(archive))
    got = [(entry.name, entry.kind, entry.size, reader.read(100) if entry.kind == REGULAR else b"")
           for entry in reader]
    assert got == [("target", REGULAR, 1, b"t"), ("link", HARDLINK, 0, b""), ("after", REGULAR, 1, b"a")]


def test_empty_stream_and_missing_end_blocks() -> None:
    with pytest.raises(TarError, match="empty"):
        with_reader(b"")  # a layer blob that decompresses to nothing (a truncated zstd frame does)
    archive = tar_bytes([E("a", data=b"x"), E("b", data=b"y")], tarfile.USTAR_FORMAT)
    without_end = member_bytes(E("a", data=b"x"), tarfile.USTAR_FORMAT)
    assert [s.name for s in with_reader(without_end)] == ["a"]
    assert [s.name for s in with_reader(archive)] == ["a", "b"]


def test_stops_at_the_first_zero_block() -> None:
    archive = member_bytes(E("a", data=b"x"), tarfile.USTAR_FORMAT) + END + b"trailing garbage" * 100
    assert [s.name for s in with_reader(archive)] == ["a"]


def test_known_kinds() -> None:
    archive = member_bytes(E("label", b"V"), tarfile.USTAR_FORMAT) + member_bytes(E("f"), tarfile.USTAR_FORMAT)
    entries = list(TarReader(io.BytesIO(archive + END)))
    assert [(e.kind, e.known) for e in entries] == [("V", False), (REGULAR, True)]


# ---------------------------------------------------------------------------------------------------------------
# broken archives


def _second_header_offset(archive: bytes) -> int:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tf:
        return tf.getmembers()[1].offset


def test_corrupt_header_checksum() -> None:
    archive = bytearray(tar_bytes([E("a", data=b"x"), E("b", data=b"y"), E("c", data=b"z")], tarfile.USTAR_FORMAT))
    archive[_second_header_offset(bytes(archive))] ^= 0x01  # a bit of "b"'s name
    reader = TarReader(io.BytesIO(bytes(archive)))
    names: list[str] = []
    with pytest.raises(TarError, match="checksum"):
        for entry in reader:
            names.append(entry.name)
    assert names == ["a"]


def test_corrupt_checksum_field() -> None:
    archive = bytearray(tar_bytes([E("a", data=b"x")], tarfile.GNU_FORMAT))
    archive[148:154] = b"777777"
    with pytest.raises(TarError, match="checksum"):
        list(TarReader(io.BytesIO(bytes(archive))))


def test_garbage_is_refused() -> None:
    with pytest.raises(TarError):
        list(TarReader(io.BytesIO(b"this is not a tar archive" * 100)))


def test_gnu_sparse_file() -> None:
    header = bytearray(member_bytes(E("sparse", data=b"x" * 10), tarfile.GNU_FORMAT)[:BLOCK])
    header[TYPEFLAG] = ord("S")
    fix_checksum(header)
    archive = member_bytes(E("before", data=b"b"), tarfile.GNU_FORMAT) + bytes(header) + b"x" * BLOCK + END
    reader = TarReader(io.BytesIO(archive))
    names: list[str] = []
    with pytest.raises(TarError, match="sparse"):
        for entry in reader:
            names.append(entry.name)
    assert names == ["before"]


def test_pax_sparse_file() -> None:
    """GNU tar's PAX sparse formats (0.x and 1.0) are announced by GNU.sparse.* records."""
    sparse = E("sparse", data=b"x" * 10, pax={"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                                             "GNU.sparse.name": "sparse", "GNU.sparse.realsize": "1048576"})
    with pytest.raises(TarError, match="sparse"):
        list(TarReader(io.BytesIO(tar_bytes([sparse], tarfile.PAX_FORMAT))))


@pytest.mark.parametrize("where", ["header", "data", "padding", "pax", "long-name"])
def test_truncated_archive(where: str) -> None:
    if where == "pax":
        archive = tar_bytes([E("a", data=b"x", pax={"comment": "c" * 2000})], tarfile.PAX_FORMAT)
        cut = BLOCK + 1000  # in the PAX header's records
    elif where == "long-name":
        archive = tar_bytes([E("n" * 3000, data=b"x")], tarfile.GNU_FORMAT)
        cut = BLOCK + 1000  # in the GNU long name
    else:
        archive = tar_bytes([E("a", data=BIG), E("b", data=b"y" * 10)], tarfile.USTAR_FORMAT)
        second = _second_header_offset(archive)
        cut = {"header": second + 100, "data": 50_000, "padding": second - 10}[where]
    reader = TarReader(io.BytesIO(archive[:cut]))
    with pytest.raises(TarError, match="end of the archive"):
        for _ in reader:
            pass


def test_truncated_data_while_reading() -> None:
    archive = tar_bytes([E("a", data=BIG)], tarfile.USTAR_FORMAT)[:BLOCK + 10_000]
    reader = TarReader(io.BytesIO(archive))
    entry = next(iter(reader))
    assert entry.size == len(BIG)
    got = b""
    with pytest.raises(TarError, match="end of the archive"):
        while True:
            more = reader.read(4096)
            assert more, "read() returned nothing before the entry's end without raising"
            got += more
    assert got == BIG[:8192]  # whole reads until the one the archive cannot fill, which raises


@pytest.mark.parametrize("field_slice, value", [
    (slice(100, 108), b"abcdefg\0"),  # mode
    (slice(124, 136), b"12345678901\0"),  # size, not octal
])
def test_bad_number_field(field_slice: slice, value: bytes) -> None:
    header = bytearray(member_bytes(E("f"), tarfile.USTAR_FORMAT)[:BLOCK])
    header[field_slice] = value
    fix_checksum(header)
    with pytest.raises(TarError, match="bad"):
        list(TarReader(io.BytesIO(bytes(header) + END)))


@pytest.mark.parametrize("records", [
    b"5 a=b\n",  # length does not match the record
    b"99 path=x\n",  # runs past the header
    b"x path=x\n",  # no length
    b"8 path\n\n",  # no '='
])
def test_bad_pax_records(records: bytes) -> None:
    info = tarfile.TarInfo("PaxHeader")
    info.type = tarfile.XHDTYPE
    info.size = len(records)
    archive = (info.tobuf(tarfile.USTAR_FORMAT) + records + b"\0" * (-len(records) % BLOCK)
               + member_bytes(E("f"), tarfile.USTAR_FORMAT) + END)
    with pytest.raises(TarError, match="PAX"):
        list(TarReader(io.BytesIO(archive)))


def test_bad_pax_number() -> None:
    archive = tar_bytes([E("f", pax={"uid": "12ab"})], tarfile.PAX_FORMAT)
    with pytest.raises(TarError, match="uid"):
        list(TarReader(io.BytesIO(archive)))


def test_reads_a_real_gnu_tar_archive(tmp_path: Path) -> None:
    """An archive written by GNU tar itself (when installed), with its own long-name and PAX conventions."""
    if shutil.which("tar") is None:
        pytest.skip("GNU tar is not installed")
    src = tmp_path / "src"
    (src / ("d" * 120)).mkdir(parents=True)
    (src / ("d" * 120) / ("f" * 150)).write_bytes(b"deep")
    (src / "link").symlink_to("t" * 150)
    os.link(src / ("d" * 120) / ("f" * 150), src / "hard")
    os.mkfifo(src / "fifo")
    for fmt in ("gnu", "posix", "ustar"):
        archive = tmp_path / f"{fmt}.tar"
        args = ["tar", f"--format={fmt}", "--numeric-owner", "--sort=name", "-cf", str(archive), "-C", str(src), "."]
        if fmt == "ustar":
            args[-1:] = ["fifo"]  # ustar cannot hold the long names
        subprocess.run(args, check=True, capture_output=True)
        data = archive.read_bytes()
        assert with_reader(data) == with_tarfile(data), fmt
