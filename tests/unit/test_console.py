"""What lamina prints comes out verbatim: no rich markup, no emoji codes, no highlighting (issue 11, item 7)."""

from __future__ import annotations

import io

import pytest

from lamina.console import ConsoleProgress, make_console
from lamina.progress import StepResult

VERBATIM = [
    "svc:x:1001:1001::/home/svc:/bin/sh",  # ":x:" is rich's emoji code for a cross mark
    "[red]not red[/red] [bold]",
    "a \\[escaped] bracket and a trailing backslash \\",
    ":thumbs_up: :smile: 192.168.0.1 True None 'quoted' http://example.com",
]


def _progress() -> tuple[ConsoleProgress, io.StringIO]:
    buffer = io.StringIO()
    console = make_console()
    console.file = buffer
    return ConsoleProgress(console, "info"), buffer


@pytest.mark.parametrize("text", VERBATIM)
def test_step_output_is_verbatim(text: str) -> None:
    progress, buffer = _progress()
    progress.step_output(text)
    assert buffer.getvalue() == text + "\n"


@pytest.mark.parametrize("text", VERBATIM)
def test_step_line_and_messages_are_verbatim(text: str) -> None:
    progress, buffer = _progress()
    progress.step_started("build [1]", 2, 5, f"RUN echo '{text}'")
    progress.message(f"warning: {text}")
    progress.transfer_started("k", f"pull {text}", 10)
    progress.transfer_advanced("k", 10)
    progress.transfer_finished("k")
    lines = buffer.getvalue().splitlines()
    assert lines[0] == f"[build [1]] STEP 2/5: RUN echo '{text}'"
    assert lines[1] == f"warning: {text}"
    assert lines[2].startswith(f"  pull {text}: 10 B in ")


def test_step_finished_keeps_its_own_styles() -> None:
    progress, buffer = _progress()
    progress.step_finished(StepResult(stage="s", index=1, total=1, text="RUN x", seconds=0.5, layer_size=None,
                                      cached=True))
    assert buffer.getvalue() == "  cached in 0.50s, no layer\n"
