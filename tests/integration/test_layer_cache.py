"""The registry layer cache against a real docker-registry: which steps hit and which miss, what a fully cached
build moves over the wire (through a recording proxy), --dry-run, --no-push-cache, TTL expiry, ``lamina cache
prune``, and cache failures that must never fail the build.

Builds run through the CLI in process, on the busybox base image of the session registry (through
``--registry-mirror``). Every test uses its own repositories, so nothing depends on the order tests run in.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from lamina.cache.prune import CREATED_ANNOTATION
from lamina.oci.model import Manifest, Platform
from lamina.oci.reference import Reference
from lamina.oci.registry.client import RegistryClient, RegistryConfig
from tests.e2e.helpers import (
    LaminaRun,
    clean_environ,
    inspect,
    inspect_config,
    inspect_raw,
    lamina_in_process,
    tags,
    unpack,
    write_context,
)
from tests.support.baseimages import BaseImages
from tests.support.recording_proxy import RecordingProxy
from tests.support.registry import RunningRegistry, free_port

pytestmark = pytest.mark.integration

EPOCH = "1700000000"
FILESYSTEM_KEYWORDS = ("RUN", "COPY", "ADD", "WORKDIR")
STEP_LINE = re.compile(r"^\[(?P<stage>[^\]]+)\] STEP (?P<index>\d+)/(?P<total>\d+): (?P<text>.*)$")
END_LINE = re.compile(r"^  (?P<verb>cached|done) in \d")
PLAN_LINE = re.compile(r"^\[(?P<verdict>hit|miss|not cached)\] \((?P<stage>[^)]*)\) (?P<text>.*)$")
BUILT_LINE = re.compile(r"^built (?P<digest>sha256:[0-9a-f]{64}) ")
BLOB_PATH = re.compile(r"^/v2/(?P<repo>.+)/blobs/(?P<digest>sha256:[0-9a-f]{64})$")

Verdicts = list[tuple[str, str]]  # (instruction as written, "hit" | "miss" | "not cached")


# ---------------------------------------------------------------------------------------------------------------
# running builds


@dataclass(frozen=True)
class CacheBuilds:
    registry: RunningRegistry
    images: BaseImages
    docker_config: Path

    def repo(self, name: str, host: str | None = None) -> str:
        """A fresh repository: ``<host>/cachetest/<name>-<random>``."""
        return f"{host or self.registry.host}/cachetest/{name}-{uuid.uuid4().hex[:8]}"

    def run(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> LaminaRun:
        return lamina_in_process(list(argv), clean_environ(env, docker_config=self.docker_config))

    def build(self, context: Path, *args: str, env: Mapping[str, str] | None = None,
              mirror: str | None = None, insecure: Sequence[str] = ()) -> LaminaRun:
        """``lamina build --cache`` on ``context`` (busybox through the mirror); ARGS decide the rest."""
        argv = ["build", "--context", str(context), "--cache", "--registry-mirror", mirror or self.images.mirror,
                "--insecure-registry", self.registry.host]
        for host in insecure:
            argv += ["--insecure-registry", host]
        return self.run([*argv, *args], env=env)

    def client(self, *hosts: str) -> RegistryClient:
        return RegistryClient(RegistryConfig(insecure_registries=(self.registry.host, *hosts),
                                             docker_config_dir=str(self.docker_config), retries=1, timeout=10.0))

    def cache_tags(self, repository: str) -> list[str]:
        """The step entries (not the kept base image configs, tagged config-<hex>)."""
        return [tag for tag in self.all_cache_tags(repository) if not tag.startswith("config-")]

    def all_cache_tags(self, repository: str) -> list[str]:
        with self.client() as client:
            return client.list_tags(Reference.parse(repository))


@pytest.fixture(scope="module")
def builds(registry: RunningRegistry, base_images: BaseImages,
           tmp_path_factory: pytest.TempPathFactory) -> CacheBuilds:
    empty = tmp_path_factory.mktemp("empty-docker-config")
    return CacheBuilds(registry, base_images, empty)


def step_verdicts(run: LaminaRun) -> Verdicts:
    """The filesystem steps of a build's output, each "hit" (printed as cached) or "miss" (executed)."""
    verdicts: Verdicts = []
    current: str | None = None
    for line in run.stdout.splitlines():
        step = STEP_LINE.match(line)
        if step:
            current = step["text"]
            continue
        end = END_LINE.match(line)
        if end and current is not None:
            if current.split(" ", 1)[0].upper() in FILESYSTEM_KEYWORDS:
                verdicts.append((current, "hit" if end["verb"] == "cached" else "miss"))
            current = None
    return verdicts


def plan_verdicts(run: LaminaRun) -> Verdicts:
    """The ``[hit]``/``[miss]`` lines of ``--dry-run``."""
    return [(m["text"], m["verdict"]) for m in map(PLAN_LINE.match, run.stdout.splitlines()) if m]


def query(path: str) -> dict[str, str]:
    """The query parameters of a request path (the last value of each)."""
    return {name: values[-1] for name, values in parse_qs(urlsplit(path).query).items()}


def built_digest(run: LaminaRun) -> str:
    for line in run.stdout.splitlines():
        match = BUILT_LINE.match(line)
        if match:
            return match["digest"]
    raise AssertionError(f"no 'built sha256:...' line:\n{run.describe()}")


def verdicts_only(verdicts: Verdicts) -> list[str]:
    return [v for _, v in verdicts]


def planned_then_built(builds: CacheBuilds, context: Path, *args: str, env: Mapping[str, str] | None = None,
                       cache_repo: str, destination: str) -> tuple[Verdicts, LaminaRun]:
    """``--dry-run`` first, then the build; the plan must say what the build then does. Returns both."""
    dry = builds.build(context, "--cache-repo", cache_repo, "--dry-run", *args, env=env).check()
    plan = plan_verdicts(dry)
    assert plan, f"--dry-run printed no plan:\n{dry.describe()}"
    run = builds.build(context, "--cache-repo", cache_repo, "--destination", destination, *args, env=env).check()
    done = step_verdicts(run)
    assert done == plan, f"the build did not do what --dry-run planned:\nplan  {plan}\nbuild {done}\n{run.describe()}"
    return done, run


def base_layers(builds: CacheBuilds) -> list[str]:
    """The layer digests of the busybox base image."""
    return [layer.digest for layer in Manifest.from_bytes(inspect_raw(f"docker://{builds.images.busybox}")).layers]


# ---------------------------------------------------------------------------------------------------------------
# hits and misses

APP = """\
FROM busybox
WORKDIR /app
COPY a.txt ./
RUN cat a.txt a.txt > twice.txt
COPY b.txt ./
RUN ls /app > /list.txt
"""


def test_unchanged_rebuild_is_all_hits_with_the_same_digest(builds: CacheBuilds, tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", APP, {"a.txt": "a\n", "b.txt": "b\n"})
    repo = builds.repo("unchanged")
    env = {"SOURCE_DATE_EPOCH": EPOCH}
    cold, first = planned_then_built(builds, context, env=env, cache_repo=f"{repo}/cache", destination=f"{repo}:1")
    assert verdicts_only(cold) == ["miss"] * 5
    assert len(builds.cache_tags(f"{repo}/cache")) == 5

    # a fresh destination repository: the pushed image must be complete (its layers mounted from the cache)
    again = builds.repo("unchanged-again")
    warm, second = planned_then_built(builds, context, env=env, cache_repo=f"{repo}/cache", destination=f"{again}:1")
    assert verdicts_only(warm) == ["hit"] * 5, second.describe()
    assert "0 new layer(s), 5 step(s) from the cache" in second.stdout, second.describe()
    assert built_digest(second) == built_digest(first), "a fully cached rebuild must give the same image"
    manifest = json.loads(inspect_raw(f"docker://{again}:1"))
    assert len(manifest["layers"]) == len(base_layers(builds)) + 5  # WORKDIR makes /app: five layers
    image = unpack(f"docker://{again}:1", tmp_path / "unpacked")
    assert image.read("app/twice.txt") == "a\na\n"
    assert image.read("list.txt").split() == ["a.txt", "b.txt", "twice.txt"]


def test_changed_context_file_misses_from_its_copy_on(builds: CacheBuilds, tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", APP, {"a.txt": "a\n", "b.txt": "b\n"})
    repo = builds.repo("context")
    cache = f"{repo}/cache"
    planned_then_built(builds, context, cache_repo=cache, destination=f"{repo}:1")

    (context / "b.txt").write_text("b changed\n")
    verdicts, _ = planned_then_built(builds, context, cache_repo=cache, destination=f"{repo}:2")
    assert verdicts == [("WORKDIR /app", "hit"), ("COPY a.txt ./", "hit"), ("RUN cat a.txt a.txt > twice.txt", "hit"),
                        ("COPY b.txt ./", "miss"), ("RUN ls /app > /list.txt", "miss")]
    # the steps that ran saw the layers of the hits below them
    image = unpack(f"docker://{repo}:2", tmp_path / "unpacked")
    assert image.read("app/b.txt") == "b changed\n"
    assert image.read("app/twice.txt") == "a\na\n"
    assert image.read("list.txt").split() == ["a.txt", "b.txt", "twice.txt"]

    (context / "a.txt").write_text("a changed\n")
    verdicts, _ = planned_then_built(builds, context, cache_repo=cache, destination=f"{repo}:3")
    assert verdicts_only(verdicts) == ["hit", "miss", "miss", "miss", "miss"]


def test_changed_build_arg_misses_from_the_run_using_it(builds: CacheBuilds, tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", """\
        FROM busybox
        COPY a.txt /a.txt
        ARG GREETING=hello
        RUN echo "$GREETING" > /greeting
        COPY b.txt /b.txt
        """, {"a.txt": "a\n", "b.txt": "b\n"})
    repo = builds.repo("arg")
    cache = f"{repo}/cache"
    cold, _ = planned_then_built(builds, context, "--build-arg", "GREETING=hi", cache_repo=cache,
                                 destination=f"{repo}:1")
    assert verdicts_only(cold) == ["miss"] * 3
    same, _ = planned_then_built(builds, context, "--build-arg", "GREETING=hi", cache_repo=cache,
                                 destination=f"{repo}:2")
    assert verdicts_only(same) == ["hit"] * 3
    changed, _ = planned_then_built(builds, context, "--build-arg", "GREETING=bye", cache_repo=cache,
                                    destination=f"{repo}:3")
    assert verdicts_only(changed) == ["hit", "miss", "miss"]
    assert unpack(f"docker://{repo}:3", tmp_path / "unpacked").read("greeting") == "bye\n"


def test_changed_env_misses_from_there(builds: CacheBuilds, tmp_path: Path) -> None:
    dockerfile = """\
        FROM busybox
        COPY a.txt /a.txt
        ENV MODE={mode}
        RUN echo "$MODE" > /mode
        WORKDIR /work
        """
    context = write_context(tmp_path / "ctx", dockerfile.format(mode="one"), {"a.txt": "a\n"})
    repo = builds.repo("env")
    cache = f"{repo}/cache"
    cold, _ = planned_then_built(builds, context, cache_repo=cache, destination=f"{repo}:1")
    assert verdicts_only(cold) == ["miss"] * 3
    write_context(context, dockerfile.format(mode="two"))
    changed, _ = planned_then_built(builds, context, cache_repo=cache, destination=f"{repo}:2")
    assert changed == [("COPY a.txt /a.txt", "hit"), ('RUN echo "$MODE" > /mode', "miss"), ("WORKDIR /work", "miss")]


def test_new_base_image_digest_under_the_same_tag_misses_everything(builds: CacheBuilds, tmp_path: Path) -> None:
    base = f"{builds.repo('base')}:latest"

    def push_base(version: str) -> None:
        ctx = write_context(tmp_path / f"base-{version}", "FROM busybox\nCOPY v /v\n", {"v": version})
        builds.run(["build", "--context", str(ctx), "--registry-mirror", builds.images.mirror,
                    "--insecure-registry", builds.registry.host, "--destination", base]).check()

    push_base("1")
    context = write_context(tmp_path / "ctx", f"""\
        FROM {base}
        COPY a.txt /a.txt
        RUN cat /v /a.txt > /both
        """, {"a.txt": "a\n"})
    repo = builds.repo("on-base")
    cache = f"{repo}/cache"
    cold, _ = planned_then_built(builds, context, cache_repo=cache, destination=f"{repo}:1")
    assert verdicts_only(cold) == ["miss", "miss"]
    warm, _ = planned_then_built(builds, context, cache_repo=cache, destination=f"{repo}:2")
    assert verdicts_only(warm) == ["hit", "hit"]

    push_base("2")  # same tag, another digest
    rebased, _ = planned_then_built(builds, context, cache_repo=cache, destination=f"{repo}:3")
    assert verdicts_only(rebased) == ["miss", "miss"]
    assert unpack(f"docker://{repo}:3", tmp_path / "unpacked").read("both") == "2a\n"


def test_dockerignored_files_do_not_matter(builds: CacheBuilds, tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", """\
        FROM busybox
        COPY . /src/
        COPY used.txt /used.txt
        RUN ls /src > /listing
        """, {".dockerignore": "ignored.txt\nnotes/\n", "used.txt": "u\n", "ignored.txt": "1\n",
              "notes/n.txt": "n\n"})
    repo = builds.repo("ignored")
    cache = f"{repo}/cache"
    cold, _ = planned_then_built(builds, context, cache_repo=cache, destination=f"{repo}:1")
    assert verdicts_only(cold) == ["miss"] * 3

    (context / "ignored.txt").write_text("2\n")
    (context / "notes" / "n.txt").write_text("changed\n")
    (context / "notes" / "new.txt").write_text("new\n")
    warm, _ = planned_then_built(builds, context, cache_repo=cache, destination=f"{repo}:2")
    assert verdicts_only(warm) == ["hit"] * 3


def test_unreferenced_files_do_not_matter(builds: CacheBuilds, tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", """\
        FROM busybox
        COPY used.txt /used.txt
        RUN cat /used.txt > /copy
        """, {"used.txt": "u\n", "other.txt": "1\n"})
    repo = builds.repo("unreferenced")
    cache = f"{repo}/cache"
    cold, _ = planned_then_built(builds, context, cache_repo=cache, destination=f"{repo}:1")
    assert verdicts_only(cold) == ["miss", "miss"]
    (context / "other.txt").write_text("2\n")
    (context / "another.txt").write_text("new\n")
    warm, _ = planned_then_built(builds, context, cache_repo=cache, destination=f"{repo}:2")
    assert verdicts_only(warm) == ["hit", "hit"]


def _created(builds: CacheBuilds, cache: str) -> dict[str, str]:
    """The created annotation of every step entry in ``cache``, by tag."""
    out: dict[str, str] = {}
    repo = Reference.parse(cache)
    with builds.client() as client:
        for tag in builds.cache_tags(cache):
            fetched = client.fetch_manifest(repo.with_tag(tag))
            assert fetched is not None
            out[tag] = Manifest.from_bytes(fetched.body).annotations[CREATED_ANNOTATION]
    return out


def test_expired_entries_miss_and_are_rewritten(builds: CacheBuilds, tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", "FROM busybox\nCOPY a.txt /a.txt\nRUN cp /a.txt /b.txt\n",
                            {"a.txt": "a\n"})
    repo = builds.repo("ttl")
    cache = f"{repo}/cache"
    cold, _ = planned_then_built(builds, context, cache_repo=cache, destination=f"{repo}:1")
    assert verdicts_only(cold) == ["miss", "miss"]
    before = _created(builds, cache)
    assert len(before) == 2
    time.sleep(2)

    expired, _ = planned_then_built(builds, context, "--cache-ttl", "1s", cache_repo=cache, destination=f"{repo}:2")
    assert verdicts_only(expired) == ["miss", "miss"]
    after = _created(builds, cache)
    assert after.keys() == before.keys(), "the same keys are rewritten, not new ones made"
    assert all(after[tag] > before[tag] for tag in before), f"entries not rewritten: {before} -> {after}"

    fresh, _ = planned_then_built(builds, context, cache_repo=cache, destination=f"{repo}:3")
    assert verdicts_only(fresh) == ["hit", "hit"]


def test_changed_secret_value_still_hits(builds: CacheBuilds, tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", """\
        FROM busybox
        RUN --mount=type=secret,id=token test -s /run/secrets/token && echo checked > /checked
        """)
    secret = tmp_path / "token"
    secret.write_text("first-secret\n")
    repo = builds.repo("secret")
    cache = f"{repo}/cache"
    flags = ("--secret", f"id=token,src={secret}")
    cold, _ = planned_then_built(builds, context, *flags, cache_repo=cache, destination=f"{repo}:1")
    assert verdicts_only(cold) == ["miss"]
    secret.write_text("another-secret-value\n")
    warm, _ = planned_then_built(builds, context, *flags, cache_repo=cache, destination=f"{repo}:2")
    assert verdicts_only(warm) == ["hit"]


def test_entries_of_another_platform_are_never_used(builds: CacheBuilds, tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", "FROM scratch\nCOPY a.txt /a.txt\nWORKDIR /data\n", {"a.txt": "a\n"})
    host = Platform.host()
    other = "linux/arm64" if host.architecture != "arm64" else "linux/amd64"
    repo = builds.repo("platform")
    cache = f"{repo}/cache"
    cold, _ = planned_then_built(builds, context, "--platform", str(host), cache_repo=cache,
                                 destination=f"{repo}:host")
    assert verdicts_only(cold) == ["miss", "miss"]
    foreign, _ = planned_then_built(builds, context, "--platform", other, cache_repo=cache,
                                    destination=f"{repo}:other")
    assert verdicts_only(foreign) == ["miss", "miss"]
    assert inspect_config(f"docker://{repo}:other")["architecture"] == other.split("/")[1]
    # each platform's entries are there for its own builds
    for platform, tag in ((str(host), "host2"), (other, "other2")):
        warm, _ = planned_then_built(builds, context, "--platform", platform, cache_repo=cache,
                                     destination=f"{repo}:{tag}")
        assert verdicts_only(warm) == ["hit", "hit"], platform
    assert inspect_config(f"docker://{repo}:other2")["architecture"] == other.split("/")[1]
    assert len(builds.cache_tags(cache)) == 4


def test_stages_chain_their_keys(builds: CacheBuilds, tmp_path: Path) -> None:
    """A child stage (FROM <stage>) and COPY --from follow the stage they read; a miss after hits in a child stage
    runs on the parent's cached layers."""
    context = write_context(tmp_path / "ctx", """\
        FROM busybox AS base
        COPY a.txt /a.txt
        FROM base AS child
        COPY b.txt /b.txt
        RUN cat /a.txt /b.txt > /ab
        FROM busybox
        COPY --from=child /ab /final
        """, {"a.txt": "a\n", "b.txt": "b\n"})
    repo = builds.repo("stages")
    cache = f"{repo}/cache"
    cold, _ = planned_then_built(builds, context, cache_repo=cache, destination=f"{repo}:1")
    assert verdicts_only(cold) == ["miss"] * 4
    warm, _ = planned_then_built(builds, context, cache_repo=cache, destination=f"{repo}:2")
    assert verdicts_only(warm) == ["hit"] * 4

    (context / "b.txt").write_text("b2\n")
    changed, _ = planned_then_built(builds, context, cache_repo=cache, destination=f"{repo}:3")
    assert changed == [("COPY a.txt /a.txt", "hit"), ("COPY b.txt /b.txt", "miss"),
                       ("RUN cat /a.txt /b.txt > /ab", "miss"), ("COPY --from=child /ab /final", "miss")]
    assert unpack(f"docker://{repo}:3", tmp_path / "unpacked").read("final") == "a\nb2\n"

    (context / "a.txt").write_text("a2\n")
    rebased, _ = planned_then_built(builds, context, cache_repo=cache, destination=f"{repo}:4")
    assert verdicts_only(rebased) == ["miss"] * 4
    assert unpack(f"docker://{repo}:4", tmp_path / "unpacked4").read("final") == "a2\nb2\n"


def test_run_with_a_bind_mount_of_the_context_is_keyed_on_what_it_binds(builds: CacheBuilds, tmp_path: Path) -> None:
    """Docker's recommended ``RUN --mount=type=bind,source=requirements.txt,...`` is cached like a COPY of what it
    binds (BuildKit keys it on that content): unchanged, the rebuild is all hits with the same digest; a change to
    a bound file misses from that step on; a change elsewhere in the context does not; writes to a ``rw`` bind are
    discarded (issue 11, item 5: such steps were never cached before)."""
    context = write_context(tmp_path / "ctx", """\
        FROM busybox
        RUN --mount=type=bind,source=requirements.txt,target=/tmp/requirements.txt cp /tmp/requirements.txt /installed
        RUN --mount=type=bind,target=/src,rw cat /src/conf/*.conf > /confs && touch /src/conf/written
        RUN --mount=type=bind,source=requirements.txt,target=/r echo third > /third
        """, {"requirements.txt": "flask==3.0\n", "conf/a.conf": "a\n", "README": "readme\n"})
    repo = builds.repo("bind")
    cache = f"{repo}/cache"
    env = {"SOURCE_DATE_EPOCH": EPOCH}
    cold, first = planned_then_built(builds, context, env=env, cache_repo=cache, destination=f"{repo}:1")
    assert verdicts_only(cold) == ["miss"] * 3
    assert not (context / "conf" / "written").exists(), "a rw bind's writes reached the build context"
    image = unpack(f"docker://{repo}:1", tmp_path / "unpacked1")
    assert image.read("installed") == "flask==3.0\n"
    assert image.read("confs") == "a\n"
    assert not image.exists("src/conf/written") and not image.exists("tmp/requirements.txt")

    warm, second = planned_then_built(builds, context, env=env, cache_repo=cache, destination=f"{repo}:2")
    assert verdicts_only(warm) == ["hit"] * 3
    assert built_digest(second) == built_digest(first), "a fully cached rebuild must give the same image"

    (context / "README").write_text("changed, but only the whole-context bind sees it\n")
    readme, _ = planned_then_built(builds, context, env=env, cache_repo=cache, destination=f"{repo}:3")
    assert verdicts_only(readme) == ["hit", "miss", "miss"]

    (context / "requirements.txt").write_text("flask==3.1\n")
    changed, _ = planned_then_built(builds, context, env=env, cache_repo=cache, destination=f"{repo}:4")
    assert verdicts_only(changed) == ["miss"] * 3
    assert unpack(f"docker://{repo}:4", tmp_path / "unpacked4").read("installed") == "flask==3.1\n"


def test_copy_link_does_not_depend_on_the_layers_below(builds: CacheBuilds, tmp_path: Path) -> None:
    """BuildKit's point of --link: the step hits as long as its own sources and destination are the same, whatever
    changed below it; what comes after a --link step still depends on everything below (issue 11, item 6)."""
    context = write_context(tmp_path / "ctx", """\
        FROM busybox
        COPY --link a.txt /a.txt
        COPY --link b.txt /b.txt
        RUN cat /a.txt /b.txt > /ab
        COPY --link --chown=www-data b.txt /b-named.txt
        COPY --link --chmod=600 b.txt /b-chmod.txt
        """, {"a.txt": "a\n", "b.txt": "b\n"})
    repo = builds.repo("link")
    cache = f"{repo}/cache"
    cold, _ = planned_then_built(builds, context, cache_repo=cache, destination=f"{repo}:1")
    assert verdicts_only(cold) == ["miss"] * 5

    (context / "a.txt").write_text("a changed\n")
    changed, _ = planned_then_built(builds, context, cache_repo=cache, destination=f"{repo}:2")
    # --chown by name reads /etc/passwd below, and --link with --chmod is a plain copy in BuildKit: both chain
    assert changed == [("COPY --link a.txt /a.txt", "miss"), ("COPY --link b.txt /b.txt", "hit"),
                       ("RUN cat /a.txt /b.txt > /ab", "miss"),
                       ("COPY --link --chown=www-data b.txt /b-named.txt", "miss"),
                       ("COPY --link --chmod=600 b.txt /b-chmod.txt", "miss")]
    image = unpack(f"docker://{repo}:2", tmp_path / "unpacked")
    assert image.read("ab") == "a changed\nb\n"
    assert (image.lstat("b-named.txt").st_uid, image.lstat("b-chmod.txt").st_mode & 0o777) == (33, 0o600)

    other = write_context(tmp_path / "other", """\
        FROM busybox
        RUN echo something else below > /below
        COPY --link b.txt /b.txt
        """, {"b.txt": "b\n"})
    elsewhere, _ = planned_then_built(builds, other, cache_repo=cache, destination=f"{repo}:3")
    assert elsewhere == [("RUN echo something else below > /below", "miss"), ("COPY --link b.txt /b.txt", "hit")]
    image = unpack(f"docker://{repo}:3", tmp_path / "unpacked3")
    assert (image.read("below"), image.read("b.txt")) == ("something else below\n", "b\n")


def test_what_copy_reads_decides_its_key(builds: CacheBuilds, tmp_path: Path) -> None:
    """Permission bits, file names matched by a wildcard and heredoc bodies are part of a step's key."""
    dockerfile = """\
        FROM busybox
        COPY *.txt /d/
        COPY <<EOF /inline
        {inline}
        EOF
        RUN <<EOF
        echo {script} > /script
        EOF
        """
    context = write_context(tmp_path / "ctx", dockerfile.format(inline="one", script="one"),
                            {"x.txt": "x\n", "run.sh": "#!/bin/sh\n"})
    repo = builds.repo("inputs")
    cache = f"{repo}/cache"
    cold, _ = planned_then_built(builds, context, cache_repo=cache, destination=f"{repo}:1")
    assert verdicts_only(cold) == ["miss"] * 3

    (context / "x.txt").chmod(0o600)
    mode, _ = planned_then_built(builds, context, cache_repo=cache, destination=f"{repo}:2")
    assert verdicts_only(mode) == ["miss"] * 3, "a mode change must miss"
    (context / "x.txt").rename(context / "y.txt")
    renamed, _ = planned_then_built(builds, context, cache_repo=cache, destination=f"{repo}:3")
    assert verdicts_only(renamed) == ["miss"] * 3, "a renamed source must miss"
    (context / "run.sh").write_text("#!/bin/sh\necho changed\n")  # not matched by *.txt
    os.utime(context / "y.txt", (0, 0))  # a new mtime alone is no change
    same, _ = planned_then_built(builds, context, cache_repo=cache, destination=f"{repo}:4")
    assert verdicts_only(same) == ["hit"] * 3

    write_context(context, dockerfile.format(inline="two", script="one"))
    inline, _ = planned_then_built(builds, context, cache_repo=cache, destination=f"{repo}:5")
    assert verdicts_only(inline) == ["hit", "miss", "miss"]
    write_context(context, dockerfile.format(inline="two", script="two"))
    script, _ = planned_then_built(builds, context, cache_repo=cache, destination=f"{repo}:6")
    assert verdicts_only(script) == ["hit", "hit", "miss"]
    assert unpack(f"docker://{repo}:6", tmp_path / "unpacked").read("script") == "two\n"


def test_undeclared_and_proxy_build_args_do_not_matter(builds: CacheBuilds, tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", "FROM busybox\nCOPY a.txt /a.txt\nRUN cp /a.txt /b.txt\n",
                            {"a.txt": "a\n"})
    repo = builds.repo("proxy-args")
    cache = f"{repo}/cache"
    planned_then_built(builds, context, "--build-arg", "HTTP_PROXY=http://proxy-one:3128", "--build-arg",
                       "UNDECLARED=1", cache_repo=cache, destination=f"{repo}:1")
    warm, _ = planned_then_built(builds, context, "--build-arg", "HTTP_PROXY=http://proxy-two:3128",
                                 "--build-arg", "UNDECLARED=2", cache_repo=cache, destination=f"{repo}:2")
    assert verdicts_only(warm) == ["hit", "hit"]


def test_steps_without_a_layer_are_cached_too(builds: CacheBuilds, tmp_path: Path) -> None:
    """Entries of steps that change nothing hold no layer; a rebuild from them gives the same image."""
    context = write_context(tmp_path / "ctx", """\
        FROM busybox
        WORKDIR /
        RUN true
        COPY a.txt /a.txt
        """, {"a.txt": "a\n"})
    repo = builds.repo("empty-steps")
    cache = f"{repo}/cache"
    env = {"SOURCE_DATE_EPOCH": EPOCH}
    cold, first = planned_then_built(builds, context, env=env, cache_repo=cache, destination=f"{repo}:1")
    assert verdicts_only(cold) == ["miss"] * 3
    warm, second = planned_then_built(builds, context, env=env, cache_repo=cache, destination=f"{repo}:2")
    assert verdicts_only(warm) == ["hit"] * 3
    assert built_digest(second) == built_digest(first)
    history = inspect_config(f"docker://{repo}:2")["history"][-3:]
    assert [h.get("empty_layer", False) for h in history] == [True, True, False]


def test_reproducible_build_does_not_depend_on_what_the_cache_holds(builds: CacheBuilds, tmp_path: Path) -> None:
    """With SOURCE_DATE_EPOCH set, the image is the same whether its layers were made now or come from a cache
    filled by a build without it (or with another epoch): layer timestamps depend on the epoch."""
    context = write_context(tmp_path / "ctx", "FROM busybox\nCOPY a.txt /a.txt\nRUN cp /a.txt /b.txt\n",
                            {"a.txt": "a\n"})
    env = {"SOURCE_DATE_EPOCH": EPOCH}
    clean = builds.repo("epoch-clean")
    _, reference = planned_then_built(builds, context, env=env, cache_repo=f"{clean}/cache",
                                      destination=f"{clean}:1")

    mixed = builds.repo("epoch-mixed")
    planned_then_built(builds, context, cache_repo=f"{mixed}/cache", destination=f"{mixed}:1")  # no epoch
    time.sleep(1.1)  # the layers' mtimes of a build now would differ from the first's
    verdicts, reproducible = planned_then_built(builds, context, env=env, cache_repo=f"{mixed}/cache",
                                                destination=f"{mixed}:2")
    if built_digest(reproducible) != built_digest(reference):
        want = Manifest.from_bytes(inspect_raw(f"docker://{clean}:1")).layers
        got = Manifest.from_bytes(inspect_raw(f"docker://{mixed}:2")).layers
        differ = [i for i, (a, b) in enumerate(zip(want, got, strict=True)) if a.digest != b.digest]
        pytest.fail(f"the SOURCE_DATE_EPOCH build gave another image when its steps came from a cache filled without"
                    f" the epoch ({verdicts}): layers {differ} differ. The cache key must cover the epoch (layer"
                    " timestamps depend on it).")


# ---------------------------------------------------------------------------------------------------------------
# what a fully cached build moves


@pytest.fixture
def proxy(registry: RunningRegistry) -> Iterator[RecordingProxy]:
    with RecordingProxy(registry.host) as recording:
        yield recording


def test_fully_cached_build_fetches_no_layer(builds: CacheBuilds, proxy: RecordingProxy, tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", APP, {"a.txt": "a\n", "b.txt": "b\n"})
    path = f"cachetest/wire-{uuid.uuid4().hex[:8]}"
    env = {"SOURCE_DATE_EPOCH": EPOCH}
    first = builds.build(context, "--cache-repo", f"{builds.registry.host}/{path}/cache", "--destination",
                         f"{builds.registry.host}/{path}:1", env=env).check()

    # the same cache and base image, now only through the proxy; a destination repository that holds nothing yet
    started = time.monotonic()
    second = builds.build(context, "--cache-repo", f"{proxy.host}/{path}/cache", "--destination",
                          f"{proxy.host}/{path}-again:1", env=env, mirror=proxy.host, insecure=[proxy.host]).check()
    seconds = time.monotonic() - started
    exchanges = proxy.exchanges
    print(f"fully cached build through the proxy: {seconds:.2f}s wall (soft target < 2s), "
          f"{len(exchanges)} requests")
    assert verdicts_only(step_verdicts(second)) == ["hit"] * 5, second.describe()
    assert built_digest(second) == built_digest(first)

    manifest = Manifest.from_bytes(inspect_raw(f"docker://{builds.registry.host}/{path}-again:1"))
    layers = {layer.digest for layer in manifest.layers}
    assert len(layers) == len(base_layers(builds)) + 5
    fetched = [(e.route, m["digest"]) for e in exchanges if e.method == "GET"
               for m in [BLOB_PATH.match(e.route)] if m]
    assert not [f for f in fetched if f[1] in layers], f"a fully cached build downloaded layers: {fetched}"
    # not even the base image's config: the cache keeps it inside a manifest (descriptor "data")
    assert not fetched, f"a fully cached build fetched blobs: {fetched}"

    # pushing: every layer is found (HEAD) or mounted (POST ?mount=), none uploaded
    assert not [e for e in exchanges if e.method == "PATCH"], "layer data was uploaded in chunks"
    uploaded = [query(e.path).get("digest") for e in exchanges if e.method == "PUT" and "/blobs/uploads/" in e.route]
    assert uploaded == [manifest.config.digest], f"blobs uploaded: {uploaded}"
    mounted = {query(e.path).get("mount") for e in exchanges
               if e.method == "POST" and e.route.endswith("/blobs/uploads/") and e.status == 201}
    assert mounted == layers, f"layers not mounted into the destination: {layers - mounted}\n{exchanges}"
    blob_bytes = sum(e.sent for e in exchanges if "/blobs/" in e.route)
    assert blob_bytes == manifest.config.size, f"{blob_bytes} bytes of blobs sent, only the config expected"
    cache_writes = [e for e in exchanges if e.method in ("PUT", "POST", "PATCH") and f"/{path}/cache/" in e.route]
    assert not cache_writes, f"a fully cached build wrote to the cache: {cache_writes}"


def test_cache_on_another_registry_than_the_destination(builds: CacheBuilds, proxy: RecordingProxy,
                                                        tmp_path: Path) -> None:
    """Layers cannot be mounted across registries: hits are downloaded from the cache and uploaded to the
    destination, which then holds a complete image. (The proxy is "another registry": another host name.)"""
    context = write_context(tmp_path / "ctx", APP, {"a.txt": "a\n", "b.txt": "b\n"})
    path = f"cachetest/cross-{uuid.uuid4().hex[:8]}"
    cache = f"{proxy.host}/{path}/cache"
    builds.build(context, "--cache-repo", cache, "--destination", f"{builds.registry.host}/{path}:1",
                 insecure=[proxy.host]).check()
    proxy.clear()
    warm = builds.build(context, "--cache-repo", cache, "--destination", f"{builds.registry.host}/{path}-again:1",
                        insecure=[proxy.host]).check()
    assert verdicts_only(step_verdicts(warm)) == ["hit"] * 5
    manifest = Manifest.from_bytes(inspect_raw(f"docker://{builds.registry.host}/{path}-again:1"))
    cached_layers = {layer.digest for layer in manifest.layers} - set(base_layers(builds))
    fetched = {m["digest"] for e in proxy.exchanges if e.method == "GET" and e.status == 200
               for m in [BLOB_PATH.match(e.route)] if m}
    assert fetched == cached_layers
    image = unpack(f"docker://{builds.registry.host}/{path}-again:1", tmp_path / "unpacked")
    assert image.read("list.txt").split() == ["a.txt", "b.txt", "twice.txt"]


def test_fully_cached_build_written_to_a_layout(builds: CacheBuilds, tmp_path: Path) -> None:
    """--oci-layout-path and --tar-path need every layer on disk: hits are downloaded from the cache for them."""
    context = write_context(tmp_path / "ctx", APP, {"a.txt": "a\n", "b.txt": "b\n"})
    repo = builds.repo("layout")
    cache = f"{repo}/cache"
    builds.build(context, "--cache-repo", cache, "--destination", f"{repo}:1").check()
    layout, tarball = tmp_path / "layout", tmp_path / "image.tar"
    warm = builds.build(context, "--cache-repo", cache, "--no-push", "--oci-layout-path", str(layout),
                        "--tar-path", str(tarball)).check()
    assert verdicts_only(step_verdicts(warm)) == ["hit"] * 5
    image = unpack(f"oci:{layout}:latest", tmp_path / "from-layout")
    assert image.read("list.txt").split() == ["a.txt", "b.txt", "twice.txt"]
    assert len(inspect(f"docker-archive:{tarball}")["Layers"]) == len(image.manifest["layers"])


# ---------------------------------------------------------------------------------------------------------------
# flags


def test_dry_run_pushes_nothing_and_prints_the_plan(builds: CacheBuilds, tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", APP, {"a.txt": "a\n", "b.txt": "b\n"})
    repo = builds.repo("dry")
    cache = f"{repo}/cache"
    host, name = repo.split("/", 1)
    cold = builds.build(context, "--destination", f"{repo}:1", "--dry-run").check()  # cache repo: <repo>/cache
    assert plan_verdicts(cold) == [
        ("WORKDIR /app", "miss"), ("COPY a.txt ./", "miss"), ("RUN cat a.txt a.txt > twice.txt", "miss"),
        ("COPY b.txt ./", "miss"), ("RUN ls /app > /list.txt", "miss")], cold.describe()
    assert "dry run: 0 of 5 filesystem steps would come from the cache" in cold.stdout, cold.describe()
    assert tags(host, name) == [], "--dry-run pushed the image"
    assert builds.cache_tags(cache) == [], "--dry-run stored cache entries"

    builds.build(context, "--destination", f"{repo}:1").check()
    warm = builds.build(context, "--destination", f"{repo}:2", "--dry-run").check()
    assert verdicts_only(plan_verdicts(warm)) == ["hit"] * 5, warm.describe()
    assert "dry run: 5 of 5 filesystem steps" in warm.stdout
    assert tags(host, name) == ["1"], "--dry-run pushed the image"
    assert "built sha256:" not in warm.stdout and "pushed " not in warm.stdout


def test_no_push_cache_stores_nothing(builds: CacheBuilds, tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", APP, {"a.txt": "a\n", "b.txt": "b\n"})
    repo = builds.repo("no-push-cache")
    cache = f"{repo}/cache"
    cold = builds.build(context, "--cache-repo", cache, "--destination", f"{repo}:1", "--no-push-cache").check()
    assert verdicts_only(step_verdicts(cold)) == ["miss"] * 5
    assert builds.all_cache_tags(cache) == []
    assert tags(*repo.split("/", 1)) == ["1"]

    # it still uses what is there
    builds.build(context, "--cache-repo", cache, "--destination", f"{repo}:2").check()
    stored = sorted(builds.cache_tags(cache))
    assert len(stored) == 5
    warm = builds.build(context, "--cache-repo", cache, "--destination", f"{repo}:3", "--no-push-cache").check()
    assert verdicts_only(step_verdicts(warm)) == ["hit"] * 5
    assert sorted(builds.cache_tags(cache)) == stored


def test_prune_keeps_the_newest(builds: CacheBuilds, tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", APP, {"a.txt": "a\n", "b.txt": "b\n"})
    repo = builds.repo("prune")
    cache = f"{repo}/cache"
    builds.build(context, "--cache-repo", cache, "--destination", f"{repo}:1").check()
    assert len(builds.cache_tags(cache)) == 5
    pruned = builds.run(["cache", "prune", "--cache-repo", cache, "--older-than", "0s", "--keep", "1",
                         "--insecure-registry", builds.registry.host]).check()
    assert "deleted 4 stale cache entries, kept 1" in pruned.stdout, pruned.describe()
    assert len(builds.cache_tags(cache)) == 1
    assert tags(*repo.split("/", 1)) == ["1"], "prune touched the image repository"


def test_cache_failures_never_fail_the_build(builds: CacheBuilds, auth_registry: RunningRegistry,
                                             tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", APP, {"a.txt": "a\n", "b.txt": "b\n"})
    repo = builds.repo("denied")
    cache = builds.repo("denied-cache", host=auth_registry.host)  # no credentials for it
    run = builds.build(context, "--cache-repo", cache, "--destination", f"{repo}:1",
                       insecure=[auth_registry.host])
    assert run.returncode == 0, run.describe()
    warnings = [line for line in run.stdout.splitlines() if line.startswith("warning:")]
    assert any("could not store cache entry" in w for w in warnings), run.describe()
    assert verdicts_only(step_verdicts(run)) == ["miss"] * 5
    assert tags(*repo.split("/", 1)) == ["1"]
    assert unpack(f"docker://{repo}:1", tmp_path / "unpacked").read("app/twice.txt") == "a\na\n"


def test_unreachable_cache_never_fails_the_build(builds: CacheBuilds, tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", "FROM busybox\nCOPY a.txt /a.txt\nRUN cp /a.txt /b.txt\n",
                            {"a.txt": "a\n"})
    repo = builds.repo("unreachable")
    nobody = f"127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    run = builds.build(context, "--cache-repo", f"{nobody}/cachetest/cache", "--destination", f"{repo}:1",
                       insecure=[nobody])
    print(f"build with an unreachable cache: {time.monotonic() - started:.1f}s\n{run.stdout}")
    assert run.returncode == 0, run.describe()
    assert verdicts_only(step_verdicts(run)) == ["miss", "miss"]
    assert [line for line in run.stdout.splitlines() if line.startswith("warning:")], run.describe()
    assert tags(*repo.split("/", 1)) == ["1"]
