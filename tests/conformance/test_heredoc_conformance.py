"""BuildKit's heredoc parser tables (../shared/conformance/buildkit-derived/heredoc_cases.json), every one wired."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lamina.dockerfile.parse import (
    Heredoc,
    chomp_heredoc_content,
    heredocs_from_line,
    parse_dockerfile,
    parse_heredoc,
)

ROOT = Path(__file__).resolve().parents[3] / "shared" / "conformance" / "buildkit-derived"
if not ROOT.is_dir():
    pytest.skip("../shared/conformance is absent", allow_module_level=True)

CASES: dict[str, Any] = json.loads((ROOT / "heredoc_cases.json").read_text(encoding="utf-8"))
EXTRACTS = CASES["TestParseExtractsHeredoc"]
HELPERS = CASES["TestParseHeredocHelpers"]
FROM_LINE = CASES["TestHeredocsFromLine"]["cases"]


def _as_dict(heredoc: Heredoc) -> dict[str, Any]:
    return {"name": heredoc.name, "content": heredoc.content, "expand": heredoc.expand, "chomp": heredoc.chomp,
            "file_descriptor": heredoc.file_descriptor}


def test_table_sizes() -> None:
    assert len(EXTRACTS["expected_heredocs_for_children_from_index_1"]) == 27
    assert (len(HELPERS["invalidHeredocs"]), len(HELPERS["notHeredocs"]), len(HELPERS["validHeredocs"])) == (4, 7, 9)
    assert len(FROM_LINE) == 10


@pytest.mark.parametrize("index", range(len(EXTRACTS["expected_heredocs_for_children_from_index_1"])))
def test_parse_extracts_heredoc(index: int) -> None:
    nodes = parse_dockerfile(EXTRACTS["dockerfile"]).nodes
    assert len(nodes) == len(EXTRACTS["expected_heredocs_for_children_from_index_1"]) + 1
    assert nodes[0].keyword == "from"
    expected = EXTRACTS["expected_heredocs_for_children_from_index_1"][index]
    assert [_as_dict(h) for h in nodes[index + 1].heredocs] == (expected or [])


def test_parse_json_heredoc() -> None:
    nodes = parse_dockerfile(CASES["TestParseJSONHeredoc"]["dockerfile"]).nodes
    assert len(nodes) == 4
    for node in nodes[1:]:
        assert node.json_form and node.heredocs == []


@pytest.mark.parametrize("word", HELPERS["notHeredocs"])
def test_not_heredocs(word: str) -> None:
    assert parse_heredoc(word) is None


@pytest.mark.parametrize("word", HELPERS["validHeredocs"])
def test_valid_heredocs(word: str) -> None:
    heredoc = parse_heredoc(word)
    assert heredoc is not None and heredoc.name == "EOF"


@pytest.mark.parametrize("word", HELPERS["invalidHeredocs"])
def test_invalid_heredocs(word: str) -> None:
    with pytest.raises(ValueError):
        parse_heredoc(word)


@pytest.mark.parametrize("case", FROM_LINE, ids=[c["line"] for c in FROM_LINE])
def test_heredocs_from_line(case: dict[str, Any]) -> None:
    names = [h.name for h in heredocs_from_line(case["line"])]
    assert names == case["heredoc_names"][:len(names)]


def test_heredocs_from_line_finds_the_glued_forms() -> None:
    """Stricter than upstream's prefix check where BuildKit's lexer is unambiguous."""
    assert [h.name for h in heredocs_from_line("RUN <<EOF <<EOF2")] == ["EOF", "EOF2"]
    assert [h.name for h in heredocs_from_line("RUN 4<<EOF")] == ["EOF"]
    assert [h.name for h in heredocs_from_line("RUN << -EOF")] == ["-EOF"]
    assert heredocs_from_line("RUN <<- EOF") == []  # '<<-' and 'EOF' are two words


def test_heredoc_chomp() -> None:
    table = CASES["TestHeredocChomp"]
    assert chomp_heredoc_content(table["input"]) == table["expected"]
