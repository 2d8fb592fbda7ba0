"""Docker's semantics where real Dockerfiles found lamina wrong (issue 11), each checked against BuildKit's source
(moby/buildkit 73ed6825: frontend/dockerfile/dockerfile2llb/convert_copy.go, solver/llbsolver/file/backend.go,
the vendored tonistiigi/fsutil copy) and its integration tests, with a test that failed before the fix. The cache
keys of RUN bind mounts and COPY --link are in tests/integration/test_layer_cache.py, the verbatim console output
in tests/unit/test_console.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import Lamina
from tests.e2e.table_support import Case, F, check_case

pytestmark = pytest.mark.e2e

CASES: list[Case] = [
    # COPY --link --chmod: BuildKit links only without --chmod (dispatchCopy: ``cfg.link && cfg.chmod == ""``), so
    # the copy lands on the stage and /etc, which exists, keeps 0755. lamina copied into an empty directory, made
    # /etc there with the --chmod mode, and the layer turned the image's /etc into 0640: USER nobody could no longer
    # read /etc/passwd.
    Case(
        "copy-link-chmod-leaves-existing-parents",
        """
        FROM @BUSYBOX@
        COPY --link --chmod=0640 b.txt /etc/app/
        USER nobody
        RUN cat /etc/passwd > /tmp/readable
        """,
        context={"b.txt": "b\n"},
        files={"etc": F(mode=0o755, uid=0, gid=0), "etc/app": F(mode=0o640, uid=0, gid=0),
               "etc/app/b.txt": F(content="b\n", mode=0o640, uid=0, gid=0), "tmp/readable": F(uid=65534)},
    ),
    # Parents COPY creates take --chmod's mode in BuildKit (fsutil's Copy makes them with ``ci.Mode``; BuildKit's
    # testCopyChmod: ``COPY --chmod=770 foo /parent/sub/foo`` gives /parent/sub 0770) and --chown's owner.
    Case(
        "copy-chmod-created-parents-as-buildkit-testCopyChmod",
        """
        FROM @BUSYBOX@
        COPY --chmod=777 foo /parent/foo
        COPY --chmod=770 foo /parent/sub/foo
        COPY --chmod=0640 --chown=33:33 foo /newdir/deeper/
        COPY foo /plain/dir/
        """,
        context={"foo": "foo\n"},
        files={"parent": F(mode=0o777), "parent/sub": F(mode=0o770), "parent/sub/foo": F(mode=0o770),
               "newdir": F(mode=0o640, uid=33, gid=33), "newdir/deeper": F(mode=0o640, uid=33, gid=33),
               "newdir/deeper/foo": F(mode=0o640, uid=33, gid=33), "plain": F(mode=0o755, uid=0, gid=0),
               "plain/dir/foo": F(content="foo\n", uid=0, gid=0)},
    ),
    # COPY --from keeps the owners the files have in the source stage (fsutil copies with the identity chowner when
    # --chown is not given); only files from the build context become 0:0. The directory a directory's contents are
    # copied into is made by the copy, as root (BuildKit's testCopyChownExistingDir: /dir is 0:0).
    Case(
        "copy-from-stage-keeps-owners",
        """
        FROM @BUSYBOX@ AS b
        RUN touch /f && chown 123:456 /f \\
            && mkdir -p /d/sub && touch /d/sub/g && ln -s g /d/sub/link && chown -R 7:8 /d && chown -h 9:10 /d/sub/link
        FROM @BUSYBOX@
        COPY --from=b /f /f
        COPY --from=b /d /d2
        COPY --from=b --chown=1:2 /f /f-chowned
        COPY --from=b --chmod=600 /f /f-chmod
        COPY ctx.txt /ctx.txt
        """,
        context={"ctx.txt": "from the context\n"},
        files={"f": F(uid=123, gid=456), "d2": F(kind="dir", uid=0, gid=0, mode=0o755), "d2/sub": F(uid=7, gid=8),
               "d2/sub/g": F(uid=7, gid=8), "d2/sub/link": F(link="g", uid=9, gid=10),
               "f-chowned": F(uid=1, gid=2), "f-chmod": F(uid=123, gid=456, mode=0o600),
               "ctx.txt": F(uid=0, gid=0)},
    ),
    # A directory copied onto one that exists leaves its mode and owner alone (fsutil copies a directory's metadata
    # only when it creates it): lamina made /etc 0700 from a context's rootfs/etc before.
    Case(
        "copy-onto-existing-directories-keeps-their-mode-and-owner",
        """
        FROM @BUSYBOX@
        RUN mkdir -m 0750 /srv && chown 33:33 /srv
        COPY rootfs/ /
        USER nobody
        RUN cat /etc/passwd > /tmp/readable
        """,
        context={"rootfs/etc/app.conf": "x\n", "rootfs/srv/data/f": "f\n"},
        modes={"rootfs/etc": 0o700, "rootfs/srv": 0o777, "rootfs/srv/data": 0o700},
        files={"etc": F(mode=0o755, uid=0, gid=0), "etc/app.conf": F(content="x\n", uid=0, gid=0),
               "srv": F(mode=0o750, uid=33, gid=33), "srv/data": F(mode=0o700, uid=0, gid=0),
               "tmp/readable": F(uid=65534)},
    ),
    # BuildKit's testEmptyWildcard: a wildcard that matches nothing is allowed (AllowEmptyWildcard: true for
    # every local source in convert_copy.go), for ADD too; a path without wildcards must exist.
    Case(
        "empty-wildcard-as-buildkit-testEmptyWildcard",
        """
        FROM @BUSYBOX@
        COPY foo nomatch* /dst/
        COPY nomatch* /none/
        ADD foo nomatch?.tar /added/
        """,
        context={"foo": "contents0"},
        files={"dst/foo": F(content="contents0"), "added/foo": F(content="contents0")},
        absent=("none", "dst/nomatch"),
    ),
    Case(
        "missing-plain-source-is-still-an-error",
        """
        FROM @BUSYBOX@
        COPY foo nomatch* missing.txt /dst/
        """,
        context={"foo": "contents0"},
        fails_with=r"Dockerfile:2:\d+: .*missing\.txt: not found in the build context",
    ),
    # BuildKit (since Dockerfile frontend 1.8, commit 47a52a17) expands only an ARG's default, never its name:
    # ``dispatch`` skips ArgCommand.Expand and dispatchArg adds the name as written. lamina does the same and says so
    # where the ARG is written.
    Case(
        "arg-name-is-not-expanded-and-warned",
        """
        FROM @BUSYBOX@
        ENV name=v
        ARG ${name}=expanded
        RUN ["env"]
        RUN echo "v=[$v]" > /v.txt
        """,
        files={"v.txt": F(content="v=[]\n")},
        # the exec-form RUN shows the environment as the process gets it (a shell would drop the odd name)
        output_has=("\n${name}=expanded\n",
                    ("Dockerfile:3: ARG ${name}: variables are not expanded in an ARG name (as in BuildKit); "
                     "this declares an ARG named '${name}'")),
    ),
    # RUN can resolve its own hostname, as BuildKit's hosts file maps it (executor/oci/hosts.go: "127.0.0.1
    # localhost <hostname>"): lamina bound the host's /etc/hosts, where "lamina" is unknown, so Java's
    # InetAddress.getLocalHost() and ``hostname -f`` failed in RUN.
    Case(
        "run-resolves-its-own-hostname",
        """
        FROM @DEBIAN@
        RUN getent hosts "$(hostname)" | cut -d' ' -f1 > /resolved
        """,
        files={"resolved": F(content="127.0.0.1\n")},
    ),
    # What a command prints is shown verbatim: ":x:" was rendered as an emoji and "[red]" read as markup.
    Case(
        "run-output-is-verbatim",
        """
        FROM @BUSYBOX@
        RUN echo 'svc:x:1001:1001::/home/svc:/bin/sh' && echo '[red]not red[/red] :smile:'
        """,
        output_has=("svc:x:1001:1001::/home/svc:/bin/sh\n", "[red]not red[/red] :smile:\n"),
    ),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in CASES])
def test_docker_semantics(case: Case, lamina: Lamina, tmp_path: Path) -> None:
    problems = check_case(case, lamina, tmp_path)
    assert not problems, f"{case.name}:\n  " + "\n  ".join(problems)
