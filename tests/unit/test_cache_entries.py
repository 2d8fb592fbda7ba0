"""Cache entries that keep a base image's config inside their manifest (no blob GET to read it back)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

from lamina.cache.entries import CONFIG_TAG_PREFIX, KEY, config_entry_manifest, parse_config_entry
from lamina.oci.digest import compute_digest
from lamina.oci.model import OCI_CONFIG, Descriptor

CONFIG = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Env": ["PATH=/bin"]}}).encode()
WHEN = datetime(2026, 11, 30, tzinfo=UTC)


def descriptor(config: bytes = CONFIG) -> Descriptor:
    return Descriptor(OCI_CONFIG, compute_digest(config), len(config))


def test_config_entry_round_trip() -> None:
    body = config_entry_manifest(CONFIG, compute_digest(CONFIG), WHEN)
    manifest = json.loads(body)
    assert manifest["layers"] == []
    assert manifest["config"]["digest"] == compute_digest(CONFIG)
    assert manifest["annotations"][KEY] == CONFIG_TAG_PREFIX + compute_digest(CONFIG)[7:]
    assert parse_config_entry(body, descriptor()) == CONFIG


def test_config_entry_for_another_config_or_tampered_is_ignored() -> None:
    body = config_entry_manifest(CONFIG, compute_digest(CONFIG), WHEN)
    other = CONFIG.replace(b"amd64", b"arm64")
    assert parse_config_entry(body, descriptor(other)) is None
    manifest = json.loads(body)
    manifest["config"]["data"] = base64.b64encode(other).decode()
    assert parse_config_entry(json.dumps(manifest).encode(), descriptor()) is None
    manifest["config"]["data"] = "not base64!"
    assert parse_config_entry(json.dumps(manifest).encode(), descriptor()) is None
    assert parse_config_entry(b"{}", descriptor()) is None
    assert parse_config_entry(b"not json", descriptor()) is None
