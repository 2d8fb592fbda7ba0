"""The job summary and the ``metadata`` output count the cache over filesystem steps (RUN, COPY, ADD, WORKDIR):
FROM, ENV, CMD and the like are never cached, so counting them made a fully cached build look partly built."""

from __future__ import annotations

from lamina.ci import summary
from lamina.progress import StepResult

DIGEST = "sha256:" + "a" * 64


def steps(*texts: str, cached: bool = True) -> tuple[StepResult, ...]:
    out = []
    for index, text in enumerate(texts, 1):
        filesystem = text.split()[0].upper() in ("RUN", "COPY", "ADD", "WORKDIR")
        out.append(StepResult("final", index, len(texts), text, 0.1, 10 if filesystem else None,
                              cached=cached and filesystem))
    return tuple(out)


FULL = steps("FROM busybox", "WORKDIR /app", "COPY . .", "RUN make", "ADD x.tar /", "ENV A=1", 'CMD ["/app/x"]')


def test_cache_line() -> None:
    assert summary.cache_line(FULL) == "all 4 filesystem steps cached"
    assert summary.cache_line(steps("FROM busybox", "run make", "CMD x")) == "the one filesystem step cached"
    assert summary.cache_line(steps("FROM busybox", "RUN a", "COPY b c", cached=False)) == \
        "0 of 2 filesystem steps cached"
    partly = (*steps("FROM busybox", "RUN a"), *steps("COPY b c", cached=False))
    assert summary.cache_line(partly) == "1 of 2 filesystem steps cached"
    assert summary.cache_line(steps("FROM busybox", "LABEL a=b")) == "no filesystem steps"


def test_the_job_summary_says_a_build_was_fully_cached() -> None:
    text = summary.build_summary(title="lamina build", digest=DIGEST, size=1000, tags=("r.example/a:1",),
                                 steps=FULL, pushed=True)
    assert "| Cache | all 4 filesystem steps cached |" in text
    assert "of 7" not in text


def test_metadata_counts_filesystem_steps() -> None:
    meta = summary.metadata(image="r.example/a", digest=DIGEST, config_digest=DIGEST, tags=(), size=1, steps=FULL,
                            pushed=False)
    assert meta["cache"] == {"hits": 4, "steps": 4}
    assert len(meta["steps"]) == 7
