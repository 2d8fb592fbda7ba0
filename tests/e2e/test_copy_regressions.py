"""COPY bugs found after the fact, each with the test that failed before its fix."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.conftest import Lamina
from tests.e2e.helpers import unpack, write_context


def test_copy_of_a_directory_onto_a_symlinked_directory_writes_through_it(lamina: Lamina, tmp_path: Path) -> None:
    # Debian's merged /usr: /lib -> usr/lib. COPY rootfs/ / with a rootfs/lib/ directory must put the files into
    # /usr/lib and keep the link (BuildKit resolves destination paths inside the image); replacing /lib with a
    # directory broke every program in the image.
    context = write_context(tmp_path / "ctx", f"FROM {lamina.images.debian}\nCOPY rootfs/ /\nRUN /bin/sh -c true\n",
                            {"rootfs/lib/extra.so": "x\n"})
    dest = lamina.dest("merged-usr")
    lamina.build(context, "--destination", dest).check()
    rootfs = unpack(f"docker://{dest}", tmp_path / "unpacked").rootfs
    assert (rootfs / "lib").is_symlink() and str((rootfs / "lib").readlink()) == "usr/lib"
    assert (rootfs / "usr" / "lib" / "extra.so").read_text() == "x\n"
