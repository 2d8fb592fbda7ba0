"""Progress events: the core reports what it is doing through a ``Progress`` object; only the CLI and the CI
adapters render them. ``NullProgress`` ignores everything (library use, tests)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class StepResult:
    """What one Dockerfile step did, for the step line and for summaries."""

    stage: str
    index: int  # 1-based within the build
    total: int
    text: str  # the instruction as written, e.g. "RUN apt-get update"
    seconds: float
    layer_size: int | None  # compressed bytes of the layer it made; None when it made no layer
    cached: bool = False


class Progress(Protocol):
    def transfer_started(self, key: str, description: str, total: int | None) -> None: ...

    def transfer_advanced(self, key: str, amount: int) -> None: ...

    def transfer_finished(self, key: str) -> None: ...

    def step_started(self, stage: str, index: int, total: int, text: str) -> None: ...

    def step_output(self, line: str) -> None: ...

    def step_finished(self, result: StepResult) -> None: ...

    def message(self, text: str) -> None: ...


class NullProgress:
    """Discards every event."""

    def transfer_started(self, key: str, description: str, total: int | None) -> None:
        pass

    def transfer_advanced(self, key: str, amount: int) -> None:
        pass

    def transfer_finished(self, key: str) -> None:
        pass

    def step_started(self, stage: str, index: int, total: int, text: str) -> None:
        pass

    def step_output(self, line: str) -> None:
        pass

    def step_finished(self, result: StepResult) -> None:
        pass

    def message(self, text: str) -> None:
        pass
