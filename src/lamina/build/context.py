"""The build context: a directory, filtered by ``.dockerignore``, from which COPY takes its sources.

Sources are matched the way BuildKit does it: a path relative to the context root (``..`` never climbs out), with
``*``, ``?`` and ``[...]`` matching within one path component. Ignored paths do not exist for COPY.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lamina.dockerfile.ignore import IgnoreRule, is_ignored, may_contain_included, parse_ignore
from lamina.errors import ContextError

GLOB_CHARS = frozenset("*?[")


def has_glob(text: str) -> bool:
    return any(c in GLOB_CHARS for c in text)


def match_components(rel: str, *, exists: Callable[[str], bool], names: Callable[[str], list[str] | None],
                     below: Callable[[str], Iterable[str]], keep: Callable[[str], bool] = lambda _path: True,
                     deep: bool = False) -> list[str]:
    """The paths a cleaned source with wildcards (``rel``) names, one component at a time: a literal component is
    kept where ``exists(path)``; a wildcard one is matched (fnmatch, case-sensitive) against ``names(directory)``
    (sorted; None when it is not a directory), each match kept where ``keep(path)``; with ``deep``, a ``**``
    component stands for any number of levels, zero included: every path ``below(directory)``."""
    matches = [""]
    for component in rel.split("/"):
        if deep and component == "**":
            matches = sorted({*matches, *(child for parent in matches for child in below(parent))})
            continue
        found: list[str] = []
        for parent in matches:
            if not has_glob(component):
                candidate = posixpath.join(parent, component) if parent else component
                if exists(candidate):
                    found.append(candidate)
                continue
            found.extend(candidate for candidate in ((posixpath.join(parent, n) if parent else n)
                                                     for n in names(parent) or [] if fnmatch.fnmatchcase(n, component))
                         if keep(candidate))
        matches = found
    return matches


def clean_source(source: str) -> str:
    """A COPY source as a context-relative path: ``./a/../b/`` → ``b``; ``/x`` → ``x``; ``..`` stops at the root."""
    parts: list[str] = []
    for part in source.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/".join(parts)


@dataclass(frozen=True)
class BuildContext:
    root: Path
    rules: tuple[IgnoreRule, ...]

    @classmethod
    def load(cls, root: Path, dockerfile: Path) -> BuildContext:
        """Read ``<Dockerfile>.dockerignore`` (BuildKit's per-Dockerfile file) or else ``<context>/.dockerignore``."""
        if not root.is_dir():
            raise ContextError(f"the build context {root} is not a directory" if root.exists()
                               else f"the build context {root} does not exist")
        specific = dockerfile.with_name(dockerfile.name + ".dockerignore")
        for candidate in (specific, root / ".dockerignore"):
            if candidate.is_file():
                try:
                    return cls(root, parse_ignore(candidate.read_text(encoding="utf-8")))
                except (OSError, UnicodeDecodeError) as exc:
                    raise ContextError(f"cannot read {candidate}: {exc}") from None
                except ValueError as exc:
                    raise ContextError(f"{candidate}: {exc}") from None
        return cls(root, ())

    def ignored(self, rel: str) -> bool:
        return bool(rel) and is_ignored(rel, self.rules)

    def host_path(self, rel: str) -> Path:
        return self.root / rel if rel else self.root

    def exists(self, rel: str) -> bool:
        if self.ignored(rel):
            return False
        return os.path.lexists(self.host_path(rel))

    def match(self, source: str, *, deep: bool = False) -> list[str]:
        """Context-relative paths that ``source`` names (sorted); empty when nothing matches. ``deep``: a ``**``
        component matches any number of directories, zero included (``COPY --parents`` patterns)."""
        rel = clean_source(source)
        if not has_glob(rel):
            return [rel] if self.exists(rel) else []

        def names(parent: str) -> list[str] | None:
            try:
                return sorted(os.listdir(self.host_path(parent)))
            except (NotADirectoryError, FileNotFoundError):
                return None

        def below(parent: str) -> Iterable[str]:
            directory = self.host_path(parent)
            return self.walk(parent) if directory.is_dir() and not directory.is_symlink() else ()

        matches = match_components(rel, exists=lambda path: os.path.lexists(self.host_path(path)), names=names,
                                   below=below, deep=deep)
        return [m for m in matches if not self.ignored(m)]

    def walk(self, rel: str) -> Iterator[str]:
        """Every included path below the directory ``rel`` (not ``rel`` itself), parents before children, sorted."""
        directory = self.host_path(rel)
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            raise ContextError(f"cannot read {directory}: {exc.strerror or exc}") from None
        for entry in entries:
            child = posixpath.join(rel, entry.name) if rel else entry.name
            is_dir = entry.is_dir(follow_symlinks=False)
            if self.ignored(child):
                if is_dir and may_contain_included(child, self.rules):
                    yield from self.walk(child)
                continue
            yield child
            if is_dir:
                yield from self.walk(child)
