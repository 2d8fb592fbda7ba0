"""The build context: a directory, filtered by ``.dockerignore``, from which COPY takes its sources.

Sources are matched the way BuildKit does it: a path relative to the context root (``..`` never climbs out), with
``*``, ``?`` and ``[...]`` matching within one path component. Ignored paths do not exist for COPY.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lamina.dockerfile.ignore import IgnoreRule, is_ignored, may_contain_included, parse_ignore
from lamina.errors import ContextError

GLOB_CHARS = frozenset("*?[")


def has_glob(text: str) -> bool:
    return any(c in GLOB_CHARS for c in text)


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
        matches = [""]
        for component in rel.split("/"):
            found: list[str] = []
            if deep and component == "**":
                below = (child for parent in matches if os.path.isdir(self.host_path(parent))
                         and not os.path.islink(self.host_path(parent)) for child in self.walk(parent))
                matches = sorted({*matches, *below})
                continue
            for parent in matches:
                directory = self.host_path(parent)
                if not has_glob(component):
                    candidate = posixpath.join(parent, component) if parent else component
                    if os.path.lexists(self.host_path(candidate)):
                        found.append(candidate)
                    continue
                try:
                    names = sorted(os.listdir(directory))
                except (NotADirectoryError, FileNotFoundError):
                    continue
                found.extend((posixpath.join(parent, n) if parent else n) for n in names
                             if fnmatch.fnmatchcase(n, component))
            matches = found
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
