"""The registry client through a fault-injecting proxy (tests/support/fault_proxy.py) in front of a real
docker-registry: 503s, 429s with Retry-After, connections dropped before the registry sees a request and after it
acted, truncated and corrupted bodies, slow answers, stalls past the client's timeout.

Scripted tests show each recovery (upload resumed from the registry's Range, download resumed with ``Range:
bytes=N-``, lost answers to a closing ``PUT`` or a manifest ``PUT``, corrupt blobs rejected); a seeded random
campaign then runs pushes, pulls, resolves, blob fetches and mounts under random faults. After every operation the
registry's storage is checked directly (not through the proxy): every manifest refers only to blobs the repository
has, and every blob matches its digest.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lamina.errors import DigestMismatch, RegistryError, RegistryUnreachable
from lamina.oci.digest import compute_digest
from lamina.oci.model import OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST, Descriptor, Manifest, Platform
from lamina.oci.reference import Reference
from lamina.oci.registry.client import RegistryClient, RegistryConfig, _backoff
from tests.support.fault_proxy import (
    CORRUPT,
    DROP_AFTER,
    DROP_BEFORE,
    IGNORE_RANGE,
    KINDS,
    STATUS_429,
    STATUS_503,
    TRUNCATE,
    Fault,
    FaultProxy,
    RandomFaults,
    Rule,
    Script,
    no_faults,
)
from tests.support.registry import RunningRegistry, start_registry

pytestmark = pytest.mark.integration

CHUNK = 64 * 1024
SEED = 20240611
OPERATIONS = 60
UPLOADS = r"/blobs/uploads/"
BLOB_GET = r"/blobs/sha256:"


# -- the registry, its storage, images ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """A registry of its own: its storage is walked after every operation."""
    try:
        reg = start_registry(tmp_path_factory.mktemp("fault-registry"))
    except RuntimeError as e:
        pytest.fail(f"could not start docker-registry: {e}", pytrace=False)
    yield reg
    reg.stop()


@pytest.fixture
def proxy(registry: RunningRegistry) -> Iterator[FaultProxy]:
    with FaultProxy(registry.host) as p:
        yield p


def _config(host: str, tmp_path: Path, **kw: Any) -> RegistryConfig:
    empty = tmp_path / "no-docker-config"
    empty.mkdir(exist_ok=True)
    settings: dict[str, Any] = {"docker_config_dir": str(empty), "insecure_registries": (host,),
                                   "chunk_size": CHUNK, "timeout": 2.0, "retries": 4, "push_retries": 4,
                                   "backoff_seconds": 0.02}
    settings.update(kw)
    return RegistryConfig(**settings)


def _repo(prefix: str) -> str:
    return f"faults/{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class Image:
    layers: list[bytes]
    config_bytes: bytes
    manifest: Manifest
    manifest_bytes: bytes

    @property
    def digest(self) -> str:
        return compute_digest(self.manifest_bytes)


def _image(rng: random.Random, sizes: list[int]) -> Image:
    layers = [rng.randbytes(size) for size in sizes]
    config = {"architecture": "amd64", "os": "linux", "config": {"Env": [f"N={rng.random()}"]},
              "rootfs": {"type": "layers", "diff_ids": [compute_digest(layer) for layer in layers]}}
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    manifest = Manifest(Descriptor(OCI_CONFIG, compute_digest(config_bytes), len(config_bytes)),
                        tuple(Descriptor(OCI_LAYER_GZIP, compute_digest(layer), len(layer)) for layer in layers),
                        OCI_MANIFEST)
    return Image(layers, config_bytes, manifest, manifest.to_bytes())


def _push(client: RegistryClient, ref: Reference, image: Image, workdir: Path,
          mount_from: Reference | None = None) -> str:
    """Push the blobs, then (only when all are confirmed) the manifest: what lamina's executor does."""
    workdir.mkdir(parents=True, exist_ok=True)
    for layer, descriptor in zip(image.layers, image.manifest.layers, strict=True):
        path = workdir / descriptor.digest[7:23]
        path.write_bytes(layer)
        client.push_blob(ref, descriptor, path, mount_from=mount_from)
    client.push_blob_bytes(ref, image.config_bytes, OCI_CONFIG)
    return client.push_manifest(ref, image.manifest_bytes, OCI_MANIFEST)


def _pull(client: RegistryClient, ref: Reference, image: Image, workdir: Path) -> None:
    resolved = client.resolve_image(ref, Platform())
    assert resolved.manifest_digest == image.digest
    assert resolved.config_bytes == image.config_bytes
    for layer, descriptor in zip(image.layers, resolved.manifest.layers, strict=True):
        dest = workdir / f"pulled-{descriptor.digest[7:23]}-{uuid.uuid4().hex[:6]}"
        client.fetch_blob(ref, descriptor, dest)
        assert dest.read_bytes() == layer, "a corrupt blob reached its final path"
        dest.unlink()


@dataclass
class Integrity:
    manifests: int = 0
    blobs: int = 0
    problems: list[str] = field(default_factory=list)
    broken_images: set[str] = field(default_factory=set)


class StorageChecker:
    """Walks docker-registry's filesystem storage (``docker/registry/v2``) directly."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "docker" / "registry" / "v2"
        self._hashed: dict[tuple[str, int, int], str] = {}

    def _blob_path(self, digest: str) -> Path:
        hexpart = digest.removeprefix("sha256:")
        return self.root / "blobs" / "sha256" / hexpart[:2] / hexpart / "data"

    def _digest_of(self, path: Path) -> str:
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key not in self._hashed:
            self._hashed[key] = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
        return self._hashed[key]

    def check(self) -> Integrity:
        result = Integrity()
        blobs_dir = self.root / "blobs" / "sha256"
        for data in sorted(blobs_dir.glob("*/*/data")) if blobs_dir.is_dir() else []:
            result.blobs += 1
            expected = "sha256:" + data.parent.name
            if self._digest_of(data) != expected:
                result.problems.append(f"blob {expected} does not match its digest")
        repositories = self.root / "repositories"
        for manifests_dir in sorted(repositories.rglob("_manifests")) if repositories.is_dir() else []:
            repo_dir = manifests_dir.parent
            repo = repo_dir.relative_to(repositories).as_posix()
            links = list(manifests_dir.glob("tags/*/current/link")) + \
                list(manifests_dir.glob("revisions/sha256/*/link"))
            for digest in sorted({link.read_text().strip() for link in links}):
                result.manifests += 1
                for problem in self._check_manifest(repo_dir, digest):
                    result.problems.append(f"{repo}@{digest}: {problem}")
                    result.broken_images.add(f"{repo}@{digest}")
        return result

    def _check_manifest(self, repo_dir: Path, digest: str) -> list[str]:
        path = self._blob_path(digest)
        if not path.is_file():
            return ["the manifest blob is missing"]
        if self._digest_of(path) != digest:
            return ["the manifest does not match its digest"]
        raw = json.loads(path.read_bytes())
        problems = []
        if raw.get("mediaType") == OCI_INDEX or "manifests" in raw:
            for child in raw.get("manifests", []):
                link = repo_dir / "_manifests" / "revisions" / "sha256" / child["digest"][7:] / "link"
                if not link.is_file() or not self._blob_path(child["digest"]).is_file():
                    problems.append(f"the index refers to a missing manifest {child['digest']}")
            return problems
        for descriptor in [raw["config"], *raw.get("layers", [])]:
            blob = self._blob_path(descriptor["digest"])
            link = repo_dir / "_layers" / "sha256" / descriptor["digest"][7:] / "link"
            if not blob.is_file():
                problems.append(f"blob {descriptor['digest']} is missing")
            elif not link.is_file():
                problems.append(f"blob {descriptor['digest']} is not linked into the repository")
            elif blob.stat().st_size != descriptor["size"] or self._digest_of(blob) != descriptor["digest"]:
                problems.append(f"blob {descriptor['digest']} does not match its descriptor")
        return problems


def _assert_intact(checker: StorageChecker) -> Integrity:
    integrity = checker.check()
    assert not integrity.problems, integrity.problems
    return integrity


def _routes(proxy: FaultProxy, method: str, pattern: str) -> list[str]:
    return [e.path for e in proxy.exchanges if e.method == method and pattern in e.route]


# -- scripted faults: each recovery on its own ------------------------------------------------------------------------


def test_backoff_is_exponential_with_jitter() -> None:
    delays = [_backoff(3, 1.0) for _ in range(50)]
    assert all(4.0 <= d <= 8.0 for d in delays)
    assert len(set(delays)) > 1
    assert _backoff(0, 0.0) == 0.0
    assert _backoff(40, 1.0) <= 30.0


@pytest.mark.parametrize("fault", [STATUS_503, DROP_BEFORE])
def test_chunked_upload_resumes_from_the_registry_range(proxy: FaultProxy, registry: RunningRegistry,
                                                        tmp_path: Path, fault: str) -> None:
    """The registry never saw the second chunk: the client asks the session how far it got and sends that chunk
    again, without a new upload."""
    checker = StorageChecker(registry.data_dir)
    proxy.schedule = Script(Rule(Fault(fault), "PATCH", UPLOADS, skip=1))
    image = _image(random.Random(1), [3 * CHUNK + 500])
    ref = Reference.parse(f"{proxy.host}/{_repo('resume')}:v1")
    with RegistryClient(_config(proxy.host, tmp_path)) as client:
        _push(client, ref, image, tmp_path / "push")
    patches = [e for e in proxy.exchanges if e.method == "PATCH"]
    assert [e.content_range for e in patches] == [f"0-{CHUNK - 1}", f"{CHUNK}-{2 * CHUNK - 1}",
                                                  f"{CHUNK}-{2 * CHUNK - 1}", f"{2 * CHUNK}-{3 * CHUNK - 1}",
                                                  f"{3 * CHUNK}-{3 * CHUNK + 499}"]
    assert patches[1].fault == fault
    assert len(_routes(proxy, "POST", UPLOADS)) == 2  # the layer and the config: no second upload of the layer
    assert len([e for e in proxy.exchanges if e.method == "GET" and UPLOADS in e.route]) == 1
    with RegistryClient(_config(registry.host, tmp_path)) as direct:
        _pull(direct, Reference.parse(f"{registry.host}/{ref.repository}:v1"), image, tmp_path)
    _assert_intact(checker)


def test_chunk_stored_but_answer_lost_starts_a_new_upload(proxy: FaultProxy, registry: RunningRegistry,
                                                          tmp_path: Path) -> None:
    """The registry took the chunk but the client never heard: distribution cancels a session resumed with the
    stale state, so the client starts over, and the blob still arrives whole."""
    checker = StorageChecker(registry.data_dir)
    proxy.schedule = Script(Rule(Fault(DROP_AFTER), "PATCH", UPLOADS, skip=1))
    image = _image(random.Random(2), [2 * CHUNK + 10])
    ref = Reference.parse(f"{proxy.host}/{_repo('lost-chunk')}:v1")
    with RegistryClient(_config(proxy.host, tmp_path)) as client:
        _push(client, ref, image, tmp_path / "push")
        _pull(client, ref, image, tmp_path)
    assert len(_routes(proxy, "POST", UPLOADS)) == 3  # layer, layer again, config
    _assert_intact(checker)


@pytest.mark.parametrize("size", [1000, 2 * CHUNK + 10], ids=["monolithic", "chunked"])
def test_closing_put_answer_lost(proxy: FaultProxy, registry: RunningRegistry, tmp_path: Path, size: int) -> None:
    """The closing PUT went through but its answer was lost: a HEAD finds the blob, nothing is uploaded again."""
    checker = StorageChecker(registry.data_dir)
    proxy.schedule = Script(Rule(Fault(DROP_AFTER), "PUT", UPLOADS))
    image = _image(random.Random(size), [size])
    ref = Reference.parse(f"{proxy.host}/{_repo('lost-put')}:v1")
    with RegistryClient(_config(proxy.host, tmp_path)) as client:
        _push(client, ref, image, tmp_path / "push")
    assert len(_routes(proxy, "POST", UPLOADS)) == 2  # the layer once, the config
    assert len(_routes(proxy, "PUT", UPLOADS)) == 2
    _assert_intact(checker)


def test_manifest_put_answer_lost(proxy: FaultProxy, registry: RunningRegistry, tmp_path: Path) -> None:
    checker = StorageChecker(registry.data_dir)
    proxy.schedule = Script(Rule(Fault(DROP_AFTER), "PUT", "/manifests/"))
    image = _image(random.Random(3), [500])
    ref = Reference.parse(f"{proxy.host}/{_repo('lost-manifest')}:v1")
    with RegistryClient(_config(proxy.host, tmp_path)) as client:
        assert _push(client, ref, image, tmp_path / "push") == image.digest
        _pull(client, ref, image, tmp_path)
    assert len(_routes(proxy, "PUT", "/manifests/")) == 2
    _assert_intact(checker)


def test_download_resumes_with_a_range(proxy: FaultProxy, registry: RunningRegistry, tmp_path: Path) -> None:
    image = _image(random.Random(4), [200_000])
    ref = Reference.parse(f"{proxy.host}/{_repo('range')}:v1")
    with RegistryClient(_config(proxy.host, tmp_path)) as client:
        _push(client, ref, image, tmp_path / "push")
        proxy.clear()
        proxy.schedule = Script(Rule(Fault(TRUNCATE), "GET", BLOB_GET))
        dest = tmp_path / "layer"
        client.fetch_blob(ref, image.manifest.layers[0], dest)
    assert dest.read_bytes() == image.layers[0]
    gets = [e for e in proxy.exchanges if e.method == "GET" and BLOB_GET in e.route]
    assert [e.fault for e in gets] == [TRUNCATE, None]
    assert gets[0].range is None
    assert gets[1].range is not None and gets[1].range.startswith("bytes=") and gets[1].range != "bytes=0-"
    assert gets[1].status == 206


def test_download_starts_over_when_the_range_is_ignored(proxy: FaultProxy, tmp_path: Path) -> None:
    image = _image(random.Random(5), [150_000])
    ref = Reference.parse(f"{proxy.host}/{_repo('norange')}:v1")
    with RegistryClient(_config(proxy.host, tmp_path)) as client:
        _push(client, ref, image, tmp_path / "push")
        proxy.clear()
        proxy.schedule = Script(Rule(Fault(TRUNCATE), "GET", BLOB_GET), Rule(Fault(IGNORE_RANGE), "GET", BLOB_GET))
        dest = tmp_path / "layer"
        client.fetch_blob(ref, image.manifest.layers[0], dest)
    assert dest.read_bytes() == image.layers[0]
    gets = [e for e in proxy.exchanges if e.method == "GET" and BLOB_GET in e.route]
    assert [(e.fault, e.status) for e in gets] == [(TRUNCATE, 200), (IGNORE_RANGE, 200)]


def test_corrupted_blobs_are_rejected(proxy: FaultProxy, registry: RunningRegistry, tmp_path: Path) -> None:
    checker = StorageChecker(registry.data_dir)
    image = _image(random.Random(6), [100_000])
    ref = Reference.parse(f"{proxy.host}/{_repo('corrupt')}:v1")
    dest = tmp_path / "out" / "layer"
    with RegistryClient(_config(proxy.host, tmp_path, retries=2)) as client:
        _push(client, ref, image, tmp_path / "push")
        proxy.schedule = Script(Rule(Fault(CORRUPT), "GET", BLOB_GET))  # once: fetched again, and fine
        client.fetch_blob(ref, image.manifest.layers[0], dest)
        assert dest.read_bytes() == image.layers[0]
        dest.unlink()

        proxy.schedule = Script(Rule(Fault(CORRUPT), "GET", BLOB_GET, times=1000))  # always: refused
        with pytest.raises(DigestMismatch) as info:
            client.fetch_blob(ref, image.manifest.layers[0], dest)
        assert image.manifest.layers[0].digest in str(info.value) and ref.repository in str(info.value)
        assert not dest.exists() and not dest.with_name("layer.tmp").exists()
        with pytest.raises(DigestMismatch):
            client.resolve_image(ref, Platform())  # the config blob
    assert [e.fault for e in proxy.exchanges if e.method == "GET" and BLOB_GET in e.route].count(CORRUPT) == 1 + 3 + 3
    _assert_intact(checker)


def test_429_honours_retry_after(proxy: FaultProxy, tmp_path: Path) -> None:
    ref = Reference.parse(f"{proxy.host}/{_repo('429')}:v1")
    proxy.schedule = Script(Rule(Fault(STATUS_429, retry_after="1"), "HEAD"))
    with RegistryClient(_config(proxy.host, tmp_path, backoff_seconds=0.01)) as client:
        started = time.monotonic()
        assert not client.blob_exists(ref, compute_digest(b"nothing"))
        assert time.monotonic() - started >= 0.95


def test_failure_after_the_retries_names_registry_repository_and_status(proxy: FaultProxy,
                                                                        tmp_path: Path) -> None:
    ref = Reference.parse(f"{proxy.host}/{_repo('give-up')}:v1")
    proxy.schedule = Script(Rule(Fault(STATUS_503), times=100))
    with RegistryClient(_config(proxy.host, tmp_path, retries=2, push_retries=2)) as client, \
            pytest.raises(RegistryError) as info:
        client.push_blob_bytes(ref, b"{}", OCI_CONFIG)
    assert info.value.status == 503
    assert f"registry {proxy.host}/{ref.repository}, HTTP 503" in str(info.value)
    proxy.schedule = Script(Rule(Fault(DROP_BEFORE), times=100))
    with RegistryClient(_config(proxy.host, tmp_path, retries=2, push_retries=2)) as client, \
            pytest.raises(RegistryError) as info:
        client.resolve_image(ref, Platform())
    assert f"registry {proxy.host}/{ref.repository}" in str(info.value)
    assert proxy.host in info.value.message


# -- a seeded campaign of random faults -----------------------------------------------------------------------------


@dataclass
class Pushed:
    repository: str
    image: Image


@dataclass
class Tally:
    operations: Counter[str] = field(default_factory=Counter)
    successes: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    digest_mismatches: int = 0
    failure_messages: list[str] = field(default_factory=list)


def _clear(error: RegistryError, host: str, repository: str) -> bool:
    """Does the error name the registry, the repository and (if it has one) the HTTP status?"""
    text = str(error)
    if error.registry != host or error.repository != repository or f"registry {host}/{repository}" not in text:
        return False
    return error.status is None or f"HTTP {error.status}" in text


def test_random_faults_campaign(proxy: FaultProxy, registry: RunningRegistry, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(SEED)
    checker = StorageChecker(registry.data_dir)
    faults = RandomFaults(seed=SEED, rate=0.2)
    proxy.schedule = faults
    tally = Tally()
    pushed: list[Pushed] = []
    broken_after: set[str] = set()
    started = time.monotonic()
    config = _config(proxy.host, tmp_path)
    with RegistryClient(config) as client, RegistryClient(_config(registry.host, tmp_path)) as direct:

        def via_proxy(repository: str, tag: str = "v1") -> Reference:
            return Reference.parse(f"{proxy.host}/{repository}:{tag}")

        def op_push(kind: str) -> tuple[str, Callable[[], None]]:
            sizes = {"push-small": [rng.randint(200, 4000)],
                     "push-chunked": [rng.randint(CHUNK + 1, 4 * CHUNK)],
                     "push-multi": [rng.randint(100, 3000), rng.randint(CHUNK // 2, 3 * CHUNK), rng.randint(1, 500)],
                     }[kind]
            image = _image(rng, sizes)
            repository = _repo(kind)

            def run() -> None:
                assert _push(client, via_proxy(repository), image, tmp_path / "push") == image.digest
                # confirmed directly: the tag is there and every blob is whole
                _pull(direct, Reference.parse(f"{registry.host}/{repository}:v1"), image, tmp_path)
                pushed.append(Pushed(repository, image))
            return repository, run

        def op_pull() -> tuple[str, Callable[[], None]]:
            target = rng.choice(pushed)
            return target.repository, lambda: _pull(client, via_proxy(target.repository), target.image, tmp_path)

        def op_resolve() -> tuple[str, Callable[[], None]]:
            target = rng.choice(pushed)

            def run() -> None:
                resolved = client.resolve_image(via_proxy(target.repository), Platform())
                assert resolved.manifest_digest == target.image.digest
                assert resolved.config_bytes == target.image.config_bytes
            return target.repository, run

        def op_fetch_blob() -> tuple[str, Callable[[], None]]:
            target = rng.choice(pushed)
            index = rng.randrange(len(target.image.layers))

            def run() -> None:
                dest = tmp_path / "fetched" / uuid.uuid4().hex
                try:
                    client.fetch_blob(via_proxy(target.repository), target.image.manifest.layers[index], dest)
                except RegistryError:
                    assert not dest.exists() and not dest.with_name(dest.name + ".tmp").exists()
                    raise
                assert dest.read_bytes() == target.image.layers[index], "a corrupt blob reached its final path"
            return target.repository, run

        def op_fetch_manifest() -> tuple[str, Callable[[], None]]:
            target = rng.choice(pushed)

            def run() -> None:
                fetched = client.fetch_manifest(via_proxy(target.repository))
                assert fetched is not None and fetched.body == target.image.manifest_bytes
            return target.repository, run

        def op_mount() -> tuple[str, Callable[[], None]]:
            source = rng.choice(pushed)
            repository = _repo("mount")

            def run() -> None:
                dest = via_proxy(repository)
                for descriptor in source.image.manifest.layers:
                    client.ensure_blob(dest, descriptor, sources=(via_proxy(source.repository),), path=None)
                client.push_blob_bytes(dest, source.image.config_bytes, OCI_CONFIG)
                assert client.push_manifest(dest, source.image.manifest_bytes, OCI_MANIFEST) == source.image.digest
                _pull(direct, Reference.parse(f"{registry.host}/{repository}:v1"), source.image, tmp_path)
                pushed.append(Pushed(repository, source.image))
            return repository, run

        kinds = ["push-small", "push-chunked", "push-multi", "pull", "resolve", "fetch-blob", "fetch-manifest",
                 "mount"]
        weights = [2, 2, 2, 4, 1, 3, 1, 1.5]
        for number in range(OPERATIONS):
            kind = rng.choices(kinds, weights)[0] if pushed else "push-chunked"
            # now and then a storm: most requests fail, so some operations run out of retries
            faults.rate = rng.choices([0.15, 0.3, 0.75], [6, 3, 1])[0]
            if kind.startswith("push"):
                repository, run = op_push(kind)
            else:
                repository, run = {"pull": op_pull, "resolve": op_resolve, "fetch-blob": op_fetch_blob,
                                   "fetch-manifest": op_fetch_manifest, "mount": op_mount}[kind]()
            tally.operations[kind] += 1
            try:
                run()
                tally.successes[kind] += 1
            except RegistryError as e:
                faults.enabled = False
                assert _clear(e, proxy.host, repository), f"operation {number} ({kind}): unclear error: {e}"
                tally.failures[kind] += 1
                tally.digest_mismatches += isinstance(e, DigestMismatch)
                tally.failure_messages.append(f"{kind}: {type(e).__name__}: {e}")
            finally:
                faults.enabled = True
            faults.enabled = False
            integrity = checker.check()
            faults.enabled = True
            broken_after |= integrity.broken_images
            assert not integrity.problems, f"after operation {number} ({kind}): {integrity.problems}"

        faults.enabled = False
        # at the end, every image that was pushed is still whole, read directly from the registry
        for image in pushed:
            _pull(direct, Reference.parse(f"{registry.host}/{image.repository}:v1"), image.image, tmp_path)
        final = _assert_intact(checker)

    elapsed = time.monotonic() - started
    injected = proxy.injected
    exchanges = proxy.exchanges
    resumed_downloads = sum(1 for e in exchanges if e.method == "GET" and e.range)
    status_queries = [e for e in exchanges if e.method == "GET" and UPLOADS in e.route]
    resumed_uploads = sum(1 for e in status_queries if e.status == 204)
    total_ops = sum(tally.operations.values())
    rows = [("faults injected", str(sum(injected.values())))]
    rows += [(f"  {kind}", str(injected.get(kind, 0))) for kind in KINDS if injected.get(kind, 0)]
    rows += [("requests through the proxy", str(len(exchanges))),
             ("operations", str(total_ops)),
             *[(f"  {kind}", f"{tally.operations[kind]} ({tally.successes[kind]} ok, {tally.failures[kind]} failed)")
               for kind in kinds],
             ("successes", str(sum(tally.successes.values()))),
             ("clear failures (RegistryError naming registry/repository/status)", str(sum(tally.failures.values()))),
             ("  of which DigestMismatch", str(tally.digest_mismatches)),
             ("unclear failures", "0"),
             ("downloads resumed with Range", str(resumed_downloads)),
             ("upload sessions asked for their Range / resumed from it", f"{len(status_queries)} / {resumed_uploads}"),
             ("corrupted blob bodies served / reaching a final path", f"{injected.get(CORRUPT, 0)} / 0"),
             ("manifests / blobs in the registry at the end", f"{final.manifests} / {final.blobs}"),
             ("images found broken afterwards", str(len(broken_after))),
             ("elapsed", f"{elapsed:.1f}s")]
    width = max(len(name) for name, _ in rows)
    table = "\n".join(f"  {name.ljust(width)}  {value}" for name, value in rows)
    with capsys.disabled():
        print(f"\n\nregistry fault campaign (seed {SEED}):\n{table}\n")
        for message in tally.failure_messages:
            print(f"  failure: {message}")
    assert total_ops >= 50
    assert not broken_after
    assert sum(tally.successes.values()) > total_ops // 2
    assert sum(injected.values()) >= 50
    assert injected[CORRUPT] > 0 and injected[DROP_AFTER] > 0 and injected[DROP_BEFORE] > 0
    assert no_faults("GET", "/") is None


def test_a_ca_bundle_variable_naming_no_file_is_an_error_for_people(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    """A CA bundle variable inherited from another machine (act passes the host's into a container) made requests
    raise a bare OSError, which escaped as a traceback."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "missing.crt"))
    with RegistryClient(RegistryConfig()) as client, \
            pytest.raises(RegistryUnreachable, match="cannot verify registry.example.com") as info:
        client.fetch_manifest(Reference.parse("registry.example.com/team/app:1"))
    assert "REQUESTS_CA_BUNDLE" in info.value.hint and info.value.repository == "team/app"
