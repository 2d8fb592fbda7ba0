"""What software an image holds, read from the records package managers and toolchains leave in its final
filesystem: Debian's dpkg database (and distroless ``status.d`` files) with the machine-readable copyright files,
Alpine's apk database, Python distributions' metadata, npm packages' ``package.json``, and the build information
the Go toolchain embeds in executables (Go 1.18's format and later).

Pure parsing, no I/O: the caller reads the files (``lamina.rootfs.image_files``) and hands them over as a mapping
of paths relative to the image's root ("var/lib/dpkg/status") to their bytes. ``wanted_for_sbom`` says which files to
read and ``excerpt_for_sbom`` what of them to keep (a Go executable's build information, not the executable).
Metadata that cannot be parsed is skipped, never fatal: an SBOM lists what can be known.

Licences are given as SPDX expressions in SPDX syntax, names mapped to SPDX identifiers where a table here knows
them and otherwise kept as the metadata spells them (one token each); ``lamina.attest.spdx`` validates them and turns
unknown names into LicenseRefs.
"""

from __future__ import annotations

import dataclasses
import email.message
import email.parser
import email.policy
import email.utils
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

from packageurl import PackageURL

Kind = Literal["deb", "apk", "python", "npm", "golang"]
NOASSERTION = "NOASSERTION"

DPKG_STATUS = "var/lib/dpkg/status"
APK_INSTALLED = "lib/apk/db/installed"
OS_RELEASE = ("etc/os-release", "usr/lib/os-release")  # etc/os-release is often a symlink to the other
_DPKG_STATUS_D = re.compile(r"var/lib/dpkg/status\.d/[^/]+")  # distroless: one file per package
_DEB_COPYRIGHT = re.compile(r"usr/share/doc/[^/]+/copyright")
_PYTHON_METADATA = re.compile(r"(?:.*/)?(?:site|dist)-packages/(?:[^/]+\.dist-info/METADATA|[^/]+\.egg-info"
                              r"(?:/PKG-INFO)?)")
_NPM_PACKAGE = re.compile(r"(?:.*/)?node_modules/(?:@[^/]+/)?[^/.@_][^/]*/package\.json")
MAX_METADATA = 64 << 20  # bytes: a metadata file larger than this is not read
GO_MIN_SIZE = 256 << 10  # bytes: no Go executable is smaller (hello world, stripped: ~1 MiB)
GO_MAX_SIZE = 1 << 30  # bytes: larger executables are not read (one at a time: this bounds memory)
GO_MAGIC = b"\xff Go buildinf:"
GO_HEADER = 32  # the magic, pointer size, flags, padding: the two strings follow (flags & 2)
GO_SENTINEL = 16  # bytes around the modinfo string


@dataclass(frozen=True)
class Package:
    """One package found in the image. ``license`` is an SPDX expression or NOASSERTION; ``supplier`` and
    ``originator`` are SPDX actors ("Person: Jane Doe (jane@example.org)", "Organization: ...") or "". ``found_at``
    is the file it was read from. For Go: ``module_path`` (the module, "" for the standard library and for an
    executable built outside module mode, where ``name`` is its main package's path) and ``main_module``."""

    kind: Kind
    name: str
    version: str
    purl: str
    found_at: str
    license: str = NOASSERTION
    source: str = ""  # the source package (deb) or origin (apk), when the metadata names one
    source_version: str = ""  # the source package's version when it differs from the package's
    supplier: str = ""
    originator: str = ""
    module_path: str = ""
    main_module: bool = False


@dataclass(frozen=True)
class Distro:
    """What ``os-release`` says: ID ("debian", "ubuntu", "alpine"), VERSION_ID, VERSION_CODENAME."""

    id: str = ""
    version_id: str = ""
    codename: str = ""

    @property
    def qualifier(self) -> str:
        """The purl ``distro`` qualifier, "debian-12" ("" when unknown)."""
        release = self.version_id or self.codename
        return f"{self.id}-{release}" if self.id and release else ""


# -- which files ------------------------------------------------------------------------------------------------------


def is_metadata(path: str) -> bool:
    """Is ``path`` a file some parser here reads by its name (not an executable probed for Go build info)?"""
    return (path in (DPKG_STATUS, APK_INSTALLED, *OS_RELEASE) or bool(_DPKG_STATUS_D.fullmatch(path))
            or bool(_DEB_COPYRIGHT.fullmatch(path)) or bool(_PYTHON_METADATA.fullmatch(path))
            or bool(_NPM_PACKAGE.fullmatch(path)))


def wanted_for_sbom(path: str, mode: int, size: int) -> bool:
    """Read this regular file for the SBOM? Package metadata by its path; executables of a plausible size, as
    candidate Go executables (whose build information ``excerpt_for_sbom`` keeps)."""
    if is_metadata(path):
        return size <= MAX_METADATA
    return bool(mode & 0o111) and GO_MIN_SIZE <= size <= GO_MAX_SIZE


def excerpt_for_sbom(path: str, data: bytes) -> bytes | None:
    """What of a wanted file to keep: metadata whole, of an executable only its Go build information (None when it
    has none)."""
    if is_metadata(path):
        return data
    return go_build_info_excerpt(data)


def find_packages(files: Mapping[str, bytes]) -> list[Package]:
    """Every package the files (path → data, as ``wanted_for_sbom`` chose them) record, without duplicates, sorted
    by kind, name, version, purl, place found (and the other fields)."""
    distro = find_distro(files)
    found: set[Package] = set()
    for path, data in files.items():
        found.update(_packages_at(path, data, files, distro))
    return sorted(found, key=dataclasses.astuple)


def _packages_at(path: str, data: bytes, files: Mapping[str, bytes], distro: Distro) -> list[Package]:
    if path == DPKG_STATUS:
        return debian_packages(data, path, distro, files)
    if _DPKG_STATUS_D.fullmatch(path):
        return [] if path.endswith(".md5sums") else debian_packages(data, path, distro, files, needs_status=False)
    if path == APK_INSTALLED:
        return alpine_packages(data, path, distro)
    if _PYTHON_METADATA.fullmatch(path):
        return _listed(python_package(data, path))
    if _NPM_PACKAGE.fullmatch(path):
        return _listed(npm_package(data, path))
    if is_metadata(path):
        return []  # read for the others: copyright files, os-release
    return go_packages(data, path)


def _listed(package: Package | None) -> list[Package]:
    return [] if package is None else [package]


# -- shared helpers ---------------------------------------------------------------------------------------------------


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _purl(kind: str, namespace: str, name: str, version: str, qualifiers: Mapping[str, str] | None = None) -> str:
    kept = {key: value for key, value in (qualifiers or {}).items() if value}
    return str(PackageURL(type=kind, namespace=namespace or None, name=name, version=version or None,
                          qualifiers=kept or None).to_string())


def _actor(name: str, email: str = "", *, organization: bool = False) -> str:
    """An SPDX actor ("Person: name (email)"); parentheses are dropped from both parts, as SPDX parsers split on
    them. "" without a name."""
    name = " ".join(re.sub(r"[()]", " ", name).split())
    email = re.sub(r"[()\s]", "", email)
    if not name:
        return ""
    kind = "Organization" if organization else "Person"
    return f"{kind}: {name} ({email})" if email else f"{kind}: {name}"


_TEAM_WORDS = re.compile(r"(?i)\b(team|maintainers|developers|group|project|packagers|list|debian|ubuntu)\b")


def _maintainer(text: str) -> str:
    """A distribution's "Name <email>" maintainer as an SPDX actor: teams and lists as organizations."""
    name, address = email.utils.parseaddr(text)
    name = name or text.split("<", 1)[0].strip()
    return _actor(name, address, organization=bool(_TEAM_WORDS.search(name)))


def _paragraphs(text: str) -> Iterator[dict[str, str]]:
    """deb822 paragraphs (dpkg status, control and DEP-5 copyright files): lower-cased field name → value, with
    continuation lines joined by newlines."""
    fields: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if not line.strip():
            if fields:
                yield fields
            fields, key = {}, ""
        elif line[0] in " \t":
            if key:
                fields[key] += "\n" + line.strip()
        elif ":" in line and not line.startswith("#"):
            name, _, value = line.partition(":")
            key = name.strip().lower()
            fields[key] = value.strip()
    if fields:
        yield fields


def _join(expressions: list[str], operator: str) -> str:
    """SPDX expressions joined by AND or OR, each compound one in parentheses."""
    unique = list(dict.fromkeys(e for e in expressions if e))
    if len(unique) == 1:
        return unique[0]
    return f" {operator} ".join(f"({e})" if " " in e else e for e in unique)


def _token(name: str) -> str:
    """A licence name that no table here knows, kept as one token of an expression."""
    return "-".join(name.split())


# -- os-release ---------------------------------------------------------------------------------------------------------


def parse_os_release(data: bytes) -> Distro:
    values: dict[str, str] = {}
    for line in _text(data).splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith("#"):
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            values[key.strip()] = value
    return Distro(id=values.get("ID", "").lower(), version_id=values.get("VERSION_ID", ""),
                  codename=values.get("VERSION_CODENAME", ""))


def find_distro(files: Mapping[str, bytes]) -> Distro:
    for path in OS_RELEASE:
        if path in files:
            return parse_os_release(files[path])
    return Distro()


# -- Debian -----------------------------------------------------------------------------------------------------------

_GNU_LICENCE = re.compile(r"(?i)(A?GPL|LGPL|GFDL|GFDL-NIV)-?(\d+)(?:\.(\d+))?(\+|-only|-or-later)?")
_DEBIAN_LICENCES = {  # Debian's short names (lower case) that are not SPDX identifiers → SPDX
    "expat": "MIT", "mit/x11": "MIT", "apache-2": "Apache-2.0", "artistic": "Artistic-1.0-Perl",
    "artistic-1": "Artistic-1.0", "artistic-2": "Artistic-2.0", "bsd-2": "BSD-2-Clause", "bsd-3": "BSD-3-Clause",
    "bsd-4": "BSD-4-Clause", "cc0": "CC0-1.0", "openldap-2.8": "OLDAP-2.8", "psf-2": "PSF-2.0",
    "python": "Python-2.0", "pd": "public-domain", "mpl-2": "MPL-2.0", "zlib": "Zlib",
}
_SPDX_EXCEPTIONS = {  # DEP-5 "with X exception" names (lower case) → SPDX exception; {major}: the licence's
    "autoconf": "Autoconf-exception-{major}.0", "bison": "Bison-exception-2.2", "libtool": "Libtool-exception",
    "linux-syscall-note": "Linux-syscall-note", "llvm": "LLVM-exception", "texinfo": "Texinfo-exception",
    "classpath": "Classpath-exception-2.0", "font": "Font-exception-2.0", "gcc-3.1": "GCC-exception-3.1",
}


def _debian_licence_id(name: str) -> str:
    """One DEP-5 short name as an SPDX identifier where known ("GPL-2+" → "GPL-2.0-or-later"), else as a token."""
    gnu = _GNU_LICENCE.fullmatch(name)
    if gnu:
        family, major, minor, suffix = gnu.groups()
        later = "or-later" if suffix in ("+", "-or-later") else "only"
        version = f"{major}.{minor or 0}"
        if family.upper() == "GFDL-NIV":
            return f"GFDL-{version}-no-invariants-{later}"
        return f"{family.upper()}-{version}-{later}"
    return _DEBIAN_LICENCES.get(name.lower(), _token(name))


def _debian_licence_name(name: str) -> str:
    """A DEP-5 name, maybe "NAME with X exception", as an SPDX expression (an unknown exception: one token)."""
    match = re.fullmatch(r"(?i)(.+?)\s+with\s+(.+?)(?:\s+exception)?", name.strip())
    if match is None:
        return _debian_licence_id(name.strip())
    licence = _debian_licence_id(match.group(1))
    major = re.search(r"-(\d+)\.", licence)
    exception = _SPDX_EXCEPTIONS.get(match.group(2).lower())
    if exception is None:
        return _token(name)
    return f"{licence} WITH {exception.format(major=major.group(1) if major else '2')}"


def _debian_licence_expression(text: str) -> str:
    """A DEP-5 License field's first line ("GPL-1+ or Artistic, and BSD-3-clause") as an SPDX expression: "and"
    and "or" as in SPDX, a comma grouping what is before it."""
    result = ""
    for index, group in enumerate(text.split(",")):
        operator, group = "AND", group.strip()
        leading = re.match(r"(?i)(and|or)\s+(.*)", group)
        if index and leading:
            operator, group = leading.group(1).upper(), leading.group(2)
        parts = re.split(r"(?i)\s+(and|or)\s+", group)
        if not all(part.strip() for part in parts):
            return ""
        expression = " ".join(_debian_licence_name(part) if i % 2 == 0 else part.upper() for i, part in
                              enumerate(parts))
        result = expression if not result else _join([result, expression], operator)
    return result


def debian_copyright_licence(text: str) -> str:
    """The licences a machine-readable (DEP-5) copyright file declares, all of them joined by AND (each Files
    paragraph's and the header's); NOASSERTION for a free-form file."""
    paragraphs = list(_paragraphs(text))
    if not paragraphs or not {"format", "format-specification"} & paragraphs[0].keys():
        return NOASSERTION
    expressions = []
    for index, paragraph in enumerate(paragraphs):
        if "license" in paragraph and (index == 0 or "files" in paragraph):  # not stand-alone licence texts
            expressions.append(_debian_licence_expression(paragraph["license"].split("\n", 1)[0]))
    return _join(expressions, "AND") or NOASSERTION


def _debian_source(text: str) -> tuple[str, str]:
    """The Source field ("glibc" or "glibc (2.36-9)") as (name, version)."""
    match = re.fullmatch(r"(\S+)(?:\s+\((.+)\))?", text.strip())
    return (match.group(1), match.group(2) or "") if match else ("", "")


def debian_packages(data: bytes, found_at: str, distro: Distro, files: Mapping[str, bytes],
                    *, needs_status: bool = True) -> list[Package]:
    """The installed packages of a dpkg status file (or a distroless status.d file, whose stanzas may lack a
    Status field: ``needs_status=False``); licences from ``files``' usr/share/doc/<package>/copyright."""
    found = []
    for fields in _paragraphs(_text(data)):
        status = fields.get("status", "").split()
        if (status or needs_status) and status[-1:] != ["installed"]:
            continue  # removed, config files left, half-installed
        name, version = fields.get("package", ""), fields.get("version", "")
        if not name or not version:
            continue
        source, source_version = _debian_source(fields.get("source", ""))
        if source_version == version:
            source_version = ""
        upstream = f"{source}@{source_version}" if source and source_version else source
        qualifiers = {"arch": fields.get("architecture", ""), "distro": distro.qualifier,
                      "upstream": upstream if upstream != name else ""}
        copyright_file = files.get(f"usr/share/doc/{name}/copyright") or files.get(f"usr/share/doc/{source}/copyright")
        found.append(Package(
            kind="deb", name=name, version=version, found_at=found_at,
            purl=_purl("deb", distro.id if distro.id in ("debian", "ubuntu") else "debian", name, version,
                       qualifiers),
            license=debian_copyright_licence(_text(copyright_file)) if copyright_file else NOASSERTION,
            source=source, source_version=source_version, supplier=_maintainer(fields.get("maintainer", ""))))
    return found


# -- Alpine -------------------------------------------------------------------------------------------------------------


def _apk_records(text: str) -> Iterator[dict[str, str]]:
    """The records of apk's installed database: "K:value" lines, records separated by blank lines; the first
    value of each key (file lists repeat F:, R:, a:, Z:)."""
    record: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if record:
                yield record
            record = {}
        elif len(line) >= 2 and line[1] == ":":
            record.setdefault(line[0], line[2:].strip())
    if record:
        yield record


def _apk_licence(text: str) -> str:
    """apk's L: field: SPDX expressions, or in older packages space-separated names (all of which apply)."""
    words = text.split()
    if not words:
        return NOASSERTION
    if any(word.upper() in ("AND", "OR", "WITH") or "(" in word for word in words):
        return text.strip()
    return _join(words, "AND")


def alpine_packages(data: bytes, found_at: str, distro: Distro) -> list[Package]:
    found = []
    for record in _apk_records(_text(data)):
        name, version, origin = record.get("P", ""), record.get("V", ""), record.get("o", "")
        if not name or not version:
            continue
        qualifiers = {"arch": record.get("A", ""), "distro": distro.qualifier,
                      "upstream": origin if origin != name else ""}
        found.append(Package(
            kind="apk", name=name, version=version, found_at=found_at,
            purl=_purl("apk", distro.id or "alpine", name, version, qualifiers),
            license=_apk_licence(record.get("L", "")), source=origin, supplier=_maintainer(record.get("m", ""))))
    return found


# -- Python -------------------------------------------------------------------------------------------------------------

_PYTHON_CLASSIFIERS = {  # "License :: " classifiers → SPDX (those that name one licence)
    "OSI Approved :: MIT License": "MIT",
    "OSI Approved :: MIT No Attribution License (MIT-0)": "MIT-0",
    "OSI Approved :: Apache Software License": "Apache-2.0",
    "OSI Approved :: ISC License (ISCL)": "ISC",
    "OSI Approved :: Mozilla Public License 2.0 (MPL 2.0)": "MPL-2.0",
    "OSI Approved :: Python Software Foundation License": "PSF-2.0",
    "OSI Approved :: GNU General Public License v2 (GPLv2)": "GPL-2.0-only",
    "OSI Approved :: GNU General Public License v2 or later (GPLv2+)": "GPL-2.0-or-later",
    "OSI Approved :: GNU General Public License v3 (GPLv3)": "GPL-3.0-only",
    "OSI Approved :: GNU General Public License v3 or later (GPLv3+)": "GPL-3.0-or-later",
    "OSI Approved :: GNU Lesser General Public License v2 (LGPLv2)": "LGPL-2.0-only",
    "OSI Approved :: GNU Lesser General Public License v2 or later (LGPLv2+)": "LGPL-2.0-or-later",
    "OSI Approved :: GNU Lesser General Public License v3 (LGPLv3)": "LGPL-3.0-only",
    "OSI Approved :: GNU Lesser General Public License v3 or later (LGPLv3+)": "LGPL-3.0-or-later",
    "OSI Approved :: GNU Affero General Public License v3": "AGPL-3.0-only",
    "OSI Approved :: GNU Affero General Public License v3 or later (AGPLv3+)": "AGPL-3.0-or-later",
    "OSI Approved :: The Unlicense (Unlicense)": "Unlicense",
    "OSI Approved :: zlib/libpng License": "Zlib",
    "OSI Approved :: Boost Software License 1.0 (BSL-1.0)": "BSL-1.0",
    "OSI Approved :: Eclipse Public License 2.0 (EPL-2.0)": "EPL-2.0",
    "OSI Approved :: Universal Permissive License (UPL)": "UPL-1.0",
    "CC0 1.0 Universal (CC0 1.0) Public Domain Dedication": "CC0-1.0",
}
_PYTHON_LICENCES = {  # License: field values (lower case) that are common names of one licence → SPDX
    "apache 2.0": "Apache-2.0", "apache-2": "Apache-2.0", "apache license 2.0": "Apache-2.0",
    "apache license, version 2.0": "Apache-2.0", "apache license version 2.0": "Apache-2.0",
    "apache software license": "Apache-2.0", "apache 2": "Apache-2.0", "mit license": "MIT",
    "new bsd": "BSD-3-Clause", "new bsd license": "BSD-3-Clause", "3-clause bsd": "BSD-3-Clause",
    "3-clause bsd license": "BSD-3-Clause",
    "bsd 3-clause": "BSD-3-Clause", "bsd-3": "BSD-3-Clause", "simplified bsd": "BSD-2-Clause",
    "psf": "PSF-2.0", "psf license": "PSF-2.0", "python software foundation license": "PSF-2.0",
    "mpl 2.0": "MPL-2.0", "mpl-2": "MPL-2.0",
}


def normalise_python_name(name: str) -> str:
    """PEP 503's normalised form: lower case, runs of "-", "_", "." as one "-"."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _python_licence(metadata: email.message.Message) -> str:
    """License-Expression (PEP 639), else the licences the classifiers name (all of them, AND: which apply is
    unclear), else a one-line License field."""
    expression = (metadata.get("License-Expression") or "").strip()
    if expression:
        return expression
    classified = [_PYTHON_CLASSIFIERS.get(c.removeprefix("License ::").strip(), "")
                  for c in metadata.get_all("Classifier") or [] if c.startswith("License ::")]
    if any(classified):
        return _join(sorted(set(classified) - {""}), "AND")
    field = (metadata.get("License") or "").strip()
    if not field or "\n" in field or len(field) > 100 or field.upper() in ("UNKNOWN", "NONE"):
        return NOASSERTION  # a licence's whole text, or nothing said
    return _PYTHON_LICENCES.get(field.lower(), field)


def _python_author(metadata: email.message.Message) -> str:
    """The first author: from Author-email ("Name <address>, ..."), named by Author when it gives no name."""
    author = (metadata.get("Author") or "").strip()
    addresses = [(n, a) for n, a in email.utils.getaddresses([metadata.get("Author-email") or ""]) if n or a]
    if addresses:
        name, address = addresses[0]
        return _actor(name or author, address)
    return _actor(author) if "\n" not in author else ""


def python_package(data: bytes, found_at: str) -> Package | None:
    """A distribution's METADATA or PKG-INFO (dist-info, egg-info); None without a name and version."""
    metadata = email.parser.Parser(policy=email.policy.compat32).parsestr(_text(data), headersonly=True)
    name, version = (metadata.get("Name") or "").strip(), (metadata.get("Version") or "").strip()
    if not name or not version:
        return None
    return Package(kind="python", name=name, version=version, found_at=found_at,
                   purl=_purl("pypi", "", normalise_python_name(name), version),
                   license=_python_licence(metadata), originator=_python_author(metadata))


# -- npm ----------------------------------------------------------------------------------------------------------------


def _npm_licence(document: Mapping[str, object]) -> str:
    """``license`` (an SPDX expression, or an old {"type": ...} object), else the old ``licenses`` list (a choice
    among them: OR, as npm documents)."""
    licence = document.get("license")
    if isinstance(licence, dict):
        licence = licence.get("type")
    if isinstance(licence, str) and licence.strip():
        return NOASSERTION if licence.upper().startswith("SEE LICENSE IN") else licence.strip()
    listed = document.get("licenses")
    if isinstance(listed, list):
        names = [item.get("type") if isinstance(item, dict) else item for item in listed]
        return _join([_token(n) for n in names if isinstance(n, str) and n.strip()], "OR") or NOASSERTION
    return NOASSERTION


def _npm_person(person: object) -> str:
    """``author``: "Name <email> (url)" or {"name": ..., "email": ...}, as an SPDX actor."""
    if isinstance(person, dict):
        name, address = person.get("name"), person.get("email")
        return _actor(name if isinstance(name, str) else "", address if isinstance(address, str) else "")
    if isinstance(person, str):
        match = re.fullmatch(r"\s*([^<(]*?)\s*(?:<([^>]*)>)?\s*(?:\(([^)]*)\))?\s*", person)
        if match:
            return _actor(match.group(1), match.group(2) or "")
    return ""


def npm_package(data: bytes, found_at: str) -> Package | None:
    """The package.json of a package in node_modules; None without a name and version, or when not JSON."""
    try:
        document = json.loads(data)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    name, version = document.get("name"), document.get("version")
    if not isinstance(name, str) or not isinstance(version, str) or not name or not version:
        return None
    namespace, _, base = name.rpartition("/") if name.startswith("@") else ("", "", name)
    return Package(kind="npm", name=name, version=version, found_at=found_at,
                   purl=_purl("npm", namespace, base, version), license=_npm_licence(document),
                   originator=_npm_person(document.get("author")))


# -- Go -----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GoBuildInfo:
    """What ``debug/buildinfo`` reads: the toolchain's version ("go1.22.1") and the modinfo text ("path\\t...",
    "mod\\t...", "dep\\t...", "=>\\t...", "build\\t..." lines); ``start``/``end``: where it is in the data."""

    go_version: str
    modinfo: str
    start: int
    end: int


def _uvarint(data: bytes, offset: int) -> tuple[int, int] | None:
    value = shift = 0
    while offset < len(data) and shift < 64:
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, offset
        shift += 7
    return None


def _go_string(data: bytes, offset: int) -> tuple[bytes, int] | None:
    decoded = _uvarint(data, offset)
    if decoded is None or decoded[1] + decoded[0] > len(data):
        return None
    length, start = decoded
    return data[start:start + length], start + length


def _go_build_info_at(data: bytes, start: int) -> GoBuildInfo | None:
    """The build info whose header starts at ``start``; None when it is not one, or in the pointer format of Go
    before 1.18 (flags & 2 unset: its strings are addresses in the executable's memory, not supported)."""
    header = data[start:start + GO_HEADER]
    if len(header) < GO_HEADER or header[14] not in (4, 8) or not header[15] & 2:
        return None
    version = _go_string(data, start + GO_HEADER)
    modinfo = _go_string(data, version[1]) if version else None
    if version is None or modinfo is None or not version[0].startswith((b"go", b"devel")):
        return None
    text = modinfo[0]
    if len(text) >= 2 * GO_SENTINEL + 1 and text[-GO_SENTINEL - 1] == ord("\n"):
        text = text[GO_SENTINEL:-GO_SENTINEL]
    else:
        text = b""
    return GoBuildInfo(_text(version[0]), _text(text), start, modinfo[1])


def go_build_info(data: bytes) -> GoBuildInfo | None:
    """The Go build information in an executable (or an excerpt of one), found by its magic; None without it."""
    position = data.find(GO_MAGIC)
    while position >= 0:
        info = _go_build_info_at(data, position)
        if info is not None:
            return info
        position = data.find(GO_MAGIC, position + 1)  # the magic as a string constant (a Go tool reading others)
    return None


def go_build_info_excerpt(data: bytes) -> bytes | None:
    """The bytes of an executable's Go build information, all ``go_build_info`` needs; None without it."""
    info = go_build_info(data)
    return None if info is None else data[info.start:info.end]


@dataclass(frozen=True)
class GoModule:
    path: str
    version: str


def parse_go_modinfo(modinfo: str) -> tuple[str, GoModule | None, list[GoModule]]:
    """The main package's path, the main module and the dependencies of a modinfo text; a dependency replaced by
    another module ("=>") is that module, one replaced by a local directory keeps its own path and version."""
    path, main = "", None
    deps: list[GoModule] = []
    replaceable = False  # does a "=>" line apply to the last dependency?
    for line in modinfo.splitlines():
        fields = line.split("\t")
        if fields[0] == "path" and len(fields) >= 2:
            path = fields[1]
        elif fields[0] == "mod" and len(fields) >= 3:
            main = GoModule(fields[1], fields[2])
        elif fields[0] == "dep" and len(fields) >= 3:
            deps.append(GoModule(fields[1], fields[2]))
        elif fields[0] == "=>" and len(fields) >= 3 and replaceable and not fields[1].startswith((".", "/")):
            deps[-1] = GoModule(fields[1], fields[2])
        replaceable = fields[0] == "dep"
    return path, main, deps


def _go_package(path: str, version: str, found_at: str, *, module: bool, main: bool) -> Package:
    namespace, _, name = path.rpartition("/")
    return Package(kind="golang", name=path, version=version, found_at=found_at,
                   purl=_purl("golang", namespace, name, version), module_path=path if module else "",
                   main_module=main)


def go_packages(data: bytes, found_at: str) -> list[Package]:
    """The main module, its dependencies and the standard library (``stdlib``, versioned as the toolchain: go1.22.1)
    of a Go executable; [] when ``data`` holds no build information. An executable built outside module mode has
    no module: its main package's path stands for it, without a version."""
    info = go_build_info(data)
    if info is None:
        return []
    path, main, deps = parse_go_modinfo(info.modinfo)
    found = [_go_package("stdlib", info.go_version.split(" ", 1)[0], found_at, module=False, main=False)]
    if main is not None:
        found.append(_go_package(main.path, main.version, found_at, module=True, main=True))
    elif path and path != "command-line-arguments":
        found.append(_go_package(path, "", found_at, module=False, main=True))
    found.extend(_go_package(dep.path, dep.version, found_at, module=True, main=False) for dep in deps)
    return found
