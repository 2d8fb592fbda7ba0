"""``lamina manifest create``: an index over images already pushed (one per platform, built on separate runners)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

from lamina.errors import NotFound, RegistryError
from lamina.oci.index import IndexEntry, make_index, platform_of
from lamina.oci.model import Manifest
from lamina.oci.reference import Reference
from lamina.oci.registry.client import RegistryClient


@dataclass(frozen=True)
class AssembledIndex:
    digest: str
    media_type: str
    entries: tuple[IndexEntry, ...]


def create_index(client: RegistryClient, destination: Reference, sources: list[Reference]) -> AssembledIndex:
    """Read each source image (by digest or tag), make sure the destination repository has it (blobs mounted or
    copied, manifest pushed by digest), then push the index to ``destination``."""
    entries = []
    for source in sources:
        fetched = client.fetch_manifest(source)
        if fetched is None:
            raise NotFound(f"image {source} not found", registry=source.registry, repository=source.repository,
                           status=404, hint="push each platform's image first, then create the index")
        try:
            manifest = Manifest.from_bytes(fetched.body, fetched.media_type)
        except (ValueError, KeyError) as exc:
            raise RegistryError(f"{source} is not an image manifest ({fetched.media_type}): {exc}",
                                registry=source.registry, repository=source.repository,
                                hint="name single-platform images, not an index") from None
        config = json.loads(client.fetch_blob_bytes(source, manifest.config))
        try:
            os_name, arch, variant, os_version = platform_of(config)
        except ValueError as exc:
            raise RegistryError(f"{source}: {exc}", registry=source.registry, repository=source.repository,
                                hint="build each image with lamina build --platform") from None
        if (source.registry, source.repository) != (destination.registry, destination.repository):
            for descriptor in (manifest.config, *manifest.layers):
                if not client.blob_exists(destination, descriptor.digest):
                    client.ensure_blob(destination, descriptor, sources=[source], path=None)
            client.push_manifest(replace(destination, tag=None, digest=fetched.digest), fetched.body,
                                 fetched.media_type)
        entries.append(IndexEntry(fetched.media_type, fetched.digest, len(fetched.body), os_name, arch, variant,
                                  os_version))
    try:
        body, media_type = make_index(entries)
    except ValueError as exc:
        raise RegistryError(str(exc), registry=destination.registry, repository=destination.repository,
                            hint="give one image per platform") from None
    target = destination if destination.tag or destination.digest else destination.with_tag("latest")
    digest = client.push_manifest(target, body, media_type)
    return AssembledIndex(digest, media_type, tuple(entries))
