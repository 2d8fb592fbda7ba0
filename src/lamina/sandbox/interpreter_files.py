"""The files lamina's own interpreter needs to start again, kept in memory while the inplace sandbox builds in ``/``.

The inplace sandbox clears ``/`` (all but the ignored paths) and leaves the image it built there. lamina keeps
running (its modules are loaded), but nothing could start it again: the Python interpreter, its standard library
and the shared libraries live outside ``/lamina``. A CI job written for Kaniko runs ``/kaniko/executor`` twice in one
container (Kaniko is a static program in an ignored directory), and goes on with its script after a build. So
before the first clearing, lamina reads what its process has loaded (the interpreter and every file of
``/proc/self/maps``, the file of every imported module and its bytecode, the loader's cache, the CA bundle, the
user database), with the symbolic links on the way to each (``/lib64``, ``/usr/local/bin/python3``...); when the
build ends, ``/`` is cleared again (as Kaniko's ``--cleanup``) and those files are written back. About 20 to 40 MB
of memory for a few hundred files; nothing is read or written when no step had to run.

Pure bookkeeping over ``os``; the inplace sandbox decides when (``InplaceRoot``).
"""

from __future__ import annotations

import os
import stat
import struct
import sys
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from lamina.rootfs.removal import WORKERS

EXTRA_FILES = ("/etc/ld.so.cache", "/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/ssl/openssl.cnf",
               "/etc/ssl/certs/ca-certificates.crt")
CA_VARIABLES = ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE")
TOP_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")  # merged /usr: the loader's paths go through them
PT_INTERP = 3


@dataclass(frozen=True)
class KeptEntry:
    path: str
    mode: int  # st_mode: the type and the permissions
    uid: int
    gid: int
    mtime_ns: int = 0
    data: bytes = b""  # a file's content
    target: str = ""  # a symbolic link's target


@dataclass
class InterpreterFiles:
    """What the interpreter needs, by path: directories, symbolic links and files, ready to be written back."""

    entries: dict[str, KeptEntry] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return sum(len(e.data) for e in self.entries.values())

    def _record(self, path: str, st: os.stat_result, skip: Iterable[str], *, data: bytes = b"",
                target: str = "") -> None:
        if path in self.entries or _under(path, skip):
            return
        self.entries[path] = KeptEntry(path, st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, data, target)

    def keep(self, path: str, skip: Iterable[str], *, hops: int = 0) -> None:
        """Keep ``path`` (absolute): each directory and symbolic link on the way, then the file it names."""
        if hops > 40:
            return  # a loop of links
        current = "/"
        parts = [p for p in path.split("/") if p]
        for index, part in enumerate(parts):
            candidate = os.path.join(current, part)
            try:
                st = os.lstat(candidate)
            except OSError:
                return
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(candidate)
                self._record(candidate, st, skip, target=target)
                rest = "/".join(parts[index + 1:])
                resolved = os.path.normpath(os.path.join(current, target))
                self.keep(os.path.join(resolved, rest) if rest else resolved, skip, hops=hops + 1)
                return
            if stat.S_ISDIR(st.st_mode):
                self._record(candidate, st, skip)
                current = candidate
                continue
            if stat.S_ISREG(st.st_mode) and index == len(parts) - 1 and not _under(candidate, skip):
                try:
                    data = Path(candidate).read_bytes()
                except OSError:
                    return
                self._record(candidate, st, skip, data=data)
            return

    def write_back(self, root: str = "/") -> list[str]:
        """Create what is missing under ``root``, parents first (the entries of one depth by a few threads at once:
        creating files is mostly kernel time); returns the paths that could not be written."""
        failed: list[str] = []

        def create(path: str) -> None:
            entry = self.entries[path]
            dest = os.path.join(root, path.lstrip("/"))
            try:
                if os.path.lexists(dest):
                    return
                if stat.S_ISDIR(entry.mode):
                    os.mkdir(dest, stat.S_IMODE(entry.mode))
                elif stat.S_ISLNK(entry.mode):
                    os.symlink(entry.target, dest)
                else:
                    with open(dest, "xb") as out:
                        out.write(entry.data)
                os.lchown(dest, entry.uid, entry.gid)
                if not stat.S_ISLNK(entry.mode):
                    os.chmod(dest, stat.S_IMODE(entry.mode))
                    os.utime(dest, ns=(entry.mtime_ns, entry.mtime_ns))
            except OSError:
                failed.append(path)

        by_depth: dict[int, list[str]] = {}
        for path in self.entries:
            by_depth.setdefault(path.count("/"), []).append(path)
        with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="write-back") as pool:
            for depth in sorted(by_depth):
                list(pool.map(create, sorted(by_depth[depth])))
        return sorted(failed)


def _under(path: str, skip: Iterable[str]) -> bool:
    return any(path == s or path.startswith(s.rstrip("/") + "/") for s in skip)


def loaded_paths(maps: str) -> set[str]:
    """The files a process has mapped, from the text of its ``/proc/PID/maps`` (pure)."""
    found = set()
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith("/") and not fields[5].endswith(" (deleted)"):
            found.add(fields[5])
    return found


def elf_interpreter(data: bytes) -> str | None:
    """The program interpreter (dynamic loader) an ELF executable names in its PT_INTERP header, if any (pure)."""
    if data[:4] != b"\x7fELF" or len(data) < 64:
        return None
    wide, order = data[4] == 2, "<" if data[5] == 1 else ">"
    if wide:
        phoff, = struct.unpack_from(order + "Q", data, 32)
        phentsize, phnum = struct.unpack_from(order + "HH", data, 54)
    else:
        phoff, = struct.unpack_from(order + "I", data, 28)
        phentsize, phnum = struct.unpack_from(order + "HH", data, 42)
    for index in range(phnum):
        at = phoff + index * phentsize
        if at + phentsize > len(data):
            return None
        if struct.unpack_from(order + "I", data, at)[0] != PT_INTERP:
            continue
        offset, size = (struct.unpack_from(order + "QQQQ", data, at + 8)[0::3] if wide
                        else struct.unpack_from(order + "IIII", data, at + 4)[0::3])
        return data[offset:offset + size].split(b"\0", 1)[0].decode("utf-8", "replace") or None
    return None


def interpreter_paths(environ: Mapping[str, str]) -> set[str]:
    """Every path this process needs to start again: its executable, mapped files, imported modules (and their
    bytecode), and a few files read at start-up or by a registry client (the CA bundle named by the environment)."""
    paths = {sys.executable, *EXTRA_FILES, *TOP_LINKS}
    try:
        with open(os.path.realpath(sys.executable), "rb") as program:
            loader = elf_interpreter(program.read(65536))
    except OSError:
        loader = None
    if loader:
        paths.add(loader)  # as the kernel finds it (/lib64/...), not as it is mapped (/usr/lib/x86_64-linux-gnu/...)
    paths.update(environ[name] for name in CA_VARIABLES if environ.get(name, "").startswith("/"))
    try:
        paths |= loaded_paths(Path("/proc/self/maps").read_text())
    except OSError:
        pass
    certifi = sys.modules.get("certifi")  # the CA bundle requests reads at each connection, a data file
    where = getattr(certifi, "where", None)
    if callable(where):
        paths.add(str(where()))
    for module in list(sys.modules.values()):
        for attribute in ("__file__", "__cached__"):
            value = getattr(module, attribute, None)
            if isinstance(value, str) and value.startswith("/"):
                paths.add(value)
    return paths


def capture(skip: Iterable[str]) -> InterpreterFiles:
    """Read what the interpreter needs into memory, except what lies under ``skip`` (paths that are never cleared)."""
    skipped = tuple(skip)
    kept = InterpreterFiles()
    for path in sorted(interpreter_paths(os.environ)):
        kept.keep(path, skipped)
    return kept
