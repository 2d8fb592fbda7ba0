"""``RUN --mount`` (bind, cache, tmpfs, secret) and ``RUN --network=none``: real builds on busybox, checked with
skopeo + umoci. Secret values must reach the command and nothing else: no layer, no config, no history, no output.
"""

from __future__ import annotations

import codecs
import json
from pathlib import Path

import pytest

from tests.e2e.conftest import Lamina
from tests.e2e.helpers import LaminaRun, Unpacked, _open_layer, unpack, write_context

pytestmark = pytest.mark.e2e

FILE_SECRET = "hunter2-from-a-file"
ENV_SECRET = "swordfish-from-the-env"


def rot13(text: str) -> str:
    return codecs.encode(text, "rot13")


def built(lamina: Lamina, tmp: Path, name: str, dockerfile: str, files: dict[str, str] | None = None,
          args: tuple[str, ...] = (), extra_env: dict[str, str] | None = None) -> tuple[LaminaRun, Unpacked]:
    context = write_context(tmp / "context", dockerfile, files)
    dest = lamina.dest(name)
    run = lamina.build(context, "--destination", dest, *args, extra_env=extra_env).check()
    return run, unpack(f"docker://{dest}", tmp / "pulled")


def everything_stored(image: Unpacked) -> bytes:
    """Every byte of the image as stored: each layer uncompressed, the config (with its history), the manifest."""
    out = [json.dumps(image.manifest).encode(), json.dumps(image.config).encode()]
    for layer in image.manifest["layers"]:
        with _open_layer(image.blob(layer["digest"])) as raw:
            out.append(raw.read())
    return b"\n".join(out)


def all_layer_names(image: Unpacked) -> set[str]:
    return {name for i in range(len(image.manifest["layers"])) for name in image.layer_names(i)}


# ---------------------------------------------------------------------------------------------------------------
# secrets


@pytest.fixture(scope="module")
def secrets(lamina: Lamina, tmp_path_factory: pytest.TempPathFactory) -> tuple[LaminaRun, Unpacked]:
    tmp = tmp_path_factory.mktemp("secrets")
    secret_file = tmp / "token.txt"
    secret_file.write_text(FILE_SECRET)
    return built(lamina, tmp, "secrets", f"""
        FROM {lamina.images.busybox}
        RUN --mount=type=secret,id=tok tr a-z n-za-m < /run/secrets/tok > /file-rot13 \\
            && stat -c '%a %u %g' /run/secrets/tok > /file-meta
        RUN --mount=type=secret,id=envtok,env=TOKEN echo "$TOKEN" | tr a-z n-za-m > /env-rot13 \\
            && test ! -e /run/secrets/envtok
        RUN --mount=type=secret,id=tok,target=/etc/app.key,mode=0440,uid=1,gid=2 \\
            stat -c '%a %u %g' /etc/app.key > /key-meta && test "$(wc -c < /etc/app.key)" -gt 0
        RUN --mount=type=secret,id=absent test ! -e /run/secrets/absent && echo skipped > /optional
        RUN --mount=type=secret,id=tok cat /run/secrets/tok > /dev/null && echo ran > /ran
    """, args=("--secret", f"id=tok,src={secret_file}", "--secret", "id=envtok,env=LAMINA_TEST_TOKEN"),
        extra_env={"LAMINA_TEST_TOKEN": ENV_SECRET})


def test_secret_file_reaches_the_run(secrets: tuple[LaminaRun, Unpacked]) -> None:
    _, image = secrets
    assert image.read("file-rot13") == rot13(FILE_SECRET)
    assert image.read("file-meta") == "400 0 0\n"  # BuildKit's defaults


def test_secret_env_reaches_the_run(secrets: tuple[LaminaRun, Unpacked]) -> None:
    _, image = secrets
    assert image.read("env-rot13") == rot13(ENV_SECRET) + "\n"
    assert not any(e.startswith("TOKEN=") for e in image.config.get("config", {}).get("Env") or [])


def test_secret_target_mode_and_owner(secrets: tuple[LaminaRun, Unpacked]) -> None:
    _, image = secrets
    assert image.read("key-meta") == "440 1 2\n"
    assert not image.exists("etc/app.key")


def test_missing_optional_secret_is_skipped(secrets: tuple[LaminaRun, Unpacked]) -> None:
    _, image = secrets
    assert image.read("optional") == "skipped\n"


def test_secret_values_are_nowhere_in_the_image_or_output(secrets: tuple[LaminaRun, Unpacked]) -> None:
    run, image = secrets
    stored = everything_stored(image)
    for value in (FILE_SECRET, ENV_SECRET):
        assert value.encode() not in stored
        assert value not in run.output
    assert "RUN /bin/sh -c cat /run/secrets/tok > /dev/null && echo ran > /ran # buildkit" in [
        h.get("created_by") for h in image.config["history"]]


def test_secret_mountpoints_leave_no_trace(secrets: tuple[LaminaRun, Unpacked]) -> None:
    _, image = secrets
    names = all_layer_names(image)
    assert not [n for n in names if n.startswith(("run/secrets", "etc/app.key"))], sorted(names)
    assert not image.exists("run/secrets")


def test_missing_required_secret_is_a_clean_error(lamina: Lamina, tmp_path: Path) -> None:
    context = write_context(tmp_path / "context", f"""
        FROM {lamina.images.busybox}
        RUN --mount=type=secret,id=deploy-key,required=true cat /run/secrets/deploy-key
    """)
    run = lamina.build(context, "--no-push")
    assert run.returncode != 0
    [line] = [line for line in run.error_lines() if line.startswith("error:")]
    assert "secret deploy-key is required" in line and "--secret id=deploy-key,src=PATH" in line
    assert "Traceback" not in run.output


def test_ssh_mount_without_an_agent(lamina: Lamina, tmp_path: Path) -> None:
    """No --ssh: an optional SSH mount is skipped (SSH_AUTH_SOCK still names its target, as BuildKit sets it); a
    required one is an error naming the Dockerfile line and the --ssh to pass."""
    context = write_context(tmp_path / "optional", f"""
        FROM {lamina.images.busybox}
        RUN --mount=type=ssh test "$SSH_AUTH_SOCK" = /run/buildkit/ssh_agent.0 && test ! -e "$SSH_AUTH_SOCK"
    """)
    lamina.build(context, "--no-push").check()
    context = write_context(tmp_path / "required", f"""
        FROM {lamina.images.busybox}
        RUN --mount=type=ssh,id=deploy,required true
    """)
    run = lamina.build(context, "--no-push")
    assert run.returncode != 0
    assert "Dockerfile:2:1: RUN" in run.stderr and "ssh agent deploy is required but was not given: pass --ssh deploy" \
        in run.stderr, run.stderr


# ---------------------------------------------------------------------------------------------------------------
# cache


def test_cache_seeded_from_a_stage_as_buildkit_seeds_it(lamina: Lamina, tmp_path: Path) -> None:
    """dispatchRunMounts: a new cache ``from=`` a stage with a ``source`` is a copy of it, its owner and mode kept
    (lamina made it 0:0 0755, so a RUN as its user could not write); with ``uid``/``mode`` and no ``source`` it is a
    new empty directory with them (setCacheUIDGID), not a copy of the stage's root."""
    _, image = built(lamina, tmp_path, "cache-seed", f"""
        FROM {lamina.images.busybox} AS builder
        RUN mkdir -p /home/app/.cache && echo seed > /home/app/.cache/seeded && chown -R 1000:1000 /home/app \\
            && chmod 0700 /home/app/.cache
        FROM {lamina.images.busybox}
        RUN --mount=type=cache,id=seeded,from=builder,source=/home/app/.cache,target=/c \\
            stat -c '%u %g %a' /c > /seeded-meta && cat /c/seeded > /seeded-content
        RUN --mount=type=cache,id=empty,from=builder,uid=1000,mode=0750,target=/e \\
            stat -c '%u %g %a' /e > /empty-meta && ls -A /e | wc -l > /empty-count
    """, args=("--mount-cache-dir", str(tmp_path / "mount-cache")))
    assert image.read("seeded-meta") == "1000 1000 700\n"
    assert image.read("seeded-content") == "seed\n"
    assert image.read("empty-meta") == "1000 0 750\n"
    assert image.read("empty-count").strip() == "0"


def test_cache_mount_persists_across_builds(lamina: Lamina, tmp_path: Path) -> None:
    cache = tmp_path / "mount-cache"
    _, first = built(lamina, tmp_path / "one", "cache-one", f"""
        FROM {lamina.images.busybox}
        RUN --mount=type=cache,target=/var/cache/thing echo first > /var/cache/thing/marker
        RUN --mount=type=cache,target=/owned,id=owned,uid=1000,gid=100,mode=0700 stat -c '%u %g %a' /owned > /meta
    """, args=("--mount-cache-dir", str(cache)))
    _, second = built(lamina, tmp_path / "two", "cache-two", f"""
        FROM {lamina.images.busybox}
        RUN --mount=type=cache,target=/var/cache/thing cat /var/cache/thing/marker > /seen
        RUN --mount=type=cache,target=/elsewhere,id=/var/cache/thing,ro cat /elsewhere/marker > /seen-by-id
    """, args=("--mount-cache-dir", str(cache)))
    assert second.read("seen") == "first\n"
    assert second.read("seen-by-id") == "first\n"
    assert first.read("meta") == "1000 100 700\n"
    for image in (first, second):
        names = all_layer_names(image)
        assert not [n for n in names if n.startswith(("var/cache/thing", "owned", "elsewhere"))], sorted(names)
        assert not image.exists("var/cache/thing")
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 2


# ---------------------------------------------------------------------------------------------------------------
# bind, tmpfs, --network=none


@pytest.fixture(scope="module")
def mounts(lamina: Lamina, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Unpacked]:
    tmp = tmp_path_factory.mktemp("mounts")
    _, image = built(lamina, tmp, "mounts", f"""
        FROM {lamina.images.busybox} AS builder
        RUN mkdir /out && echo built > /out/artifact

        FROM {lamina.images.busybox}
        RUN --mount=target=/ctx cat /ctx/data/hello.txt > /copied && test ! -e /ctx/ignored.txt \\
            && if touch /ctx/new 2>/dev/null; then exit 1; fi
        RUN --mount=type=bind,source=data,target=/data,rw echo changed > /data/hello.txt \\
            && echo x > /data/new && cat /data/hello.txt > /rw-seen
        RUN --mount=type=bind,source=data/hello.txt,target=/one.txt cat /one.txt > /single
        RUN --mount=type=bind,from=builder,source=/out,target=/mnt/out cat /mnt/out/artifact > /artifact
        RUN --mount=type=tmpfs,target=/scratch,size=1m grep ' /scratch tmpfs ' /proc/mounts > /tmpfs-line \\
            && echo data > /scratch/f && test -f /scratch/f
        RUN --mount=type=tmpfs,target=/frozen,ro if touch /frozen/f 2>/dev/null; then exit 1; fi \\
            && grep ' /frozen tmpfs ro,' /proc/mounts > /tmpfs-ro-line
        RUN --network=none tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' > /ifaces \\
            && cat /sys/class/net/lo/flags > /lo-flags
        RUN mkdir /opt-real && ln -s /opt-real /linked
        WORKDIR /work
        RUN --mount=type=tmpfs,target=/linked/t --mount=type=cache,target=rel,id=nest \\
            --mount=type=tmpfs,target=/work/rel/inner \\
            grep -q ' /opt-real/t tmpfs ' /proc/mounts && grep -q ' /work/rel/inner tmpfs ' /proc/mounts \\
            && echo ok > /nested
    """, files={"data/hello.txt": "hello\n", "ignored.txt": "no\n", ".dockerignore": "ignored.txt\n"},
        args=("--mount-cache-dir", str(tmp / "mount-cache")))
    return tmp / "context", image


def test_bind_from_context_is_readable_and_read_only(mounts: tuple[Path, Unpacked]) -> None:
    context, image = mounts
    assert image.read("copied") == "hello\n"
    assert not (context / "new").exists()


def test_rw_bind_writes_are_discarded(mounts: tuple[Path, Unpacked]) -> None:
    context, image = mounts
    assert image.read("rw-seen") == "changed\n"
    assert (context / "data" / "hello.txt").read_text() == "hello\n"
    assert not (context / "data" / "new").exists()


def test_bind_a_single_file(mounts: tuple[Path, Unpacked]) -> None:
    _, image = mounts
    assert image.read("single") == "hello\n"


def test_bind_from_a_stage(mounts: tuple[Path, Unpacked]) -> None:
    _, image = mounts
    assert image.read("artifact") == "built\n"


def test_tmpfs_mount(mounts: tuple[Path, Unpacked]) -> None:
    _, image = mounts
    assert "size=1024k" in image.read("tmpfs-line")
    assert image.read("tmpfs-ro-line").startswith("tmpfs /frozen tmpfs ro,")  # type=tmpfs,ro: read-only


def test_mount_targets_are_not_in_the_image(mounts: tuple[Path, Unpacked]) -> None:
    _, image = mounts
    names = all_layer_names(image)
    for target in ("ctx", "data", "one.txt", "mnt/out", "scratch", "frozen"):
        assert not [n for n in names if n == target or n.startswith(target + "/")], (target, sorted(names))
        assert not image.exists(target), target


def test_symlinked_relative_and_nested_targets(mounts: tuple[Path, Unpacked]) -> None:
    _, image = mounts
    assert image.read("nested") == "ok\n"
    assert sorted(image.path("opt-real").iterdir()) == []
    assert sorted(p.name for p in image.path("work").iterdir()) == []


def test_network_none_has_only_loopback_up(mounts: tuple[Path, Unpacked]) -> None:
    _, image = mounts
    assert image.read("ifaces").split() == ["lo"]
    assert int(image.read("lo-flags"), 16) & 0x1  # IFF_UP
