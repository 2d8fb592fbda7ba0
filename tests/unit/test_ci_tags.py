"""metadata-action's tag rules, on the events metadata-action's README tabulates."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lamina.ci.tags import Event, Flavor, expand_tags, lower_image, parse_flavor, parse_rule, parse_rules
from lamina.errors import OptionsError

NOW = datetime(2024, 3, 5, 6, 7, 8, tzinfo=UTC)
SHA = "860c1904a1ce19322e91ac35af1ab07466440c37"
RULES = ["type=schedule", "type=ref,event=branch", "type=ref,event=tag", "type=ref,event=pr",
         "type=semver,pattern={{version}}", "type=semver,pattern={{major}}.{{minor}}", "type=sha"]


def tags(event: Event, rules: list[str] | None = None, flavor: list[str] | None = None,
         images: tuple[str, ...] = ("name/app",)) -> list[str]:
    return expand_tags(list(images), parse_rules(rules or []), parse_flavor(flavor or []), event, NOW)


def test_default_rules_branch_tag_pr_schedule() -> None:
    assert tags(Event("push", "refs/heads/master", SHA)) == ["name/app:master"]
    assert tags(Event("push", "refs/heads/my/branch", SHA)) == ["name/app:my-branch"]
    assert tags(Event("push", "refs/tags/v1.2.3", SHA)) == ["name/app:v1.2.3", "name/app:latest"]
    assert tags(Event("pull_request", "refs/pull/2/merge", SHA)) == ["name/app:pr-2"]
    # as metadata-action's code does: the schedule rule comes first (priority 1000), the branch rule still applies
    assert tags(Event("schedule", "refs/heads/master", SHA)) == ["name/app:nightly", "name/app:master"]


def test_semver_and_sha_rules() -> None:
    assert tags(Event("push", "refs/tags/v1.2.3", SHA), RULES) == [
        "name/app:1.2.3", "name/app:1.2", "name/app:v1.2.3", "name/app:sha-860c190", "name/app:latest"]
    # a pre-release: only {{version}}, and no latest
    assert tags(Event("push", "refs/tags/v2.0.8-beta.67", SHA), RULES) == [
        "name/app:2.0.8-beta.67", "name/app:v2.0.8-beta.67", "name/app:sha-860c190"]
    assert tags(Event("push", "refs/heads/main", SHA), RULES) == ["name/app:main", "name/app:sha-860c190"]
    assert tags(Event("push", "refs/heads/main", SHA), ["type=sha,format=long,prefix="]) == [f"name/app:{SHA}"]


def test_pull_request_number_from_the_payload() -> None:
    event = Event("pull_request_target", "refs/heads/main", SHA, {"number": 5})
    assert tags(event, ["type=ref,event=pr"]) == ["name/app:pr-5"]


def test_latest_flavor() -> None:
    branch = Event("push", "refs/heads/main", SHA)
    assert tags(branch, ["type=ref,event=branch"], ["latest=true"]) == ["name/app:main", "name/app:latest"]
    assert tags(Event("push", "refs/tags/v1.0.0", SHA), ["type=ref,event=tag"], ["latest=false"]) == \
        ["name/app:v1.0.0"]
    assert tags(branch, ["type=ref,event=branch"], ["prefix=foo-,onlatest=true", "latest=true"]) == \
        ["name/app:foo-main", "name/app:foo-latest"]
    assert tags(branch, ["type=ref,event=branch"], ["suffix=-slim"]) == ["name/app:main-slim"]


def test_raw_enable_and_expressions() -> None:
    payload = {"repository": {"default_branch": "main"}}
    rules = ["type=raw,value=stable,enable={{is_default_branch}}", "type=raw,value={{branch}}-{{date 'YYYYMMDD'}}"]
    assert tags(Event("push", "refs/heads/main", SHA, payload), rules) == [
        "name/app:stable", "name/app:main-20240305"]
    assert tags(Event("push", "refs/heads/dev", SHA, payload), rules) == ["name/app:dev-20240305"]
    assert tags(Event("schedule", "refs/heads/main", SHA), ["type=schedule,pattern={{date 'YYYY.MM.DD'}}"]) == \
        ["name/app:2024.03.05"]
    assert tags(Event("push", "refs/heads/main", SHA, payload), ["type=edge"]) == ["name/app:edge"]


def test_images_lower_cased_and_each_expanded() -> None:
    got = tags(Event("push", "refs/heads/main", SHA), ["type=ref,event=branch"],
               images=("ghcr.io/Owner/App", "docker.io/owner/app"))
    assert got == ["ghcr.io/owner/app:main", "docker.io/owner/app:main"]
    assert lower_image("Registry:5000/Owner/App:Tag") == "registry:5000/owner/app:Tag"
    assert lower_image("Owner/App@sha256:AB") == "owner/app@sha256:AB"


def test_no_tag_when_no_rule_matches() -> None:
    assert tags(Event("push", "refs/heads/main", SHA), ["type=ref,event=tag"]) == []


def test_bad_rules_and_flavors() -> None:
    for bad in ("type=nope", "type=semver", "type=ref", "type=ref,event=push", "type=sha,format=medium",
                "type=raw,priority=high"):
        with pytest.raises(OptionsError):
            parse_rule(bad)
    with pytest.raises(OptionsError):
        parse_flavor(["latest=maybe"])
    with pytest.raises(OptionsError):
        parse_flavor(["what=ever"])
    assert parse_flavor([]) == Flavor()
    assert parse_rule("foo").attrs["value"] == "foo"
