"""Shell-style word processing with BuildKit's semantics: quote removal, escapes and ``$VAR`` expansion.

``expand_word`` gives one word (ENV values, WORKDIR, USER, ...); ``expand_words`` splits unquoted text and unquoted
expansions on whitespace (FROM, COPY sources, EXPOSE, ...). Supported: ``$V ${V} ${V:-w} ${V-w} ${V:+w} ${V+w}
${V:?m} ${V?m} ${V#p} ${V##p} ${V%p} ${V%%p} ${V/p/r} ${V//p/r}``. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_SPECIAL_PARAMS = "@*#?-$!0"


class ExpansionError(ValueError):
    """Malformed text for expansion; callers turn it into a DockerfileError with file:line."""


class _Words:
    """Accumulates characters into words; unquoted whitespace separates them."""

    def __init__(self) -> None:
        self.word = ""
        self.words: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if ch.isspace():
            if self.in_word and self.word:
                self.words.append(self.word)
                self.word = ""
                self.in_word = False
        else:
            self.add_raw(ch)

    def add_raw(self, text: str) -> None:
        self.word += text
        self.in_word = True

    def add_string(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def result(self) -> list[str]:
        if self.word:
            self.words.append(self.word)
            self.word = ""
            self.in_word = False
        return self.words


class Cursor:
    """A position in a text, read one character at a time (the lexers here and in parse.py)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def next(self) -> str:
        ch = self.peek()
        if ch:
            self.pos += 1
        return ch

    def name(self) -> str:
        """A parameter name: digits, one special character, or letters, digits and '_'."""
        ch = self.peek()
        if ch.isdigit():
            start = self.pos
            while self.peek().isdigit():
                self.next()
            return self.text[start:self.pos]
        if ch and ch in _SPECIAL_PARAMS:
            return self.next()
        start = self.pos
        while self.peek() and (self.peek().isalnum() or self.peek() == "_"):
            self.next()
        return self.text[start:self.pos]


class _Lexer(Cursor):
    def __init__(self, text: str, env: Mapping[str, str], escape: str) -> None:
        super().__init__(text)
        self.env = env
        self.escape = escape

    def process(self, stop: str = "", raw_escapes: bool = False) -> tuple[str, list[str]]:
        """Read until one of ``stop`` (consumed) or the end; return (joined text, split words)."""
        result: list[str] = []
        words = _Words()
        while self.peek():
            ch = self.peek()
            if stop and ch in stop:
                self.next()
                return "".join(result), words.result()
            if ch == "'":
                tmp = self.single_quote()
                result.append(tmp)
                words.add_raw(tmp)
            elif ch == '"':
                tmp = self.double_quote()
                result.append(tmp)
                words.add_raw(tmp)
            elif ch == "$":
                tmp = self.dollar()
                result.append(tmp)
                words.add_string(tmp)
            else:
                ch = self.next()
                if ch == self.escape:
                    if raw_escapes:
                        words.add_raw(ch)
                        result.append(ch)
                    ch = self.next()
                    if not ch:
                        break
                    words.add_raw(ch)
                else:
                    words.add_char(ch)
                result.append(ch)
        if stop:
            raise ExpansionError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words.result()

    def single_quote(self) -> str:
        self.next()
        out: list[str] = []
        while True:
            ch = self.next()
            if not ch:
                raise ExpansionError("unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                return "".join(out)
            out.append(ch)

    def double_quote(self) -> str:
        self.next()
        out: list[str] = []
        while True:
            ch = self.peek()
            if not ch:
                raise ExpansionError("unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self.next()
                return "".join(out)
            if ch == "$":
                out.append(self.dollar())
                continue
            ch = self.next()
            if ch == self.escape:
                following = self.peek()
                if not following:
                    continue
                if following in ('"', "$", self.escape):
                    ch = self.next()
            out.append(ch)

    def lookup(self, name: str) -> tuple[str, bool]:
        if name in self.env:
            return self.env[name], True
        return "", False

    def dollar(self) -> str:
        self.next()  # '$'
        if self.peek() != "{":
            name = self.name()
            if not name:
                return "$"
            return self.lookup(name)[0]
        self.next()  # '{'
        if not self.peek():
            raise ExpansionError("syntax error: missing '}'")
        if self.peek() in "{}:":
            raise ExpansionError("syntax error: bad substitution")
        name = self.name()
        ch = self.next()
        if ch == "}":
            return self.lookup(name)[0]
        if not name:
            raise ExpansionError("syntax error: bad substitution")
        modifier = ch
        null_is_unset = False
        if ch == ":":
            null_is_unset = True
            ch = self.next()
            modifier += ch
        if ch in ("+", "-", "?", "#", "%"):
            raw = ch in "#%"
            if null_is_unset and raw:
                raise ExpansionError(f"unsupported modifier ({modifier}) in substitution")
            try:
                word, _ = self.process("}", raw_escapes=raw)
            except ExpansionError:
                raise ExpansionError("syntax error: missing '}'") from None
            value, is_set = self.lookup(name)
            empty = not is_set or (null_is_unset and value == "")
            if ch == "-":
                return word if empty else value
            if ch == "+":
                return "" if empty else word
            if ch == "?":
                if not is_set:
                    raise ExpansionError(f"{name}: {word or 'is not allowed to be unset'}")
                if null_is_unset and value == "":
                    raise ExpansionError(f"{name}: {word or 'is not allowed to be empty'}")
                return value
            greedy = word.startswith(ch)
            if greedy:
                word = word[1:]
            return _trim(value, word, greedy, suffix=ch == "%")
        if ch == "/" and not null_is_unset:
            replace_all = self.peek() == "/"
            if replace_all:
                self.next()
            try:
                pattern, _ = self.process("/}", raw_escapes=True)
            except ExpansionError:
                raise ExpansionError("syntax error: missing '}'") from None
            replacement = ""
            if self.text[self.pos - 1] == "/":
                try:
                    replacement, _ = self.process("}", raw_escapes=True)
                except ExpansionError:
                    raise ExpansionError("syntax error: missing '}'") from None
            value, _ = self.lookup(name)
            return _replace(value, pattern, _unescape(replacement, self.escape), replace_all, self.escape)
        raise ExpansionError(f"unsupported modifier ({modifier}) in substitution")


def _unescape(text: str, escape: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == escape and i + 1 < len(text):
            i += 1
        out.append(text[i])
        i += 1
    return "".join(out)


def _pattern_regex(pattern: str, escape: str = "\\") -> re.Pattern[str]:
    """A shell glob (``*``, ``?``, ``[...]``, escapes) as a regex that must match a whole string."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == escape and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        elif ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1:i + 2] in ("!", "^") else i + 1)
            if end == -1:
                out.append(re.escape(ch))
            else:
                body = pattern[i + 1:end]
                if body[:1] in ("!", "^"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def _trim(value: str, pattern: str, greedy: bool, *, suffix: bool) -> str:
    regex = _pattern_regex(pattern)
    lengths = range(len(value), -1, -1) if greedy else range(len(value) + 1)
    for n in lengths:
        part = value[len(value) - n:] if suffix else value[:n]
        if regex.fullmatch(part):
            return value[:len(value) - n] if suffix else value[n:]
    return value


def _replace(value: str, pattern: str, replacement: str, replace_all: bool, escape: str) -> str:
    if not pattern:
        return value
    regex = _pattern_regex(pattern, escape)
    out: list[str] = []
    i = 0
    while i <= len(value):
        match_end = -1
        for end in range(len(value), i, -1):
            if regex.fullmatch(value, i, end):
                match_end = end
                break
        if match_end == -1:
            if i < len(value):
                out.append(value[i])
            i += 1
            continue
        out.append(replacement)
        i = match_end
        if not replace_all:
            out.append(value[i:])
            return "".join(out)
    return "".join(out)


def expand_word(text: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """Quote removal, escapes and expansion into one word."""
    lexer = _Lexer(text, env, escape)
    word, _ = lexer.process()
    return word


def expand_words(text: str, env: Mapping[str, str], escape: str = "\\") -> list[str]:
    """Like ``expand_word`` but split on unquoted whitespace, including inside unquoted expansions."""
    lexer = _Lexer(text, env, escape)
    _, words = lexer.process()
    return words
