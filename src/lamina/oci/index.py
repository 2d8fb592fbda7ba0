"""Image indexes (OCI) and manifest lists (Docker) for multi-platform images, each image's attestation manifest
kept after the images (as BuildKit's attestation storage). Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lamina.oci.model import DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST, Descriptor, canonical_json

REFERENCE_TYPE = "vnd.docker.reference.type"
REFERENCE_DIGEST = "vnd.docker.reference.digest"
ATTESTATION_MANIFEST = "attestation-manifest"


def attestation_descriptor(digest: str, size: int, image_digest: str) -> Descriptor:
    """An attestation manifest's entry in an index: platform ``unknown/unknown`` (no runtime picks it), annotated
    with what it is and the image manifest it is about (BuildKit's attestation storage)."""
    return Descriptor(OCI_MANIFEST, digest, size, {REFERENCE_TYPE: ATTESTATION_MANIFEST, REFERENCE_DIGEST: image_digest},
                      {"architecture": "unknown", "os": "unknown"})


def is_attestation(entry: dict[str, Any]) -> bool:
    """Is an index entry (its JSON) an attestation manifest?"""
    return (entry.get("annotations") or {}).get(REFERENCE_TYPE) == ATTESTATION_MANIFEST


@dataclass(frozen=True)
class IndexEntry:
    """One platform's image: its manifest descriptor and the platform read from its config."""

    media_type: str
    digest: str
    size: int
    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""
    attestation: tuple[str, int] | None = None  # its attestation manifest (digest, size), kept in the index

    @property
    def platform_text(self) -> str:
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")


def platform_of(config: dict[str, Any]) -> tuple[str, str, str, str]:
    """(os, architecture, variant, os.version) of an image config; ValueError when it names none."""
    os_name, arch = config.get("os"), config.get("architecture")
    if not isinstance(os_name, str) or not isinstance(arch, str) or not os_name or not arch:
        raise ValueError("the image config does not say its os and architecture")
    return os_name, arch, str(config.get("variant") or ""), str(config.get("os.version") or "")


def make_index(entries: list[IndexEntry]) -> tuple[bytes, str]:
    """The index body and its media type: a Docker manifest list when every entry is a Docker manifest, else an
    OCI index. Entries keep their order; two entries for the same platform are refused."""
    if not entries:
        raise ValueError("an index needs at least one image")
    seen: dict[str, str] = {}
    for entry in entries:
        if entry.platform_text in seen:
            raise ValueError(f"two images for platform {entry.platform_text}: {seen[entry.platform_text]} and "
                             f"{entry.digest}")
        seen[entry.platform_text] = entry.digest
        if entry.media_type not in (OCI_MANIFEST, DOCKER_MANIFEST):
            raise ValueError(f"{entry.digest} is not an image manifest ({entry.media_type})")
    docker = all(e.media_type == DOCKER_MANIFEST and e.attestation is None for e in entries)
    media_type = DOCKER_MANIFEST_LIST if docker else OCI_INDEX
    manifests = []
    for entry in entries:
        platform: dict[str, str] = {"architecture": entry.architecture, "os": entry.os}
        if entry.variant:
            platform["variant"] = entry.variant
        if entry.os_version:
            platform["os.version"] = entry.os_version
        manifests.append({"mediaType": entry.media_type, "digest": entry.digest, "size": entry.size,
                          "platform": platform})
    for entry in entries:  # after every image, as BuildKit orders them (lamina.attest.attach)
        if entry.attestation is not None:
            manifests.append(attestation_descriptor(*entry.attestation, entry.digest).to_json())
    return canonical_json({"schemaVersion": 2, "mediaType": media_type, "manifests": manifests}), media_type
