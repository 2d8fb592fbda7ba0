"""A corpus of hostile input for lamina: layer tars and build contexts that try to reach outside the rootfs.

Every case aims at a **canary tree**: a directory outside every rootfs, work directory and context
(``/tmp/lamina-canary-<random>``), whose state (types, modes, owners, sizes, mtimes, contents, link targets) is
recorded before a build and compared after it. A build may fail with a clear error or succeed with the hostile
entry neutralised; it must never change the canary.

The tars are written with :mod:`tarfile` (entry names, PAX headers and GNU long names crafted by hand where tarfile
would not produce them) and compressed with gzip or zstd; :func:`push_image` pushes a layer on top of the busybox
base layers as a tiny image (manifest and config built here) with lamina's ``RegistryClient``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import secrets
import shutil
import stat
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self

import zstandard

from lamina.oci.model import Descriptor
from lamina.oci.reference import Reference
from lamina.oci.registry.client import RegistryClient, RegistryConfig

CANARY_PREFIX = "lamina-canary-"
CANARY_SECRET = "CANARY-OUTSIDE-CONTENT-7f3a9c"  # the content of every canary file: must never be in an image
DECOY = "decoy-inside-the-tree"

TAR = "application/vnd.oci.image.layer.v1.tar"
TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
TAR_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"

Expect = Literal["error", "ok", "either"]

# Host paths some tars aim at by name; they must look the same after every build (absent ones stay absent).
WATCHED_HOST_PATHS = ("/etc/passwd", "/etc/x", "/abs", "/x", "/outside", "/tmp/x", "/tmp/pax-escape",
                      "/tmp/gnu-escape")


# ---------------------------------------------------------------------------------------------------------------
# the canary


@dataclass(frozen=True)
class Change:
    path: str
    what: str  # "created", "removed", "changed"
    detail: str
    bytes_written: int  # size of a created or changed regular file, else 0


@dataclass
class Canary:
    """A tree outside every rootfs that hostile input aims at; :meth:`state` records everything about it."""

    root: Path
    watched: tuple[str, ...] = WATCHED_HOST_PATHS

    @classmethod
    def create(cls, parent: Path | None = None) -> Canary:
        base = parent if parent is not None else Path(tempfile.gettempdir())
        root = base / f"{CANARY_PREFIX}{secrets.token_hex(6)}"
        root.mkdir(mode=0o755)
        canary = cls(root)
        canary.populate()
        return canary

    @property
    def rel(self) -> str:
        """The canary's path without the leading ``/`` (to aim ``..`` chains at it)."""
        return str(self.root).lstrip("/")

    def reset(self) -> None:
        """Back to the pristine tree (after a build that changed it, so the next one starts clean)."""
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(mode=0o755)
        os.chmod(self.root, 0o755)
        self.populate()

    def populate(self) -> None:
        r = self.root
        for directory, mode in (("etc", 0o755), ("b", 0o700), ("d", 0o755), ("sub", 0o750), ("sub/deeper", 0o755),
                                ("y", 0o700)):
            (r / directory).mkdir()
            os.chmod(r / directory, mode)
        for name in ("secret.txt", "victim", "etc/passwd", "sub/deeper/file", "d/keep", "b/keep"):
            (r / name).write_text(f"{CANARY_SECRET} {name}\n")
            os.chmod(r / name, 0o640)
        os.symlink("secret.txt", r / "link-inside")
        # fixed, old times: any utime through a link shows
        for path in sorted(r.rglob("*"), key=lambda p: -len(p.parts)):
            os.utime(path, ns=(1_000_000_000, 1_000_000_000), follow_symlinks=False)
        os.utime(r, ns=(1_000_000_000, 1_000_000_000))

    def state(self) -> dict[str, tuple[Any, ...]]:
        """Every entry of the canary tree (the root included) and of the watched host paths."""
        out: dict[str, tuple[Any, ...]] = {}
        out["."] = _entry_state(self.root)
        for dirpath, dirnames, filenames in os.walk(self.root):
            for name in dirnames + filenames:
                path = Path(dirpath, name)
                out[os.path.relpath(path, self.root)] = _entry_state(path)
        for host in self.watched:
            out[host] = _entry_state(Path(host)) if os.path.lexists(host) else ("absent",)
        return out

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class TransientWatcher:
    """Polls the canary tree in a thread while a build runs: names that appear and vanish again (a file created
    through a link and removed afterwards) never show in a before/after comparison, but are writes outside too."""

    def __init__(self, canary: Canary, interval: float = 0.002) -> None:
        self.canary = canary
        self.interval = interval
        self.seen: set[str] = set()
        self._baseline: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="canary-watcher", daemon=True)

    def _names(self) -> set[str]:
        names: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(self.canary.root):
            for name in dirnames + filenames:
                names.add(os.path.relpath(os.path.join(dirpath, name), self.canary.root))
        return names

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.seen |= self._names() - self._baseline
            time.sleep(self.interval)

    def __enter__(self) -> Self:
        self._baseline = self._names()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def transient(self, after: Mapping[str, tuple[Any, ...]]) -> list[Change]:
        """Names seen during the build that are gone after it."""
        return [Change(name, "transient", "appeared during the build, removed afterwards", 0)
                for name in sorted(self.seen) if name not in after]


def _entry_state(path: Path) -> tuple[Any, ...]:
    st = os.lstat(path)
    if stat.S_ISREG(st.st_mode):
        extra: str = hashlib.sha256(path.read_bytes()).hexdigest()
    elif stat.S_ISLNK(st.st_mode):
        extra = os.readlink(path)
    else:
        extra = ""
    # no ctime (reading never changes it, but nor does anything we care about) and no atime
    return (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_size,
            st.st_mtime_ns if not stat.S_ISLNK(st.st_mode) else 0, st.st_nlink, extra)


def diff_states(before: Mapping[str, tuple[Any, ...]], after: Mapping[str, tuple[Any, ...]]) -> list[Change]:
    changes: list[Change] = []
    for path in sorted(set(before) | set(after)):
        old, new = before.get(path), after.get(path)
        if old == new:
            continue
        size = int(new[4]) if new is not None and len(new) > 4 and new[0] == stat.S_IFREG else 0
        if old is None or old == ("absent",):
            changes.append(Change(path, "created", repr(new), size))
        elif new is None or new == ("absent",):
            changes.append(Change(path, "removed", repr(old), 0))
        else:
            fields = ("type", "mode", "uid", "gid", "size", "mtime", "nlink", "content")
            what = ", ".join(f"{f} {o!r}->{n!r}" for f, o, n in zip(fields, old, new, strict=True) if o != n)
            content_changed = old[4] != new[4] or old[7] != new[7]
            changes.append(Change(path, "changed", what, size if content_changed else 0))
    return changes


# ---------------------------------------------------------------------------------------------------------------
# tar entries


def _info(name: str, kind: bytes, *, mode: int = 0o644, size: int = 0, linkname: str = "",
          mtime: int = 1_700_000_000) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.linkname = linkname
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


Entry = tuple[tarfile.TarInfo, bytes | None]


def file(name: str, data: bytes | str = b"hostile\n", mode: int = 0o644) -> Entry:
    raw = data.encode() if isinstance(data, str) else data
    return _info(name, tarfile.REGTYPE, mode=mode, size=len(raw)), raw


def directory(name: str, mode: int = 0o755, mtime: int = 1_700_000_000) -> Entry:
    return _info(name, tarfile.DIRTYPE, mode=mode, mtime=mtime), None


def symlink(name: str, target: str) -> Entry:
    return _info(name, tarfile.SYMTYPE, mode=0o777, linkname=target), None


def hardlink(name: str, target: str) -> Entry:
    return _info(name, tarfile.LNKTYPE, linkname=target), None


def device(name: str, kind: Literal["chr", "blk", "fifo"], major: int = 0, minor: int = 0) -> Entry:
    code = {"chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE, "fifo": tarfile.FIFOTYPE}[kind]
    info = _info(name, code, mode=0o600)
    info.devmajor, info.devminor = major, minor
    return info, None


def pax_override(stored_name: str, real_name: str, data: bytes = b"pax\n") -> Entry:
    """A file whose ustar name is ``stored_name`` but whose PAX ``path`` record says ``real_name``."""
    info, raw = file(stored_name, data)
    info.pax_headers = {"path": real_name}
    return info, raw


def tar_bytes(entries: Iterable[Entry], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="utf-8", errors="surrogateescape") as tf:
        for info, data in entries:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def compress(raw: bytes, how: Literal["gzip", "zstd", "none"]) -> tuple[bytes, str]:
    if how == "gzip":
        return gzip.compress(raw, compresslevel=1, mtime=0), TAR_GZIP
    if how == "zstd":
        return zstandard.ZstdCompressor(level=1).compress(raw), TAR_ZSTD
    return raw, TAR


# ---------------------------------------------------------------------------------------------------------------
# the layer corpus


def pool_race_entries(target: str) -> list[Entry]:
    """Small files queued for unpack's writer threads in ``a/d`` (made implicitly: no directory entry, so no
    deferred directory metadata), behind 200 larger files that keep the threads busy; then ``a`` becomes a symlink
    to ``target`` (which has a ``d``). A queued write that runs after the swap lands in ``target/d``."""
    return [directory("a"), directory("z"), *[file(f"z/f{i:04d}", b"z" * 100_000) for i in range(200)],
            *[file(f"a/d/v{i:02d}", b"raced\n") for i in range(20)], symlink("a", target)]


@dataclass(frozen=True)
class LayerCase:
    name: str  # also the tag of its image
    description: str
    blob: bytes  # as pushed
    media_type: str
    diff_id: str  # sha256 of the uncompressed tar (for a broken blob: of what it should have been)
    expect: Expect
    run: str = "true"  # the RUN after FROM: checks the neutralised result inside the image where useful
    error_mentions: tuple[str, ...] = ()  # what a failure's error line must name (the entry)
    tar_entries: int = 0


def _case(name: str, description: str, entries: Sequence[Entry], *, expect: Expect,
          how: Literal["gzip", "zstd", "none"] = "gzip", fmt: int = tarfile.PAX_FORMAT, run: str = "true",
          error_mentions: tuple[str, ...] = (), mangle: Callable[[bytes], bytes] | None = None) -> LayerCase:
    raw = tar_bytes(entries, fmt)
    blob, media_type = compress(raw, how)
    if mangle is not None:
        blob = mangle(blob)
    return LayerCase(name, description, blob, media_type, "sha256:" + hashlib.sha256(raw).hexdigest(), expect, run,
                     error_mentions, len(entries))


def layer_corpus(canary: Canary) -> list[LayerCase]:
    """The hostile layers, each aimed at ``canary`` (and at a few host paths by name)."""
    c = str(canary.root)
    up = "../" * 24  # far more than any rootfs is deep: from anywhere to /
    cases = [
        _case("dotdot", "names climbing out with ..", [
            file("ok-before"), file("../../etc/x"), file(f"{up}{canary.rel}/dotdot")],
            expect="error", error_mentions=("../../etc/x",)),
        _case("dotdot-deep", "a .. chain aimed exactly at the canary", [
            file(f"{up}{canary.rel}/dotdot-deep")], expect="error", error_mentions=("dotdot-deep",)),
        _case("absolute", "absolute names: taken relative to the rootfs", [
            file("/abs/path"), file(f"{c}/abs-file")], expect="ok",
            run=f"test -f /abs/path && test -f {c}/abs-file"),
        _case("inner-dotdot", "a/../../x: .. in the middle of a name", [
            directory("a"), file("a/../../x"), file(f"a/b/../../../{up}{canary.rel}/inner")],
            expect="error", error_mentions=("a/../../x",)),
        _case("symlink-then-file", "a symlink to the canary, then a file written through it", [
            symlink("evil", c), file("evil/file"), file("evil/secret.txt", "overwrite\n")], expect="ok",
            run=f"test -L /evil && test -f {c}/file && test \"$(cat {c}/secret.txt)\" = overwrite"),
        _case("symlink-chain", "l1 -> l2 -> l3 -> the canary, then l1/file", [
            symlink("l1", "l2"), symlink("l2", "l3"), symlink("l3", c), file("l1/chain-file"),
            directory("l1/newdir"), file("l1/newdir/inner")], expect="ok",
            run=f"test -f {c}/chain-file && test -f {c}/newdir/inner"),
        _case("symlink-up", "a symlink to ../../../.. then a file under it", [
            directory("x"), directory("x/y"), symlink("x/y/up", "../../../../../../../../.."),
            file(f"x/y/up/{canary.rel}/up-file"), file("x/y/up/tmp/x")], expect="ok",
            run=f"test -f {c}/up-file && test -f /tmp/x"),
        _case("symlink-deep-missing", "a symlink, then a file below missing directories under it", [
            directory("a"), symlink("a/b", f"../../../../../../../{canary.rel}/sub"),
            file("a/b/deeper/file", "overwrite\n"), file("a/b/new/dirs/here")], expect="ok",
            run=f"test \"$(cat {c}/sub/deeper/file)\" = overwrite && test -f {c}/sub/new/dirs/here"),
        _case("proc-self-root", "symlinks to /proc/self/root and /proc/self/cwd, then files through them", [
            symlink("p", "/proc/self/root"), file(f"p/{canary.rel}/proc-file"),
            symlink("q", "/proc/self/cwd"), file("q/cwd-file")], expect="either"),
        _case("hardlink-etc-passwd", "a hardlink to /etc/passwd: the image's, never the host's", [
            hardlink("pw", "/etc/passwd"), hardlink("pw2", "etc/passwd")], expect="ok",
            run="test /pw -ef /etc/passwd && test /pw2 -ef /etc/passwd"),
        _case("hardlink-dotdot", "a hardlink to ../outside", [
            file("before"), hardlink("hl", "../outside"), hardlink("hl2", f"{up}{canary.rel}/victim")],
            expect="error", error_mentions=("hl",)),
        _case("hardlink-absolute-canary", "a hardlink to the canary's absolute path (inside: does not exist)", [
            hardlink("hl", f"{c}/victim")], expect="error", error_mentions=("hl",)),
        _case("hardlink-through-symlink", "a symlink to the canary, then a hardlink to a file under it", [
            symlink("lnk", c), hardlink("hl", "lnk/victim")], expect="error", error_mentions=("hl",)),
        _case("hardlink-to-symlink", "a hardlink to a symlink pointing out, then a file over the hardlink", [
            symlink("s", f"{c}/victim"), hardlink("h", "s"), file("h", "replaced\n"), file("s", "replaced\n")],
            expect="ok", run="test ! -L /h && test ! -L /s && test \"$(cat /s)\" = replaced"),
        _case("hardlink-to-dir", "a hardlink to a directory", [hardlink("hd", "etc")], expect="error",
              error_mentions=("hd",)),
        _case("whiteout-climb", "whiteouts of '..' and '.'", [
            directory("w"), file("w/.wh.."), file("w/.wh..")], expect="error", error_mentions=(".wh..",)),
        _case("whiteout-dotdot-name", "a whiteout whose name climbs out with ..", [
            file(f"{up}{canary.rel}/.wh.secret.txt")], expect="error", error_mentions=(".wh.secret.txt",)),
        _case("whiteout-through-symlink", "a symlink to the canary, then whiteouts under it", [
            symlink("evil", c), file("evil/.wh.secret.txt"), file("evil/.wh.etc"), file("evil/.wh.link-inside")],
            expect="ok"),
        _case("opaque-through-symlink", "an opaque marker in a symlinked directory", [
            symlink("evil", c), file("evil/.wh..wh..opq"), symlink("sub2", f"{c}/sub"),
            file("sub2/.wh..wh..opq")], expect="ok"),
        _case("dir-replaced-by-symlink", "a directory with files, replaced by a symlink out, then a file under it", [
            directory("d"), file("d/f"), directory("d/inner"), symlink("d", c), file("d/after"),
            directory("d/sub"), file("d/sub/deeper/file", "overwrite\n")], expect="either",
            run=f"test -f {c}/after && test \"$(cat {c}/sub/deeper/file)\" = overwrite"),
        _case("dir-metadata-through-symlink", "directories (mode 0777, mtime 0), then their parent replaced by a "
              "symlink to the canary: the deferred directory modes and times must not follow it", [
                  directory("m"), directory("m/b", mode=0o777, mtime=0), directory("m/y", mode=0o777, mtime=0),
                  directory("m/etc", mode=0o777, mtime=0), symlink("m", c)], expect="ok"),
        _case("dir-metadata-through-relative-symlink", "as above, via a relative symlink climbing to /", [
            directory("n"), directory("n/sub", mode=0o777, mtime=0), directory("n/sub/deeper", mode=0o777, mtime=0),
            symlink("n", f"../../../../../../../../../{canary.rel}")], expect="ok"),
        _case("pool-race", "files queued for the writer threads, then their parent replaced by a symlink out", [
            *pool_race_entries(c)], expect="either"),
        _case("etc-symlink-out", "/etc replaced by a symlink to the canary's etc (RUN mountpoints for "
              "/etc/resolv.conf and /etc/hosts must not be made through it)", [
                  symlink("etc", f"{c}/etc")], expect="either"),
        _case("devices", "character and block devices and a fifo (created as root, skipped with a warning else)", [
            device("hostile-null", "chr", 1, 3), device("hostile-disk", "blk", 8, 0), device("hostile-fifo", "fifo"),
            symlink("evil", c), device("evil/dev-through-link", "chr", 1, 3)], expect="ok"),
        _case("setuid", "setuid, setgid and sticky bits", [
            file("suid", b"#!/bin/sh\n", mode=0o4755), file("sgid", b"#!/bin/sh\n", mode=0o2755),
            directory("sticky", mode=0o1777)], expect="ok", run="test -u /suid && test -g /sgid && test -k /sticky"),
        _case("long-names", "a 300-byte component and a 5000-byte path", [
            file("long/" + "n" * 300), file("/".join(["p" * 200] * 25) + "/f")], expect="either",
            error_mentions=("nnnn",)),
        _case("odd-names", "names with a newline, a tab, a backslash, invalid UTF-8", [
            file("new\nline"), file("tab\tname"), file("back\\slash"), file("bad-\udcff-utf8")],
            expect="ok", run="test -f \"$(printf 'new\\nline')\" && test -f /back\\\\slash"),
        _case("duplicates", "the same file twice, a file then a directory of that name, and the reverse", [
            file("dup", "one\n"), file("dup", "two\n"), file("fd"), directory("fd"), file("fd/child"),
            symlink("sf", c), file("sf", "file\n"), directory("sd"), symlink("sd", c)],
            expect="ok", run="test \"$(cat /dup)\" = two && test -f /fd/child && test ! -L /sf && test -L /sd"),
        _case("dir-replaced-by-file", "a directory whose files are still queued for the writer threads, then a "
              "regular file of the same name (legal: the later entry wins)", [
                  directory("z"), *[file(f"z/f{i:04d}", b"z" * 100_000) for i in range(100)],
                  directory("df"), *[file(f"df/child{i:02d}") for i in range(20)], file("df", "file now\n")],
            expect="ok", run="test \"$(cat /df)\" = 'file now'"),
        _case("pax-path", "a PAX path record overriding an innocent name with ..", [
            pax_override("innocent", f"{up}tmp/pax-escape"), pax_override("innocent2", f"{up}{canary.rel}/pax")],
            expect="error", error_mentions=("pax-escape",)),
        _case("gnu-longname", "a GNU long name with ..", [
            file("g" * 120 + "/" + "../" * 40 + "tmp/gnu-escape"), file("h" * 120 + f"/../../{up}{canary.rel}/gnu")],
            expect="error", fmt=tarfile.GNU_FORMAT, error_mentions=("gnu-escape",)),
        _case("symlink-loop", "symlinks pointing at each other, then a file through them", [
            symlink("loop1", "loop2"), symlink("loop2", "loop1"), file("loop1/x")], expect="error",
            error_mentions=("loop1",)),
        _case("root-entry", "the root entry as a symlink to the canary, and as a directory", [
            symlink(".", c), symlink("./", c), directory("./", mode=0o755), file("./after-root")], expect="ok",
            run="test -f /after-root"),
        _case("zstd-symlink-then-file", "zstd: a symlink to the canary, then a file through it", [
            symlink("evil", c), file("evil/zstd-file")], expect="ok", how="zstd", run=f"test -f {c}/zstd-file"),
        _case("plain-tar-dotdot", "uncompressed: .. climbing out", [file(f"{up}{canary.rel}/plain")],
              expect="error", how="none", error_mentions=("plain",)),
        _case("zero-byte", "a zero-byte layer blob", [], expect="either",
              mangle=lambda blob: b""),
        _case("truncated-gzip", "a gzip layer cut in the middle", [
            file(f"t{i}", os.urandom(4096)) for i in range(8)], expect="error",
            mangle=lambda blob: blob[: len(blob) // 2]),
    ]
    names = [case.name for case in cases]
    assert len(names) == len(set(names)), names
    return cases


# ---------------------------------------------------------------------------------------------------------------
# images


@dataclass
class BaseLayers:
    """The layers (blob bytes, descriptor, diff_id) of a base image read from an OCI layout, plus its config."""

    layers: list[tuple[bytes, Descriptor, str]]
    config: dict[str, Any]

    @classmethod
    def from_layout(cls, layout: Path, tag: str) -> BaseLayers:
        index = json.loads((layout / "index.json").read_text())
        [entry] = [m for m in index["manifests"]
                   if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]
        manifest = json.loads(_blob(layout, entry["digest"]))
        config = json.loads(_blob(layout, manifest["config"]["digest"]))
        layers = [(_blob(layout, d["digest"]), Descriptor(d["mediaType"], d["digest"], d["size"]), diff_id)
                  for d, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"], strict=True)]
        return cls(layers, config)


def _blob(layout: Path, digest: str) -> bytes:
    algorithm, hex_ = digest.split(":", 1)
    return (layout / "blobs" / algorithm / hex_).read_bytes()


@dataclass
class ImagePusher:
    """Pushes small images (base layers + one hostile layer) with lamina's RegistryClient."""

    registry_host: str
    base: BaseLayers
    pushed_base: set[str] = field(default_factory=set)

    def push(self, repository: str, tag: str, layer: bytes, media_type: str, diff_id: str) -> str:
        ref = Reference.parse(f"{self.registry_host}/{repository}:{tag}")
        config = json.loads(json.dumps(self.base.config))
        config["rootfs"]["diff_ids"] = [*config["rootfs"]["diff_ids"], diff_id]
        config["history"] = [*config.get("history", []), {"created_by": f"hostile layer {tag}"}]
        with RegistryClient(RegistryConfig(insecure_registries=(self.registry_host,))) as client:
            descriptors = []
            for data, descriptor, _ in self.base.layers:
                if repository not in self.pushed_base:
                    client.push_blob_bytes(ref, data, descriptor.media_type)
                descriptors.append(descriptor)
            self.pushed_base.add(repository)
            hostile = client.push_blob_bytes(ref, layer, media_type)
            config_bytes = json.dumps(config).encode()
            config_desc = client.push_blob_bytes(ref, config_bytes, OCI_CONFIG)
            manifest = {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": _descriptor_json(config_desc),
                "layers": [_descriptor_json(d) for d in [*descriptors, hostile]],
            }
            return client.push_manifest(ref, json.dumps(manifest).encode(), OCI_MANIFEST)


def _descriptor_json(d: Descriptor) -> dict[str, Any]:
    return {"mediaType": d.media_type, "digest": d.digest, "size": d.size}


# ---------------------------------------------------------------------------------------------------------------
# contexts


def hostile_context(root: Path, canary: Canary, dockerfile: str) -> Path:
    """A build context whose links point outside it: at the canary's file and directory (absolute), and out of
    the context with a relative ``..`` chain; plus a fifo. Decoys sit where the links land when clamped inside
    the context."""
    root.mkdir(parents=True)
    (root / "Dockerfile").write_text(dockerfile)
    (root / "normal.txt").write_text("normal\n")
    os.symlink(f"{canary.root}/secret.txt", root / "link-file")
    os.symlink(str(canary.root), root / "link-dir")
    os.symlink("../" * 24 + f"{canary.rel}/secret.txt", root / "rel-link")
    os.symlink("../" * 24 + canary.rel, root / "rel-dir")
    decoy = root / canary.rel
    decoy.mkdir(parents=True)
    (decoy / "secret.txt").write_text(DECOY + "\n")
    os.mkfifo(root / "fifo")
    return root


def dir_then_link_context(root: Path, canary: Canary, dockerfile: str) -> Path:
    """``one/x/b/`` (a directory) and ``two/x`` (a symlink to the canary): ``COPY one/ two/ /dest/`` writes the
    directory, then replaces it with the link; the directory's deferred mtime must not follow the link."""
    root.mkdir(parents=True)
    (root / "Dockerfile").write_text(dockerfile)
    (root / "one/x/b").mkdir(parents=True)
    (root / "one/x/y").mkdir(parents=True)
    os.utime(root / "one/x/b", ns=(0, 0))
    os.utime(root / "one/x/y", ns=(0, 0))
    (root / "two").mkdir()
    os.symlink(str(canary.root), root / "two/x")
    return root


def layer_files(blob: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
    """The entries of a layer blob (gzip, zstd or plain) with their content."""
    if blob[:4] == b"\x28\xb5\x2f\xfd":
        raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob)).read()
    elif blob[:2] == b"\x1f\x8b":
        raw = gzip.decompress(blob)
    else:
        raw = blob
    out = []
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:", encoding="utf-8", errors="surrogateescape") as tf:
        for member in tf:
            data = b""
            if member.isreg():
                extracted = tf.extractfile(member)
                data = extracted.read() if extracted is not None else b""
            out.append((member, data))
    return out


def decompressed(blob: bytes) -> bytes:
    if blob[:4] == b"\x28\xb5\x2f\xfd":
        return bytes(zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob)).read())
    if blob[:2] == b"\x1f\x8b":
        return gzip.decompress(blob)
    return blob
