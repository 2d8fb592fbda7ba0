"""The cache's entries: one small image manifest per cached step, tagged with the step's key (pure: no I/O).

An entry's manifest holds the step's layer (none when the step changed nothing) and annotations that make a lookup
one read: when it was made (for --cache-ttl), the layer's diff_id and history time (a hit keeps it, so a rebuild
from the cache gives the same image), and the key. Its config blob records the step's history entry. The same
entries are kept in a registry repository or in an OCI image layout (``lamina.cache.stores``).

Base image configs are kept too, tagged ``config-<hex of the config digest>``, inside the entry's manifest (the
config descriptor's ``data``): a fully cached build then reads them with a manifest GET and fetches no blob at all.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime

from lamina.cache.prune import CREATED_ANNOTATION, parse_created
from lamina.oci.digest import compute_digest
from lamina.oci.model import OCI_CONFIG, OCI_MANIFEST, Descriptor, Manifest, Platform, canonical_json

DIFF_ID = "dev.lamina.cache.diff-id"
LAYER_CREATED = "dev.lamina.cache.layer-created"  # the layer's history time, which a hit keeps
KEY = "dev.lamina.cache.key"


@dataclass(frozen=True)
class CacheEntry:
    key: str
    layer: Descriptor | None  # None: the step changed nothing
    diff_id: str | None
    created: datetime
    layer_created: str | None = None  # the history time of the layer (entries made before lamina kept it: None)


def parse_entry(key: str, body: bytes) -> CacheEntry | None:
    """Read an entry's manifest; None when it is not a lamina cache entry (or is malformed)."""
    try:
        manifest = Manifest.from_bytes(body)
    except (ValueError, KeyError, TypeError):
        return None
    notes = manifest.annotations
    if notes.get(KEY) != key or CREATED_ANNOTATION not in notes:
        return None
    created = parse_created(notes[CREATED_ANNOTATION])
    if created is None:
        return None
    if not manifest.layers:
        return CacheEntry(key, None, None, created)
    if len(manifest.layers) != 1 or DIFF_ID not in notes:
        return None
    return CacheEntry(key, manifest.layers[0], notes[DIFF_ID], created, notes.get(LAYER_CREATED) or None)


def entry_manifest(key: str, layer: Descriptor | None, diff_id: str | None, history: dict[str, object],
                   platform: Platform, created: datetime) -> tuple[bytes, bytes]:
    """The config blob and manifest of an entry."""
    config = canonical_json({
        "architecture": platform.architecture, "os": platform.os,
        "rootfs": {"type": "layers", "diff_ids": [diff_id] if diff_id else []},
        "history": [history],
    })
    notes = {CREATED_ANNOTATION: created.strftime("%Y-%m-%dT%H:%M:%SZ"), KEY: key}
    if diff_id:
        notes[DIFF_ID] = diff_id
    if isinstance(history.get("created"), str):
        notes[LAYER_CREATED] = str(history["created"])
    manifest = Manifest(Descriptor(OCI_CONFIG, compute_digest(config), len(config)),
                        (layer,) if layer is not None else (), OCI_MANIFEST, notes)
    return config, manifest.to_bytes()


CONFIG_TAG_PREFIX = "config-"
LAYOUT_PREFIX = "oci:"  # --cache-repo oci:/path: the cache in an OCI image layout (lamina.cache.stores)
MAX_EMBEDDED_CONFIG = 256 * 1024


def config_entry_manifest(config: bytes, digest: str, created: datetime) -> bytes:
    """An entry keeping an image config (a base image's) inside its manifest: the config descriptor carries the
    bytes in its ``data`` field (OCI image spec 1.1), so reading it back is one manifest GET, no blob GET."""
    tag = CONFIG_TAG_PREFIX + digest.removeprefix("sha256:")
    return canonical_json({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest, "size": len(config),
                   "data": base64.b64encode(config).decode("ascii")},
        "layers": [],
        "annotations": {CREATED_ANNOTATION: created.strftime("%Y-%m-%dT%H:%M:%SZ"), KEY: tag},
    })


def parse_config_entry(body: bytes, descriptor: Descriptor) -> bytes | None:
    """The config a config entry embeds, when it is the one ``descriptor`` names; else None."""
    try:
        data = json.loads(body)["config"]["data"]
        config = base64.b64decode(data, validate=True)
    except (ValueError, KeyError, TypeError):
        return None
    if len(config) != descriptor.size or compute_digest(config) != descriptor.digest:
        return None
    return config


SBOM_TAG_PREFIX = "sbom-"
SPDX_JSON = "application/spdx+json"
EMPTY_CONFIG = b"{}"


def sbom_entry_manifest(tag: str, document: Descriptor, created: datetime) -> tuple[bytes, bytes]:
    """The config blob and manifest of an entry keeping an SBOM (one layer: the SPDX JSON document), tagged
    ``sbom-<key of the layers it describes>``."""
    config = EMPTY_CONFIG
    manifest = Manifest(Descriptor(OCI_CONFIG, compute_digest(config), len(config)), (document,), OCI_MANIFEST,
                        {CREATED_ANNOTATION: created.strftime("%Y-%m-%dT%H:%M:%SZ"), KEY: tag})
    return config, manifest.to_bytes()


def parse_sbom_entry(tag: str, body: bytes) -> Descriptor | None:
    """The SPDX document's descriptor of an SBOM entry, or None when ``body`` is not the entry ``tag``."""
    try:
        manifest = Manifest.from_bytes(body)
    except (ValueError, KeyError, TypeError):
        return None
    if manifest.annotations.get(KEY) != tag or len(manifest.layers) != 1 or manifest.layers[0].media_type != SPDX_JSON:
        return None
    return manifest.layers[0]
