"""Starting a stage: the root filesystem and image config that FROM gives it.

``scratch`` is an empty directory; a previous stage is copied (``cp -a``); a registry image is resolved for the
target platform, its layers downloaded into the workspace (each verified by digest) and unpacked in order.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lamina.build.state import LayerRef, StageState
from lamina.build.workspace import Workspace
from lamina.dockerfile.instructions import Stage
from lamina.errors import RootfsError
from lamina.oci.model import Platform
from lamina.oci.reference import Reference
from lamina.oci.registry.client import RegistryClient
from lamina.rootfs.unpack import unpack_layer


@dataclass(frozen=True)
class PulledImage:
    reference: Reference  # where it came from (a mirror, when one served it)
    manifest_digest: str
    config: dict[str, Any]  # the whole image config JSON
    layers: tuple[LayerRef, ...]


def pull_image(client: RegistryClient, ref: Reference, platform: Platform, workspace: Workspace) -> PulledImage:
    """Resolve ``ref`` for ``platform`` and download its layers into the workspace (skipping ones already there)."""
    resolved = client.resolve_image(ref, platform)
    diff_ids = list((resolved.config.get("rootfs") or {}).get("diff_ids") or [])
    layers = resolved.manifest.layers
    if len(diff_ids) != len(layers):
        raise RootfsError(f"image {ref} is inconsistent: its manifest has {len(layers)} layers but its config lists "
                          f"{len(diff_ids)} diff_ids")
    refs = []
    for descriptor, diff_id in zip(layers, diff_ids, strict=True):
        path = workspace.blob_path(descriptor.digest)
        if not path.exists():
            client.fetch_blob(resolved.reference, descriptor, path)
        refs.append(LayerRef(descriptor, diff_id, path, source=resolved.reference))
    return PulledImage(resolved.reference, resolved.manifest_digest, resolved.config, tuple(refs))


def unpack_image(image: PulledImage, rootfs: Path) -> None:
    for number, layer in enumerate(image.layers, 1):
        unpack_layer(rootfs, layer.path, description=f"layer {number} of {image.reference} ({layer.descriptor.digest})")


def state_from_image(stage: Stage, rootfs: Path, platform: Platform, image: PulledImage, name: str) -> StageState:
    config = image.config
    return StageState(stage, rootfs, platform, config=dict(config.get("config") or {}),
                      history=[dict(h) for h in config.get("history") or []], layers=list(image.layers),
                      base_name=name, author=config.get("author"))


def copy_rootfs(source: Path, dest: Path) -> None:
    """``dest`` becomes a copy of ``source`` with owners, modes, links, times and xattrs (reflinked where possible)."""
    dest.rmdir()
    result = subprocess.run(["cp", "-a", "--reflink=auto", str(source), str(dest)], capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        raise RootfsError(f"could not copy the stage rootfs {source} to {dest}: {result.stderr.strip()}")
