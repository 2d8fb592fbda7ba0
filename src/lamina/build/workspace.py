"""The build's work directory: where blobs and stage root filesystems live while lamina builds.

Layout::

    <work>/blobs/sha256/<hex>     pulled and built blobs (layers, configs), named by digest
    <work>/stages/<n>/rootfs      the root filesystem of stage n (never the host's /)
    <work>/stages/<n>/base.erofs  when the rootfs is an overlay (rootfs/overlay.py): the image of its layers, and
    <work>/stages/<n>/{base,l<i>,u<i>,t<i>,view,empty,work}
                                  where it is mounted, stacked layer images, uppers on disk, tmpfs uppers, the
                                  read-only view of the lowers, and overlayfs's work directory
    <work>/sources/<n>/rootfs     images named by COPY --from that are not stages
    <work>/scratch-*              a step's scratch directory (a skeleton, see rootfs/skeleton.py), unless it is in
                                  memory: /dev/shm/lamina-*
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from lamina.oci.digest import digest_hex
from lamina.rootfs.mounts import LayerMounts, free_space

MEMORY_DIR = Path("/dev/shm")  # a tmpfs in containers (64 MB by default in Docker and Kubernetes) and on hosts
MIN_MEMORY_SCRATCH = 32 << 20  # a scratch directory goes to memory only with at least this much room there


@dataclass(frozen=True)
class Workspace:
    root: Path
    mounts: LayerMounts = field(default_factory=LayerMounts)  # overlays over stage rootfs dirs, unmounted first

    @classmethod
    def create(cls, given: Path | None) -> Workspace:
        """A fresh directory, under ``given`` (--work-dir) or the system's temporary directory."""
        if given is not None:
            given.mkdir(parents=True, exist_ok=True)
        return cls(Path(tempfile.mkdtemp(prefix="lamina-", dir=given)))

    @property
    def blobs(self) -> Path:
        path = self.root / "blobs" / "sha256"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def blob_path(self, digest: str) -> Path:
        return self.blobs / digest_hex(digest)

    def rootfs(self, kind: str, index: int) -> Path:
        path = self.root / kind / str(index) / "rootfs"
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o755)
        return path

    def scratch(self, kind: str, *, memory: bool) -> Path:
        """A new directory for a step's scratch files: in memory (``MEMORY_DIR``, where creating a file costs
        microseconds, not the tenths of a millisecond of a container's overlayfs on a busy disk) when ``memory`` and
        there is room there, else in the work directory. The caller removes it."""
        if memory and os.access(MEMORY_DIR, os.W_OK) and free_space(MEMORY_DIR) >= MIN_MEMORY_SCRATCH:
            return Path(tempfile.mkdtemp(prefix=f"lamina-{kind}-", dir=MEMORY_DIR))
        return Path(tempfile.mkdtemp(prefix=f"scratch-{kind}-", dir=self.root))

    def remove_trees(self) -> None:
        """Remove the root filesystems (the bulk of the files), keeping the blobs an output still needs."""
        self.mounts.unmount_all()
        for kind in ("stages", "sources", "plan"):
            shutil.rmtree(self.root / kind, ignore_errors=True)

    def remove(self) -> None:
        self.mounts.unmount_all()
        shutil.rmtree(self.root, ignore_errors=True)

