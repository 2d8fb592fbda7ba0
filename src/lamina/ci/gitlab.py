"""The GitLab CI adapter (being written)."""

from __future__ import annotations

import sys
from collections.abc import Mapping


def main(environ: Mapping[str, str]) -> int:
    sys.stderr.write("error: lamina ci gitlab is not available in this version yet\n")
    return 2
