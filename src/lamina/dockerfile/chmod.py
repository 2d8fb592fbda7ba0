"""``COPY --chmod`` / ``ADD --chmod`` values, read the way BuildKit reads them. Pure: no filesystem access.

An octal value (``644``, ``0755``, ``0``, up to ``07777``) sets every copied file's mode outright. Anything else is a
symbolic mode as chmod(1) takes it with a umask of 0 (BuildKit parses it with ``mode.ParseWithUmask(s, 0)``):
comma-separated clauses ``[ugoa]*[-+=][rwxXst]*`` (or ``[-+=][ugo]`` to copy another class's bits), applied to each
file's own mode; ``X`` adds execute only to directories and to files that already have an execute bit. A value that
looks numeric but is not a valid octal mode gets BuildKit's error text.
"""

from __future__ import annotations

import re
import stat
from dataclasses import dataclass

_NON_OCTAL = "invalid chmod parameter: '{}'. it should be octal string and between 0 and 07777"
_CLAUSE = re.compile(r"([ugoa]*)((?:[-+=](?:[ugo]|[rwxXst]*))+)")
_ACTION = re.compile(r"([-+=])([ugo]|[rwxXst]*)")
_WHO_BITS = {"u": 0o4700, "g": 0o2070, "o": 0o1007}  # each class's rwx bits with its special bit (setuid, ...)
_PERM_BITS = {"r": 0o444, "w": 0o222, "x": 0o111, "s": 0o6000, "t": 0o1000}


@dataclass(frozen=True)
class Chmod:
    """A parsed --chmod: ``octal`` when it is a number, else the symbolic clauses."""

    text: str
    octal: int | None
    clauses: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()  # (who, ((op, perms), ...))

    def apply(self, mode: int, *, is_dir: bool) -> int:
        """The permission bits (with set-id and sticky bits) a copy of a file of ``mode`` gets."""
        if self.octal is not None:
            return self.octal
        current = stat.S_IMODE(mode)
        for who, actions in self.clauses:
            mask = 0
            for letter in who or "a":  # no class: all of them (the umask is 0)
                mask |= 0o7777 if letter == "a" else _WHO_BITS[letter]
            for op, perms in actions:
                bits = self._bits(perms, current, is_dir) & mask
                if op == "+":
                    current |= bits
                elif op == "-":
                    current &= ~bits
                else:
                    current = (current & ~mask) | bits
        return current

    @staticmethod
    def _bits(perms: str, current: int, is_dir: bool) -> int:
        if perms in _WHO_BITS:  # copy another class's permissions: o=u
            rwx = (current >> {"u": 6, "g": 3, "o": 0}[perms]) & 0o7
            return rwx * 0o111
        bits = 0
        for letter in perms:
            if letter == "X":
                if is_dir or current & 0o111:
                    bits |= 0o111
            else:
                bits |= _PERM_BITS[letter]
        return bits

    @property
    def directory_mode(self) -> int:
        """The mode of the parent directories a copy creates: the octal mode, else 0755 (as BuildKit's fsutil)."""
        return self.octal if self.octal is not None else 0o755


def parse_chmod(text: str) -> Chmod:
    """Parse an (expanded) --chmod value; ValueError with BuildKit's wording when it is invalid."""
    if text[:1].isdigit():  # numeric: octal, or BuildKit's error for it
        if not re.fullmatch(r"[0-7]+", text) or int(text, 8) > 0o7777:
            raise ValueError(_NON_OCTAL.format(text))
        return Chmod(text, int(text, 8))
    clauses = []
    for clause in text.split(","):
        match = _CLAUSE.fullmatch(clause)
        if match is None:
            raise ValueError(f"invalid chmod parameter: {text!r}: expected an octal mode (0644) or a symbolic one "
                             "(u+x, go-w, a=rX)")
        actions = tuple((op, perms) for op, perms in _ACTION.findall(match.group(2)))
        clauses.append((match.group(1), actions))
    return Chmod(text, None, tuple(clauses))
