"""The GitHub Action's environment → options mapping, with plain dicts as the runner would set them."""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from lamina.ci import github
from lamina.ci.credentials import DOCKER_HUB_KEY, write_docker_config
from lamina.errors import OptionsError

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2024, 3, 5, tzinfo=UTC)
SHA = "860c1904a1ce19322e91ac35af1ab07466440c37"


def runner_env(**inputs: str) -> dict[str, str]:
    """The runner's variables for a push to main, plus INPUT_<NAME> (hyphens kept) for each input."""
    env = {"GITHUB_EVENT_NAME": "push", "GITHUB_REF": "refs/heads/main", "GITHUB_SHA": SHA,
           "GITHUB_REPOSITORY": "Owner/Repo", "GITHUB_ACTOR": "octocat", "HOME": "/github/home"}
    for name, value in inputs.items():
        env["INPUT_" + name.replace("_", "-").upper()] = value
    return env


def plan(**inputs: str) -> github.ActionPlan:
    return github.plan_from_environ(runner_env(**inputs), now=NOW)


def test_action_yml_declares_every_input_and_output() -> None:
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    assert action["runs"]["using"] == "docker"  # the image: tests/unit/test_workflows.py
    assert action["branding"]["icon"] and action["branding"]["color"]
    assert set(action["inputs"]) == set(github.INPUTS)
    for name, spec in action["inputs"].items():
        assert spec.get("description"), name
    assert action["inputs"]["context"]["default"] == "."
    assert action["inputs"]["push"]["default"] == "false"
    assert action["inputs"]["github-token"]["default"] == "${{ github.token }}"
    assert set(action["outputs"]) == {"digest", "imageid", "tags", "metadata"}


def test_examples_use_the_action() -> None:
    for path in sorted((ROOT / "examples" / "github").glob("*.yml")):
        workflow = yaml.safe_load(path.read_text())
        steps = [s for job in workflow["jobs"].values() for s in job["steps"]]
        assert any(s.get("uses") in ("./", "docker://ghcr.io/lamina-build/lamina:v1") for s in steps), path
        for step in steps:
            if step.get("uses") == "./":
                assert set(step["with"]) <= set(github.INPUTS), path


def test_inputs_keep_hyphens_and_defaults() -> None:
    p = plan()
    assert p.options.context == Path(".")
    assert p.options.dockerfile == Path("Dockerfile")
    assert p.options.no_push and not p.push and p.tags == ()
    assert not p.options.cache and not p.options.dry_run
    env = runner_env()
    env["INPUT_BUILD-ARGS"] = "A=1"
    assert github.plan_from_environ(env).options.build_args == (("A", "1"),)


def test_every_input() -> None:
    p = plan(context="app", file="app/Containerfile", push="true", tags="reg.example/Team/App:1,reg.example/team/app:2",
             build_args="A=1\nB=x,y\n# comment\nHOME", target="final", secrets="token=abc\nother=d=e",
             secret_files="npmrc=/run/npmrc", cache="true", cache_repo="reg.example/Team/cache", cache_ttl="2d",
             registry_mirror="mirror.example, mirror2.example", insecure_registry="reg.example\nlocal:5000",
             platform="linux/arm64", tar_path="out/image.tar", oci_layout_path="out/layout",
             labels="org.example.a=1\norg.example.b=two words")
    o = p.options
    assert o.context == Path("app") and o.dockerfile == Path("app/Containerfile")
    assert p.push and not o.no_push
    assert p.tags == o.destinations == ("reg.example/team/app:1", "reg.example/team/app:2")
    assert o.build_args == (("A", "1"), ("B", "x,y"), ("HOME", "/github/home"))
    assert o.target == "final"
    assert o.secrets[:2] == (("token", "env", "LAMINA_GITHUB_SECRET_0"), ("other", "env", "LAMINA_GITHUB_SECRET_1"))
    assert o.secrets[2] == ("npmrc", "file", "/run/npmrc")
    assert o.secret_environ is not None and o.secret_environ["LAMINA_GITHUB_SECRET_1"] == "d=e"
    assert o.cache and o.cache_repo == "reg.example/team/cache" and o.cache_ttl_seconds == 2 * 86400
    assert o.registry_mirrors == ("mirror.example", "mirror2.example")
    assert o.insecure_registries == frozenset({"reg.example", "local:5000"})
    assert o.platform == "linux/arm64"
    assert o.tar_path == Path("out/image.tar") and o.oci_layout_path == Path("out/layout")
    assert o.labels == (("org.example.a", "1"), ("org.example.b", "two words"))  # --label, as every entry point


def test_no_cache_and_dry_run() -> None:
    p = plan(cache="true", no_cache="true", dry_run="true")
    assert not p.options.cache and p.options.dry_run
    assert any("no-cache" in note for note in p.notes)


def test_source_date_epoch_sets_the_epoch() -> None:
    """build-push-action users set SOURCE_DATE_EPOCH in the step's env for reproducible digests (issue 12)."""
    env = runner_env(tags="ghcr.io/owner/repo:1")
    assert github.plan_from_environ(env, now=NOW).options.source_date_epoch is None
    env["SOURCE_DATE_EPOCH"] = "1700000000"
    assert github.plan_from_environ(env, now=NOW).options.source_date_epoch == 1700000000


def test_bad_inputs() -> None:
    for inputs in ({"push": "yes"}, {"push": "true"}, {"platform": "linux/amd64,linux/arm64"},
                   {"cache_ttl": "soon"}, {"tags": "type=ref,event=branch"}, {"build_args": "=x"},
                   {"secrets": "novalue"}, {"password": "p"}, {"context": "https://github.com/o/r.git"}):
        with pytest.raises(OptionsError):
            plan(**inputs)


@pytest.mark.parametrize(("event", "ref", "payload", "expected"), [
    ("push", "refs/heads/main", {}, ["ghcr.io/owner/repo:main", "ghcr.io/owner/repo:sha-860c190"]),
    ("push", "refs/tags/v1.2.3", {}, ["ghcr.io/owner/repo:1.2.3", "ghcr.io/owner/repo:sha-860c190",
                                      "ghcr.io/owner/repo:latest"]),
    ("pull_request", "refs/pull/5/merge", {"number": 5}, ["ghcr.io/owner/repo:pr-5",
                                                          "ghcr.io/owner/repo:sha-860c190"]),
    ("schedule", "refs/heads/main", {}, ["ghcr.io/owner/repo:nightly", "ghcr.io/owner/repo:main",
                                         "ghcr.io/owner/repo:sha-860c190"]),
])
def test_tag_rules_on_events(tmp_path: Path, event: str, ref: str, payload: dict[str, object],
                             expected: list[str]) -> None:
    event_path = tmp_path / "event.json"
    event_path.write_text(json.dumps(payload))
    env = runner_env(images="ghcr.io/Owner/Repo", tags="type=schedule\ntype=ref,event=branch\ntype=ref,event=pr\n"
                     "type=semver,pattern={{version}}\ntype=sha\nother.example/x/y:fixed")
    env.update(GITHUB_EVENT_NAME=event, GITHUB_REF=ref, GITHUB_EVENT_PATH=str(event_path))
    assert list(github.plan_from_environ(env, now=NOW).tags) == [*expected, "other.example/x/y:fixed"]


def test_default_rules_when_images_alone() -> None:
    assert plan(images="Owner/App").tags == ("owner/app:main",)


def test_act_does_not_push_unless_asked() -> None:
    env = runner_env(tags="reg.example/a/b:1")
    env["ACT"] = "true"
    p = github.plan_from_environ(env)
    assert not p.push and p.options.no_push
    assert any("act" in note for note in p.notes)
    env["INPUT_PUSH"] = "true"
    assert github.plan_from_environ(env).push


def test_logins_registry_and_ghcr_token() -> None:
    assert github.logins_from(runner_env(github_token="ghs_tok")) == {"ghcr.io": ("octocat", "ghs_tok")}
    assert github.logins_from(runner_env(username="u", password="p", github_token="t")) == {
        "docker.io": ("u", "p"), "ghcr.io": ("octocat", "t")}
    assert github.logins_from(runner_env(registry="ghcr.io", username="u", password="p", github_token="t")) == {
        "ghcr.io": ("u", "p")}
    assert github.logins_from(runner_env()) == {}


def test_docker_config_written_private(tmp_path: Path) -> None:
    base = {"auths": {"other.example": {"auth": "eA=="}}, "credHelpers": {"x.example": "helper"}}
    directory = write_docker_config(tmp_path / "cfg", {"docker.io": ("u", "p"), "reg:5000": ("a", "b")}, base)
    config = json.loads((directory / "config.json").read_text())
    assert config["credHelpers"] == {"x.example": "helper"}
    assert config["auths"]["other.example"] == {"auth": "eA=="}
    assert base64.b64decode(config["auths"][DOCKER_HUB_KEY]["auth"]) == b"u:p"
    assert base64.b64decode(config["auths"]["reg:5000"]["auth"]) == b"a:b"
    assert (directory / "config.json").stat().st_mode & 0o777 == 0o600
    assert directory.stat().st_mode & 0o777 == 0o700


def test_secrets_masked_first_and_redacted(tmp_path: Path) -> None:
    out = io.StringIO()
    env = runner_env(password="hunter22", username="u", github_token="ghs_token", secrets="api=sup3rsecret",
                     push="maybe")
    env["GITHUB_OUTPUT"] = str(tmp_path / "out")
    rc = github.main(env, stdout=out)
    assert rc == 2
    lines = out.getvalue().splitlines()
    masks = [line for line in lines if line.startswith("::add-mask::")]
    assert lines[:len(masks)] == masks
    assert {m.removeprefix("::add-mask::") for m in masks} == {"hunter22", "ghs_token", "sup3rsecret"}
    rest = "\n".join(lines[len(masks):])
    assert "::error title=lamina::input push" in rest
    for secret in ("hunter22", "ghs_token", "sup3rsecret"):
        assert secret not in rest
    log = github.Log(io.StringIO(), ["hunter22"])
    assert log.redact("password hunter22!") == "password ***!"


def test_output_format(tmp_path: Path) -> None:
    path = tmp_path / "output"
    path.write_text("")
    github.set_output({"GITHUB_OUTPUT": str(path)}, github.Log(io.StringIO()), "tags", "a:1\nb:2")
    text = path.read_text()
    first, *body = text.splitlines()
    name, _, delimiter = first.partition("<<")
    assert name == "tags" and delimiter.startswith("ghadelimiter_")
    assert body == ["a:1", "b:2", delimiter]


def test_progress_groups_stages_and_stops_commands() -> None:
    from lamina.progress import StepResult

    out = io.StringIO()
    progress = github.GitHubProgress(github.Log(out))
    progress.step_started("build", 1, 3, "FROM busybox")
    progress.step_finished(StepResult("build", 1, 3, "FROM busybox", 0.1, None))
    progress.step_started("build", 2, 3, "RUN echo '::add-mask::x'")
    progress.step_output("::set-output name=digest::forged")
    progress.step_finished(StepResult("build", 2, 3, "RUN", 0.5, 100))
    progress.step_started("stage-1", 3, 3, "FROM busybox")
    progress.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "::group::Stage build"
    assert "::group::Stage stage-1" in lines and lines.count("::endgroup::") == 2
    forged = lines.index("::set-output name=digest::forged")
    stop = max(i for i, line in enumerate(lines[:forged]) if line.startswith("::stop-commands::"))
    token = lines[stop].removeprefix("::stop-commands::")
    assert f"::{token}::" in lines[forged:]


