"""A CI job written for Kaniko runs unchanged on lamina's image: GitLab's long-standing Kaniko recipe (its docs'
"Building a Docker image with kaniko": ``image: gcr.io/kaniko-project/executor:debug`` with ``entrypoint: [""]``,
the registry login written to /kaniko/.docker/config.json, then ``/kaniko/executor`` with Kaniko's flags), with only
``image:`` replaced; and the same command line through the GitHub runner's container invocation."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import AUTH_PASSWORD, AUTH_USER
from tests.container.conftest import Container
from tests.e2e.helpers import inspect_config, write_context
from tests.support.baseimages import BaseImages
from tests.support.http_files import git
from tests.support.registry import RunningRegistry

# the job's script, as GitLab's documentation gives it for Kaniko (the older, config.json login variant)
KANIKO_RECIPE = """\
mkdir -p /kaniko/.docker
echo "{\\"auths\\":{\\"${CI_REGISTRY}\\":{\\"auth\\":\\"$(printf "%s:%s" "${CI_REGISTRY_USER}" "${CI_REGISTRY_PASSWORD}" | base64 | tr -d '\\n')\\"}}}" > /kaniko/.docker/config.json
/kaniko/executor --context "${CI_PROJECT_DIR}" --dockerfile "${CI_PROJECT_DIR}/Dockerfile" --destination "${CI_REGISTRY_IMAGE}:${CI_COMMIT_TAG}"
"""


def test_the_gitlab_kaniko_recipe_runs_unchanged(container: Container, auth_registry: RunningRegistry,
                                                 base_images: BaseImages, tmp_path: Path) -> None:
    project = write_context(tmp_path / "project", f"""
        FROM {base_images.debian}
        RUN echo built-by-the-recipe > /recipe.txt && test -r /proc/self/exe
        LABEL org.example.recipe=kaniko
    """)
    host = auth_registry.host
    status, log = container.gitlab_job(project, KANIKO_RECIPE, variables={
        "CI_REGISTRY": host, "CI_REGISTRY_USER": AUTH_USER, "CI_REGISTRY_PASSWORD": AUTH_PASSWORD,
        "CI_REGISTRY_IMAGE": f"{host}/group/project", "CI_COMMIT_TAG": "v1.0.0"})
    assert status == 0, log[-6000:]
    assert AUTH_PASSWORD not in log
    config = inspect_config(f"docker://{host}/group/project:v1.0.0", creds=(AUTH_USER, AUTH_PASSWORD))
    assert config["config"]["Labels"]["org.example.recipe"] == "kaniko"


NODE_DIR = Path(__file__).resolve().parents[2] / ".ci" / "node" / "node_modules"
GITLAB_CI = """\
build:
  stage: build
  image:
    name: {image}
    entrypoint: [""]
  script:
{script}
"""


def test_the_gitlab_kaniko_recipe_through_gitlab_ci_local(container: Container, auth_registry: RunningRegistry,
                                                          base_images: BaseImages, tmp_path: Path) -> None:
    """The same recipe as a .gitlab-ci.yml, run by gitlab-ci-local (GitLab's job semantics: the project copied into
    the job container, predefined variables, the script through the image's shell) on the real engine."""
    program = NODE_DIR / ".bin" / "gitlab-ci-local"
    node = NODE_DIR / "node" / "bin"
    if not program.exists() or not (node / "node").exists():
        pytest.fail("gitlab-ci-local is not installed: .ci/run installs it (npm install --prefix .ci/node "
                    "gitlab-ci-local node@22)", pytrace=False)
    # its helper image, which it would pull from Docker Hub: any image with a shell and coreutils does its job
    container.engine.docker("pull", "-q", base_images.debian)
    container.engine.docker("tag", base_images.debian, "docker.io/firecow/gitlab-ci-local-util:latest")
    project = write_context(tmp_path / "project", f"""
        FROM {base_images.busybox}
        RUN echo through-gitlab-ci-local > /how.txt
    """)
    script = "".join(f"    - {line}\n" for line in KANIKO_RECIPE.splitlines())
    (project / ".gitlab-ci.yml").write_text(GITLAB_CI.format(image=container.image, script=script.rstrip("\n")))
    git("init", "-q", "-b", "main", cwd=project)
    git("add", "-A", cwd=project)
    git("commit", "-q", "-m", "project", cwd=project)
    host = auth_registry.host
    variables = {"CI_REGISTRY": host, "CI_REGISTRY_USER": AUTH_USER, "CI_REGISTRY_PASSWORD": AUTH_PASSWORD,
                 "CI_REGISTRY_IMAGE": f"{host}/group/gcl", "CI_COMMIT_TAG": "v2.0.0"}
    argv = [str(program), "--pull-policy", "if-not-present", "--network", "host"]
    for key, value in variables.items():
        argv += ["--variable", f"{key}={value}"]
    env = {**os.environ, **container.engine.environ(), "PATH": f"{node}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    run = subprocess.run([*argv, "build"], cwd=project, env=env, capture_output=True, text=True, timeout=900,
                         check=False)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert "PASS  build" in run.stdout
    config = inspect_config(f"docker://{host}/group/gcl:v2.0.0", creds=(AUTH_USER, AUTH_PASSWORD))
    assert config["history"][-1]["created_by"].endswith("echo through-gitlab-ci-local > /how.txt # buildkit")


def test_kaniko_flags_through_the_github_runner_invocation(container: Container, base_images: BaseImages,
                                                           tmp_path: Path) -> None:
    """The runner starts the image with arguments (``args:`` of a docker:// step): the entrypoint hands them to
    lamina, so ``build`` and Kaniko's flags work there as on /kaniko/executor."""
    workspace = write_context(tmp_path / "workspace", f"FROM {base_images.debian}\nRUN echo from-args > /a.txt\n")
    host = container.registry.host
    status, log, _ = container.github_action(workspace, tmp_path / "home", {}, command=[
        "build", "--context=.", "--dockerfile=Dockerfile", f"--destination={host}/kaniko/args:1",
        "--snapshot-mode=redo", "--cache=true", f"--cache-repo={host}/kaniko/args-cache", "--single-snapshot=false",
        "--label=org.example.via=args", "--log-format=text"])
    assert status == 0, log[-6000:]
    assert "note: --snapshot-mode has no effect in lamina" in log
    assert inspect_config(f"docker://{host}/kaniko/args:1")["config"]["Labels"] == {"org.example.via": "args"}


def test_a_debug_image_job_runs_on_busybox_and_keeps_its_tools(container: Container, base_images: BaseImages,
                                                               tmp_path: Path) -> None:
    """Jobs written for Kaniko's :debug image call ``/busybox/sh`` and ``executor`` (on its PATH), and go on after
    the build: here a job builds two images in a row, one FROM scratch, with the inplace sandbox (the default in
    the unprivileged container) building in its own /, then still has its shell, its tools and lamina."""
    project = write_context(tmp_path / "project", f"""
        FROM {base_images.busybox} AS tools
        RUN echo hello > /hello.txt
        FROM scratch
        COPY --from=tools /hello.txt /hello.txt
    """)
    (project / "Second.Dockerfile").write_text(f"FROM {base_images.debian}\nRUN echo second > /second.txt\n")
    host = container.registry.host
    script = (
        "set -e; "
        f"executor --context . --destination {host}/kaniko/scratch:1 --digest-file /tmp/first.digest; "
        "test ! -e /hello.txt; "  # / is the job's own again
        "/busybox/wc -c < /tmp/first.digest; "
        f"/kaniko/executor --context . --dockerfile Second.Dockerfile --destination {host}/kaniko/second:1; "
        "ls /busybox | grep -qx wget && cat /etc/os-release | head -n 1 && echo job-still-runs"
    )
    status, log = container.gitlab_job(project, f"exec /busybox/sh -c '{script}'")
    assert status == 0, log[-6000:]
    assert "sandbox: inplace" in log and "job-still-runs" in log and "\n71\n" in log
    assert inspect_config(f"docker://{host}/kaniko/scratch:1")["rootfs"]["diff_ids"]
    assert inspect_config(f"docker://{host}/kaniko/second:1")["history"][-1]["created_by"].endswith(
        "echo second > /second.txt # buildkit")
