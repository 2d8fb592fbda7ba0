"""BuildKit's Dockerfile parser test data (../shared/conformance): dumps must match byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from lamina.dockerfile.parse import dump_node, parse_dockerfile
from lamina.errors import DockerfileError

ROOT = Path(__file__).resolve().parents[3] / "shared" / "conformance" / "buildkit" / "frontend" / "dockerfile" / "parser"
if not ROOT.is_dir():
    pytest.skip("../shared/conformance is absent", allow_module_level=True)

CASES = sorted(p.name for p in (ROOT / "testfiles").iterdir())
NEGATIVE = sorted(p.name for p in (ROOT / "testfiles-negative").iterdir())


def _read(path: Path) -> str:
    return path.read_bytes().decode("utf-8", "surrogateescape")


def test_case_count() -> None:
    assert len(CASES) == 33
    assert len(NEGATIVE) == 4


@pytest.mark.parametrize("case", CASES)
def test_dump_matches_buildkit(case: str) -> None:
    parsed = parse_dockerfile(_read(ROOT / "testfiles" / case / "Dockerfile"))
    dumped = "".join("(" + dump_node(node) + ")\n" for node in parsed.nodes)
    assert dumped == _read(ROOT / "testfiles" / case / "result")


@pytest.mark.parametrize("case", NEGATIVE)
def test_negative_cases_fail(case: str) -> None:
    with pytest.raises(DockerfileError):
        parse_dockerfile(_read(ROOT / "testfiles-negative" / case / "Dockerfile"))


def test_line_ranges() -> None:
    parsed = parse_dockerfile(_read(ROOT / "testfile-line" / "Dockerfile"))
    assert [(n.start_line, n.end_line) for n in parsed.nodes] == [(5, 5), (11, 12), (17, 31)]
