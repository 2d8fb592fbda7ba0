"""The SPDX 2.3 JSON document of an image's SBOM: a root package for the image, which CONTAINS every package found
in its final filesystem (``lamina.attest.packages``), and which the document DESCRIBES.

Every licence expression is checked with ``license_expression`` (what spdx-tools validates with): SPDX identifiers
are given their canonical spelling, names that are not on the SPDX list become LicenseRefs declared in
``hasExtractedLicensingInfos``, and what does not parse becomes one LicenseRef (short text) or NOASSERTION. The same
packages give the same document, byte for byte once serialised with sorted keys, whatever their order.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable
from typing import Any

from license_expression import ExpressionError, Licensing, get_spdx_licensing  # type: ignore[import-untyped]

from lamina.attest.packages import NOASSERTION, Package

SPDX_VERSION = "SPDX-2.3"
DOCUMENT_ID = "SPDXRef-DOCUMENT"
ROOT_ID = "SPDXRef-Image"
_ACTOR = re.compile(r"(Person|Organization): [^()\n]+( \([^()\n]*\))?")
_OPERATORS = ("AND", "OR", "WITH")
_LICENCE_REF = re.compile(r"LicenseRef-[A-Za-z0-9.-]+")
MAX_REF_TEXT = 80  # characters: a longer licence text that does not parse is NOASSERTION, not a LicenseRef
_SOURCES = {"deb": "the dpkg database", "apk": "the apk database", "python": "the Python distribution metadata",
            "npm": "the npm package.json", "golang": "the Go build information of"}


@functools.cache
def _licensing() -> Licensing:
    """The SPDX licence list (loaded once: it takes a while)."""
    return get_spdx_licensing()


def licence_ref(text: str) -> str:
    """A LicenseRef for a licence name that is not on the SPDX list ("GPLv2+" → "LicenseRef-GPLv2-or-later")."""
    cleaned = re.sub(r"[^A-Za-z0-9.-]+", "-", text.replace("+", "-or-later")).strip("-")
    return f"LicenseRef-{cleaned or 'unknown'}"


def _tokens(expression: str) -> list[str]:
    return re.findall(r"[()]|[^\s()]+", expression)


def _known(token: str, *, exception: bool) -> str | None:
    """The canonical SPDX identifier of a licence (or exception) name, "gpl-2.0+" → "GPL-2.0-or-later"; None when
    it is not one."""
    if ":" in token:
        return None  # DocumentRef-...:LicenseRef-...: this document references no other
    try:
        symbol = _licensing().parse(token, validate=True)
    except ExpressionError:
        return None
    key = getattr(symbol, "key", None)
    return key if isinstance(key, str) and bool(getattr(symbol, "is_exception", False)) == exception else None


def _licence_token(token: str, refs: dict[str, str]) -> str:
    """One licence name: its SPDX identifier, or a LicenseRef (noted in ``refs``: LicenseRef → name as found)."""
    known = _known(token, exception=False)
    if known is not None:
        return known
    ref = token if _LICENCE_REF.fullmatch(token) else licence_ref(token)
    refs.setdefault(ref, token)
    return ref


def _rewrite(expression: str, refs: dict[str, str]) -> str:
    """``expression`` with SPDX identifiers spelled canonically and other names as LicenseRefs; an exception SPDX
    does not know makes "NAME WITH EXCEPTION" one LicenseRef."""
    out: list[str] = []
    tokens = _tokens(expression)
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token in "()" or token.upper() in ("AND", "OR"):
            out.append(token.upper())
        elif token.upper() == "WITH" and out and index + 1 < len(tokens):
            index += 1
            known = _known(tokens[index], exception=True)
            if known is not None:
                out += ["WITH", known]
            else:
                combined = f"{refs.get(out[-1], out[-1])} WITH {tokens[index]}"
                refs.pop(out[-1], None)
                out[-1] = licence_ref(combined)
                refs.setdefault(out[-1], combined)
        else:
            out.append(_licence_token(token, refs))
        index += 1
    return " ".join(out).replace("( ", "(").replace(" )", ")")


def declared_licence(expression: str) -> tuple[str, dict[str, str]]:
    """A package's licence as a valid SPDX expression (or NOASSERTION / NONE) and the LicenseRefs it uses (id →
    the name the metadata gave)."""
    expression = " ".join(expression.split())
    if expression in ("", NOASSERTION, "NONE"):
        return expression or NOASSERTION, {}
    refs: dict[str, str] = {}
    try:
        rewritten = _rewrite(expression, refs)
        parsed = _licensing().parse(rewritten)
    except ExpressionError:
        parsed = None
    if parsed is None:  # not an expression at all (free text, words without operators)
        if len(expression) > MAX_REF_TEXT:
            return NOASSERTION, {}
        ref = licence_ref(expression)
        return ref, {ref: expression}
    used = set(_tokens(rewritten))
    return str(parsed.render()), {ref: name for ref, name in refs.items() if ref in used}


def _actor(actor: str) -> str | None:
    return actor if _ACTOR.fullmatch(actor) else None


def package_id(package: Package) -> str:
    """A stable SPDX identifier: kind and name for people to read, a hash of the purl and place found for
    uniqueness (the same module in two executables is two packages)."""
    digest = hashlib.sha256(f"{package.purl}\n{package.found_at}".encode()).hexdigest()[:16]
    readable = re.sub(r"[^A-Za-z0-9.-]+", "-", f"{package.kind}-{package.name}").strip("-")
    return f"SPDXRef-Package-{readable}-{digest}"


def _source_info(package: Package) -> str:
    where = f"acquired package info from {_SOURCES[package.kind]} /{package.found_at}"
    if package.source:
        built = f"{package.source} {package.source_version}".strip()
        where += f"; built from the source package {built}"
    return where


def _package(package: Package, licence: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "SPDXID": package_id(package),
        "name": package.name,
        "downloadLocation": NOASSERTION,
        "filesAnalyzed": False,
        "licenseConcluded": NOASSERTION,
        "licenseDeclared": licence,
        "copyrightText": NOASSERTION,
        "sourceInfo": _source_info(package),
        "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                          "referenceLocator": package.purl}],
    }
    if package.version:
        entry["versionInfo"] = package.version
    for field, actor in (("supplier", _actor(package.supplier)), ("originator", _actor(package.originator))):
        if actor:
            entry[field] = actor
    if package.kind == "golang" and package.main_module:
        entry["primaryPackagePurpose"] = "APPLICATION"
    return entry


def _root(name: str, image_purl: str) -> dict[str, Any]:
    root: dict[str, Any] = {
        "SPDXID": ROOT_ID,
        "name": name,
        "downloadLocation": NOASSERTION,
        "filesAnalyzed": False,
        "licenseConcluded": NOASSERTION,
        "licenseDeclared": NOASSERTION,
        "copyrightText": NOASSERTION,
        "primaryPackagePurpose": "CONTAINER",
    }
    if image_purl:
        root["externalRefs"] = [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                                 "referenceLocator": image_purl}]
    return root


def spdx_document(packages: Iterable[Package], *, name: str, namespace: str, created: str, creator_tool: str,
                  image_purl: str = "") -> dict[str, Any]:
    """The SPDX 2.3 document (JSON-ready) of an image named ``name`` holding ``packages``. ``namespace``: the
    document's unique URI; ``created``: "2024-01-02T03:04:05Z"; ``creator_tool``: "lamina-1.2.3";
    ``image_purl``: the image's own purl (pkg:oci/...), if known."""
    unique = {package_id(p): p for p in packages}
    entries, relationships = [_root(name, image_purl)], []
    refs: dict[str, str] = {}
    relationships.append({"spdxElementId": DOCUMENT_ID, "relationshipType": "DESCRIBES",
                          "relatedSpdxElement": ROOT_ID})
    for spdx_id in sorted(unique):
        licence, used = declared_licence(unique[spdx_id].license)
        for ref, text in used.items():
            refs.setdefault(ref, text)
        entries.append(_package(unique[spdx_id], licence))
        relationships.append({"spdxElementId": ROOT_ID, "relationshipType": "CONTAINS",
                              "relatedSpdxElement": spdx_id})
    document: dict[str, Any] = {
        "spdxVersion": SPDX_VERSION,
        "dataLicense": "CC0-1.0",
        "SPDXID": DOCUMENT_ID,
        "name": name,
        "documentNamespace": namespace,
        "creationInfo": {"created": created, "creators": [f"Tool: {creator_tool}"]},
        "packages": entries,
        "relationships": relationships,
    }
    if refs:
        document["hasExtractedLicensingInfos"] = [
            {"licenseId": ref, "name": text,
             "extractedText": f"The package metadata names this licence {text!r}; its text is not included."}
            for ref, text in sorted(refs.items())]
    return document
