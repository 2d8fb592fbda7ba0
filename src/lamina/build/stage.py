"""Starting a stage: the image config and layers FROM gives it, and materializing its root filesystem on demand.

A registry base is only resolved at first (manifest and config: two small GETs); its layers are downloaded and
unpacked when a step must run on top of them (``materialize``), so a build whose steps all hit the cache never
downloads a layer. A previous stage is copied (``cp -a``) when it has been materialized, else rebuilt from layers.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lamina.build.state import LayerRef, StageState
from lamina.build.workspace import Workspace
from lamina.cache.layer_cache import LayerCache
from lamina.cache.warm import load_image
from lamina.dockerfile.instructions import Stage
from lamina.errors import RegistryUnreachable, RootfsError
from lamina.oci.model import Descriptor, Platform
from lamina.oci.reference import Reference
from lamina.oci.registry.client import RegistryClient
from lamina.rootfs.clone import clone_tree
from lamina.rootfs.mounts import LayerMounts
from lamina.rootfs.overlay import StageOverlay
from lamina.rootfs.unpack import unpack_layer
from lamina.snapshot.scan import scan_tree

if TYPE_CHECKING:
    from lamina.sandbox.inplace import InplaceRoot

log = logging.getLogger(__name__)

PARALLEL_TRANSFERS = 3


@dataclass(frozen=True)
class PulledImage:
    reference: Reference  # where it came from (a mirror, when one served it)
    manifest_digest: str
    config: dict[str, Any]  # the whole image config JSON
    layers: tuple[LayerRef, ...]  # paths in the workspace; the blobs are fetched by ensure_local


def resolve_image(client: RegistryClient, ref: Reference, platform: Platform, workspace: Workspace,
                  cache: LayerCache | None = None, *, cache_dir: Path | None = None,
                  ttl_seconds: float | None = None, say: Callable[[str], None] | None = None) -> PulledImage:
    """Resolve ``ref`` for ``platform``: manifest and config only, no layer is downloaded. With ``cache``, the
    config comes from the cache when an earlier build kept it there (one manifest GET instead of a blob GET), and
    is kept there otherwise. With ``cache_dir`` (``lamina warm``'s), a kept image serves a digest reference without
    the registry, and a tag when the registry cannot be reached."""
    kept: list[bytes | None] = []  # what the cache had for the config, once asked

    def known_config(descriptor: Descriptor) -> bytes | None:
        assert cache is not None
        kept.append(cache.image_config(descriptor))
        return kept[-1]

    warmed = load_image(cache_dir, ref, platform, ttl_seconds=ttl_seconds) if cache_dir is not None else None
    if warmed is not None and ref.digest is not None:
        resolved = warmed
    else:
        try:
            resolved = client.resolve_image(ref, platform, known_config if cache is not None else None)
        except RegistryUnreachable:
            if warmed is None:
                raise
            if say is not None:
                say(f"warning: {ref.registry} cannot be reached: using {ref} as lamina warm kept it in {cache_dir}")
            resolved = warmed
        if cache is not None and kept[-1:] != [resolved.config_bytes]:
            cache.store_image_config(resolved.manifest.config.digest, resolved.config_bytes)
    diff_ids = list((resolved.config.get("rootfs") or {}).get("diff_ids") or [])
    layers = resolved.manifest.layers
    if len(diff_ids) != len(layers):
        raise RootfsError(f"image {ref} is inconsistent: its manifest has {len(layers)} layers but its config lists "
                          f"{len(diff_ids)} diff_ids")
    refs = tuple(LayerRef(descriptor, diff_id, workspace.blob_path(descriptor.digest), source=resolved.reference)
                 for descriptor, diff_id in zip(layers, diff_ids, strict=True))
    return PulledImage(resolved.reference, resolved.manifest_digest, resolved.config, refs)


def ensure_local(client: RegistryClient, layer: LayerRef, blob_cache: Path | None = None) -> None:
    """Make ``layer.path`` hold the blob: from the local blob cache (--cache-dir) or its source repository."""
    if layer.path.exists():
        return
    cached = blob_cache / layer.descriptor.digest.replace(":", "/") if blob_cache is not None else None
    if cached is not None and cached.exists():
        shutil.copyfile(cached, layer.path)
        return
    if layer.source is None:
        raise RootfsError(f"layer {layer.descriptor.digest} is neither on disk nor in a registry")
    client.fetch_blob(layer.source, layer.descriptor, layer.path)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(layer.path, cached)


def fetch_all(client: RegistryClient, layers: list[LayerRef], blob_cache: Path | None = None) -> None:
    """Download the missing blobs of ``layers``, a few at a time (unpacking stays in order, after this)."""
    missing = list({layer.descriptor.digest: layer for layer in layers if not layer.path.exists()}.values())
    if len(missing) <= 1:
        for layer in missing:
            ensure_local(client, layer, blob_cache)
        return
    with ThreadPoolExecutor(max_workers=PARALLEL_TRANSFERS, thread_name_prefix="pull") as pool:
        for future in [pool.submit(ensure_local, client, layer, blob_cache) for layer in missing]:
            future.result()


def materialize(client: RegistryClient, state: StageState, blob_cache: Path | None = None, *,
                inplace: InplaceRoot | None = None, mounts: LayerMounts | None = None, reuse: bool = False,
                resumed: int = 0) -> None:
    """Give ``state.rootfs`` the content of ``state.layers`` (downloading what is missing).

    With ``mounts`` enabled, the rootfs becomes an overlay over an image of the layers (``state.overlay``; no
    parent stage is copied: its layers are read again, which is cheaper than creating its files). Else the layers
    are unpacked into it and it is scanned (``state.scan``, what the first snapshot compares with).

    A rootfs of ``/`` (the inplace sandbox, and only with its ``inplace``): ``/`` is cleared but for the ignored
    paths, then the parent stage's files come back (moved, when it was moved out whole) and the layers it lacks
    are unpacked into it. With ``reuse``, when ``/`` still holds the runtime image's files, the layers are unpacked
    over them instead, files already exactly right left in place (no new inode: the runtime image and the stage
    often share their Debian base), and then what the layers lack is removed. Those files stay in the container's
    lower layers, where directories cannot be renamed (EXDEV): the caller allows it only for a stage nothing moves
    out of ``/`` afterwards and whose RUN steps place no mounts. ``resumed``: the first so many layers are in ``/``
    already (the parent stage's files, handed over where they are): only the rest is unpacked."""
    if state.materialized:
        return
    if Path(os.path.abspath(state.rootfs)) == Path("/"):
        if inplace is None:
            raise RootfsError(f"stage {state.stage.label}: refusing to build in / (only the inplace sandbox does)")
        parent = state.parent
        take_parent = (not resumed and parent is not None and parent.materialized and parent.overlay is None
                       and Path(os.path.abspath(parent.rootfs)) != Path("/")
                       and state.layers[:len(parent.layers)] == parent.layers)
        start = len(parent.layers) if take_parent and parent is not None else resumed
        over_runtime = reuse and not take_parent and not resumed and inplace.begin()
        present: set[str] | None = set() if over_runtime else None  # / holds the runtime image: unpacked over,
        reused: set[str] | None = set() if over_runtime else None  # then swept
        if resumed or over_runtime:
            fetch_all(client, state.layers[start:], blob_cache)
        else:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="clear") as pool:
                cleared = pool.submit(inplace.clear)  # deleting files and downloading blobs overlap
                fetch_all(client, state.layers[start:], blob_cache)
                cleared.result()
            if take_parent and parent is not None:
                inplace.move_in(parent.rootfs)  # the parent stage's files, moved out of / when it ended, come back
                parent.rootfs.mkdir(mode=0o755)
                parent.materialized, parent.scan = False, None  # a later COPY --from it unpacks it again
        for number, layer in enumerate(state.layers[start:], start + 1):
            unpack_layer(state.rootfs, layer.path, keep=inplace.ignored, present=present, reused=reused,
                         description=f"layer {number} of stage {state.stage.label} ({layer.descriptor.digest})")
        state.scan = scan_tree(state.rootfs, exclude=inplace.exclude)
        if present is not None and reused is not None:
            removed = inplace.sweep(present, state.scan)
            inplace.keep_originals(reused)
            log.info("inplace: stage %s unpacked over the runtime image: %d entries already in place, %d removed",
                     state.stage.label, len(reused), removed)
        state.materialized = True
        return
    if mounts is not None and mounts.enabled:
        fetch_all(client, state.layers, blob_cache)
        described = [(layer.path, f"layer {number} of stage {state.stage.label} ({layer.descriptor.digest})")
                     for number, layer in enumerate(state.layers, 1)]
        state.overlay = StageOverlay.create(mounts, state.rootfs, described, f"stage {state.stage.label}")
        if state.overlay is not None:
            state.materialized = True
            return
    start = 0
    parent = state.parent
    if (parent is not None and parent.materialized and Path(os.path.abspath(parent.rootfs)) != Path("/")
            and state.layers[:len(parent.layers)] == parent.layers):
        copy_rootfs(parent.rootfs, state.rootfs)
        start = len(parent.layers)
    fetch_all(client, state.layers[start:], blob_cache)
    for number, layer in enumerate(state.layers[start:], start + 1):
        unpack_layer(state.rootfs, layer.path, description=f"layer {number} of stage {state.stage.label} "
                                                          f"({layer.descriptor.digest})")
    state.scan = scan_tree(state.rootfs)
    state.materialized = True


def state_from_image(stage: Stage, rootfs: Path, platform: Platform, image: PulledImage, name: str) -> StageState:
    config = image.config
    return StageState(stage, rootfs, platform, config=dict(config.get("config") or {}),
                      history=[dict(h) for h in config.get("history") or []], layers=list(image.layers),
                      base_name=name, author=config.get("author"))


def copy_rootfs(source: Path, dest: Path) -> None:
    """``dest`` becomes a copy of ``source`` with owners, modes, links, times and xattrs (reflinked where possible)."""
    dest.rmdir()
    clone_tree(source, dest, f"the stage rootfs {source}")
