"""Build context matching: sources, wildcards and .dockerignore, as BuildKit resolves COPY sources."""

from __future__ import annotations

from pathlib import Path

from lamina.build.context import BuildContext, clean_source


def make(tmp_path: Path, ignore: str = "") -> BuildContext:
    for rel in ("a.txt", "b.txt", "src/x.py", "src/y.py", "src/sub/z.py", "docs/readme.md", "build/out.o",
                "build/keep.txt"):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rel)
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    if ignore:
        (tmp_path / ".dockerignore").write_text(ignore)
    return BuildContext.load(tmp_path, tmp_path / "Dockerfile")


def test_clean_source_never_leaves_the_context() -> None:
    assert clean_source("./a/../b/") == "b"
    assert clean_source("/x/y") == "x/y"
    assert clean_source("../../etc/passwd") == "etc/passwd"
    assert clean_source(".") == ""


def test_plain_and_wildcard_matches(tmp_path: Path) -> None:
    ctx = make(tmp_path)
    assert ctx.match("a.txt") == ["a.txt"]
    assert ctx.match("missing") == []
    assert ctx.match("*.txt") == ["a.txt", "b.txt"]
    assert ctx.match("src/*.py") == ["src/x.py", "src/y.py"]
    assert ctx.match("*/*.py") == ["src/x.py", "src/y.py"]
    assert ctx.match("?.txt") == ["a.txt", "b.txt"]
    assert ctx.match("[a].txt") == ["a.txt"]


def test_dockerignore_hides_paths(tmp_path: Path) -> None:
    ctx = make(tmp_path, "# comment\n*.md\ndocs\nbuild\n!build/keep.txt\nsrc/sub\n")
    assert ctx.match("docs/readme.md") == []
    assert ctx.match("*.txt") == ["a.txt", "b.txt"]
    assert list(ctx.walk("src")) == ["src/x.py", "src/y.py"]
    walked = list(ctx.walk(""))
    assert "build/keep.txt" in walked and "build/out.o" not in walked
    assert "docs" not in walked and "docs/readme.md" not in walked


def test_dockerfile_specific_ignore_file_wins(tmp_path: Path) -> None:
    make(tmp_path, "a.txt\n")
    (tmp_path / "Dockerfile.dockerignore").write_text("b.txt\n")
    ctx = BuildContext.load(tmp_path, tmp_path / "Dockerfile")
    assert ctx.match("a.txt") == ["a.txt"]
    assert ctx.match("b.txt") == []
