"""The inplace sandbox for real, without ever touching this machine's ``/``: a throwaway "runtime image" (the test
interpreter's standard library at its usual path, lamina and its dependencies under /lamina, the marker file) is
assembled in a temporary directory, and lamina runs in it under ``chroot``, so the ``/`` it clears and builds in is
that directory. /proc, /dev and /sys are bound in for the run and unmounted afterwards.

A build there must: clear the runtime's own files (the interpreter's library goes, and lamina keeps running), run
RUN directly in ``/``, COPY --from an earlier stage that was built in ``/`` too, record deletions as whiteouts, and
never put /lamina, the context, a mountpoint or /proc into a layer."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

from lamina.sandbox.detect import RUNTIME_MARKER
from tests.e2e.conftest import Lamina
from tests.e2e.helpers import LAMINA_TIMEOUT, clean_environ, layer_members, normalise, unpack, write_context

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PREFIX = Path(sys.base_prefix)
STDLIB = Path(sysconfig.get_paths()["stdlib"])
SKIPPED_STDLIB = {"site-packages", "test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3"}


def _mounted_below(path: Path) -> list[str]:
    real = os.path.realpath(path)
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point == real or point.startswith(real + "/"):
            points.append(point)
    return points


def _libraries(files: list[Path]) -> set[Path]:
    """The shared libraries ``files`` load (ldd), by the names the loader looks them up with."""
    libs: set[Path] = set()
    for file in files:
        proc = subprocess.run(["ldd", str(file)], capture_output=True, text=True, check=False)
        for line in proc.stdout.splitlines():
            parts = line.split()
            for part in parts:
                if part.startswith("/") and "(" not in part:
                    libs.add(Path(part))
    return libs


def _lamina_dependencies() -> set[Path]:
    """The top-level modules and packages outside the standard library that importing all of lamina loads."""
    code = ("import importlib, pkgutil, sys, lamina\n"
            "for m in pkgutil.walk_packages(lamina.__path__, 'lamina.'):\n"
            "    importlib.import_module(m.name)\n"
            "for mod in list(sys.modules.values()):\n"
            "    f = getattr(mod, '__file__', None)\n"
            "    if f and 'site-packages' in f: print(f)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env=clean_environ(), cwd=ROOT)
    tops: set[Path] = set()
    for line in proc.stdout.splitlines():
        path = Path(line)
        parts = path.parts
        index = parts.index("site-packages")
        tops.add(Path(*parts[:index + 2]))
    return tops


def _copy(source: Path, dest_root: Path) -> None:
    dest = dest_root / str(source).lstrip("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, dest, symlinks=True, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__") if "site-packages" in str(source) else None)
    else:
        shutil.copy2(source, dest)


def install_interpreter(root: Path) -> None:
    """The interpreter and its standard library at their paths on this machine, and the shared libraries they and
    the modules in /lamina/site load (a build clears all of them: one lamina build per runtime container)."""
    executable = Path(os.path.realpath(sys.executable))
    _copy(executable, root)
    for entry in STDLIB.iterdir():
        if entry.name not in SKIPPED_STDLIB:
            _copy(entry, root)
    (root / str(STDLIB).lstrip("/") / "site-packages").mkdir(parents=True, exist_ok=True)
    binaries = [executable, *STDLIB.glob("lib-dynload/*.so"), *(root / "lamina" / "site").rglob("*.so")]
    for lib in _libraries(binaries):
        _copy(Path(os.path.realpath(lib)), root)
        dest = root / str(lib).lstrip("/")
        if not os.path.lexists(dest):
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(os.path.realpath(lib), dest)


def build_runtime(root: Path) -> None:
    """A minimal "lamina runtime image" in ``root``: interpreter + standard library where they are on this machine
    (they will be cleared by the build), lamina and its dependencies under /lamina (they must survive)."""
    site = root / "lamina" / "site"
    site.mkdir(parents=True)
    for top in _lamina_dependencies():
        if top.is_dir():
            shutil.copytree(top, site / top.name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(top, site / top.name)
    install_interpreter(root)
    shutil.copytree(ROOT / "src" / "lamina", root / "lamina" / "src" / "lamina",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (root / "lamina" / "docker-config").mkdir()
    (root / "lamina" / "docker-config" / "config.json").write_text("{}")
    (root / "lamina" / ".lamina-runtime").touch()
    for name in ("proc", "dev", "sys", "tmp", "mnt/data"):
        (root / name).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Path]:
    for tool in ("chroot", "mount", "umount", "ldd"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing (Debian: coreutils, mount, libc-bin)")
    if os.geteuid() != 0:
        pytest.skip("the inplace sandbox builds as root")
    root = tmp_path / "runtime"
    build_runtime(root)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "kept.txt").write_text("a mounted volume\n")
    mounts = [(["-t", "proc", "proc"], root / "proc"), (["--bind", "/dev"], root / "dev"),
              (["--bind", "/sys"], root / "sys"), (["--bind", str(tmp_path / "data")], root / "mnt" / "data")]
    done: list[Path] = []
    try:
        for args, point in mounts:
            subprocess.run(["mount", *args, str(point)], check=True, capture_output=True)
            done.append(point)
        yield root
    finally:
        for point in reversed(done):
            if subprocess.run(["umount", str(point)], check=False, capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(point)], check=False, capture_output=True)
        left = _mounted_below(root)
        if left:  # never let tmp_path's cleanup walk into the host's /dev or /sys
            pytest.fail(f"still mounted after the test: {left}")


def lamina_in_runtime(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": "/lamina/src:/lamina/site",
           "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1", "HOME": "/lamina",
           "DOCKER_CONFIG": "/lamina/docker-config", "LANG": "C.UTF-8"}
    python = os.path.realpath(sys.executable)
    chroot = shutil.which("chroot") or "chroot"
    return subprocess.run([chroot, str(root), python, "-m", "lamina.cli", "build", *args], env=env,
                          capture_output=True, text=True, timeout=LAMINA_TIMEOUT, check=False, cwd=root)


def test_inplace_builds_in_the_runtime_images_root(runtime: Path, lamina: Lamina, tmp_path: Path) -> None:
    assert not RUNTIME_MARKER.exists(), "this machine's / has lamina's runtime marker: refusing to run"
    context = write_context(runtime / "workspace", f"""
        FROM {lamina.images.busybox} AS first
        RUN echo first > /first.txt && rm /bin/vi

        FROM first AS second
        RUN echo second > /second.txt

        FROM {lamina.images.busybox}
        COPY --from=second /first.txt /second.txt /copied/
        COPY --from=first /first.txt /again/
        COPY data.txt /from-context.txt
        RUN --mount=type=cache,target=/var/cache/c --mount=type=bind,source=data.txt,target=/etc/data.txt \\
            --mount=type=tmpfs,target=/tmp/t echo cached >> /var/cache/c/log && cat /etc/data.txt > /bound.txt \\
            && touch /tmp/t/x
        RUN echo hello > /hello.txt && rm /bin/vi \\
         && echo should-not-be-in-a-layer > /lamina/written-by-run \\
         && test -f /mnt/data/kept.txt && test -f /proc/self/status && test -c /dev/null \\
         && echo "$(id -u):$(pwd)" > /who.txt
        USER 1234:1234
        WORKDIR /home/user
        RUN id -u > /tmp/uid.txt
    """, {"data.txt": "from the context\n"})
    dest = lamina.dest("inplace")
    proc = lamina_in_runtime(runtime, "--context", "/" + str(context.relative_to(runtime)), "--sandbox", "inplace",
                             "--destination", dest, "--insecure-registry", lamina.registry.host)
    assert proc.returncode == 0, f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert "sandbox: inplace" in proc.stdout + proc.stderr

    # / was cleared for the stages, then again at the end, and lamina's interpreter written back (Kaniko leaves the
    # last stage's files in /): what the interpreter never loaded is gone; /lamina, the context and mounts were
    # never touched
    assert (runtime / str(STDLIB).lstrip("/") / "os.py").exists()
    assert not (runtime / str(STDLIB).lstrip("/") / "turtle.py").exists()
    assert not (runtime / "hello.txt").exists() and not (runtime / "bin" / "busybox").exists()
    left = list((runtime / "tmp").iterdir())  # the work directory is gone; the built files were set aside
    assert len(left) == 1 and left[0].name.startswith(".lamina-") and left[0].name.endswith("-cleared"), left
    assert (left[0] / "hello.txt").read_text() == "hello\n"
    assert (runtime / "lamina" / "src" / "lamina" / "cli.py").exists()
    assert (runtime / "lamina" / "written-by-run").exists() and (runtime / "workspace" / "data.txt").exists()
    assert (runtime / "mnt" / "data" / "kept.txt").read_text() == "a mounted volume\n"
    python = os.path.realpath(sys.executable)
    again = subprocess.run([shutil.which("chroot") or "chroot", str(runtime), python, "-c", "import email, json"],
                           capture_output=True, text=True, check=False)
    assert again.returncode == 0, again.stderr

    image = unpack(f"docker://{dest}", tmp_path / "pushed")
    assert image.read("hello.txt") == "hello\n"
    assert image.read("who.txt") == "0:/\n"
    assert image.read("copied/first.txt") == "first\n" and image.read("copied/second.txt") == "second\n"
    assert image.read("again/first.txt") == "first\n"  # the stage whose files went to its child: unpacked again
    assert image.read("bound.txt") == "from the context\n"
    assert not image.exists("var/cache/c") and not image.exists("etc/data.txt") and not image.exists("tmp/t")
    assert image.read("from-context.txt") == "from the context\n"
    assert image.read("tmp/uid.txt") == "1234\n"
    assert image.lstat("home/user").st_uid == 1234
    assert not image.exists("bin/vi") and image.exists("bin/sh")
    assert not image.exists("lamina") and not image.exists("workspace") and not image.exists("mnt/data/kept.txt")
    assert not image.exists("proc/self")
    names = [normalise(m.name) for layer in image.manifest["layers"]
             for m in layer_members(image.blob(layer["digest"]))]
    assert names.count("bin/.wh.vi") == 1
    forbidden = ("lamina", "workspace", "mnt/data", "proc/", "sys/", "dev/", "root/.pyenv", "usr/lib/python3")
    leaked = [n for n in names if n.startswith(forbidden) or n == "lamina"]
    assert not leaked, leaked


def test_inplace_is_refused_outside_the_runtime_image(lamina: Lamina, tmp_path: Path) -> None:
    assert not RUNTIME_MARKER.exists(), "this machine's / has lamina's runtime marker: refusing to run"
    context = write_context(tmp_path / "ctx", f"""
        FROM {lamina.images.busybox}
        RUN touch /should-never-exist
    """)
    result = lamina.build(context, "--sandbox", "inplace", "--no-push")
    assert result.returncode != 0
    assert "pass --force" in result.output
    assert not Path("/should-never-exist").exists()


@pytest.mark.parametrize("cache_repo", [None, "oci:/cache/layers"])
def test_inplace_with_the_cache(runtime: Path, lamina: Lamina, tmp_path: Path, cache_repo: str | None) -> None:
    """Hits need no rootfs; the first miss clears / and unpacks the base and the hit layers, then runs. A cache
    kept in an OCI layout inside / (``--cache-repo oci:/cache/layers``) is never cleared with it."""
    assert not RUNTIME_MARKER.exists(), "this machine's / has lamina's runtime marker: refusing to run"
    dest = lamina.dest("inplace-cache")
    args = ["--sandbox", "inplace", "--destination", dest, "--insecure-registry", lamina.registry.host, "--cache"]
    if cache_repo is not None:
        args += ["--cache-repo", cache_repo]
    for version in ("one", "two"):
        write_context(runtime / "workspace", f"""
            FROM {lamina.images.busybox}
            RUN echo cached > /cached.txt && rm /bin/vi
            RUN echo {version} > /version.txt && cat /cached.txt >> /version.txt
        """)
        proc = lamina_in_runtime(runtime, "--context", "/workspace", *args)  # the second: on what the first kept
        assert proc.returncode == 0, f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert "cached" in proc.stdout.split("STEP 2/3")[1].split("STEP 3/3")[0]
    image = unpack(f"docker://{dest}", tmp_path / "pushed")
    assert image.read("version.txt") == "two\ncached\n" and not image.exists("bin/vi")
    if cache_repo is not None:
        assert (runtime / "cache" / "layers" / "index.json").is_file() and not image.exists("cache")
