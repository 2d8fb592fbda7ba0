"""Attestations attached as BuildKit attaches them (its "attestation storage" format), pure: bytes in, bytes out.

An image with attestations is an OCI index of two manifests: the image manifest (with its platform) and an
attestation manifest (platform ``unknown/unknown``, annotations ``vnd.docker.reference.type:
attestation-manifest`` and ``vnd.docker.reference.digest: <image manifest digest>``). The attestation manifest is an
OCI artifact (``artifactType application/vnd.docker.attestation.manifest.v1+json``, the empty JSON config, a
``subject`` naming the image manifest, as BuildKit writes it by default) whose layers are the in-toto statements,
media type ``application/vnd.in-toto+json``, each annotated with ``in-toto.io/predicate-type``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lamina.oci.digest import compute_digest
from lamina.oci.index import attestation_descriptor
from lamina.oci.index import platform_of as config_platform
from lamina.oci.model import OCI_INDEX, OCI_MANIFEST, Descriptor, canonical_json

IN_TOTO = "application/vnd.in-toto+json"
PREDICATE_TYPE = "in-toto.io/predicate-type"
ARTIFACT_TYPE = "application/vnd.docker.attestation.manifest.v1+json"
EMPTY_JSON_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_JSON = b"{}"


@dataclass(frozen=True)
class Blob:
    descriptor: Descriptor
    data: bytes


@dataclass(frozen=True)
class Attestations:
    """The attestation manifest of one image manifest, with its blobs (statements and the empty config)."""

    manifest: bytes
    digest: str
    statements: tuple[Blob, ...]
    config: Blob

    @property
    def blobs(self) -> tuple[Blob, ...]:
        return (*self.statements, self.config)

    def descriptor(self, image_digest: str) -> Descriptor:
        """Its entry in the index."""
        return attestation_descriptor(self.digest, len(self.manifest), image_digest)


def statement_blob(statement: Mapping[str, Any]) -> Blob:
    data = canonical_json(dict(statement))
    return Blob(Descriptor(IN_TOTO, compute_digest(data), len(data), {PREDICATE_TYPE: str(statement["predicateType"])}),
                data)


def attestation_manifest(image: Descriptor, statements: Sequence[Mapping[str, Any]]) -> Attestations:
    """The attestation manifest for the image manifest ``image`` holding ``statements``."""
    blobs = tuple(statement_blob(s) for s in statements)
    config = Blob(Descriptor(EMPTY_JSON_TYPE, compute_digest(EMPTY_JSON), len(EMPTY_JSON)), EMPTY_JSON)
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": {**config.descriptor.to_json(), "data": "e30="},
        "layers": [b.descriptor.to_json() for b in blobs],
        "subject": {"mediaType": image.media_type, "digest": image.digest, "size": image.size},
    }
    data = canonical_json(document)
    return Attestations(data, compute_digest(data), blobs, config)


def image_index(entries: Sequence[tuple[Descriptor, Attestations | None]]) -> bytes:
    """An index of image manifests (each with its platform) and, after all of them (as BuildKit orders them), the
    attestation manifest of each that has one."""
    manifests = [image.to_json() for image, _ in entries]
    manifests += [att.descriptor(image.digest).to_json() for image, att in entries if att is not None]
    return canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})


def platform_of(config: bytes) -> dict[str, str]:
    """The platform object of an image config's bytes (os, architecture, variant when set), as an index entry
    names it (``lamina.oci.index.platform_of`` reads the config)."""
    os_name, architecture, variant, _ = config_platform(json.loads(config))
    platform = {"architecture": architecture, "os": os_name}
    if variant:
        platform["variant"] = variant
    return platform
