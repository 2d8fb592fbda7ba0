"""The overlay root filesystem (an EROFS image of the layers under per-step uppers, in memory or on disk) must
make the very layers that unpacking into a directory makes: the same builds, with SOURCE_DATE_EPOCH, in every
mode give the same image digest, stage by stage (``--target``), and the layers pass skopeo/umoci."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Lamina
from tests.e2e.helpers import LaminaRun, unpack, write_context

pytestmark = pytest.mark.e2e

EPOCH = {"SOURCE_DATE_EPOCH": "1700000000"}
MODES = {
    "unpack": ("--rootfs-mode", "unpack"),
    "overlay, in memory": ("--rootfs-mode", "overlay"),
    "overlay, on disk": ("--rootfs-mode", "overlay", "--rootfs-memory", "0"),
}


def overlay_possible() -> bool:
    return os.geteuid() == 0 and os.path.exists("/dev/loop-control")


def digest_of(lamina: Lamina, context: Path, tmp: Path, name: str, *args: str) -> tuple[str, LaminaRun]:
    digest_file = tmp / f"{name}.digest"
    run = lamina.build(context, "--no-push", "--digest-file", str(digest_file), "--work-dir", str(tmp / "work"),
                       *args, extra_env=EPOCH).check()
    return digest_file.read_text().strip(), run


def layer_listings(layout: Path) -> list[list[str]]:
    """Each layer of the OCI layout's image as lines: name, type, mode, owner, size, mtime, link, PAX records."""
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((layout / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_text())
    listings = []
    for layer in manifest["layers"]:
        with tarfile.open(layout / "blobs" / "sha256" / layer["digest"][7:]) as tf:
            listings.append([f"{m.name} {m.type!r} {m.mode:o} {m.uid}:{m.gid} {m.size} {m.mtime} {m.linkname} "
                             f"{sorted(m.pax_headers.items())}" for m in tf])
    return listings


def describe_difference(a: Path, b: Path) -> str:
    lines = []
    for number, (left, right) in enumerate(zip(layer_listings(a), layer_listings(b), strict=False), 1):
        if left != right:
            lines.append(f"layer {number}: only in {a.name}: {sorted(set(left) - set(right))[:10]}; "
                         f"only in {b.name}: {sorted(set(right) - set(left))[:10]}")
    return "\n".join(lines)


def assert_same_in_every_mode(lamina: Lamina, context: Path, tmp: Path, *args: str) -> str:
    if not overlay_possible():
        pytest.skip("overlay root filesystems need root and loop devices")
    digests: dict[str, str] = {}
    layouts: dict[str, Path] = {}
    for mode, flags in MODES.items():
        name = mode.replace(" ", "-").replace(",", "")
        layouts[mode] = tmp / f"{name}.oci"
        digests[mode] = digest_of(lamina, context, tmp, name, *flags, "--oci-layout-path", str(layouts[mode]),
                                  *args)[0]
    for mode, digest in digests.items():
        assert digest == digests["unpack"], (f"{mode}: {digest}, unpack: {digests['unpack']}\n"
                                             + describe_difference(layouts["unpack"], layouts[mode]))
    return digests["unpack"]


DEBIAN_STEPS = """
    FROM {debian} AS base
    RUN rm -rf /usr/share/doc /etc/motd && rm /usr/bin/perl5.36.0 && chmod 700 /root
    RUN mkdir -p /scratch/sub && echo tmp > /scratch/sub/file && echo keep > /scratch/keep \\
        && ln /scratch/keep /scratch/hardlink && ln -s keep /scratch/symlink
    RUN rm -rf /scratch/sub /usr/share/man && mkdir /usr/share/man && echo new > /usr/share/man/NEW \\
        && rm /etc/issue && mkdir /etc/issue && echo dir > /etc/issue/now-a-dir \\
        && rm -rf /etc/apt/apt.conf.d && echo now-a-file > /etc/apt/apt.conf.d \\
        && touch -d @1600000000 /etc/hostname && chown 1:1 /etc/shells && echo more >> /etc/debian_version
    WORKDIR /app
    COPY src/ ./src/
    COPY one.txt /lib/one.txt
    COPY one.txt /etc/os-release
    RUN find /app/src -type f | wc -l > /app/count && chmod -R go-w /app && mv /app/src/b /app/src/b2
    COPY --link one.txt /linked/one.txt
    ADD archive.tar /unpacked/
    FROM {busybox}
    COPY --from=base /app /app
    COPY --from=base /scratch /scratch
    RUN rm -rf /app/src/a && echo final > /final
"""


def debian_context(lamina: Lamina, tmp: Path) -> Path:
    import io
    import tarfile

    files: dict[str, str | bytes] = {"one.txt": "one\n"}
    for d in ("a", "b", "c"):
        for i in range(40):
            files[f"src/{d}/f{i}.txt"] = f"{d} {i}\n" * (i + 1)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tf:
        for name, data in (("in/x.txt", b"x\n"), ("in/y.txt", b"y" * 5000)):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_650_000_000
            tf.addfile(info, io.BytesIO(data))
    files["archive.tar"] = buffer.getvalue()
    return write_context(tmp / "context", DEBIAN_STEPS.format(debian=lamina.images.debian,
                                                              busybox=lamina.images.busybox), files)


def test_debian_stage_layers_are_the_same_in_every_mode(lamina: Lamina, tmp_path: Path) -> None:
    """Deletions (whiteouts), a directory removed and made again (opaque), a file replaced by a directory and the
    reverse, metadata-only changes of lower files (copy-up), hardlinks, COPY through /lib -> usr/lib, COPY over a
    lower file, --link, ADD of an archive, a rename in a COPYed tree."""
    context = debian_context(lamina, tmp_path)
    assert_same_in_every_mode(lamina, context, tmp_path, "--target", "base")


def test_files_opened_for_writing_but_unchanged_are_in_no_layer(lamina: Lamina, tmp_path: Path) -> None:
    """apt and debconf open files read-write (a lock, a database) without changing them: the overlay copies them
    up, a scan sees nothing. Neither may put them in the layer (found with apt in an unprivileged container)."""
    context = write_context(tmp_path / "context", f"""
        FROM {lamina.images.debian}
        RUN exec 3<>/etc/shells && exec 4<>/usr/bin/dpkg && ln -sf /dev/null /tmp/x && echo changed >> /etc/issue
    """)
    assert_same_in_every_mode(lamina, context, tmp_path)
    names = unpack(f"oci:{tmp_path / 'unpack.oci'}", tmp_path / "image").layer_names(-1)
    assert "etc/issue" in names and "tmp/x" in names
    assert not [name for name in names if name.endswith(("shells", "dpkg"))], names


def test_final_stage_is_the_same_in_every_mode(lamina: Lamina, tmp_path: Path) -> None:
    context = debian_context(lamina, tmp_path)
    assert_same_in_every_mode(lamina, context, tmp_path)


def test_overlay_image_passes_umoci(lamina: Lamina, tmp_path: Path) -> None:
    if not overlay_possible():
        pytest.skip("overlay root filesystems need root and loop devices")
    context = debian_context(lamina, tmp_path)
    dest = lamina.dest("rootfs-modes")
    lamina.build(context, "--destination", dest, "--rootfs-mode", "overlay", "--target", "base").check()
    image = unpack(f"docker://{dest}", tmp_path / "pulled")
    assert not image.exists("usr/share/doc")
    assert not image.exists("scratch/sub")
    assert image.path("usr/share/man/NEW").read_text() == "new\n"
    assert image.path("usr/share/man").is_dir() and len(list(image.path("usr/share/man").iterdir())) == 1
    assert image.path("etc/issue/now-a-dir").read_text() == "dir\n"
    assert image.path("etc/apt/apt.conf.d").read_text() == "now-a-file\n"
    assert image.path("usr/lib/one.txt").read_text() == "one\n"
    assert image.path("etc/os-release").read_text() == "one\n"
    assert image.path("app/count").read_text().strip() == "120"
    assert image.exists("app/src/b2/f0.txt") and not image.exists("app/src/b")
    assert image.path("linked/one.txt").read_text() == "one\n"
    assert image.path("unpacked/in/y.txt").read_bytes() == b"y" * 5000
    assert image.lstat("scratch/keep").st_ino == image.lstat("scratch/hardlink").st_ino
    assert image.path("usr/bin/perl").is_file() and not image.exists("usr/bin/perl5.36.0")
    assert image.lstat("etc/shells").st_uid == 1
    assert oct(image.lstat("root").st_mode & 0o777) == oct(0o700)


def test_a_step_that_fills_its_memory_runs_again_on_disk(lamina: Lamina, tmp_path: Path) -> None:
    """--rootfs-memory 80M and a RUN writing 100 MB: the RUN fills its tmpfs upper, runs again on a disk upper,
    and the image is the one unpacking makes."""
    context = write_context(tmp_path / "context", f"""
        FROM {lamina.images.busybox}
        RUN dd if=/dev/zero of=/big bs=1048576 count=100 && echo after > /after
        COPY one.txt /one.txt
    """, {"one.txt": "one\n"})
    if not overlay_possible():
        pytest.skip("overlay root filesystems need root and loop devices")
    overlay, run = digest_of(lamina, context, tmp_path, "small-memory", "--rootfs-mode", "overlay",
                             "--rootfs-memory", "80M")
    assert "filled its in-memory upper directory: running it again on disk" in run.output, run.describe()
    plain, _ = digest_of(lamina, context, tmp_path, "unpack", "--rootfs-mode", "unpack")
    assert overlay == plain


def test_cache_hit_after_a_step_that_ran_is_stacked(lamina: Lamina, tmp_path: Path) -> None:
    """With RUN not cached, a rebuild runs the RUN (the rootfs is mounted) and then takes the COPY from the cache:
    the hit's layer is stacked on the overlay (an EROFS image of that layer, whiteouts as overlayfs markers) and
    the next RUN sees it; the result is the first build's image, and unpack mode's."""
    if not overlay_possible():
        pytest.skip("overlay root filesystems need root and loop devices")
    context = write_context(tmp_path / "context", f"""
        FROM {lamina.images.debian}
        RUN echo hi > /hi && rm -rf /usr/share/doc
        COPY one.txt /etc/one.txt
        RUN cat /etc/one.txt /hi > /both && test ! -e /usr/share/doc
    """, {"one.txt": "one\n"})
    cache = f"{lamina.registry.host}/e2e/modes-cache-{os.getpid()}"
    common = ("--cache", "--cache-repo", cache, "--cache-run-layers=false")
    first, _ = digest_of(lamina, context, tmp_path, "first", "--rootfs-mode", "overlay", *common)
    second, run = digest_of(lamina, context, tmp_path, "second", "--rootfs-mode", "overlay", *common)
    assert "1 step(s) from the cache" in run.output, run.describe()
    third, _ = digest_of(lamina, context, tmp_path, "third", "--rootfs-mode", "unpack", *common)
    assert first == second == third


def test_overlay_mode_refused_clearly_where_impossible(lamina: Lamina, tmp_path: Path) -> None:
    """--rootfs-mode overlay with the chroot sandbox: one error line saying why, before anything runs."""
    context = write_context(tmp_path / "context", f"FROM {lamina.images.busybox}\nRUN true\n")
    run = lamina.build(context, "--no-push", "--rootfs-mode", "overlay", "--sandbox", "chroot")
    assert run.returncode != 0
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--rootfs-mode overlay" in errors[0] and "chroot" in errors[0], run.describe()


def test_a_stage_with_many_steps_outgrows_one_page_of_mount_options(lamina: Lamina, tmp_path: Path) -> None:
    """90 RUN steps stack 90 lowers: their absolute paths no longer fit the page mount(2) takes, and the mount
    program with paths relative to the stage directory takes over; the last RUN sees every earlier one."""
    if not overlay_possible():
        pytest.skip("overlay root filesystems need root and loop devices")
    steps = "".join(f"RUN echo {i} > /f{i}\n" for i in range(90))
    context = write_context(tmp_path / "context", f"FROM {lamina.images.busybox}\n{steps}"
                            "RUN test \"$(ls /f* | wc -l)\" = 90 && test \"$(cat /f89)\" = 89\n")
    work = tmp_path / ("deep-" + "w" * 60) / "work"
    lamina.build(context, "--no-push", "--rootfs-mode", "overlay", "--work-dir", str(work)).check()


@pytest.fixture()
def overlay_work_dir(tmp_path: Path) -> Iterator[Path]:
    """A work directory on an overlayfs (as the root of a container is): overlayfs refuses it as an upper."""
    parts = {name: tmp_path / "outer" / name for name in ("lower", "upper", "work", "merged")}
    for path in parts.values():
        path.mkdir(parents=True)
    options = f"lowerdir={parts['lower']},upperdir={parts['upper']},workdir={parts['work']}"
    subprocess.run(["mount", "-t", "overlay", "outer", "-o", options, str(parts["merged"])], check=True,
                   capture_output=True)
    try:
        yield parts["merged"] / "lamina-work"
    finally:
        subprocess.run(["umount", "-l", str(parts["merged"])], check=False, capture_output=True)


def test_a_work_dir_overlayfs_refuses_as_upper_falls_back_to_unpacking(lamina: Lamina, tmp_path: Path,
                                                                       overlay_work_dir: Path) -> None:
    """auto: the stage is unpacked from the start (the same image), even where memory uppers would have worked
    until a step outgrew them (--rootfs-memory 80M, a RUN writing 100 MB: it would then need a disk upper, which
    overlayfs refuses there); overlay: one clear error."""
    if not overlay_possible():
        pytest.skip("overlay root filesystems need root and loop devices")
    context = write_context(tmp_path / "context", f"""
        FROM {lamina.images.busybox}
        COPY one.txt /one.txt
        RUN dd if=/dev/zero of=/big bs=1048576 count=100 && cat /one.txt > /two.txt
    """, {"one.txt": "one\n"})
    # as processes of their own: an in-process build would move this test into a mount namespace of its own, where
    # the fixture could no longer unmount what it mounted
    args = ("--no-push", "--work-dir", str(overlay_work_dir), "--rootfs-memory", "80M", "--digest-file")
    auto = lamina.build(context, *args, str(tmp_path / "auto.digest"), extra_env=EPOCH, subprocess=True)
    auto.check()
    lamina.build(context, *args, str(tmp_path / "plain.digest"), "--rootfs-mode", "unpack", extra_env=EPOCH,
                 subprocess=True).check()
    assert (tmp_path / "auto.digest").read_text() == (tmp_path / "plain.digest").read_text(), auto.describe()
    forced = lamina.build(context, *args, str(tmp_path / "forced.digest"), "--rootfs-mode", "overlay",
                          subprocess=True)
    errors = [line for line in forced.stderr.splitlines() if line.startswith("error:")]
    assert forced.returncode != 0 and len(errors) == 1, forced.describe()
    assert "--rootfs-mode overlay" in errors[0] and "cannot mount overlay" in errors[0], forced.describe()
