"""Fixtures of the end-to-end tests: real builds on the real base images, pushed to the loopback registries."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.helpers import LaminaRun, clean_environ, lamina_in_process, lamina_subprocess
from tests.support.baseimages import BaseImages
from tests.support.registry import RunningRegistry

_counter = itertools.count()


@dataclass(frozen=True)
class Lamina:
    """Runs ``lamina build`` against the open test registry, with a hermetic environment."""

    registry: RunningRegistry
    images: BaseImages
    empty_docker_config: Path

    def environ(self, extra: Mapping[str, str] | None = None, *, docker_config: Path | None = None) -> dict[str, str]:
        return clean_environ(extra, docker_config=docker_config or self.empty_docker_config)

    def dest(self, name: str, tag: str = "1") -> str:
        """A fresh repository in the open registry: ``<host>/e2e/<name>-<n>:<tag>``."""
        return f"{self.registry.host}/e2e/{name}-{next(_counter)}:{tag}"

    def build(self, context: Path, *args: str, extra_env: Mapping[str, str] | None = None,
              docker_config: Path | None = None, subprocess: bool = False,
              insecure: Sequence[str] = ()) -> LaminaRun:
        """``lamina build --context CONTEXT --insecure-registry <open registry> ARGS``."""
        argv = ["build", "--context", str(context), "--insecure-registry", self.registry.host]
        for host in insecure:
            argv += ["--insecure-registry", host]
        argv += list(args)
        environ = self.environ(extra_env, docker_config=docker_config)
        if subprocess:
            return lamina_subprocess(argv, environ)
        return lamina_in_process(argv, environ)


@pytest.fixture(scope="session")
def lamina(registry: RunningRegistry, base_images: BaseImages, tmp_path_factory: pytest.TempPathFactory) -> Lamina:
    empty = tmp_path_factory.mktemp("empty-docker-config")
    return Lamina(registry, base_images, empty)
