"""The inplace sandbox's work on /: the sweep after a stage is unpacked over the runtime image's files (what its
layers lack goes, from the scan taken after the unpack, no second walk, and that scan is left equal to a fresh one),
and which of lamina's modules are imported before / is cleared."""

from __future__ import annotations

import os
from pathlib import Path

from lamina.sandbox.inplace import skipped_by_preload, sweep_root
from lamina.snapshot.scan import scan_tree

OLD = 1_600_000_000_000_000_000


def _tree(root: Path) -> None:
    for directory in ("etc", "usr/bin", "usr/lib/python3.11/json", "var/run/inner", "opt/keep"):
        (root / directory).mkdir(parents=True)
    for name in ("etc/passwd", "etc/hosts", "usr/bin/ls", "usr/bin/git", "usr/lib/python3.11/os.py",
                 "usr/lib/python3.11/json/__init__.py", "opt/keep/a", "stray"):
        (root / name).write_text(name)
    os.symlink("python3.11", root / "usr/lib/python3")
    for directory in ("etc", "usr/bin", "usr/lib", "opt", "opt/keep", ""):
        os.utime(root / directory, ns=(OLD, OLD))


def test_what_the_layers_lack_goes_and_the_scan_is_a_fresh_one(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    _tree(root)
    ignored = ("/etc/hosts", "/var/run")  # an ignored file, and a mountpoint-like directory
    exclude = frozenset(p.strip("/") for p in ignored)
    present = {str(root / p) for p in ("etc", "etc/passwd", "usr", "usr/bin", "usr/bin/ls", "usr/lib", "opt",
                                       "opt/keep", "opt/keep/a")}
    scan = scan_tree(root, exclude=exclude)

    removed = sweep_root(ignored, present, scan, root=root)

    # the python tree counts once, the link, git and the stray file: /var holds an ignored path and stays
    assert removed == 4
    assert sorted(scan) == sorted(scan_tree(root, exclude=exclude))
    assert scan == scan_tree(root, exclude=exclude)
    assert not (root / "usr/lib/python3.11").exists() and not os.path.lexists(root / "usr/lib/python3")
    assert not (root / "usr/bin/git").exists() and not (root / "stray").exists()
    assert (root / "etc/hosts").read_text() == "etc/hosts"
    assert (root / "var/run/inner").is_dir()
    # the directories that lost entries keep the mtime their layers gave them, the root too
    for directory in ("usr/bin", "usr/lib", ""):
        assert os.lstat(root / directory).st_mtime_ns == OLD


def test_nothing_to_sweep_touches_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "etc").mkdir()
    (root / "etc/passwd").write_text("root")
    scan = scan_tree(root)
    before = dict(scan)
    assert sweep_root((), {str(root / "etc"), str(root / "etc/passwd")}, scan, root=root) == 0
    assert scan == before


def test_preload_leaves_out_the_ci_adapters_but_for_the_gitlab_one_which_imports_after_its_build() -> None:
    assert not skipped_by_preload("lamina.build.executor", {})
    assert skipped_by_preload("lamina.ci.gitlab_api", {"lamina.ci.github": object()})
    assert skipped_by_preload("lamina.ci.github_packages", {})
    assert not skipped_by_preload("lamina.ci.gitlab_api", {"lamina.ci.gitlab": object()})
