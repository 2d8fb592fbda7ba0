"""Base images kept in ``--cache-dir`` for builds that must not (or cannot) reach their registry: what Kaniko's
warmer does, and more, since lamina also keeps how a tag resolved.

Layout of the cache directory (the layer blobs where ``--cache-dir`` always kept them):

    <dir>/sha256/<hex>                       layer blobs (what ``lamina.build.stage.ensure_local`` reads)
    <dir>/images/<sha256 of "REF|PLATFORM">.json   manifest, config and where it came from, per reference

A build with ``--cache-dir`` uses a kept image without asking its registry when the FROM names a digest (as Kaniko);
for a tag it asks the registry and uses the kept image only when the registry cannot be reached, saying so. Entries
older than ``--cache-ttl`` are not used (as Kaniko's warmer cache).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lamina.oci.digest import compute_digest
from lamina.oci.model import Descriptor, Manifest, Platform
from lamina.oci.reference import Reference
from lamina.oci.registry.client import RegistryClient, ResolvedImage


@dataclass(frozen=True)
class WarmedImage:
    reference: str
    platform: str
    manifest_digest: str
    layers: int
    downloaded: int  # layer blobs fetched now (the others were there already)


def entry_path(cache_dir: Path, ref: Reference, platform: Platform) -> Path:
    key = hashlib.sha256(f"{ref}|{platform}".encode()).hexdigest()
    return cache_dir / "images" / f"{key}.json"


def blob_path(cache_dir: Path, digest: str) -> Path:
    return cache_dir / digest.replace(":", "/")


def store_image(cache_dir: Path, ref: Reference, platform: Platform, resolved: ResolvedImage) -> None:
    """Keep how ``ref`` resolved for ``platform`` (written atomically)."""
    path = entry_path(cache_dir, ref, platform)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"reference": str(ref), "source": str(resolved.reference), "platform": str(platform),
                "manifest_digest": resolved.manifest_digest, "manifest": resolved.manifest.to_bytes().decode(),
                "manifest_media_type": resolved.manifest.media_type, "config": resolved.config_bytes.decode(),
                "stored": time.time()}
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(document))
    os.replace(partial, path)


def load_image(cache_dir: Path, ref: Reference, platform: Platform, *, ttl_seconds: float | None = None,
               now: float | None = None) -> ResolvedImage | None:
    """The kept resolution of ``ref`` for ``platform``: None when there is none, it expired, or its config no
    longer matches the digest its manifest names."""
    path = entry_path(cache_dir, ref, platform)
    try:
        document: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if ttl_seconds is not None and (now if now is not None else time.time()) - float(document["stored"]) > ttl_seconds:
        return None
    config_bytes = str(document["config"]).encode()
    # the manifest as lamina parsed it (its digest, recorded, is the registry's): the config is checked by digest
    manifest = Manifest.from_bytes(str(document["manifest"]).encode(), str(document.get("manifest_media_type", "")))
    if compute_digest(config_bytes) != manifest.config.digest:
        return None
    return ResolvedImage(Reference.parse(str(document["source"])), str(document["manifest_digest"]), manifest,
                         config_bytes, json.loads(config_bytes))


def warm(client: RegistryClient, cache_dir: Path, refs: Iterable[Reference], platform: Platform, *,
         force: bool = False) -> list[WarmedImage]:
    """Resolve each image for ``platform`` and keep it, with every layer blob, in ``cache_dir``."""
    out = []
    for ref in refs:
        resolved = client.resolve_image(ref, platform)
        downloaded = 0
        for layer in resolved.manifest.layers:
            dest = blob_path(cache_dir, layer.digest)
            if dest.exists() and not force:
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            client.fetch_blob(resolved.reference, Descriptor(layer.media_type, layer.digest, layer.size), dest)
            downloaded += 1
        store_image(cache_dir, ref, platform, resolved)
        out.append(WarmedImage(str(ref), str(platform), resolved.manifest_digest, len(resolved.manifest.layers),
                               downloaded))
    return out

