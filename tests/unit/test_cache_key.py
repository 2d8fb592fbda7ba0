"""Cache keys: what changes a key and what does not."""

from __future__ import annotations

from lamina.cache.key import compute_base_key, compute_executed_key, compute_step_key

BASE = compute_base_key("image", "sha256:" + "a" * 64, "linux/amd64")


def key(**changes: object) -> str:
    values: dict[str, object] = {"instruction": "RUN make", "config": {"Env": ["A=1"], "User": ""},
                                 "args": {"V": "1"}, "platform": "linux/amd64", "inputs": {}}
    values.update(changes)
    parent = str(changes.pop("parent", BASE)) if "parent" in changes else BASE
    values.pop("parent", None)
    return compute_step_key(parent, **values)  # type: ignore[arg-type]


def test_same_inputs_same_key() -> None:
    assert key() == key()
    assert len(key()) == 64


def test_every_input_changes_the_key() -> None:
    base = key()
    assert key(instruction="RUN make install") != base
    assert key(config={"Env": ["A=2"], "User": ""}) != base
    assert key(config={"Env": ["A=1"], "User": "app"}) != base
    assert key(args={"V": "2"}) != base
    assert key(platform="linux/arm64") != base
    assert key(inputs={"sources": "sha256:1"}) != base
    assert key(parent=compute_base_key("image", "sha256:" + "b" * 64, "linux/amd64")) != base


def test_base_keys_differ_by_kind_identity_and_platform() -> None:
    keys = {compute_base_key("image", "sha256:x", "linux/amd64"), compute_base_key("image", "sha256:y", "linux/amd64"),
            compute_base_key("image", "sha256:x", "linux/arm64"), compute_base_key("scratch", "", "linux/amd64"),
            compute_base_key("stage", "sha256:x", "linux/amd64")}
    assert len(keys) == 5


def test_executed_key_follows_content() -> None:
    assert compute_executed_key(BASE, "ADD http://x/f /f", "sha256:1") != compute_executed_key(BASE,
                                                                                              "ADD http://x/f /f",
                                                                                              "sha256:2")
