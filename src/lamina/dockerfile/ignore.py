""".dockerignore rules: parsing and matching, with Docker's semantics. Pure: no I/O.

Each line is a pattern (``#`` starts a comment line, blank lines are skipped, a leading ``!`` makes an exception,
a leading ``/`` is dropped, paths are cleaned). ``*`` matches within one path component, ``?`` one character,
``[...]`` a class, ``**`` any number of components. A pattern matches a path when it matches the path or one of
its parent directories; the last matching pattern decides.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class IgnoreRule:
    pattern: str
    exclude: bool  # False for "!" exceptions
    regex: re.Pattern[str]


def _to_regex(pattern: str) -> re.Pattern[str]:
    out = ["^"]
    i = 0
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if pattern.startswith("**", i):
                i += 2
                if i < n and pattern[i] == "/":
                    out.append("(?:.*/)?")
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(ch))
            else:
                body = pattern[i + 1:end]
                if body.startswith(("!", "^")):
                    body = "^" + body[1:]
                out.append("[" + body + "]")
                i = end
        elif ch == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(ch))
        i += 1
    out.append("$")
    return re.compile("".join(out))


def parse_ignore(text: str) -> tuple[IgnoreRule, ...]:
    """The rules of a .dockerignore file (or of --exclude values, one a line); ValueError for a pattern BuildKit's
    patternmatcher refuses (a lone ``!``)."""
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclude = True
        if line == "!":
            raise ValueError('illegal exclusion pattern: "!"')
        if line.startswith("!"):
            exclude = False
            line = line[1:].strip()
        line = posixpath.normpath(line.lstrip("/")) if line.lstrip("/") else "."
        if line == ".":
            continue
        rules.append(IgnoreRule(line, exclude, _to_regex(line)))
    return tuple(rules)


def is_ignored(path: str, rules: tuple[IgnoreRule, ...]) -> bool:
    """Is the context-relative ``path`` ("src/a.py") excluded by the rules?"""
    if not rules:
        return False
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for rule in rules:
        if any(rule.regex.match(p) for p in prefixes):
            ignored = rule.exclude
    return ignored


def may_contain_included(directory: str, rules: tuple[IgnoreRule, ...]) -> bool:
    """Could an exception rule re-include something below an ignored ``directory``? (then walk into it)"""
    prefix = directory.strip("/") + "/"
    return any(not r.exclude and (r.pattern.startswith(prefix) or "*" in r.pattern) for r in rules)
