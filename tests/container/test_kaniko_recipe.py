"""A CI job written for Kaniko runs unchanged on lamina's image: GitLab's long-standing Kaniko recipe (its docs'
"Building a Docker image with kaniko": ``image: gcr.io/kaniko-project/executor:debug`` with ``entrypoint: [""]``,
the registry login written to /kaniko/.docker/config.json, then ``/kaniko/executor`` with Kaniko's flags), with only
``image:`` replaced; and the same command line through the GitHub runner's container invocation."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import AUTH_PASSWORD, AUTH_USER
from tests.container.conftest import Container
from tests.e2e.helpers import inspect_config, write_context
from tests.support.baseimages import BaseImages
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
