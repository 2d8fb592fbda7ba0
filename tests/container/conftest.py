"""lamina where users run it: its runtime image in a real Docker engine, unprivileged, as the GitHub runner runs a
container action and as GitLab's Docker executor runs a job.

``engine`` is Debian's dockerd, private to the session (tests/support/dockerd.py). ``runtime_image`` is the
repository's top-level Dockerfile built by lamina on the host (on the offline stand-in for python:3.11-slim, see
tests/support/runtime_image.py), pushed to the open test registry and pulled into the engine. ``Container`` runs
it the two ways users do.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.helpers import clean_environ, lamina_in_process
from tests.support.baseimages import BaseImages
from tests.support.dockerd import PRIVILEGED, DockerEngine, EngineError, start_engine
from tests.support.registry import RunningRegistry
from tests.support.runtime_image import python_base_context, runtime_image_context

HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
_names = itertools.count()


@pytest.fixture(scope="session")
def engine(registry: RunningRegistry) -> Iterator[DockerEngine]:
    root = Path(tempfile.mkdtemp(prefix="lamina-dk-", dir="/tmp"))  # short: the socket path must fit
    try:
        running = start_engine(root, insecure_registries=[registry.host])
    except EngineError as exc:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"could not start dockerd: {exc}", pytrace=False)
    yield running
    running.stop()


def _build(argv: Sequence[str], registry: RunningRegistry, empty_config: Path) -> None:
    run = lamina_in_process(["build", "--insecure-registry", registry.host, *argv],
                            clean_environ({"SOURCE_DATE_EPOCH": "1700000000"}, docker_config=empty_config))
    run.check()


@pytest.fixture(scope="session")
def python_base(registry: RunningRegistry, base_images: BaseImages, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The stand-in for python:3.11-slim-bookworm (Debian's python3.11 and pip on the test Debian image)."""
    tmp = tmp_path_factory.mktemp("python-base")
    empty = tmp / "docker-config"
    empty.mkdir()
    ref = f"{registry.host}/container/python-base:1"
    _build(["--context", str(python_base_context(tmp / "context", base_images.debian)), "--destination", ref],
           registry, empty)
    return ref


@pytest.fixture(scope="session")
def runtime_image(engine: DockerEngine, registry: RunningRegistry, python_base: str,
                  tmp_path_factory: pytest.TempPathFactory) -> str:
    """lamina's runtime image, built by lamina from the repository's Dockerfile, pulled into the engine."""
    tmp = tmp_path_factory.mktemp("runtime-image")
    empty = tmp / "docker-config"
    empty.mkdir()
    image = f"{registry.host}/container/lamina:test"
    context, build_args = runtime_image_context(tmp / "lamina-src", python_base)
    _build(["--context", str(context), "--destination", image, *build_args], registry, empty)
    engine.docker("pull", "-q", image)
    return image


@dataclass(frozen=True)
class Container:
    """Runs lamina's image in the engine. ``workspace`` is the host directory mounted where the runner mounts the
    repository (``/github/workspace``) or where GitLab clones it (``/builds/group/project``)."""

    engine: DockerEngine
    image: str
    registry: RunningRegistry

    def _common(self, name: str, privileged: bool) -> list[str]:
        args = ["run", "--rm", "--name", name, "--network", "host"]
        if privileged:
            args += list(PRIVILEGED)
        return args

    def github_action(self, workspace: Path, home: Path, inputs: Mapping[str, str], *,
                      env: Mapping[str, str] | None = None, privileged: bool = False,
                      timeout: float = 900, command: Sequence[str] = ()) -> tuple[int, str, dict[str, str]]:
        """As actions/runner's container action step: ``docker run --workdir /github/workspace --rm`` with the
        workspace, home, workflow and file-command volumes, INPUT_* (hyphens kept) and GITHUB_* variables, and
        ``command`` (a ``docker://`` step's ``with: args``; none for the Action itself). Returns (exit status,
        output, the step's outputs)."""
        name = f"lamina-action-{os.getpid()}-{next(_names)}"
        files = home.parent / f"file_commands-{name}"
        workflow = home.parent / f"workflow-{name}"
        for directory in (home, files, workflow):
            directory.mkdir(parents=True, exist_ok=True)
        (files / "set_output").write_text("")
        (files / "step_summary").write_text("")
        (workflow / "event.json").write_text('{"repository": {"default_branch": "main"}}')
        variables = {
            "HOME": "/github/home", "GITHUB_ACTIONS": "true", "CI": "true", "GITHUB_EVENT_NAME": "push",
            "GITHUB_REF": "refs/heads/main", "GITHUB_SHA": "0123456789abcdef0123456789abcdef01234567",
            "GITHUB_REPOSITORY": "owner/repo", "GITHUB_WORKSPACE": "/github/workspace",
            "GITHUB_EVENT_PATH": "/github/workflow/event.json", "GITHUB_OUTPUT": "/github/file_commands/set_output",
            "GITHUB_STEP_SUMMARY": "/github/file_commands/step_summary", "RUNNER_OS": "Linux",
            "RUNNER_TEMP": "/home/runner/work/_temp",
        }
        variables.update({f"INPUT_{key.upper()}": value for key, value in inputs.items()})
        variables.update(env or {})
        args = self._common(name, privileged) + ["--workdir", "/github/workspace"]
        for key, value in variables.items():
            args += ["-e", f"{key}={value}"]
        args += ["-v", f"{workspace}:/github/workspace", "-v", f"{home}:/github/home",
                 "-v", f"{workflow}:/github/workflow", "-v", f"{files}:/github/file_commands", self.image, *command]
        result = self.engine.docker(*args, timeout=timeout, check=False)
        from tests.e2e.test_github_action import read_outputs
        outputs = read_outputs(files / "set_output")
        return result.returncode, result.stdout + result.stderr, outputs

    def gitlab_job(self, project: Path, script: str, *, variables: Mapping[str, str] | None = None,
                   privileged: bool = False, timeout: float = 900) -> tuple[int, str]:
        """As GitLab's Docker executor runs a job with ``image: {name: ..., entrypoint: [""]}``: the project at
        /builds/group/project as the working directory, the CI variables in the environment, the script through
        a shell."""
        name = f"lamina-job-{os.getpid()}-{next(_names)}"
        base = {"CI": "true", "GITLAB_CI": "true", "CI_PROJECT_DIR": "/builds/group/project",
                "CI_COMMIT_REF_SLUG": "main", "CI_COMMIT_BRANCH": "main", "CI_DEFAULT_BRANCH": "main",
                "CI_COMMIT_SHA": "0123456789abcdef0123456789abcdef01234567", "CI_PROJECT_PATH": "group/project"}
        base.update(variables or {})
        args = self._common(name, privileged) + ["--entrypoint", "", "--workdir", "/builds/group/project"]
        for key, value in base.items():
            args += ["-e", f"{key}={value}"]
        args += ["-v", f"{project}:/builds/group/project", self.image, "sh", "-c", script]
        result = self.engine.docker(*args, timeout=timeout, check=False)
        return result.returncode, result.stdout + result.stderr


@pytest.fixture(scope="session")
def container(engine: DockerEngine, runtime_image: str, registry: RunningRegistry) -> Container:
    return Container(engine, runtime_image, registry)
