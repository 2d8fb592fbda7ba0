"""The layer cache of a build: parallel lookups of the planned steps' entries, and background stores that never fail
the build (they warn). Entries are read and written through a ``CacheStore`` (a registry repository or an OCI
layout); their format is ``lamina.cache.entries``."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lamina.cache.entries import (
    CONFIG_TAG_PREFIX,
    MAX_EMBEDDED_CONFIG,
    SBOM_TAG_PREFIX,
    SPDX_JSON,
    CacheEntry,
    config_entry_manifest,
    entry_manifest,
    parse_config_entry,
    parse_entry,
    parse_sbom_entry,
    sbom_entry_manifest,
)
from lamina.cache.stores import CacheStore, LayerFile
from lamina.errors import LaminaError
from lamina.oci.digest import compute_digest
from lamina.oci.model import Descriptor, Platform
from lamina.oci.reference import Reference

log = logging.getLogger(__name__)

LOOKUP_WORKERS = 8
STORE_WORKERS = 2


class LayerCache:
    """Lookups and background stores of cache entries in ``store``."""

    def __init__(self, store: CacheStore, *, ttl: timedelta, push: bool, now: datetime | None = None) -> None:
        self.store = store
        self.ttl = ttl
        self.push_enabled = push
        self.now = now or datetime.now(UTC)
        self.found: dict[str, CacheEntry | None] = {}
        self.warnings: list[str] = []
        self._pushes: list[tuple[str, Future[None]]] = []
        self._pool = ThreadPoolExecutor(max_workers=STORE_WORKERS, thread_name_prefix="cache-push")

    @property
    def name(self) -> str:
        return self.store.name

    def layer_source(self, key: str) -> Reference | None:
        """Where a pushed image mounts the layer of entry ``key`` from (None: the store is not a registry)."""
        return self.store.layer_source(key)

    def layer_path(self, descriptor: Descriptor) -> Path | None:
        """The blob of a hit's layer on disk, where the store keeps it there (an OCI layout)."""
        return self.store.layer_path(descriptor)

    def _fetch(self, key: str) -> CacheEntry | None:
        try:
            body = self.store.fetch(key)
        except LaminaError as exc:
            self.warn(f"cache lookup of {key[:12]} in {self.name} failed: {exc}")
            return None
        if body is None:
            return None
        entry = parse_entry(key, body)
        if entry is None or self.now - entry.created > self.ttl:
            return None  # malformed or expired: a miss, rewritten by this build
        return entry

    def prefetch(self, keys: Iterable[str]) -> None:
        """Look up ``keys`` in parallel (one read each)."""
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
            config, manifest = entry_manifest(key, layer, diff_id, history, platform, created)
            blob = LayerFile(layer, diff_id, path) if layer is not None and diff_id and path is not None else None
            self.store.store(key, manifest, config, blob)

        self._pushes.append((key, self._pool.submit(work)))

    def image_config(self, descriptor: Descriptor) -> bytes | None:
        """A base image's config kept by an earlier build (see ``config_entry_manifest``), or None."""
        if not descriptor.digest.startswith("sha256:"):
            return None
        tag = CONFIG_TAG_PREFIX + descriptor.digest.removeprefix("sha256:")
        try:
            body = self.store.fetch(tag)
        except LaminaError as exc:
            self.warn(f"cache lookup of the config {descriptor.digest[7:19]} in {self.name} failed: {exc}")
            return None
        return parse_config_entry(body, descriptor) if body is not None else None

    def store_image_config(self, digest: str, config: bytes) -> None:
        """Keep a base image's config for the next builds, in the background (see ``image_config``)."""
        if not self.push_enabled or len(config) > MAX_EMBEDDED_CONFIG or not digest.startswith("sha256:"):
            return
        tag = CONFIG_TAG_PREFIX + digest.removeprefix("sha256:")
        created = datetime.now(UTC)

        def work() -> None:
            self.store.store(tag, config_entry_manifest(config, digest, created), config, None)

        self._pushes.append((tag, self._pool.submit(work)))

    def sbom(self, key: str) -> bytes | None:
        """The SPDX document an earlier build kept for the layers ``key`` names (see ``store_sbom``), or None."""
        tag = SBOM_TAG_PREFIX + key
        try:
            body = self.store.fetch(tag)
            descriptor = parse_sbom_entry(tag, body) if body is not None else None
            return self.store.fetch_blob(tag, descriptor) if descriptor is not None else None
        except LaminaError as exc:
            self.warn(f"cache lookup of the SBOM {key[:12]} in {self.name} failed: {exc}")
            return None

    def store_sbom(self, key: str, document: bytes, path: Path) -> None:
        """Keep an SPDX document (written at ``path``) for the next builds of the same layers, in the background."""
        if not self.push_enabled:
            return
        tag = SBOM_TAG_PREFIX + key
        descriptor = Descriptor(SPDX_JSON, compute_digest(document), len(document))
        created = datetime.now(UTC)

        def work() -> None:
            config, manifest = sbom_entry_manifest(tag, descriptor, created)
            self.store.store(tag, manifest, config, LayerFile(descriptor, descriptor.digest, path))

        self._pushes.append((tag, self._pool.submit(work)))

    def warn(self, text: str) -> None:
        log.warning("%s", text)
        self.warnings.append(text)

    def finish(self) -> list[str]:
        """Wait for the background stores; return every warning of this cache."""
        for key, future in self._pushes:
            try:
                future.result()
            except Exception as exc:  # noqa: BLE001 - a cache store must never fail the build
                self.warn(f"could not store cache entry {key[:12]} in {self.name}: {exc}")
        self._pushes.clear()
        self._pool.shutdown(wait=True)
        return self.warnings
