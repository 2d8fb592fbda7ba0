"""What happens to a built image: pushed to each destination (layers mounted across repositories where they can
be), written as a docker-archive tarball or OCI layout, and described in the digest and metadata files. An image
with attestations (``Attached``) is pushed and written as BuildKit does: an index of the image manifest and its
attestation manifest, the index being what the tag names."""

from __future__ import annotations

import json
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from lamina.attest.attach import Attestations, image_index, platform_of
from lamina.build.stage import PARALLEL_TRANSFERS, ensure_local
from lamina.build.state import LayerRef
from lamina.errors import InvalidReference, OptionsError, OutputError, RegistryError
from lamina.oci.digest import compute_digest
from lamina.oci.layout import ImageBlobs, write_docker_archive, write_oci_archive, write_oci_layout
from lamina.oci.model import OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, Descriptor, Manifest
from lamina.oci.reference import Reference
from lamina.oci.registry.client import RegistryClient
from lamina.options import BuildOptions


@dataclass(frozen=True)
class Attached:
    """An image with its attestation manifest, joined in an index (what the tag names)."""

    index: bytes
    digest: str
    attestations: Attestations

    @classmethod
    def of(cls, image: ImageBlobs, attestations: Attestations) -> Attached:
        entry = Descriptor(OCI_MANIFEST, image.manifest_digest, len(image.manifest), {}, platform_of(image.config))
        index = image_index([(entry, attestations)])
        return cls(index, compute_digest(index), attestations)

    @property
    def blobs(self) -> list[bytes]:
        """The attestation blobs and manifest, for an OCI layout."""
        return [b.data for b in self.attestations.blobs] + [self.attestations.manifest]


def parse_destination(text: str) -> Reference:
    try:
        return Reference.parse(text)
    except InvalidReference as exc:
        raise OptionsError(f"--destination {text}: {exc}") from None


def push_image(client: RegistryClient, dest: Reference, image: ImageBlobs, sources: Mapping[str, LayerRef],
               blob_cache: Path | None = None, *, by_digest: bool = False) -> str:
    """Layers (a few at a time), then the config, then the manifest: a registry must have every blob a manifest
    names, so the manifest goes only after every layer is confirmed.

    A layer the destination lacks is mounted from the repository it came from when that is on the same registry
    (the cache repository, the base image's): nothing is downloaded or uploaded. Otherwise it is uploaded, and
    downloaded first if this build never needed it locally.

    ``by_digest``: the manifest goes to ``dest``'s repository under its digest only (no tag is created or moved).
    Returns what was pushed: ``dest`` itself, or ``repository@digest``."""
    def push_layer(descriptor: Descriptor, path: Path) -> None:
        layer = sources.get(descriptor.digest)
        origins = [layer.source] if layer is not None and layer.source is not None else []
        if path.exists():
            client.ensure_blob(dest, descriptor, sources=origins, path=path)
            return
        try:  # no local copy: maybe the destination has it, or can mount it
            client.ensure_blob(dest, descriptor, sources=origins, path=None)
            return
        except RegistryError:
            if layer is None:
                raise
        ensure_local(client, layer, blob_cache)  # download it, then upload
        client.ensure_blob(dest, descriptor, sources=(), path=path)

    unique = list({d.digest: (d, p) for d, p in image.layers}.values())
    with ThreadPoolExecutor(max_workers=PARALLEL_TRANSFERS, thread_name_prefix="push") as pool:
        for future in [pool.submit(push_layer, d, p) for d, p in unique]:
            future.result()
    client.push_blob_bytes(dest, image.config, OCI_CONFIG)
    if by_digest:
        target = Reference(dest.registry, dest.repository, None, compute_digest(image.manifest))
    else:
        target = dest if dest.tag or dest.digest else dest.with_tag("latest")
    client.push_manifest(target, image.manifest, Manifest.from_bytes(image.manifest).media_type)
    return str(target)


def push_attested(client: RegistryClient, dest: Reference, image: ImageBlobs, attached: Attached,
                  sources: Mapping[str, LayerRef], blob_cache: Path | None = None, *, by_digest: bool = False) -> str:
    """The image manifest and the attestation manifest by digest, then the index joining them to the tag (or by
    digest too, with ``by_digest``). Returns what was pushed, as ``push_image``."""
    push_image(client, dest, image, sources, blob_cache, by_digest=True)
    for blob in attached.attestations.blobs:
        client.push_blob_bytes(dest, blob.data, blob.descriptor.media_type)
    client.push_manifest(Reference(dest.registry, dest.repository, None, attached.attestations.digest),
                         attached.attestations.manifest, OCI_MANIFEST)
    if by_digest:
        target = Reference(dest.registry, dest.repository, None, attached.digest)
    else:
        target = dest if dest.tag or dest.digest else dest.with_tag("latest")
    client.push_manifest(target, attached.index, OCI_INDEX)
    return str(target)


def build_metadata(image: ImageBlobs, destinations: list[Reference], attached: Attached | None = None
                   ) -> dict[str, Any]:
    """The metadata file, with the keys ``docker buildx build --metadata-file`` writes (the index's digest when
    the image has attestations), and the attestations' digests."""
    metadata: dict[str, Any] = {
        "containerimage.config.digest": image.config_digest,
        "containerimage.digest": image.manifest_digest,
        "containerimage.descriptor": {"mediaType": OCI_MANIFEST, "digest": image.manifest_digest,
                                      "size": len(image.manifest)},
    }
    if attached is not None:
        metadata["containerimage.digest"] = attached.digest
        metadata["containerimage.descriptor"] = {"mediaType": OCI_INDEX, "digest": attached.digest,
                                                 "size": len(attached.index)}
        metadata["lamina.image.manifest.digest"] = image.manifest_digest
        metadata["lamina.attestations"] = {
            "manifest": attached.attestations.digest,
            "statements": [{"predicateType": b.descriptor.annotations.get("in-toto.io/predicate-type", ""),
                            "digest": b.descriptor.digest, "size": b.descriptor.size}
                           for b in attached.attestations.statements]}
    if destinations:
        metadata["image.name"] = ",".join(f"{d.name}:{d.tag or 'latest'}" for d in destinations)
    return metadata


def put_text(url: str, text: str, name: str) -> None:
    """An output file given as an ``https://`` URL (a pre-signed S3, GCS or Azure URL): HTTP PUT, as Kaniko."""
    flag = "--" + name.replace("_", "-")
    shown, _, query = url.partition("?")  # a pre-signed URL's query is a credential: never printed
    try:
        resp = requests.put(url, data=text.encode(), headers={"Content-Type": "text/plain"}, timeout=60)
    except requests.RequestException as exc:
        detail = str(exc).replace(query, "...") if query else str(exc)
        raise OutputError(f"{flag}: cannot PUT to {shown}: {detail}") from None
    if resp.status_code >= 300:
        raise OutputError(f"{flag}: PUT to {shown} answered HTTP {resp.status_code}")


def write_outputs(options: BuildOptions, image: ImageBlobs, destinations: list[Reference],
                  attached: Attached | None = None) -> None:
    """The docker-archive tarball (the image alone: the format has no place for attestations), the OCI layout and
    OCI archive (the index with the attestations, when there are), and the digest, image-name and metadata files."""
    digest = attached.digest if attached is not None else image.manifest_digest
    try:
        if options.tar_path is not None:
            tags = [str(d) for d in destinations if d.tag] or []
            write_docker_archive(options.tar_path, image, tags)
        tag = next((d.tag for d in destinations if d.tag), None) or "latest"
        index = (attached.index, attached.blobs) if attached is not None else None
        if options.oci_layout_path is not None:
            write_oci_layout(options.oci_layout_path, image, tag, index=index)
        if options.oci_tar_path is not None:
            write_oci_archive(options.oci_tar_path, image, tag, index=index)
        named = [d for d in destinations if not options.no_push]
        texts = {
            "digest_file": digest,
            "image_name_with_digest_file": "".join(f"{d.name}@{digest}\n" for d in named),
            "image_name_tag_with_digest_file": "".join(f"{d.name}:{d.tag or 'latest'}@{digest}\n" for d in named),
        }
        for name, text in texts.items():
            path = getattr(options, name)
            if path is not None:
                path.write_text(text)
        for name, url in options.output_urls:
            put_text(url, texts[name], name)
        if options.metadata_file is not None:
            options.metadata_file.write_text(json.dumps(build_metadata(image, named, attached), indent=2) + "\n")
    except OSError as exc:
        raise OutputError(f"cannot write {exc.filename or 'an output file'}: {exc.strerror or exc}") from None

