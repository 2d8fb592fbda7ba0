"""BuildKit's core Dockerfile integration tests and its heredoc tests, carried over to lamina.

Expectations come from moby/buildkit at commit 73ed6825c4b7569379ef89df0aedcdbe64473d31, files
frontend/dockerfile/dockerfile_core_test.go and frontend/dockerfile/dockerfile_heredoc_test.go: the same
Dockerfiles and contexts, and the same assertions (files BuildKit's local exporter writes and the image config are
checked in the pushed image; assertions BuildKit makes with ``RUN [ ... ]`` stay in the Dockerfile).
tests/conformance/BUILDKIT-files.md maps every test function to its cases here.

Mapping of BuildKit's images: ``busybox`` is the test busybox image (Debian's static busybox,
tests/support/baseimages.py). Two differences of that image are bridged in the Dockerfiles, each where it is
used: it has no ``adduser`` applet (``adduser -D user`` becomes the entries busybox's adduser writes: uid and gid
1000, a home directory owned by the user), and its /etc/group lacks the ``wheel:x:10:root`` line of Docker Hub's
busybox image, which BuildKit's ``id`` assertions count on.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path

import pytest

from tests.conformance.buildkit_support import params
from tests.e2e.conftest import Lamina
from tests.e2e.helpers import lamina_subprocess, skopeo, unpack, write_context
from tests.e2e.table_support import Case, F, build_case, check_case, raw_config

pytestmark = pytest.mark.e2e

ADDUSER = ("RUN echo 'user:x:1000:1000:Linux User,,,:/home/user:/bin/sh' >> /etc/passwd"
           " && echo 'user:x:1000:' >> /etc/group && mkdir -p /home/user && chown 1000:1000 /home/user")
# Docker Hub's busybox has `wheel:x:10:root` in /etc/group; BuildKit's `id` expectations for root count on it.
WHEEL = "RUN echo 'wheel:x:10:root' >> /etc/group"


def symlink_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("symlink")
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, "../tmp/symlink-target", 0o755
        tf.addfile(info)
    return buf.getvalue()


COPY_HEREDOC = f"""
FROM @BUSYBOX@ AS build

{ADDUSER}
WORKDIR /dest

COPY <<EOF single
single file
EOF

COPY <<EOF <<EOF2 double/
first file
EOF
second file
EOF2

RUN mkdir -p /permfiles
COPY --chmod=777 <<EOF /permfiles/all
dummy content
EOF
COPY --chmod=0644 <<EOF /permfiles/rw
dummy content
EOF
COPY --chown=user:user <<EOF /permfiles/owned
dummy content
EOF
RUN stat -c "%04a" /permfiles/all >> perms && \\
\tstat -c "%04a" /permfiles/rw >> perms && \\
\tstat -c "%U:%G" /permfiles/owned >> perms

FROM scratch
COPY --from=build /dest /
"""

COPY_HEREDOC_SPECIAL = r"""
FROM scratch

COPY <<EOF quotefile
"quotes in file"
EOF

COPY <<EOF slashfile1
\
EOF
COPY <<EOF slashfile2
\\
EOF
COPY <<EOF slashfile3
\$
EOF

COPY <<"EOF" rawslashfile1
\
EOF
COPY <<"EOF" rawslashfile2
\\
EOF
COPY <<"EOF" rawslashfile3
\$
EOF
"""

RUN_SHEBANG = """
FROM @BUSYBOX@ AS build

WORKDIR /dest

RUN <<EOF
#!/bin/awk -f
BEGIN {
\tprint "hello" >> "./out1"
\tprint "world" >> "./out1"
}
EOF

RUN <<-EOF
\t#!/bin/awk -f
\tBEGIN {
\t\tprint "hello" >> "./out2"
\t\tprint "world" >> "./out2"
\t}
EOF

FROM scratch
COPY --from=build /dest /
"""

RUN_COMPLEX = """
FROM @BUSYBOX@ AS build

WORKDIR /dest

RUN cat <<EOF1 | tr '[:upper:]' '[:lower:]' > ./out1; \\
\tcat <<EOF2 | tr '[:lower:]' '[:upper:]' > ./out2
hello WORLD
EOF1
HELLO world
EOF2

RUN <<EOF 3<<IN1 4<<IN2 awk -f -
BEGIN {
\twhile ((getline line < "/proc/self/fd/3") > 0)
\t\tprint tolower(line) > "./fd3"
\twhile ((getline line < "/proc/self/fd/4") > 0)
\t\tprint toupper(line) > "./fd4"
}
EOF
hello WORLD
IN1
HELLO world
IN2

FROM scratch
COPY --from=build /dest /
"""

HEREDOC_INDENT = """
FROM @BUSYBOX@ AS build

COPY <<EOF /dest/foo-copy
\tfoo
EOF

COPY <<-EOF /dest/bar-copy
\tbar
EOF

RUN <<EOF
echo "
\tfoo" > /dest/foo-run
EOF

RUN <<-EOF
echo "
\tbar" > /dest/bar-run
EOF

RUN <<EOF
#!/bin/sh
echo "
\tfoo" > /dest/foo2-run
EOF

RUN <<-EOF
#!/bin/sh
echo "
\tbar" > /dest/bar2-run
EOF

RUN <<EOF sh > /dest/foo3-run
echo "
\tfoo"
EOF

RUN <<-EOF sh > /dest/bar3-run
echo "
\tbar"
EOF

FROM scratch
COPY --from=build /dest /
"""

HEREDOC_VARS = """
FROM @BUSYBOX@ as build

ARG name=world

COPY <<EOF /dest/c1
Hello ${name}!
EOF
COPY <<'EOF' /dest/c2
Hello ${name}!
EOF
COPY <<"EOF" /dest/c3
Hello ${name}!
EOF

COPY <<EOF /dest/q1
Hello '${name}'!
EOF
COPY <<EOF /dest/q2
Hello "${name}"!
EOF
COPY <<'EOF' /dest/qsingle1
Hello '${name}'!
EOF
COPY <<'EOF' /dest/qsingle2
Hello "${name}"!
EOF
COPY <<"EOF" /dest/qdouble1
Hello '${name}'!
EOF
COPY <<"EOF" /dest/qdouble2
Hello "${name}"!
EOF

RUN <<EOF
greeting="Hello"
echo "${greeting} ${name}!" > /dest/r1
EOF
RUN <<EOF
name="new world"
echo "Hello ${name}!" > /dest/r2
EOF

FROM scratch
COPY --from=build /dest /
"""

USER_DOCKERFILE = f"""
FROM @BUSYBOX@ AS base
{WHEEL}
RUN mkdir -m 0777 /out
RUN id -un > /out/rootuser

# Make sure our defaults work
RUN [ "$(id -u):$(id -g)/$(id -un):$(id -gn)" = '0:0/root:root' ]

USER root
RUN [ "$(id -G):$(id -Gn)" = '0 10:root wheel' ]

# Setup dockerio user and group
RUN echo 'dockerio:x:1001:1001::/bin:/bin/false' >> /etc/passwd && \\
\techo 'dockerio:x:1001:' >> /etc/group

# Make sure we can switch to our user and all the information is exactly as we expect it to be
USER dockerio
RUN [ "$(id -u):$(id -g)/$(id -un):$(id -gn)/$(id -G):$(id -Gn)" = '1001:1001/dockerio:dockerio/1001:dockerio' ]

# Switch back to root and double check that worked exactly as we might expect it to
USER root
RUN [ "$(id -u):$(id -g)/$(id -un):$(id -gn)/$(id -G):$(id -Gn)" = '0:0/root:root/0 10:root wheel' ] && \\
        # Add a "supplementary" group for our dockerio user
\techo 'supplementary:x:1002:dockerio' >> /etc/group

# ... and then go verify that we get it like we expect
USER dockerio
RUN [ "$(id -u):$(id -g)/$(id -un):$(id -gn)/$(id -G):$(id -Gn)" = '1001:1001/dockerio:dockerio/1001 1002:dockerio supplementary' ]
USER 1001
RUN [ "$(id -u):$(id -g)/$(id -un):$(id -gn)/$(id -G):$(id -Gn)" = '1001:1001/dockerio:dockerio/1001 1002:dockerio supplementary' ]

# super test the new "user:group" syntax
USER dockerio:dockerio
RUN [ "$(id -u):$(id -g)/$(id -un):$(id -gn)/$(id -G):$(id -Gn)" = '1001:1001/dockerio:dockerio/1001:dockerio' ]
USER 1001:dockerio
RUN [ "$(id -u):$(id -g)/$(id -un):$(id -gn)/$(id -G):$(id -Gn)" = '1001:1001/dockerio:dockerio/1001:dockerio' ]
USER dockerio:1001
RUN [ "$(id -u):$(id -g)/$(id -un):$(id -gn)/$(id -G):$(id -Gn)" = '1001:1001/dockerio:dockerio/1001:dockerio' ]
USER 1001:1001
RUN [ "$(id -u):$(id -g)/$(id -un):$(id -gn)/$(id -G):$(id -Gn)" = '1001:1001/dockerio:dockerio/1001:dockerio' ]
USER dockerio:supplementary
RUN [ "$(id -u):$(id -g)/$(id -un):$(id -gn)/$(id -G):$(id -Gn)" = '1001:1002/dockerio:supplementary/1002:supplementary' ]
USER dockerio:1002
RUN [ "$(id -u):$(id -g)/$(id -un):$(id -gn)/$(id -G):$(id -Gn)" = '1001:1002/dockerio:supplementary/1002:supplementary' ]
USER 1001:supplementary
RUN [ "$(id -u):$(id -g)/$(id -un):$(id -gn)/$(id -G):$(id -Gn)" = '1001:1002/dockerio:supplementary/1002:supplementary' ]
USER 1001:1002
RUN [ "$(id -u):$(id -g)/$(id -un):$(id -gn)/$(id -G):$(id -Gn)" = '1001:1002/dockerio:supplementary/1002:supplementary' ]

# make sure unknown uid/gid still works properly
USER 1042:1043
RUN [ "$(id -u):$(id -g)/$(id -un):$(id -gn)/$(id -G):$(id -Gn)" = '1042:1043/1042:1043/1043:1043' ]
USER daemon
RUN id -un > /out/daemonuser
FROM scratch
COPY --from=base /out /
USER nobody
"""

# The test image's staff group lists daemon as a member; Docker Hub's busybox has no such entry.
USER_ADDITIONAL_GIDS = f"""
FROM @BUSYBOX@
{WHEEL} && sed -i 's/^staff:x:50:daemon,/staff:x:50:/' /etc/group
SHELL ["/bin/sh", "-euxc"]
RUN [ "$(id)" = "uid=0(root) gid=0(root) groups=0(root),10(wheel)" ]
USER 1234
RUN [ "$(id)" = "uid=1234 gid=0(root) groups=0(root)" ]
USER 1234:1234
RUN [ "$(id)" = "uid=1234 gid=1234 groups=1234" ]
USER daemon
RUN [ "$(id)" = "uid=1(daemon) gid=1(daemon) groups=1(daemon)" ]
"""

CHECK_HOSTNAME = """
FROM @BUSYBOX@
RUN cat /etc/hosts | grep foo
RUN echo $HOSTNAME | grep foo
\tRUN echo $(hostname) | grep foo
\t"""

STEP_NAMES = """
FROM @BUSYBOX@ AS base
WORKDIR /out
RUN echo "base" > base
FROM scratch
COPY --from=base --chmod=0644 /out /out
"""

CASES: list[Case] = [
    # ---------------------------------------------------------------------- dockerfile_heredoc_test.go
    Case("testCopyHeredoc", COPY_HEREDOC,
         files={"single": F(content="single file\n"), "double/EOF": F(content="first file\n"),
                "double/EOF2": F(content="second file\n"), "perms": F(content="0777\n0644\nuser:user\n")}),
    Case("testCopyHeredocSpecialSymbols", COPY_HEREDOC_SPECIAL,
         files={"quotefile": F(content='"quotes in file"\n'), "slashfile1": F(content="\n"),
                "slashfile2": F(content="\\\n"), "slashfile3": F(content="$\n"),
                "rawslashfile1": F(content="\\\n"), "rawslashfile2": F(content="\\\\\n"),
                "rawslashfile3": F(content="\\$\n")}),
    Case("testRunBasicHeredoc",
         'FROM @BUSYBOX@ AS build\n\nRUN <<EOF\necho "i am" >> /dest\nwhoami >> /dest\nEOF\n\n'
         "FROM scratch\nCOPY --from=build /dest /dest\n",
         files={"dest": F(content="i am\nroot\n")}),
    Case("testRunFakeHeredoc",
         'FROM @BUSYBOX@ AS build\n\nSHELL ["/bin/awk"]\nRUN <<EOF\nBEGIN {\n\tprint "foo" > "/dest"\n}\nEOF\n\n'
         "FROM scratch\nCOPY --from=build /dest /dest\n",
         files={"dest": F(content="foo\n")}),
    Case("testRunShebangHeredoc", RUN_SHEBANG,
         files={"out1": F(content="hello\nworld\n"), "out2": F(content="hello\nworld\n")}),
    Case("testRunComplexHeredoc", RUN_COMPLEX,
         files={"out1": F(content="hello world\n"), "out2": F(content="HELLO WORLD\n"),
                "fd3": F(content="hello world\n"), "fd4": F(content="HELLO WORLD\n")}),
    Case("testHeredocIndent", HEREDOC_INDENT,
         files={"foo-copy": F(content="\tfoo\n"), "foo-run": F(content="\n\tfoo\n"),
                "foo2-run": F(content="\n\tfoo\n"), "foo3-run": F(content="\n\tfoo\n"),
                "bar-copy": F(content="bar\n"), "bar-run": F(content="\nbar\n"), "bar2-run": F(content="\nbar\n"),
                "bar3-run": F(content="\nbar\n")}),
    Case("testHeredocVarSubstitution", HEREDOC_VARS,
         files={"c1": F(content="Hello world!\n"), "c2": F(content="Hello ${name}!\n"),
                "c3": F(content="Hello ${name}!\n"), "q1": F(content="Hello 'world'!\n"),
                "q2": F(content='Hello "world"!\n'), "qsingle1": F(content="Hello '${name}'!\n"),
                "qsingle2": F(content='Hello "${name}"!\n'), "qdouble1": F(content="Hello '${name}'!\n"),
                "qdouble2": F(content='Hello "${name}"!\n'), "r1": F(content="Hello world!\n"),
                "r2": F(content="Hello new world!\n")}),
    # ------------------------------------------------------------------------- dockerfile_core_test.go
    Case("testSymlinkedDockerfile", "FROM scratch\nENV foo bar\n", dockerfile_name="Dockerfile.web",
         links={"Dockerfile": "Dockerfile.web"}, env=("foo=bar",)),
    Case("testSymlinkDestination", "FROM scratch\nADD t.tar /\nCOPY foo /symlink/\n",
         context={"foo": "content0", "t.tar": symlink_tar()}, modes={"foo": 0o600},
         files={"symlink": F(link="../tmp/symlink-target"), "tmp/symlink-target/foo": F(content="content0")}),
    Case("testExposeExpansion", 'FROM scratch\nARG PORTS="3000 4000/udp"\nEXPOSE $PORTS\nEXPOSE 5000\n',
         config={"ExposedPorts": {"3000/tcp": {}, "4000/udp": {}, "5000/tcp": {}}}),
    Case("testDockerfileLowercase", "FROM scratch\n", dockerfile_name="dockerfile"),
    # BuildKit also sets label bar=baz with the frontend option label:bar; lamina has no such option.
    Case("testLabels", "FROM scratch\nLABEL foo=bar\n", config={"Labels": {"foo": "bar"}}),
    Case("testUserAdditionalGids", USER_ADDITIONAL_GIDS),
    # BuildKit's "arg" subtest; "meta" (the frontend option hostname) has no lamina counterpart.
    Case("testDockerfileCheckHostname-arg", CHECK_HOSTNAME, build_args=("BUILDKIT_SANDBOX_HOSTNAME=foo",)),
    Case("testTargetMistype",
         "FROM scratch AS build\nCOPY Dockerfile /out\n\nFROM scratch\nCOPY --from=build /out /\n",
         target="bulid", fails_with=r'target stage "bulid" could not be found \(did you mean build\?\)'),
]

XFAIL: dict[str, str] = {}




@pytest.mark.parametrize("case", params(CASES, XFAIL))
def test_buildkit_case(case: Case, lamina: Lamina, tmp_path: Path) -> None:
    problems = check_case(case, lamina, tmp_path)
    assert not problems, f"{case.name}:\n  " + "\n  ".join(problems)


def test_step_names_in_the_log(lamina: Lamina, tmp_path: Path) -> None:
    """testStepNames, the part lamina can share. BuildKit's progress names the steps ``[base 3/3] RUN echo "base"
    > base`` and ``[stage-1 1/1] COPY --from=base --chmod=0644 /out /out``; lamina's log has its own layout, so
    the stage names (``stage-1`` for the unnamed one) and the instruction texts as written are compared."""
    context = write_context(tmp_path / "context", STEP_NAMES.replace("@BUSYBOX@", lamina.images.busybox))
    run = lamina.build(context, "--destination", lamina.dest("buildkit-step-names"))
    assert run.returncode == 0, run.describe()
    lines = run.output.splitlines()
    assert any(line.startswith("[base]") and line.endswith('RUN echo "base" > base') for line in lines), run.output
    assert any(line.startswith("[stage-1]") and line.endswith("COPY --from=base --chmod=0644 /out /out")
               for line in lines), run.output


def test_user(lamina: Lamina, tmp_path: Path) -> None:
    """testUser: the files the build writes, and ``User`` in the config. The last stage is FROM scratch with
    USER nobody, which umoci cannot unpack (no /etc/passwd), so its single layer is read directly."""
    case = Case("testUser", USER_DOCKERFILE)
    run, dest = build_case(case, lamina, tmp_path)
    assert run.returncode == 0, run.describe()
    assert raw_config(dest)["config"]["User"] == "nobody"
    layout = tmp_path / "layout"
    skopeo("copy", "--quiet", "--src-tls-verify=false", f"docker://{dest}", f"oci:{layout}:img")
    index = json.loads((layout / "index.json").read_text())

    def blob(digest: str) -> Path:
        return layout / "blobs" / digest.replace(":", "/")

    manifest = json.loads(blob(index["manifests"][0]["digest"]).read_text())
    files: dict[str, bytes] = {}
    for layer in manifest["layers"]:
        with tarfile.open(blob(layer["digest"])) as tar:
            for member in tar.getmembers():
                extracted = tar.extractfile(member) if member.isfile() else None
                if extracted is not None:
                    files[member.name.removeprefix("./")] = extracted.read()
    assert files.get("rootuser") == b"root\n"
    assert files.get("daemonuser") == b"daemon\n"


def test_cases_are_unique() -> None:
    assert len({c.name for c in CASES}) == len(CASES)
    assert set(XFAIL) <= {c.name for c in CASES} | {"testOnBuildHeredoc"}


# ---------------------------------------------------------------------------------------------------------------
# Tests of several builds


DIRS_DOCKERFILE = """FROM {busybox}
COPY foo /foo2
COPY foo /
RUN echo -n bar > foo3
RUN test -f foo
RUN cmp -s foo foo2
RUN cmp -s foo foo3
"""


def test_dockerfile_dirs(lamina: Lamina, tmp_path: Path) -> None:
    """testDockerfileDirs: the same build with absolute paths, with relative ones (``.`` from the context's
    directory), and with the Dockerfile in another directory than the context."""
    dockerfile = DIRS_DOCKERFILE.format(busybox=lamina.images.busybox)
    both = write_context(tmp_path / "both", dockerfile, {"foo": "bar"})
    lamina.build(both, "--destination", lamina.dest("buildkit-dirs")).check()

    argv = ["build", "--context", ".", "--dockerfile", "Dockerfile", "--insecure-registry", lamina.registry.host,
            "--destination", lamina.dest("buildkit-dirs")]
    lamina_subprocess(argv, lamina.environ(), cwd=both).check()

    dir1 = write_context(tmp_path / "dir1", dockerfile)
    dir2 = tmp_path / "dir2"
    dir2.mkdir()
    (dir2 / "foo").write_text("bar")
    lamina.build(dir2, "--dockerfile", str(dir1 / "Dockerfile"), "--destination", lamina.dest("buildkit-dirs")).check()


def test_context_change_dir_to_file(lamina: Lamina, tmp_path: Path) -> None:
    """testContextChangeDirToFile: ``COPY foo /`` where foo was a directory in the previous build (with the layer
    cache) and is now a file: the new file is copied."""
    cache = f"{lamina.registry.host}/e2e/buildkit-dir-to-file-cache-{time.monotonic_ns()}"
    context = write_context(tmp_path / "context", "FROM scratch\nCOPY foo /\n", {"foo/bar": "contents"})
    lamina.build(context, "--destination", lamina.dest("buildkit-dir-to-file"), "--cache", "--cache-repo",
                 cache).check()
    (context / "foo/bar").unlink()
    (context / "foo").rmdir()
    (context / "foo").write_text("contents2")
    dest = lamina.dest("buildkit-dir-to-file")
    lamina.build(context, "--destination", dest, "--cache", "--cache-repo", cache).check()
    image = unpack(f"docker://{dest}", tmp_path / "pulled")
    assert image.read("foo") == "contents2"
    assert not image.exists("bar")


def test_no_snapshot_leak(lamina: Lamina, tmp_path: Path) -> None:
    """testNoSnapshotLeak, as lamina can have it: BuildKit counts its disk-usage records after two identical builds;
    here the work directory holds as much after the second build as after the first."""
    context = write_context(tmp_path / "context", "FROM scratch\nCOPY foo /\n", {"foo": "contents"})
    work = tmp_path / "work"
    work.mkdir()
    seen = []
    for _ in range(2):
        lamina.build(context, "--destination", lamina.dest("buildkit-no-leak"), "--work-dir", str(work)).check()
        seen.append(sorted(str(p.relative_to(work)) for p in work.rglob("*")))
    assert seen[0] == seen[1]


def test_onbuild_heredoc(lamina: Lamina, tmp_path: Path) -> None:
    """testOnBuildHeredoc: an ``ONBUILD RUN <<EOF`` trigger runs in the child build."""
    base = lamina.dest("buildkit-onbuild-heredoc", "base")
    context = write_context(tmp_path / "base", f'FROM {lamina.images.busybox}\nONBUILD RUN <<EOF\n'
                                               'echo "hello world" >> /dest\nEOF\n')
    lamina.build(context, "--destination", base).check()
    child = write_context(tmp_path / "child", f"FROM {base} AS base\nFROM scratch\nCOPY --from=base /dest /dest\n")
    dest = lamina.dest("buildkit-onbuild-heredoc")
    lamina.build(child, "--destination", dest).check()
    assert unpack(f"docker://{dest}", tmp_path / "pulled").read("dest") == "hello world\n"
