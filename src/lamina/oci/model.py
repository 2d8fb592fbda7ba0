"""The OCI image model: media types, descriptors, manifests, indexes, platforms and the image config.

Serialisation is deterministic (fixed key order, no insignificant whitespace) so that the same image always has
the same digest.
"""

from __future__ import annotations

import json
import platform as _platform
from dataclasses import dataclass, field
from typing import Any

from lamina.oci.digest import compute_digest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
ACCEPT_MANIFESTS = f"{OCI_INDEX}, {DOCKER_MANIFEST_LIST}, {OCI_MANIFEST}, {DOCKER_MANIFEST}"


def canonical_json(value: Any) -> bytes:
    """Compact JSON with the keys in the order given (deterministic for our own dicts)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True)
class Platform:
    os: str = "linux"
    architecture: str = "amd64"
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.strip().lower().split("/")
        if len(parts) < 2 or len(parts) > 3 or not all(parts):
            raise ValueError(f"platform {text!r} is not os/arch[/variant]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else "")

    @classmethod
    def host(cls) -> Platform:
        machine = _platform.machine().lower()
        arch, variant = {
            "x86_64": ("amd64", ""), "amd64": ("amd64", ""), "aarch64": ("arm64", ""), "arm64": ("arm64", ""),
            "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"), "i686": ("386", ""), "i386": ("386", ""),
            "ppc64le": ("ppc64le", ""), "s390x": ("s390x", ""), "riscv64": ("riscv64", ""),
        }.get(machine, (machine, ""))
        return cls("linux", arch, variant)

    def matches(self, other: dict[str, Any]) -> bool:
        """Does an index entry's ``platform`` object describe this platform? (arm64 treats v8 as no variant)"""
        if other.get("os") != self.os or other.get("architecture") != self.architecture:
            return False
        theirs = other.get("variant", "") or ""
        if self.architecture == "arm64" and {theirs, self.variant} <= {"", "v8"}:
            return True
        return not self.variant or theirs == self.variant

    def __str__(self) -> str:
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)
    platform: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.platform:
            out["platform"] = self.platform
        if self.annotations:
            out["annotations"] = dict(sorted(self.annotations.items()))
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Descriptor:
        return cls(raw["mediaType"], raw["digest"], int(raw["size"]), dict(raw.get("annotations") or {}),
                   raw.get("platform"))


@dataclass(frozen=True)
class Manifest:
    config: Descriptor
    layers: tuple[Descriptor, ...]
    media_type: str = OCI_MANIFEST
    annotations: dict[str, str] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        out: dict[str, Any] = {"schemaVersion": 2, "mediaType": self.media_type, "config": self.config.to_json(),
                               "layers": [layer.to_json() for layer in self.layers]}
        if self.annotations:
            out["annotations"] = dict(sorted(self.annotations.items()))
        return canonical_json(out)

    @property
    def digest(self) -> str:
        return compute_digest(self.to_bytes())

    @classmethod
    def from_bytes(cls, data: bytes, media_type: str = "") -> Manifest:
        raw = json.loads(data)
        return cls(Descriptor.from_json(raw["config"]), tuple(Descriptor.from_json(x) for x in raw.get("layers") or []),
                   raw.get("mediaType") or media_type or OCI_MANIFEST, dict(raw.get("annotations") or {}))


def layer_media_type_for_oci(media_type: str) -> str:
    """The OCI media type of a layer pulled under a Docker media type (the blob itself is the same)."""
    return {DOCKER_LAYER_GZIP: OCI_LAYER_GZIP, DOCKER_FOREIGN_LAYER: OCI_LAYER_GZIP}.get(media_type, media_type)
