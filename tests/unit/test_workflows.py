"""The repository's CI files, checked against SchemaStore's schemas (as vendored by check-jsonschema) and for what
the release has to do: build lamina's image with lamina on native runners, push by digest, join, move the tags."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import check_jsonschema
import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = Path(check_jsonschema.__file__).parent / "builtin_schemas" / "vendor"
WORKFLOWS = sorted([*(ROOT / ".github" / "workflows").glob("*.yml"), *(ROOT / "examples" / "github").glob("*.yml")])
GITLAB_FILES = [ROOT / ".gitlab-ci.yml", ROOT / ".gitlab-ci-template.yml", ROOT / "templates" / "build.yml"]
IMAGE = "ghcr.io/lamina-build/lamina"


def schema_errors(name: str, document: object) -> list[str]:
    schema = json.loads((SCHEMAS / f"{name}.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in validator.iter_errors(document)]


class CoreLoader(yaml.SafeLoader):
    """YAML 1.2's core schema, as the runners read workflows: only true/false are booleans (``on:`` is a key)."""


CoreLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
CoreLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                 list("tTfF"))


def load(path: Path) -> Any:
    return yaml.load(path.read_text(), Loader=CoreLoader)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: str(p.relative_to(ROOT)))
def test_workflows_match_the_github_workflow_schema(path: Path) -> None:
    assert schema_errors("github-workflows", load(path)) == []


def test_action_matches_the_github_action_schema() -> None:
    assert schema_errors("github-actions", load(ROOT / "action.yml")) == []


@pytest.mark.parametrize("path", GITLAB_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_gitlab_files_match_the_gitlab_ci_schema(path: Path) -> None:
    for document in yaml.load_all(path.read_text(), Loader=CoreLoader):
        assert schema_errors("gitlab-ci", document) == []


def test_a_schema_error_is_reported() -> None:  # the check can fail: a job without runs-on or steps
    assert schema_errors("github-workflows", {"on": "push", "jobs": {"build": {"steps": "no"}}})


def test_the_action_runs_the_prebuilt_image_the_release_publishes() -> None:
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    assert action["runs"] == {"using": "docker", "image": f"docker://{IMAGE}:v1"}
    release = load(ROOT / ".github" / "workflows" / "release.yml")
    assert release["env"]["IMAGE"] == "ghcr.io/${{ github.repository_owner }}/lamina"
    assert release["on"]["push"]["tags"] == ["v[0-9]+.[0-9]+.[0-9]+"]


def test_the_release_builds_with_lamina_on_native_runners_and_joins_by_digest() -> None:
    release = load(ROOT / ".github" / "workflows" / "release.yml")
    image = release["jobs"]["image"]
    assert {(entry["platform"], entry["runner"]) for entry in image["strategy"]["matrix"]["include"]} == {
        ("linux/amd64", "ubuntu-24.04"), ("linux/arm64", "ubuntu-24.04-arm")}
    build = "\n".join(step.get("run", "") for step in image["steps"])
    assert "bin/pip\" install --quiet ." in build
    assert "/lamina/bin/lamina\" build" in build and "--push-by-digest" in build and "--digest-file" in build
    publish = release["jobs"]["publish"]
    assert publish["needs"] == "image" and publish["permissions"]["contents"] == "write"
    script = "\n".join(step.get("run", "") for step in publish["steps"])
    assert 'lamina manifest create --destination "$image:$tag"' in script
    assert '"$version" "v${version%%.*}" latest' in script
    assert 'git push --force origin "refs/tags/$major"' in script


def test_ci_runs_what_ci_runs() -> None:
    ci = load(ROOT / ".github" / "workflows" / "ci.yml")
    assert set(ci["on"]) == {"push", "pull_request"}
    steps = ci["jobs"]["test"]["steps"]
    assert steps[-1]["run"] == "CI=true .ci/run"
    gitlab = load(ROOT / ".gitlab-ci.yml")
    assert "CI=true .ci/run" in gitlab["test"]["script"]
    assert {entry["PLATFORM"] for entry in gitlab["platform-image"]["parallel"]["matrix"]} == {"linux/amd64", "linux/arm64"}
    assert gitlab["catalog-release"]["release"]["tag_name"] == "$CI_COMMIT_TAG"
