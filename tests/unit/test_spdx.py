"""The SBOM's SPDX 2.3 document (``attest/spdx.py``), for real packages (this host's dpkg database, the project's
venv, a Go executable), parsed and validated by spdx-tools, and the same bytes for the same packages."""

from __future__ import annotations

import json
import random
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from lamina.attest.packages import Package, excerpt_for_sbom, find_packages, wanted_for_sbom
from lamina.attest.spdx import declared_licence, package_id, spdx_document
from lamina.rootfs.image_files import files_in_tree

NAMESPACE = "https://lamina.invalid/spdx/registry.example/app@sha256-0123456789abcdef"
CREATED = "2024-05-06T07:08:09Z"


@pytest.fixture(scope="module")
def real_packages() -> list[Package]:
    files = {"var/lib/dpkg/status": Path("/var/lib/dpkg/status").read_bytes(),
             "etc/os-release": Path("/etc/os-release").read_bytes()}
    for copyright_file in Path("/usr/share/doc").glob("*/copyright"):
        if copyright_file.is_file():
            files[str(copyright_file.relative_to("/"))] = copyright_file.read_bytes()
    site_packages = Path(sysconfig.get_paths()["purelib"])
    files.update(files_in_tree(site_packages.parent, wanted_for_sbom, excerpt=excerpt_for_sbom))
    files["usr/bin/umoci"] = Path("/usr/bin/umoci").read_bytes()
    act = Path(sys.prefix) / "bin" / "act"
    if act.is_file():
        files["usr/local/bin/act"] = act.read_bytes()
    return find_packages(files)


def _document(packages: list[Package], **overrides: str) -> dict[str, Any]:
    arguments = {"name": "registry.example/app:1.0", "namespace": NAMESPACE, "created": CREATED,
                 "creator_tool": "lamina-0.9.0", **overrides}
    return spdx_document(packages, **arguments)


def _canonical(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _validate(document: dict[str, Any], tmp_path: Path) -> int:
    """Write, parse and validate with spdx-tools; the number of packages it read."""
    path = tmp_path / "sbom.spdx.json"
    path.write_bytes(_canonical(document))
    parsed = parse_file(str(path))
    assert validate_full_spdx_document(parsed) == []
    return len(parsed.packages)


def test_real_packages_validate(real_packages: list[Package], tmp_path: Path) -> None:
    kinds = {p.kind for p in real_packages}
    assert {"deb", "python", "golang"} <= kinds
    document = _document(real_packages, image_purl="pkg:oci/app@sha256%3A0123?repository_url=registry.example/app")
    assert _validate(document, tmp_path) == len(real_packages) + 1  # and the image's own
    assert document["spdxVersion"] == "SPDX-2.3" and document["dataLicense"] == "CC0-1.0"
    assert document["creationInfo"] == {"created": CREATED, "creators": ["Tool: lamina-0.9.0"]}
    ids = [p["SPDXID"] for p in document["packages"]]
    assert len(set(ids)) == len(ids)
    relationships = document["relationships"]
    assert relationships[0] == {"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
                                "relatedSpdxElement": "SPDXRef-Image"}
    contained = {r["relatedSpdxElement"] for r in relationships if r["relationshipType"] == "CONTAINS"}
    assert contained == set(ids) - {"SPDXRef-Image"}
    purls = {p["externalRefs"][0]["referenceLocator"] for p in document["packages"][1:]}
    assert purls == {p.purl for p in real_packages}
    refs = {info["licenseId"] for info in document.get("hasExtractedLicensingInfos", [])}
    assert any(p["licenseDeclared"] not in ("NOASSERTION",) for p in document["packages"][1:])
    assert refs, "Debian's copyright files name licences that are not on the SPDX list"


def test_same_packages_same_bytes(real_packages: list[Package]) -> None:
    shuffled = list(real_packages)
    random.Random(7).shuffle(shuffled)
    first, second = _canonical(_document(real_packages)), _canonical(_document(shuffled + real_packages[:5]))
    assert first == second


def test_licences_that_need_rewriting(tmp_path: Path) -> None:
    """What metadata really says, from free text to SPDX ids in the wrong case, all made valid."""
    licences = ["mit", "GPL-2.0+", "Apache 2.0", "BSD", "GPL-2.0-or-later WITH OpenSSL-exception",
                "GPL-3.0-or-later WITH Bison-exception-2.2", "(MIT", "MIT OR", "public-domain AND MIT",
                "Copyright (c) 2020 Jane Doe\nPermission is hereby granted, free of charge, to any person obtaining",
                "LicenseRef-custom", "Bison-exception-2.2", "GPL-3+-WITH-BISON-EXCEPTION", "NONE", "NOASSERTION"]
    packages = [Package(kind="npm", name=f"p{i}", version="1.0.0", purl=f"pkg:npm/p{i}@1.0.0",
                        found_at=f"node_modules/p{i}/package.json", license=licence, originator="Person: A (B)")
                for i, licence in enumerate(licences)]
    document = _document(packages)
    assert _validate(document, tmp_path) == len(packages) + 1
    declared = {p["name"]: p["licenseDeclared"] for p in document["packages"][1:]}
    assert declared["p0"] == "MIT" and declared["p1"] == "GPL-2.0-or-later"
    assert declared["p5"] == "GPL-3.0-or-later WITH Bison-exception-2.2"
    assert declared["p9"] == "NOASSERTION" and declared["p13"] == "NONE"
    assert declared_licence("public-domain AND MIT") == ("LicenseRef-public-domain AND MIT",
                                                         {"LicenseRef-public-domain": "public-domain"})


def test_package_ids_are_stable_and_distinct() -> None:
    """The same module in two executables is two packages; the id depends on nothing but the package."""
    one = Package(kind="golang", name="golang.org/x/sys", version="v0.3.0", purl="pkg:golang/golang.org/x/sys@v0.3.0",
                  found_at="usr/bin/a", module_path="golang.org/x/sys")
    other = Package(kind="golang", name="golang.org/x/sys", version="v0.3.0", purl="pkg:golang/golang.org/x/sys@v0.3.0",
                    found_at="usr/bin/b", module_path="golang.org/x/sys")
    assert package_id(one) == package_id(Package(**vars(one))) != package_id(other)
    assert package_id(one).startswith("SPDXRef-Package-golang-golang.org-x-sys-")
