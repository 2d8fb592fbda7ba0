"""A table of Dockerfiles built on the real busybox and Debian bases, each checked against what ``docker build``
(BuildKit) makes of it: the unpacked tree (content, mode, owner, links, deletions), the raw image config (with
the Docker-only fields: Healthcheck, Shell, OnBuild, ArgsEscaped) and the history.

Expectations come from Docker's Dockerfile reference (https://docs.docker.com/reference/dockerfile/) and from
BuildKit's Dockerfile frontend (moby/buildkit frontend/dockerfile/dockerfile2llb: convert.go, convert_copy.go,
convert_expose.go, image.go). History texts follow ``commitToHistory`` there:

* RUN: ``RUN [|N K=V ...] <argv joined by spaces> # buildkit``, the ``|N`` prefix listing every ARG declared in
  the stage, in declaration order, an ARG without a value as ``K=`` (``runCommandString``);
* COPY: ``COPY [--parents] [--chown=..] [--chmod=..] <sources> <dest> # buildkit``; --from, --link and
  --exclude are not written, a JSON-form COPY is written like the plain form (``dispatchCopy``);
* ENV/LABEL ``K=V`` pairs, ``WORKDIR <absolute path>`` (with a layer), ``USER x``, ``VOLUME [/a /b]``,
  ``SHELL [/bin/sh -c]`` (Go's %v), ``CMD``/``ENTRYPOINT`` with Go's %q, ``MAINTAINER x``;
* ONBUILD writes no history entry at all (``dispatchOnbuild`` only appends to Config.OnBuild).

Busybox base: uid/gid from tests/support/baseimages.py (www-data 33:33, staff 50 with www-data as a member,
nobody 65534:65534); one history entry, CMD ["sh"], PATH only.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import Lamina
from tests.e2e.table_support import ABSENT, Case, F, H, check_case
from tests.support.baseimages import DEFAULT_PATH, GROUP, PASSWD

pytestmark = pytest.mark.e2e

PATH_ENV = f"PATH={DEFAULT_PATH}"
SEC = 1_000_000_000

CASES: list[Case] = [
    # ------------------------------------------------------------------------------------------------ FROM
    Case(
        "from-scratch",
        """
        FROM scratch
        COPY hello.txt /hello.txt
        """,
        context={"hello.txt": "hello\n"}, modes={"hello.txt": 0o644},
        files={"hello.txt": F(content="hello\n", mode=0o644, uid=0, gid=0)},
        listing={"": ("hello.txt",)},
        # BuildKit's emptyImage(): WorkingDir "/" and the default PATH.
        config={"Env": [PATH_ENV], "WorkingDir": "/", "Cmd": ABSENT, "Entrypoint": ABSENT},
        top={"architecture": "amd64", "os": "linux"},
        base_history=0, history=(H("COPY hello.txt /hello.txt # buildkit", False),),
    ),
    Case(
        "from-previous-stage",
        """
        FROM @BUSYBOX@ AS base
        RUN echo base > /base.txt
        LABEL stage=base
        FROM base
        RUN echo child > /child.txt && cat /base.txt >> /child.txt
        """,
        files={"base.txt": F(content="base\n"), "child.txt": F(content="child\nbase\n")},
        config={"Labels": {"stage": "base"}, "Cmd": ["sh"]},
        base_history=1,
        history=(H("RUN /bin/sh -c echo base > /base.txt # buildkit", False), H("LABEL stage=base", True),
                 H("RUN /bin/sh -c echo child > /child.txt && cat /base.txt >> /child.txt # buildkit", False)),
    ),
    Case(
        "from-arg-default",
        """
        ARG TAG=latest
        FROM @BUSYBOX_REPO@:${TAG}
        RUN echo "tag=[${TAG:-not-in-stage}]" > /tag.txt
        """,
        # An ARG before FROM is only visible to FROM lines unless re-declared in the stage.
        files={"tag.txt": F(content="tag=[not-in-stage]\n"), "bin/busybox": F(kind="file")},
        config={"Cmd": ["sh"]}, env=(PATH_ENV,), env_lacks=("TAG",),
        history=(H('RUN /bin/sh -c echo "tag=[${TAG:-not-in-stage}]" > /tag.txt # buildkit', False),),
    ),
    Case(
        "from-arg-overridden-by-build-arg",
        """
        ARG BASE=@DEBIAN@
        FROM ${BASE}
        RUN echo built > /built.txt
        """,
        build_args=("BASE=@BUSYBOX@",),
        files={"built.txt": F(content="built\n"), "bin/busybox": F(kind="file")},
        absent=("etc/debian_version",),
        config={"Cmd": ["sh"]},
        history=(H("RUN /bin/sh -c echo built > /built.txt # buildkit", False),),
    ),
    Case(
        "from-platform-buildplatform",
        """
        FROM --platform=$BUILDPLATFORM @BUSYBOX@ AS build
        ARG TARGETARCH
        ARG BUILDPLATFORM
        RUN echo "$TARGETARCH on $BUILDPLATFORM" > /arch.txt
        FROM @BUSYBOX@
        COPY --from=build /arch.txt /arch.txt
        """,
        files={"arch.txt": F(content="amd64 on linux/amd64\n")},
        top={"architecture": "amd64", "os": "linux"},
        # BuildKit does not write --from into the history (dispatchCopy's commit message).
        history=(H("COPY /arch.txt /arch.txt # buildkit", False),),
    ),
    # ------------------------------------------------------------------------------------------------ RUN
    Case(
        "run-shell-and-exec-form",
        """
        FROM @BUSYBOX@
        ENV WHO=world
        RUN echo "hello $WHO" > /shell.txt
        RUN ["/bin/sh", "-c", "echo \\"$0:$1:$WHO\\" > /exec.txt", "zero", "one"]
        RUN ["/bin/mkdir", "-p", "/literal/$WHO"]
        """,
        # Exec form: no variable expansion by the builder; the process gets the environment.
        files={"shell.txt": F(content="hello world\n"), "exec.txt": F(content="zero:one:world\n"),
               "literal/$WHO": F(kind="dir")},
        absent=("literal/world",),
        history=(H("ENV WHO=world", True),
                 H('RUN /bin/sh -c echo "hello $WHO" > /shell.txt # buildkit', False),
                 H('RUN /bin/sh -c echo "$0:$1:$WHO" > /exec.txt zero one # buildkit', False),
                 H("RUN /bin/mkdir -p /literal/$WHO # buildkit", False)),
    ),
    Case(
        "run-deletes-files-whiteouts",
        """
        FROM @BUSYBOX@
        RUN rm /etc/group && rm -r /home
        RUN mkdir -p /gone/sub && echo x > /gone/sub/f && echo keep > /kept.txt
        RUN rm -r /gone
        """,
        files={"kept.txt": F(content="keep\n"), "etc/passwd": F(content=PASSWD)},
        absent=("etc/group", "home", "gone"),
        layer_entries={1: ("etc/.wh.group", ".wh.home"), 3: (".wh.gone",)},
        history=(H("RUN /bin/sh -c rm /etc/group && rm -r /home # buildkit", False),
                 H("RUN /bin/sh -c mkdir -p /gone/sub && echo x > /gone/sub/f && echo keep > /kept.txt # buildkit",
                   False),
                 H("RUN /bin/sh -c rm -r /gone # buildkit", False)),
    ),
    Case(
        "run-hard-and-symbolic-links",
        """
        FROM @BUSYBOX@
        RUN mkdir /l && echo data > /l/a && ln /l/a /l/b && ln -s a /l/rel && ln -s /l/a /l/abs \\
            && ln -s /nowhere /l/dangling && chmod 0640 /l/a && chown 33:50 /l/a
        """,
        files={"l/a": F(content="data\n", mode=0o640, uid=33, gid=50), "l/b": F(same_as="l/a", content="data\n"),
               "l/rel": F(link="a"), "l/abs": F(link="/l/a"), "l/dangling": F(link="/nowhere")},
        history=(H("RUN /bin/sh -c mkdir /l", False, exact=False),),
    ),
    # ------------------------------------------------------------------------------------------------ SHELL, CMD, ENTRYPOINT
    Case(
        "shell-applies-to-run-cmd-entrypoint",
        """
        FROM @BUSYBOX@
        SHELL ["/bin/env", "MARK=via-shell", "/bin/sh", "-c"]
        RUN echo "$MARK" > /mark.txt
        ENTRYPOINT exec echo entry
        CMD echo cmd
        """,
        files={"mark.txt": F(content="via-shell\n")},
        config={"Shell": ["/bin/env", "MARK=via-shell", "/bin/sh", "-c"],
                "Entrypoint": ["/bin/env", "MARK=via-shell", "/bin/sh", "-c", "exec echo entry"],
                "Cmd": ["/bin/env", "MARK=via-shell", "/bin/sh", "-c", "echo cmd"]},
        history=(H("SHELL [/bin/env MARK=via-shell /bin/sh -c]", True),  # BuildKit: fmt.Sprintf("SHELL %v")
                 H('RUN /bin/env MARK=via-shell /bin/sh -c echo "$MARK" > /mark.txt # buildkit', False),
                 H('ENTRYPOINT ["/bin/env" "MARK=via-shell" "/bin/sh" "-c" "exec echo entry"]', True),
                 H('CMD ["/bin/env" "MARK=via-shell" "/bin/sh" "-c" "echo cmd"]', True)),
    ),
    Case(
        "entrypoint-resets-inherited-cmd",
        """
        FROM @BUSYBOX@
        ENTRYPOINT ["/bin/echo", "hi there"]
        """,
        # Reference (ENTRYPOINT): "If CMD is defined from the base image, setting ENTRYPOINT will reset CMD to an
        # empty value."
        config={"Entrypoint": ["/bin/echo", "hi there"], "Cmd": ABSENT},
        history=(H('ENTRYPOINT ["/bin/echo" "hi there"]', True),),
    ),
    Case(
        "cmd-after-entrypoint-is-kept",
        """
        FROM @BUSYBOX@
        ENTRYPOINT ["/bin/echo"]
        CMD ["a", "b"]
        """,
        # BuildKit's dispatchCmd sets ArgsEscaped=true on every CMD (a Docker-only field, kept for compatibility).
        config={"Entrypoint": ["/bin/echo"], "Cmd": ["a", "b"], "ArgsEscaped": True},
        history=(H('ENTRYPOINT ["/bin/echo"]', True), H('CMD ["a" "b"]', True)),
    ),
    Case(
        "cmd-before-entrypoint-in-the-same-stage-is-kept",
        """
        FROM @BUSYBOX@
        CMD ["--flag"]
        ENTRYPOINT ["/bin/echo"]
        """,
        # BuildKit resets Cmd only when this stage did not set one (dispatchEntrypoint: `if !d.cmd.IsSet`).
        config={"Entrypoint": ["/bin/echo"], "Cmd": ["--flag"]},
    ),
    Case(
        "cmd-shell-form-in-a-child-stage-of-an-entrypoint",
        """
        FROM @BUSYBOX@ AS parent
        ENTRYPOINT ["/bin/echo"]
        CMD ["parent"]
        FROM parent
        CMD echo "hi there"
        """,
        config={"Entrypoint": ["/bin/echo"], "Cmd": ["/bin/sh", "-c", 'echo "hi there"']},
    ),
    # ------------------------------------------------------------------------------------------------ ENV
    Case(
        "env-several-pairs-see-values-before-the-line",
        """
        FROM @BUSYBOX@
        ENV A=1
        ENV A=2 B=$A C="${A}x" D=${UNSET:-dflt}
        RUN echo "$A$B$C$D" > /env.txt
        """,
        files={"env.txt": F(content="211xdflt\n")},
        config={"Env": [PATH_ENV, "A=2", "B=1", "C=1x", "D=dflt"]},
        history=(H("ENV A=1", True), H("ENV A=2 B=1 C=1x D=dflt", True),
                 H('RUN /bin/sh -c echo "$A$B$C$D" > /env.txt # buildkit', False)),
    ),
    Case(
        "env-legacy-form-and-quoting",
        r"""
        FROM @BUSYBOX@
        ENV GREETING hello  big world
        ENV Q='single $X' D="double \"q\" $GREETING" E=a\ b
        ENV PATH=/opt/bin:$PATH
        """,
        # Legacy `ENV key value...`: everything after the first whitespace is the value (inner runs kept).
        env=("GREETING=hello  big world", "Q=single $X", 'D=double "q" hello  big world', "E=a b",
             f"PATH=/opt/bin:{DEFAULT_PATH}"),
        history=(H("ENV GREETING=hello  big world", True), H("ENV Q=single $X", True, exact=False),
                 H("ENV PATH=/opt/bin:", True, exact=False)),
    ),
    # ------------------------------------------------------------------------------------------------ ARG
    Case(
        "arg-global-scope-redeclared-in-stage",
        """
        ARG V=global
        FROM @BUSYBOX@
        RUN echo "[${V:-unset}]" > /before.txt
        ARG V
        RUN echo "[$V]" > /after.txt
        """,
        files={"before.txt": F(content="[unset]\n"), "after.txt": F(content="[global]\n")},
        env_lacks=("V",),
        history=(H('RUN /bin/sh -c echo "[${V:-unset}]" > /before.txt # buildkit', False),
                 # Current BuildKit's dispatchArg writes the value the ARG resolved to (here from the global
                 # scope); frontends before the linter rework wrote the declaration ("ARG V").
                 H("ARG V=global", True),
                 H('RUN |1 V=global /bin/sh -c echo "[$V]" > /after.txt # buildkit', False)),
    ),
    Case(
        "arg-build-arg-overrides-default-not-persisted",
        """
        FROM @BUSYBOX@
        ARG B=2
        ARG A=1
        ARG UNSET
        RUN echo "$A$B[$UNSET]" > /args.txt
        """,
        build_args=("A=cli", "UNUSED=x"),
        files={"args.txt": F(content="cli2[]\n")},
        env_lacks=("A", "B", "UNSET"),
        # runCommandString: declared ARGs in declaration order (not sorted, unlike the legacy builder), an
        # unset one as "UNSET="; dispatchArg writes the resolved value (the --build-arg one).
        history=(H("ARG B=2", True), H("ARG A=cli", True), H("ARG UNSET", True),
                 H('RUN |3 B=2 A=cli UNSET= /bin/sh -c echo "$A$B[$UNSET]" > /args.txt # buildkit', False)),
    ),
    Case(
        "arg-default-expands-env-and-feeds-workdir",
        """
        FROM @BUSYBOX@
        ENV BASE_DIR=/opt
        ARG APP_DIR=$BASE_DIR/app
        WORKDIR $APP_DIR
        ENV FROM_ARG=$APP_DIR
        RUN pwd > where.txt
        """,
        files={"opt/app/where.txt": F(content="/opt/app\n"), "opt/app": F(kind="dir", mode=0o755, uid=0)},
        config={"WorkingDir": "/opt/app"}, env=("FROM_ARG=/opt/app", "BASE_DIR=/opt"), env_lacks=("APP_DIR",),
        # dispatchArg expands the ARG default before writing it to the history.
        history=(H("ENV BASE_DIR=/opt", True), H("ARG APP_DIR=/opt/app", True), H("WORKDIR /opt/app", False),
                 H("ENV FROM_ARG=/opt/app", True),
                 H("RUN |1 APP_DIR=/opt/app /bin/sh -c pwd > where.txt # buildkit", False)),
    ),
    Case(
        "arg-automatic-platform-args",
        """
        FROM @BUSYBOX@
        RUN echo "[$TARGETARCH]" > /undeclared.txt
        ARG TARGETPLATFORM
        ARG TARGETOS
        ARG TARGETARCH
        ARG TARGETVARIANT
        ARG BUILDPLATFORM
        ARG BUILDOS
        ARG BUILDARCH
        RUN echo "$TARGETPLATFORM|$TARGETOS|$TARGETARCH|$TARGETVARIANT|$BUILDPLATFORM|$BUILDOS|$BUILDARCH" > /p.txt
        """,
        # Reference, "Automatic platform ARGs in the global scope": usable in a stage after `ARG <name>`.
        files={"undeclared.txt": F(content="[]\n"), "p.txt": F(content="linux/amd64|linux|amd64||linux/amd64|linux|amd64\n")},
        env_lacks=("TARGETARCH", "TARGETPLATFORM", "BUILDPLATFORM"),
    ),
    # ------------------------------------------------------------------------------------------------ LABEL, EXPOSE, VOLUME
    Case(
        "label-merges-with-base-and-quotes",
        """
        FROM @BUSYBOX@ AS base
        LABEL a=1 "b c"="d e"
        FROM base
        ARG V=val
        LABEL a=2 c='x $y' e="${V}-\\"q\\""
        LABEL multi.line="one \\
        two"
        """,
        config={"Labels": {"a": "2", "b c": "d e", "c": "x $y", "e": 'val-"q"', "multi.line": "one two"}},
        history=(H("LABEL a=1 b c=d e", True), H("ARG V=val", True), H("LABEL a=2 c=x $y e=val-\"q\"", True),
                 H("LABEL multi.line=one two", True)),
    ),
    Case(
        "expose-ranges-protocols-env",
        """
        FROM @BUSYBOX@
        ENV PORT=8080
        EXPOSE 80 7000-7002 53/udp 9000/TCP
        EXPOSE $PORT 132/sctp
        """,
        config={"ExposedPorts": {"80/tcp": {}, "7000/tcp": {}, "7001/tcp": {}, "7002/tcp": {}, "53/udp": {},
                                 "9000/tcp": {}, "8080/tcp": {}, "132/sctp": {}}},
        # The EXPOSE history text changed across BuildKit releases ("EXPOSE map[...]" up to dockerfile 1.17,
        # "EXPOSE [80/tcp ...]" since 1.19, moby/buildkit#6218): only the keyword is checked.
        history=(H("ENV PORT=8080", True), H("EXPOSE ", True, exact=False), H("EXPOSE ", True, exact=False)),
    ),
    Case(
        "volume-json-and-plain-is-metadata-only",
        """
        FROM @BUSYBOX@
        VOLUME ["/data", "/logs"]
        ENV C=/cache
        VOLUME $C /var/spool
        """,
        # BuildKit's dispatchVolume only records the volume: no directory, no layer.
        config={"Volumes": {"/data": {}, "/logs": {}, "/cache": {}, "/var/spool": {}}},
        absent=("data", "logs", "cache", "var/spool"),
        history=(H("VOLUME [/data /logs]", True), H("ENV C=/cache", True), H("VOLUME [/cache /var/spool]", True)),
    ),
    # ------------------------------------------------------------------------------------------------ USER, WORKDIR
    Case(
        "user-uid-gid-runs-as-it",
        """
        FROM @BUSYBOX@
        USER 1234:5678
        RUN id -u > /tmp/uid && id -g > /tmp/gid
        """,
        files={"tmp/uid": F(content="1234\n", uid=1234, gid=5678), "tmp/gid": F(content="5678\n")},
        config={"User": "1234:5678"},
        history=(H("USER 1234:5678", True), H("RUN /bin/sh -c id -u > /tmp/uid && id -g > /tmp/gid # buildkit", False)),
    ),
    Case(
        "user-name-with-supplementary-groups",
        """
        FROM @BUSYBOX@
        USER www-data
        RUN id -u > /tmp/uid && id -G > /tmp/groups && echo "$HOME" > /tmp/home
        """,
        # www-data is 33:33 and a member of staff (50) in the busybox image's /etc/group.
        files={"tmp/uid": F(content="33\n", uid=33, gid=33), "tmp/groups": F(content="33 50\n"),
               "tmp/home": F(content="/var/www\n")},
        config={"User": "www-data"},
    ),
    Case(
        "workdir-created-relative-and-expanded",
        """
        FROM @BUSYBOX@
        WORKDIR /a
        WORKDIR b
        ENV D=c
        WORKDIR $D
        WORKDIR /tmp
        """,
        # Reference (WORKDIR): "If the WORKDIR doesn't exist, it will be created even if it's not used".
        files={"a/b/c": F(kind="dir", mode=0o755, uid=0, gid=0), "tmp": F(kind="dir", mode=0o1777)},
        config={"WorkingDir": "/tmp"},
        # dispatchWorkdir commits every WORKDIR other than "/" with llb.Mkdir; when the directory already exists
        # the diff is empty, and BuildKit's exporter drops empty layers and marks their history entries
        # empty_layer (normalizeLayersAndHistory). lamina makes no layer for an empty diff: same result.
        history=(H("WORKDIR /a", False), H("WORKDIR /a/b", False), H("ENV D=c", True), H("WORKDIR /a/b/c", False),
                 H("WORKDIR /tmp", True)),
    ),
    Case(
        "workdir-owned-by-user",
        """
        FROM @BUSYBOX@
        USER www-data
        WORKDIR /srv/app/data
        WORKDIR /tmp
        """,
        # BuildKit's dispatchWorkdir makes the directory with llb.WithUser(Config.User): the directories it
        # creates belong to the user; an existing one keeps its owner.
        files={"srv": F(kind="dir", uid=33, gid=33, mode=0o755), "srv/app/data": F(kind="dir", uid=33, gid=33),
               "tmp": F(kind="dir", uid=0, gid=0, mode=0o1777)},
        config={"User": "www-data", "WorkingDir": "/tmp"},
    ),
    # ------------------------------------------------------------------------------------------------ STOPSIGNAL, HEALTHCHECK, MAINTAINER
    Case(
        "stopsignal",
        """
        FROM @BUSYBOX@
        STOPSIGNAL SIGUSR1
        """,
        config={"StopSignal": "SIGUSR1"},
        history=(H("STOPSIGNAL SIGUSR1", True),),
    ),
    Case(
        "healthcheck-options-in-nanoseconds",
        """
        FROM @BUSYBOX@
        HEALTHCHECK --interval=30s --timeout=5s --start-period=1m30s --start-interval=500ms --retries=3 \\
            CMD wget -q -O- http://localhost/ || exit 1
        """,
        config={"Healthcheck": {"Test": ["CMD-SHELL", "wget -q -O- http://localhost/ || exit 1"],
                                "Interval": 30 * SEC, "Timeout": 5 * SEC, "StartPeriod": 90 * SEC,
                                "StartInterval": SEC // 2, "Retries": 3}},
        history=(H("HEALTHCHECK", True, exact=False),),
    ),
    Case(
        "healthcheck-exec-form-then-none",
        """
        FROM @BUSYBOX@ AS checked
        HEALTHCHECK CMD ["/bin/true", "arg"]
        FROM checked
        HEALTHCHECK NONE
        """,
        config={"Healthcheck": {"Test": ["NONE"]}},
        base_history=2, history=(H("HEALTHCHECK", True, exact=False),),
    ),
    Case(
        "healthcheck-exec-form",
        """
        FROM @BUSYBOX@
        HEALTHCHECK --retries=2 CMD ["/bin/true", "arg"]
        """,
        config={"Healthcheck": {"Test": ["CMD", "/bin/true", "arg"], "Retries": 2}},
    ),
    Case(
        "maintainer-sets-author",
        """
        FROM @BUSYBOX@
        MAINTAINER Jane Doe <jane@example.com>
        """,
        top={"author": "Jane Doe <jane@example.com>"},
        history=(H("MAINTAINER Jane Doe <jane@example.com>", True),),
    ),
    # ------------------------------------------------------------------------------------------------ ONBUILD
    Case(
        "onbuild-recorded-not-run",
        """
        FROM @BUSYBOX@
        ONBUILD RUN echo trig > /trig.txt
        ONBUILD ENV TRIGGERED=yes
        """,
        config={"OnBuild": ["RUN echo trig > /trig.txt", "ENV TRIGGERED=yes"]},
        absent=("trig.txt",), env_lacks=("TRIGGERED",),
        # BuildKit's dispatchOnbuild writes no history entry.
        history=(),
    ),
    Case(
        "onbuild-triggers-run-in-a-child-stage",
        """
        FROM @BUSYBOX@ AS parent
        ONBUILD RUN echo trig > /trig.txt
        ONBUILD ENV TRIGGERED=yes
        FROM parent
        RUN echo "$TRIGGERED" > /seen.txt
        """,
        files={"trig.txt": F(content="trig\n"), "seen.txt": F(content="yes\n")},
        config={"OnBuild": ABSENT}, env=("TRIGGERED=yes",),
        history=(H("RUN /bin/sh -c echo trig > /trig.txt # buildkit", False), H("ENV TRIGGERED=yes", True),
                 H('RUN /bin/sh -c echo "$TRIGGERED" > /seen.txt # buildkit', False)),
    ),
    # ------------------------------------------------------------------------------------------------ COPY
    Case(
        "copy-directory-copies-its-contents",
        """
        FROM @BUSYBOX@
        COPY dir /dst
        COPY dir/ /dst2/
        COPY dir/a.txt /single
        COPY dir/a.txt /into/
        """,
        context={"dir/a.txt": "a\n", "dir/sub/b.txt": "b\n"},
        modes={"dir/a.txt": 0o600, "dir/sub": 0o750},
        files={"dst/a.txt": F(content="a\n", mode=0o600, uid=0, gid=0), "dst/sub/b.txt": F(content="b\n"),
               "dst/sub": F(kind="dir", mode=0o750), "dst2/sub/b.txt": F(content="b\n"),
               "single": F(content="a\n", kind="file"), "into/a.txt": F(content="a\n"),
               "into": F(kind="dir", mode=0o755, uid=0, gid=0)},
        listing={"dst": ("a.txt", "sub")},
        history=(H("COPY dir /dst # buildkit", False), H("COPY dir/ /dst2/ # buildkit", False),
                 H("COPY dir/a.txt /single # buildkit", False), H("COPY dir/a.txt /into/ # buildkit", False)),
    ),
    Case(
        "copy-wildcards",
        """
        FROM @BUSYBOX@
        COPY *.txt /star/
        COPY file?.cfg /question/
        COPY [ab].md /class/
        """,
        context={"one.txt": "1\n", "two.txt": "2\n", "file1.cfg": "c1\n", "file22.cfg": "c22\n",
                 "a.md": "a\n", "b.md": "b\n", "c.md": "c\n"},
        listing={"star": ("one.txt", "two.txt"), "question": ("file1.cfg",), "class": ("a.md", "b.md")},
        files={"star/one.txt": F(content="1\n"), "class/b.md": F(content="b\n")},
    ),
    Case(
        "copy-json-form-several-sources-relative-to-workdir",
        """
        FROM @BUSYBOX@
        WORKDIR /app
        COPY ["a b.txt", "c.txt", "./"]
        COPY c.txt sub/
        COPY c.txt renamed.txt
        """,
        context={"a b.txt": "ab\n", "c.txt": "c\n"},
        files={"app/a b.txt": F(content="ab\n"), "app/c.txt": F(content="c\n"), "app/sub/c.txt": F(content="c\n"),
               "app/renamed.txt": F(content="c\n")},
        listing={"app": ("a b.txt", "c.txt", "renamed.txt", "sub")},
        # dispatchCopy writes the sources joined by spaces, whatever the form of the instruction.
        history=(H("WORKDIR /app", False), H("COPY a b.txt c.txt ./ # buildkit", False),
                 H("COPY c.txt sub/ # buildkit", False), H("COPY c.txt renamed.txt # buildkit", False)),
    ),
    Case(
        "copy-chown-names-ids-and-chmod",
        """
        FROM @BUSYBOX@
        COPY --chown=www-data:staff f.txt /o/names.txt
        COPY --chown=1234:5678 --chmod=0640 f.txt /o/ids.txt
        COPY --chown=nobody f.txt /o/nobody.txt
        COPY --chown=2345 f.txt /o/uid-only.txt
        COPY --chmod=750 dir /o/d/
        COPY --chown=33:33 f.txt /made/by/chown/f.txt
        """,
        context={"f.txt": "f\n", "dir/x/y.txt": "y\n"},
        files={"o/names.txt": F(content="f\n", uid=33, gid=50),
               "o/ids.txt": F(uid=1234, gid=5678, mode=0o640),
               "o/nobody.txt": F(uid=65534, gid=65534),  # a name alone takes the passwd entry's group
               "o/uid-only.txt": F(uid=2345, gid=2345),  # a numeric uid alone doubles as the gid
               "o/d/x/y.txt": F(mode=0o750, content="y\n"), "o/d/x": F(kind="dir", mode=0o750),
               "made/by/chown": F(kind="dir", uid=33, gid=33), "made": F(kind="dir", uid=33, gid=33)},
        history=(H("COPY --chown=www-data:staff f.txt /o/names.txt # buildkit", False),
                 H("COPY --chown=1234:5678 --chmod=0640 f.txt /o/ids.txt # buildkit", False),
                 H("COPY --chown=nobody f.txt /o/nobody.txt # buildkit", False),
                 H("COPY --chown=2345 f.txt /o/uid-only.txt # buildkit", False),
                 H("COPY --chmod=750 dir /o/d/ # buildkit", False),
                 H("COPY --chown=33:33 f.txt /made/by/chown/f.txt # buildkit", False)),
    ),
    Case(
        "copy-from-name-index-and-image",
        """
        FROM @BUSYBOX@ AS build
        RUN mkdir /out && echo art > /out/art.txt && ln -s art.txt /out/link
        FROM @BUSYBOX@
        COPY --from=build /out/ /app/
        COPY --from=0 /out/art.txt /by-index.txt
        COPY --from=@BUSYBOX@ /etc/group /imported-group
        COPY --from=build /out/link /followed.txt
        """,
        files={"app/art.txt": F(content="art\n"), "app/link": F(link="art.txt"),
               "by-index.txt": F(content="art\n"), "imported-group": F(content=GROUP),
               "followed.txt": F(content="art\n", kind="file")},
        absent=("out",),
        history=(H("COPY /out/ /app/ # buildkit", False), H("COPY /out/art.txt /by-index.txt # buildkit", False),
                 H("COPY /etc/group /imported-group # buildkit", False),
                 H("COPY /out/link /followed.txt # buildkit", False)),
    ),
    Case(
        "copy-link",
        """
        FROM @BUSYBOX@
        RUN mkdir -p /linked && echo old > /linked/f.txt
        COPY --link f.txt /linked/f.txt
        COPY --link dir/ /linked/d/
        """,
        context={"f.txt": "new\n", "dir/x.txt": "x\n"},
        files={"linked/f.txt": F(content="new\n"), "linked/d/x.txt": F(content="x\n"),
               "linked/d": F(kind="dir", uid=0, gid=0, mode=0o755)},
        history=(H("RUN /bin/sh -c mkdir -p /linked && echo old > /linked/f.txt # buildkit", False),
                 H("COPY f.txt /linked/f.txt # buildkit", False), H("COPY dir/ /linked/d/ # buildkit", False)),
    ),
    Case(
        "copy-parents-and-pivot",
        """
        # syntax=docker/dockerfile:1.7-labs
        FROM @BUSYBOX@
        COPY --parents a/b/f.txt c/*.txt /p/
        COPY --parents src/./app/main.py /q/
        """,
        context={"a/b/f.txt": "f\n", "c/x.txt": "x\n", "c/y.md": "y\n", "src/app/main.py": "main\n"},
        files={"p/a/b/f.txt": F(content="f\n"), "p/c/x.txt": F(content="x\n"), "q/app/main.py": F(content="main\n")},
        absent=("p/c/y.md", "q/src", "p/f.txt"),
        history=(H("COPY --parents a/b/f.txt c/*.txt /p/ # buildkit", False),
                 H("COPY --parents src/./app/main.py /q/ # buildkit", False)),
    ),
    Case(
        "copy-exclude",
        """
        FROM @BUSYBOX@
        COPY --exclude=**/*.log --exclude=tmp dir/ /e/
        """,
        context={"dir/keep.txt": "k\n", "dir/a.log": "a\n", "dir/sub/b.log": "b\n", "dir/sub/c.txt": "c\n",
                 "dir/tmp/t.txt": "t\n"},
        files={"e/keep.txt": F(content="k\n"), "e/sub/c.txt": F(content="c\n")},
        absent=("e/a.log", "e/sub/b.log", "e/tmp"),
        history=(H("COPY dir/ /e/ # buildkit", False),),
    ),
    Case(
        "dockerignore-exceptions-and-double-star",
        """
        FROM @BUSYBOX@
        COPY . /ctx/
        """,
        context={".dockerignore": "**/*.tmp\n*.md\n!README.md\nsecret\n", "README.md": "r\n", "NOTES.md": "n\n",
                 "a.tmp": "t\n", "sub/b.tmp": "t\n", "sub/deep/c.tmp": "t\n", "sub/c.txt": "c\n",
                 "sub/d.md": "d\n", "secret/key": "k\n"},
        files={"ctx/README.md": F(content="r\n"), "ctx/sub/c.txt": F(content="c\n"),
               "ctx/sub/d.md": F(content="d\n"),  # "*.md" matches at the root only
               "ctx/Dockerfile": F(kind="file"), "ctx/.dockerignore": F(kind="file")},
        absent=("ctx/NOTES.md", "ctx/a.tmp", "ctx/sub/b.tmp", "ctx/sub/deep/c.tmp", "ctx/secret"),
    ),
    Case(
        "copy-symlinks-followed-at-top-kept-inside",
        """
        FROM @BUSYBOX@
        COPY link.txt /followed.txt
        COPY dir/ /d/
        COPY dir/inner-link /followed-inner.txt
        """,
        context={"target.txt": "target\n", "dir/f.txt": "f\n"},
        links={"link.txt": "target.txt", "dir/inner-link": "f.txt", "dir/abs-link": "/etc/passwd"},
        files={"followed.txt": F(content="target\n", kind="file"), "d/inner-link": F(link="f.txt"),
               "d/abs-link": F(link="/etc/passwd"), "followed-inner.txt": F(content="f\n", kind="file")},
    ),
    # ------------------------------------------------------------------------------------------------ stages, targets, errors
    Case(
        "target-skips-unneeded-stages",
        """
        FROM @BUSYBOX@ AS broken
        RUN echo BROKEN-STAGE-RAN && exit 1
        FROM @BUSYBOX@ AS dep
        RUN echo dep > /dep.txt
        FROM @BUSYBOX@ AS unused
        RUN echo UNUSED-STAGE-RAN && exit 1
        FROM @BUSYBOX@ AS wanted
        COPY --from=dep /dep.txt /dep.txt
        RUN echo ok > /ok.txt
        FROM broken
        RUN echo never
        """,
        target="wanted",
        files={"dep.txt": F(content="dep\n"), "ok.txt": F(content="ok\n")},
        output_lacks=("BROKEN-STAGE-RAN", "UNUSED-STAGE-RAN"),
        history=(H("COPY /dep.txt /dep.txt # buildkit", False), H("RUN /bin/sh -c echo ok > /ok.txt # buildkit", False)),
    ),
    Case(
        "copy-from-cycle-is-an-error",
        """
        FROM @BUSYBOX@ AS a
        COPY --from=b /etc/passwd /p
        FROM @BUSYBOX@ AS b
        COPY --from=a /etc/group /g
        """,
        fails_with=r"circular dependency",  # BuildKit: "circular dependency detected on stage: a"
    ),
    Case(
        "escape-directive-backtick",
        r"""
        # escape=`
        FROM @BUSYBOX@
        ENV WINPATH=C:\dir\sub
        RUN printf '%s\n' "$WINPATH" > /p.txt && `
            echo continued >> /p.txt
        """,
        files={"p.txt": F(content="C:\\dir\\sub\ncontinued\n")},
        env=("WINPATH=C:\\dir\\sub",),
    ),
    # ------------------------------------------------------------------------------------------------ Debian
    Case(
        "debian-useradd-user-workdir-chown",
        """
        FROM @DEBIAN@
        RUN groupadd -g 1500 app && useradd -u 1234 -g app -m -s /bin/sh appuser
        USER appuser
        WORKDIR /srv/app
        RUN id -un > whoami.txt && echo "$HOME" > home.txt
        COPY --chown=appuser:app f.txt ./
        COPY f.txt root-owned.txt
        """,
        context={"f.txt": "f\n"},
        files={"srv": F(kind="dir", uid=0, gid=0), "srv/app": F(kind="dir", uid=1234, gid=1500, mode=0o755),
               "srv/app/whoami.txt": F(content="appuser\n", uid=1234, gid=1500),
               "srv/app/home.txt": F(content="/home/appuser\n"),
               "srv/app/f.txt": F(content="f\n", uid=1234, gid=1500),
               "srv/app/root-owned.txt": F(uid=0, gid=0), "home/appuser": F(kind="dir", uid=1234, gid=1500)},
        config={"User": "appuser", "WorkingDir": "/srv/app", "Cmd": ["bash"]},
    ),
    Case(
        "debian-dpkg-and-apt-metadata",
        """
        FROM @DEBIAN@
        RUN dpkg --print-architecture > /arch.txt \\
            && dpkg-query -W -f='${Package}' dpkg > /pkg.txt \\
            && echo 'APT::Install-Recommends "false";' > /etc/apt/apt.conf.d/99-no-recommends \\
            && rm -rf /usr/share/doc/dpkg /var/lib/apt/lists/* && apt-get clean
        """,
        files={"arch.txt": F(content="amd64\n"), "pkg.txt": F(content="dpkg"),
               "etc/apt/apt.conf.d/99-no-recommends": F(content='APT::Install-Recommends "false";\n'),
               "usr/bin/dpkg": F(kind="file")},
        absent=("usr/share/doc/dpkg",),
        layer_entries={1: ("usr/share/doc/.wh.dpkg",)},
        history=(H("RUN /bin/sh -c dpkg --print-architecture", False, exact=False),),
    ),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in CASES])
def test_dockerfile(case: Case, lamina: Lamina, tmp_path: Path) -> None:
    problems = check_case(case, lamina, tmp_path)
    assert not problems, f"{case.name}:\n  " + "\n  ".join(problems)


def test_table_is_big_enough() -> None:
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES)
