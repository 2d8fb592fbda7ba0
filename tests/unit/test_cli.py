"""The CLI's flag handling: Kaniko names, LAMINA_* variables, build args, and the README's flag table."""

from __future__ import annotations

from pathlib import Path

import pytest

from lamina.cli import build_flag_values, parser
from lamina.errors import OptionsError
from lamina.settings import BUILD_FLAGS, options_from, parse_build_args

README = Path(__file__).resolve().parents[2] / "README.md"


def values(argv: list[str], environ: dict[str, str] | None = None) -> dict[str, object]:
    return build_flag_values(parser().parse_args(["build", *argv]), environ or {})


def test_kaniko_flag_names_and_defaults(tmp_path: Path) -> None:
    opts = options_from(values(["--context", str(tmp_path), "--destination", "r.example/a:1", "-d", "r.example/b"]),
                        {})
    assert opts.context == tmp_path
    assert opts.dockerfile == tmp_path / "Dockerfile"
    assert opts.destinations == ("r.example/a:1", "r.example/b")
    assert not opts.no_push


def test_environment_variables_fill_unset_flags() -> None:
    env = {"LAMINA_DESTINATION": "r.example/a:1, r.example/a:2", "LAMINA_NO_PUSH": "true",
           "LAMINA_BUILD_ARG": "A=1,B=2", "LAMINA_TARGET": "final", "LAMINA_INSECURE_REGISTRY": "r.example"}
    opts = options_from(values([], env), env)
    assert opts.destinations == ("r.example/a:1", "r.example/a:2")
    assert opts.no_push
    assert opts.build_args == (("A", "1"), ("B", "2"))
    assert opts.target == "final"
    assert opts.insecure_registries == frozenset({"r.example"})


def test_command_line_wins_over_environment() -> None:
    env = {"LAMINA_TARGET": "from-env", "LAMINA_DESTINATION": "r.example/env"}
    opts = options_from(values(["--target", "from-cli", "--destination", "r.example/cli"], env), env)
    assert opts.target == "from-cli"
    assert opts.destinations == ("r.example/cli",)


def test_bad_boolean_variable_is_an_options_error() -> None:
    with pytest.raises(OptionsError, match="LAMINA_NO_PUSH"):
        values([], {"LAMINA_NO_PUSH": "maybe"})


def test_build_arg_without_value_comes_from_environment() -> None:
    assert parse_build_args(["A=1", "HOME_DIR", "MISSING", "E="], {"HOME_DIR": "/h"}) == (
        ("A", "1"), ("HOME_DIR", "/h"), ("E", ""))


def test_no_destination_without_no_push_is_refused() -> None:
    with pytest.raises(OptionsError, match="--no-push"):
        options_from(values([]), {})


def test_context_schemes(tmp_path: Path) -> None:
    opts = options_from(values(["--context", f"dir://{tmp_path}", "--no-push"]), {})
    assert opts.context == tmp_path and opts.context_source is None
    opts = options_from(values(["--context", "git://example.com/repo.git#refs/heads/main", "--no-push",
                                "--dockerfile", "sub/Dockerfile", "--context-sub-path", "app"]), {})
    assert opts.context_source == "git://example.com/repo.git#refs/heads/main" and opts.context_sub_path == "app"
    assert opts.dockerfile == Path("sub/Dockerfile")  # found in the context once it is fetched
    opts = options_from(values(["--dockerfile", "https://example.com/Dockerfile", "--no-push"]), {})
    assert opts.dockerfile_url == "https://example.com/Dockerfile"
    with pytest.raises(OptionsError, match="unknown context scheme ftp://"):
        options_from(values(["--context", "ftp://example.com/ctx.tar", "--no-push"]), {})
    with pytest.raises(OptionsError, match="--git depth=1: expected branch=NAME"):
        options_from(values(["--context", "git://example.com/r.git", "--git", "depth=1", "--no-push"]), {})


def test_source_date_epoch_is_read() -> None:
    assert options_from(values(["--no-push"]), {"SOURCE_DATE_EPOCH": "1700000000"}).source_date_epoch == 1700000000
    with pytest.raises(OptionsError, match="SOURCE_DATE_EPOCH"):
        options_from(values(["--no-push"]), {"SOURCE_DATE_EPOCH": "yesterday"})


def test_bad_verbosity_is_refused() -> None:
    with pytest.raises(OptionsError, match="verbosity"):
        options_from(values(["--no-push", "--verbosity", "loud"]), {})


@pytest.mark.parametrize("flag", BUILD_FLAGS, ids=lambda f: f.name)
def test_readme_documents_every_flag(flag: object) -> None:
    text = README.read_text()
    assert f"`{flag.name}" in text  # type: ignore[attr-defined]
    assert f"`{flag.env}`" in text  # type: ignore[attr-defined]


def test_sizes_parse_with_binary_units() -> None:
    from lamina.options import parse_size

    assert parse_size("0") == 0
    assert parse_size("4096") == 4096
    assert parse_size("512M") == 512 << 20
    assert parse_size("1g") == 1 << 30
    assert parse_size("2GiB") == 2 << 30
    assert parse_size("64k") == 64 << 10
    for bad in ("", "M", "1.5G", "-1", "ten"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_memory_budget_is_a_quarter_of_what_is_available_at_most_one_gib() -> None:
    from lamina.rootfs.mounts import memory_budget

    assert memory_budget(400 << 20) == 100 << 20
    assert memory_budget(64 << 30) == 1 << 30
    assert memory_budget(0) == 0


def test_an_unknown_sandbox_is_a_bad_setting(capsys: pytest.CaptureFixture[str]) -> None:
    """Checked with the other settings, before anything runs: exit 2, as for every bad flag (it was a sandbox error,
    exit 1, found only when the build chose its sandbox)."""
    from lamina.cli import main

    assert main(["build", "--no-push", "--sandbox", "bogus"], environ={"HOME": "/nonexistent"}) == 2
    err = capsys.readouterr().err
    assert "--sandbox bogus: expected one of auto, namespace, rootless, chroot, inplace" in err
    with pytest.raises(OptionsError, match="LAMINA_SANDBOX|--sandbox"):
        options_from(values(["--no-push"], {"LAMINA_SANDBOX": "bogus"}), {})
