"""Rendering progress events on a terminal or in a CI log (rich).

On a TTY, pulls and pushes get progress bars; otherwise each transfer is one line when it ends, so CI logs stay
readable. Each step is a line with its number, the instruction and, when it ends, its duration and layer size.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TransferSpeedColumn

from lamina.progress import StepResult

LEVELS = ("panic", "fatal", "error", "warn", "info", "debug", "trace")


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"  # pragma: no cover


def level_at_least(verbosity: str, level: str) -> bool:
    return LEVELS.index(verbosity) >= LEVELS.index(level)


@dataclass
class ConsoleProgress:
    """The CLI's :class:`lamina.progress.Progress`: steps and transfers rendered with rich."""

    console: Console
    verbosity: str = "info"
    bars: Progress | None = None
    tasks: dict[str, TaskID] = field(default_factory=dict)
    plain: dict[str, tuple[str, float, int]] = field(default_factory=dict)  # key -> (description, start, done)

    @property
    def show_steps(self) -> bool:
        return level_at_least(self.verbosity, "info")

    def _bars(self) -> Progress:
        if self.bars is None:
            self.bars = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), console=self.console, transient=True)
            self.bars.start()
        return self.bars

    def transfer_started(self, key: str, description: str, total: int | None) -> None:
        if not self.show_steps:
            return
        if self.console.is_terminal:
            self.tasks[key] = self._bars().add_task(escape(description), total=total)
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
            self.console.print(f"  {escape(description)}: {human_size(done)} in {time.monotonic() - start:.1f}s",
                               highlight=False)

    def step_started(self, stage: str, index: int, total: int, text: str) -> None:
        if self.show_steps:
            self.console.print(f"[bold]\\[{escape(stage)}] STEP {index}/{total}:[/bold] {escape(text)}", highlight=False)

    def step_output(self, line: str) -> None:
        if self.show_steps:
            self.console.print(escape(line), highlight=False, markup=True, soft_wrap=True)

    def step_finished(self, result: StepResult) -> None:
        if not self.show_steps:
            return
        made = f"layer {human_size(result.layer_size)}" if result.layer_size is not None else "no layer"
        verb = "[cyan]cached[/cyan]" if result.cached else "[green]done[/green]"
        self.console.print(f"  {verb} in {result.seconds:.2f}s, {made}", highlight=False)

    def message(self, text: str) -> None:
        if level_at_least(self.verbosity, "warn" if text.startswith("warning") else "info"):
            self.console.print(escape(text), highlight=False)

    def close(self) -> None:
        if self.bars is not None:
            self.bars.stop()
            self.bars = None
