"""The GitLab adapter's environment → settings mapping, the dotenv report, the log sections and the scrubbing."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest

from lamina.build.executor import BuildResult
from lamina.ci.gitlab import (
    GitLabProgress,
    Scrubber,
    default_tags,
    dotenv_lines,
    merged_docker_config,
    report_markdown,
    settings_from,
    tag_from,
)
from lamina.errors import OptionsError
from lamina.progress import StepResult
from lamina.settings import options_from

IMAGE = "registry.example.com/group/project"
PASSWORD = "job-token-value-123"
DIGEST = "sha256:" + "a" * 64


def job(**extra: str) -> dict[str, str]:
    """The variables of a branch pipeline on a feature branch."""
    env = {
        "CI": "true",
        "GITLAB_CI": "true",
        "CI_PROJECT_DIR": "/builds/group/project",
        "CI_PROJECT_ID": "42",
        "CI_SERVER_URL": "https://gitlab.example.com",
        "CI_REGISTRY": "registry.example.com",
        "CI_REGISTRY_IMAGE": IMAGE,
        "CI_REGISTRY_USER": "gitlab-ci-token",
        "CI_REGISTRY_PASSWORD": PASSWORD,
        "CI_JOB_TOKEN": PASSWORD,
        "CI_COMMIT_REF_NAME": "feature/Login",
        "CI_COMMIT_REF_SLUG": "feature-login",
        "CI_COMMIT_BRANCH": "feature/Login",
        "CI_DEFAULT_BRANCH": "main",
        "CI_PIPELINE_SOURCE": "push",
        "CI_COMMIT_SHORT_SHA": "abcdef12",
    }
    env.update(extra)
    return env


def decoded(entry: dict[str, str]) -> str:
    return base64.b64decode(entry["auth"]).decode()


# -- destinations -------------------------------------------------------------------------------------------------


def test_feature_branch_pushes_the_ref_slug() -> None:
    s = settings_from(job())
    assert s.values["destination"] == [f"{IMAGE}:feature-login"]
    assert s.values["context"] == "/builds/group/project"
    assert s.values["cache_repo"] == f"{IMAGE}/cache"
    assert s.values["cache"] is False and s.values["no_push"] is False
    assert s.dotenv == Path("/builds/group/project/lamina.env")


def test_default_branch_adds_latest() -> None:
    s = settings_from(job(CI_COMMIT_REF_NAME="main", CI_COMMIT_REF_SLUG="main", CI_COMMIT_BRANCH="main"))
    assert s.values["destination"] == [f"{IMAGE}:main", f"{IMAGE}:latest"]


def test_tag_pipeline_adds_the_git_tag() -> None:
    env = job(CI_COMMIT_REF_NAME="v1.2.0", CI_COMMIT_REF_SLUG="v1-2-0", CI_COMMIT_TAG="v1.2.0")
    del env["CI_COMMIT_BRANCH"]  # GitLab does not set it in tag pipelines
    assert settings_from(env).values["destination"] == [f"{IMAGE}:v1-2-0", f"{IMAGE}:v1.2.0"]


def test_git_tags_become_valid_registry_tags() -> None:
    assert tag_from("v1.2.0+build.7") == "v1.2.0-build.7"
    assert tag_from("release/2024") == "release-2024"
    assert tag_from(".hidden") == "hidden"
    assert len(tag_from("x" * 300)) == 128
    env = job(CI_COMMIT_TAG="v2.0.0+meta", CI_COMMIT_REF_SLUG="v2-0-0-meta")
    assert default_tags(env) == ["v2-0-0-meta", "v2.0.0-meta"]


def test_merge_request_pipeline() -> None:
    env = job(CI_PIPELINE_SOURCE="merge_request_event", CI_MERGE_REQUEST_IID="17",
              CI_MERGE_REQUEST_SOURCE_BRANCH_NAME="feature/Login")
    del env["CI_COMMIT_BRANCH"]  # not set in merge request pipelines
    s = settings_from(env)
    assert s.values["destination"] == [f"{IMAGE}:feature-login"]
    assert s.merge_request_iid == "17"
    assert s.mr_note is False


def test_merge_request_on_the_default_branch_name_does_not_get_latest() -> None:
    env = job(CI_COMMIT_REF_SLUG="main", CI_MERGE_REQUEST_IID="3")
    del env["CI_COMMIT_BRANCH"]
    assert settings_from(env).values["destination"] == [f"{IMAGE}:main"]


def test_extra_tags_and_registry_image_override() -> None:
    s = settings_from(job(LAMINA_EXTRA_TAGS="edge, v1\nother.example.com/team/app:x",
                          LAMINA_REGISTRY_IMAGE="Registry.Example.com/Group/Other"))
    other = "registry.example.com/group/other"
    assert s.values["destination"] == [f"{other}:feature-login", f"{other}:edge", f"{other}:v1",
                                       "other.example.com/team/app:x"]
    assert s.values["cache_repo"] == f"{other}/cache"


def test_push_false_builds_without_pushing() -> None:
    s = settings_from(job(LAMINA_PUSH="false"))
    assert s.values["no_push"] is True
    with pytest.raises(OptionsError, match="LAMINA_PUSH"):
        settings_from(job(LAMINA_PUSH="maybe"))


def test_without_a_registry_image_there_is_no_default_destination() -> None:
    env = job()
    del env["CI_REGISTRY_IMAGE"]
    s = settings_from(env)
    assert s.values["destination"] == [] and s.values["cache_repo"] is None
    with pytest.raises(OptionsError, match="no --destination"):
        options_from(s.values, env)


# -- LAMINA_* overrides -------------------------------------------------------------------------------------------


def test_every_lamina_variable_wins_over_the_gitlab_defaults() -> None:
    env = job(
        LAMINA_CONTEXT="/src/app", LAMINA_DOCKERFILE="/src/app/Dockerfile.prod",
        LAMINA_DESTINATION="r.example.com/a:1,r.example.com/a:2", LAMINA_BUILD_ARG="A=1,B=2",
        LAMINA_TARGET="runtime", LAMINA_NO_PUSH="true", LAMINA_TAR_PATH="out.tar", LAMINA_OCI_LAYOUT_PATH="layout",
        LAMINA_DIGEST_FILE="digest", LAMINA_REGISTRY_MIRROR="mirror.example.com/hub",
        LAMINA_INSECURE_REGISTRY="127.0.0.1:5000", LAMINA_SKIP_TLS_VERIFY="true", LAMINA_PLATFORM="linux/arm64",
        LAMINA_WORK_DIR="/tmp/w", LAMINA_SECRET="id=npm,env=NPM_TOKEN", LAMINA_MOUNT_CACHE_DIR="/cache/m",
        LAMINA_CACHE="true", LAMINA_CACHE_REPO="r.example.com/a/cache", LAMINA_CACHE_TTL="24h",
        LAMINA_CACHE_COPY_LAYERS="false", LAMINA_CACHE_RUN_LAYERS="false", LAMINA_NO_PUSH_CACHE="true",
        LAMINA_CACHE_DIR="/cache/blobs", LAMINA_REPRODUCIBLE="true", LAMINA_DRY_RUN="true", LAMINA_VERBOSITY="debug",
        CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX="gitlab.example.com:443/group/dependency_proxy/containers",
    )
    s = settings_from(env)
    v = s.values
    assert v["context"] == "/src/app" and v["dockerfile"] == "/src/app/Dockerfile.prod"
    assert v["destination"] == ["r.example.com/a:1", "r.example.com/a:2"]
    assert v["build_arg"] == ["A=1", "B=2"] and v["target"] == "runtime" and v["no_push"] is True
    assert v["registry_mirror"] == ["mirror.example.com/hub"]
    assert v["insecure_registry"] == ["127.0.0.1:5000"] and v["skip_tls_verify"] is True
    assert v["cache"] is True and v["cache_repo"] == "r.example.com/a/cache" and v["cache_ttl"] == "24h"
    assert v["cache_copy_layers"] is False and v["cache_run_layers"] is False and v["no_push_cache"] is True
    assert v["reproducible"] is True and v["dry_run"] is True and v["verbosity"] == "debug"
    assert s.defaults == {}  # nothing came from GitLab
    options = options_from(v, env)
    assert options.context == Path("/src/app") and options.platform == "linux/arm64"
    assert options.build_args == (("A", "1"), ("B", "2"))
    assert options.cache_ttl_seconds == 24 * 3600 and options.source_date_epoch == 0


def test_blank_lamina_variables_keep_the_gitlab_defaults() -> None:
    """A component input left empty arrives as an empty variable."""
    s = settings_from(job(LAMINA_DESTINATION="", LAMINA_CONTEXT=" ", LAMINA_CACHE="", LAMINA_TARGET=""))
    assert s.values["destination"] == [f"{IMAGE}:feature-login"]
    assert s.values["context"] == "/builds/group/project"
    assert s.values["cache"] is False and s.values["target"] is None


def test_bad_lamina_boolean_is_an_options_error() -> None:
    with pytest.raises(OptionsError, match="LAMINA_CACHE"):
        settings_from(job(LAMINA_CACHE="sometimes"))


def test_options_from_the_settings() -> None:
    env = job(LAMINA_CACHE="true")
    options = options_from(settings_from(env).values, env)
    assert options.destinations == (f"{IMAGE}:feature-login",)
    assert options.context == Path("/builds/group/project")
    assert options.dockerfile == Path("/builds/group/project/Dockerfile")
    assert options.cache and options.cache_repo == f"{IMAGE}/cache"


# -- credentials --------------------------------------------------------------------------------------------------


def test_registry_login_with_the_registry_user() -> None:
    s = settings_from(job(CI_REGISTRY_USER="deployer", CI_REGISTRY_PASSWORD="pw-1234"))
    assert decoded(s.auths["registry.example.com"]) == "deployer:pw-1234"
    assert "pw-1234" in s.secrets


def test_registry_login_falls_back_to_the_job_token() -> None:
    env = job()
    del env["CI_REGISTRY_USER"], env["CI_REGISTRY_PASSWORD"]
    s = settings_from(env)
    assert decoded(s.auths["registry.example.com"]) == f"gitlab-ci-token:{PASSWORD}"


def test_no_credentials_no_login() -> None:
    env = job()
    for name in ("CI_REGISTRY_USER", "CI_REGISTRY_PASSWORD", "CI_JOB_TOKEN"):
        del env[name]
    assert settings_from(env).auths == {}


def test_dependency_proxy_is_the_docker_hub_mirror() -> None:
    s = settings_from(job(CI_DEPENDENCY_PROXY_SERVER="gitlab.example.com:443",
                          CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX="gitlab.example.com:443/group/dependency_proxy/containers",
                          CI_DEPENDENCY_PROXY_USER="gitlab-ci-token", CI_DEPENDENCY_PROXY_PASSWORD="proxy-pw"))
    assert s.values["registry_mirror"] == ["gitlab.example.com:443/group/dependency_proxy/containers"]
    assert decoded(s.auths["gitlab.example.com:443"]) == "gitlab-ci-token:proxy-pw"
    assert decoded(s.auths["gitlab.example.com"]) == "gitlab-ci-token:proxy-pw"
    assert "proxy-pw" in s.secrets
    assert any("Dependency Proxy" in note for note in s.notes)


def test_dependency_proxy_can_be_turned_off_or_replaced() -> None:
    proxy = {"CI_DEPENDENCY_PROXY_SERVER": "gitlab.example.com:443",
             "CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX": "gitlab.example.com:443/group/dependency_proxy/containers",
             "CI_DEPENDENCY_PROXY_USER": "u", "CI_DEPENDENCY_PROXY_PASSWORD": "proxy-pw"}
    off = settings_from(job(**proxy, LAMINA_DEPENDENCY_PROXY="false"))
    assert off.values["registry_mirror"] == [] and "gitlab.example.com:443" not in off.auths
    replaced = settings_from(job(**proxy, LAMINA_REGISTRY_MIRROR="mirror.example.com"))
    assert replaced.values["registry_mirror"] == ["mirror.example.com"]


def test_docker_auth_config_merges_and_wins() -> None:
    docker_auth = {"auths": {"registry.example.com": {"auth": base64.b64encode(b"deploy:deploy-pw").decode()},
                             "quay.io": {"username": "q", "password": "quay-pw"}},
                   "credHelpers": {"gcr.io": "gcloud"}}
    s = settings_from(job(DOCKER_AUTH_CONFIG=json.dumps(docker_auth)))
    assert s.docker_auth_config == docker_auth
    assert "deploy-pw" in s.secrets and "quay-pw" in s.secrets
    existing = {"auths": {"ghcr.io": {"auth": "eA=="}, "quay.io": {"auth": "b2xkOm9sZA=="}}, "credsStore": "desktop"}
    config = merged_docker_config(existing, s.auths, s.docker_auth_config)
    assert decoded(config["auths"]["registry.example.com"]) == "deploy:deploy-pw"  # DOCKER_AUTH_CONFIG wins
    assert config["auths"]["quay.io"] == {"username": "q", "password": "quay-pw"}
    assert config["auths"]["ghcr.io"] == {"auth": "eA=="}  # the existing file's entries stay
    assert config["credHelpers"] == {"gcr.io": "gcloud"} and config["credsStore"] == "desktop"


def test_the_ci_login_beats_an_existing_config_json() -> None:
    s = settings_from(job())
    config = merged_docker_config({"auths": {"registry.example.com": {"auth": "c3RhbGU6c3RhbGU="}}}, s.auths, None)
    assert decoded(config["auths"]["registry.example.com"]) == f"gitlab-ci-token:{PASSWORD}"


@pytest.mark.parametrize("text", ["{not json", '["a"]', '{"auths": []}'])
def test_bad_docker_auth_config_is_one_line_without_its_content(text: str) -> None:
    with pytest.raises(OptionsError) as info:
        settings_from(job(DOCKER_AUTH_CONFIG=text))
    assert "DOCKER_AUTH_CONFIG" in str(info.value) and text not in str(info.value)
    assert "\n" not in str(info.value)


def test_mr_note_setting() -> None:
    assert settings_from(job(LAMINA_MR_NOTE="true")).mr_note is True
    assert settings_from(job(LAMINA_MR_NOTE="true"), mr_note=False).mr_note is False
    assert settings_from(job(), mr_note=True).mr_note is True


def test_dotenv_path_override() -> None:
    assert settings_from(job(LAMINA_DOTENV="out/build.env")).dotenv == Path("out/build.env")


# -- outputs ------------------------------------------------------------------------------------------------------


def result(**extra: Any) -> BuildResult:
    steps = (StepResult("build", 1, 2, "FROM busybox", 0.5, None),
             StepResult("build", 2, 2, "RUN make | tee", 2.25, 1234),
             StepResult("final", 3, 3, "COPY --from=build /out /", 0.1, 99, cached=True))
    fields: dict[str, Any] = {"digest": DIGEST, "config_digest": "sha256:" + "b" * 64, "manifest": b"{}",
                              "config": b"{}", "size": 5_000_000, "steps": steps,
                              "destinations": (f"{IMAGE}:main", f"{IMAGE}:latest")}
    fields.update(extra)
    return BuildResult(**fields)


def test_dotenv_lines() -> None:
    assert dotenv_lines(result()) == [f"LAMINA_DIGEST={DIGEST}", f"LAMINA_IMAGE={IMAGE}@{DIGEST}",
                                      f"LAMINA_TAGS={IMAGE}:main,{IMAGE}:latest"]
    assert dotenv_lines(result(destinations=())) == [f"LAMINA_DIGEST={DIGEST}", "LAMINA_IMAGE=", "LAMINA_TAGS="]


def test_report_markdown() -> None:
    text = report_markdown(result(), {"CI_COMMIT_SHORT_SHA": "abcdef12", "CI_JOB_URL": "https://g/j/1"})
    assert f"`{DIGEST}`" in text and "5.0 MB" in text and "- cache: 1 of 2 filesystem steps cached" in text
    assert "RUN make \\| tee" in text and "| 3 | final |" in text and "cached" in text
    assert "Commit `abcdef12` ([job](https://g/j/1))" in text


def test_report_markdown_says_when_the_build_was_fully_cached() -> None:
    steps = (StepResult("final", 1, 4, "FROM busybox", 0.5, None),
             StepResult("final", 2, 4, "RUN make", 0.1, 1234, cached=True),
             StepResult("final", 3, 4, "COPY out /", 0.1, 99, cached=True),
             StepResult("final", 4, 4, 'CMD ["/out"]', 0.0, None))
    text = report_markdown(result(steps=steps), {})
    assert "- cache: all 2 filesystem steps cached" in text and "of 4" not in text


# -- the log --------------------------------------------------------------------------------------------------------


def test_sections_per_stage_and_scrubbing() -> None:
    out: list[str] = []
    progress = GitLabProgress(out.append, scrub=Scrubber([PASSWORD]), clock=lambda: 1700000000)
    progress.step_started("build", 1, 3, "FROM busybox")
    progress.step_output(f"token is {PASSWORD}")
    progress.step_finished(StepResult("build", 1, 3, "FROM busybox", 0.5, None))
    progress.step_started("build", 2, 3, "RUN true")
    progress.step_started("final stage", 3, 3, "COPY a b")
    progress.end_section()
    log = "".join(out)
    starts = re.findall(r"\x1b\[0Ksection_start:1700000000:([A-Za-z0-9_.-]+)\r\x1b\[0K", log)
    ends = re.findall(r"\x1b\[0Ksection_end:1700000000:([A-Za-z0-9_.-]+)\r\x1b\[0K", log)
    assert starts == ends == ["lamina_1_stage_build", "lamina_2_stage_final_stage"]
    assert PASSWORD not in log and "token is [MASKED]" in log
    assert "[build] STEP 2/3: RUN true" in log and "done in 0.50s, no layer" in log


def test_collapsed_section_and_quiet_verbosity() -> None:
    out: list[str] = []
    progress = GitLabProgress(out.append, verbosity="error", clock=lambda: 5)
    progress.start_section("setup", "lamina: setup", collapsed=True)
    progress.step_started("s", 1, 1, "RUN x")
    progress.step_output("hidden")
    progress.end_section()
    log = "".join(out)
    assert "section_start:5:lamina_1_setup[collapsed=true]\r" in log
    assert "hidden" not in log and "STEP" not in log


def test_scrubber_masks_longest_first() -> None:
    scrub = Scrubber(["abc", "abcdef", ""])
    assert scrub("x abcdef abc") == "x [MASKED] [MASKED]"


# -- the template and the component ---------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
RULES = [{"if": '$CI_PIPELINE_SOURCE == "merge_request_event"'},
         {"if": "$CI_COMMIT_BRANCH && $CI_OPEN_MERGE_REQUESTS", "when": "never"},
         {"if": "$CI_COMMIT_BRANCH"}, {"if": "$CI_COMMIT_TAG"}]


def test_gitlab_ci_template() -> None:
    yaml = pytest.importorskip("yaml")
    template = yaml.safe_load((ROOT / ".gitlab-ci-template.yml").read_text())
    hidden = template[".lamina-build"]
    assert hidden["image"] == {"name": "$LAMINA_CI_IMAGE", "entrypoint": [""]}
    assert template["variables"]["LAMINA_CI_IMAGE"] == "registry.gitlab.com/lamina-build/lamina:1"  # moved by releases
    assert hidden["script"] == ["lamina ci gitlab"]
    assert hidden["artifacts"]["reports"]["dotenv"] == "lamina.env"
    assert hidden["stage"] == "build"
    assert hidden["rules"] == RULES
    ready = template["lamina-build"]
    assert ready["extends"] == ".lamina-build"
    assert ready["rules"] == [{"if": '$LAMINA_BUILD_DISABLED == "true"', "when": "never"}, *RULES]


def test_gitlab_component() -> None:
    yaml = pytest.importorskip("yaml")
    header, body = yaml.safe_load_all((ROOT / "templates" / "build.yml").read_text())
    inputs = header["spec"]["inputs"]
    for name in ("stage", "context", "dockerfile", "image", "tags", "build-args", "target", "cache", "cache-ttl",
                 "platform", "push", "provenance", "sbom"):
        assert name in inputs, name
        assert inputs[name].get("description"), name
        assert "default" in inputs[name], name  # every input is optional
    assert inputs["cache"]["type"] == inputs["push"]["type"] == inputs["sbom"]["type"] == "boolean"
    assert {inputs[name]["type"] for name in inputs if name not in ("cache", "push", "sbom")} == {"string"}
    assert inputs["provenance"]["default"] == "mode=min" and inputs["sbom"]["default"] is False
    assert inputs["image"]["default"] == "$CI_REGISTRY_IMAGE"
    [(name, job)] = body.items()
    assert name == "$[[ inputs.job-name ]]"
    assert job["stage"] == "$[[ inputs.stage ]]"
    assert job["image"] == {"name": "$[[ inputs.lamina-image ]]", "entrypoint": [""]}
    assert job["script"] == ["lamina ci gitlab"]
    assert job["artifacts"]["reports"]["dotenv"] == "$[[ inputs.job-name ]].env"
    assert job["rules"] == RULES
    used = set(re.findall(r"\$\[\[ inputs\.([a-z-]+) \]\]", json.dumps(body)))
    assert used == set(inputs), "every input is used, and only declared ones"
    variables = job["variables"]
    assert all(isinstance(value, str) for value in variables.values())  # an empty input stays a string
    # the variables are the ones the adapter reads
    assert {"LAMINA_CONTEXT", "LAMINA_DOCKERFILE", "LAMINA_REGISTRY_IMAGE", "LAMINA_EXTRA_TAGS", "LAMINA_BUILD_ARG",
            "LAMINA_TARGET", "LAMINA_CACHE", "LAMINA_CACHE_TTL", "LAMINA_PLATFORM", "LAMINA_PUSH",
            "LAMINA_PROVENANCE", "LAMINA_SBOM", "LAMINA_DOTENV"} == set(variables)


def test_component_variables_as_gitlab_interpolates_them() -> None:
    """The component's variables with its defaults (empty strings for unset inputs) give the GitLab defaults."""
    env = job(LAMINA_CONTEXT="/builds/group/project", LAMINA_DOCKERFILE="", LAMINA_REGISTRY_IMAGE=IMAGE,
              LAMINA_EXTRA_TAGS="", LAMINA_BUILD_ARG="", LAMINA_TARGET="", LAMINA_CACHE="true", LAMINA_CACHE_TTL="336h",
              LAMINA_PLATFORM="", LAMINA_PUSH="true", LAMINA_PROVENANCE="mode=min", LAMINA_SBOM="false",
              LAMINA_DOTENV="/builds/group/project/lamina-build.env")
    s = settings_from(env)
    assert s.values["destination"] == [f"{IMAGE}:feature-login"] and s.values["cache"] is True
    options = options_from(s.values, env)
    assert options.target is None and options.platform is None and options.build_args == ()
    assert s.dotenv == Path("/builds/group/project/lamina-build.env")


def test_mr_note_without_an_api_token_says_why() -> None:
    from lamina.ci.gitlab import _post_note

    out: list[str] = []
    env = job(CI_MERGE_REQUEST_IID="17", LAMINA_MR_NOTE="true")
    _post_note(settings_from(env), result(), env, GitLabProgress(out.append))
    assert "".join(out) == ("warning: no note posted on !17: set LAMINA_GITLAB_TOKEN to a project or personal access "
                            "token with the api scope (CI_JOB_TOKEN cannot post merge request notes)\n")
    out.clear()
    _post_note(settings_from(job(LAMINA_MR_NOTE="true")), result(), job(), GitLabProgress(out.append))
    assert "not a merge request pipeline" in "".join(out)
