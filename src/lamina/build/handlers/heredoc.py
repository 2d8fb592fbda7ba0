"""Heredocs at build time, with BuildKit's semantics (frontend/dockerfile/dockerfile2llb, dispatchRun/dispatchCopy).

RUN (``run_heredoc_plan``):

- The command line is exactly one heredoc marker (``RUN <<EOF``, ``RUN <<-EOF``, ``RUN <<'EOF'``, even
  ``RUN 3<<EOF``): the first body is the script. When the raw body starts with ``#!`` it is written to a file
  ``/dev/pipes/<name>`` (mode 0755, tabs removed for ``<<-``) and the shell runs that path
  (``/bin/sh -c /dev/pipes/EOF``); otherwise the shell runs the body itself (``/bin/sh -c '<body>'``, tabs removed
  for ``<<-``).
- Anything else (``RUN python3 <<EOF``, ``RUN cat <<A >/a <<B``, ``RUN 3<<EOF cat <&3``): the shell gets the
  command line followed, for each heredoc, by a newline, the raw body and the delimiter, and handles the heredocs
  (and their quoting, ``<<-`` and file descriptors) itself.
- BuildKit never expands a RUN heredoc with the build's variables ("we ignore the expand option"): the shell sees
  ``$VAR`` and expands it from the RUN's environment (which holds the ARGs and ENVs) unless the shell's own quoting
  rules say otherwise. So does lamina.

BuildKit mounts the shebang script read-only at /dev/pipes; lamina's /dev is a noexec tmpfs, so ``execute_run``
(handlers/run.py) writes the plan's files into a fresh directory ``/.lamina-heredoc-<random>`` of the rootfs just
before the run and removes it (restoring the mtime of ``/``) right after, before the snapshot; the history text
(``created_by``) is computed with BuildKit's /dev/pipes path, so it does not depend on that random name.

COPY/ADD (``copy_heredoc_files``): every heredoc becomes a file named after its delimiter, mode 0644 (``--chmod``
overrides it, ``--chown`` sets the owner, as for any source), content chomped for ``<<-`` and expanded with the
build's variables unless the delimiter was quoted. The expansion is BuildKit's "raw" one (``expand_heredoc``):
quotes stay as written, ``$VAR``/``${VAR...}`` are replaced, unset variables become empty, and a backslash escapes
the next character (and is removed), exactly as BuildKit's ``SkipProcessQuotes`` lexer does.

Everything here is pure except ``prepare_copy_heredocs``, which writes the COPY files into a directory it is given.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from lamina.build.handlers.copy import SourceTree
from lamina.dockerfile.instructions import Copy
from lamina.dockerfile.lex import _Lexer
from lamina.dockerfile.parse import Heredoc, chomp_heredoc_content, parse_heredoc

SCRIPT_DIR = "/dev/pipes"  # where BuildKit mounts a shebang script
SCRIPT_MODE = 0o755
COPY_MODE = 0o644
HEREDOC_SOURCE = "\x00heredoc:"  # prefix of the COPY source words that stand for heredoc files


@dataclass(frozen=True)
class RunHeredocPlan:
    """What a heredoc RUN executes: ``argv``, after placing ``files`` (path in the container, content, mode)."""

    argv: tuple[str, ...]
    files: tuple[tuple[str, bytes, int], ...] = ()


def _body(heredoc: Heredoc) -> str:
    return chomp_heredoc_content(heredoc.content) if heredoc.chomp else heredoc.content


def _file_name(heredoc: Heredoc) -> str:
    name = heredoc.name
    if not name or "/" in name or name in (".", "..") or "\x00" in name:
        raise ValueError(f"the heredoc delimiter {name!r} cannot be used as a file name")
    return name


def run_heredoc_plan(args: Sequence[str], heredocs: Sequence[Heredoc], shell: Sequence[str], *,
                     script_dir: str = SCRIPT_DIR) -> RunHeredocPlan:
    """The argv (and files) of a shell-form RUN with heredocs. ``args`` is the RUN's one raw command line,
    ``shell`` the stage's SHELL; ``script_dir`` is where a shebang script is placed (BuildKit: /dev/pipes).
    ValueError when the RUN cannot carry heredocs (exec form)."""
    if len(args) != 1:
        raise ValueError(f"parsing produced an invalid run command: {list(args)}")
    if not heredocs:
        return RunHeredocPlan((*shell, args[0]))
    line = args[0]
    try:
        single = parse_heredoc(line) is not None
    except ValueError:
        single = False
    if single:
        first = heredocs[0]
        if _body(first).startswith("#!"):  # after <<- strips the tabs, as BuildKit looks
            path = f"{script_dir.rstrip('/')}/{_file_name(first)}"
            return RunHeredocPlan((*shell, path), ((path, _body(first).encode("utf-8", "surrogateescape"),
                                                    SCRIPT_MODE),))
        return RunHeredocPlan((*shell, _body(first)))
    full = line + "".join("\n" + h.content + h.name for h in heredocs)
    return RunHeredocPlan((*shell, full))


class _RawLexer(_Lexer):
    """lex.py's lexer with quotes left as they are (BuildKit's ``SkipProcessQuotes``)."""

    def single_quote(self) -> str:
        return self.next()

    def double_quote(self) -> str:
        return self.next()


def expand_heredoc(text: str, env: Mapping[str, str]) -> str:
    """BuildKit's expansion of a COPY heredoc body; ``lex.ExpansionError`` (a ValueError) when malformed."""
    word, _ = _RawLexer(text, env, "\\").process()
    return word


def copy_heredoc_files(heredocs: Sequence[Heredoc], expand: Callable[[str], str]) -> list[tuple[str, bytes]]:
    """(file name, content) of each heredoc of a COPY/ADD, in order. ``expand`` is applied only to heredocs whose
    delimiter was not quoted (normally ``lambda t: expand_heredoc(t, env)``); tabs are removed first for ``<<-``."""
    out: list[tuple[str, bytes]] = []
    for heredoc in heredocs:
        data = _body(heredoc)
        if heredoc.expand:
            data = expand(data)
        out.append((_file_name(heredoc), data.encode("utf-8", "surrogateescape")))
    return out


@dataclass(frozen=True)
class InlineFiles:
    """A SourceTree: the heredoc files of one COPY (``directory/<index>/<name>``) in front of another tree.

    The COPY's heredoc sources are replaced by ``HEREDOC_SOURCE + index`` (``prepare_copy_heredocs``); ``match``
    resolves those to a path whose last component is the file's name, so COPY names the copy after the delimiter
    as BuildKit does (``COPY <<EOF /dir/`` makes ``/dir/EOF``)."""

    inner: SourceTree
    directory: Path
    names: tuple[str, ...]

    @property
    def description(self) -> str:
        return self.inner.description

    @property
    def keeps_owners(self) -> bool:
        return self.inner.keeps_owners  # the heredoc files themselves are 0:0, written by lamina

    def match(self, source: str, *, deep: bool = False) -> list[str]:
        if source.startswith(HEREDOC_SOURCE):
            index = int(source[len(HEREDOC_SOURCE):])
            return [f"{HEREDOC_SOURCE}{index}/{self.names[index]}"]
        return self.inner.match(source, deep=deep)

    def host_path(self, rel: str) -> Path:
        if rel.startswith(HEREDOC_SOURCE):
            return self.directory / rel[len(HEREDOC_SOURCE):]
        return self.inner.host_path(rel)

    def walk(self, directory: Path, rel: str) -> Iterator[tuple[str, Path]]:
        return self.inner.walk(directory, rel)


def prepare_copy_heredocs(inst: Copy, env: Mapping[str, str],
                          directory: Path | None) -> tuple[Copy, Callable[[SourceTree], SourceTree]]:
    """Write the heredoc files of ``inst`` into ``directory`` (empty, removed by the caller afterwards) and return
    the COPY with its heredoc sources replaced by tokens, and the function that puts those files in front of the
    COPY's source tree. Without heredocs: ``inst`` unchanged and the identity; ``directory`` may then be None.
    Raises ``inst.error`` for a body that cannot be expanded."""
    if not inst.heredocs:
        return inst, lambda tree: tree
    if directory is None:
        raise ValueError("a directory is needed for the heredoc files")
    try:
        files = copy_heredoc_files(inst.heredocs, lambda text: expand_heredoc(text, env))
    except ValueError as exc:
        raise inst.error(f"heredoc: {exc}") from None
    by_name = {name: (name, data) for name, data in files}  # BuildKit looks bodies up by name: the last one wins
    sources: list[str] = []
    names: list[str] = []
    for source in inst.sources:
        try:
            marker = parse_heredoc(source)
        except ValueError:
            marker = None
        if marker is None or marker.name not in by_name:
            sources.append(source)
            continue
        name, data = by_name[marker.name]
        index = len(names)
        names.append(name)
        sub = directory / str(index)
        sub.mkdir(mode=0o755)
        fd = os.open(sub / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, COPY_MODE)
        with open(fd, "wb") as f:
            f.write(data)
        os.chmod(sub / name, COPY_MODE)  # whatever the umask
        sources.append(f"{HEREDOC_SOURCE}{index}")
    names_tuple = tuple(names)
    return replace(inst, sources=tuple(sources)), lambda tree: InlineFiles(tree, directory, names_tuple)
