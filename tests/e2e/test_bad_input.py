"""Bad input, as a user meets it: ``python -m lamina.cli build ...`` in a subprocess.

Each case: a non-zero exit status, one clear ``error: ...`` line on stderr, no Python traceback, nothing pushed.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tests.e2e.conftest import Lamina
from tests.e2e.helpers import LaminaRun, assert_not_pushed, inspect_fails, write_context
from tests.support.baseimages import AuthBaseImages
from tests.support.registry import RunningRegistry, free_port

pytestmark = pytest.mark.e2e


def split(dest: str) -> tuple[str, str]:
    """``host/repo:tag`` → (host, repo)."""
    host, rest = dest.split("/", 1)
    return host, rest.rsplit(":", 1)[0]


def assert_clean_failure(run: LaminaRun, *, exit_code: int | None = None, contains: tuple[str, ...] = (),
                         absent: tuple[str, ...] = ()) -> str:
    """A non-zero exit, no traceback, exactly one ``error:`` line on stderr naming ``contains``; return that line."""
    assert run.returncode != 0, run.describe()
    if exit_code is not None:
        assert run.returncode == exit_code, run.describe()
    assert "Traceback" not in run.output, run.describe()
    lines = run.error_lines()
    assert len(lines) == 1, f"expected one line on stderr:\n{run.describe()}"
    line = lines[0]
    assert line.startswith("error: "), run.describe()
    for text in contains:
        assert text in line, f"{text!r} not in {line!r}"
    for text in absent:
        assert text not in run.output, f"{text!r} shown to the user:\n{run.describe()}"
    return line


def fail(lamina: Lamina, tmp_path: Path, dockerfile: str, *args: str, files: dict[str, str] | None = None,
         docker_config: Path | None = None, name: str = "bad") -> tuple[LaminaRun, str]:
    """Build ``dockerfile`` in a subprocess with a fresh destination; return the run and the destination."""
    context = write_context(tmp_path / "context", dockerfile, files)
    dest = lamina.dest(name)
    run = lamina.build(context, "--destination", dest, *args, subprocess=True, docker_config=docker_config)
    return run, dest


# ---------------------------------------------------------------------------------------------------------------
# context and Dockerfile


def test_missing_dockerfile(lamina: Lamina, tmp_path: Path) -> None:
    context = tmp_path / "context"
    context.mkdir()
    (context / "app.txt").write_text("x\n")
    dest = lamina.dest("no-dockerfile")
    run = lamina.build(context, "--destination", dest, subprocess=True)
    assert_clean_failure(run, contains=("Dockerfile",))
    assert_not_pushed(*split(dest))


def test_missing_dockerfile_given_with_flag(lamina: Lamina, tmp_path: Path) -> None:
    context = write_context(tmp_path / "context", "FROM scratch\n")
    dest = lamina.dest("no-dockerfile-flag")
    run = lamina.build(context, "--dockerfile", str(tmp_path / "Nope.Dockerfile"), "--destination", dest,
                       subprocess=True)
    assert_clean_failure(run, contains=("Nope.Dockerfile",))
    assert_not_pushed(*split(dest))


def test_missing_context_directory(lamina: Lamina, tmp_path: Path) -> None:
    dest = lamina.dest("no-context")
    run = lamina.build(tmp_path / "does-not-exist", "--destination", dest, subprocess=True)
    assert_clean_failure(run, contains=("does-not-exist",))
    assert_not_pushed(*split(dest))


def test_unknown_instruction(lamina: Lamina, tmp_path: Path) -> None:
    run, dest = fail(lamina, tmp_path, f"""
        FROM {lamina.images.busybox}
        FOO bar
    """)
    line = assert_clean_failure(run, contains=("Dockerfile:2",))
    assert "FOO" in line.upper()
    assert_not_pushed(*split(dest))


def test_malformed_healthcheck(lamina: Lamina, tmp_path: Path) -> None:
    run, dest = fail(lamina, tmp_path, f"""
        FROM {lamina.images.busybox}
        RUN echo fine
        HEALTHCHECK WGET http://localhost/
    """)
    assert_clean_failure(run, contains=("Dockerfile:3:1", "HEALTHCHECK", "unknown type 'WGET'"))
    assert "echo fine" not in run.stdout, "the Dockerfile must be rejected before anything runs"
    assert_not_pushed(*split(dest))


def test_malformed_instruction(lamina: Lamina, tmp_path: Path) -> None:
    run, dest = fail(lamina, tmp_path, f"""
        FROM {lamina.images.busybox}

        ENV PATH
    """)
    assert_clean_failure(run, contains=("Dockerfile:3",))
    assert_not_pushed(*split(dest))


def test_copy_source_not_in_context(lamina: Lamina, tmp_path: Path) -> None:
    run, dest = fail(lamina, tmp_path, f"""
        FROM {lamina.images.busybox}
        COPY present.txt /app/
        COPY missing.txt /app/
    """, files={"present.txt": "here\n"})
    assert_clean_failure(run, contains=("Dockerfile:3", "missing.txt"))
    assert_not_pushed(*split(dest))


def test_copy_of_a_symlink_leaving_the_context(lamina: Lamina, tmp_path: Path) -> None:
    """A source symlink is resolved inside the context (BuildKit): the host's /etc/shadow must never be read."""
    context = write_context(tmp_path / "context", f"""
        FROM {lamina.images.busybox}
        COPY escape /leak
    """)
    (context / "escape").symlink_to("/etc/shadow")
    dest = lamina.dest("escape")
    run = lamina.build(context, "--destination", dest, subprocess=True)
    assert_clean_failure(run, contains=("Dockerfile:2", "escape"))
    assert_not_pushed(*split(dest))


def test_unknown_user_before_run(lamina: Lamina, tmp_path: Path) -> None:
    run, dest = fail(lamina, tmp_path, f"""
        FROM {lamina.images.busybox}
        USER nosuchuser
        RUN true
    """)
    assert_clean_failure(run, contains=("nosuchuser",))
    assert_not_pushed(*split(dest))


def test_target_names_no_stage(lamina: Lamina, tmp_path: Path) -> None:
    run, dest = fail(lamina, tmp_path, f"""
        FROM {lamina.images.busybox} AS base
        FROM base AS app
    """, "--target", "nope")
    assert_clean_failure(run, exit_code=2, contains=("nope",))
    assert_not_pushed(*split(dest))


# ---------------------------------------------------------------------------------------------------------------
# flags and environment


def test_no_destination_without_no_push(lamina: Lamina, tmp_path: Path) -> None:
    context = write_context(tmp_path / "context", f"FROM {lamina.images.busybox}\n")
    run = lamina.build(context, subprocess=True)
    assert_clean_failure(run, exit_code=2, contains=("--destination",))


def test_invalid_destination(lamina: Lamina, tmp_path: Path) -> None:
    context = write_context(tmp_path / "context", f"FROM {lamina.images.busybox}\n")
    run = lamina.build(context, "--destination", f"{lamina.registry.host}/Upper/Case:1", subprocess=True)
    assert_clean_failure(run, exit_code=2, contains=("Upper/Case",))


def test_bad_source_date_epoch(lamina: Lamina, tmp_path: Path) -> None:
    context = write_context(tmp_path / "context", f"FROM {lamina.images.busybox}\n")
    dest = lamina.dest("bad-epoch")
    run = lamina.build(context, "--destination", dest, subprocess=True, extra_env={"SOURCE_DATE_EPOCH": "yesterday"})
    assert_clean_failure(run, exit_code=2, contains=("SOURCE_DATE_EPOCH",))
    assert_not_pushed(*split(dest))


# ---------------------------------------------------------------------------------------------------------------
# 4. a failing RUN


def test_failing_run_exit_code(lamina: Lamina, tmp_path: Path) -> None:
    run, dest = fail(lamina, tmp_path, f"""
        FROM {lamina.images.busybox}
        RUN echo before-the-failure
        RUN echo about-to-fail >&2; exit 7
        RUN echo never-reached
    """, "--digest-file", str(tmp_path / "digest"), "--tar-path", str(tmp_path / "image.tar"),
        "--oci-layout-path", str(tmp_path / "layout"))
    assert_clean_failure(run, exit_code=7, contains=("Dockerfile:3", "7"))
    for output in ("digest", "image.tar", "layout"):
        assert not (tmp_path / output).exists(), f"a failed build wrote {output}"
    assert "about-to-fail" in run.output  # the command's own output reaches the user
    assert "never-reached" not in run.output
    inspect_fails(f"docker://{dest}")
    assert_not_pushed(*split(dest))


def test_failing_run_output_shown_when_steps_are_quiet(lamina: Lamina, tmp_path: Path) -> None:
    run, dest = fail(lamina, tmp_path, f"""
        FROM {lamina.images.busybox}
        RUN echo the-reason-it-failed; exit 3
    """, "--verbosity", "warn")
    assert run.returncode == 3, run.describe()
    assert "Traceback" not in run.output
    assert "the-reason-it-failed" in run.stderr, run.describe()
    assert run.error_lines()[-1].startswith("error: ") and "Dockerfile:2" in run.error_lines()[-1], run.describe()
    assert_not_pushed(*split(dest))


def test_failing_exec_form_run(lamina: Lamina, tmp_path: Path) -> None:
    run, dest = fail(lamina, tmp_path, f"""
        FROM {lamina.images.busybox}
        RUN ["/bin/false"]
    """)
    assert run.returncode == 1, run.describe()
    assert "Traceback" not in run.output
    assert "Dockerfile:2" in run.stderr, run.describe()
    assert_not_pushed(*split(dest))


def test_run_of_a_missing_program(lamina: Lamina, tmp_path: Path) -> None:
    run, dest = fail(lamina, tmp_path, f"""
        FROM {lamina.images.busybox}
        RUN ["/no/such/program", "arg"]
    """)
    assert run.returncode != 0, run.describe()
    assert "Traceback" not in run.output
    assert "Dockerfile:2" in run.stderr, run.describe()
    assert "/no/such/program" in run.output
    assert_not_pushed(*split(dest))


# ---------------------------------------------------------------------------------------------------------------
# registries


def test_unreachable_registry(lamina: Lamina, tmp_path: Path) -> None:
    closed = f"127.0.0.1:{free_port()}"
    run, dest = fail(lamina, tmp_path, f"""
        FROM {closed}/x:1
        RUN true
    """, "--insecure-registry", closed)
    assert_clean_failure(run, contains=(closed,))
    assert_not_pushed(*split(dest))


def test_missing_base_image_tag(lamina: Lamina, tmp_path: Path) -> None:
    run, dest = fail(lamina, tmp_path, f"""
        FROM {lamina.registry.host}/library/busybox:no-such-tag
    """)
    assert_clean_failure(run, contains=("no-such-tag",))
    assert_not_pushed(*split(dest))


def test_missing_base_image_repository(lamina: Lamina, tmp_path: Path) -> None:
    run, dest = fail(lamina, tmp_path, f"""
        FROM {lamina.registry.host}/library/no-such-repo:latest
    """)
    assert_clean_failure(run, contains=("no-such-repo",))
    assert_not_pushed(*split(dest))


def test_pull_without_credentials(lamina: Lamina, tmp_path: Path, auth_base_images: AuthBaseImages,
                                  auth_registry: RunningRegistry) -> None:
    run, dest = fail(lamina, tmp_path, f"""
        FROM {auth_base_images.busybox}
    """, "--insecure-registry", auth_registry.host)
    line = assert_clean_failure(run, contains=(auth_registry.host,))
    assert "401" in line or "auth" in line.lower() or "credential" in line.lower(), line
    assert_not_pushed(*split(dest))


def test_wrong_password_is_not_shown(lamina: Lamina, tmp_path: Path, auth_base_images: AuthBaseImages,
                                     auth_registry: RunningRegistry) -> None:
    wrong = "Wr0ng-Passw0rd-do-not-print"
    encoded = base64.b64encode(f"{auth_base_images.username}:{wrong}".encode()).decode()
    config_dir = tmp_path / "docker-config"
    config_dir.mkdir()
    (config_dir / "config.json").write_text(json.dumps({"auths": {auth_registry.host: {"auth": encoded}}}))
    run, dest = fail(lamina, tmp_path, f"""
        FROM {auth_base_images.busybox}
    """, "--insecure-registry", auth_registry.host, docker_config=config_dir)
    line = assert_clean_failure(run, contains=(auth_registry.host,), absent=(wrong, encoded))
    assert "401" in line or "auth" in line.lower() or "credential" in line.lower(), line
    # The same with --verbosity debug: even the debug output must not leak it.
    debug = lamina.build(tmp_path / "context", "--destination", dest, "--insecure-registry", auth_registry.host,
                         "--verbosity", "debug", subprocess=True, docker_config=config_dir)
    assert debug.returncode != 0
    assert wrong not in debug.output and encoded not in debug.output
    assert_not_pushed(*split(dest))


def test_push_without_credentials(lamina: Lamina, tmp_path: Path, auth_registry: RunningRegistry,
                                  auth_base_images: AuthBaseImages) -> None:
    context = write_context(tmp_path / "context", f"""
        FROM {lamina.images.busybox}
        RUN echo built > /built.txt
    """)
    dest = f"{auth_registry.host}/e2e/push-denied:1"
    run = lamina.build(context, "--destination", dest, "--insecure-registry", auth_registry.host, subprocess=True)
    line = assert_clean_failure(run, contains=(auth_registry.host,))
    assert "401" in line or "auth" in line.lower() or "credential" in line.lower(), line
    assert_not_pushed(auth_registry.host, "e2e/push-denied",
                      creds=(auth_base_images.username, auth_base_images.password))


# ---------------------------------------------------------------------------------------------------------------
# tracebacks: hidden by default, allowed with --verbosity debug


def test_debug_verbosity_still_ends_with_the_error(lamina: Lamina, tmp_path: Path) -> None:
    dest = lamina.dest("debug")
    default = lamina.build(tmp_path / "missing", "--destination", dest, subprocess=True)
    assert "Traceback" not in default.output
    debug = lamina.build(tmp_path / "missing", "--destination", dest, "--verbosity", "debug", subprocess=True)
    assert debug.returncode == default.returncode != 0
    assert debug.error_lines()[-1] == default.error_lines()[0], debug.describe()


# ---------------------------------------------------------------------------------------------------------------
# nothing left behind


@pytest.mark.parametrize("outcome", ["fails", "succeeds"])
def test_work_dir_is_emptied(lamina: Lamina, tmp_path: Path, outcome: str) -> None:
    work = tmp_path / "work"
    run, _ = fail(lamina, tmp_path, f"""
        FROM {lamina.images.busybox}
        RUN mkdir -p /big && echo data > /big/file && {'exit 5' if outcome == 'fails' else 'true'}
    """, "--work-dir", str(work), "--no-push")
    assert run.returncode == (5 if outcome == "fails" else 0), run.describe()
    assert work.is_dir()
    assert list(work.iterdir()) == [], "the build's work directory was not removed"
