"""BuildKit's shell-lexer test data (envVarTest, wordsTest) against lamina.dockerfile.lex."""

from __future__ import annotations

from pathlib import Path

import pytest

from lamina.dockerfile.lex import ExpansionError, expand_word, expand_words

ROOT = Path(__file__).resolve().parents[3] / "shared" / "conformance" / "buildkit" / "frontend" / "dockerfile" / "shell"
if not ROOT.is_dir():
    pytest.skip("../shared/conformance is absent", allow_module_level=True)

ENV = {"PWD": "/home", "SHELL": "bash", "KOREAN": "한국어", "NULL": ""}


def _env_var_cases() -> list[tuple[int, str, str]]:
    cases = []
    for lineno, line in enumerate((ROOT / "envVarTest").read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        tag, source, expected = (part.strip() for part in line.split("|", 2))
        if tag in ("A", "U"):
            cases.append((lineno, source, expected))
    return cases


ENV_CASES = _env_var_cases()


def test_env_var_case_count() -> None:
    assert len(ENV_CASES) == 228


@pytest.mark.parametrize(("lineno", "source", "expected"), ENV_CASES, ids=[str(c[0]) for c in ENV_CASES])
def test_env_var(lineno: int, source: str, expected: str) -> None:
    if expected == "error":
        with pytest.raises(ExpansionError):
            expand_word(source, ENV)
    else:
        assert expand_word(source, ENV) == expected


def _words_cases() -> list[tuple[int, dict[str, str], str, list[str] | None]]:
    env: dict[str, str] = {}
    cases = []
    for lineno, line in enumerate((ROOT / "wordsTest").read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("ENV "):
            name, value = line[3:].lstrip(" ").split("=", 1)
            env[name] = value
            continue
        source, expected = line.split("|", 1)
        want = expected.lstrip(" ")
        cases.append((lineno, dict(env), source.strip(), None if want.strip() == "error" else want.split(",")))
    return cases


WORDS_CASES = _words_cases()


def test_words_case_count() -> None:
    assert len(WORDS_CASES) == 24


@pytest.mark.parametrize(("lineno", "env", "source", "expected"), WORDS_CASES, ids=[str(c[0]) for c in WORDS_CASES])
def test_words(lineno: int, env: dict[str, str], source: str, expected: list[str] | None) -> None:
    if expected is None:
        with pytest.raises(ExpansionError):
            expand_words(source, env)
    else:
        assert expand_words(source, env) == expected
