"""BuildKit's Dockerfile integration tests for COPY, ADD, ``--parents``, ``.dockerignore``, ``--exclude`` and
WORKDIR, carried over to lamina.

Expectations come from moby/buildkit at commit 73ed6825c4b7569379ef89df0aedcdbe64473d31, files
frontend/dockerfile/dockerfile_copy_test.go, dockerfile_add_test.go, dockerfile_parents_test.go,
dockerfile_dockerignore_test.go, exclude_patterns_test.go and dockerfile_workdir_test.go: the same Dockerfiles
and contexts, and the same assertions (files BuildKit's local exporter writes are checked in the pushed image;
assertions BuildKit makes with ``RUN [ ... ]`` stay in the Dockerfile). Where BuildKit only asserts that a build
succeeds, a few facts its source fixes (convert_copy.go, solver/llbsolver/file/backend.go, fsutil's copy) are
checked as well. tests/conformance/BUILDKIT-files.md maps every test function to its cases here.

Mapping of BuildKit's images: ``busybox`` and ``alpine`` are the test busybox image (Debian's static busybox,
tests/support/baseimages.py). It has no ``adduser`` applet, so ``RUN adduser -D user`` becomes the same entries
busybox's adduser writes (uid and gid 1000, then 1001, home directory owned by the user), and its gid 65534 is
named ``nogroup`` before ``nobody``, so ``stat -c %G`` of that group is checked numerically.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conformance.buildkit_support import params
from tests.e2e.conftest import Lamina
from tests.e2e.helpers import unpack, write_context
from tests.e2e.table_support import Case, F, build_case, check_case, check_config, check_files

pytestmark = pytest.mark.e2e


def adduser(name: str, uid: int) -> str:
    """What busybox's ``adduser -D NAME`` does (the test image's busybox has no adduser applet)."""
    return (f"RUN echo '{name}:x:{uid}:{uid}:Linux User,,,:/home/{name}:/bin/sh' >> /etc/passwd"
            f" && echo '{name}:x:{uid}:' >> /etc/group && mkdir -p /home/{name} && chown {uid}:{uid} /home/{name}")


def tar_bytes(entries: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for entry in entries:
            if isinstance(entry, tuple):
                info, data = entry
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(entry)
    return buf.getvalue()


def tar_entry(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, link
    return info


CONTENT0 = b"content0"
FOO_TAR = tar_bytes([(tar_entry("foo"), CONTENT0)])
FOO_TAR_GZ = gzip.compress(FOO_TAR, mtime=0)
BAR_TAR = tar_bytes([(tar_entry("bar"), b"content1")])
DNF_TAR_GZ = gzip.compress(tar_bytes([tar_entry("etc/dnf/", tarfile.DIRTYPE, 0o755),
                                      (tar_entry("etc/dnf/dnf.conf"), CONTENT0)]), mtime=0)
ROOTFS_TAR = tar_bytes([tar_entry("run/", tarfile.DIRTYPE, 0o755), tar_entry("var/", tarfile.DIRTYPE, 0o755),
                        tar_entry("var/run", tarfile.SYMTYPE, 0o777, "/run")])
GIT_HEAD = b"ref: refs/heads/main\n"
PAYLOAD_TAR = tar_bytes([
    tar_entry("var/run/act/", tarfile.DIRTYPE, 0o755), tar_entry("var/run/act/actions/", tarfile.DIRTYPE, 0o755),
    tar_entry("var/run/act/actions/broad/", tarfile.DIRTYPE, 0o755),
    tar_entry("var/run/act/actions/broad/.git/", tarfile.DIRTYPE, 0o755),
    (tar_entry("var/run/act/actions/broad/.git/HEAD"), GIT_HEAD),
    tar_entry("var/run/act/actions/broad/.git/HEAD.link", tarfile.LNKTYPE, 0o644,
              "var/run/act/actions/broad/.git/HEAD"),
])


def chmod_non_octal_dockerfile() -> str:
    """testChmodNonOctal builds its Dockerfile from a table: expected modes made by chmod(1) in the image,
    actual ones by COPY --chmod with the same symbolic mode, compared with ``stat -c %A``."""
    table = [("file", "f1", "go-w", False), ("file", "f2", "u=rw,g=r,o=r", False), ("file", "f3", "a+X", False),
             ("dir", "d1", "go-w", True), ("dir", "d2", "u+rw,g+r,o-x,o+w", True), ("dir", "d3", "a+X", True)]
    expected, copies, verify = [], [], []
    for src, dst, mode, is_dir in table:
        if is_dir:  # COPY copies a directory's contents: nest it once more
            expected.append(f"RUN mkdir -p /input/dirs/{dst} && cp -a /input/{src} /input/dirs/{dst}/{dst}")
            expected.append(f"RUN cp -a /input/dirs/{dst}/. /expected/ && chmod {mode} /expected/{dst}")
            copies.append(f"COPY --from=base --chmod={mode} /input/dirs/{dst} /")
        else:
            expected.append(f"RUN cp -a /input/{src} /expected/{dst} && chmod {mode} /expected/{dst}")
            copies.append(f"COPY --from=base --chmod={mode} /input/{src} /{dst}")
        verify.append(f'RUN [ "$(stat -c %A /actual/{dst})" = "$(stat -c %A /expected/{dst})" ]')
    return ("FROM @BUSYBOX@ as base\nRUN <<eot\n\tset -ex\n\tmkdir /input\n\ttouch /input/file\n"
            "\tchmod 666 /input/file\n\tmkdir /input/dir\n\tchmod 124 /input/dir\n\tmkdir /expected\neot\n"
            + "\n".join(expected) + "\n\nFROM scratch as result\n" + "\n".join(copies)
            + "\n\nFROM base\nCOPY --from=result / /actual/\n" + "\n".join(verify) + "\n")


COPY_CHOWN_EXISTING_DIR = """
# Set up files and directories with known ownership
FROM @BUSYBOX@ AS source
RUN touch /file && chown 100:200 /file \\
 && mkdir -p /dir/subdir \\
 && touch /dir/subdir/nestedfile \\
 && chown 100:200 /dir \\
 && chown 101:201 /dir/subdir \\
 && chown 102:202 /dir/subdir/nestedfile

FROM @BUSYBOX@ AS test_base
RUN mkdir -p /existingdir/existingsubdir \\
 && touch /existingdir/existingfile \\
 && chown 500:600 /existingdir \\
 && chown 501:601 /existingdir/existingsubdir \\
 && chown 501:601 /existingdir/existingfile

FROM test_base AS copy_from
COPY --from=source /file .
COPY --from=source /dir /dir
COPY --from=source /dir/. /existingdir

FROM test_base AS copy_from_chowned
COPY --from=source --chown=300:400 /file .
COPY --from=source --chown=300:400 /dir /dir
COPY --from=source --chown=300:400 /dir/. /existingdir
"""

COPY_RELATIVE = """
FROM @BUSYBOX@
WORKDIR /test1
WORKDIR test2
RUN sh -c "[ "$PWD" = '/test1/test2' ]"
COPY foo ./
RUN sh -c "[ $(cat /test1/test2/foo) = 'hello' ]"
ADD foo ./bar/baz
RUN sh -c "[ $(cat /test1/test2/bar/baz) = 'hello' ]"
COPY foo ./bar/baz2
RUN sh -c "[ $(cat /test1/test2/bar/baz2) = 'hello' ]"
WORKDIR ..
COPY foo ./
RUN sh -c "[ $(cat /test1/foo) = 'hello' ]"
COPY foo /test3/
RUN sh -c "[ $(cat /test3/foo) = 'hello' ]"
WORKDIR /test4
COPY . .
RUN sh -c "[ $(cat /test4/foo) = 'hello' ]"
WORKDIR /test5/test6
COPY foo ../
RUN sh -c "[ $(cat /test5/foo) = 'hello' ]"
"""

RELATIVE_PARENTS = """
FROM @BUSYBOX@ AS base
WORKDIR /test
RUN <<eot
\tset -ex
\tmkdir -p a/b/c/d/e
\tmkdir -p a/b2/c/d/e
\tmkdir -p a/b/c2/d/e
\tmkdir -p a/b/c2/d/e2
\ttouch a/b/c/d/foo
\ttouch a/b/c/d/e/bay
\ttouch a/b2/c/d/e/bar
\ttouch a/b/c2/d/e/baz
\ttouch a/b/c2/d/e2/baz
eot

FROM @BUSYBOX@ AS middle
COPY --from=base --parents /test/a/b/./c/d /out/
RUN <<eot
\tset -ex
\t[ -d /out/c/d/e ]
\t[ -f /out/c/d/foo ]
\t[ ! -d /out/a ]
\t[ ! -d /out/e ]
eot

FROM @BUSYBOX@ AS end
COPY --from=base --parents /test/a/b/c/d/. /out/
RUN <<eot
\tset -ex
\t[ -d /out/test/a/b/c/d/e ]
\t[ -f /out/test/a/b/c/d/foo ]
eot

FROM @BUSYBOX@ AS start
COPY --from=base --parents ./test/a/b/c/d /out/
RUN <<eot
\tset -ex
\t[ -d /out/test/a/b/c/d/e ]
\t[ -f /out/test/a/b/c/d/foo ]
eot

FROM @BUSYBOX@ AS double
COPY --from=base --parents /test/a/./b/./c /out/
RUN <<eot
\tset -ex
\t[ -d /out/b/c/d/e ]
\t[ -f /out/b/c/d/foo ]
eot

FROM @BUSYBOX@ AS wildcard
COPY --from=base --parents /test/a/./*/c /out/
RUN <<eot
\tset -ex
\t[ -d /out/b/c/d/e ]
\t[ -f /out/b2/c/d/e/bar ]
eot

FROM @BUSYBOX@ AS doublewildcard
COPY --from=base --parents /test/a/b*/./c/**/e /out/
RUN <<eot
\tset -ex
\t[ -d /out/c/d/e ]
\t[ -f /out/c/d/e/bay ] # via b
\t[ -f /out/c/d/e/bar ] # via b2
eot

FROM @BUSYBOX@ AS doubleinputs
COPY --from=base --parents /test/a/b/c*/./d/**/baz /test/a/b*/./c/**/bar /out/
RUN <<eot
\tset -ex
\t[ -f /out/d/e/baz ]
\t[ ! -f /out/d/e/bay ]
\t[ -f /out/d/e2/baz ]
\t[ -f /out/c/d/e/bar ] # via b2
eot
"""

PARENTS_MISSING_DIRECTORY = """
FROM @BUSYBOX@ AS base
WORKDIR /test
RUN <<eot
\tset -ex
\tmkdir -p a/b/c/d/e
\ttouch a/b/c/d/foo
\ttouch a/b/c/d/e/bay
eot

FROM @BUSYBOX@ AS normal
COPY --from=base --parents /test/a/b/c/d /out/
RUN <<eot
\tset -ex
\t[ -d /out/test/a/b/c/d/e ]
\t[ -f /out/test/a/b/c/d/e/bay ]
\t[ ! -d /out/e ]
\t[ ! -d /out/a ]
eot

FROM @BUSYBOX@ AS withpivot
COPY --from=base --parents /test/a/b/./c/d /out/
RUN <<eot
\tset -ex
\t[ -d /out/c/d/e ]
\t[ -f /out/c/d/foo ]
\t[ ! -d /out/a ]
\t[ ! -d /out/e ]
eot

FROM @BUSYBOX@ AS nonexistentfile
COPY --from=base --parents /test/nonexistent-file /out/

FROM @BUSYBOX@ AS wildcard-nonexistent
COPY --from=base --parents /test/a/b2*/c /out/
RUN <<eot
\tset -ex
\t[ -d /out ]
\t[ ! -d /out/a ]
eot

FROM @BUSYBOX@ AS wildcard-afterpivot
COPY --from=base --parents /test/a/b/./c2* /out/
RUN <<eot
\tset -ex
\t[ -d /out ]
\t[ ! -d /out/a ]
\t[ ! -d /out/c* ]
eot
"""

EXCLUDE_STAGES = """
# ignore all the image files
FROM scratch as builder1
COPY {from_base}--exclude=*/*.png --exclude=*/*.jpeg . /1

# ignore all document files
FROM scratch as builder2
COPY {from_base}--exclude=*/*.pdf --exclude=*/*.txt . /2

# ignore all mp3 files
FROM scratch as builder3
{add} {from_base}--exclude=*.mp3 dir3/ /3/

# Ignore everything, keeping only .mpeg files, using src as a wildcard.
FROM scratch as builder4
COPY {from_base}--exclude=*.mp3 --exclude=*.jpeg --exclude=*.png --exclude=*.pdf --exclude=*.txt dir* /4/

# Ignore everything, keeping only txt files.
FROM scratch as builder5
{add} {from_base}--exclude=*.mp* --exclude=*.jpeg --exclude=*.png --exclude=*.pdf dir* /5

# Exclude all files.
FROM scratch as builder6
{add} {from_base}--exclude=* dir* /6

FROM scratch
COPY --from=builder1 / /builder1
COPY --from=builder2 / /builder2
COPY --from=builder3 / /builder3
COPY --from=builder4 / /builder4
COPY --from=builder5 / /builder5
COPY --from=builder6 / /builder6
"""

EXCLUDE_CONTEXT: dict[str, str | bytes] = {
    "dir1/file-101.png": "2", "dir1/file-102.txt": "3", "dir1/file-103.jpeg": "4",
    "dir2/file-201.pdf": "6", "dir2/file-202.jpeg": "7", "dir2/file-203.png": "8",
    "dir3/file-301.mp3": "9", "dir3/file-302.mpeg": "10", "dir4/file-401.txt": "11",
}
EXCLUDE_LINKS = {"dir4/file-402.txt": "file-401.txt", "dir4/file-403.txt": "file-404.txt"}
EXCLUDED = (
    "builder1/1/dir1/file-101.png", "builder1/1/dir1/file-103.jpeg", "builder1/1/dir2/file-202.jpeg",
    "builder1/1/dir2/file-203.png",
    "builder2/2/dir1/file-102.txt", "builder2/2/dir2/file-201.pdf", "builder2/2/dir4/file-401.txt",
    "builder2/2/dir4/file-402.txt", "builder2/2/dir4/file-403.txt",
    "builder3/3/file-301.mp3",
    "builder4/4/file-101.png", "builder4/4/file-102.txt", "builder4/4/file-103.jpeg", "builder4/4/file-201.pdf",
    "builder4/4/file-202.jpeg", "builder4/4/file-203.png", "builder4/4/file-301.mp3", "builder4/4/dir4/file-401.txt",
    "builder4/4/dir4/file-402.txt", "builder4/4/dir4/file-403.txt",
    "builder5/5/file-101.png", "builder5/5/file-103.jpeg", "builder5/5/file-201.pdf", "builder5/5/file-202.jpeg",
    "builder5/5/file-203.png", "builder5/5/file-301.mp3", "builder5/5/file-302.mpeg",
)
KEPT = {
    "builder1/1/dir1/file-102.txt": F(content="3"), "builder1/1/dir2/file-201.pdf": F(content="6"),
    "builder1/1/dir3/file-301.mp3": F(content="9"), "builder1/1/dir3/file-302.mpeg": F(content="10"),
    "builder1/1/dir4/file-401.txt": F(content="11"), "builder1/1/dir4/file-402.txt": F(link="file-401.txt"),
    "builder1/1/dir4/file-403.txt": F(link="file-404.txt"),
    "builder2/2/dir1/file-101.png": F(content="2"), "builder2/2/dir1/file-103.jpeg": F(content="4"),
    "builder2/2/dir2/file-202.jpeg": F(content="7"), "builder2/2/dir2/file-203.png": F(content="8"),
    "builder2/2/dir3/file-301.mp3": F(content="9"), "builder2/2/dir3/file-302.mpeg": F(content="10"),
    "builder3/3/file-302.mpeg": F(content="10"),
    "builder4/4/file-302.mpeg": F(content="10"),
    "builder5/5/file-102.txt": F(content="3"), "builder5/5/file-401.txt": F(content="11"),
    "builder5/5/file-402.txt": F(link="file-401.txt"), "builder5/5/file-403.txt": F(link="file-404.txt"),
}

CASES: list[Case] = [
    # ------------------------------------------------------------------------ dockerfile_copy_test.go
    Case("testDockerfileCopyFromArgs", "FROM scratch\nCOPY --from=$FOO . .\n",
         fails_with="variable expansion is not supported for --from, define a new stage with FROM using ARG from "
                    "global scope as a workaround"),
    # Not in BuildKit's test: toCommand (convert.go) refuses any --from that word expansion would change, even
    # when the variable is declared.
    Case("testDockerfileCopyFromArgs-declared",
         "ARG FOO=base\nFROM @BUSYBOX@ AS base\nFROM scratch\nARG FOO\nCOPY --from=$FOO /bin/busybox /\n",
         fails_with="variable expansion is not supported for --from, define a new stage with FROM using ARG from "
                    "global scope as a workaround"),
    Case("testEmptyDestDir",
         'FROM @BUSYBOX@\nENV empty=""\nCOPY testfile $empty\nRUN [ "$(cat testfile)" == "contents0" ]\n',
         context={"testfile": "contents0"}, modes={"testfile": 0o600},
         files={"testfile": F(content="contents0", mode=0o600, uid=0, gid=0)}),
    Case("testPreserveDestDirSlash",
         'FROM @BUSYBOX@\nCOPY testfile /sample/\nRUN [ "$(cat /sample/testfile)" == "contents0" ]\n',
         context={"testfile": "contents0"}, modes={"testfile": 0o600},
         files={"sample": F(kind="dir", mode=0o755), "sample/testfile": F(content="contents0")}),
    Case("testCopyLinkDotDestDir",
         'FROM @BUSYBOX@\nWORKDIR /var/www\nCOPY --link testfile .\nRUN [ "$(cat testfile)" == "contents0" ]\n',
         context={"testfile": "contents0"}, modes={"testfile": 0o600},
         files={"var/www/testfile": F(content="contents0")}),
    Case("testCopyLinkEmptyDestDir",
         'FROM @BUSYBOX@\nWORKDIR /var/www\nENV empty=""\nCOPY --link testfile $empty\n'
         'RUN [ "$(cat testfile)" == "contents0" ]\n',
         context={"testfile": "contents0"}, modes={"testfile": 0o600},
         files={"var/www/testfile": F(content="contents0")}),
    # The Dockerfile is Dockerfile.web behind a symlink named Dockerfile, as in BuildKit's test. BuildKit checks
    # the owners with `stat` in RUN steps; here they are read from the image.
    Case("testCopyChownExistingDir-copy_from_chowned", COPY_CHOWN_EXISTING_DIR, dockerfile_name="Dockerfile.web",
         links={"Dockerfile": "Dockerfile.web"},
         files={"file": F(uid=300, gid=400), "dir": F(uid=300, gid=400), "dir/subdir": F(uid=300, gid=400),
                "dir/subdir/nestedfile": F(uid=300, gid=400),
                "existingdir": F(uid=500, gid=600), "existingdir/existingsubdir": F(uid=501, gid=601),
                "existingdir/existingfile": F(uid=501, gid=601),
                "existingdir/subdir": F(uid=300, gid=400), "existingdir/subdir/nestedfile": F(uid=300, gid=400)}),
    Case("testCopyChownExistingDir-copy_from", COPY_CHOWN_EXISTING_DIR, dockerfile_name="Dockerfile.web",
         links={"Dockerfile": "Dockerfile.web"}, target="copy_from",
         files={"file": F(uid=100, gid=200), "dir": F(uid=0, gid=0), "dir/subdir": F(uid=101, gid=201),
                "dir/subdir/nestedfile": F(uid=102, gid=202),
                "existingdir": F(uid=500, gid=600), "existingdir/existingsubdir": F(uid=501, gid=601),
                "existingdir/existingfile": F(uid=501, gid=601),
                "existingdir/subdir": F(uid=101, gid=201), "existingdir/subdir/nestedfile": F(uid=102, gid=202)}),
    Case("testEmptyWildcard", "FROM scratch\nCOPY foo nomatch* /\n", context={"foo": "contents0"},
         files={"foo": F(content="contents0")}),
    # Not in BuildKit's test: convert_copy.go sets AllowEmptyWildcard for every local source, so a wildcard that
    # matches nothing is no error even alone (solver/llbsolver/file/backend.go docopy returns early).
    Case("testEmptyWildcard-alone", "FROM scratch\nCOPY nomatch* /\nCOPY foo /\n", context={"foo": "contents0"},
         files={"foo": F(content="contents0")}),
    Case("testCopyChownCreateDest",
         "FROM @BUSYBOX@\nARG group\nENV owner user01\n" + adduser("user", 1000) + "\n" + adduser("user01", 1001)
         + '\nCOPY --chown=user:user . /dest\nCOPY --chown=${owner}:${group} . /dest01\n'
         'RUN [ "$(stat -c "%U %G" /dest)" == "user user" ]\nRUN [ "$(stat -c "%U %G" /dest01)" == "user01 user" ]\n',
         build_args=("group=user",),
         files={"dest": F(kind="dir", uid=1000, gid=1000), "dest/Dockerfile": F(uid=1000, gid=1000),
                "dest01": F(kind="dir", uid=1001, gid=1000), "dest01/Dockerfile": F(uid=1001, gid=1000)}),
    Case("testCopyThroughSymlinkContext", "FROM scratch\nCOPY link/foo .\n",
         context={"sub/foo": "contents"}, links={"link": "sub"}, modes={"sub": 0o700, "sub/foo": 0o600},
         files={"foo": F(content="contents", kind="file")}),
    Case("testCopyThroughSymlinkMultiStage",
         'FROM @BUSYBOX@ AS build\nRUN mkdir -p /out/sub && ln -s /out/sub /sub && ln -s out/sub /sub2 && '
         'echo -n "data" > /sub/foo\nFROM scratch\nCOPY --from=build /sub/foo .\nCOPY --from=build /sub2/foo bar\n',
         files={"foo": F(content="data"), "bar": F(content="data")}),
    # BuildKit only asserts success; the source symlink named by COPY is followed, a symlink inside a copied
    # directory is copied as a symlink.
    Case("testCopyFollowAllSymlinks", "FROM scratch\nCOPY foo /\nCOPY foo/sub bar\n",
         context={"bar": "bar-contents"}, links={"foo/sub": "../bar"}, modes={"foo": 0o700},
         files={"sub": F(link="../bar"), "bar": F(content="bar-contents", kind="file")}),
    Case("testCopySymlinks", "FROM scratch\nCOPY foo /\nCOPY sub/l* alllinks/\n",
         context={"bar": "bar-contents", "sub/lfile": "lfile-contents", "sub/subfile": "subfile-contents",
                  "sub/baz": "baz-contents"},
         links={"foo": "bar", "sub/l0": "subfile", "sub/l1": "second", "sub/second": "baz"},
         files={"foo": F(content="bar-contents"), "alllinks/l0": F(content="subfile-contents"),
                "alllinks/lfile": F(content="lfile-contents"), "alllinks/l1": F(content="baz-contents")},
         listing={"alllinks": ("l0", "l1", "lfile")}),
    # `stat -c "%u %G"` becomes "%u %g": the test image names gid 65534 "nogroup" first (see the docstring).
    Case("testCopyChown",
         'FROM @BUSYBOX@ AS base\nENV owner 1000\nRUN mkdir -m 0777 /out\nCOPY --chown=daemon foo /\n'
         'COPY --chown=1000:nobody bar /baz\nARG group\nCOPY --chown=${owner}:${group} foo /foobis\n'
         'RUN stat -c "%U %G" /foo  > /out/fooowner\nRUN stat -c "%u %g" /baz/sub  > /out/subowner\n'
         'RUN stat -c "%u %g" /foobis  > /out/foobisowner\nFROM scratch\nCOPY --from=base /out /\n',
         context={"foo": "foo-contents", "bar/sub": ""}, modes={"foo": 0o600, "bar": 0o700, "bar/sub": 0o600},
         build_args=("group=nobody",),
         files={"fooowner": F(content="daemon daemon\n"), "subowner": F(content="1000 65534\n"),
                "foobisowner": F(content="1000 65534\n")}),
    Case("testCopyChmod",
         "FROM @BUSYBOX@ AS base\n\nRUN mkdir -m 0777 /out\nCOPY --chmod=0644 foo /\nCOPY --chmod=777 bar /baz\n"
         "COPY --chmod=0 foo /foobis\nCOPY --chmod=777 foo /parent/foo\nCOPY --chmod=770 foo /parent/sub/foo\n\n"
         "ARG mode\nCOPY --chmod=${mode} foo /footer\n\n"
         'RUN stat -c "%04a" /foo  > /out/fooperm\nRUN stat -c "%04a" /baz  > /out/barperm\n'
         'RUN stat -c "%04a" /foobis  > /out/foobisperm\nRUN stat -c "%04a" /parent  > /out/parentperm\n'
         'RUN stat -c "%04a" /parent/sub  > /out/subparentperm\nRUN stat -c "%04a" /footer  > /out/footerperm\n'
         "FROM scratch\nCOPY --from=base /out /\n",
         context={"foo": "foo-contents", "bar": "bar-contents"}, modes={"foo": 0o600, "bar": 0o700},
         build_args=("mode=755",),
         files={"fooperm": F(content="0644\n"), "barperm": F(content="0777\n"), "foobisperm": F(content="0000\n"),
                "parentperm": F(content="0777\n"), "subparentperm": F(content="0770\n"),
                "footerperm": F(content="0755\n")}),
    Case("testCopyInvalidChmod-1", "FROM scratch\nCOPY --chmod=64a foo /\n", context={"foo": "foo-contents"},
         fails_with=r"invalid chmod parameter: '64a'\. it should be octal string and between 0 and 07777"),
    Case("testCopyInvalidChmod-2", "FROM scratch\nCOPY --chmod=10000 foo /\n", context={"foo": "foo-contents"},
         fails_with=r"invalid chmod parameter: '10000'\. it should be octal string and between 0 and 07777"),
    Case("testCopyOverrideFiles",
         "FROM scratch AS base\nCOPY sub sub\nCOPY sub sub\nCOPY files/foo.go dest/foo.go\n"
         "COPY files/foo.go dest/foo.go\nCOPY files dest\n",
         context={"sub/dir1/dir2/foo": "foo-contents", "files/foo.go": "foo.go-contents"},
         files={"sub/dir1/dir2/foo": F(content="foo-contents"), "dest/foo.go": F(content="foo.go-contents")}),
    Case("testCopyVarSubstitution", "FROM scratch AS base\nENV FOO bar\nCOPY $FOO baz\n",
         context={"bar": "bar-contents"}, files={"baz": F(content="bar-contents")}),
    Case("testCopyWildcards",
         "FROM scratch AS base\nCOPY *.go /gofiles/\nCOPY f*.go foo2.go\nCOPY sub/* /subdest/\n"
         "COPY sub/*/dir2/foo /subdest2/\nCOPY sub/*/dir2/foo /subdest3/bar\nCOPY . all/\nCOPY sub/dir1/ subdest4\n"
         "COPY sub/dir1/. subdest5\nCOPY sub/dir1 subdest6\n",
         context={"foo.go": "foo-contents", "bar.go": "bar-contents", "sub/dir1/dir2/foo": "foo-contents"},
         files={"gofiles/foo.go": F(content="foo-contents"), "gofiles/bar.go": F(content="bar-contents"),
                "foo2.go": F(content="foo-contents"), "subdest/dir2/foo": F(content="foo-contents"),
                "subdest2/foo": F(content="foo-contents"), "subdest3/bar": F(content="foo-contents"),
                "all/foo.go": F(content="foo-contents"), "subdest4/dir2/foo": F(content="foo-contents"),
                "subdest5/dir2/foo": F(content="foo-contents"), "subdest6/dir2/foo": F(content="foo-contents")}),
    Case("testCopyRelative", COPY_RELATIVE, context={"foo": "hello"},
         files={"test1/test2/foo": F(content="hello"), "test1/test2/bar/baz": F(content="hello"),
                "test1/test2/bar/baz2": F(content="hello"), "test1/foo": F(content="hello"),
                "test3/foo": F(content="hello"), "test4/foo": F(content="hello"), "test5/foo": F(content="hello")},
         config={"WorkingDir": "/test5/test6"}),
    Case("testCopyUnicodePath",
         "FROM @BUSYBOX@\nCOPY test-äöü.txt /\nCOPY test-%C3%A4%C3%B6%C3%BC.txt /\nCOPY test+aou.txt /\n",
         context={"test-äöü.txt": "foo", "test-%C3%A4%C3%B6%C3%BC.txt": "bar", "test+aou.txt": "baz"},
         files={"test-äöü.txt": F(content="foo"), "test-%C3%A4%C3%B6%C3%BC.txt": F(content="bar"),
                "test+aou.txt": F(content="baz")}),
    Case("testChmodNonOctal", chmod_non_octal_dockerfile()),
    # ------------------------------------------------------------------------- dockerfile_add_test.go
    Case("testDockerfileAddArchive-tar", "FROM scratch\nADD t.tar /\n", context={"t.tar": FOO_TAR},
         files={"foo": F(content="content0", mode=0o644)}, absent=("t.tar",)),
    Case("testDockerfileAddArchive-tar.gz", "FROM scratch\nADD t.tar.gz /\n", context={"t.tar.gz": FOO_TAR_GZ},
         files={"foo": F(content="content0")}, absent=("t.tar.gz",)),
    Case("testDockerfileAddArchiveWithImpliedParentDir", "FROM scratch\nADD t.tar.gz /\n",
         context={"t.tar.gz": DNF_TAR_GZ}, files={"etc/dnf/dnf.conf": F(content="content0")}),
    Case("testDockerfileAddArchiveThroughAbsoluteSymlink", "FROM scratch\nADD rootfs.tar /\nADD payload.tar /\n",
         context={"rootfs.tar": ROOTFS_TAR, "payload.tar": PAYLOAD_TAR},
         files={"var/run": F(link="/run"), "run/act/actions/broad/.git/HEAD": F(content=GIT_HEAD.decode()),
                "run/act/actions/broad/.git/HEAD.link": F(content=GIT_HEAD.decode(),
                                                          same_as="run/act/actions/broad/.git/HEAD")}),
    Case("testDockerfileAddChownArchive", "FROM scratch\nADD --chown=100:200 t.tar /out/\n",
         context={"t.tar": FOO_TAR},
         files={"out/foo": F(content="content0", uid=100, gid=200), "out": F(kind="dir", uid=100, gid=200)}),
    Case("testDockerfileAddArchiveWildcard", "FROM scratch\nADD *.tar /dest\n",
         context={"t.tar": FOO_TAR, "b.tar": BAR_TAR},
         files={"dest/foo": F(content="content0"), "dest/bar": F(content="content1")}),
    # "%u %G" -> "%u %g" as in testCopyChown.
    Case("testDockerfileAddChownExpand",
         'FROM @BUSYBOX@\nARG group\nENV owner 1000\nADD --chown=${owner}:${group} foo /\n'
         'RUN [ "$(stat -c "%u %g" /foo)" == "1000 65534" ]\n',
         context={"foo": "foo-contents"}, build_args=("group=nobody",),
         files={"foo": F(content="foo-contents", uid=1000, gid=65534)}),
    Case("testAddInvalidChmod-1", "FROM scratch\nADD --chmod=64a foo /\n", context={"foo": "foo-contents"},
         fails_with=r"invalid chmod parameter: '64a'\. it should be octal string and between 0 and 07777"),
    Case("testAddInvalidChmod-2", "FROM scratch\nADD --chmod=10000 foo /\n", context={"foo": "foo-contents"},
         fails_with=r"invalid chmod parameter: '10000'\. it should be octal string and between 0 and 07777"),
    # BuildKit asserts only that the build fails; convert_copy.go rejects --checksum on a local source.
    Case("testAddChecksum-NonHTTPSource",
         "FROM scratch\nADD --checksum=sha256:" + hashlib.sha256(b"local file").hexdigest() + " foo /tmp/foo\n",
         context={"foo": "local file"}, fails_with=""),
    # ----------------------------------------------------------------------- dockerfile_parents_test.go
    Case("testCopyParents",
         "FROM scratch\nCOPY --parents foo1/foo2/bar /\n\nWORKDIR /test\nCOPY --parents foo1/foo2/ba* .\n",
         context={"foo1/foo2/bar": "testing", "foo1/foo2/baz": "testing2"},
         files={"foo1/foo2/bar": F(content="testing"), "test/foo1/foo2/bar": F(content="testing"),
                "test/foo1/foo2/baz": F(content="testing2")}),
    *[Case(f"testCopyRelativeParents-{target}", RELATIVE_PARENTS, target=target)
      for target in ("middle", "end", "start", "double", "wildcard", "doublewildcard", "doubleinputs")],
    *[Case(f"testCopyParentsMissingDirectory-{target}", PARENTS_MISSING_DIRECTORY, target=target)
      for target in ("normal", "withpivot", "wildcard-nonexistent", "wildcard-afterpivot")],
    # BuildKit's regex is `failed to calculate checksum of ref.*: "/test/nonexistent-file": not found`; the part
    # before the path names BuildKit's cache machinery.
    Case("testCopyParentsMissingDirectory-nonexistentfile", PARENTS_MISSING_DIRECTORY, target="nonexistentfile",
         fails_with=r'"?/test/nonexistent-file"?:? not found'),
    # -------------------------------------------------------------------- dockerfile_dockerignore_test.go
    Case("testDockerignore", "FROM scratch\nCOPY . .\n",
         context={"foo": "foo-contents", "bar": "bar-contents", "baz": "baz-contents", "bay": "bay-contents",
                  ".dockerignore": "\nba*\nDockerfile\n!bay\n.dockerignore\n"},
         files={"foo": F(content="foo-contents"), "bay": F(content="bay-contents")},
         absent=(".dockerignore", "Dockerfile", "bar", "baz"), listing={"": ("bay", "foo")}),
    Case("testDockerignoreInvalid", "FROM scratch\nCOPY . .\n", context={".dockerignore": "!\n"}, fails_with=""),
    Case("testDockerignoreOverride", "FROM @BUSYBOX@\nCOPY . .\nRUN [ -f foo ] && [ ! -f bar ]\n",
         context={"Dockerfile.dockerignore": "\nbar\n", "Dockerfile2": "FROM @BUSYBOX@\nCOPY . .\n",
                  "Dockerfile2.dockerignore": "\nfoo\n", "foo": "contents0", "bar": "contents0"},
         files={"foo": F(content="contents0")}, absent=("bar",)),
    Case("testDockerignoreOverride-Dockerfile2", "FROM @BUSYBOX@\nCOPY . .\nRUN [ ! -f foo ] && [ -f bar ]\n",
         dockerfile_name="Dockerfile2", extra_args=("--dockerfile", "@CONTEXT@/Dockerfile2"),
         context={"Dockerfile": "FROM @BUSYBOX@\nCOPY . .\n", "Dockerfile.dockerignore": "\nbar\n",
                  "Dockerfile2.dockerignore": "\nfoo\n", "foo": "contents0", "bar": "contents0"},
         files={"bar": F(content="contents0")}, absent=("foo",)),
    # ----------------------------------------------------------------------- exclude_patterns_test.go
    # The Dockerfile sits in the context here (BuildKit reads it from another directory); no assertion sees it.
    Case("testExcludedFilesOnCopy", EXCLUDE_STAGES.format(from_base="", add="ADD"), context=EXCLUDE_CONTEXT,
         links=EXCLUDE_LINKS, files=KEPT, absent=EXCLUDED, listing={"builder6/6": ()}),
    # ------------------------------------------------------------------------ dockerfile_workdir_test.go
    Case("testWorkdirCreatesDir", "FROM scratch\nWORKDIR /foo\nWORKDIR /\n", files={"foo": F(kind="dir")},
         config={"WorkingDir": "/"}),
    Case("testWorkdirUser",
         "FROM @BUSYBOX@\n" + adduser("user", 1000) + '\nUSER user\nWORKDIR /mydir\n'
         'RUN [ "$(stat -c "%U %G" /mydir)" == "user user" ]\n',
         files={"mydir": F(kind="dir", uid=1000, gid=1000)}, config={"User": "user", "WorkingDir": "/mydir"}),
    Case("testWorkdirCopyIgnoreRelative",
         "FROM scratch AS base\nWORKDIR /foo\nCOPY Dockerfile /\nFROM scratch\n# relative path still loaded as "
         "absolute\nCOPY --from=base Dockerfile .\n",
         files={"Dockerfile": F(kind="file")}),
    Case("testWorkdirExists",
         "FROM @BUSYBOX@\n" + adduser("user", 1000) + '\nRUN mkdir /mydir && chown user:user /mydir\n'
         'WORKDIR /mydir\nRUN [ "$(stat -c "%U %G" /mydir)" == "user user" ]\n',
         files={"mydir": F(kind="dir", uid=1000, gid=1000)}),
]

XFAIL: dict[str, str] = {}




@pytest.mark.parametrize("case", params(CASES, XFAIL))
def test_buildkit_case(case: Case, lamina: Lamina, tmp_path: Path) -> None:
    problems = check_case(case, lamina, tmp_path)
    assert not problems, f"{case.name}:\n  " + "\n  ".join(problems)


def test_cases_are_unique() -> None:
    assert len({c.name for c in CASES}) == len(CASES)
    plain = {"testExcludedFilesOnCopy-git", "testWorkdirSourceDateEpochReproducible-build-arg"}
    assert set(XFAIL) <= {c.name for c in CASES} | set(URL_CASES) | plain


# ---------------------------------------------------------------------------------------------------------------
# Cases that need the loopback HTTP server, or compare bytes and mtimes (archives kept as they are)


class _Served:
    """What the loopback server answers: path -> (body, Last-Modified as a Unix time or None)."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, int | None]] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path)


class _Handler(BaseHTTPRequestHandler):
    served: _Served

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self, body: bool) -> None:
        self.served.requests.append((self.command, self.path))
        entry = self.served.files.get(self.path.split("?", 1)[0])
        if entry is None:
            self.send_error(404)
            return
        data, last_modified = entry
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest()[:16] + '"')
        if last_modified is not None:
            self.send_header("Last-Modified", formatdate(last_modified, usegmt=True))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_GET(self) -> None:
        self._answer(True)

    def do_HEAD(self) -> None:
        self._answer(False)


MOD_TIME = int(time.time()) - 24 * 3600  # BuildKit: a day ago, to avoid a false positive with the current time
CONTENT1 = b"content1"


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A loopback HTTP server with BuildKit's responses: /foo (content1), / (content2 with Last-Modified),
    /t.tar.gz (a gzipped tar holding foo)."""
    served = _Served()
    served.files.update({"/foo": (CONTENT1, None), "/": (b"content2", MOD_TIME), "/t.tar.gz": (FOO_TAR_GZ, None)})
    handler = type("Handler", (_Handler,), {"served": served})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# name -> (Dockerfile with {url}, context, expected file bytes, expected mtimes, fails, build args, other Case fields)
URL_CASES: dict[str, tuple[str, Mapping[str, str | bytes], Mapping[str, bytes], Mapping[str, int], bool,
                           tuple[str, ...], Mapping[str, F]]] = {
    "testDockerfileADDFromURL-foo": ("FROM scratch\nADD {url}/foo /dest/\n", {}, {"dest/foo": CONTENT1}, {}, False,
                                     (), {"dest/foo": F(mode=0o600)}),
    # A URL with no file name is saved as __unnamed__, with the Last-Modified time as its mtime.
    "testDockerfileADDFromURL-unnamed": ("FROM scratch\nADD {url}/ /dest/\n", {}, {"dest/__unnamed__": b"content2"},
                                         {"dest/__unnamed__": MOD_TIME}, False, (), {}),
    "testDockerfileAddArchive-unpack-false": ("FROM scratch\nADD --unpack=false t.tar.gz /\n",
                                              {"t.tar.gz": FOO_TAR_GZ}, {"t.tar.gz": FOO_TAR_GZ}, {}, False, (), {}),
    "testDockerfileAddArchive-copy": ("FROM scratch\nCOPY t.tar.gz /\n", {"t.tar.gz": FOO_TAR_GZ},
                                      {"t.tar.gz": FOO_TAR_GZ}, {}, False, (), {}),
    "testDockerfileAddArchive-url": ("FROM scratch\nADD {url}/t.tar.gz /\n", {}, {"t.tar.gz": FOO_TAR_GZ}, {}, False,
                                     (), {}),
    "testDockerfileAddArchive-url-unpack": ("FROM scratch\nADD --unpack=true {url}/t.tar.gz /dest/\n", {},
                                            {"dest/foo": CONTENT0}, {}, False, (), {}),
    "testDockerfileAddArchive-url-newname": ("FROM scratch\nADD {url}/t.tar.gz /newname.tar.gz\n", {},
                                             {"newname.tar.gz": FOO_TAR_GZ}, {}, False, (), {}),
    "testAddURLChmod": (
        ("FROM @BUSYBOX@ AS build\nADD --chmod=644 {url}/foo /tmp/foo1\nADD --chmod=755 {url}/foo /tmp/foo2\n"
        "ADD --chmod=0413 {url}/foo /tmp/foo3\n\nARG mode\nADD --chmod=${{mode}} {url}/foo /tmp/foo4\n\n"
        'RUN stat -c "%04a" /tmp/foo1 >> /dest && \\\n\tstat -c "%04a" /tmp/foo2 >> /dest && \\\n'
        '\tstat -c "%04a" /tmp/foo3 >> /dest && \\\n\tstat -c "%04a" /tmp/foo4 >> /dest\n\n'
        "FROM scratch\nCOPY --from=build /dest /dest\n"),
        {}, {"dest": b"0644\n0755\n0413\n0400\n"}, {}, False, ("mode=400",), {}),
    "testAddChecksum-Valid": ("FROM scratch\nADD --checksum=" + sha256_digest(CONTENT1) + " {url}/foo /tmp/foo\n", {},
                              {"tmp/foo": CONTENT1}, {}, False, (), {}),
    "testAddChecksum-DigestFromEnv": ("FROM scratch\nENV DIGEST=" + sha256_digest(CONTENT1) + "\nENV LINK={url}/foo\n"
                                      "ADD --checksum=${{DIGEST}} ${{LINK}} /tmp/foo\n", {}, {"tmp/foo": CONTENT1}, {},
                                      False, (), {}),
    # The failing ones: BuildKit asserts only that the build fails.
    "testAddChecksum-DigestMismatch": ("FROM scratch\nADD --checksum=" + sha256_digest(b"") + " {url}/foo /tmp/foo\n",
                                       {}, {}, {}, True, (), {}),
    "testAddChecksum-DigestWithKnownButUnsupportedAlgoName": (
        "FROM scratch\nADD --checksum=md5:7e55db001d319a94b0b713529a756623 {url}/foo /tmp/foo\n", {}, {}, {}, True,
        (), {}),
    "testAddChecksum-DigestWithUnknownAlgoName": (
        "FROM scratch\nADD --checksum=unknown:" + hashlib.sha256(CONTENT1).hexdigest() + " {url}/foo /tmp/foo\n", {},
        {}, {}, True, (), {}),
    "testAddChecksum-DigestWithoutAlgoName": (
        "FROM scratch\nADD --checksum=" + hashlib.sha256(CONTENT1).hexdigest() + " {url}/foo /tmp/foo\n", {}, {}, {},
        True, (), {}),
}


@pytest.mark.parametrize("name", [pytest.param(n, id=n, marks=pytest.mark.xfail(strict=True, reason=XFAIL[n]))
                                  if n in XFAIL else pytest.param(n, id=n) for n in URL_CASES])
def test_buildkit_url_case(name: str, server: str, lamina: Lamina, tmp_path: Path) -> None:
    dockerfile, context, blobs, mtimes, fails, build_args, files = URL_CASES[name]
    case = Case(name, dockerfile.format(url=server), context=context, build_args=build_args, files=files,
                fails_with="" if fails else None)
    if fails:
        problems = check_case(case, lamina, tmp_path)
        assert not problems, f"{name}:\n  " + "\n  ".join(problems)
        return
    run, dest = build_case(case, lamina, tmp_path)
    assert run.returncode == 0, run.describe()
    image = unpack(f"docker://{dest}", tmp_path / "pulled")
    problems = check_files(case, image) + check_config(case, image.config)
    for rel, data in blobs.items():
        if not image.exists(rel):
            problems.append(f"{rel}: missing")
        elif (got := image.path(rel).read_bytes()) != data:
            problems.append(f"{rel}: {got[:60]!r}, expected {data[:60]!r}")
    for rel, mtime in mtimes.items():
        if image.exists(rel) and int(image.lstat(rel).st_mtime) != mtime:
            problems.append(f"{rel}: mtime {int(image.lstat(rel).st_mtime)}, expected {mtime}")
    assert not problems, f"{name}:\n  " + "\n  ".join(problems)


# ---------------------------------------------------------------------------------------------------------------
# Tests of several builds, or of contexts a Case cannot describe


def _read_from_image(dest: str, rel: str, tmp: Path) -> bytes:
    return unpack(f"docker://{dest}", tmp).path(rel).read_bytes()


def test_copy_wildcard_cache(lamina: Lamina, tmp_path: Path) -> None:
    """testCopyWildcardCache: with the layer cache, a change to a file the wildcard does not match keeps the RUN
    after that COPY cached; a change to a matched file runs it again."""
    dockerfile = (f"FROM {lamina.images.busybox} AS base\nCOPY foo* files/\n"
                  "RUN cat /dev/urandom | head -c 100 | sha256sum > unique\n"
                  "COPY bar files/\nFROM scratch\nCOPY --from=base unique /\n")
    context = write_context(tmp_path / "context", dockerfile,
        {"foo1": "foo1-data", "foo2": "foo2-data", "bar": "bar-data"})
    cache = f"{lamina.registry.host}/e2e/buildkit-wildcard-cache-{os.getpid()}-{time.monotonic_ns()}"

    def build(step: int) -> bytes:
        dest = lamina.dest("buildkit-wildcard-cache")
        lamina.build(context, "--destination", dest, "--cache", "--cache-repo", cache).check()
        return _read_from_image(dest, "unique", tmp_path / f"pulled{step}")

    first = build(1)
    (context / "bar").write_text("bar-data-mod")
    assert build(2) == first
    (context / "foo2").write_text("foo2-data-mod")
    assert build(3) != first


def test_copy_socket(lamina: Lamina, tmp_path: Path) -> None:
    """testCopySocket: a socket in the context is copied as a regular file."""
    context = write_context(tmp_path / "context", "FROM scratch\nCOPY . /\n")
    short = Path(tempfile.mkdtemp(prefix="bk-sock-"))  # AF_UNIX paths are limited to 108 bytes
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(short / "socket.sock"))
        sock.close()
        os.chmod(short / "socket.sock", 0o600)
        os.rename(short / "socket.sock", context / "socket.sock")
    finally:
        shutil.rmtree(short)
    dest = lamina.dest("buildkit-copy-socket")
    run = lamina.build(context, "--destination", dest)
    assert run.returncode == 0, run.describe()
    image = unpack(f"docker://{dest}", tmp_path / "pulled")
    problems = check_files(Case("testCopySocket", "", files={"socket.sock": F(kind="file")}), image)
    assert not problems, problems


def test_excluded_files_on_copy_from_git(lamina: Lamina, tmp_path: Path) -> None:
    """testExcludedFilesOnCopy, second half: the same files cloned by ADD from a Git repository over (dumb) HTTP,
    then copied with COPY --from --exclude."""
    if shutil.which("git") is None:
        pytest.fail("git is not installed (apt-get install git)", pytrace=False)
    repo = write_context(tmp_path / "repo", "", EXCLUDE_CONTEXT)
    (repo / "Dockerfile").unlink()
    for rel, target in EXCLUDE_LINKS.items():
        os.symlink(target, repo / rel)
    env = {**os.environ, "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test", "GIT_COMMITTER_NAME": "test",
           "GIT_COMMITTER_EMAIL": "test", "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(tmp_path)}
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "0.1"], ["tag", "0.1"],
                    ["update-server-info"]):
        subprocess.run(["git", *command], cwd=repo, env=env, check=True, capture_output=True)
    served = _Served()
    for path in (repo / ".git").rglob("*"):
        if path.is_file():
            served.files["/.git/" + str(path.relative_to(repo / ".git"))] = (path.read_bytes(), None)
    handler = type("Handler", (_Handler,), {"served": served})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        stages = EXCLUDE_STAGES.format(from_base="--from=base ", add="COPY")
        dockerfile = f'FROM scratch AS base\nARG REPO="{url}/.git"\nARG TAG="0.1"\n' \
                     "ADD --keep-git-dir=true ${REPO}#${TAG} /\n" + stages
        case = Case("testExcludedFilesOnCopy-git", dockerfile, files=KEPT, absent=EXCLUDED,
                    listing={"builder6/6": ()})
        problems = check_case(case, lamina, tmp_path)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
    assert not problems, "\n  ".join(problems)


@pytest.mark.parametrize("how", [
    "build-arg",
    "environment"])
def test_workdir_source_date_epoch_reproducible(how: str, lamina: Lamina, tmp_path: Path) -> None:
    """testWorkdirSourceDateEpochReproducible: two builds of ``WORKDIR /mydir`` with the same SOURCE_DATE_EPOCH,
    seconds apart, give the same image. BuildKit passes it as a build argument; lamina's documented way is the
    SOURCE_DATE_EPOCH environment variable, checked too."""
    epoch = "1673364896"  # 2023-01-10 15:34:56 UTC
    context = write_context(tmp_path / "context", f"FROM {lamina.images.busybox}\nWORKDIR /mydir\n")
    digests = []
    for step in (1, 2):
        digest_file = tmp_path / f"digest{step}"
        args = ["--destination", lamina.dest("buildkit-workdir-epoch"), "--digest-file", str(digest_file)]
        if how == "build-arg":
            run = lamina.build(context, *args, "--build-arg", f"SOURCE_DATE_EPOCH={epoch}")
        else:
            run = lamina.build(context, *args, extra_env={"SOURCE_DATE_EPOCH": epoch})
        assert run.returncode == 0, run.describe()
        digests.append(digest_file.read_text().strip())
        time.sleep(1.5)
    assert digests[0] == digests[1]
