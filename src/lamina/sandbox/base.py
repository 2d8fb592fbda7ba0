"""What every RUN sandbox gets (``RunSpec``) and offers (``Runner``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class RunSpec:
    rootfs: Path
    argv: tuple[str, ...]
    env: tuple[str, ...]  # "NAME=value", in order
    cwd: str  # absolute, inside the rootfs
    uid: int
    gid: int
    groups: tuple[int, ...]
    hostname: str = "lamina"
    resolv_conf: Path | None = None  # host file bound read-only at /etc/resolv.conf
    hosts: Path | None = None  # host file bound read-only at /etc/hosts


class Runner(Protocol):
    name: str

    def run(self, spec: RunSpec, output: Callable[[bytes], None]) -> int:
        """Run ``spec.argv``; stream its output (stdout and stderr, merged) to ``output``; return its exit status
        (128 + signal number when killed by a signal)."""
        ...
