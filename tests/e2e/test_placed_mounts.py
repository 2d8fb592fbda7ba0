"""``RUN --mount`` without mount(2): the chroot sandbox (and inplace, see tests/container/) *places* each mount (a
cache directory renamed in and back, a copy of a bind's source, a secret file, an empty directory for a tmpfs, a
link to the socket relaying to an SSH agent) and
must give the very layers the namespace sandbox gives with real mounts: the same image digest with
SOURCE_DATE_EPOCH, nothing of a mount left in a layer or on the host, the context and the caches as a mount
leaves them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lamina.build.handlers.run_mounts import cache_dir_name
from tests.e2e.conftest import Lamina
from tests.e2e.helpers import AGENT_KEYS, LaminaRun, unpack, write_context

pytestmark = pytest.mark.e2e

SECRET = "placed-secret-value-42"
EPOCH = "1700000000"


def mounts_dockerfile(busybox: str, debian: str) -> str:
    """Every mount type, over targets that exist in the image (hidden for the run) and that do not (stubs)."""
    return f"""
        FROM {busybox} AS builder
        RUN mkdir /out && echo built > /out/artifact

        FROM {debian}
        RUN --mount=type=secret,id=tok,target=/etc/app.key,mode=0440,uid=1,gid=2 \\
            stat -c '%a %u %g %s' /etc/app.key > /key-meta && grep -q placed-secret /etc/app.key
        RUN --mount=type=secret,id=tok grep -c placed /run/secrets/tok > /run-secrets-count
        RUN --mount=type=secret,id=tok,env=TOKEN test -n "$TOKEN" && echo "${{#TOKEN}}" > /env-length
        RUN --mount=type=cache,target=/root/.cache/thing echo hi >> /root/.cache/thing/log \\
            && wc -l < /root/.cache/thing/log > /cache-count
        RUN --mount=type=cache,target=/var/cache/apt,sharing=locked ls -A /var/cache/apt | wc -l > /apt-hidden \\
            && touch /var/cache/apt/written
        RUN --mount=target=/ctx cat /ctx/data/hello.txt > /copied && test ! -e /ctx/ignored.txt
        RUN --mount=type=bind,source=data,target=/data,rw echo changed > /data/hello.txt \\
            && echo x > /data/new && cat /data/hello.txt > /rw-seen
        RUN --mount=type=bind,source=data/hello.txt,target=/etc/one.txt cat /etc/one.txt > /single
        RUN --mount=type=bind,from=builder,source=/out,target=/mnt/out cat /mnt/out/artifact > /artifact
        RUN --mount=type=tmpfs,target=/tmp/scratch echo data > /tmp/scratch/f && test -f /tmp/scratch/f \\
            && echo ok > /tmpfs-ok
        RUN --mount=type=tmpfs,target=/usr/share/doc ls -A /usr/share/doc | wc -l > /doc-hidden
        WORKDIR /work
        RUN --mount=type=cache,target=rel,id=nest --mount=type=tmpfs,target=/work/rel/inner \\
            test -d /work/rel/inner && echo ok > /nested
        RUN --mount=type=cache,target=/var/lib/made/by/stub echo x > /var/lib/made/by/stub/f && echo ok > /stub
        RUN --mount=type=tmpfs,target=/opt/t mkdir -p /opt/kept && echo ok > /opt/kept/f
        RUN --mount=type=ssh,id=deploy,required perl -MIO::Socket::UNIX -e '{AGENT_KEYS}' > /ssh-keys \\
            && echo "$SSH_AUTH_SOCK" > /ssh-sock
        RUN --mount=type=ssh,id=deploy,target=/etc/agent.sock,uid=1,mode=0660 \\
            stat -c '%a %u %F' /etc/agent.sock > /ssh-meta
        RUN --mount=type=ssh,id=absent if test -e /run/buildkit/ssh_agent.0; then exit 1; fi \\
            && echo "$SSH_AUTH_SOCK" > /ssh-absent
    """




FILES = {"data/hello.txt": "hello\n", "ignored.txt": "no\n", ".dockerignore": "ignored.txt\n"}


def build_in(lamina: Lamina, tmp: Path, sandbox: str, context: Path) -> tuple[LaminaRun, str]:
    secret = tmp / f"secret-{sandbox}"
    secret.write_text(SECRET)
    key = tmp / f"key-{sandbox}"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    dest = lamina.dest(f"placed-{sandbox}")
    run = lamina.build(context, "--destination", dest, "--sandbox", sandbox, "--rootfs-mode", "unpack",
                       "--secret", f"id=tok,src={secret}", "--ssh", f"deploy={key}",
                       "--mount-cache-dir", str(tmp / f"cache-{sandbox}"),
                       "--work-dir", str(tmp / f"work-{sandbox}"),
                       extra_env={"SOURCE_DATE_EPOCH": EPOCH}).check()
    return run, dest


@pytest.fixture(scope="module")
def builds(lamina: Lamina, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[LaminaRun, str]]:
    tmp = tmp_path_factory.mktemp("placed")
    context = write_context(tmp / "context", mounts_dockerfile(lamina.images.busybox, lamina.images.debian), FILES)
    return {sandbox: build_in(lamina, tmp, sandbox, context) for sandbox in ("namespace", "chroot")}


def test_placed_mounts_give_the_namespace_sandboxs_layers(builds: dict[str, tuple[LaminaRun, str]],
                                                            tmp_path: Path) -> None:
    digests = {sandbox: run.stdout.split("sha256:")[-1][:64] for sandbox, (run, _) in builds.items()}
    if len(set(digests.values())) != 1:  # say which layer differs, and how
        images = {sandbox: unpack(f"docker://{dest}", tmp_path / sandbox) for sandbox, (_, dest) in builds.items()}
        ns, ch = images["namespace"], images["chroot"]
        for index, (a, b) in enumerate(zip(ns.manifest["layers"], ch.manifest["layers"], strict=True)):
            if a["digest"] != b["digest"]:
                pytest.fail(f"layer {index} differs: namespace {sorted(ns.layer_names(index))} vs chroot "
                            f"{sorted(ch.layer_names(index))}")
    assert len(set(digests.values())) == 1, digests


def test_what_each_mount_showed(builds: dict[str, tuple[LaminaRun, str]], tmp_path: Path) -> None:
    image = unpack(f"docker://{builds['chroot'][1]}", tmp_path / "image")
    assert image.read("key-meta") == f"440 1 2 {len(SECRET)}\n"
    assert image.read("run-secrets-count") == "1\n"
    assert image.read("env-length") == f"{len(SECRET)}\n"
    assert image.read("cache-count") == "1\n"
    assert image.read("apt-hidden") == "0\n", "the cache mount hides what the image has at its target"
    assert image.read("copied") == "hello\n"
    assert image.read("rw-seen") == "changed\n"
    assert image.read("single") == "hello\n"
    assert image.read("artifact") == "built\n"
    assert image.read("tmpfs-ok") == "ok\n"
    assert image.read("doc-hidden") == "0\n"
    assert image.read("nested") == "ok\n" and image.read("stub") == "ok\n"
    assert image.read("opt/kept/f") == "ok\n"
    assert image.read("ssh-keys") == "1\n", "the agent lamina started for --ssh deploy=KEY holds the key"
    assert image.read("ssh-sock") == "/run/buildkit/ssh_agent.0\n"
    assert image.read("ssh-meta") == "660 1 socket\n"
    assert image.read("ssh-absent") == "/run/buildkit/ssh_agent.0\n", "an optional agent not given is skipped"
    assert not image.exists("run/buildkit") and not image.exists("etc/agent.sock")
    assert not image.exists("etc/app.key") and not image.exists("etc/one.txt") and not image.exists("ctx")
    assert not image.exists("var/lib/made") and not image.exists("opt/t") and not image.exists("work/rel")
    assert not image.exists("var/cache/apt/written") and image.exists("var/cache/apt")
    assert sorted(p.name for p in image.path("usr/share/doc").iterdir()), "the tmpfs hid /usr/share/doc only"
    for index in range(len(image.manifest["layers"])):
        names = image.layer_names(index)
        assert not [n for n in names if ".lamina-hidden-" in n], names


def test_the_host_side_is_left_as_a_mount_leaves_it(builds: dict[str, tuple[LaminaRun, str]],
                                                     tmp_path_factory: pytest.TempPathFactory) -> None:
    for sandbox, (run, _) in builds.items():
        assert SECRET not in run.output, sandbox
    root = next(iter(tmp_path_factory.getbasetemp().glob("placed*")))
    assert (root / "context" / "data" / "hello.txt").read_text() == "hello\n"
    assert not (root / "context" / "data" / "new").exists()
    for sandbox in ("namespace", "chroot"):
        caches = root / f"cache-{sandbox}"
        assert (caches / cache_dir_name("/root/.cache/thing") / "log").read_text() == "hi\n", sandbox
        assert (caches / cache_dir_name("/var/cache/apt") / "written").exists(), sandbox
        assert (caches / cache_dir_name("/var/lib/made/by/stub") / "f").exists(), sandbox
        assert list((root / f"work-{sandbox}").iterdir()) == [], sandbox
