"""Every build flag through every entry point: ``lamina build`` (its argument and its ``LAMINA_<FLAG>`` variable),
the GitHub Action (its input where it has one, else ``LAMINA_<FLAG>`` in the step's environment) and the GitLab job
(``LAMINA_<FLAG>``) must give the same ``BuildOptions`` fields. A flag added to ``lamina.settings.BUILD_FLAGS``
without a sample here fails, and so does an entry point that drops it. Then the precedence rules."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

import pytest

from lamina.ci import github, gitlab
from lamina.cli import build_flag_values, parser
from lamina.options import BuildOptions
from lamina.settings import BUILD_FLAGS, Flag, flag_values, options_from

# One value per flag (Flag.dest) that differs from its default: a string for "value" flags, a list for repeatable
# ones, a bool for "bool" and "switch" flags.
SAMPLES: dict[str, object] = {
    "context": "/srv/ctx",
    "dockerfile": "/srv/other/Dockerfile.prod",
    "destination": ["reg.example/team/app:1", "reg.example/team/app:latest"],
    "build_arg": ["VERSION=1.2", "MODE=release"],
    "target": "runtime",
    "no_push": True,
    "push_by_digest": True,
    "tar_path": "/out/image.tar",
    "oci_layout_path": "/out/layout",
    "oci_tar_path": "/out/oci.tar",
    "digest_file": "/out/digest",
    "registry_mirror": ["mirror.example", "mirror2.example"],
    "insecure_registry": ["plain.example:5000"],
    "skip_tls_verify": True,
    "skip_tls_verify_registry": ["self-signed.example"],
    "registry_certificate": ["reg.example=/certs/ca.pem"],
    "registry_client_cert": ["reg.example=/certs/client.pem,/certs/client.key"],
    "registry_map": ["docker.io=mirror.example;mirror2.example"],
    "skip_default_registry_fallback": True,
    "push_retry": "5",
    "image_download_retry": "7",
    "platform": "linux/arm64",
    "work_dir": "/var/lamina-work",
    "secret": ["id=token,src=/run/token.txt"],
    "ssh": ["default", "deploy=/run/deploy_key"],
    "mount_cache_dir": "/var/lamina-mounts",
    "cache": True,
    "cache_repo": "reg.example/team/cache",
    "cache_ttl": "2h",
    "cache_copy_layers": False,
    "cache_run_layers": False,
    "no_push_cache": True,
    "cache_dir": "/var/lamina-blobs",
    "reproducible": True,
    "dry_run": True,
    "compression": "zstd",
    "compression_level": "5",
    "image_name_with_digest_file": "/out/names",
    "image_name_tag_with_digest_file": "/out/name-tags",
    "metadata_file": "/out/metadata.json",
    "verbosity": "debug",
    "label": ["org.example.team=builders", "org.example.tier=2"],
    "context_sub_path": "services/api",
    "insecure": True,
    "insecure_pull": True,
    "skip_tls_verify_pull": True,
    "push_ignore_immutable_tag_errors": True,
    "skip_push_permission_check": True,
    "ignore_path": ["/opt/scratch", "/tmp/cache"],
    "ignore_var_run": True,
    "image_fs_extract_retry": "2",
    "single_snapshot": True,
    "git": "branch=release,single-branch=true",
    "log_format": "json",
    "log_timestamp": True,
    "sandbox": "chroot",
    "rootfs_mode": "unpack",
    "rootfs_memory": "512M",
    "skeleton_steps": False,
    "force": True,
    "cleanup": True,
    "provenance": "mode=max,version=v0.2",
    "sbom": True,
}

# flags whose effect depends on another flag, which each entry point would otherwise derive differently: that
# flag, given the same way to all of them (as LAMINA_<FLAG>)
COMPANIONS: dict[str, dict[str, str]] = {
    "context_sub_path": {"LAMINA_CONTEXT": "/srv/ctx"},
    "insecure": {"LAMINA_DESTINATION": "plain.example:5000/team/app:1",
                 "LAMINA_CACHE_REPO": "plain.example:5000/team/cache"},
}

HOME = {"HOME": "/home/builder"}  # the default mount cache directory depends on it: the same everywhere
FLAGS = {flag.dest: flag for flag in BUILD_FLAGS}
ACTION_INPUTS = {dest: (name, kind) for name, (dest, kind) in github.ACTION_FLAGS.items()}


def cli_argv(flag: Flag, value: object) -> list[str]:
    if flag.kind == "bool":
        assert value is True
        return [flag.name]
    if flag.kind == "switch":
        return [f"{flag.name}={'true' if value else 'false'}"]
    if flag.kind == "list":
        assert isinstance(value, list)
        return [part for item in value for part in (flag.name, item)]
    return [flag.name, str(value)]


def variable(flag: Flag, value: object) -> dict[str, str]:
    """``LAMINA_<FLAG>`` as a user writes it: true/false, repeatable values comma-separated."""
    if isinstance(value, bool):
        return {flag.env: "true" if value else "false"}
    if isinstance(value, list):
        return {flag.env: ",".join(value)}
    return {flag.env: str(value)}


def action_input(flag: Flag, value: object) -> dict[str, str]:
    name, kind = ACTION_INPUTS[flag.dest]
    if kind == "bool":
        assert value is True
        text = "true"
    elif isinstance(value, list):
        text = "\n".join(value)  # one a line: what every list input takes
    else:
        text = str(value)
    return {f"INPUT_{name.upper()}": text}


# the entry points, each from an environment with nothing of the flag (base) or with it


def through_cli(argv: list[str], environ: Mapping[str, str]) -> BuildOptions:
    env = {**HOME, "LAMINA_DESTINATION": "base.example/app:base", **environ}  # a destination, as a variable
    args = parser().parse_args(["build", *argv])
    return options_from(build_flag_values(args, env), env)


def through_action(environ: Mapping[str, str]) -> BuildOptions:
    env = {**HOME, "GITHUB_ACTIONS": "true", "GITHUB_REF": "refs/heads/main", "GITHUB_EVENT_NAME": "push",
           **environ}
    return github.plan_from_environ(env).options


def through_gitlab(environ: Mapping[str, str]) -> BuildOptions:
    env = {**HOME, "GITLAB_CI": "true", "CI_PROJECT_DIR": "/builds/group/project",
           "CI_REGISTRY_IMAGE": "registry.example.com/group/project", "CI_COMMIT_REF_SLUG": "main", **environ}
    return options_from(gitlab.settings_from(env).values, env)


def compared(options: BuildOptions, names: list[str]) -> dict[str, Any]:
    return {name: getattr(options, name) for name in names}


def controlled_fields(flag: Flag) -> list[str]:
    """The BuildOptions fields the flag's sample changes on the command line."""
    base = through_cli([], {})
    given = through_cli(cli_argv(flag, SAMPLES[flag.dest]), {})
    return [f.name for f in fields(BuildOptions) if f.compare and getattr(base, f.name) != getattr(given, f.name)]


def test_every_sample_is_a_build_flag() -> None:
    assert set(SAMPLES) <= set(FLAGS), f"samples for no flag: {sorted(set(SAMPLES) - set(FLAGS))}"


def test_every_action_input_names_a_build_flag() -> None:
    assert set(ACTION_INPUTS) <= set(FLAGS)
    assert {name for name in github.ACTION_FLAGS} <= set(github.INPUTS)


@pytest.mark.parametrize("flag", BUILD_FLAGS, ids=lambda flag: flag.name)
def test_the_flag_gives_the_same_options_in_every_entry_point(flag: Flag) -> None:
    assert flag.dest in SAMPLES, f"{flag.name} has no sample in tests/unit/test_settings.py: add one"
    value = SAMPLES[flag.dest]
    names = controlled_fields(flag)
    assert names, f"the sample of {flag.name} ({value!r}) changes no BuildOptions field: pick another"
    companions = COMPANIONS.get(flag.dest, {})  # what the flag's effect depends on, the same everywhere
    expected = compared(through_cli(cli_argv(flag, value), companions), names)  # the command-line argument
    by_variable = {**variable(flag, value), **companions}
    entry_points = {
        f"lamina build with {flag.env}": through_cli([], by_variable),
        "the Action, " + ("input " + ACTION_INPUTS[flag.dest][0] if flag.dest in ACTION_INPUTS else flag.env):
            through_action({**action_input(flag, value), **companions} if flag.dest in ACTION_INPUTS
                           else by_variable),
        f"the GitLab job with {flag.env}": through_gitlab(by_variable),
    }
    for name, options in entry_points.items():
        assert compared(options, names) == expected, f"{flag.name} through {name}"


# -- precedence: explicit value > LAMINA_<FLAG> > what the entry point derives > default --------------------------


def test_flag_values_precedence() -> None:
    env = {"LAMINA_TARGET": "from-variable", "LAMINA_CACHE_TTL": "1h"}
    derived = {"target": "derived", "cache_ttl": "3h", "platform": "linux/arm64"}
    values = flag_values({"target": "explicit"}, env, derived)
    assert values["target"] == "explicit"  # explicit > variable > derived
    assert values["cache_ttl"] == "1h"  # variable > derived
    assert values["platform"] == "linux/arm64"  # derived > default
    assert values["work_dir"] is None and values["destination"] == [] and values["cache"] is False
    assert values["cache_run_layers"] is True  # switches default to true


def test_blank_variables_count_as_unset() -> None:
    env = {"LAMINA_TARGET": "", "LAMINA_DESTINATION": "  ", "LAMINA_CACHE": " ", "LAMINA_CACHE_RUN_LAYERS": ""}
    values = flag_values({}, env, {"target": "derived"})
    assert values["target"] == "derived"
    assert values["destination"] == [] and values["cache"] is False and values["cache_run_layers"] is True


def test_the_command_line_wins_over_the_variable() -> None:
    options = through_cli(["--target", "from-cli", "--cache-ttl", "2h"],
                          {"LAMINA_TARGET": "from-variable", "LAMINA_CACHE_TTL": "1h", "LAMINA_PLATFORM": "linux/386"})
    assert (options.target, options.cache_ttl_seconds, options.platform) == ("from-cli", 7200, "linux/386")
    blank = through_cli([], {"LAMINA_TARGET": " ", "LAMINA_SANDBOX": ""})
    assert (blank.target, blank.sandbox) == (None, "auto")


def test_an_action_input_wins_over_the_variable() -> None:
    options = through_action({"INPUT_TARGET": "from-input", "LAMINA_TARGET": "from-variable",
                              "LAMINA_PLATFORM": "linux/386", "LAMINA_CACHE_TTL": ""})
    assert (options.target, options.platform) == ("from-input", "linux/386")
    assert options.cache_ttl_seconds == 14 * 24 * 3600  # blank: the default


def test_a_gitlab_variable_wins_over_what_the_job_implies() -> None:
    derived = through_gitlab({})
    assert derived.destinations == ("registry.example.com/group/project:main",)
    assert derived.context.as_posix() == "/builds/group/project"
    assert derived.cache_repo == "registry.example.com/group/project/cache"
    options = through_gitlab({"LAMINA_DESTINATION": "reg.example/other:1", "LAMINA_CONTEXT": "/srv/ctx",
                              "LAMINA_CACHE_REPO": "reg.example/cache"})
    assert options.destinations == ("reg.example/other:1",)
    assert options.context.as_posix() == "/srv/ctx" and options.cache_repo == "reg.example/cache"
    blank = through_gitlab({"LAMINA_DESTINATION": "", "LAMINA_CONTEXT": "  "})
    assert blank.destinations == derived.destinations and blank.context == derived.context


# -- the GitLab job ignored these three (issue 12) ------------------------------------------------------------


def test_the_gitlab_job_honours_sandbox_force_and_cleanup() -> None:
    options = through_gitlab({"LAMINA_SANDBOX": "chroot", "LAMINA_FORCE": "true", "LAMINA_CLEANUP": "true"})
    assert (options.sandbox, options.force, options.cleanup) == ("chroot", True, True)


def test_build_arg_source_date_epoch_sets_the_epoch() -> None:
    """BuildKit reads SOURCE_DATE_EPOCH from the build args too; a numeric build arg wins over the variable, its
    other values (context, a stage) are not supported and leave the variable in charge."""
    from lamina.settings import source_date_epoch
    assert source_date_epoch({"SOURCE_DATE_EPOCH": "5"}, {"SOURCE_DATE_EPOCH": "7"}) == 7
    assert source_date_epoch({"SOURCE_DATE_EPOCH": "5"}, {"SOURCE_DATE_EPOCH": "context"}) == 5
    assert source_date_epoch({}, {"SOURCE_DATE_EPOCH": "context"}) is None
