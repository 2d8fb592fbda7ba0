"""Fixtures of the BuildKit-derived corpus (tests/conformance/test_buildkit_*.py): the same real registry, base
images and ``lamina`` runner as the end-to-end tests."""

from __future__ import annotations

from tests.e2e.conftest import lamina

__all__ = ["lamina"]
