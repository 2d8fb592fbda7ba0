"""The attestations of a build (``--provenance``, ``--sbom``): what the executor saw, turned into in-toto statements
and the attestation manifest of the image (the formats are ``lamina.attest``; this module gathers the facts).

Reads from disk: the Dockerfile's text (``mode=max``), the context's git checkout (its commit and remote,
credentials removed) when the CI run did not name one, and for the SBOM the image's layer blobs (the packages'
metadata files, straight from the tars).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lamina
from lamina.attest.attach import Attestations, attestation_manifest, platform_of
from lamina.attest.provenance import (
    SLSA_V02,
    SLSA_V1,
    BuildRecord,
    Material,
    image_purl,
    redact_url,
    slsa_v02,
    slsa_v1,
    statement,
    subjects_for,
)
from lamina.oci.layout import ImageBlobs
from lamina.oci.model import OCI_MANIFEST, Descriptor, Platform
from lamina.options import BuildOptions
from lamina.progress import StepResult

SPDX_DOCUMENT = "https://spdx.dev/Document"


@dataclass
class BuildFacts:
    """What the executor records for provenance while it builds."""

    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    images: dict[str, tuple[str, str]] = field(default_factory=dict)  # purl → (reference, manifest digest)
    downloads: list[tuple[str, str]] = field(default_factory=list)  # (URL or repository, "algorithm:hex")
    cached_downloads: list[str] = field(default_factory=list)  # ADD sources of cached steps: digest not known
    secret_ids: list[str] = field(default_factory=list)
    ssh_ids: list[str] = field(default_factory=list)
    network: bool = False  # a RUN step ran (or was taken from the cache) with network access

    def image(self, reference: str, platform: str, manifest_digest: str) -> None:
        self.images[image_purl(reference, platform)] = (reference, manifest_digest)


def _digest_map(text: str) -> dict[str, str]:
    algorithm, sep, value = text.partition(":")
    return {algorithm: value} if sep and value else {}


def git_checkout(directory: Path) -> tuple[str, str] | None:
    """(remote URL without credentials, commit) of the git checkout ``directory`` is in, if it is one."""
    git = shutil.which("git")
    if git is None or not directory.is_dir():
        return None

    def ask(*args: str) -> str:
        proc = subprocess.run([git, "-C", str(directory), *args], capture_output=True, text=True, timeout=30,
                              check=False, env={"GIT_TERMINAL_PROMPT": "0", "PATH": "/usr/bin:/bin"})
        return proc.stdout.strip() if proc.returncode == 0 else ""

    commit = ask("rev-parse", "--verify", "-q", "HEAD")
    if len(commit) not in (40, 64):
        return None
    return redact_url(ask("config", "--get", "remote.origin.url")), commit


def _vcs(options: BuildOptions) -> dict[str, str]:
    if options.ci_vcs:
        return dict(options.ci_vcs)
    checkout = git_checkout(options.context)
    if checkout is None:
        return {}
    source, revision = checkout
    return {"source": source, "revision": revision} if source else {"revision": revision}


def _context_material(options: BuildOptions) -> Material | None:
    """The context as a material: a fetched one (git, URL) by its location and commit, a local git checkout by its
    remote and commit (what BuildKit records as ``vcs`` only, but a real input of the build)."""
    checkout = git_checkout(options.context)
    digest = {"sha1" if len(checkout[1]) == 40 else "sha256": checkout[1]} if checkout else {}
    if options.context_source:
        return Material(redact_url(options.context_source), digest)
    if checkout and checkout[0]:
        return Material(checkout[0], digest)
    return None


def _steps(steps: Sequence[StepResult]) -> list[dict[str, Any]]:
    return [{"stage": s.stage, "index": s.index, "instruction": s.text, "cached": s.cached,
             **({"layerSize": s.layer_size} if s.layer_size is not None else {})} for s in steps]


def build_time(epoch: int | None) -> datetime:
    """When attestations say things happened: SOURCE_DATE_EPOCH when set (reproducible), else now."""
    return datetime.fromtimestamp(epoch, UTC) if epoch is not None else datetime.now(UTC)


def _timestamps(options: BuildOptions, facts: BuildFacts, image_digest: str) -> tuple[datetime, datetime, str]:
    """Start, end and invocation id; with SOURCE_DATE_EPOCH all three come from the inputs, so the same build
    gives the same attestations (and index digest) again."""
    if options.source_date_epoch is not None:
        when = build_time(options.source_date_epoch)
        seed = f"{image_digest}|{options.ci_builder_id}"
        return when, when, hashlib.sha256(seed.encode()).hexdigest()[:25]
    return facts.started, datetime.now(UTC), hashlib.sha256(f"{facts.started.isoformat()}|{image_digest}".encode()
                                                             ).hexdigest()[:25]


def provenance_record(options: BuildOptions, facts: BuildFacts, image_digest: str, platform: str,
                      steps: Sequence[StepResult]) -> BuildRecord:
    started, finished, invocation = _timestamps(options, facts, image_digest)
    materials = [Material(purl, _digest_map(digest)) for purl, (_, digest) in sorted(facts.images.items())]
    materials += [Material(redact_url(uri), _digest_map(digest)) for uri, digest in facts.downloads]
    materials += [Material(redact_url(uri), {}) for uri in facts.cached_downloads]
    dockerfile = ""
    if options.provenance_mode == "max":
        try:
            dockerfile = options.dockerfile.read_text(errors="replace") if options.dockerfile else ""
        except OSError:
            dockerfile = ""
    try:
        shown = str(options.dockerfile.relative_to(options.context)) if options.dockerfile else "Dockerfile"
    except ValueError:
        shown = options.dockerfile.name if options.dockerfile else "Dockerfile"
    secret_values = []
    for _, kind, where in options.secrets:
        if kind == "env" and options.secret_environ is not None and options.secret_environ.get(where):
            secret_values.append(options.secret_environ[where])
    return BuildRecord(
        lamina_version=lamina.__version__, dockerfile_path=shown, platform=platform,
        builder_platform=str(Platform.host()), started=started, finished=finished, invocation_id=invocation,
        materials=materials, target=options.target, build_args=options.build_arg_map, labels=dict(options.labels),
        secret_values=secret_values, secret_ids=sorted(set(facts.secret_ids)), ssh_ids=sorted(set(facts.ssh_ids)),
        context_source=_context_material(options), local_context=options.context_source is None,
        builder_id=options.ci_builder_id, vcs=_vcs(options), ci=dict(options.ci_facts),
        reproducible=options.source_date_epoch is not None, network=facts.network, dockerfile=dockerfile,
        steps=_steps(steps) if options.provenance_mode == "max" else (),
        incomplete=bool(facts.cached_downloads))


def make_attestations(options: BuildOptions, facts: BuildFacts, image: ImageBlobs, names: Sequence[str],
                      steps: Sequence[StepResult], sboms: Sequence[Mapping[str, Any]] = ()) -> Attestations | None:
    """The attestation manifest of ``image`` (None when neither provenance nor an SBOM is asked for): provenance,
    then the image's SBOM and those of the stages and context BuildKit's scan arguments ask for."""
    if options.provenance_mode is None and not sboms:
        return None
    platform_json = platform_of(image.config)
    platform = "/".join(v for v in (platform_json["os"], platform_json["architecture"], platform_json.get("variant"))
                        if v)
    subjects = subjects_for(names, platform, image.manifest_digest)
    statements = []
    if options.provenance_mode is not None:
        record = provenance_record(options, facts, image.manifest_digest, platform, steps)
        if options.provenance_version == "v0.2":
            statements.append(statement(SLSA_V02, slsa_v02(record, options.provenance_mode), subjects))
        else:
            statements.append(statement(SLSA_V1, slsa_v1(record, options.provenance_mode), subjects))
    for sbom in sboms:
        statements.append(statement(SPDX_DOCUMENT, sbom, subjects))
    descriptor = Descriptor(OCI_MANIFEST, image.manifest_digest, len(image.manifest))
    return attestation_manifest(descriptor, statements)


SBOM_SCANNER = "lamina-sbom-1"  # part of the cache key: a new scanner rescans what an older one described


def sbom_key(diff_ids: Sequence[str]) -> str:
    """The cache key of the SBOM of a filesystem: its layers' diff_ids (the uncompressed content) and the scanner."""
    return hashlib.sha256("\n".join([SBOM_SCANNER, *diff_ids]).encode()).hexdigest()


def scan_layers(layers: Sequence[Path], *, name: str, key: str, created: datetime) -> dict[str, Any]:
    """The SPDX document of the filesystem ``layers`` make (read from the blobs, nothing unpacked)."""
    from lamina.attest.packages import excerpt_for_sbom, wanted_for_sbom
    from lamina.rootfs.image_files import final_files  # imported when asked for: lamina's start stays quick

    return _document(final_files(layers, wanted_for_sbom, excerpt=excerpt_for_sbom), name=name, key=key,
                     created=created)


def _document(files: Mapping[str, bytes], *, name: str, key: str | None, created: datetime) -> dict[str, Any]:
    """The SPDX document of the packages ``files`` describe; its namespace ends with ``key`` (by default, a
    digest of the packages found)."""
    from lamina.attest.packages import find_packages
    from lamina.attest.spdx import spdx_document

    packages = find_packages(files)
    key = key or hashlib.sha256("\n".join(p.purl for p in packages).encode()).hexdigest()
    return spdx_document(packages, name=name, namespace=f"https://lamina.dev/spdx/{name}/{key}",
                         created=created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                         creator_tool=f"lamina-{lamina.__version__}")


SCAN_STAGE = "BUILDKIT_SBOM_SCAN_STAGE"
SCAN_CONTEXT = "BUILDKIT_SBOM_SCAN_CONTEXT"


def scan_enabled(name: str, stage_name: str, meta: Mapping[str, str | None], stage_args: Mapping[str, str]) -> bool:
    """BuildKit's ``BUILDKIT_SBOM_SCAN_STAGE`` / ``BUILDKIT_SBOM_SCAN_CONTEXT`` for one stage: a global meta argument
    applies to every stage, an ``ARG`` of the stage (with its build-arg override) decides for it; a value is true,
    false, or a comma-separated list of stage names. Pure."""
    def enabled(value: str) -> bool:
        lowered = value.strip().lower()
        if lowered in ("1", "t", "true"):
            return True
        if lowered in ("0", "f", "false", ""):
            return False
        return stage_name in [part.strip() for part in value.split(",")]

    result = False
    if meta.get(name) is not None:
        result = enabled(str(meta[name]))
    if name in stage_args:
        result = enabled(stage_args[name])
    return result


def scan_directory(root: Path, *, name: str, created: datetime) -> dict[str, Any]:
    """The SPDX document of the packages a directory holds (the build context, for BUILDKIT_SBOM_SCAN_CONTEXT)."""
    from lamina.attest.packages import excerpt_for_sbom, wanted_for_sbom
    from lamina.rootfs.image_files import files_in_tree

    return _document(files_in_tree(root, wanted_for_sbom, excerpt=excerpt_for_sbom), name=name, key=None,
                     created=created)
