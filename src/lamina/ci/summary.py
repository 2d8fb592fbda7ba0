"""The job summary (``$GITHUB_STEP_SUMMARY``, GitHub-flavoured Markdown) and the ``metadata`` output of a build."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lamina.console import human_size
from lamina.progress import StepResult


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("`", "'")


# the steps that make a layer, and so may come from the layer cache; FROM, ENV, CMD, ... never do
FILESYSTEM_INSTRUCTIONS = frozenset({"RUN", "COPY", "ADD", "WORKDIR"})


def cache_hits(steps: Sequence[StepResult]) -> int:
    return sum(1 for step in steps if step.cached)


def filesystem_steps(steps: Sequence[StepResult]) -> list[StepResult]:
    return [step for step in steps if (step.text.split() or [""])[0].upper() in FILESYSTEM_INSTRUCTIONS]


def cache_line(steps: Sequence[StepResult]) -> str:
    """How much came from the cache, counting filesystem steps only: "all 4 filesystem steps cached",
    "2 of 4 filesystem steps cached", "no filesystem steps"."""
    total = len(filesystem_steps(steps))
    hits = cache_hits(steps)
    if total == 0:
        return "no filesystem steps"
    if hits == total:
        return "the one filesystem step cached" if total == 1 else f"all {total} filesystem steps cached"
    return f"{hits} of {total} filesystem step{'' if total == 1 else 's'} cached"


def metadata(*, image: str, digest: str, config_digest: str, tags: Sequence[str], size: int,
             steps: Sequence[StepResult], pushed: bool, manifest_digest: str = "", attestation_manifest: str = "",
             attestations: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    """The ``metadata`` output: buildx's metadata-file keys plus tags, size, cache hits and step timings, and (an
    image with attestations) the image manifest's digest and the attestations' (as the metadata file)."""
    extra: dict[str, Any] = {}
    if attestation_manifest:
        extra = {"lamina.image.manifest.digest": manifest_digest,
                 "lamina.attestations": {"manifest": attestation_manifest,
                                         "statements": [{"predicateType": kind, "digest": statement}
                                                        for kind, statement in attestations]}}
    return {**extra,
        "image.name": ",".join(tags) or image,
        "containerimage.digest": digest,
        "containerimage.config.digest": config_digest,
        "tags": list(tags),
        "pushed": pushed,
        "size": size,
        "cache": {"hits": cache_hits(steps), "steps": len(filesystem_steps(steps))},  # filesystem steps only
        "steps": [{"stage": s.stage, "index": s.index, "instruction": s.text, "seconds": round(s.seconds, 3),
                   "cached": s.cached, "layer_size": s.layer_size} for s in steps],
    }


def build_summary(*, title: str, digest: str, size: int, tags: Sequence[str], steps: Sequence[StepResult],
                  pushed: bool, note: str = "") -> str:
    """Markdown: what was built, where it went, and a table of steps (cached or built, seconds, layer size)."""
    lines = [f"### {_cell(title)}", ""]
    if note:
        lines += [f"> {_cell(note)}", ""]
    lines += ["| | |", "|---|---|", f"| Digest | `{digest}` |", f"| Size | {human_size(size)} |",
              f"| Cache | {cache_line(steps)} |",
              f"| Pushed | {'yes' if pushed else 'no'} |"]
    if tags:
        lines.append("| Tags | " + "<br>".join(f"`{_cell(t)}`" for t in tags) + " |")
    lines += ["", "| # | Stage | Step | Result | Seconds | Layer |", "|---:|---|---|---|---:|---:|"]
    for step in steps:
        layer = human_size(step.layer_size) if step.layer_size is not None else ""
        result = "cached" if step.cached else "built"
        lines.append(f"| {step.index} | {_cell(step.stage)} | `{_cell(step.text[:120])}` | {result} | "
                     f"{step.seconds:.2f} | {layer} |")
    return "\n".join(lines) + "\n"


def plan_summary(*, title: str, plan: Sequence[tuple[str, str, str]]) -> str:
    """Markdown for a dry run: each filesystem step with its cache verdict."""
    hits = sum(1 for *_, verdict in plan if verdict == "hit")
    lines = [f"### {_cell(title)} (dry run)", "",
             f"{hits} of {len(plan)} filesystem steps would come from the cache; nothing was run or pushed.", "",
             "| Stage | Step | Cache |", "|---|---|---|"]
    lines += [f"| {_cell(stage)} | `{_cell(text[:120])}` | {verdict} |" for stage, text, verdict in plan]
    return "\n".join(lines) + "\n"


def failure_summary(*, title: str, message: str) -> str:
    return f"### {_cell(title)}\n\n**Build failed:** {_cell(message)}\n"
