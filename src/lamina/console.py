"""Rendering progress events on a terminal or in a CI log (rich).

On a TTY, pulls and pushes get progress bars; otherwise each transfer is one line when it ends, so CI logs stay
readable. Each step is a line with its number, the instruction and, when it ends, its duration and layer size.

Text that comes from a Dockerfile, a command's output or a registry is printed verbatim: it is handed to rich as
``Text`` (never parsed as markup), and consoles are made without emoji codes, so ``svc:x:1001`` stays as it is and
``[red]`` is not a style.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TransferSpeedColumn
from rich.text import Text

from lamina.progress import NullProgress, StepResult

LEVELS = ("panic", "fatal", "error", "warn", "info", "debug", "trace")


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"  # pragma: no cover


def make_console(*, stderr: bool = False, log_format: str = "color") -> Console:
    """A console for lamina's output: no emoji codes, no automatic highlighting, long lines kept whole; with
    ``log_format`` "text", no colours or styles either (Kaniko's --log-format text)."""
    if log_format == "text":
        return Console(stderr=stderr, highlight=False, emoji=False, soft_wrap=True, color_system=None,
                       no_color=True)
    return Console(stderr=stderr, highlight=False, emoji=False, soft_wrap=True)


def timestamp() -> str:
    """Now, as Kaniko's logs write it (RFC 3339, UTC)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def level_at_least(verbosity: str, level: str) -> bool:
    return LEVELS.index(verbosity) >= LEVELS.index(level)


@dataclass
class ConsoleProgress:
    """The CLI's :class:`lamina.progress.Progress`: steps and transfers rendered with rich."""

    console: Console
    verbosity: str = "info"
    timestamps: bool = False  # --log-timestamp: each line begins with the time
    bars: Progress | None = None
    tasks: dict[str, TaskID] = field(default_factory=dict)
    plain: dict[str, tuple[str, float, int]] = field(default_factory=dict)  # key -> (description, start, done)

    @property
    def show_steps(self) -> bool:
        return level_at_least(self.verbosity, "info")

    def _bars(self) -> Progress:
        if self.bars is None:
            self.bars = Progress(TextColumn("{task.description}", markup=False), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), console=self.console, transient=True)
            self.bars.start()
        return self.bars

    def transfer_started(self, key: str, description: str, total: int | None) -> None:
        if not self.show_steps:
            return
        if self.console.is_terminal:
            self.tasks[key] = self._bars().add_task(description, total=total)
        else:
            self.plain[key] = (description, time.monotonic(), 0)

    def transfer_advanced(self, key: str, amount: int) -> None:
        if key in self.tasks and self.bars is not None:
            self.bars.advance(self.tasks[key], amount)
        elif key in self.plain:
            description, start, done = self.plain[key]
            self.plain[key] = (description, start, done + amount)

    def transfer_finished(self, key: str) -> None:
        if key in self.tasks and self.bars is not None:
            self.bars.remove_task(self.tasks.pop(key))
            if not self.tasks:
                self.bars.stop()
                self.bars = None
        elif key in self.plain:
            description, start, done = self.plain.pop(key)
            self._print(Text(f"  {description}: {human_size(done)} in {time.monotonic() - start:.1f}s"))

    def _print(self, text: Text) -> None:
        if self.timestamps:
            text = Text.assemble(timestamp() + " ", text)
        self.console.print(text, soft_wrap=True)

    def step_started(self, stage: str, index: int, total: int, text: str) -> None:
        if self.show_steps:
            self._print(Text.assemble((f"[{stage}] STEP {index}/{total}:", "bold"), " ", text))

    def step_output(self, line: str) -> None:
        if self.show_steps:
            self._print(Text(line))

    def step_finished(self, result: StepResult) -> None:
        if not self.show_steps:
            return
        made = f"layer {human_size(result.layer_size)}" if result.layer_size is not None else "no layer"
        verb = ("cached", "cyan") if result.cached else ("done", "green")
        self._print(Text.assemble("  ", verb, f" in {result.seconds:.2f}s, {made}"))

    def message(self, text: str) -> None:
        if level_at_least(self.verbosity, "warn" if text.startswith("warning") else "info"):
            self._print(Text(text))

    def close(self) -> None:
        if self.bars is not None:
            self.bars.stop()
            self.bars = None


@dataclass
class JsonProgress(NullProgress):
    """Progress as JSON lines (Kaniko's --log-format json, logrus's keys): ``{"level", "msg", "time"}``, plus
    ``stage`` and ``step`` on step events; RUN output lines too, so a log collector gets every line as an object.
    Transfers are not logged (their bars are for terminals)."""

    stream: TextIO = field(default_factory=lambda: sys.stdout)
    verbosity: str = "info"

    @property
    def show_steps(self) -> bool:
        return level_at_least(self.verbosity, "info")

    def emit(self, level: str, msg: str, **extra: object) -> None:
        if level_at_least(self.verbosity, level):
            self.stream.write(json.dumps({"level": level, "msg": msg, "time": timestamp(), **extra}) + "\n")
            self.stream.flush()

    def step_started(self, stage: str, index: int, total: int, text: str) -> None:
        self.emit("info", f"[{stage}] STEP {index}/{total}: {text}", stage=stage, step=index)

    def step_output(self, line: str) -> None:
        self.emit("info", line)

    def step_finished(self, result: StepResult) -> None:
        self.emit("info", f"{'cached' if result.cached else 'done'} in {result.seconds:.2f}s", stage=result.stage,
                  step=result.index, cached=result.cached, seconds=round(result.seconds, 3),
                  layer_size=result.layer_size)

    def message(self, text: str) -> None:
        if text.startswith("warning"):
            self.emit("warn", text.removeprefix("warning:").strip())
        else:
            self.emit("info", text)

    def close(self) -> None:
        pass
