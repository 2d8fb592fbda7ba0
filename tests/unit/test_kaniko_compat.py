"""The pure parts of lamina's Kaniko compatibility: registry-map values as Kaniko writes them, its KANIKO_*
variables, ignored paths in a snapshot, JSON log lines and the no-effect notes."""

from __future__ import annotations

import io
import json

import pytest

from lamina.cli import no_effect_notes, parser
from lamina.console import JsonProgress
from lamina.errors import OptionsError
from lamina.progress import StepResult
from lamina.settings import flag_values, options_from, registry_maps
from lamina.snapshot.diff import Changes, without_paths


@pytest.mark.parametrize("items, expected", [
    (["index.docker.io=mirror.gcr.io"], (("index.docker.io", "mirror.gcr.io"),)),
    (["index.docker.io=a.example;gcr.io=b.example"], (("index.docker.io", "a.example"), ("gcr.io", "b.example"))),
    (["docker.io=a.example;b.example"], (("docker.io", "a.example;b.example"),)),  # lamina's older spelling
    (["docker.io=a.example", "docker.io=b.example"], (("docker.io", "a.example;b.example"),)),
    (["quay.io=q.example;", " ;gcr.io=g.example"], (("quay.io", "q.example"), ("gcr.io", "g.example"))),
])
def test_registry_maps_as_kaniko_writes_them(items: list[str], expected: tuple[tuple[str, str], ...]) -> None:
    assert registry_maps(items) == expected


@pytest.mark.parametrize("items", [["mirror.example"], ["=x"], ["docker.io="]])
def test_bad_registry_maps(items: list[str]) -> None:
    with pytest.raises(OptionsError, match="--registry-map"):
        registry_maps(items)


def test_kaniko_variables_come_after_lamina_ones() -> None:
    env = {"KANIKO_REGISTRY_MIRROR": "k.example", "KANIKO_NO_PUSH": "true",
           "KANIKO_REGISTRY_MAP": "docker.io=m1.example;quay.io=m2.example"}
    options = options_from(flag_values({}, env), env)
    assert options.no_push and options.registry_mirrors == ("k.example",)
    assert options.registry_maps == (("docker.io", "m1.example"), ("quay.io", "m2.example"))
    env["LAMINA_REGISTRY_MIRROR"] = "l.example"
    env["LAMINA_NO_PUSH"] = "false"
    options = options_from(flag_values({"destination": ["r.example/a"]}, env), env)
    assert options.registry_mirrors == ("l.example",) and not options.no_push


def test_ignored_paths_leave_a_snapshot() -> None:
    changes = Changes(upserts=("opt", "opt/keep", "var/run", "var/run/app.pid", "var/runner", "tmp/x"),
                      deletions=("var/run/old", "etc/gone"))
    assert without_paths(changes, ["/var/run", "/tmp/"]) == Changes(upserts=("opt", "opt/keep", "var/runner"),
                                                                     deletions=("etc/gone",))
    assert without_paths(changes, []) is changes


def test_json_log_lines() -> None:
    stream = io.StringIO()
    progress = JsonProgress(stream, "info")
    progress.message("sandbox: namespace")
    progress.step_started("build", 1, 3, "RUN make")
    progress.step_output("compiling")
    progress.step_finished(StepResult("build", 1, 3, "RUN make", 1.5, 2048))
    progress.message("warning: something")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["msg"] for line in lines] == ["sandbox: namespace", "[build] STEP 1/3: RUN make", "compiling",
                                               "done in 1.50s", "something"]
    assert lines[3]["layer_size"] == 2048 and lines[1]["step"] == 1 and lines[4]["level"] == "warn"
    assert all(line["time"].endswith("Z") for line in lines)
    quiet = io.StringIO()
    JsonProgress(quiet, "warn").message("info line")
    assert quiet.getvalue() == ""


def test_no_effect_flags_say_why() -> None:
    args = parser().parse_args(["build", "--snapshot-mode=redo", "--use-new-run", "--compressed-caching=false",
                                "--kaniko-dir", "/kaniko", "--skip-unused-stages", "--force-build-metadata"])
    notes = no_effect_notes(args, {"KANIKO_DIR": "/kaniko"})
    assert [note.split(" has no effect")[0] for note in notes] == [
        "--snapshot-mode", "--use-new-run", "--compressed-caching", "--skip-unused-stages", "--kaniko-dir",
        "--force-build-metadata", "KANIKO_DIR"]
    assert no_effect_notes(parser().parse_args(["build"]), {}) == []
