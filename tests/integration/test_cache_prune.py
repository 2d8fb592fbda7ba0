"""Pruning a cache repository in a real docker-registry: stale entries go, the newest and everything that is not a
cache entry stay; a registry that does not allow deletion is reported, not raised."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from lamina.cache.prune import CREATED_ANNOTATION, PruneReport, prune_cache
from lamina.oci.model import OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST, Manifest, canonical_json
from lamina.oci.reference import Reference
from lamina.oci.registry.client import DELETE_DISABLED_HINT, RegistryClient, RegistryConfig
from tests.support.registry import REGISTRY_BIN, RunningRegistry, free_port

pytestmark = pytest.mark.integration

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def _config(host: str, tmp_path: Path) -> RegistryConfig:
    empty = tmp_path / "no-docker-config"
    empty.mkdir(exist_ok=True)
    return RegistryConfig(insecure_registries=(host,), docker_config_dir=str(empty), retries=1, timeout=10.0)


def _key() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex


def _push_entry(client: RegistryClient, repo: Reference, tag: str, created: datetime | str | None) -> str:
    """A cache-entry-like manifest (tiny config, one small layer) tagged ``tag``; return its digest."""
    layer = uuid.uuid4().bytes * 4
    layer_descriptor = client.push_blob_bytes(repo, layer, OCI_LAYER_GZIP)
    config = client.push_blob_bytes(repo, canonical_json({"history": [{"created_by": tag}]}), OCI_CONFIG)
    annotations = {"dev.lamina.test": tag}
    if created is not None:
        annotations[CREATED_ANNOTATION] = created if isinstance(created, str) else \
            created.isoformat().replace("+00:00", "Z")
    body = Manifest(config, (layer_descriptor,), OCI_MANIFEST, annotations).to_bytes()
    return client.push_manifest(repo.with_tag(tag), body, OCI_MANIFEST)


def _skopeo_exists(ref: str) -> bool:
    result = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
                            check=False, capture_output=True, text=True)
    return result.returncode == 0


def test_prune_cache(registry: RunningRegistry, tmp_path: Path) -> None:
    repo = Reference.parse(f"{registry.host}/lamina-test/cache-prune-{uuid.uuid4().hex[:8]}:unused")
    ages = {"e30": 30, "e20": 20, "e10": 10, "e1": 1, "e0": 0}
    keys = {name: _key() for name in ages}
    with RegistryClient(_config(registry.host, tmp_path)) as client:
        for name, days in ages.items():
            _push_entry(client, repo, keys[name], NOW - timedelta(days=days))
        # not cache entries, however old: a non-key tag, an entry without or with a broken annotation, an index
        _push_entry(client, repo, "latest", NOW - timedelta(days=400))
        no_created, bad_created = _key(), _key()
        _push_entry(client, repo, no_created, None)
        _push_entry(client, repo, bad_created, "long ago")
        index_tag = _key()
        index = canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [],
                                "annotations": {CREATED_ANNOTATION: "2000-01-01T00:00:00Z"}})
        client.push_manifest(repo.with_tag(index_tag), index, OCI_INDEX)
        # an old entry whose manifest another tag (that stays) also points to: deleting it would delete that tag
        shared = _key()
        shared_digest = _push_entry(client, repo, shared, NOW - timedelta(days=25))
        manifest = client.fetch_manifest(repo.with_tag(shared))
        assert manifest is not None and manifest.digest == shared_digest
        client.push_manifest(repo.with_tag("pinned"), manifest.body, OCI_MANIFEST)

        report = prune_cache(client, repo, older_than=timedelta(days=14), now=NOW)
        assert report == PruneReport(kept=4, deleted=(keys["e30"], keys["e20"]), refused=None)  # e10, e1, e0, shared
        tags = client.list_tags(repo)
        assert keys["e30"] not in tags and keys["e20"] not in tags
        assert {keys["e10"], keys["e1"], keys["e0"], "latest", no_created, bad_created, index_tag, shared,
                "pinned"} <= set(tags)

        report = prune_cache(client, repo, older_than=timedelta(0), keep=2, now=NOW)
        assert report.deleted == (keys["e10"],)
        assert report.kept == 3  # e1, e0 and the shared entry (which stays for "pinned")
        assert report.refused is None

        assert prune_cache(client, repo, older_than=timedelta(days=14), now=NOW).deleted == ()
        remaining = set(client.list_tags(repo))
    assert remaining == {keys["e1"], keys["e0"], "latest", no_created, bad_created, index_tag, shared, "pinned"}
    for name in ("e30", "e20", "e10"):
        assert not _skopeo_exists(f"{repo.name}:{keys[name]}")
    for tag in (keys["e1"], "latest", shared, "pinned"):
        assert _skopeo_exists(f"{repo.name}:{tag}")


def test_prune_empty_or_missing_repository(registry: RunningRegistry, tmp_path: Path) -> None:
    repo = Reference.parse(f"{registry.host}/lamina-test/cache-none-{uuid.uuid4().hex[:8]}:unused")
    with RegistryClient(_config(registry.host, tmp_path)) as client:
        assert prune_cache(client, repo, older_than=timedelta(days=1)) == PruneReport(0, ())


@pytest.fixture(scope="module")
def registry_without_delete(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """docker-registry with ``storage.delete.enabled: false`` (what a default install has)."""
    workdir = tmp_path_factory.mktemp("registry-no-delete")
    data = workdir / "data"
    data.mkdir()
    port = free_port()
    config = workdir / "config.yml"
    config.write_text("version: 0.1\nlog:\n  level: warn\n"
                      f"storage:\n  filesystem:\n    rootdirectory: {data}\n  delete:\n    enabled: false\n"
                      f"http:\n  addr: 127.0.0.1:{port}\n  secret: lamina-test-secret\n")
    log_path = workdir / "registry.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    reg = RunningRegistry(f"127.0.0.1:{port}", data, process, log_path)
    deadline = time.monotonic() + 20
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            reg.stop()
            pytest.fail(f"docker-registry did not start: {log_path.read_text(errors='replace')[-2000:]}")
        try:
            if requests.get(f"{reg.url}/v2/", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            time.sleep(0.1)
    yield reg
    reg.stop()


def test_prune_when_the_registry_refuses_deletion(registry_without_delete: RunningRegistry, tmp_path: Path) -> None:
    reg = registry_without_delete
    repo = Reference.parse(f"{reg.host}/lamina-test/cache-nodelete:unused")
    old, new = _key(), _key()
    with RegistryClient(_config(reg.host, tmp_path)) as client:
        _push_entry(client, repo, old, NOW - timedelta(days=30))
        _push_entry(client, repo, new, NOW)
        report = prune_cache(client, repo, older_than=timedelta(days=14), now=NOW)
        assert report.deleted == ()
        assert report.kept == 2
        assert report.refused is not None
        assert DELETE_DISABLED_HINT in report.refused
        assert "HTTP 405" in report.refused and reg.host in report.refused
        assert sorted(client.list_tags(repo)) == sorted([old, new])
    assert _skopeo_exists(f"{repo.name}:{old}")
