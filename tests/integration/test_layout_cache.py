"""The layer cache kept in an OCI image layout (``--cache-repo oci:/path``, Kaniko's spelling): the same hits and
misses as a registry cache, checked by skopeo and umoci; a hit's layer read in place and uploaded to a destination
that never had it; shared by builds running at once; pruned by ``lamina cache prune``."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from lamina.cache.prune import CREATED_ANNOTATION, is_cache_key
from tests.e2e.helpers import LaminaRun, inspect_raw, unpack, write_context
from tests.integration.test_layer_cache import (
    APP,
    EPOCH,
    CacheBuilds,
    built_digest,
    plan_verdicts,
    step_verdicts,
    verdicts_only,
)
from tests.support.baseimages import BaseImages
from tests.support.registry import RunningRegistry

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def builds(registry: RunningRegistry, base_images: BaseImages,
           tmp_path_factory: pytest.TempPathFactory) -> CacheBuilds:
    return CacheBuilds(registry, base_images, tmp_path_factory.mktemp("empty-docker-config"))


def index_tags(layout: Path) -> dict[str, str]:
    """ref name → manifest digest, from the layout's index.json."""
    index = json.loads((layout / "index.json").read_text())
    return {m["annotations"]["org.opencontainers.image.ref.name"]: m["digest"] for m in index["manifests"]}


def step_tags(layout: Path) -> list[str]:
    return [tag for tag in index_tags(layout) if is_cache_key(tag)]


def test_layout_cache_hits_like_a_registry_cache(builds: CacheBuilds, tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", APP, {"a.txt": "a\n", "b.txt": "b\n"})
    layout = tmp_path / "layers"
    cache = f"oci:{layout}"
    env = {"SOURCE_DATE_EPOCH": EPOCH}
    repo = builds.repo("layout")
    first = builds.build(context, "--cache-repo", cache, "--destination", f"{repo}:1", env=env).check()
    assert verdicts_only(step_verdicts(first)) == ["miss"] * 5
    tags = step_tags(layout)
    assert len(tags) == 5
    assert any(tag.startswith("config-") for tag in index_tags(layout)), "the base image config is kept too"
    # independent readers: umoci lists the tags, skopeo reads an entry with its layer
    listed = subprocess.run(["umoci", "ls", "--layout", str(layout)], capture_output=True, text=True, check=True)
    assert set(listed.stdout.split()) == set(index_tags(layout))
    entry = json.loads(inspect_raw(f"oci:{layout}:{tags[0]}"))
    assert entry["annotations"]["dev.lamina.cache.key"] == tags[0] and CREATED_ANNOTATION in entry["annotations"]
    subprocess.run(["skopeo", "copy", "--quiet", f"oci:{layout}:{tags[0]}", f"dir:{tmp_path / 'entry'}"],
                   check=True, capture_output=True)

    # the plan reads the layout; a rebuild to a fresh repository is all hits, the same image, its layers uploaded
    # from the layout's blobs (nothing in that registry had them: no mount source)
    dry = builds.build(context, "--cache-repo", cache, "--dry-run", env=env).check()
    assert verdicts_only(plan_verdicts(dry)) == ["hit"] * 5, dry.describe()
    again = builds.repo("layout-again")
    second = builds.build(context, "--cache-repo", cache, "--destination", f"{again}:1", env=env).check()
    assert verdicts_only(step_verdicts(second)) == ["hit"] * 5, second.describe()
    assert built_digest(second) == built_digest(first)
    image = unpack(f"docker://{again}:1", tmp_path / "unpacked")
    assert image.read("app/twice.txt") == "a\na\n"
    assert image.read("list.txt").split() == ["a.txt", "b.txt", "twice.txt"]

    # a changed file: hits up to it, then the cached layers are applied from the layout and the rest runs
    (context / "b.txt").write_text("b changed\n")
    third = builds.build(context, "--cache-repo", cache, "--destination", f"{repo}:2", env=env).check()
    assert verdicts_only(step_verdicts(third)) == ["hit", "hit", "hit", "miss", "miss"], third.describe()
    assert len(step_tags(layout)) == 7
    assert unpack(f"docker://{repo}:2", tmp_path / "unpacked2").read("app/b.txt") == "b changed\n"


def test_no_push_cache_reads_the_layout_and_writes_nothing(builds: CacheBuilds, tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", APP, {"a.txt": "a\n", "b.txt": "b\n"})
    layout = tmp_path / "layers"
    builds.build(context, "--cache-repo", f"oci:{layout}", "--no-push").check()
    before = (layout / "index.json").read_bytes()
    (context / "b.txt").write_text("other\n")
    run = builds.build(context, "--cache-repo", f"oci:{layout}", "--no-push", "--no-push-cache").check()
    assert verdicts_only(step_verdicts(run)) == ["hit", "hit", "hit", "miss", "miss"]
    assert (layout / "index.json").read_bytes() == before


def test_builds_at_once_share_a_layout(builds: CacheBuilds, tmp_path: Path) -> None:
    layout = tmp_path / "layers"
    contexts = [write_context(tmp_path / f"ctx{n}", APP, {"a.txt": f"a{n}\n", "b.txt": "b\n"}) for n in range(3)]
    runs: list[LaminaRun] = []

    def one(context: Path) -> None:
        runs.append(builds.build(context, "--cache-repo", f"oci:{layout}", "--no-push"))

    threads = [threading.Thread(target=one, args=(context,)) for context in contexts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for run in runs:
        run.check()
    # WORKDIR is shared; COPY a.txt and everything after differ: 1 + 3 * 4 entries, none lost to a race
    assert len(step_tags(layout)) == 13
    subprocess.run(["umoci", "ls", "--layout", str(layout)], check=True, capture_output=True)


def test_prune_drops_entries_and_their_blobs(builds: CacheBuilds, tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", APP, {"a.txt": "a\n", "b.txt": "b\n"})
    layout = tmp_path / "layers"
    builds.build(context, "--cache-repo", f"oci:{layout}", "--no-push").check()
    blobs = len(list((layout / "blobs" / "sha256").iterdir()))
    kept = builds.run(["cache", "prune", "--cache-repo", f"oci:{layout}", "--older-than", "0s", "--keep", "2"]).check()
    assert "deleted 4 stale cache entries, kept 2" in kept.stdout, kept.describe()  # 5 steps + the base config
    assert len(index_tags(layout)) == 2
    assert len(list((layout / "blobs" / "sha256").iterdir())) < blobs
    subprocess.run(["umoci", "ls", "--layout", str(layout)], check=True, capture_output=True)
    for tag in index_tags(layout):  # what is left is whole
        subprocess.run(["skopeo", "copy", "--quiet", f"oci:{layout}:{tag}", f"dir:{tmp_path / tag}"],
                       check=True, capture_output=True)
    builds.run(["cache", "prune", "--cache-repo", f"oci:{layout}", "--older-than", "0s"]).check()
    assert index_tags(layout) == {} and list((layout / "blobs" / "sha256").iterdir()) == []
    missing = builds.run(["cache", "prune", "--cache-repo", f"oci:{tmp_path / 'none'}", "--older-than", "1h"])
    assert missing.returncode == 2 and "no OCI layout there" in missing.stderr


def test_a_damaged_layout_never_fails_the_build(builds: CacheBuilds, tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", APP, {"a.txt": "a\n", "b.txt": "b\n"})
    layout = tmp_path / "layers"
    builds.build(context, "--cache-repo", f"oci:{layout}", "--no-push").check()
    shutil.rmtree(layout / "blobs")
    run = builds.build(context, "--cache-repo", f"oci:{layout}", "--no-push").check()
    assert verdicts_only(step_verdicts(run)) == ["miss"] * 5, run.describe()
    assert "cache lookup of" in run.stdout + run.stderr
