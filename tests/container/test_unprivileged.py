"""lamina's image in a real, unprivileged Docker container (Docker's default capabilities and seccomp profile, no
--privileged), run as the GitHub runner runs a container action and as GitLab's Docker executor runs a job.

Dockerfiles that need what a plain chroot lacks (/proc, /sys, /dev/pts, /dev/shm, every ``RUN --mount`` type)
must build there exactly as they build as root on the host: the same image digest with SOURCE_DATE_EPOCH.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.container.conftest import HOST_CA_BUNDLE, Container
from tests.e2e.helpers import AGENT_KEYS, clean_environ, lamina_in_process, unpack, write_context
from tests.support.baseimages import BaseImages
from tests.support.http_files import git, publish_bare, serve_directory
from tests.support.registry import RunningRegistry

pytestmark = pytest.mark.e2e

EPOCH = "1700000000"
SECRET = "container-secret-value-7"
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def host_build(registry: RunningRegistry, context: Path, dest: str, tmp: Path, *args: str) -> str:
    """lamina as root on the host (the namespace sandbox): the reference digest."""
    empty = tmp / "host-docker-config"
    empty.mkdir(exist_ok=True)
    run = lamina_in_process(["build", "--context", str(context), "--destination", dest, "--insecure-registry",
                             registry.host, "--mount-cache-dir", str(tmp / "host-mount-cache"), *args],
                            clean_environ({"SOURCE_DATE_EPOCH": EPOCH, "LAMINA_TEST_SECRET": SECRET},
                                          docker_config=empty))
    run.check()
    assert "sandbox: namespace" in run.output, run.describe()
    found = DIGEST.findall(run.stdout)
    assert found, run.describe()
    return str(found[-1])


def action_build(container: Container, context: Path, dest: str, tmp: Path,
                 inputs: dict[str, str] | None = None) -> tuple[str, str]:
    """The same build through the GitHub Action in the unprivileged container: (digest, log)."""
    # the image compared, not its attestations (the Action's default provenance would put an index at the tag)
    given = {"tags": dest, "push": "true", "insecure-registry": container.registry.host, "provenance": "false",
             **(inputs or {})}
    status, log, outputs = container.github_action(context, tmp / f"home-{len(list(tmp.glob('home-*')))}", given,
                                                   env={"SOURCE_DATE_EPOCH": EPOCH})
    assert status == 0, log[-6000:]
    assert "sandbox: inplace" in log, log[-3000:]
    return outputs["digest"], log


def differences(a: str, b: str, tmp: Path) -> str:
    """Which layer entries differ between two images (for a useful failure message)."""
    left, right = unpack(f"docker://{a}", tmp / "left"), unpack(f"docker://{b}", tmp / "right")
    lines = []
    for index, (x, y) in enumerate(zip(left.manifest["layers"], right.manifest["layers"], strict=False)):
        if x["digest"] != y["digest"]:
            names_left, names_right = set(left.layer_names(index)), set(right.layer_names(index))
            lines.append(f"layer {index}: only in {a}: {sorted(names_left - names_right)[:20]}; only in {b}: "
                         f"{sorted(names_right - names_left)[:20]}")
            for name in sorted(set(left.layer_names(index)) & set(right.layer_names(index))):
                lp, rp = left.path(name), right.path(name)
                if lp.is_file() and rp.is_file() and not lp.is_symlink() and lp.read_bytes() != rp.read_bytes():
                    lines.append(f"  content differs: {name}")
    if len(left.manifest["layers"]) != len(right.manifest["layers"]):
        lines.append(f"layer counts {len(left.manifest['layers'])} vs {len(right.manifest['layers'])}")
    return "\n".join(lines[:60]) or "same layers; config differs"


def same_image(container: Container, context: Path, name: str, tmp: Path, *, host_args: tuple[str, ...] = (),
               inputs: dict[str, str] | None = None) -> tuple[str, str]:
    """Build ``context`` on the host and in the container; assert the digests are equal; return (digest, log)."""
    host_dest = f"{container.registry.host}/unpriv/{name}-host:1"
    action_dest = f"{container.registry.host}/unpriv/{name}-action:1"
    expected = host_build(container.registry, context, host_dest, tmp, *host_args)
    digest, log = action_build(container, context, action_dest, tmp, inputs)
    if digest != expected:
        pytest.fail(f"{name}: the container built {digest}, the host {expected}\n"
                    f"{differences(host_dest, action_dest, tmp)}")
    return digest, log


# ---------------------------------------------------------------------------------------------------------------


def test_run_sees_proc_sys_and_dev(container: Container, base_images: BaseImages, tmp_path: Path) -> None:
    """What a plain chroot lacks: a program that resolves /proc/self/exe and reads /proc/cpuinfo and
    /proc/meminfo, /sys, a devpts with ptmx, a writable /dev/shm."""
    context = write_context(tmp_path / "ctx", f"""
        FROM {base_images.debian}
        RUN readlink /proc/self/exe > /exe.txt && grep -q '^processor' /proc/cpuinfo \\
            && grep -q '^MemTotal' /proc/meminfo && test -d /sys/class && test -c /dev/null \\
            && test -d /dev/pts && test -e /dev/ptmx && echo x > /dev/shm/probe && rm /dev/shm/probe \\
            && test "$(readlink -f /proc/1/root)" = / && echo ok > /checked.txt
    """)
    _, log = same_image(container, context, "proc", tmp_path)
    image = unpack(f"docker://{container.registry.host}/unpriv/proc-action:1", tmp_path / "image")
    assert image.read("exe.txt") == "/usr/bin/readlink\n"
    assert image.read("checked.txt") == "ok\n"
    assert "no /proc" not in log
    names = {n for i in range(len(image.manifest["layers"])) for n in image.layer_names(i)}
    assert not [n for n in names if n.startswith(("proc/", "sys/", "dev/", "lamina", "github"))], sorted(names)


def test_secrets_input_reaches_run_mount_secret(container: Container, base_images: BaseImages,
                                                tmp_path: Path) -> None:
    """The Action's ``secrets`` input is RUN --mount=type=secret (file and env forms), and nowhere else."""
    context = write_context(tmp_path / "ctx", f"""
        FROM {base_images.debian}
        RUN --mount=type=secret,id=token sha256sum /run/secrets/token | cut -d' ' -f1 > /file-sha.txt
        RUN --mount=type=secret,id=token,env=TOKEN,target=/etc/token.key,mode=0400 \\
            printf %s "$TOKEN" | sha256sum | cut -d' ' -f1 > /env-sha.txt && stat -c %a /etc/token.key > /mode.txt
    """)
    expected = hashlib.sha256(SECRET.encode()).hexdigest()
    _, log = same_image(container, context, "secret", tmp_path,
                        host_args=("--secret", "id=token,env=LAMINA_TEST_SECRET"),
                        inputs={"secrets": f"token={SECRET}"})
    image = unpack(f"docker://{container.registry.host}/unpriv/secret-action:1", tmp_path / "image")
    assert image.read("file-sha.txt") == image.read("env-sha.txt") == expected + "\n"
    assert image.read("mode.txt") == "400\n"
    assert [line for line in log.splitlines() if SECRET in line] == [f"::add-mask::{SECRET}"]  # masked, once
    assert not image.exists("etc/token.key") and not image.exists("run/secrets/token")


def test_ssh_input_reaches_run_mount_ssh(container: Container, base_images: BaseImages, tmp_path: Path) -> None:
    """The Action's ``ssh`` input is RUN --mount=type=ssh: a key file of the workspace, served by the ssh-agent
    lamina starts in its image before / is cleared, and an agent's socket in the workspace, relayed."""
    context = write_context(tmp_path / "ctx", f"""
        FROM {base_images.debian}
        RUN --mount=type=ssh,id=deploy,required perl -MIO::Socket::UNIX -e '{AGENT_KEYS}' > /deploy-keys
        RUN --mount=type=ssh,required perl -MIO::Socket::UNIX -e '{AGENT_KEYS}' > /default-keys \\
            && echo "$SSH_AUTH_SOCK" > /sock.txt
    """)
    for name in ("deploy", "one", "two"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(context / f"{name}_key")],
                       check=True)
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(context / "agent.sock")], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        for _ in range(500):
            if (context / "agent.sock").is_socket():
                break
            time.sleep(0.01)
        subprocess.run(["ssh-add", "-q", str(context / "one_key"), str(context / "two_key")], check=True,
                       env={"SSH_AUTH_SOCK": str(context / "agent.sock"), "PATH": "/usr/bin:/bin"})
        same_image(container, context, "ssh", tmp_path,
                   host_args=("--ssh", f"deploy={context / 'deploy_key'}", "--ssh", f"default={context / 'agent.sock'}"),
                   inputs={"ssh": "deploy=/github/workspace/deploy_key\ndefault=/github/workspace/agent.sock"})
    finally:
        agent.terminate()
        agent.wait()
    image = unpack(f"docker://{container.registry.host}/unpriv/ssh-action:1", tmp_path / "image")
    assert image.read("deploy-keys") == "1\n"
    assert image.read("default-keys") == "2\n"
    assert image.read("sock.txt") == "/run/buildkit/ssh_agent.0\n"
    assert not image.exists("run/buildkit")


def test_pip_with_a_cache_and_a_bound_requirements_file(container: Container, python_base: str,
                                                        tmp_path: Path) -> None:
    """Docker's recommended pip pattern: requirements.txt bound, ~/.cache/pip a cache mount; the host's CA
    bundle bound for the RUN only (pip verifies PyPI against it)."""
    if not HOST_CA_BUNDLE.is_file():
        pytest.fail(f"{HOST_CA_BUNDLE} is missing (apt-get install ca-certificates)", pytrace=False)
    context = write_context(tmp_path / "ctx", f"""
        FROM {python_base}
        RUN --mount=type=bind,source=requirements.txt,target=/tmp/requirements.txt \\
            --mount=type=bind,source=ca.crt,target=/etc/ssl/certs/ca-certificates.crt \\
            --mount=type=cache,target=/root/.cache/pip \\
            PIP_CERT=/etc/ssl/certs/ca-certificates.crt python3 -m pip install -q --no-compile \\
                --disable-pip-version-check --root-user-action=ignore -r /tmp/requirements.txt \\
            && python3 -B -c 'import six; print(six.__version__)' > /six.txt \\
            && touch /root/.cache/pip/probe
    """, {"requirements.txt": "six==1.16.0\n"})
    shutil.copy2(HOST_CA_BUNDLE, context / "ca.crt")
    same_image(container, context, "pip", tmp_path)
    image = unpack(f"docker://{container.registry.host}/unpriv/pip-action:1", tmp_path / "image")
    assert image.read("six.txt") == "1.16.0\n"
    assert list((tmp_path / "host-mount-cache").glob("*/probe")), "the cache mount is the cache directory"
    assert not image.exists("root/.cache/pip") and not image.exists("tmp/requirements.txt")
    assert not image.exists("etc/ssl/certs/ca-certificates.crt")


def test_apt_with_cache_mounts_and_a_jdk(container: Container, base_images: BaseImages, tmp_path: Path) -> None:
    """apt-get with its caches as cache mounts (Docker's recipe), installing a JRE whose package scripts run
    java (which refuses to start without /proc), with /dev/pts for apt's log."""
    context = write_context(tmp_path / "ctx", f"""
        FROM {base_images.debian}
        RUN rm -f /etc/apt/apt.conf.d/docker-clean \\
            && echo 'Binary::apt::APT::Keep-Downloaded-Packages "true";' > /etc/apt/apt.conf.d/keep-cache
        RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \\
            --mount=type=cache,target=/var/lib/apt/lists,sharing=locked \\
            apt-get update -qq && apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless hello \\
                > /dev/null \\
            && java -version 2>&1 | head -1 | cut -d'"' -f2 | cut -d. -f1 > /java-major.txt && hello > /hello.txt \\
            && rm -rf /var/log/apt /var/log/dpkg.log /var/log/alternatives.log /var/cache/ldconfig/aux-cache \\
                /var/cache/debconf/*-old /etc/ssl/certs/java/cacerts /usr/lib/jvm/*/lib/server/classes*.jsa
    """)
    _, log = same_image(container, context, "apt", tmp_path)
    assert "Is /dev/pts mounted" not in log
    image = unpack(f"docker://{container.registry.host}/unpriv/apt-action:1", tmp_path / "image")
    assert image.read("java-major.txt") == "17\n"
    assert image.read("hello.txt") == "Hello, world!\n"
    assert not image.exists("var/lib/apt/lists/lock")


def test_gitlab_job_with_an_empty_entrypoint(container: Container, base_images: BaseImages, tmp_path: Path) -> None:
    """GitLab's Docker executor: ``entrypoint: [""]``, the script through a shell, unprivileged; the job starts its
    own ssh-agent (in /tmp, which the inplace sandbox clears but for the agent's socket) for RUN --mount=type=ssh."""
    project = write_context(tmp_path / "project", f"""
        FROM {base_images.debian}
        RUN --mount=type=cache,target=/var/cache/thing --mount=type=tmpfs,target=/scratch \\
            echo hi > /var/cache/thing/x && test -d /scratch && grep -c '^processor' /proc/cpuinfo > /dev/null \\
            && echo built > /out.txt
        RUN --mount=type=ssh,required perl -MIO::Socket::UNIX -e '{AGENT_KEYS}' > /ssh-keys.txt
    """)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(project / "deploy_key")], check=True)
    dest = f"{container.registry.host}/unpriv/gitlab:1"
    status, log = container.gitlab_job(project, "eval $(ssh-agent -s) >/dev/null && ssh-add -q deploy_key && "
                                       "lamina build --context . --destination " + dest +
                                       f" --insecure-registry {container.registry.host} --provenance=false",
                                       variables={"SOURCE_DATE_EPOCH": EPOCH, "LAMINA_SSH": "default"})
    assert status == 0, log[-6000:]
    assert "sandbox: inplace" in log
    host_dest = f"{container.registry.host}/unpriv/gitlab-host:1"
    expected = host_build(container.registry, project, host_dest, tmp_path, "--ssh", f"default={project / 'deploy_key'}")
    assert expected in log, differences(host_dest, dest, tmp_path)
    assert unpack(f"docker://{dest}", tmp_path / "image").read("ssh-keys.txt") == "1\n"


@pytest.fixture
def git_server(tmp_path: Path) -> Iterator[str]:
    """A bare repository served over (dumb) HTTP on loopback: ``<url>/repo.git``, tag v1."""
    work = tmp_path / "repo-work"
    work.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=work)
    (work / "docs").mkdir()
    (work / "docs" / "readme.md").write_text("from git\n")
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "one", cwd=work)
    git("tag", "v1", cwd=work)
    publish_bare(work, tmp_path / "www")
    with serve_directory(tmp_path / "www") as url:
        yield url


def test_add_from_git_and_stages_copying_from_each_other(container: Container, base_images: BaseImages,
                                                        git_server: str, tmp_path: Path) -> None:
    """What building in / used to lose: ADD from git after / is cleared (cloned first, while git is there), and
    several stages copying from one another (each stage's files moved out of / when it ends)."""
    context = write_context(tmp_path / "ctx", f"""
        FROM {base_images.busybox} AS one
        RUN echo one > /one.txt
        FROM {base_images.debian} AS two
        COPY --from=one /one.txt /from-one.txt
        RUN echo two > /two.txt
        FROM two AS three
        ADD {git_server}/repo.git#v1:docs /docs
        RUN cat /from-one.txt /two.txt /docs/readme.md > /three.txt
        FROM {base_images.busybox}
        COPY --from=one /one.txt /one.txt
        COPY --from=two /two.txt /two.txt
        COPY --from=three /three.txt /docs/readme.md /out/
    """)
    dest = f"{container.registry.host}/unpriv/stages:1"
    digest, log = action_build(container, context, dest, tmp_path)
    assert "git is not installed" not in log
    image = unpack(f"docker://{dest}", tmp_path / "image")
    assert image.read("one.txt") == "one\n" and image.read("two.txt") == "two\n"
    assert image.read("out/three.txt") == "one\ntwo\nfrom git\n"
    assert image.read("out/readme.md") == "from git\n"
    assert DIGEST.fullmatch(digest)


def debug_build(container: Container, context: Path, dest: str, tmp: Path) -> tuple[int, str]:
    """``lamina build`` in the container as the runner starts an action, with SOURCE_DATE_EPOCH and debug logs."""
    host = container.registry.host
    status, log, _ = container.github_action(context, tmp / "home", {}, env={"SOURCE_DATE_EPOCH": EPOCH},
                                             command=["build", "--context=.", f"--destination={dest}",
                                                      f"--insecure-registry={host}", "--provenance=false",
                                                      "--verbosity=debug"])
    return status, log


def test_the_last_stage_is_unpacked_over_the_runtime_image(container: Container, base_images: BaseImages,
                                                           tmp_path: Path) -> None:
    """The runtime image and the build's base share their Debian files: the inplace sandbox leaves those already
    exactly in place (no new inode in the container's overlayfs), removes what the stage lacks, and the image is
    still byte for byte the host's."""
    context = write_context(tmp_path / "ctx", f"""
        FROM {base_images.debian}
        RUN test ! -e /lamina-runtime-only && ! command -v python3 && echo clean > /clean.txt
    """)
    host = container.registry.host
    expected = host_build(container.registry, context, f"{host}/unpriv/reuse-host:1", tmp_path)
    status, log = debug_build(container, context, f"{host}/unpriv/reuse:1", tmp_path)
    assert status == 0, log[-6000:]
    found = re.search(r"unpacked over the runtime image: (\d+) entries already in place, (\d+) removed", log)
    assert found and int(found[1]) > 3000 and int(found[2]) > 0, log[-4000:]
    assert f"@{expected}" in log, differences(f"{host}/unpriv/reuse-host:1", f"{host}/unpriv/reuse:1", tmp_path)


def test_a_builder_stage_is_unpacked_over_the_runtime_image_and_the_final_stage_not_at_all(
        container: Container, base_images: BaseImages, tmp_path: Path) -> None:
    """The common multi-stage build (Debian dependencies, a builder FROM them, a final stage that only copies from
    it): the dependencies stage is unpacked over the runtime image's own files (only its descendants need / after
    it), the builder goes on from its files where they are, the final stage's COPY and WORKDIR are made on skeletons
    of its layers, reading the builder's files in /; the image is the host's, byte for byte."""
    context = write_context(tmp_path / "ctx", f"""
        FROM {base_images.debian} AS deps
        RUN mkdir -p /out && cp /usr/bin/dpkg /out/tool && ! command -v python3
        FROM deps AS build
        RUN echo built > /out/stamp && test -x /out/tool && ! command -v python3
        FROM {base_images.busybox}
        WORKDIR /srv
        COPY --from=build /out ./out
        COPY --from=build /etc/debian_version /srv/
    """)
    host = container.registry.host
    expected = host_build(container.registry, context, f"{host}/unpriv/skeleton-host:1", tmp_path)
    status, log = debug_build(container, context, f"{host}/unpriv/skel:1", tmp_path)
    assert status == 0, log[-6000:]
    found = re.search(r"stage deps unpacked over the runtime image: (\d+) entries already in place", log)
    assert found and int(found[1]) > 3000, log[-4000:]
    assert log.count("made on a skeleton of") == 3, log[-4000:]
    # the Action's lamina is the container's first process: nothing runs after it, so / is not restored
    assert "/ is not restored after the build" in log and "interpreter written back" not in log, log[-4000:]
    assert f"@{expected}" in log, differences(f"{host}/unpriv/skeleton-host:1", f"{host}/unpriv/skel:1", tmp_path)
