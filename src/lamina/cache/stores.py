"""Where the layer cache keeps its entries (``--cache-repo``): a registry repository, or an OCI image layout on disk.

``--cache-repo REPOSITORY`` keeps each entry as a manifest tagged with its key in that repository; a hit's layer is
mounted from there when the image is pushed to the same registry. ``--cache-repo oci:/path`` (Kaniko's spelling)
keeps the same entries in an OCI image layout: index.json tags each entry's manifest with its key
(``org.opencontainers.image.ref.name``) and the blobs are shared in ``blobs/sha256``; a hit's layer is read in place,
never copied. Layouts suit a runner's persistent volume or a CI cache directory, and need no registry login.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import NamedTuple, Protocol

from lamina.cache.entries import LAYOUT_PREFIX
from lamina.errors import InvalidReference, OptionsError, OutputError
from lamina.oci.digest import compute_digest, digest_hex
from lamina.oci.layout import ImageBlobs, locked_layout, read_layout_manifest, write_oci_layout
from lamina.oci.model import OCI_CONFIG, OCI_MANIFEST, Descriptor
from lamina.oci.reference import Reference
from lamina.oci.registry.client import RegistryClient


class LayerFile(NamedTuple):
    """A step's layer blob on disk, as an entry stores it."""

    descriptor: Descriptor
    diff_id: str
    path: Path


class CacheStore(Protocol):
    """Entries by tag: read one, write one (its layer blob, config and manifest), and say where a hit's layer is."""

    @property
    def name(self) -> str: ...

    def fetch(self, tag: str) -> bytes | None:
        """The manifest tagged ``tag``, or None; raises LaminaError when the store cannot be read."""

    def store(self, tag: str, manifest: bytes, config: bytes, layer: LayerFile | None) -> None:
        """Keep an entry: ``layer``'s blob (when any) and ``config`` first, then ``manifest`` tagged ``tag``."""

    def fetch_blob(self, tag: str, descriptor: Descriptor) -> bytes:
        """A (small) blob of entry ``tag``, checked against ``descriptor``; raises LaminaError."""

    def layer_source(self, tag: str) -> Reference | None:
        """The repository a pushed image can mount the layer of entry ``tag`` from, if the store is a registry."""

    def layer_path(self, descriptor: Descriptor) -> Path | None:
        """The layer blob on disk, if the store keeps it there."""


class RegistryStore:
    """Entries as tags of a registry repository."""

    def __init__(self, client: RegistryClient, repository: Reference) -> None:
        self.client = client
        self.repository = repository

    @property
    def name(self) -> str:
        return self.repository.name

    def fetch(self, tag: str) -> bytes | None:
        fetched = self.client.fetch_manifest(self.repository.with_tag(tag))
        return fetched.body if fetched is not None else None

    def store(self, tag: str, manifest: bytes, config: bytes, layer: LayerFile | None) -> None:
        ref = self.repository.with_tag(tag)
        if layer is not None:
            self.client.push_blob(ref, layer.descriptor, layer.path)
        self.client.push_blob_bytes(ref, config, OCI_CONFIG)
        self.client.push_manifest(ref, manifest, OCI_MANIFEST)

    def fetch_blob(self, tag: str, descriptor: Descriptor) -> bytes:
        return self.client.fetch_blob_bytes(self.repository.with_tag(tag), descriptor)

    def layer_source(self, tag: str) -> Reference | None:
        return self.repository.with_tag(tag)

    def layer_path(self, descriptor: Descriptor) -> Path | None:
        return None


class LayoutStore:
    """Entries in an OCI image layout directory, tagged in its index.json; safe to share between builds (writes
    take a lock on the directory; blobs and index.json are replaced atomically)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()  # the flock is per open file description: threads of this build queue here

    @property
    def name(self) -> str:
        return f"{LAYOUT_PREFIX}{self.path}"

    def fetch(self, tag: str) -> bytes | None:
        return read_layout_manifest(self.path, tag)

    def store(self, tag: str, manifest: bytes, config: bytes, layer: LayerFile | None) -> None:
        image = ImageBlobs(manifest, compute_digest(manifest), config, compute_digest(config),
                           [(layer.descriptor, layer.path)] if layer is not None else [],
                           [layer.diff_id] if layer is not None else [])
        with self._lock, locked_layout(self.path):
            write_oci_layout(self.path, image, tag)

    def fetch_blob(self, tag: str, descriptor: Descriptor) -> bytes:
        path = self.path / "blobs" / "sha256" / digest_hex(descriptor.digest)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise OutputError(f"{self.name}: cannot read {descriptor.digest}: {exc.strerror or exc}") from None
        if compute_digest(data) != descriptor.digest:
            raise OutputError(f"{self.name}: {descriptor.digest} does not match its content")
        return data

    def layer_source(self, tag: str) -> Reference | None:
        return None

    def layer_path(self, descriptor: Descriptor) -> Path | None:
        path = self.path / "blobs" / "sha256" / digest_hex(descriptor.digest)
        return path if path.exists() else None


def open_store(spec: str, client: RegistryClient) -> CacheStore:
    """``oci:/path`` → a layout store; anything else names a registry repository (no tag, no digest)."""
    if spec.startswith(LAYOUT_PREFIX):
        location = spec[len(LAYOUT_PREFIX):]
        if not location:
            raise OptionsError(f"--cache-repo {spec}: give the layout's directory, as in oci:/cache/layers")
        return LayoutStore(Path(location).absolute())
    try:
        ref = Reference.parse(spec)
    except InvalidReference as exc:
        raise OptionsError(f"--cache-repo {spec}: {exc}") from None
    if ref.digest is not None:
        raise OptionsError(f"--cache-repo {spec}: give a repository, not a digest")
    return RegistryStore(client, Reference(ref.registry, ref.repository, None, None))
