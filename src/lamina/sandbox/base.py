"""What every RUN sandbox gets (``RunSpec``) and offers (``Runner``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_HOSTNAME = "lamina"  # RUN's hostname; the build arg BUILDKIT_SANDBOX_HOSTNAME changes it


@dataclass(frozen=True)
class MountSpec:
    """One extra mount of a RUN (``RUN --mount``), made after the standard ones and before the chroot."""

    target: str  # absolute, inside the rootfs (symlinks in it are resolved inside the rootfs)
    kind: str  # "bind" or "tmpfs"
    source: Path | None = None  # bind: the host file or directory
    readonly: bool = False
    directory: bool = True  # the target is a directory (False: a file, e.g. a secret)
    size: int | None = None  # tmpfs: bytes (None: the kernel's default)
    # for sandboxes that place mounts instead of mounting them (see placed.py):
    cache: bool = False  # the source is a persistent cache directory: moved into place and back, never copied
    private: bool = False  # the source is a copy made for this RUN alone: it may be moved into place and dropped
    socket: bool = False  # the source is a unix socket (an SSH agent's): linked into place, never copied


@dataclass(frozen=True)
class RunSpec:
    rootfs: Path
    argv: tuple[str, ...]
    env: tuple[str, ...]  # "NAME=value", in order
    cwd: str  # absolute, inside the rootfs
    uid: int
    gid: int
    groups: tuple[int, ...]
    hostname: str = DEFAULT_HOSTNAME  # set where the sandbox has a UTS namespace (namespace, rootless)
    resolv_conf: Path | None = None  # host file bound read-only at /etc/resolv.conf
    hosts: Path | None = None  # host file bound read-only at /etc/hosts
    mounts: tuple[MountSpec, ...] = ()  # RUN --mount, in the order to mount them
    network: str = "default"  # "default" or "host": the host's network; "none": a new namespace with only lo
    secret_env: tuple[tuple[str, Path], ...] = ()  # NAME, host file holding its value (read just before exec)
    # "sandbox": Docker's default capability set (CapBnd 00000000a80425fb, as BuildKit); "insecure" (RUN
    # --security=insecure, BuildKit's security.insecure entitlement): the capabilities lamina runs with
    security: str = "sandbox"
    scratch: Path | None = None  # a directory outside the rootfs for the sandbox's own temporary files


class Runner(Protocol):
    name: str
    places_mounts: bool  # RUN --mount targets are placed (moved, copied) instead of mounted: see placed.py

    def run(self, spec: RunSpec, output: Callable[[bytes], None]) -> int:
        """Run ``spec.argv``; stream its output (stdout and stderr, merged) to ``output``; return its exit status
        (128 + signal number when killed by a signal)."""
        ...
