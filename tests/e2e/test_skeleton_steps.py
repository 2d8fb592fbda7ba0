"""COPY and WORKDIR on a stage's skeleton (rootfs/skeleton.py, build/sparse.py) must make the very layers that the
unpacked stage makes: the same builds, with SOURCE_DATE_EPOCH, with and without ``--skeleton-steps`` give the same
image digest. The bases are made to be awkward: an existing destination with its own mode and owner, a symlinked
directory on the way, a file where a directory goes and the reverse, hardlinks, users looked up by name, --parents,
--link, heredocs, COPY --from stages and images."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.e2e.conftest import Lamina
from tests.e2e.helpers import write_context
from tests.e2e.test_rootfs_modes import EPOCH, describe_difference

pytestmark = pytest.mark.e2e

BASE = """
    FROM {busybox} AS base
    RUN mkdir -p /app/old /opt/dir/sub /data /home && echo old > /app/old/file && chmod 700 /app && chown 5:5 /app \\
        && ln -s /app /srv && echo f > /opt/file && echo s > /opt/dir/sub/s && echo d > /data/a && ln /data/a /data/b \\
        && ln -s ../data/a /data/rel && touch -d @1500000000 /app /opt /data \\
        && echo 'web:x:1234:2345::/home/web:/bin/sh' >> /etc/passwd && echo 'web:x:2345:' >> /etc/group
"""

FINAL_STEPS = """
    COPY one.txt /app/
    COPY src/ /srv/src/
    COPY --chown=nobody:nogroup one.txt /home/web/one.txt
    COPY --chmod=640 one.txt /opt/file/inside.txt
    COPY one.txt /opt/dir
    WORKDIR /work/deep
    COPY --parents src/./a/*.txt /parents/
    COPY --link one.txt /linked/one.txt
    COPY <<EOF /etc/motd
    hello
    EOF
    WORKDIR /app
    COPY --from=base /data /copied
    COPY --from={busybox} /bin/busybox /tools/busybox
    COPY one.txt relative.txt
    ENV DONE=1
"""


def context(lamina: Lamina, tmp: Path, final: str) -> Path:
    files: dict[str, str | bytes] = {"one.txt": "one\n"}
    for d in ("a", "b"):
        for i in range(5):
            files[f"src/{d}/f{i}.txt"] = f"{d} {i}\n"
    dockerfile = "".join(textwrap.dedent(part) for part in (BASE, final + "\n", FINAL_STEPS))
    dockerfile = dockerfile.format(busybox=lamina.images.busybox)
    return write_context(tmp / "context", dockerfile, files)


def digests(lamina: Lamina, context: Path, tmp: Path, *args: str) -> dict[str, tuple[str, str]]:
    """Build with and without skeleton steps: setting -> (digest, output)."""
    found = {}
    for setting in ("true", "false"):
        digest_file = tmp / f"{setting}.digest"
        run = lamina.build(context, "--no-push", "--digest-file", str(digest_file), "--oci-layout-path",
                           str(tmp / f"{setting}.oci"), "--work-dir", str(tmp / "work"), "--verbosity", "debug",
                           f"--skeleton-steps={setting}", *args, extra_env=EPOCH, subprocess=True).check()
        found[setting] = (digest_file.read_text().strip(), run.output)
    return found


@pytest.mark.parametrize("final", ["FROM base AS final", "FROM {busybox} AS final"],
                         ids=["from-a-stage", "from-an-image"])
@pytest.mark.parametrize("mode", [(), ("--rootfs-mode", "unpack")], ids=["default", "unpack"])
def test_steps_on_the_skeleton_make_the_layers_of_the_unpacked_stage(lamina: Lamina, tmp_path: Path, final: str,
                                                                     mode: tuple[str, ...]) -> None:
    found = digests(lamina, context(lamina, tmp_path, final), tmp_path, *mode)
    on, off = found["true"], found["false"]
    assert on[0] == off[0], (f"skeleton {on[0]}, unpacked {off[0]}\n"
                             + describe_difference(tmp_path / "false.oci", tmp_path / "true.oci"))
    steps = FINAL_STEPS.count("\n    COPY") + FINAL_STEPS.count("\n    WORKDIR")
    assert on[1].count("made on a skeleton of") == steps, on[1]
    assert "made on a skeleton of" not in off[1]


def test_a_run_after_the_copies_unpacks_the_stage(lamina: Lamina, tmp_path: Path) -> None:
    """A COPY that a RUN or an ADD follows in its stage is made on the unpacked stage (they need it anyway), and
    so is every step once the stage is unpacked."""
    ctx = write_context(tmp_path / "context", f"""
        FROM {lamina.images.busybox}
        COPY one.txt /one.txt
        RUN cat /one.txt > /two.txt
        COPY one.txt /three.txt
        ADD one.txt /four.txt
        COPY one.txt /five.txt
    """, {"one.txt": "one\n"})
    found = digests(lamina, ctx, tmp_path)
    assert found["true"][0] == found["false"][0]
    assert "made on a skeleton of" not in found["true"][1]



def test_a_copy_into_the_root_directory_unpacks_the_stage(lamina: Lamina, tmp_path: Path) -> None:
    """A destination of / would make the whole filesystem the skeleton: the stage is unpacked instead, and says so."""
    ctx = write_context(tmp_path / "context", f"""
        FROM {lamina.images.busybox}
        COPY one.txt /
    """, {"one.txt": "one\n"})
    found = digests(lamina, ctx, tmp_path)
    assert found["true"][0] == found["false"][0]
    assert "COPY cannot be made on a skeleton (the destination is the whole filesystem): unpacking stage" \
        in found["true"][1]
