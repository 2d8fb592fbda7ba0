"""Helpers for the end-to-end tests: run lamina like a user does, then look at what it made with tools that share
no code with it (skopeo, umoci, tarfile, the OCI JSON schemas).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, cast

import pytest
import requests

from lamina.cli import main

SHARED = Path(__file__).resolve().parents[3] / "shared"
SCHEMA_DIR = SHARED / "conformance" / "oci-image-spec-schema" / "main"
BENCH_DIR = SHARED / "bench"

SKOPEO_TIMEOUT = 120
LAMINA_TIMEOUT = 300

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
SCHEMA_FILES = {
    OCI_MANIFEST: "image-manifest-schema.json",
    OCI_CONFIG: "config-schema.json",
    OCI_INDEX: "image-index-schema.json",
    "application/vnd.oci.layout.header.v1+json": "image-layout-schema.json",
}
SHA256_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
ENV_ENTRY = re.compile(r"^[^=]+=.*$")


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (apt-get install {name}); .ci/run installs it", pytrace=False)
    return path


def write_context(root: Path, dockerfile: str, files: Mapping[str, str | bytes] | None = None) -> Path:
    """A build context at ``root``: the Dockerfile (dedented) plus ``files`` (relative path -> content)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "Dockerfile").write_text(textwrap.dedent(dockerfile).lstrip("\n"))
    for rel, content in (files or {}).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


# ---------------------------------------------------------------------------------------------------------------
# running lamina


@dataclass(frozen=True)
class LaminaRun:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def describe(self) -> str:
        return (f"lamina {' '.join(self.argv)} exited {self.returncode}\n--- stdout\n{self.stdout[-6000:]}"
                f"\n--- stderr\n{self.stderr[-6000:]}")

    def check(self) -> LaminaRun:
        assert self.returncode == 0, self.describe()
        return self

    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def clean_environ(extra: Mapping[str, str] | None = None, *, docker_config: Path | None = None) -> dict[str, str]:
    """os.environ without LAMINA_*/DOCKER_CONFIG/SOURCE_DATE_EPOCH, with LAMINA_PROVENANCE=false, plus ``extra``.

    DOCKER_CONFIG always points somewhere under the tests' control, so credentials in the developer's home never
    change what a test sees.
    """
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("LAMINA_") and k not in ("DOCKER_CONFIG", "SOURCE_DATE_EPOCH")}
    # no attestations unless a test asks (tests/e2e/test_attestations.py): most tests read the image manifest at
    # the tag, which an attested image puts behind an index
    env["LAMINA_PROVENANCE"] = "false"
    if docker_config is not None:
        env["DOCKER_CONFIG"] = str(docker_config)
    env.update(extra or {})
    return env


def lamina_in_process(argv: Sequence[str], environ: Mapping[str, str]) -> LaminaRun:
    """``lamina.cli.main(argv, environ=...)`` with its stdout and stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(list(argv), environ=environ)
        except SystemExit as exc:  # argparse errors
            rc = exc.code if isinstance(exc.code, int) else 1
    return LaminaRun(tuple(argv), rc, out.getvalue(), err.getvalue())


def lamina_subprocess(argv: Sequence[str], environ: Mapping[str, str], *, cwd: Path | None = None) -> LaminaRun:
    """``python -m lamina.cli ARGV``: exactly what a user sees (real exit code and stderr)."""
    proc = subprocess.run([sys.executable, "-m", "lamina.cli", *argv], env=dict(environ), cwd=cwd,
                          capture_output=True, text=True, timeout=LAMINA_TIMEOUT, check=False)
    return LaminaRun(tuple(argv), proc.returncode, proc.stdout, proc.stderr)


# ---------------------------------------------------------------------------------------------------------------
# skopeo


def skopeo(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([require_tool("skopeo"), *args], capture_output=True, text=True, timeout=SKOPEO_TIMEOUT,
                          check=False)
    if check:
        assert proc.returncode == 0, f"skopeo {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}"
    return proc


def _tls_flags(image: str, flag: str = "--tls-verify=false") -> list[str]:
    return [flag] if image.startswith("docker://") else []


def _creds_flags(creds: tuple[str, str] | None, flag: str = "--creds") -> list[str]:
    return [flag, f"{creds[0]}:{creds[1]}"] if creds else []


def inspect(image: str, *, creds: tuple[str, str] | None = None) -> dict[str, Any]:
    """``skopeo inspect IMAGE`` (IMAGE with its transport: docker://, oci:, docker-archive:)."""
    out = skopeo("inspect", *_tls_flags(image), *_creds_flags(creds), image).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def inspect_raw(image: str, *, creds: tuple[str, str] | None = None) -> bytes:
    """The manifest exactly as stored (``skopeo inspect --raw``)."""
    proc = subprocess.run([require_tool("skopeo"), "inspect", "--raw", *_tls_flags(image), *_creds_flags(creds),
                           image], capture_output=True, timeout=SKOPEO_TIMEOUT, check=False)
    assert proc.returncode == 0, f"skopeo inspect --raw {image} failed:\n{proc.stderr.decode(errors='replace')}"
    return proc.stdout


def inspect_config(image: str, *, creds: tuple[str, str] | None = None) -> dict[str, Any]:
    """The image config JSON (``skopeo inspect --config``)."""
    out = skopeo("inspect", "--config", *_tls_flags(image), *_creds_flags(creds), image).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def inspect_fails(image: str, *, creds: tuple[str, str] | None = None) -> str:
    """Assert ``skopeo inspect`` cannot find IMAGE; return its error text."""
    proc = skopeo("inspect", *_tls_flags(image), *_creds_flags(creds), image, check=False)
    assert proc.returncode != 0, f"{image} exists but should not:\n{proc.stdout[:2000]}"
    return proc.stderr


def tags(registry_host: str, repository: str, *, creds: tuple[str, str] | None = None) -> list[str]:
    """The tags of ``repository`` ([] when the repository does not exist), straight from the registry API."""
    r = requests.get(f"http://{registry_host}/v2/{repository}/tags/list", auth=creds, timeout=10)
    if r.status_code == 404:
        return []
    r.raise_for_status()
    return list(r.json().get("tags") or [])


def assert_not_pushed(registry_host: str, repository: str, *, creds: tuple[str, str] | None = None) -> None:
    assert tags(registry_host, repository, creds=creds) == [], f"{registry_host}/{repository} was pushed"


# ---------------------------------------------------------------------------------------------------------------
# unpacking with skopeo + umoci


@dataclass
class Unpacked:
    """An image copied into an OCI layout by skopeo and unpacked by umoci."""

    layout: Path
    tag: str
    rootfs: Path
    manifest: dict[str, Any]
    config: dict[str, Any]

    def blob(self, digest: str) -> Path:
        algorithm, hex_ = digest.split(":", 1)
        return self.layout / "blobs" / algorithm / hex_

    def path(self, rel: str) -> Path:
        return self.rootfs / rel.lstrip("/")

    def read(self, rel: str) -> str:
        return self.path(rel).read_text()

    def lstat(self, rel: str) -> os.stat_result:
        return os.lstat(self.path(rel))

    def exists(self, rel: str) -> bool:
        return os.path.lexists(self.path(rel))

    def layer(self, index: int) -> dict[str, tarfile.TarInfo]:
        """The entries of layer ``index`` (negative counts from the top) by name, normalised without ``./``."""
        return {normalise(m.name): m for m in layer_members(self.blob(self.manifest["layers"][index]["digest"]))}

    def layer_names(self, index: int) -> list[str]:
        return list(self.layer(index))


def normalise(name: str) -> str:
    return name.removeprefix("./").rstrip("/")


def _open_layer(path: Path) -> io.BufferedIOBase:
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"\x28\xb5\x2f\xfd":  # zstd: tarfile in 3.11 cannot read it
        import zstandard

        with open(path, "rb") as compressed:
            return io.BytesIO(zstandard.ZstdDecompressor().stream_reader(compressed).read())
    return open(path, "rb")


def layer_members(path: Path) -> list[tarfile.TarInfo]:
    with _open_layer(path) as raw, tarfile.open(fileobj=raw, mode="r:*") as tar:
        return tar.getmembers()


def image_manifest(image: str, *, creds: tuple[str, str] | None = None) -> dict[str, Any]:
    """The image manifest ``docker://IMAGE`` names: itself, or the first image of the index it names (an image
    with attestations is an index of the image and its attestation manifest)."""
    raw = json.loads(inspect_raw(image, creds=creds))
    if "manifests" not in raw:
        return cast(dict[str, Any], raw)
    [entry] = [m for m in raw["manifests"] if (m.get("platform") or {}).get("os") != "unknown"][:1]
    repository = image.split("@", 1)[0]
    head, _, last = repository.rpartition("/")
    repository = f"{head}/{last.split(':', 1)[0]}"  # without the tag
    return cast(dict[str, Any], json.loads(inspect_raw(f"{repository}@{entry['digest']}", creds=creds)))


def unpack(image: str, workdir: Path, *, creds: tuple[str, str] | None = None, tag: str = "img") -> Unpacked:
    """``skopeo copy IMAGE oci:workdir/layout:TAG`` then ``umoci unpack`` into ``workdir/bundle``."""
    umoci = require_tool("umoci")
    workdir.mkdir(parents=True, exist_ok=True)
    layout = workdir / "layout"
    bundle = workdir / "bundle"
    src_tls = ["--src-tls-verify=false"] if image.startswith("docker://") else []
    skopeo("copy", "--quiet", *src_tls, *_creds_flags(creds, "--src-creds"), image, f"oci:{layout}:{tag}")
    proc = subprocess.run([umoci, "unpack", "--image", f"{layout}:{tag}", str(bundle)], capture_output=True,
                          text=True, timeout=SKOPEO_TIMEOUT, check=False)
    assert proc.returncode == 0, f"umoci unpack failed:\n{proc.stderr}"
    index = json.loads((layout / "index.json").read_text())
    [entry] = [m for m in index["manifests"]
               if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]
    unpacked = Unpacked(layout, tag, bundle / "rootfs", {}, {})
    unpacked.manifest = json.loads(unpacked.blob(entry["digest"]).read_bytes())
    unpacked.config = json.loads(unpacked.blob(unpacked.manifest["config"]["digest"]).read_text())
    return unpacked


# ---------------------------------------------------------------------------------------------------------------
# OCI JSON schemas


@cache
def _schema_registry() -> Any:
    referencing = pytest.importorskip("referencing")
    from referencing.jsonschema import DRAFT4

    def retrieve(uri: str) -> Any:
        # The schemas name each other by id (https://opencontainers.org/schema/...) and by relative file name;
        # every reference ends in the file's name.
        name = uri.rstrip("/").rsplit("/", 1)[-1]
        if not name.endswith(".json"):
            name += ".json"
        return referencing.Resource.from_contents(json.loads((SCHEMA_DIR / name).read_text()),
                                                  default_specification=DRAFT4)

    return referencing.Registry(retrieve=retrieve)


def schema_errors(document: Any, media_type: str) -> list[str]:
    """Errors of ``document`` against the OCI schema for ``media_type``, plus the Go validator's extra checks.

    Skips the calling test when jsonschema is not installed, or the schemas are absent.
    """
    if not SCHEMA_DIR.is_dir():
        pytest.skip(f"{SCHEMA_DIR} is absent")
    jsonschema = pytest.importorskip("jsonschema")  # not a dependency of lamina: skip only this check
    schema = json.loads((SCHEMA_DIR / SCHEMA_FILES[media_type]).read_text())
    validator = jsonschema.Draft4Validator(schema, registry=_schema_registry())
    errors = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(document)]
    # What image-spec's Go validator checks beyond the schema.
    descriptors: list[Any] = []
    if media_type == OCI_MANIFEST:
        descriptors = [document.get("config", {}), *document.get("layers", [])]
    elif media_type == OCI_INDEX:
        descriptors = list(document.get("manifests", []))
    for d in descriptors:
        digest = d.get("digest", "")
        if digest.startswith("sha256:") and not SHA256_DIGEST.match(digest):
            errors.append(f"bad sha256 digest {digest!r}")
    if media_type == OCI_CONFIG:
        for entry in (document.get("config") or {}).get("Env") or []:
            if not ENV_ENTRY.match(entry):
                errors.append(f"config.Env entry {entry!r} is not NAME=value")
        for diff_id in document.get("rootfs", {}).get("diff_ids", []):
            if not SHA256_DIGEST.match(diff_id):
                errors.append(f"bad diff_id {diff_id!r}")
    return errors


# A perl program (Debian's perl-base has IO::Socket::UNIX) that asks the agent of $SSH_AUTH_SOCK how many keys it
# holds (SSH2_AGENTC_REQUEST_IDENTITIES, answered by SSH2_AGENT_IDENTITIES_ANSWER) and prints the count: for
# ``RUN --mount=type=ssh perl -MIO::Socket::UNIX -e '...'`` in a test Dockerfile.
AGENT_KEYS = ('$s = IO::Socket::UNIX->new(Peer => $ENV{SSH_AUTH_SOCK}) or die "connect: $!"; '
              'print $s pack("NC", 1, 11); read($s, $h, 5); ($l, $t) = unpack("NC", $h); '
              'read($s, $b, $l - 1); $t == 12 or die "answer $t"; print unpack("N", $b), "\\n";')
