"""What the inplace sandbox keeps of lamina's interpreter: the ELF loader path, the mapped files, and a tree of
directories, links and files written back as they were."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from lamina.sandbox.interpreter_files import InterpreterFiles, capture, elf_interpreter, loaded_paths


def test_elf_interpreter_of_real_programs() -> None:
    python = Path(os.path.realpath(sys.executable)).read_bytes()[:65536]
    assert elf_interpreter(python) in {"/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1"}
    assert elf_interpreter(Path("/bin/busybox").read_bytes()[:65536]) is None  # static: no loader
    assert elf_interpreter(b"#!/bin/sh\necho not an ELF file\n") is None
    assert elf_interpreter(python[:70]) is None  # headers cut off


def test_loaded_paths_from_proc_maps() -> None:
    maps = ("55d0c0a00000-55d0c0a2e000 r--p 00000000 08:01 1234  /usr/bin/python3.11\n"
            "7f1c2c000000-7f1c2c021000 rw-p 00000000 00:00 0 \n"
            "7f1c2d000000-7f1c2d028000 r--p 00000000 08:01 99   /usr/lib/x86_64-linux-gnu/libc.so.6\n"
            "7f1c2e000000-7f1c2e001000 r--p 00000000 08:01 98   /tmp/gone.so (deleted)\n"
            "7ffd5a000000-7ffd5a021000 rw-p 00000000 00:00 0    [stack]\n")
    assert loaded_paths(maps) == {"/usr/bin/python3.11", "/usr/lib/x86_64-linux-gnu/libc.so.6"}


def test_a_kept_tree_is_written_back_with_its_links(tmp_path: Path) -> None:
    old = tmp_path / "old"
    (old / "usr" / "lib").mkdir(parents=True)
    (old / "usr" / "lib" / "libx.so.1.2").write_bytes(b"\x7fELF library")
    (old / "usr" / "lib" / "libx.so.1.2").chmod(0o755)
    os.symlink("libx.so.1.2", old / "usr" / "lib" / "libx.so.1")
    os.symlink("usr/lib", old / "lib")
    (old / "usr" / "lib" / "unused.so").write_bytes(b"not needed")
    kept = InterpreterFiles()
    kept.keep(str(old / "lib" / "libx.so.1"), skip=[str(old / "usr" / "share")])
    kept.keep(str(old / "missing" / "file"), skip=[])
    new = tmp_path / "new"
    new.mkdir()
    assert kept.write_back(str(new)) == []
    restored = new / str(old).lstrip("/")
    assert os.readlink(restored / "lib") == "usr/lib"
    assert os.readlink(restored / "usr" / "lib" / "libx.so.1") == "libx.so.1.2"
    assert (restored / "lib" / "libx.so.1").read_bytes() == b"\x7fELF library"
    assert (restored / "usr" / "lib" / "libx.so.1.2").stat().st_mode & 0o777 == 0o755
    assert not (restored / "usr" / "lib" / "unused.so").exists() and not (restored / "missing").exists()
    assert kept.write_back(str(new)) == []  # what exists is left alone


def test_capture_keeps_this_interpreter_but_not_what_is_skipped() -> None:
    skipped = os.path.dirname(os.path.abspath(__file__))
    kept = capture([skipped])
    real = os.path.realpath(sys.executable)
    assert real in kept.entries and kept.entries[real].data[:4] == b"\x7fELF"
    assert os.__file__ in kept.entries
    assert not any(path.startswith(skipped + "/") for path in kept.entries)
    assert kept.size > 1_000_000


def test_the_container_s_first_process_keeps_nothing_for_after_the_build() -> None:
    """lamina as PID 1 (the Action's container ends with it): no interpreter files read, nothing restored."""
    from lamina.sandbox.inplace import InplaceRoot

    root = InplaceRoot((), force=True, restores=False)
    assert root.begin() and not root.begin()
    assert root.interpreter is None
    root.keep_originals(["/etc/passwd"])
    assert root.originals == {}
    root.restore()  # nothing to do, and nothing touched
