"""The pure parts of provenance: --provenance values as buildx reads them, image purls as BuildKit writes them,
what min and max record of the build arguments, URLs without credentials, and the CI run from its environment."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from packageurl import PackageURL

from lamina.attest.ci_run import ci_run
from lamina.attest.provenance import (
    BuildRecord,
    Material,
    image_purl,
    parse_mode,
    redact_url,
    request_args,
    slsa_v02,
    slsa_v1,
    statement,
    subjects_for,
)


@pytest.mark.parametrize("text, expected", [
    ("", ("min", "v1")), ("true", ("min", "v1")), ("1", ("min", "v1")), ("false", (None, "v1")),
    ("mode=max", ("max", "v1")), ("max", ("max", "v1")), ("mode=full", ("max", "v1")),
    ("mode=min,version=v0.2", ("min", "v0.2")), ("mode=max,builder-id=x,reproducible=true", ("max", "v1")),
])
def test_provenance_values(text: str, expected: tuple[str | None, str]) -> None:
    assert parse_mode(text) == expected


@pytest.mark.parametrize("text", ["mode=all", "version=v3", "sbom=true"])
def test_bad_provenance_values(text: str) -> None:
    with pytest.raises(ValueError, match="mode=min or mode=max"):
        parse_mode(text)


@pytest.mark.parametrize("name, namespace, short, version, qualifiers", [
    ("alpine", None, "alpine", "latest", {}),
    ("docker.io/library/alpine:3.19", None, "alpine", "3.19", {}),
    ("user/app:1", "user", "app", "1", {}),
    ("ghcr.io/o/r/app:v2", "ghcr.io/o/r", "app", "v2", {}),
    ("localhost:5000/app@sha256:" + "a" * 64, "localhost:5000", "app", None, {"digest": "sha256:" + "a" * 64}),
])
def test_image_purls(name: str, namespace: str | None, short: str, version: str | None,
                     qualifiers: dict[str, str]) -> None:
    purl = PackageURL.from_string(image_purl(name, "linux/arm64"))
    assert (purl.type, purl.namespace, purl.name, purl.version) == ("docker", namespace, short, version)
    assert purl.qualifiers == {**qualifiers, "platform": "linux/arm64"}


BASE = BuildRecord(
    lamina_version="0.1.0", dockerfile_path="Dockerfile", platform="linux/amd64", builder_platform="linux/amd64",
    started=datetime(2026, 1, 1, tzinfo=UTC), finished=datetime(2026, 1, 1, 0, 1, tzinfo=UTC), invocation_id="abc",
    materials=[Material("pkg:docker/alpine@3?platform=linux%2Famd64", {"sha256": "1" * 64})], target="final",
    build_args={"VERSION": "1.2", "GITHUB_TOKEN": "ghp_x", "DSN": "postgres://u:hunter22@db"},
    labels={"team": "core"}, secret_values=["hunter22"])


def record(*, local_context: bool = True, network: bool = True) -> BuildRecord:
    return replace(BASE, local_context=local_context, network=network)


def test_min_leaves_out_arguments_and_labels_max_leaves_out_secret_ones() -> None:
    assert request_args(record(), "min") == ({"target": "final"}, ["DSN", "GITHUB_TOKEN"])
    args, redacted = request_args(record(), "max")
    assert args == {"target": "final", "build-arg:VERSION": "1.2", "label:team": "core"}
    assert redacted == ["DSN", "GITHUB_TOKEN"]


def test_predicates_hold_the_materials_and_no_secret() -> None:
    for predicate in (slsa_v1(record(), "max"), slsa_v02(record(), "max")):
        text = str(predicate)
        assert "hunter22" not in text and "ghp_x" not in text
        assert "pkg:docker/alpine@3?platform=linux%2Famd64" in text
    v1 = slsa_v1(record(local_context=False, network=False), "min")
    assert v1["runDetails"]["metadata"]["buildkit_hermetic"] is True
    assert v1["runDetails"]["metadata"]["startedOn"] == "2026-01-01T00:00:00.000000Z"
    assert slsa_v1(record(), "min")["runDetails"]["metadata"]["buildkit_completeness"] == {
        "request": False, "resolvedDependencies": False}  # a local context: not every input is tracked


def test_statement_subjects() -> None:
    subjects = subjects_for(["reg.example/app:1", "reg.example/app:latest"], "linux/amd64", "sha256:" + "b" * 64)
    made = statement("https://slsa.dev/provenance/v1", {"x": 1}, subjects)
    assert [s["digest"] for s in made["subject"]] == [{"sha256": "b" * 64}] * 2
    assert subjects_for([], "linux/amd64", "sha256:" + "b" * 64) == [("_", "sha256:" + "b" * 64)]


@pytest.mark.parametrize("url, shown", [
    ("https://user:pw@git.example/a.git", "https://git.example/a.git"),
    ("https://bucket.example/c.tar.gz?X-Amz-Signature=abc", "https://bucket.example/c.tar.gz"),
    ("git@github.com:o/r.git", "git@github.com:o/r.git"),
    ("https://host:8443/x#main", "https://host:8443/x#main"),
])
def test_urls_lose_their_credentials(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_ci_runs() -> None:
    github = ci_run({"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "o/r", "GITHUB_RUN_ID": "9", "GITHUB_RUN_ATTEMPT": "1",
                     "GITHUB_SHA": "c" * 40, "GITHUB_WORKFLOW": "ci"})
    assert github.builder_id == "https://github.com/o/r/actions/runs/9/attempts/1"
    assert github.vcs == {"source": "https://github.com/o/r", "revision": "c" * 40}
    assert github.facts["workflow"] == "ci" and github.facts["system"] == "github-actions"
    gitlab = ci_run({"GITLAB_CI": "true", "CI_JOB_URL": "https://gl/p/-/jobs/1", "CI_PROJECT_URL": "https://gl/p"})
    assert gitlab.builder_id == "https://gl/p/-/jobs/1" and gitlab.vcs == {"source": "https://gl/p"}
    assert ci_run({}).builder_id == "" and not ci_run({}).facts


@pytest.mark.parametrize("meta, stage_args, stage, enabled", [
    ({}, {}, "build", False),
    ({"BUILDKIT_SBOM_SCAN_STAGE": "true"}, {}, "build", True),  # a global meta argument: every stage
    ({"BUILDKIT_SBOM_SCAN_STAGE": "true"}, {"BUILDKIT_SBOM_SCAN_STAGE": "false"}, "build", False),  # the stage's wins
    ({}, {"BUILDKIT_SBOM_SCAN_STAGE": "build,test"}, "test", True),
    ({}, {"BUILDKIT_SBOM_SCAN_STAGE": "build,test"}, "other", False),
    ({"BUILDKIT_SBOM_SCAN_STAGE": None}, {}, "build", False),  # declared without a value
])
def test_buildkit_s_scan_arguments(meta: dict[str, str | None], stage_args: dict[str, str], stage: str,
                                   enabled: bool) -> None:
    from lamina.build.attestations import SCAN_STAGE, scan_enabled

    assert scan_enabled(SCAN_STAGE, stage, meta, stage_args) is enabled
