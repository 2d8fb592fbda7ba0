"""What the BuildKit-derived corpus modules (test_buildkit_*.py) share: how a case reaches the test registry's
images, and strict xfail parameters for cases lamina does not match yet."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Lamina
from tests.e2e.table_support import Case, check_case


def mirror_args(lamina: Lamina, tmp: Path) -> tuple[str, ...]:
    """Docker Hub names served by the test registry; a mount cache of the test's own."""
    return ("--registry-mirror", lamina.images.mirror, "--skip-default-registry-fallback",
            "--mount-cache-dir", str(tmp / "mount-cache"))


def run_case(case: Case, lamina: Lamina, tmp: Path) -> list[str]:
    """``check_case`` with the Docker Hub names of the Dockerfile served by the test registry."""
    return check_case(dataclasses.replace(case, extra_args=(*case.extra_args, *mirror_args(lamina, tmp))),
                      lamina, tmp)


def xfail(case: Case, reason: str) -> Any:
    return pytest.param(case, id=case.name, marks=pytest.mark.xfail(strict=True, reason=reason))


def params(cases: Sequence[Case], reasons: Mapping[str, str]) -> list[Any]:
    """One parameter per case, a strict xfail where ``reasons`` names it."""
    return [xfail(c, reasons[c.name]) if c.name in reasons else pytest.param(c, id=c.name) for c in cases]
