"""Writing a built image to disk: an OCI image layout directory, or a ``docker save`` style tar archive.

Pure file I/O: the image's blobs are already on disk or in memory (``ImageBlobs``). Layers are never held in
memory: OCI layouts hardlink (or copy, in chunks) the compressed blobs; docker archives decompress each layer
twice, streamed: once to learn its size (and check its diff_id), once into the archive.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import zstandard
from isal import igzip

from lamina.errors import OutputError
from lamina.oci.digest import CHUNK, compute_digest, digest_hex, is_digest
from lamina.oci.model import OCI_INDEX, OCI_MANIFEST, Descriptor, canonical_json

LAYOUT_FILE = "oci-layout"
LAYOUT_VERSION = "1.0.0"
INDEX_FILE = "index.json"
REF_NAME = "org.opencontainers.image.ref.name"


@dataclass(frozen=True)
class ImageBlobs:
    manifest: bytes  # the image manifest JSON (OCI media type application/vnd.oci.image.manifest.v1+json)
    manifest_digest: str
    config: bytes  # the image config JSON
    config_digest: str
    layers: list[tuple[Descriptor, Path]]  # each compressed layer's descriptor and the file holding that blob
    diff_ids: list[str]  # sha256 of each uncompressed layer, in the same order


def _check(image: ImageBlobs) -> None:
    """The in-memory blobs match their digests and every layer has a diff_id (a programming error otherwise)."""
    if compute_digest(image.manifest) != image.manifest_digest:
        raise OutputError(f"the manifest does not match its digest {image.manifest_digest}")
    if compute_digest(image.config) != image.config_digest:
        raise OutputError(f"the image config does not match its digest {image.config_digest}")
    if len(image.diff_ids) != len(image.layers):
        raise OutputError(f"the image has {len(image.layers)} layers but {len(image.diff_ids)} diff_ids")
    for descriptor, _ in image.layers:
        if not is_digest(descriptor.digest):
            raise OutputError(f"layer digest {descriptor.digest!r} is not a sha256 digest")
    for diff_id in image.diff_ids:
        if not is_digest(diff_id):
            raise OutputError(f"layer diff_id {diff_id!r} is not a sha256 digest")


def _os_error(what: str, path: Path, e: OSError) -> OutputError:
    detail = e.strerror or str(e)
    filename = f" ({e.filename})" if e.filename and str(e.filename) != str(path) else ""
    return OutputError(f"cannot {what} {path}: {detail}{filename}")


@contextlib.contextmanager
def _atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A new file at `path`, written under a temporary name in the same directory and renamed when complete."""
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.chmod(temp_name, 0o644)
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise


# -- OCI image layout ---------------------------------------------------------------------------------------------


def _write_blob_bytes(blobs: Path, digest: str, data: bytes) -> None:
    target = blobs / digest_hex(digest)
    if target.exists() and target.stat().st_size == len(data):
        return
    with _atomic_file(target) as f:
        f.write(data)


def _copy_verified(source: Path, target: Path, descriptor: Descriptor) -> None:
    """Copy `source` to `target` in chunks, checking the digest and size of what was copied."""
    h = hashlib.sha256()
    size = 0
    with source.open("rb") as src, _atomic_file(target) as out:
        while chunk := src.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
            out.write(chunk)
        if "sha256:" + h.hexdigest() != descriptor.digest or size != descriptor.size:
            raise OutputError(f"layer file {source} does not match its descriptor "
                              f"({descriptor.digest}, {descriptor.size} bytes)")


def _write_blob_file(blobs: Path, descriptor: Descriptor, source: Path) -> None:
    target = blobs / digest_hex(descriptor.digest)
    try:
        if target.stat().st_size == descriptor.size:
            return  # blobs are named by their content: the same name is the same blob
    except FileNotFoundError:
        pass
    size = source.stat().st_size
    if size != descriptor.size:
        raise OutputError(f"layer file {source} has {size} bytes, its descriptor says {descriptor.size}")
    temp = blobs / f".{target.name}.{os.getpid()}.link.tmp"
    with contextlib.suppress(FileNotFoundError):
        temp.unlink()
    try:
        os.link(source, temp)
    except OSError:
        _copy_verified(source, target, descriptor)  # another filesystem, or links not permitted
        return
    os.replace(temp, target)


def _read_index(path: Path) -> dict[str, Any]:
    index_path = path / INDEX_FILE
    try:
        raw = json.loads(index_path.read_bytes())
    except FileNotFoundError:
        return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    except (ValueError, UnicodeDecodeError) as e:
        raise OutputError(f"{index_path} is not valid JSON: {e}") from e
    if not isinstance(raw, dict) or not isinstance(raw.get("manifests", []), list):
        raise OutputError(f"{index_path} is not an OCI image index")
    raw.setdefault("manifests", [])
    return cast(dict[str, Any], raw)


def _prepare_layout_dir(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise OutputError(f"cannot write an OCI layout to {path}: it exists and is not a directory")
    if path.is_dir() and not (path / LAYOUT_FILE).exists() and any(path.iterdir()):
        raise OutputError(f"cannot write an OCI layout to {path}: the directory is not empty and is not an OCI "
                          f"layout (no {LAYOUT_FILE} file)")
    layout_file = path / LAYOUT_FILE
    if layout_file.exists():
        try:
            version = json.loads(layout_file.read_bytes()).get("imageLayoutVersion")
        except (ValueError, UnicodeDecodeError, AttributeError):
            version = None
        if version != LAYOUT_VERSION:
            raise OutputError(f"{layout_file} does not declare imageLayoutVersion {LAYOUT_VERSION}")


def write_oci_layout(path: Path, image: ImageBlobs, ref_name: str | None, *,
                     index: tuple[bytes, Sequence[bytes]] | None = None) -> None:
    """Create or update the OCI image layout directory `path` with `image`, tagged `ref_name` (e.g. "latest") in
    index.json when given; an entry of the same ref name in an existing layout is replaced. Layer blobs are
    hardlinked (copied when that is not possible); blobs already present are kept. ``index``: an image index
    naming the image (and the other blobs given with it, such as its attestations), which is then the entry."""
    _check(image)
    _prepare_layout_dir(path)
    try:
        manifest_type = json.loads(image.manifest).get("mediaType") or OCI_MANIFEST
    except (ValueError, UnicodeDecodeError, AttributeError) as e:
        raise OutputError(f"the manifest {image.manifest_digest} is not a JSON object") from e
    try:
        blobs = path / "blobs" / "sha256"
        blobs.mkdir(parents=True, exist_ok=True)
        if not (path / LAYOUT_FILE).exists():
            with _atomic_file(path / LAYOUT_FILE) as f:
                f.write(canonical_json({"imageLayoutVersion": LAYOUT_VERSION}))
        for descriptor, source in image.layers:
            _write_blob_file(blobs, descriptor, source)
        _write_blob_bytes(blobs, image.config_digest, image.config)
        _write_blob_bytes(blobs, image.manifest_digest, image.manifest)
        annotations = {REF_NAME: ref_name} if ref_name else {}
        entry = Descriptor(manifest_type, image.manifest_digest, len(image.manifest), annotations).to_json()
        if index is not None:
            index_bytes, extra = index
            for data in extra:
                _write_blob_bytes(blobs, compute_digest(data), data)
            _write_blob_bytes(blobs, compute_digest(index_bytes), index_bytes)
            entry = Descriptor(OCI_INDEX, compute_digest(index_bytes), len(index_bytes), annotations).to_json()

        index_json = _read_index(path)
        kept: list[Any] = []
        for existing in index_json["manifests"]:
            existing_ref = (existing.get("annotations") or {}).get(REF_NAME) if isinstance(existing, dict) else None
            if ref_name and existing_ref == ref_name:
                continue  # the tag moves to the new image
            if existing == entry:
                continue  # the same untagged entry: listed once
            kept.append(existing)
        index_json["manifests"] = [*kept, entry]
        index_json.setdefault("schemaVersion", 2)
        index_json.setdefault("mediaType", OCI_INDEX)
        with _atomic_file(path / INDEX_FILE) as f:
            f.write(canonical_json(index_json))
    except OSError as e:
        raise _os_error("write the OCI layout", path, e) from e


def read_layout_manifest(path: Path, ref_name: str) -> bytes | None:
    """The manifest that index.json of the OCI layout ``path`` tags ``ref_name``, checked against its digest; None
    when the layout or the tag does not exist."""
    if not (path / INDEX_FILE).exists():
        return None
    for entry in reversed(_read_index(path)["manifests"]):
        if not isinstance(entry, dict) or (entry.get("annotations") or {}).get(REF_NAME) != ref_name:
            continue
        digest = entry.get("digest")
        if not isinstance(digest, str) or not is_digest(digest):
            raise OutputError(f"{path / INDEX_FILE}: the entry {ref_name} has no valid digest")
        blob = path / "blobs" / "sha256" / digest_hex(digest)
        try:
            body = blob.read_bytes()
        except OSError as e:
            raise _os_error("read the OCI layout", path, e) from e
        if compute_digest(body) != digest:
            raise OutputError(f"{blob} does not match its digest {digest}")
        return body
    return None


def layout_refs(path: Path) -> list[tuple[str, str]]:
    """The tagged entries of the OCI layout ``path``'s index.json: (ref name, manifest digest)."""
    refs = []
    for entry in _read_index(path)["manifests"] if (path / INDEX_FILE).exists() else []:
        name = (entry.get("annotations") or {}).get(REF_NAME) if isinstance(entry, dict) else None
        if isinstance(name, str) and isinstance(entry.get("digest"), str):
            refs.append((name, entry["digest"]))
    return refs


def _referenced(blobs: Path, digest: str, seen: set[str]) -> None:
    """Add ``digest`` and every blob its manifest or index names (when it is one) to ``seen``."""
    if digest in seen or not is_digest(digest):
        return
    seen.add(digest)
    try:
        document = json.loads((blobs / digest_hex(digest)).read_bytes())
    except (OSError, ValueError, UnicodeDecodeError):
        return  # a layer, a config, or missing
    if not isinstance(document, dict) or document.get("schemaVersion") != 2:
        return
    named = [document.get("config"), *(document.get("layers") or []), *(document.get("manifests") or [])]
    for descriptor in named:
        if isinstance(descriptor, dict) and isinstance(descriptor.get("digest"), str):
            _referenced(blobs, descriptor["digest"], seen)


def remove_layout_refs(path: Path, names: set[str]) -> int:
    """Drop the index.json entries tagged with ``names`` from the OCI layout ``path``, then every blob no remaining
    entry reaches; returns how many blobs were removed. The caller holds ``locked_layout``."""
    index = _read_index(path)
    index["manifests"] = [entry for entry in index["manifests"]
                          if not (isinstance(entry, dict) and (entry.get("annotations") or {}).get(REF_NAME) in names)]
    blobs = path / "blobs" / "sha256"
    try:
        with _atomic_file(path / INDEX_FILE) as f:
            f.write(canonical_json(index))
        reachable: set[str] = set()
        for entry in index["manifests"]:
            if isinstance(entry, dict) and isinstance(entry.get("digest"), str):
                _referenced(blobs, entry["digest"], reachable)
        removed = 0
        for blob in blobs.iterdir() if blobs.is_dir() else []:
            if not blob.name.startswith(".") and f"sha256:{blob.name}" not in reachable:
                blob.unlink()
                removed += 1
    except OSError as e:
        raise _os_error("prune the OCI layout", path, e) from e
    return removed


@contextlib.contextmanager
def locked_layout(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the layout directory ``path`` (created if missing), so that builds sharing it
    update index.json one at a time (flock(2) on the directory itself: no lock file inside the layout)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise _os_error("open the OCI layout", path, e) from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_oci_archive(path: Path, image: ImageBlobs, ref_name: str | None, *,
                      index: tuple[bytes, Sequence[bytes]] | None = None) -> None:
    """An OCI image layout as a tar archive at ``path`` (what BuildKit's ``type=oci`` output and skopeo's
    ``oci-archive:`` are): the layout is written next to it (hardlinks), then archived in a fixed order with
    mtime 0 and owner 0, and removed."""
    if path.is_dir():
        raise OutputError(f"cannot write an OCI archive to {path}: it is a directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        write_oci_layout(staging, image, ref_name, index=index)
        names = [LAYOUT_FILE, INDEX_FILE, "blobs", "blobs/sha256"]
        names += [f"blobs/sha256/{blob.name}" for blob in sorted((staging / "blobs" / "sha256").iterdir())]
        with _atomic_file(path) as out, tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT,
                                                      encoding="utf-8") as tar:
            for name in names:
                source = staging / name
                if source.is_dir():
                    tar.addfile(_tar_info(name, directory=True))
                else:
                    with source.open("rb") as data:
                        tar.addfile(_tar_info(name, source.stat().st_size), data)
    except OSError as e:
        raise _os_error("write the OCI archive", path, e) from e
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# -- docker archive -------------------------------------------------------------------------------------------------


def _open_uncompressed(descriptor: Descriptor, source: Path) -> contextlib.AbstractContextManager[IO[bytes]]:
    """The layer's tar, decompressed on the fly by its media type (gzip, zstd, or already a plain tar)."""
    media_type = descriptor.media_type
    if media_type.endswith(("+gzip", ".gzip")):
        return cast(IO[bytes], igzip.open(source, "rb"))  # type: ignore[no-untyped-call]
    if media_type.endswith("+zstd"):
        raw = source.open("rb")
        return contextlib.closing(cast(IO[bytes], zstandard.ZstdDecompressor().stream_reader(
            raw, read_across_frames=True, closefd=True)))
    return source.open("rb")


def _uncompressed_size(descriptor: Descriptor, source: Path, diff_id: str) -> int:
    """First pass over a layer: its uncompressed size, checking that it matches `diff_id`."""
    h = hashlib.sha256()
    size = 0
    with _open_uncompressed(descriptor, source) as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    if "sha256:" + h.hexdigest() != diff_id:
        raise OutputError(f"layer {source} does not decompress to its diff_id {diff_id}")
    return size


def _tar_info(name: str, size: int = 0, *, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _split_tag(repo_tag: str) -> tuple[str, str]:
    name, sep, tag = repo_tag.rpartition(":")
    if not sep or "/" in tag:
        return repo_tag, "latest"
    return name, tag


def write_docker_archive(path: Path, image: ImageBlobs, repo_tags: list[str]) -> None:
    """Write `image` as a ``docker save`` archive at `path` (what ``docker load`` and skopeo's docker-archive read):
    ``<config hex>.json``, ``<diff_id hex>/layer.tar`` (uncompressed), ``manifest.json`` and ``repositories``.
    Deterministic: fixed order, mtime 0, owner 0; layers are streamed, never held in memory."""
    _check(image)
    for repo_tag in repo_tags:
        if "@" in repo_tag:
            raise OutputError(f"docker archive tag {repo_tag!r}: a digest reference cannot name an archived image")
    if path.is_dir():
        raise OutputError(f"cannot write a docker archive to {path}: it is a directory")
    config_name = digest_hex(image.config_digest) + ".json"
    layer_names = [digest_hex(diff_id) + "/layer.tar" for diff_id in image.diff_ids]
    manifest = [{"Config": config_name, "RepoTags": list(repo_tags), "Layers": layer_names}]
    repositories: dict[str, dict[str, str]] = {}
    if image.diff_ids:
        top = digest_hex(image.diff_ids[-1])
        for repo_tag in repo_tags:
            repo, tag = _split_tag(repo_tag)
            repositories.setdefault(repo, {})[tag] = top
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _atomic_file(path) as out, tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT,
                                                      encoding="utf-8") as tar:
            tar.addfile(_tar_info(config_name, len(image.config)), io.BytesIO(image.config))
            written: set[str] = set()
            for (descriptor, source), diff_id in zip(image.layers, image.diff_ids, strict=True):
                directory = digest_hex(diff_id)
                if directory in written:
                    continue  # the same layer twice (e.g. empty layers): stored once, listed twice
                written.add(directory)
                size = _uncompressed_size(descriptor, source, diff_id)
                tar.addfile(_tar_info(directory, directory=True))
                with _open_uncompressed(descriptor, source) as layer:
                    tar.addfile(_tar_info(directory + "/layer.tar", size), layer)
            data = canonical_json(manifest)
            tar.addfile(_tar_info("manifest.json", len(data)), io.BytesIO(data))
            if repositories:
                data = canonical_json(repositories)
                tar.addfile(_tar_info("repositories", len(data)), io.BytesIO(data))
    except OSError as e:
        raise _os_error("write the docker archive", path, e) from e
    except (zstandard.ZstdError, EOFError, tarfile.TarError) as e:
        raise OutputError(f"cannot write the docker archive {path}: a layer cannot be decompressed: {e}") from e
