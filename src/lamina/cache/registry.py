"""The layer cache in a registry repository: one small image manifest per cached step, tagged with the step's key.

An entry's manifest holds the step's layer (none when the step changed nothing) and annotations that make a lookup
one GET: when it was made (for --cache-ttl), the layer's diff_id and history time (a hit keeps it, so a rebuild
from the cache gives the same image), and the key. Its config blob records the step's
history entry. Lookups run in parallel; pushes run in the background and never fail the build (they warn).

Base image configs are kept too, tagged ``config-<hex of the config digest>``, inside the entry's manifest (the
config descriptor's ``data``): a fully cached build then reads them with a manifest GET and fetches no blob at all.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lamina.cache.prune import CREATED_ANNOTATION, parse_created
from lamina.errors import LaminaError
from lamina.oci.digest import compute_digest
from lamina.oci.model import OCI_CONFIG, OCI_MANIFEST, Descriptor, Manifest, Platform, canonical_json
from lamina.oci.reference import Reference
from lamina.oci.registry.client import RegistryClient

log = logging.getLogger(__name__)

DIFF_ID = "dev.lamina.cache.diff-id"
LAYER_CREATED = "dev.lamina.cache.layer-created"  # the layer's history time, which a hit keeps
KEY = "dev.lamina.cache.key"
LOOKUP_WORKERS = 8
PUSH_WORKERS = 2


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


class RegistryCache:
    """Lookups and background pushes of cache entries in ``repository`` (a reference without tag)."""

    def __init__(self, client: RegistryClient, repository: Reference, *, ttl: timedelta, push: bool,
                 now: datetime | None = None) -> None:
        self.client = client
        self.repository = repository
        self.ttl = ttl
        self.push_enabled = push
        self.now = now or datetime.now(UTC)
        self.found: dict[str, CacheEntry | None] = {}
        self.warnings: list[str] = []
        self._pushes: list[tuple[str, Future[None]]] = []
        self._pool = ThreadPoolExecutor(max_workers=PUSH_WORKERS, thread_name_prefix="cache-push")

    def entry_ref(self, key: str) -> Reference:
        return self.repository.with_tag(key)

    def _fetch(self, key: str) -> CacheEntry | None:
        try:
            fetched = self.client.fetch_manifest(self.entry_ref(key))
        except LaminaError as exc:
            self.warn(f"cache lookup of {key[:12]} in {self.repository.name} failed: {exc}")
            return None
        if fetched is None:
            return None
        entry = parse_entry(key, fetched.body)
        if entry is None or self.now - entry.created > self.ttl:
            return None  # malformed or expired: a miss, rewritten by this build
        return entry

    def prefetch(self, keys: Iterable[str]) -> None:
        """Look up ``keys`` in parallel (one GET each)."""
        wanted = [k for k in dict.fromkeys(keys) if k not in self.found]
        if not wanted:
            return
        with ThreadPoolExecutor(max_workers=LOOKUP_WORKERS, thread_name_prefix="cache-lookup") as pool:
            for key, entry in zip(wanted, pool.map(self._fetch, wanted), strict=True):
                self.found[key] = entry

    def lookup(self, key: str) -> CacheEntry | None:
        if key not in self.found:
            self.found[key] = self._fetch(key)
        return self.found[key]

    def push(self, key: str, layer: Descriptor | None, diff_id: str | None, path: Path | None,
             history: dict[str, object], platform: Platform) -> None:
        """Store an entry in the background; failures become warnings."""
        if not self.push_enabled:
            return
        created = datetime.now(UTC)

        def work() -> None:
            ref = self.entry_ref(key)
            if layer is not None and path is not None:
                self.client.push_blob(ref, layer, path)
            config, manifest = entry_manifest(key, layer, diff_id, history, platform, created)
            self.client.push_blob_bytes(ref, config, OCI_CONFIG)
            self.client.push_manifest(ref, manifest, OCI_MANIFEST)

        self._pushes.append((key, self._pool.submit(work)))

    def image_config(self, descriptor: Descriptor) -> bytes | None:
        """A base image's config kept by an earlier build (see ``config_entry_manifest``), or None."""
        if not descriptor.digest.startswith("sha256:"):
            return None
        ref = self.repository.with_tag(CONFIG_TAG_PREFIX + descriptor.digest.removeprefix("sha256:"))
        try:
            fetched = self.client.fetch_manifest(ref)
        except LaminaError as exc:
            self.warn(f"cache lookup of the config {descriptor.digest[7:19]} in {self.repository.name} failed: {exc}")
            return None
        return parse_config_entry(fetched.body, descriptor) if fetched is not None else None

    def store_image_config(self, digest: str, config: bytes) -> None:
        """Keep a base image's config for the next builds, in the background (see ``image_config``)."""
        if not self.push_enabled or len(config) > MAX_EMBEDDED_CONFIG or not digest.startswith("sha256:"):
            return
        ref = self.repository.with_tag(CONFIG_TAG_PREFIX + digest.removeprefix("sha256:"))
        created = datetime.now(UTC)

        def work() -> None:
            self.client.push_blob_bytes(ref, config, OCI_CONFIG)
            self.client.push_manifest(ref, config_entry_manifest(config, digest, created), OCI_MANIFEST)

        self._pushes.append((ref.tag or "", self._pool.submit(work)))

    def warn(self, text: str) -> None:
        log.warning("%s", text)
        self.warnings.append(text)

    def finish(self) -> list[str]:
        """Wait for the background pushes; return every warning of this cache."""
        for key, future in self._pushes:
            try:
                future.result()
            except Exception as exc:  # noqa: BLE001 - a cache push must never fail the build
                self.warn(f"could not store cache entry {key[:12]} in {self.repository.name}: {exc}")
        self._pushes.clear()
        self._pool.shutdown(wait=True)
        return self.warnings
