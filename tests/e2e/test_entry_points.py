"""The three entry points build the same thing from the same settings (issue 12): ``lamina build``, ``lamina ci
github`` (through the action's entrypoint) and ``lamina ci gitlab``, each as a subprocess, against the open
loopback registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import Lamina
from tests.e2e.helpers import clean_environ, inspect, lamina_subprocess, write_context
from tests.e2e.test_github_action import describe, read_outputs, run_action
from tests.e2e.test_gitlab_ci import dotenv

pytestmark = pytest.mark.e2e

EPOCH = "1700000000"


def gitlab_environ(lamina: Lamina, project: Path, repository: str, **extra: str) -> dict[str, str]:
    """A GitLab job on the default branch whose project image lives in the open registry (no login needed)."""
    env = {
        "CI": "true", "GITLAB_CI": "true", "CI_PROJECT_DIR": str(project), "CI_PROJECT_PATH": repository,
        "CI_REGISTRY_IMAGE": f"{lamina.registry.host}/{repository}", "CI_COMMIT_REF_SLUG": "main",
        "CI_COMMIT_BRANCH": "main", "CI_DEFAULT_BRANCH": "main", "CI_PIPELINE_SOURCE": "push",
        "LAMINA_INSECURE_REGISTRY": lamina.registry.host,
    }
    env.update(extra)
    return clean_environ(env, docker_config=lamina.empty_docker_config)


def test_source_date_epoch_gives_one_digest_through_every_entry_point(lamina: Lamina, tmp_path: Path) -> None:
    workspace = write_context(tmp_path / "workspace", f"""
        FROM {lamina.images.busybox}
        RUN echo built > /built.txt && mkdir -p /app
        COPY hello.txt /app/
    """, {"hello.txt": "hello\n"})
    host = lamina.registry.host

    build_dest = lamina.dest("epoch-build")
    run = lamina_subprocess(["build", "--context", str(workspace), "--insecure-registry", host, "--destination",
                             build_dest, "--digest-file", str(tmp_path / "digest")],
                            lamina.environ({"SOURCE_DATE_EPOCH": EPOCH})).check()
    from_build = (tmp_path / "digest").read_text().strip()

    action_dest = lamina.dest("epoch-action")
    action_tmp = tmp_path / "action"
    action_tmp.mkdir()
    proc = run_action(workspace, action_tmp, {"tags": action_dest, "push": "true", "insecure-registry": host},
                      extra={"SOURCE_DATE_EPOCH": EPOCH})
    assert proc.returncode == 0, describe(proc)
    from_action = read_outputs(action_tmp / "output")["digest"]

    repository = lamina.dest("epoch-gitlab").split("/", 1)[1].split(":")[0]
    dotenv_path = tmp_path / "lamina.env"  # outside the context, which the three builds share
    gitlab = lamina_subprocess(["ci", "gitlab"], gitlab_environ(lamina, workspace, repository,
                                                                SOURCE_DATE_EPOCH=EPOCH,
                                                                LAMINA_DOTENV=str(dotenv_path)), cwd=workspace)
    assert gitlab.returncode == 0, gitlab.describe()
    from_gitlab = dotenv(dotenv_path)["LAMINA_DIGEST"]

    assert from_build.startswith("sha256:"), run.describe()
    assert (from_action, from_gitlab) == (from_build, from_build)
    assert inspect(f"docker://{action_dest}")["Digest"] == from_build
    assert inspect(f"docker://{host}/{repository}:main")["Digest"] == from_build


def test_gitlab_job_honours_lamina_sandbox_and_cleanup(lamina: Lamina, tmp_path: Path) -> None:
    """``lamina ci gitlab`` takes LAMINA_SANDBOX and LAMINA_CLEANUP as ``lamina build`` does (it ignored them)."""
    project = write_context(tmp_path / "project", f"""
        FROM {lamina.images.busybox}
        RUN echo hi > /hi.txt
    """)
    created = tmp_path / "created"  # --cleanup removes what the build created outside its work directory
    repository = lamina.dest("gitlab-settings").split("/", 1)[1].split(":")[0]
    run = lamina_subprocess(["ci", "gitlab"], gitlab_environ(
        lamina, project, repository, LAMINA_SANDBOX="chroot", LAMINA_CLEANUP="true",
        LAMINA_WORK_DIR=str(created / "work"), LAMINA_CACHE_DIR=str(created / "blobs"),
        LAMINA_MOUNT_CACHE_DIR=str(created / "mounts")), cwd=project)
    assert run.returncode == 0, run.describe()
    assert "sandbox: chroot" in run.stdout, run.describe()
    assert not created.exists(), f"--cleanup left {sorted(p.name for p in created.iterdir())}"
