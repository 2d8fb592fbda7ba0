"""SLSA provenance of a build, as BuildKit writes it (pure: a ``BuildRecord`` in, predicates and statements out).

Two predicate versions, both in an in-toto Statement v1 (``https://in-toto.io/Statement/v1``):

* SLSA v1 (``https://slsa.dev/provenance/v1``, BuildKit's default): ``buildDefinition`` with BuildKit's build type
  URI (so tools reading BuildKit's provenance read lamina's), ``externalParameters`` (``configSource`` with the
  Dockerfile path, and the repository and commit for a git context; ``request`` with the frontend, the arguments
  as BuildKit names them — ``build-arg:NAME``, ``label:KEY``, ``target`` — and the local sources),
  ``internalParameters`` (the builder's platform; in ``max`` mode the Dockerfile and the build steps) and
  ``resolvedDependencies`` (every image by its digest, as a ``pkg:docker`` purl; git repositories by commit; ADD
  URLs by the sha256 of what was downloaded); ``runDetails`` with the builder id (the CI run's URL), the invocation
  id, start and end times, the version control hint (``vcs``) and completeness flags.
* SLSA v0.2 (``https://slsa.dev/provenance/v0.2``): the same facts in v0.2's shape (``builder``, ``buildType``,
  ``invocation``, ``materials``, ``metadata``).

``min`` mode leaves out build arguments and labels (their values may be private) and secret ids, as BuildKit;
``max`` adds them, except build arguments whose name looks like a credential or whose value is a secret's value,
which are never recorded in either mode (listed by name only, in ``lamina_redacted``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

STATEMENT_V1 = "https://in-toto.io/Statement/v1"
SLSA_V1 = "https://slsa.dev/provenance/v1"
SLSA_V02 = "https://slsa.dev/provenance/v0.2"
BUILD_TYPE_V1 = "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md"
BUILD_TYPE_V02 = "https://mobyproject.org/buildkit@v1"
FRONTEND = "dockerfile.v0"
SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|PRIVATE|API_?KEY|ACCESS_?KEY|AUTH)", re.IGNORECASE)
MODES = ("min", "max")


@dataclass(frozen=True)
class Material:
    """Something the build read from outside: an image, a repository, a download."""

    uri: str
    digest: Mapping[str, str]  # algorithm → hex; empty when not known (a cached ADD of a URL without --checksum)


@dataclass(frozen=True)
class BuildRecord:
    """What the build did, as the executor saw it."""

    lamina_version: str
    dockerfile_path: str  # as given, relative to the context where it lies inside it
    platform: str  # of the image built
    builder_platform: str  # of the machine that built it
    started: datetime
    finished: datetime
    invocation_id: str
    materials: Sequence[Material] = ()
    target: str | None = None
    build_args: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    secret_values: Sequence[str] = ()  # never recorded: build arguments with these values are left out
    secret_ids: Sequence[str] = ()  # RUN --mount=type=secret ids (max mode)
    ssh_ids: Sequence[str] = ()  # RUN --mount=type=ssh ids (max mode)
    context_source: Material | None = None  # a git (or URL) context, or a local checkout: location and commit
    local_context: bool = True  # the context is a local directory (dependencies then not complete)
    builder_id: str = ""  # the CI run's URL
    vcs: Mapping[str, str] = field(default_factory=dict)  # source and revision hints (a git checkout, the CI's)
    ci: Mapping[str, str] = field(default_factory=dict)  # the CI run: system, workflow, run id, job URL, ref, commit
    reproducible: bool = False  # SOURCE_DATE_EPOCH was set
    network: bool = True  # a RUN step ran with network access
    dockerfile: str = ""  # its text (max mode)
    steps: Sequence[Mapping[str, Any]] = ()  # one per executed or cached step (max mode)
    incomplete: bool = False  # some material's digest is unknown


def redact_url(url: str) -> str:
    """A URL without its user information and query (credentials, pre-signed tokens)."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", parts.fragment))


def image_purl(name: str, platform: str | None) -> str:
    """``pkg:docker/NAMESPACE/NAME@TAG?platform=...`` as BuildKit writes an image reference (its RefToPURL):
    Docker Hub names in their familiar form, a digest reference as the ``digest`` qualifier."""
    from packageurl import PackageURL

    from lamina.oci.reference import Reference

    ref = Reference.parse(name)
    familiar = ref.name
    for prefix in ("docker.io/library/", "docker.io/"):
        if familiar.startswith(prefix):
            familiar = familiar[len(prefix):]
            break
    namespace, _, short = familiar.rpartition("/")
    qualifiers: dict[str, str] = {}
    if ref.digest:
        qualifiers["digest"] = ref.digest
    if platform:
        qualifiers["platform"] = platform
    version = ref.tag or (None if ref.digest else "latest")
    return str(PackageURL(type="docker", namespace=namespace or None, name=short, version=version,
                          qualifiers=qualifiers or None).to_string())


def _is_secret(name: str, value: str, secret_values: Sequence[str]) -> bool:
    return bool(SECRET_NAME.search(name)) or any(len(s) >= 4 and s in value for s in secret_values)


def request_args(record: BuildRecord, mode: str) -> tuple[dict[str, str], list[str]]:
    """BuildKit's ``request.args`` for ``mode``, and the build arguments left out because they look secret."""
    args: dict[str, str] = {}
    redacted: list[str] = []
    if record.target:
        args["target"] = record.target
    if mode == "max":
        for name, value in sorted(record.build_args.items()):
            if _is_secret(name, value, record.secret_values):
                redacted.append(name)
            else:
                args[f"build-arg:{name}"] = value
        for key, value in sorted(record.labels.items()):
            args[f"label:{key}"] = value
    else:
        redacted = sorted(n for n, v in record.build_args.items() if _is_secret(n, v, record.secret_values))
    return args, redacted


def _dependencies(record: BuildRecord) -> list[dict[str, Any]]:
    out = []
    seen = set()
    for material in [*([record.context_source] if record.context_source else []), *record.materials]:
        key = (material.uri, tuple(sorted(material.digest.items())))
        if key in seen:
            continue
        seen.add(key)
        entry: dict[str, Any] = {"uri": material.uri}
        if material.digest:
            entry["digest"] = dict(material.digest)
        out.append(entry)
    return out


def _time(value: datetime) -> str:
    """RFC 3339 in UTC, with fractions of a second, as BuildKit writes its timestamps."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _request(record: BuildRecord, mode: str) -> tuple[dict[str, Any], list[str]]:
    """BuildKit's request parameters (v1 ``externalParameters.request``, v0.2 ``invocation.parameters``), and the
    build arguments left out because they look secret."""
    args, redacted = request_args(record, mode)
    request: dict[str, Any] = {"frontend": FRONTEND}
    if args:
        request["args"] = args
    if mode == "max" and record.secret_ids:
        request["secrets"] = [{"id": s} for s in record.secret_ids]
    if mode == "max" and record.ssh_ids:
        request["ssh"] = [{"id": s} for s in record.ssh_ids]
    if record.local_context:
        request["locals"] = [{"name": "context"}, {"name": "dockerfile"}]
    return request, redacted


def slsa_v1(record: BuildRecord, mode: str) -> dict[str, Any]:
    """The SLSA v1 predicate."""
    request, redacted = _request(record, mode)
    config_source: dict[str, Any] = {"path": record.dockerfile_path}
    if record.context_source is not None and not record.local_context:
        config_source = {"uri": record.context_source.uri, **(
            {"digest": dict(record.context_source.digest)} if record.context_source.digest else {}),
            "path": record.dockerfile_path}
    internal: dict[str, Any] = {"builderPlatform": record.builder_platform}
    if mode == "max":
        internal["buildConfig"] = {"steps": list(record.steps)}
        if record.dockerfile:
            internal["dockerfile"] = record.dockerfile
    metadata: dict[str, Any] = {
        "invocationId": record.invocation_id,
        "startedOn": _time(record.started),
        "finishedOn": _time(record.finished),
        "buildkit_completeness": {"request": mode == "max",
                                  "resolvedDependencies": not record.local_context and not record.incomplete},
        "buildkit_metadata": {"vcs": dict(record.vcs)} if record.vcs else {},
        "lamina_metadata": _lamina_metadata(record, redacted),
    }
    if record.reproducible:
        metadata["buildkit_reproducible"] = True
    if not record.network and not record.local_context and not record.incomplete:
        metadata["buildkit_hermetic"] = True
    return {
        "buildDefinition": {
            "buildType": BUILD_TYPE_V1,
            "externalParameters": {"configSource": config_source, "request": request},
            "internalParameters": internal,
            "resolvedDependencies": _dependencies(record),
        },
        "runDetails": {"builder": {"id": record.builder_id}, "metadata": metadata},
    }


def _lamina_metadata(record: BuildRecord, redacted: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"version": record.lamina_version, "platform": record.platform}
    if record.ci:
        out["ci"] = dict(record.ci)
    if redacted:
        out["redacted_build_args"] = redacted
    return out


def slsa_v02(record: BuildRecord, mode: str) -> dict[str, Any]:
    """The SLSA v0.2 predicate."""
    parameters, redacted = _request(record, mode)
    config_source: dict[str, Any] = {"entryPoint": record.dockerfile_path}
    if record.context_source is not None and not record.local_context:
        config_source["uri"] = record.context_source.uri
        if record.context_source.digest:
            config_source["digest"] = dict(record.context_source.digest)
    predicate: dict[str, Any] = {
        "builder": {"id": record.builder_id},
        "buildType": BUILD_TYPE_V02,
        "materials": _dependencies(record),
        "invocation": {"configSource": config_source, "parameters": parameters,
                       "environment": {"platform": record.builder_platform}},
        "metadata": {
            "buildInvocationID": record.invocation_id,
            "buildStartedOn": _time(record.started),
            "buildFinishedOn": _time(record.finished),
            "reproducible": record.reproducible,
            "completeness": {"parameters": mode == "max", "environment": True,
                             "materials": not record.local_context and not record.incomplete},
            "https://mobyproject.org/buildkit@v1#metadata": {"vcs": dict(record.vcs)} if record.vcs else {},
            "https://lamina.dev/provenance#metadata": _lamina_metadata(record, redacted),
        },
    }
    if mode == "max":
        predicate["buildConfig"] = {"steps": list(record.steps)}
    return predicate


def statement(predicate_type: str, predicate: Mapping[str, Any], subjects: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """An in-toto Statement v1 about ``subjects`` (name, sha256 digest); ``_`` names a subject without a name."""
    return {
        "_type": STATEMENT_V1,
        "subject": [{"name": name or "_", "digest": {"sha256": digest.removeprefix("sha256:")}}
                    for name, digest in subjects],
        "predicateType": predicate_type,
        "predicate": dict(predicate),
    }


def subjects_for(names: Sequence[str], platform: str, manifest_digest: str) -> list[tuple[str, str]]:
    """BuildKit's subjects: one per image name (a purl with the platform), all with the image manifest's digest."""
    return [(image_purl(name, platform), manifest_digest) for name in names] or [("_", manifest_digest)]


def parse_mode(text: str) -> tuple[str | None, str]:
    """``--provenance`` as buildx takes it: ``false``/``0`` (off), ``true``/``1``/``mode=min|max``, plus
    ``version=v0.2|v1``. Returns (mode or None when off, SLSA version)."""
    value = text.strip().lower()
    if value in ("false", "0", "no", "off"):
        return None, "v1"
    if value in ("", "true", "1", "yes", "on"):
        return "min", "v1"
    mode, version = "min", "v1"
    for item in value.split(","):
        key, eq, val = item.partition("=")
        key, val = key.strip(), val.strip()
        if not eq and key in MODES:
            mode = key
        elif key == "mode" and val in (*MODES, "full"):
            mode = "max" if val == "full" else val
        elif key == "version" and val in ("v1", "v0.2", "1", "0.2"):
            version = "v1" if val in ("v1", "1") else "v0.2"
        elif key in ("builder-id", "reproducible", "inline-only", "filename"):
            continue  # accepted as buildx does; the builder id comes from the CI run
        else:
            raise ValueError(f"{text!r}: expected false, true, mode=min or mode=max (and version=v0.2|v1)")
    return mode, version
