"""``BuildOptions``: the only configuration object of a build. Frozen; made by the CLI or a CI adapter."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class BuildOptions:
    context: Path
    dockerfile: Path
    destinations: tuple[str, ...] = ()
    build_args: tuple[tuple[str, str], ...] = ()
    target: str | None = None
    no_push: bool = False
    tar_path: Path | None = None
    oci_layout_path: Path | None = None
    digest_file: Path | None = None
    registry_mirrors: tuple[str, ...] = ()
    insecure_registries: frozenset[str] = field(default_factory=frozenset)
    skip_tls_verify: bool = False
    work_dir: Path | None = None  # None: a fresh directory under the system temp dir
    platform: str | None = None  # None: the host's
    source_date_epoch: int | None = None
    docker_config_dir: str | None = None

    @property
    def build_arg_map(self) -> dict[str, str]:
        return dict(self.build_args)
