"""lamina's runtime image (the top-level Dockerfile) built offline by lamina itself, for the tests.

``python:3.11-slim-bookworm`` cannot be pulled here, so ``python_base_context`` makes a stand-in: the test Debian
image plus the host's own Debian python3.11 (the host is Debian 12 like the base), lamina's run-time dependencies,
pip and setuptools. ``runtime_image_context`` is the repository's Dockerfile, entrypoint and source with a wheel of
lamina, and the build args that install it without an index.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def wheel(target: Path) -> Path:
    """A wheel of lamina made with zipfile (no network, no `wheel` package): the package and its dist-info."""
    dist = metadata.distribution("lamina")
    version = dist.version
    path = target / f"lamina-{version}-py3-none-any.whl"
    info = f"lamina-{version}.dist-info"
    records: list[str] = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        for file in sorted((ROOT / "src" / "lamina").rglob("*.py")):
            name = str(file.relative_to(ROOT / "src"))
            wheel.write(file, name)
            records.append(f"{name},,")
        requires = "".join(f"Requires-Dist: {r}\n" for r in dist.requires or [])
        files = {
            f"{info}/METADATA": f"Metadata-Version: 2.1\nName: lamina\nVersion: {version}\n{requires}",
            f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: lamina-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
            f"{info}/entry_points.txt": "[console_scripts]\nlamina = lamina.cli:main\n",
        }
        for name, text in files.items():
            wheel.writestr(name, text)
            records.append(f"{name},,")
        wheel.writestr(f"{info}/RECORD", "\n".join([*records, f"{info}/RECORD,,"]) + "\n")
    return path


def _requirements(name: str, seen: set[str], extras: frozenset[str] = frozenset()) -> None:
    """``name`` (with ``extras``) and everything it needs at run time, as installed distribution names."""
    from packaging.requirements import Requirement

    key = name.lower().replace("_", "-")
    marker_key = key + "[" + ",".join(sorted(extras)) + "]"
    if marker_key in seen:
        return
    seen.add(marker_key)
    seen.add(key)
    for text in metadata.distribution(name).requires or []:
        requirement = Requirement(text)
        if requirement.marker is not None and not any(requirement.marker.evaluate({"extra": extra})
                                                      for extra in ("", *extras)):
            continue
        _requirements(requirement.name, seen, frozenset(requirement.extras))


def python_base_context(root: Path, debian: str) -> Path:
    """A context that adds Debian's own python3.11 (the host is Debian 12 like the base) and lamina's run-time
    dependencies, pip and setuptools to the minbase image, which has no Python: the stand-in for python:3.11-slim,
    which cannot be pulled offline; and the host's git, ssh-agent and ssh-add, which the runtime image's Dockerfile
    would otherwise install with apt. Shared libraries come from ``ldd``, except the C library the base has."""
    rootfs = root / "rootfs"
    python = Path("/usr/bin/python3.11")
    if not python.is_file():
        pytest.fail("/usr/bin/python3.11 is missing (apt-get install python3.11)", pytrace=False)
    (rootfs / "usr/bin").mkdir(parents=True)
    shutil.copy2(python, rootfs / "usr/bin/python3.11")
    os.symlink("python3.11", rootfs / "usr/bin/python3")
    shutil.copytree("/usr/lib/python3.11", rootfs / "usr/lib/python3.11", symlinks=True,
                    ignore=shutil.ignore_patterns("test", "EXTERNALLY-MANAGED"))  # compiled modules too, as in
    # python:3.11-slim: without them every start compiles what it imports
    site = rootfs / "usr/local/lib/python3.11/dist-packages"
    site.mkdir(parents=True)
    seen: set[str] = set()
    _requirements("lamina", seen)
    names = {name for name in seen if "[" not in name} - {"lamina"}
    names |= {"pip", "setuptools"}
    for name in sorted(names):
        dist = metadata.distribution(name)
        for file in dist.files or []:
            source = Path(str(dist.locate_file(file)))
            if not source.is_file() or ".." in file.parts:
                continue
            dest = site / file
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest)
    # busybox-static, which the runtime image installs into /busybox (Kaniko's :debug shell)
    busybox = Path("/bin/busybox")
    if not busybox.is_file():
        pytest.fail("/bin/busybox is missing (apt-get install busybox-static)", pytrace=False)
    shutil.copy2(busybox, rootfs / "usr/bin/busybox")
    # git, as the runtime image installs it (ADD from a git repository): the program, its helpers, templates
    git = Path("/usr/bin/git")
    if not git.is_file():
        pytest.fail("/usr/bin/git is missing (apt-get install git)", pytrace=False)
    shutil.copy2(git, rootfs / "usr/bin/git")
    shutil.copytree("/usr/lib/git-core", rootfs / "usr/lib/git-core", symlinks=True,
                    ignore=shutil.ignore_patterns("mergetools"))
    shutil.copytree("/usr/share/git-core/templates", rootfs / "usr/share/git-core/templates", symlinks=True)
    # OpenSSH's ssh-agent and ssh-add, as the runtime image installs them (--ssh ID=KEY)
    ssh_tools = [Path("/usr/bin/ssh-agent"), Path("/usr/bin/ssh-add")]
    for tool in ssh_tools:
        if not tool.is_file():
            pytest.fail(f"{tool} is missing (apt-get install openssh-client)", pytrace=False)
        shutil.copy2(tool, rootfs / "usr/bin" / tool.name)
    libraries: set[str] = set()
    for binary in [python, *Path("/usr/lib/python3.11/lib-dynload").glob("*.so"), *site.rglob("*.so*"), git,
                   Path("/usr/lib/git-core/git-remote-http"), *ssh_tools]:
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            parts = line.split("=>")
            if len(parts) == 2 and parts[1].strip().startswith("/"):
                libraries.add(parts[1].split()[0])
    for library in sorted(libraries):
        if Path(library).name.startswith(("libc.so", "libm.so", "ld-linux", "libpthread", "libdl.so")):
            continue
        # under the real directory: /lib is a symlink to usr/lib in the merged-/usr base, keep it one
        dest = rootfs / os.path.realpath(os.path.dirname(library)).lstrip("/") / os.path.basename(library)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(library), dest)
    # bytecode checked by hash, as in python:3.11-slim whose layers keep their mtimes: the build of this stand-in
    # clamps mtimes to SOURCE_DATE_EPOCH, which would make timestamp-based .pyc files stale
    subprocess.run(["/usr/bin/python3", "-m", "compileall", "-q", "-f", "-j", "0", "--invalidation-mode",
                    "unchecked-hash", str(rootfs / "usr/lib/python3.11"), str(site)], check=False,
                   capture_output=True)
    (root / "Dockerfile").write_text(f"FROM {debian}\nCOPY rootfs/ /\n")
    return root


def runtime_image_context(context: Path, python_base: str) -> tuple[Path, list[str]]:
    """The repository's runtime-image recipe in ``context`` and the ``--build-arg`` flags that build it on
    ``python_base`` (from ``python_base_context``) without reaching an index."""
    context.mkdir(parents=True)
    for name in ("Dockerfile", "entrypoint.sh", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, context / name)
    shutil.copytree(ROOT / "src", context / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    made = wheel(context / "src")  # inside src/, which the Dockerfile copies to /src/src
    return context, ["--build-arg", f"BASE={python_base}",
                     "--build-arg", "VENV_OPTIONS=--without-pip --system-site-packages",
                     "--build-arg", "PIP_OPTIONS=--no-index",
                     "--build-arg", f"PACKAGE=/src/src/{made.name}"]
