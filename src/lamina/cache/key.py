"""Cache keys: chained sha256 digests from the base image through every filesystem step. Pure: no I/O.

A step's key covers everything that decides its result without running it: the key before it, the instruction as
written (its flags and heredoc bodies included), the image config in force (ENV, USER, WORKDIR, SHELL, ...), the
build args in scope, the platform, and ``inputs``: what the step reads from outside the image, such as the digest
of the COPY sources or the key of a stage it copies from. Secret values and cache-mount contents never enter a key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

KEY_VERSION = "lamina-cache-v1"


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def compute_base_key(kind: str, identity: str, platform: str) -> str:
    """The key a stage starts from: ``kind`` is "image" (identity: the platform manifest's digest), "scratch" or
    "stage" (identity: that stage's last key)."""
    return _digest({"version": KEY_VERSION, "base": kind, "identity": identity, "platform": platform})


def compute_step_key(parent: str, *, instruction: str, config: Mapping[str, Any], args: Mapping[str, str],
                     platform: str, inputs: Mapping[str, str]) -> str:
    """The key of one filesystem step (RUN, COPY, ADD, WORKDIR)."""
    return _digest({"version": KEY_VERSION, "parent": parent, "instruction": instruction, "config": dict(config),
                    "args": dict(args), "platform": platform, "inputs": dict(inputs)})


def compute_executed_key(parent: str, instruction: str, diff_id: str | None) -> str:
    """The key after a step whose inputs cannot be known before it runs (ADD of a URL without --checksum):
    chained from what it produced, so later steps never reuse entries made from different content."""
    return _digest({"version": KEY_VERSION, "parent": parent, "instruction": instruction, "produced": diff_id or ""})


def compute_link_chain(parent: str, step: str) -> str:
    """The stage's key after a --link copy, whose own key ``step`` is not chained from the layers below: the two
    chained, so later steps still depend on everything below."""
    return _digest({"version": KEY_VERSION, "parent": parent, "linked": step})
