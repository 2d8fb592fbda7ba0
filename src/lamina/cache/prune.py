"""Pruning the layer cache in a registry repository.

A cache entry is an image manifest tagged with its 64-hex-digit cache key, whose ``annotations`` carry
``org.opencontainers.image.created`` (RFC 3339). Everything else in the repository (other tags, indexes, manifests
without that annotation) is left alone. Entries older than a cutoff are deleted by digest, always keeping the
``keep`` newest; a digest that some tag not being deleted also points to is never deleted (deleting a manifest
deletes every tag on it).

:func:`select_stale` and :func:`parse_duration_text` are pure; :func:`prune_cache` talks to the registry;
:func:`prune_layout` prunes a cache kept in an OCI layout (``--cache-repo oci:/path``), whose unreferenced blobs
then go too.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lamina.errors import RegistryError
from lamina.oci.layout import layout_refs, locked_layout, read_layout_manifest, remove_layout_refs
from lamina.oci.model import MANIFEST_TYPES
from lamina.oci.reference import Reference
from lamina.oci.registry.client import FetchedManifest, RegistryClient

log = logging.getLogger(__name__)

CREATED_ANNOTATION = "org.opencontainers.image.created"
FETCH_WORKERS = 4
_CACHE_KEY = re.compile(r"[0-9a-f]{64}")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
                 "d": 86400.0, "w": 604800.0}


@dataclass(frozen=True)
class PruneReport:
    kept: int  # cache entries left in the repository
    deleted: tuple[str, ...]  # tags deleted (their manifests are gone)
    refused: str | None = None  # why the registry refused deletion (HTTP 405), if it did; then nothing more was tried


def is_cache_key(tag: str) -> bool:
    """Is ``tag`` a cache key (64 lower-case hex digits)?"""
    return bool(_CACHE_KEY.fullmatch(tag))


def parse_duration_text(text: str) -> timedelta:
    """A duration like Go's ``time.ParseDuration`` (``336h``, ``90m``, ``1h30m``, ``1.5h``), plus days and weeks
    (``14d``, ``2w``). Not negative. Raises :class:`ValueError` saying what is accepted."""
    value = text.strip()
    if value == "0":
        return timedelta(0)
    seconds = 0.0
    pos = 0
    for match in _DURATION_PART.finditer(value):
        if match.start() != pos:
            break
        seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if not value or pos != len(value):
        raise ValueError(f"invalid duration {text!r}: use a number and a unit, like 336h, 14d, 2w, 90m or 1h30m"
                         " (units: w, d, h, m, s, ms, us, ns)")
    return timedelta(seconds=seconds)


def parse_created(value: object) -> datetime | None:
    """The time of an RFC 3339 ``created`` annotation (``2024-05-01T12:00:00Z``, with an offset, with fractions of
    a second), or ``None`` if it is not one (a timestamp without a UTC offset is not RFC 3339)."""
    if not isinstance(value, str) or "T" not in value.upper():
        return None
    text = value.strip().upper()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def select_stale(entries: Sequence[tuple[str, datetime]], *, older_than: timedelta, keep: int,
                 now: datetime) -> list[str]:
    """The tags among ``entries`` (tag, created) to delete: created before ``now - older_than``, except that the
    ``keep`` newest entries overall are always kept. Oldest first; ties in time go by tag. Pure.

    ``now`` and the times must be timezone-aware.
    """
    if keep < 0:
        raise ValueError(f"keep must not be negative, not {keep}")
    if older_than < timedelta(0):
        raise ValueError(f"older_than must not be negative, not {older_than}")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    cutoff = now - older_than
    newest_first = sorted(entries, key=lambda entry: (entry[1], entry[0]), reverse=True)
    stale = [tag for tag, created in newest_first[keep:] if created < cutoff]
    stale.reverse()
    return stale


def prune_cache(client: RegistryClient, cache_repo: Reference, *, older_than: timedelta, keep: int = 0,
                now: datetime | None = None) -> PruneReport:
    """Delete the cache entries of ``cache_repo``'s repository older than ``older_than`` (keeping the ``keep``
    newest; see :func:`select_stale`). When the registry does not allow deletion (405) it stops and says so in
    :attr:`PruneReport.refused` instead of raising; other registry errors raise."""
    if now is None:
        now = datetime.now(UTC)
    tags = client.list_tags(cache_repo)
    with ThreadPoolExecutor(max_workers=FETCH_WORKERS) as pool:
        fetched = list(pool.map(lambda tag: client.fetch_manifest(cache_repo.with_tag(tag)), tags))
    digests: dict[str, str] = {}  # tag -> manifest digest, for every tag that still exists
    entries: list[tuple[str, datetime]] = []
    for tag, manifest in zip(tags, fetched, strict=True):
        if manifest is None:
            continue  # deleted since it was listed
        digests[tag] = manifest.digest
        created = _entry_created(tag, manifest)
        if created is not None:
            entries.append((tag, created))
    stale = select_stale(entries, older_than=older_than, keep=keep, now=now)
    stale_set = set(stale)
    protected = {digest for tag, digest in digests.items() if tag not in stale_set}
    deleted: list[str] = []
    done: set[str] = set()
    for tag in stale:
        digest = digests[tag]
        if digest in protected:
            log.info("keeping cache entry %s: a tag that stays points to its manifest %s", tag, digest)
            continue
        if digest not in done:
            try:
                client.delete_manifest(cache_repo, digest)
            except RegistryError as e:
                if e.status != 405:
                    raise
                return PruneReport(len(entries) - len(deleted), tuple(deleted), str(e))
            done.add(digest)
        deleted.append(tag)
    return PruneReport(len(entries) - len(deleted), tuple(deleted))


def prune_layout(path: Path, *, older_than: timedelta, keep: int = 0, now: datetime | None = None) -> PruneReport:
    """Drop the cache entries of the OCI layout ``path`` older than ``older_than`` (keeping the ``keep`` newest),
    base image configs kept as ``config-…`` entries included, then the blobs nothing references any more."""
    if now is None:
        now = datetime.now(UTC)
    entries: list[tuple[str, datetime]] = []
    with locked_layout(path):
        for tag, _digest in layout_refs(path):
            if not (is_cache_key(tag) or tag.startswith("config-")):
                continue
            body = read_layout_manifest(path, tag)
            created = _created_of(body) if body is not None else None
            if created is not None:
                entries.append((tag, created))
        stale = select_stale(entries, older_than=older_than, keep=keep, now=now)
        if stale:
            remove_layout_refs(path, set(stale))
    return PruneReport(len(entries) - len(stale), tuple(stale))


def _entry_created(tag: str, manifest: FetchedManifest) -> datetime | None:
    """When the cache entry ``tag`` was created, or ``None`` if it is not a cache entry."""
    if not is_cache_key(tag) or manifest.media_type not in MANIFEST_TYPES:
        return None
    return _created_of(manifest.body)


def _created_of(body: bytes) -> datetime | None:
    """The ``created`` annotation of a manifest's JSON, or None."""
    try:
        raw = json.loads(body)
    except ValueError:
        return None
    annotations = raw.get("annotations") if isinstance(raw, dict) else None
    if not isinstance(annotations, dict):
        return None
    return parse_created(annotations.get(CREATED_ANNOTATION))
