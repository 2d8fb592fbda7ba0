"""COPY --parents: what each source names and the path it keeps (BuildKit's dispatchCopy: the part before a ``/./``
pivot names the directories, wildcards one level each; the rest is an include pattern, ``**`` any number of
levels), checked on a stage's tree as BuildKit's testCopyRelativeParents builds it."""

from __future__ import annotations

from pathlib import Path

import pytest

from lamina.build.handlers.copy import RootfsSource, matched_source


@pytest.fixture
def tree(tmp_path: Path) -> RootfsSource:
    for directory in ("a/b/c/d/e", "a/b2/c/d/e", "a/b/c2/d/e", "a/b/c2/d/e2"):
        (tmp_path / "test" / directory).mkdir(parents=True, exist_ok=True)
    for name in ("a/b/c/d/foo", "a/b/c/d/e/bay", "a/b2/c/d/e/bar", "a/b/c2/d/e/baz", "a/b/c2/d/e2/baz"):
        (tmp_path / "test" / name).write_text("")
    return RootfsSource(tmp_path, "stage base")


@pytest.mark.parametrize(("text", "expected"), [
    ("/test/a/b/./c/d", [("test/a/b/c/d", "c/d")]),
    ("/test/a/./*/c", [("test/a/b/c", "b/c"), ("test/a/b2/c", "b2/c")]),
    # a wildcard before the pivot: each match keeps its path from the pivot on (lamina kept the whole path)
    ("/test/a/b*/./c/**/e", [("test/a/b/c/d/e", "c/d/e"), ("test/a/b2/c/d/e", "c/d/e")]),
    # ** matches any number of levels, zero included, and files as well as directories
    ("/test/a/b/c*/./d/**/baz", [("test/a/b/c2/d/e/baz", "d/e/baz"), ("test/a/b/c2/d/e2/baz", "d/e2/baz")]),
    ("/test/a/b/./c/**", [("test/a/b/c", "c")]),  # the rest is inside it: copied with it
    ("/test/a/b3*/c", []),
])
def test_parents_match_and_keep(tree: RootfsSource, text: str, expected: list[tuple[str, str]]) -> None:
    assert matched_source(tree, text, parents=True) == expected


def test_without_parents_a_double_star_is_one_level(tree: RootfsSource) -> None:
    assert matched_source(tree, "/test/a/**/c", parents=False) == [("test/a/b/c", "test/a/b/c"),
                                                                    ("test/a/b2/c", "test/a/b2/c")]
    assert matched_source(tree, "/test/**/c", parents=False) == []
