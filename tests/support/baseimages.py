"""Real base images for the tests, built with tools independent of lamina and cached across runs.

* ``busybox:latest``: a minimal tree around Debian's busybox-static ``/bin/busybox`` (one symlink per applet,
  a small /etc/passwd and /etc/group).
* ``debian:bookworm``: a ``debootstrap --variant=minbase`` tree, tarred once into the cache (about 2 minutes).

Both are turned into OCI image layouts with **umoci** and pushed to the test registries with **skopeo**, as a
Docker Hub mirror would serve them (``library/busybox``, ``library/debian``).

The cache lives in ``$LAMINA_TEST_CACHE`` or ``~/.cache/lamina-tests``; every step that fills it holds an fcntl
lock and writes atomically (temporary name, then rename), so parallel runs neither race nor see half a result.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# Bump when a recipe below changes: the cached OCI layouts are keyed on it (with the inputs' identities).
RECIPE_VERSION = "1"

DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_TAR_NAME = f"{DEBIAN_SUITE}-minbase.tar"
BUSYBOX_BIN = Path("/bin/busybox")

# Docker's default PATH for Linux containers.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_ENV = [f"PATH={DEFAULT_PATH}"]
BUSYBOX_CMD = ["sh"]
DEBIAN_CMD = ["bash"]

# Fixed timestamps so repeated builds give (nearly) the same bytes.
FIXED_TIME = "2024-01-01T00:00:00Z"
FIXED_EPOCH = 1704067200

ARCHITECTURE = "amd64"
OS = "linux"

# Keys of base_image_layouts(): (layout directory name, tag inside the layout).
BUSYBOX = "busybox:latest"
DEBIAN = "debian:bookworm"

# Tool -> Debian package that provides it.
TOOL_PACKAGES: dict[str, str] = {
    "umoci": "umoci",
    "skopeo": "skopeo",
    "debootstrap": "debootstrap",
    "docker-registry": "docker-registry",
    "htpasswd": "apache2-utils",
    "tar": "tar",
    "chroot": "coreutils",
}


class MissingTool(RuntimeError):
    """A system tool the tests need is not installed."""


@dataclass(frozen=True)
class BaseImages:
    """The base images pushed into the open registry, as a Docker Hub mirror serves them."""

    mirror: str  # registry host ("127.0.0.1:PORT"), for --registry-mirror
    busybox: str  # "<host>/library/busybox:latest"
    debian: str  # "<host>/library/debian:bookworm"
    busybox_digest: str  # manifest digest, "sha256:..."
    debian_digest: str


@dataclass(frozen=True)
class AuthBaseImages:
    """busybox pushed into the htpasswd registry."""

    mirror: str
    busybox: str  # "<host>/library/busybox:latest"
    busybox_digest: str
    username: str
    password: str


# ---------------------------------------------------------------------------------------------------------------
# helpers


def require_tool(name: str) -> str:
    """Path of ``name`` on PATH, or MissingTool naming the Debian package to install."""
    path = shutil.which(name)
    if path is None:
        pkg = TOOL_PACKAGES.get(name, name)
        raise MissingTool(f"{name} is not installed: apt-get install {pkg}")
    return path


def require_static_busybox() -> Path:
    """Debian's busybox-static binary (a dynamic busybox would not run in a bare chroot)."""
    if not BUSYBOX_BIN.is_file():
        raise MissingTool(f"{BUSYBOX_BIN} is missing: apt-get install busybox-static")
    if not _is_static_elf(BUSYBOX_BIN):
        raise MissingTool(f"{BUSYBOX_BIN} is dynamically linked: apt-get install busybox-static")
    return BUSYBOX_BIN


def _is_static_elf(path: Path) -> bool:
    """True when the 64-bit little-endian ELF file has no PT_INTERP program header."""
    with open(path, "rb") as f:
        header = f.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
            return False
        phoff = struct.unpack_from("<Q", header, 0x20)[0]
        phentsize, phnum = struct.unpack_from("<HH", header, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    for i in range(phnum):
        (p_type,) = struct.unpack_from("<I", table, i * phentsize)
        if p_type == 3:  # PT_INTERP
            return False
    return True


def _run(args: list[str]) -> subprocess.CompletedProcess[bytes]:
    """Run a command; on failure raise with its output (subprocess' own error hides it)."""
    proc = subprocess.run(args, check=False, capture_output=True)
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr).decode(errors="replace")[-4000:]
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(args)}\n{out}")
    return proc


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive fcntl lock on ``lock_path`` (created) for the block."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def cache_dir() -> Path:
    """``$LAMINA_TEST_CACHE`` or ``~/.cache/lamina-tests``, created."""
    env = os.environ.get("LAMINA_TEST_CACHE")
    path = Path(env) if env else Path.home() / ".cache" / "lamina-tests"
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---------------------------------------------------------------------------------------------------------------
# Debian bookworm minbase


def _clean_debian_tree(root: Path) -> None:
    """Drop what an image should not carry: apt lists and caches, device nodes, debootstrap leftovers."""
    lists = root / "var/lib/apt/lists"
    if lists.is_dir():
        for entry in lists.iterdir():
            if entry.name == "partial":
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    apt_cache = root / "var/cache/apt"
    if apt_cache.is_dir():
        for deb in (apt_cache / "archives").glob("*.deb"):
            deb.unlink()
        for binfile in apt_cache.glob("*.bin"):
            binfile.unlink()
    # Images carry empty /dev, /proc, /sys: the runtime provides them, and device nodes in a layer break
    # unprivileged extraction.
    for name in ("dev", "proc", "sys"):
        d = root / name
        if d.is_dir() and not d.is_symlink():
            for entry in d.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
    for leftover in ("debootstrap", "var/log/bootstrap.log"):
        p = root / leftover
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def tar_rootfs_tree(root: Path, dest: Path) -> None:
    """Clean a debootstrap'd tree and tar it to ``dest`` atomically (GNU tar, numeric owners, xattrs)."""
    require_tool("tar")
    _clean_debian_tree(root)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        _run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--sort=name",
              "-cf", str(tmp), "-C", str(root), "."])
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def debian_rootfs_tar(cache: Path) -> Path:
    """``<cache>/bookworm-minbase.tar``: debootstrap'd once (about 2 minutes), reused afterwards."""
    dest = cache / DEBIAN_TAR_NAME
    if dest.is_file():
        return dest
    with _locked(cache / f".{DEBIAN_TAR_NAME}.lock"):
        if dest.is_file():  # another run made it while we waited
            return dest
        require_tool("debootstrap")
        if os.geteuid() != 0:
            raise MissingTool(f"debootstrap needs root to create {dest} (run the tests as root, as CI does)")
        work = Path(tempfile.mkdtemp(prefix=".debootstrap-", dir=cache))
        try:
            root = work / "root"
            _run(["debootstrap", "--variant=minbase", DEBIAN_SUITE, str(root), DEBIAN_MIRROR])
            tar_rootfs_tree(root, dest)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return dest


# ---------------------------------------------------------------------------------------------------------------
# busybox


PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""

# gid 65534 is named both "nogroup" (Debian) and "nobody" (busybox image), so tests may use either name.
GROUP = """\
root:x:0:
daemon:x:1:
bin:x:2:
www-data:x:33:
staff:x:50:daemon,www-data
nogroup:x:65534:
nobody:x:65534:
"""


def busybox_rootfs(dest: Path) -> None:
    """Write a minimal busybox tree into ``dest`` (created; must be empty or absent)."""
    busybox = require_static_busybox()
    dest.mkdir(parents=True, exist_ok=True)
    dirs = {
        "bin": 0o755, "etc": 0o755, "root": 0o700, "tmp": 0o1777, "home": 0o755, "var": 0o755,
        "usr": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755, "proc": 0o755, "sys": 0o755, "dev": 0o755,
    }
    for name, mode in dirs.items():
        d = dest / name
        d.mkdir(exist_ok=True)
        os.chmod(d, mode)  # mkdir's mode is filtered by the umask, and the sticky bit is not applied
    shutil.copyfile(busybox, dest / "bin/busybox")
    os.chmod(dest / "bin/busybox", 0o755)
    applets = _run([str(busybox), "--list"]).stdout.decode().split()
    for applet in applets:
        if applet == "busybox" or "/" in applet:
            continue
        (dest / "bin" / applet).symlink_to("busybox")
    (dest / "etc/passwd").write_text(PASSWD)
    (dest / "etc/group").write_text(GROUP)
    for f in ("etc/passwd", "etc/group"):
        os.chmod(dest / f, 0o644)
    if os.geteuid() == 0:
        for path in [dest, *dest.rglob("*")]:
            os.lchown(path, 0, 0)
    for path in [*dest.rglob("*"), dest]:
        os.utime(path, (FIXED_EPOCH, FIXED_EPOCH), follow_symlinks=False)


# ---------------------------------------------------------------------------------------------------------------
# OCI layouts with umoci


def make_oci_layout(layout: Path, tag: str, rootfs: Path, *, cmd: list[str], env: list[str]) -> None:
    """Make (or add ``tag`` to) the OCI layout ``layout`` holding one layer with ``rootfs``.

    ``rootfs`` is a directory (copied with ``cp -a``) or a tar file (extracted with numeric owners and xattrs).
    Built with umoci only, so it does not depend on lamina's code.
    """
    require_tool("umoci")
    if os.geteuid() != 0:
        raise MissingTool("making base image layouts needs root (umoci unpack/repack without --rootless)")
    image = f"{layout}:{tag}"
    if not (layout / "index.json").is_file():
        _run(["umoci", "init", "--layout", str(layout)])
    _run(["umoci", "new", "--image", image])
    work = Path(tempfile.mkdtemp(prefix=".umoci-bundle-", dir=layout.parent))
    try:
        bundle = work / "bundle"
        _run(["umoci", "unpack", "--image", image, str(bundle)])
        target = bundle / "rootfs"
        if rootfs.is_dir():
            _run(["cp", "-a", f"{rootfs}/.", f"{target}/"])
        else:
            _run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf", str(rootfs),
                  "-C", str(target)])
        os.chmod(target, 0o755)
        os.utime(target, (FIXED_EPOCH, FIXED_EPOCH))
        _run(["umoci", "repack", "--image", image,
              "--history.created", FIXED_TIME, "--history.created_by", f"lamina-tests: {layout.name}:{tag} rootfs",
              str(bundle)])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    config = ["umoci", "config", "--image", image, "--no-history", "--created", FIXED_TIME,
              "--architecture", ARCHITECTURE, "--os", OS]
    for arg in cmd:
        config += ["--config.cmd", arg]
    for var in env:
        config += ["--config.env", var]
    _run(config)
    _run(["umoci", "gc", "--layout", str(layout)])


def _layouts_key() -> str:
    """Identity of the recipe and its inputs: a change rebuilds the layouts."""
    h = hashlib.sha256()
    h.update(json.dumps({
        "recipe": RECIPE_VERSION, "passwd": PASSWD, "group": GROUP, "env": DEFAULT_ENV,
        "busybox_cmd": BUSYBOX_CMD, "debian_cmd": DEBIAN_CMD, "time": FIXED_TIME,
        "arch": ARCHITECTURE, "os": OS,
    }, sort_keys=True).encode())
    h.update(hashlib.sha256(require_static_busybox().read_bytes()).digest())
    return h.hexdigest()[:16]


def base_image_layouts(cache: Path) -> dict[str, Path]:
    """OCI layouts for ``busybox:latest`` and ``debian:bookworm`` (tags ``latest``/``bookworm`` inside).

    Built once under ``<cache>/images-<key>/`` and reused; a changed recipe or busybox binary gives a new key
    (older ``images-*`` directories are removed then). Deleting the debian tar rebuilds everything.
    """
    require_tool("umoci")
    debian_tar = debian_rootfs_tar(cache)
    st = debian_tar.stat()
    key = hashlib.sha256(f"{_layouts_key()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    final = cache / f"images-{key}"
    result = {BUSYBOX: final / "busybox", DEBIAN: final / "debian"}
    if (final / ".complete").is_file():
        return result
    with _locked(cache / ".images.lock"):
        if (final / ".complete").is_file():
            return result
        work = Path(tempfile.mkdtemp(prefix=".images-", dir=cache))
        try:
            tree = work / "busybox-rootfs"
            busybox_rootfs(tree)
            make_oci_layout(work / "busybox", "latest", tree, cmd=BUSYBOX_CMD, env=DEFAULT_ENV)
            shutil.rmtree(tree)
            make_oci_layout(work / "debian", DEBIAN_SUITE, debian_tar, cmd=DEBIAN_CMD, env=DEFAULT_ENV)
            for layout in ("busybox", "debian"):
                os.chmod(work / layout / "index.json", 0o644)  # umoci writes it 0600
            os.chmod(work, 0o755)  # mkdtemp made it 0700
            (work / ".complete").write_text(key + "\n")
            for old in cache.glob("images-*"):
                shutil.rmtree(old, ignore_errors=True)
            os.replace(work, final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return result


# ---------------------------------------------------------------------------------------------------------------
# pushing


def push_layout(layout: Path, tag: str, dest: str, *, creds: tuple[str, str] | None = None,
                format: str | None = None) -> str:
    """``skopeo copy`` the layout's ``tag`` to ``docker://<dest>`` (plain HTTP allowed); return the manifest digest.

    ``format`` is skopeo's ``--format`` (``oci``, ``v2s2``); by default the OCI manifest is pushed unchanged, so
    the digest is the layout's own.
    """
    require_tool("skopeo")
    with tempfile.TemporaryDirectory(prefix="lamina-push-") as tmp:
        digest_file = Path(tmp) / "digest"
        args = ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--digestfile", str(digest_file)]
        if creds is not None:
            args += ["--dest-creds", f"{creds[0]}:{creds[1]}"]
        if format is not None:
            args += ["--format", format]
        args += [f"oci:{layout}:{tag}", f"docker://{dest}"]
        _run(args)
        return digest_file.read_text().strip()
