"""``lamina manifest create``: an index over images already pushed (one per platform, built on separate runners)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

from lamina.errors import NotFound, RegistryError
from lamina.oci.index import REFERENCE_DIGEST, IndexEntry, is_attestation, make_index, platform_of
from lamina.oci.model import INDEX_TYPES, Manifest
from lamina.oci.reference import Reference
from lamina.oci.registry.client import RegistryClient


@dataclass(frozen=True)
class AssembledIndex:
    digest: str
    media_type: str
    entries: tuple[IndexEntry, ...]


def _copy(client: RegistryClient, source: Reference, destination: Reference, digest: str, body: bytes,
          media_type: str, manifest: Manifest) -> None:
    """Make ``destination``'s repository hold a manifest of ``source`` and its blobs (mounted or copied)."""
    if (source.registry, source.repository) == (destination.registry, destination.repository):
        return
    for descriptor in (manifest.config, *manifest.layers):
        if not client.blob_exists(destination, descriptor.digest):
            client.ensure_blob(destination, descriptor, sources=[source], path=None)
    client.push_manifest(replace(destination, tag=None, digest=digest), body, media_type)


def _images_of(client: RegistryClient, source: Reference) -> list[tuple[Reference, Reference | None]]:
    """The image manifests ``source`` names (itself, or the images of an index lamina or BuildKit pushed with
    attestations), each with its attestation manifest when it has one."""
    fetched = client.fetch_manifest(source)
    if fetched is None:
        raise NotFound(f"image {source} not found", registry=source.registry, repository=source.repository,
                       status=404, hint="push each platform's image first, then create the index")
    if fetched.media_type not in INDEX_TYPES:
        return [(replace(source, tag=None, digest=fetched.digest), None)]
    entries = json.loads(fetched.body).get("manifests") or []
    attestations = {(e.get("annotations") or {}).get(REFERENCE_DIGEST): e["digest"] for e in entries
                    if is_attestation(e)}
    images = [e for e in entries if not is_attestation(e)]
    def at(digest: str) -> Reference:
        return replace(source, tag=None, digest=digest)
    return [(at(e["digest"]), at(attestations[e["digest"]]) if e["digest"] in attestations else None)
            for e in images]


def create_index(client: RegistryClient, destination: Reference, sources: list[Reference]) -> AssembledIndex:
    """Read each source image (by digest or tag; an index of one platform's image and its attestations too), make
    sure the destination repository has it (blobs mounted or copied, manifests pushed by digest), then push the
    index to ``destination``, each image's attestation manifest kept."""
    entries = []
    for given in sources:
        for source, attestation in _images_of(client, given):
            fetched = client.fetch_manifest(source)
            if fetched is None:
                raise NotFound(f"image {source} not found", registry=source.registry, repository=source.repository,
                               status=404, hint="push each platform's image first, then create the index")
            try:
                manifest = Manifest.from_bytes(fetched.body, fetched.media_type)
            except (ValueError, KeyError) as exc:
                raise RegistryError(f"{given} is not an image manifest ({fetched.media_type}): {exc}",
                                    registry=source.registry, repository=source.repository,
                                    hint="name single-platform images") from None
            config = json.loads(client.fetch_blob_bytes(source, manifest.config))
            try:
                os_name, arch, variant, os_version = platform_of(config)
            except ValueError as exc:
                raise RegistryError(f"{given}: {exc}", registry=source.registry, repository=source.repository,
                                    hint="build each image with lamina build --platform") from None
            _copy(client, source, destination, fetched.digest, fetched.body, fetched.media_type, manifest)
            kept = None
            if attestation is not None:
                found = client.fetch_manifest(attestation)
                if found is not None:
                    _copy(client, attestation, destination, found.digest, found.body, found.media_type,
                          Manifest.from_bytes(found.body, found.media_type))
                    kept = (found.digest, len(found.body))
            entries.append(IndexEntry(fetched.media_type, fetched.digest, len(fetched.body), os_name, arch, variant,
                                      os_version, kept))
    try:
        body, media_type = make_index(entries)
    except ValueError as exc:
        raise RegistryError(str(exc), registry=destination.registry, repository=destination.repository,
                            hint="give one image per platform") from None
    target = destination if destination.tag or destination.digest else destination.with_tag("latest")
    digest = client.push_manifest(target, body, media_type)
    return AssembledIndex(digest, media_type, tuple(entries))
