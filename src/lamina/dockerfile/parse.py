"""Dockerfile text → raw syntax tree, the same tree BuildKit's parser builds.

Nothing is expanded here: arguments stay as written (quotes kept), split the way BuildKit splits each keyword.
``dump_node`` prints a node the way BuildKit's ``Node.Dump`` does, which the conformance tests compare.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field, replace

from lamina.dockerfile.lex import Cursor
from lamina.errors import DockerfileError

_WHITESPACE = re.compile(r"[\t\v\f\r ]+")
_DIRECTIVE = re.compile(r"^#[ \t]*([a-zA-Z][a-zA-Z0-9]*)[ \t]*=[ \t]*(.+?)[ \t]*$")
_VALID_DIRECTIVES = ("escape", "syntax", "check")


@dataclass
class Node:
    """One instruction (or, inside ONBUILD, the nested one) with its raw arguments."""

    keyword: str  # lower case
    args: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    json_form: bool = False  # arguments came from a JSON array
    original: str = ""  # the instruction text with continuations joined
    start_line: int = 0
    end_line: int = 0
    sub: Node | None = None  # ONBUILD's instruction
    heredocs: list[Heredoc] = field(default_factory=list)


@dataclass(frozen=True)
class Heredoc:
    name: str
    content: str
    expand: bool
    chomp: bool
    file_descriptor: int


@dataclass(frozen=True)
class Directives:
    escape: str = "\\"
    syntax: str = ""
    check: str = ""


@dataclass(frozen=True)
class ParsedDockerfile:
    nodes: tuple[Node, ...]
    directives: Directives
    warnings: tuple[str, ...] = ()


def _is_comment(line: str) -> bool:
    return line.lstrip().startswith("#")


class _DirectiveReader:
    """Reads parser directives from the first lines; the first other line ends them."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.done = False
        self.values: dict[str, str] = {}

    def feed(self, line: str, lineno: int) -> None:
        if self.done:
            return
        match = _DIRECTIVE.match(line)
        if not match or match.group(1).lower() not in _VALID_DIRECTIVES:
            self.done = True
            return
        name = match.group(1).lower()
        if name in self.values:
            raise DockerfileError(f"only one {name} parser directive can be used", file=self.file, line=lineno)
        value = match.group(2)
        if name == "escape" and value not in ("\\", "`"):
            raise DockerfileError(f"invalid escape token '{value}' does not match ` or \\", file=self.file,
                                  line=lineno)
        self.values[name] = value


def parse_dockerfile(text: str, *, file: str = "Dockerfile") -> ParsedDockerfile:
    """Parse Dockerfile text; raises DockerfileError naming ``file:line``."""
    text = text.removeprefix("\ufeff")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [line.removesuffix("\r") for line in lines]
    reader = _DirectiveReader(file)
    nodes: list[Node] = []
    warnings: list[str] = []
    escape = "\\"
    continuation = re.compile(re.escape(escape) + r"[ \t]*$")
    i = 0
    while i < len(lines):
        raw = lines[i]
        reader.feed(raw.lstrip(), i + 1)
        if "escape" in reader.values and reader.values["escape"] != escape:
            escape = reader.values["escape"]
            continuation = re.compile(re.escape(escape) + r"[ \t]*$")
        i += 1
        start = i
        first = raw.lstrip()
        if _is_comment(first):
            continue
        line, ended = _trim_continuation(first, continuation)
        if ended and not line.strip():
            continue
        empty_continuation = False
        while not ended and i < len(lines):
            nxt = lines[i]
            reader.feed(nxt, i + 1)
            i += 1
            if _is_comment(nxt):
                continue
            if not nxt.strip():
                empty_continuation = True
                continue
            part, ended = _trim_continuation(nxt, continuation)
            line += part
        if empty_continuation:
            warnings.append(f"{file}:{start}: empty continuation line (deprecated)")
        node = _node_from_line(line, escape, file, start)
        node.start_line, node.end_line = start, i
        i = _read_heredocs(node, lines, i, file)
        nodes.append(node)
    if not nodes:
        raise DockerfileError("the Dockerfile has no instructions", file=file, line=1)
    d = reader.values
    return ParsedDockerfile(tuple(nodes), Directives(d.get("escape", "\\"), d.get("syntax", ""), d.get("check", "")),
                            tuple(warnings))


def _trim_continuation(line: str, continuation: re.Pattern[str]) -> tuple[str, bool]:
    """Strip a trailing escape character (and blanks after it); an even run of escapes is not a continuation."""
    match = continuation.search(line)
    if match:
        escape = line[match.start()]
        run = len(line[: match.start() + 1]) - len(line[: match.start() + 1].rstrip(escape))
        if run % 2 == 1:
            return line[: match.start()], False
    return line, True


def _node_from_line(line: str, escape: str, file: str, lineno: int) -> Node:
    parts = _WHITESPACE.split(line.strip(), maxsplit=1)
    keyword = parts[0].lower()
    rest, flags = _extract_flags(parts[1]) if len(parts) == 2 else ("", [])
    node = Node(keyword=keyword, flags=flags, original=line, start_line=lineno)
    try:
        _fill_args(node, rest, escape, file, lineno)
    except DockerfileError:
        raise
    except ValueError as exc:
        raise DockerfileError(str(exc), file=file, line=lineno) from None
    return node


def _fill_args(node: Node, rest: str, escape: str, file: str, lineno: int) -> None:
    kw = node.keyword
    if kw in ("run", "cmd", "entrypoint", "shell"):
        node.args, node.json_form = _maybe_json(rest)
    elif kw in ("add", "copy", "volume"):
        node.args, node.json_form = _maybe_json_list(rest)
    elif kw in ("from", "expose"):
        node.args = _whitespace_split(rest)
    elif kw in ("user", "workdir", "maintainer", "stopsignal"):
        node.args = [rest] if rest else []
    elif kw in ("env", "label"):
        node.args = _name_values(rest, kw, escape)
    elif kw == "arg":
        node.args = split_words(rest, escape)
    elif kw == "healthcheck":
        first = re.match(r"\S*", rest)
        typ = first.group(0) if first else ""
        if typ:
            cmd, node.json_form = _maybe_json(rest[len(typ):].lstrip())
            node.args = [typ, *cmd]
    elif kw == "onbuild":
        if rest:
            node.sub = _node_from_line(rest, escape, file, lineno)
    else:
        node.args = []


def _extract_flags(line: str) -> tuple[str, list[str]]:
    """Leading ``--flag`` words (quotes removed, as BuildKit); a bare ``--`` ends them."""
    words: list[str] = []
    pos = 0
    n = len(line)
    while True:
        while pos < n and line[pos].isspace():
            pos += 1
        if pos >= n:
            return "", words
        if not line.startswith("--", pos):
            return line[pos:], words
        word = ""
        blank_ok = False
        quote = ""
        while pos < n:
            ch = line[pos]
            if quote:
                if ch == quote:
                    quote = ""
                elif ch == "\\" and pos + 1 < n:
                    pos += 1
                    word += line[pos]
                elif ch != "\\":
                    word += ch
            elif ch.isspace():
                break
            elif ch in "'\"":
                quote = ch
                blank_ok = True
            elif ch == "\\":
                if pos + 1 < n:
                    pos += 1
                    word += line[pos]
            else:
                word += ch
            pos += 1
        if word == "--":
            return line[pos:].lstrip(), words
        if blank_ok or word:
            words.append(word)


def _whitespace_split(rest: str) -> list[str]:
    return _WHITESPACE.split(rest) if rest else []


def _parse_json_array(rest: str) -> list[str] | None:
    """The elements of a JSON string array, or None when ``rest`` is not a JSON array at all."""
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(rest)
    except ValueError:
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(item, str) for item in value):
        raise ValueError("the JSON array must contain only strings")
    return value


def _maybe_json(rest: str) -> tuple[list[str], bool]:
    if not rest:
        return [], False
    items = _parse_json_array(rest)
    if items is not None:
        return items, True
    return [rest], False


def _maybe_json_list(rest: str) -> tuple[list[str], bool]:
    items = _parse_json_array(rest)
    if items is not None:
        return items, True
    return _whitespace_split(rest.strip()), False


def _name_values(rest: str, keyword: str, escape: str) -> list[str]:
    words = split_words(rest, escape)
    if not words:
        return []
    if "=" not in words[0]:
        parts = _WHITESPACE.split(rest, maxsplit=1)
        if len(parts) < 2:
            raise ValueError(f"{keyword.upper()} must have two arguments")
        return [parts[0], parts[1], ""]
    out: list[str] = []
    for word in words:
        if "=" not in word:
            raise ValueError(f"Syntax error - can't find = in {word!r}. Must be of the form: name=value")
        name, value = word.split("=", 1)
        out += [name, value, "="]
    return out


def split_words(rest: str, escape: str = "\\") -> list[str]:
    """Quote-aware split into words, quotes and escapes kept (BuildKit's parseWords)."""
    words: list[str] = []
    word = ""
    in_word = False
    quote = ""
    blank_ok = False
    pos = 0
    n = len(rest)
    while pos < n:
        ch = rest[pos]
        if not in_word:
            if ch.isspace():
                pos += 1
                continue
            in_word = True
        if quote:
            if ch == quote:
                quote = ""
            elif ch == escape and quote != "'":
                if pos + 1 == n:
                    pos += 1
                    continue
                word += ch
                pos += 1
                ch = rest[pos]
            word += ch
            pos += 1
            continue
        if ch.isspace():
            if blank_ok or word:
                words.append(word)
            word, blank_ok, in_word = "", False, False
            pos += 1
            continue
        if ch in "'\"":
            quote = ch
            blank_ok = True
        if ch == escape:
            if pos + 1 == n:
                pos += 1
                continue
            word += ch
            pos += 1
            ch = rest[pos]
        word += ch
        pos += 1
    if in_word and (blank_ok or word):
        words.append(word)
    return words


# --- heredocs ---------------------------------------------------------------------------------------------------
#
# Found the way BuildKit finds them: the whole instruction line is split into words by a shell lexer that keeps
# quotes, escapes and unset ``$VARS`` as written (and glues the blanks after ``<<`` to the word), then every word
# matching ``[fd]<<[-][blanks]delimiter`` where the delimiter lexes to exactly one word is a heredoc. ``expand`` is
# false when any part of the delimiter was quoted. Bodies are kept raw; ``<<-`` only lets the terminator line be
# indented with tabs, the tabs of the body are removed later (``chomp_heredoc_content``).

_HEREDOC_WORD = re.compile(r"([0-9]*)<<(-?)[\t\n\f\r ]*([^<]*)", re.DOTALL)
_LEADING_TABS = re.compile(r"^\t+", re.MULTILINE)
_HEREDOC_KEYWORDS = ("run", "copy", "add")


class _HeredocLexer(Cursor):
    """BuildKit's shell word splitter with an empty environment and unset variables left as written."""

    def __init__(self, text: str, *, raw_quotes: bool, raw_escapes: bool) -> None:
        super().__init__(text)
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes

    def words(self) -> list[str]:
        return self.process("", self.raw_escapes)[1]

    def process(self, stop: str, raw_escapes: bool) -> tuple[str, list[str]]:
        saved, self.raw_escapes = self.raw_escapes, raw_escapes
        try:
            result: list[str] = []
            word = ""
            words: list[str] = []

            def add_raw(text: str) -> None:
                nonlocal word
                word += text

            def add_char(ch: str) -> None:
                nonlocal word
                if ch.isspace():
                    if word:
                        words.append(word)
                        word = ""
                else:
                    word += ch

            while self.peek():
                ch = self.peek()
                if stop and ch == stop:
                    self.next()
                    return "".join(result), words + ([word] if word else [])
                if ch == "$":
                    tmp = self.dollar()
                    result.append(tmp)
                    for c in tmp:
                        add_char(c)
                elif ch in "<'\"":
                    tmp = self.less() if ch == "<" else self.single_quote() if ch == "'" else self.double_quote()
                    result.append(tmp)
                    add_raw(tmp)
                else:
                    ch = self.next()
                    if ch == "\\":
                        if self.raw_escapes:
                            add_raw(ch)
                            result.append(ch)
                        ch = self.next()
                        if not ch:
                            break
                        add_raw(ch)
                    else:
                        add_char(ch)
                    result.append(ch)
            if stop:
                raise ValueError(f"unexpected end of statement while looking for matching {stop}")
            return "".join(result), words + ([word] if word else [])
        finally:
            self.raw_escapes = saved

    def less(self) -> str:
        self.next()
        if self.peek() != "<":
            return "<"
        self.next()
        out = "<<"
        while self.peek() and self.peek() in " \t\r\n":
            out += self.next()
        return out

    def single_quote(self) -> str:
        opening = self.next()
        out = [opening] if self.raw_quotes else []
        while True:
            ch = self.next()
            if not ch:
                raise ValueError("unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                if self.raw_quotes:
                    out.append(ch)
                return "".join(out)
            out.append(ch)

    def double_quote(self) -> str:
        opening = self.next()
        out = [opening] if self.raw_quotes else []
        while True:
            ch = self.peek()
            if not ch:
                raise ValueError("unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self.next()
                if self.raw_quotes:
                    out.append(ch)
                return "".join(out)
            if ch == "$":
                out.append(self.dollar())
                continue
            ch = self.next()
            if ch == "\\":
                if self.raw_escapes:
                    out.append(ch)
                if not self.peek():
                    continue
                if self.peek() in '"$\\':
                    ch = self.next()
            out.append(ch)

    def dollar(self) -> str:
        """Every variable is unset and kept as written (only the forms BuildKit rejects are errors)."""
        self.next()
        if self.peek() != "{":
            name = self.name()
            return "$" + name
        self.next()
        if not self.peek():
            raise ValueError("syntax error: missing '}'")
        if self.peek() in "{}:":
            raise ValueError("syntax error: bad substitution")
        name = self.name()
        ch = self.next()
        if ch == "}":
            return "${" + name + "}"
        modifier = ch
        if ch == ":":  # BuildKit goes on to read a word whatever follows the colon
            ch = self.next()
            modifier += ch
        if modifier.startswith(":") or ch in ("+", "-", "?", "#", "%"):
            try:
                word, _ = self.process("}", ch in ("#", "%"))
            except ValueError:
                raise ValueError("syntax error: missing '}'") from None
            return "${" + name + modifier + word + "}"
        if ch == "/":
            if self.peek() == "/":
                self.next()
            try:
                pattern, _ = self.process("/", True)
                replacement, _ = self.process("}", True)
            except ValueError:
                raise ValueError("syntax error: missing '}'") from None
            return "${" + name + "/" + pattern + "/" + replacement + "}"
        raise ValueError(f"unsupported modifier ({modifier}) in substitution")


def parse_heredoc(word: str) -> Heredoc | None:
    """The heredoc a word such as ``<<EOF``, ``3<<-'EOF'`` or ``<< EOF`` announces (content empty), None when the
    word is not a heredoc marker; ValueError for a malformed delimiter (an unterminated quote). BuildKit's
    ParseHeredoc."""
    match = _HEREDOC_WORD.fullmatch(word)
    if match is None or not match.group(3):
        return None
    rest = match.group(3)
    words = _HeredocLexer(rest, raw_quotes=False, raw_escapes=False).words()
    if len(words) != 1:
        return None
    raw = _HeredocLexer(rest, raw_quotes=True, raw_escapes=False).words()
    if len(raw) != len(words):
        raise ValueError(f"internal lexing of heredoc produced inconsistent results: {rest}")

    def quotes(text: str) -> int:
        return text.count("'") + text.count('"')

    return Heredoc(name=words[0], content="", expand=quotes(words[0]) == quotes(raw[0]),
                   chomp=match.group(2) == "-", file_descriptor=int(match.group(1) or "0"))


def heredocs_from_line(line: str) -> list[Heredoc]:
    """The heredocs an instruction line announces, in order (contents empty); ValueError for a malformed one."""
    try:
        words = _HeredocLexer(line, raw_quotes=True, raw_escapes=True).words()
    except ValueError:
        return []  # BuildKit ignores lexing errors of the line itself
    found: list[Heredoc] = []
    for word in words:
        heredoc = parse_heredoc(word)
        if heredoc is not None:
            found.append(heredoc)
    return found


def chomp_heredoc_content(text: str) -> str:
    """Remove the leading tabs of every line (what ``<<-`` does to a body)."""
    return _LEADING_TABS.sub("", text)


def _can_contain_heredoc(node: Node) -> bool:
    target = node.sub if node.keyword == "onbuild" and node.sub is not None else node
    return target.keyword in _HEREDOC_KEYWORDS and not target.json_form


def _read_heredocs(node: Node, lines: list[str], i: int, file: str) -> int:
    """Consume the bodies of the heredocs the instruction line announces; return the next line index."""
    if not _can_contain_heredoc(node) or "<<" not in node.original:
        return i
    try:
        announced = heredocs_from_line(node.original)
    except ValueError as exc:
        raise DockerfileError(str(exc), file=file, line=node.start_line) from None
    for heredoc in announced:
        body: list[str] = []
        while True:
            if i >= len(lines):
                raise DockerfileError(f"unterminated heredoc {heredoc.name}", file=file, line=node.start_line)
            line = lines[i]
            i += 1
            if (line.lstrip("\t") if heredoc.chomp else line) == heredoc.name:
                break
            body.append(line + "\n")
        node.heredocs.append(replace(heredoc, content="".join(body)))
    if node.sub is not None:
        node.sub.heredocs = list(node.heredocs)
    node.end_line = i
    return i


# --- dump (BuildKit's Node.Dump) ---------------------------------------------------------------------------------

def go_quote(text: str) -> str:
    """Go's strconv.Quote for a string (invalid UTF-8 arrives as surrogate escapes)."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch in '"\\':
            out.append("\\" + ch)
        elif ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif code < 0x80 or _is_printable(ch):
            out.append(ch)
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


_SHORT_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def _is_printable(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "LMNPS" or ch == " "


def dump_node(node: Node) -> str:
    text = node.keyword
    if node.flags:
        text += " [" + " ".join(go_quote(f) for f in node.flags) + "]"
    if node.sub is not None:
        text += " (" + dump_node(node.sub) + ")"
    for arg in node.args:
        text += " " + go_quote(arg)
    return text.strip()
