"""The state of one stage while it builds: its rootfs, image config, layers, ARG scope and last snapshot."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lamina.dockerfile.instructions import Stage
from lamina.oci.model import Descriptor, Platform
from lamina.oci.reference import Reference
from lamina.rootfs.overlay import StageOverlay
from lamina.snapshot.scan import FileState

DEFAULT_SHELL = ("/bin/sh", "-c")


@dataclass(frozen=True)
class LayerRef:
    """A layer of the image being built: its blob on disk, and where it came from when pulled."""

    descriptor: Descriptor
    diff_id: str
    path: Path
    source: Reference | None = None  # the repository it was pulled from (for cross-repository mounts)


@dataclass
class StageState:
    stage: Stage
    rootfs: Path
    platform: Platform
    config: dict[str, Any] = field(default_factory=dict)  # the image config's "config" object
    history: list[dict[str, Any]] = field(default_factory=list)
    layers: list[LayerRef] = field(default_factory=list)
    args: dict[str, str] = field(default_factory=dict)  # ARGs in scope, with their values
    scan: dict[str, FileState] | None = None  # the rootfs as of the last snapshot; None: not scanned yet
    cmd_set: bool = False  # CMD given in this stage (ENTRYPOINT then keeps it)
    base_name: str = ""  # what FROM resolved to, for messages
    author: str | None = None  # MAINTAINER, the image config's top-level "author"
    arg_order: list[str] = field(default_factory=list)  # ARGs declared in this stage, in order (for RUN history)
    key: str | None = None  # the cache key after the last step (None: not computable before running)
    materialized: bool = False  # does rootfs hold the content of layers? (False until a step needs it)
    parent: StageState | None = None  # the stage this one starts FROM, when it is a stage
    overlay: StageOverlay | None = None  # when rootfs is an overlay stack (then ``scan`` is not kept)

    @property
    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for item in self.config.get("Env") or []:
            name, _, value = str(item).partition("=")
            out[name] = value
        return out

    def set_env(self, name: str, value: str) -> None:
        env = self.env
        env[name] = value
        self.config["Env"] = [f"{k}={v}" for k, v in env.items()]

    def expansion_env(self) -> dict[str, str]:
        """What $VAR sees in Dockerfile instructions: ARGs, overridden by ENV of the same name."""
        return {**self.args, **self.env}

    @property
    def workdir(self) -> str:
        return str(self.config.get("WorkingDir") or "/")

    @property
    def user(self) -> str:
        return str(self.config.get("User") or "")

    @property
    def shell(self) -> tuple[str, ...]:
        shell = self.config.get("Shell")
        return tuple(shell) if shell else DEFAULT_SHELL

    def copy_for_child(self, stage: Stage, rootfs: Path) -> StageState:
        """A new stage starting FROM this one (config deep-copied, layers shared)."""
        return StageState(stage, rootfs, self.platform, json.loads(json.dumps(self.config)),
                          [dict(h) for h in self.history], list(self.layers), {}, None, False, self.base_name,
                          self.author, key=self.key, parent=self)
