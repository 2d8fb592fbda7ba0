"""``lamina ci gitlab`` (``python -m lamina.cli ci gitlab``) under simulated GitLab job variables, pushing to the
htpasswd registry as ``$CI_REGISTRY``, with a Dependency Proxy simulated by a path prefix in that registry."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.conftest import AUTH_PASSWORD, AUTH_USER
from tests.e2e.helpers import LaminaRun, clean_environ, inspect, lamina_subprocess, tags, write_context
from tests.support import baseimages
from tests.support.baseimages import BaseImages
from tests.support.registry import RunningRegistry

pytestmark = pytest.mark.e2e

CREDS = (AUTH_USER, AUTH_PASSWORD)
PROXY_PREFIX_PATH = "group/dependency_proxy/containers"
WRONG_TOKEN = "not-the-Right-job-token-4711"
API_TOKEN = "glpat-e2e-secret-token"
_counter = itertools.count()


@pytest.fixture(scope="module")
def dependency_proxy(auth_registry: RunningRegistry, base_layouts: dict[str, Path]) -> str:
    """busybox in the auth registry under a group's Dependency Proxy prefix: ``<host>/group/dependency_proxy/
    containers/library/busybox:latest``; returns the prefix as CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX has it."""
    prefix = f"{auth_registry.host}/{PROXY_PREFIX_PATH}"
    baseimages.push_layout(base_layouts[baseimages.BUSYBOX], "latest", f"{prefix}/library/busybox:latest", creds=CREDS)
    return prefix


def gitlab_job(tmp: Path, auth_registry: RunningRegistry, **extra: str) -> tuple[dict[str, str], str]:
    """The variables GitLab gives a job of project ``group/project-N`` on branch main (the default branch)."""
    project = f"group/project-{next(_counter)}"
    image = f"{auth_registry.host}/{project}"
    empty_config = tmp / "empty-docker-config"
    empty_config.mkdir(exist_ok=True)
    env = {
        "CI": "true", "GITLAB_CI": "true",
        "CI_PROJECT_DIR": str(tmp / "project"), "CI_PROJECT_PATH": project, "CI_PROJECT_ID": "42",
        "CI_REGISTRY": auth_registry.host, "CI_REGISTRY_IMAGE": image,
        "CI_REGISTRY_USER": AUTH_USER, "CI_REGISTRY_PASSWORD": AUTH_PASSWORD, "CI_JOB_TOKEN": AUTH_PASSWORD,
        "CI_COMMIT_REF_NAME": "main", "CI_COMMIT_REF_SLUG": "main", "CI_COMMIT_BRANCH": "main",
        "CI_DEFAULT_BRANCH": "main", "CI_PIPELINE_SOURCE": "push", "CI_COMMIT_SHORT_SHA": "0123abcd",
        "LAMINA_INSECURE_REGISTRY": auth_registry.host,
    }
    env.update(extra)
    return clean_environ(env, docker_config=empty_config), image


def run_gitlab(environ: dict[str, str], cwd: Path) -> LaminaRun:
    return lamina_subprocess(["ci", "gitlab"], environ, cwd=cwd)


def dotenv(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line)


def assert_no_secrets(run: LaminaRun, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in run.output, f"a secret leaked into the log:\n{run.describe()}"


def sections(output: str) -> tuple[list[str], list[str]]:
    # text-mode capture turns the markers' \r into \n (GitLab gets the \r: the unit tests check the bytes)
    starts = re.findall(r"\x1b\[0Ksection_start:\d+:([A-Za-z0-9_.-]+)(?:\[collapsed=true\])?[\r\n]\x1b\[0K", output)
    ends = re.findall(r"\x1b\[0Ksection_end:\d+:([A-Za-z0-9_.-]+)[\r\n]\x1b\[0K", output)
    return starts, ends


def test_default_branch_through_the_dependency_proxy(tmp_path: Path, auth_registry: RunningRegistry,
                                                     dependency_proxy: str) -> None:
    environ, image = gitlab_job(
        tmp_path, auth_registry,
        CI_DEPENDENCY_PROXY_SERVER=auth_registry.host, CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX=dependency_proxy,
        CI_DEPENDENCY_PROXY_USER=AUTH_USER, CI_DEPENDENCY_PROXY_PASSWORD=AUTH_PASSWORD)
    write_context(Path(environ["CI_PROJECT_DIR"]), """
        FROM busybox AS build
        RUN echo built > /built.txt
        FROM busybox
        COPY --from=build /built.txt /app/built.txt
        COPY hello.txt /app/
    """, {"hello.txt": "hello from gitlab\n"})
    run = run_gitlab(environ, Path(environ["CI_PROJECT_DIR"]))
    assert run.returncode == 0, run.describe()
    report = dotenv(Path(environ["CI_PROJECT_DIR"]) / "lamina.env")
    repository = image.split("/", 1)[1]
    assert sorted(tags(auth_registry.host, repository, creds=CREDS)) == ["latest", "main"]
    for tag in ("main", "latest"):
        assert inspect(f"docker://{image}:{tag}", creds=CREDS)["Digest"] == report["LAMINA_DIGEST"]
    assert report["LAMINA_IMAGE"] == f"{image}@{report['LAMINA_DIGEST']}"
    assert report["LAMINA_TAGS"] == f"{image}:main,{image}:latest"
    starts, ends = sections(run.stdout)
    assert starts == ends
    assert [s for s in starts if "stage" in s] == ["lamina_2_stage_build", "lamina_3_stage_stage-1"]
    assert "lamina_1_setup[collapsed=true]" in run.stdout
    assert f"docker.io images through the Dependency Proxy {dependency_proxy}" in run.stdout
    assert_no_secrets(run, AUTH_PASSWORD)


def test_tag_pipeline_with_docker_auth_config_and_a_mirror(tmp_path: Path, auth_registry: RunningRegistry,
                                                           registry: RunningRegistry, base_images: BaseImages) -> None:
    """The job token is wrong, so the push only works with DOCKER_AUTH_CONFIG's entry, which wins."""
    docker_auth = json.dumps({"auths": {auth_registry.host: {"username": AUTH_USER, "password": AUTH_PASSWORD}}})
    environ, image = gitlab_job(
        tmp_path, auth_registry, CI_COMMIT_TAG="v1.0.0", CI_COMMIT_REF_NAME="v1.0.0", CI_COMMIT_REF_SLUG="v1-0-0",
        CI_REGISTRY_USER="gitlab-ci-token", CI_REGISTRY_PASSWORD=WRONG_TOKEN, CI_JOB_TOKEN=WRONG_TOKEN,
        DOCKER_AUTH_CONFIG=docker_auth, LAMINA_REGISTRY_MIRROR=registry.host,
        LAMINA_INSECURE_REGISTRY=f"{auth_registry.host},{registry.host}", LAMINA_EXTRA_TAGS="stable",
        LAMINA_DOTENV=str(tmp_path / "out" / "build.env"))
    del environ["CI_COMMIT_BRANCH"]
    write_context(Path(environ["CI_PROJECT_DIR"]), """
        FROM busybox
        RUN echo tagged > /tagged.txt
    """)
    run = run_gitlab(environ, tmp_path)
    assert run.returncode == 0, run.describe()
    report = dotenv(tmp_path / "out" / "build.env")
    repository = image.split("/", 1)[1]
    assert sorted(tags(auth_registry.host, repository, creds=CREDS)) == ["stable", "v1-0-0", "v1.0.0"]
    assert inspect(f"docker://{image}:v1.0.0", creds=CREDS)["Digest"] == report["LAMINA_DIGEST"]
    assert f"credentials from DOCKER_AUTH_CONFIG for {auth_registry.host}" in run.stdout
    assert_no_secrets(run, AUTH_PASSWORD, WRONG_TOKEN)


def test_merge_request_pipeline_posts_the_report(tmp_path: Path, auth_registry: RunningRegistry,
                                                 registry: RunningRegistry, base_images: BaseImages,
                                                 httpserver: HTTPServer) -> None:
    notes: list[str] = []

    def create_note(request: Request) -> Response:
        notes.append(request.get_json()["body"])
        return Response(json.dumps({"id": 1}), 201, content_type="application/json")

    httpserver.expect_request("/api/v4/projects/42/merge_requests/17/notes", method="POST") \
        .respond_with_handler(create_note)
    environ, image = gitlab_job(
        tmp_path, auth_registry, CI_PIPELINE_SOURCE="merge_request_event", CI_MERGE_REQUEST_IID="17",
        CI_COMMIT_REF_NAME="feature/x", CI_COMMIT_REF_SLUG="feature-x", CI_SERVER_URL=httpserver.url_for("/"),
        LAMINA_MR_NOTE="true", LAMINA_GITLAB_TOKEN=API_TOKEN, LAMINA_REGISTRY_MIRROR=registry.host,
        LAMINA_INSECURE_REGISTRY=f"{auth_registry.host},{registry.host}")
    del environ["CI_COMMIT_BRANCH"]
    write_context(Path(environ["CI_PROJECT_DIR"]), "FROM busybox\nCOPY Dockerfile /\n")
    run = run_gitlab(environ, Path(environ["CI_PROJECT_DIR"]))
    assert run.returncode == 0, run.describe()
    digest = dotenv(Path(environ["CI_PROJECT_DIR"]) / "lamina.env")["LAMINA_DIGEST"]
    assert tags(auth_registry.host, image.split("/", 1)[1], creds=CREDS) == ["feature-x"]
    assert len(notes) == 1 and digest in notes[0] and f"{image}:feature-x" in notes[0]
    assert "posted the build report on !17" in run.stdout
    assert_no_secrets(run, AUTH_PASSWORD, API_TOKEN)


def test_failing_run_exits_with_its_code(tmp_path: Path, auth_registry: RunningRegistry, registry: RunningRegistry,
                                         base_images: BaseImages) -> None:
    environ, image = gitlab_job(tmp_path, auth_registry, LAMINA_REGISTRY_MIRROR=registry.host,
                                LAMINA_INSECURE_REGISTRY=f"{auth_registry.host},{registry.host}")
    write_context(Path(environ["CI_PROJECT_DIR"]), "FROM busybox\nRUN echo failing; exit 7\n")
    run = run_gitlab(environ, Path(environ["CI_PROJECT_DIR"]))
    assert run.returncode == 7, run.describe()
    [error] = run.error_lines()
    assert error.startswith("error: Dockerfile:2:1: RUN echo failing; exit 7"), run.describe()  # file:line named
    assert not (Path(environ["CI_PROJECT_DIR"]) / "lamina.env").exists()
    assert tags(auth_registry.host, image.split("/", 1)[1], creds=CREDS) == []
    starts, ends = sections(run.stdout)
    assert starts == ends  # the stage's section is closed before the error
    assert_no_secrets(run, AUTH_PASSWORD)


def test_bad_settings_exit_2(tmp_path: Path, auth_registry: RunningRegistry) -> None:
    environ, _ = gitlab_job(tmp_path, auth_registry, DOCKER_AUTH_CONFIG='{"auths": {"x": "' + AUTH_PASSWORD)
    run = run_gitlab(environ, tmp_path)
    assert run.returncode == 2, run.describe()
    assert run.error_lines() == ["error: DOCKER_AUTH_CONFIG is not valid JSON (line 1, column 17)"]
    assert_no_secrets(run, AUTH_PASSWORD)
