"""Choosing the RUN sandbox from probed facts (tables), and the pure helpers of the sandboxes."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from lamina.errors import RootfsError, SandboxError
from lamina.sandbox.base import RunSpec
from lamina.sandbox.detect import (
    Facts,
    choose,
    effective_capabilities,
    parse_subordinate,
    probe,
)
from lamina.sandbox.inplace import InplaceRunner, check_allowed, ignored_paths, is_ignored
from lamina.sandbox.rootless import id_map
from lamina.sandbox.runners import Interrupted, cleanup_created, first_missing, terminating
from lamina.syscalls import CAP_MKNOD, CAP_SYS_ADMIN, CAP_SYS_CHROOT

ALL_CAPS = (1 << 41) - 1
DOCKER_CAPS = (1 << 0) | (1 << 1) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) \
    | (1 << 13) | (1 << CAP_SYS_CHROOT) | (1 << CAP_MKNOD) | (1 << 29) | (1 << 31)
SUB = ((100000, 65536),)

ROOT_HOST = Facts(euid=0, capabilities=ALL_CAPS, can_unshare=True, can_unshare_user=False)
ROOT_UNPRIVILEGED = Facts(euid=0, capabilities=DOCKER_CAPS, can_unshare=False, can_unshare_user=False,
                          refusals=("unshare: Operation not permitted",))
ROOT_NO_CHROOT = Facts(euid=0, capabilities=DOCKER_CAPS & ~(1 << CAP_SYS_CHROOT), can_unshare=False,
                       can_unshare_user=False)
ROOT_NO_CHROOT_RUNTIME = Facts(euid=0, capabilities=0, can_unshare=False, can_unshare_user=False,
                               in_runtime_image=True)
USER_READY = Facts(euid=1000, capabilities=0, can_unshare=False, can_unshare_user=True, subuids=SUB, subgids=SUB,
                   has_newidmap=True)
USER_NO_SUBIDS = Facts(euid=1000, capabilities=0, can_unshare=False, can_unshare_user=True, has_newidmap=True)
USER_NO_USERNS = Facts(euid=1000, capabilities=0, can_unshare=False, can_unshare_user=False, subuids=SUB,
                       subgids=SUB, has_newidmap=True, refusals=("unshare: Operation not permitted",))
USER_NO_TOOLS = Facts(euid=1000, capabilities=0, can_unshare=False, can_unshare_user=True, subuids=SUB,
                      subgids=SUB)
INNER = Facts(euid=0, capabilities=ALL_CAPS, can_unshare=True, can_unshare_user=True, rootless_inner=True)
ROOT_RUNTIME = Facts(euid=0, capabilities=DOCKER_CAPS, can_unshare=False, can_unshare_user=False,
                     in_runtime_image=True)


@pytest.mark.parametrize(("requested", "facts", "force", "expected"), [
    ("auto", ROOT_HOST, False, "namespace"),
    ("auto", ROOT_UNPRIVILEGED, False, "chroot"),
    ("auto", ROOT_RUNTIME, False, "inplace"),  # in lamina's image: RUN gets the container's /proc, /sys, /dev
    ("auto", ROOT_NO_CHROOT_RUNTIME, False, "inplace"),
    ("auto", USER_READY, False, "rootless"),
    ("auto", INNER, False, "namespace"),
    ("rootless", INNER, False, "namespace"),  # the re-executed build inside the user namespace
    ("namespace", ROOT_HOST, False, "namespace"),
    ("chroot", ROOT_HOST, False, "chroot"),
    ("chroot", ROOT_UNPRIVILEGED, False, "chroot"),
    ("rootless", USER_READY, False, "rootless"),
    ("inplace", ROOT_RUNTIME, False, "inplace"),
    ("inplace", ROOT_HOST, True, "inplace"),
])
def test_choose(requested: str, facts: Facts, force: bool, expected: str) -> None:
    choice = choose(requested, facts, force=force)
    assert choice.name == expected
    assert choice.reason


def test_auto_says_why_it_builds_in_the_containers_root() -> None:
    facts = Facts(euid=0, capabilities=DOCKER_CAPS, can_unshare=False, can_unshare_user=False,
                  in_runtime_image=True, refusals=("unshare: Operation not permitted",))
    reason = choose("auto", facts).reason
    assert "/proc" in reason and "unshare: Operation not permitted" in reason


@pytest.mark.parametrize(("requested", "facts", "message"), [
    ("namespace", ROOT_UNPRIVILEGED, "mount/PID namespaces are not allowed here (unshare: Operation not permitted)"),
    ("namespace", USER_READY, "needs root"),
    ("rootless", ROOT_HOST, "already runs as root"),
    ("rootless", USER_NO_SUBIDS, "no subordinate ids"),
    ("rootless", USER_NO_USERNS, "user namespaces are not allowed"),
    ("rootless", USER_NO_TOOLS, "apt-get install uidmap"),
    ("chroot", ROOT_NO_CHROOT, "needs CAP_SYS_CHROOT"),
    ("chroot", USER_READY, "needs root"),
    ("inplace", ROOT_HOST, "pass --force"),
    ("inplace", USER_READY, "needs root"),
    ("auto", ROOT_NO_CHROOT, "no sandbox can run RUN steps here"),
    ("auto", USER_NO_SUBIDS, "no subordinate ids"),
    ("bogus", ROOT_HOST, "expected one of auto, namespace, rootless, chroot, inplace"),
])
def test_choose_refuses(requested: str, facts: Facts, message: str) -> None:
    with pytest.raises(SandboxError, match=None) as info:
        choose(requested, facts)
    assert message in str(info.value)


def test_facts_has_capability() -> None:
    assert ROOT_UNPRIVILEGED.has(CAP_SYS_CHROOT) and not ROOT_UNPRIVILEGED.has(CAP_SYS_ADMIN)


@pytest.mark.parametrize(("text", "expected"), [
    ("alice:100000:65536\n", ((100000, 65536),)),
    ("bob:1:2\nalice:100000:65536\nalice:300000:10\n", ((100000, 65536), (300000, 10))),
    ("1000:5:6\n", ((5, 6),)),  # by numeric uid
    ("# alice:1:2\nalice:x:1\nalice:7:0\nalicex:1:1\n", ()),
    ("", ()),
])
def test_parse_subordinate(text: str, expected: tuple[tuple[int, int], ...]) -> None:
    assert parse_subordinate(text, "alice", 1000) == expected


def test_effective_capabilities() -> None:
    assert effective_capabilities("Name:\tx\nCapEff:\t00000000a80425fb\n") == 0xa80425fb
    assert effective_capabilities("Name:\tx\n") == 0


@pytest.mark.parametrize(("host", "ranges", "expected"), [
    (1000, ((100000, 65536),), ["0", "1000", "1", "1", "100000", "65536"]),
    (1000, ((100000, 10), (200000, 5)), ["0", "1000", "1", "1", "100000", "10", "11", "200000", "5"]),
    (1000, (), ["0", "1000", "1"]),
])
def test_id_map(host: int, ranges: tuple[tuple[int, int], ...], expected: list[str]) -> None:
    assert id_map(host, ranges) == expected


def test_probe_reports_this_process() -> None:
    facts = probe({})
    assert facts.euid == os.geteuid()
    assert not facts.rootless_inner
    assert probe({"LAMINA_ROOTLESS_INNER": "1"}).rootless_inner
    if os.geteuid() == 0:
        assert choose("auto", facts).name in ("namespace", "chroot")


# ---------------------------------------------------------------------------------------------------------------
# inplace: refusal and the paths it leaves alone (it is never run on the host's / by the tests)


def test_inplace_refused_outside_the_runtime_image(tmp_path: Path) -> None:
    marker = tmp_path / ".lamina-runtime"
    with pytest.raises(SandboxError, match="pass --force"):
        check_allowed(force=False, marker=marker)
    with pytest.raises(SandboxError, match="runtime image"):
        InplaceRunner(marker=marker)
    check_allowed(force=True, marker=marker)
    marker.touch()
    check_allowed(force=False, marker=marker)


def test_inplace_runner_refuses_a_work_directory_rootfs(tmp_path: Path) -> None:
    (tmp_path / "marker").touch()
    runner = InplaceRunner(marker=tmp_path / "marker")
    spec = RunSpec(rootfs=tmp_path, argv=("true",), env=(), cwd="/", uid=0, gid=0, groups=(0,))
    with pytest.raises(SandboxError, match="runs in / only"):
        runner.run(spec, lambda chunk: None)


def test_ignored_paths_from_mountinfo() -> None:
    mountinfo = (
        "22 1 0:21 / / rw,relatime - overlay overlay rw\n"
        "23 22 0:22 / /proc rw,nosuid - proc proc rw\n"
        "24 22 0:23 / /etc/resolv.conf rw - ext4 /dev/sda1 rw\n"
        "25 22 0:24 / /workspace/with\\040space rw - ext4 /dev/sda1 rw\n"
        "26 22 0:25 / /busybox/ rw - ext4 /dev/sda1 rw\n"
    )
    paths = ignored_paths(mountinfo, extra=("/kaniko", "relative"))
    assert "/" not in paths
    for path in ("/lamina", "/proc", "/sys", "/dev", "/workspace/with space", "/busybox", "/kaniko"):
        assert path in paths
    assert "relative" not in paths
    assert list(paths) == sorted(set(paths))
    assert is_ignored("/lamina/bin/lamina", paths) and is_ignored("/proc", paths)
    assert not is_ignored("/lamina2", paths) and not is_ignored("/etc/passwd", paths)


# ---------------------------------------------------------------------------------------------------------------
# signals and --cleanup


def test_terminating_turns_sigterm_into_an_exit_status() -> None:
    with pytest.raises(Interrupted) as info, terminating():
        os.kill(os.getpid(), signal.SIGTERM)
        signal.pause()  # pragma: no cover - the handler raises first
    assert info.value.exit_code == 128 + signal.SIGTERM
    assert "SIGTERM" in str(info.value)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_cleanup_removes_only_what_the_build_created(tmp_path: Path) -> None:
    existing = tmp_path / "existing"
    existing.mkdir()
    fresh = tmp_path / "a" / "b" / "mounts"
    assert first_missing(fresh) == tmp_path / "a"
    assert first_missing(existing) is None
    with cleanup_created((existing, fresh, None), enabled=True):
        fresh.mkdir(parents=True)
        (existing / "kept").touch()
    assert not (tmp_path / "a").exists()
    assert (existing / "kept").exists()
    with cleanup_created((tmp_path / "c",), enabled=False):
        (tmp_path / "c").mkdir()
    assert (tmp_path / "c").exists()


def _tar_layer(path: Path, entries: list[tuple[str, bytes | None]]) -> Path:
    import io
    import tarfile
    with tarfile.open(path, "w") as tf:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def test_inplace_clear_and_unpack_leave_the_ignored_paths_alone(tmp_path: Path) -> None:
    """On a directory standing for / (never the real one): clearing and unpacking skip the ignored paths."""
    from lamina.rootfs.unpack import unpack_layer
    from lamina.sandbox.inplace import clear_root
    root = tmp_path / "root"
    for rel, text in {"lamina/bin/lamina": "x", "etc/hosts": "hosts", "etc/passwd": "p", "usr/bin/python3": "py",
                      "ctx/Dockerfile": "FROM x", "top.txt": "t"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "link").symlink_to("/etc")
    ignored = ("/ctx", "/etc/hosts", "/lamina")
    with pytest.raises(SandboxError, match="pass --force"):
        clear_root(ignored, force=False, root=root, marker=tmp_path / "missing")
    assert (root / "top.txt").exists()
    (tmp_path / "marker").touch()
    clear_root(ignored, force=False, root=root, marker=tmp_path / "marker")
    left = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    assert left == ["ctx", "ctx/Dockerfile", "etc", "etc/hosts", "lamina", "lamina/bin", "lamina/bin/lamina"]

    (root / "etc/lower.txt").write_text("from a lower layer")
    layer = _tar_layer(tmp_path / "layer.tar", [
        ("etc/", None), ("etc/hosts", b"image hosts"), ("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
        ("lamina/bin/lamina", b"overwritten"), ("ctx/.wh.Dockerfile", b""), ("etc/.wh..wh..opq", b""),
        ("etc/group", b"root:x:0:\n"), ("new.txt", b"new"),
    ])
    unpack_layer(root, layer, keep=ignored)
    assert (root / "etc/hosts").read_text() == "hosts"  # the opaque marker and the entry left it alone
    assert not (root / "etc/lower.txt").exists() and (root / "etc/passwd").exists() and (root / "etc/group").exists()
    assert (root / "lamina/bin/lamina").read_text() == "x" and (root / "ctx/Dockerfile").exists()
    assert (root / "new.txt").read_text() == "new"
    with pytest.raises(RootfsError, match="refusing to unpack a layer over the host's /"):
        unpack_layer(Path("/"), layer)
