"""The build: Dockerfile in, image out. Stages run in order; each filesystem step becomes a layer.

``build()`` is the whole pipeline: read the context and Dockerfile, work out which stages the target needs, run
them (FROM, then each instruction, snapshotting after RUN, COPY and WORKDIR), assemble the image config and manifest,
then push to every destination and write the requested files. The workspace is removed at the end, whatever happens.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from lamina.attest.attach import PREDICATE_TYPE
from lamina.build.attestations import (
    SCAN_CONTEXT,
    SCAN_STAGE,
    BuildFacts,
    build_time,
    make_attestations,
    sbom_key,
    scan_directory,
    scan_enabled,
    scan_layers,
)
from lamina.build.context import BuildContext
from lamina.build.handlers import metadata
from lamina.build.handlers.add import (
    Clone,
    GitError,
    GitFetch,
    add_files,
    fetch_git,
    git_fetches,
    is_http_source,
)
from lamina.build.handlers.copy import (
    ContextSource,
    RootfsSource,
    SourceTree,
    copy_created_by,
    copy_destination,
    copy_files,
    hash_copy_sources,
    hash_source_paths,
)
from lamina.build.handlers.heredoc import prepare_copy_heredocs
from lamina.build.handlers.run import created_by as run_created_by
from lamina.build.handlers.run import execute_run
from lamina.build.handlers.run_mounts import (
    mount_cache_location,
    parse_run_mount,
    parse_run_mounts,
    prepare_mounts,
    run_network,
)
from lamina.build.outputs import Attached, parse_destination, push_attested, push_image, write_outputs
from lamina.build.sparse import USER_DB, on_skeleton, rootfs_needed_after
from lamina.build.ssh_agents import SshAgents
from lamina.build.stage import (
    PulledImage,
    ensure_local,
    fetch_all,
    materialize,
    resolve_image,
    state_from_image,
)
from lamina.build.state import LayerRef, StageState
from lamina.build.workspace import Workspace
from lamina.cache.entries import CacheEntry
from lamina.cache.key import compute_base_key, compute_executed_key, compute_link_chain, compute_step_key
from lamina.cache.layer_cache import LayerCache
from lamina.cache.stores import CacheStore, LayoutStore, RegistryStore, open_store
from lamina.dockerfile.instructions import (
    Arg,
    Command,
    Copy,
    Dockerfile,
    Expose,
    Healthcheck,
    Instruction,
    KeyValues,
    Onbuild,
    Run,
    Single,
    Stage,
    Volume,
    instruction_from_node,
    load_dockerfile,
)
from lamina.dockerfile.mounts import BindMount, CacheMount, SecretMount, SshMount
from lamina.dockerfile.parse import parse_dockerfile
from lamina.dockerfile.stages import (
    automatic_args,
    evaluate_meta_args,
    expand_meta,
    find_stage,
    needed_stages,
    select_target,
)
from lamina.errors import (
    ContextError,
    DockerfileError,
    ImmutableTag,
    InvalidReference,
    LaminaError,
    OptionsError,
    RegistryError,
    UnsupportedInstruction,
)
from lamina.oci.digest import compute_digest
from lamina.oci.layout import ImageBlobs
from lamina.oci.model import (
    OCI_CONFIG,
    Descriptor,
    Manifest,
    Platform,
    canonical_json,
    layer_media_type_for_oci,
)
from lamina.oci.reference import Reference
from lamina.oci.registry.client import RegistryClient
from lamina.options import BuildOptions, default_mount_cache_dir
from lamina.progress import Progress, StepResult
from lamina.rootfs.mounts import available_memory, is_full, memory_budget
from lamina.rootfs.mounts import unavailable_reason as overlay_unavailable
from lamina.rootfs.overlay import StageOverlay
from lamina.rootfs.paths import resolve_in_root
from lamina.rootfs.skeleton import SkeletonError, select, write_skeleton
from lamina.rootfs.unpack import unpack_layer
from lamina.sandbox.base import DEFAULT_HOSTNAME, DEFAULT_PATH, Runner
from lamina.sandbox.inplace import ROOT, InplaceRoot
from lamina.sandbox.users import UnknownUser, read_user_db, resolve_user
from lamina.snapshot.diff import Changes, diff_scans, without_paths
from lamina.snapshot.scan import FileState, has_capability, scan_tree
from lamina.snapshot.tar import LayerBlob, write_layer

if TYPE_CHECKING:
    from lamina.rootfs.image_files import FinalTree

log = logging.getLogger(__name__)

HISTORY_COMMENT = "buildkit.dockerfile.v0"
PROXY_ARGS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy", "NO_PROXY",
              "no_proxy", "ALL_PROXY", "all_proxy")
HOST_RESOLV_CONF = Path("/etc/resolv.conf")
HOST_HOSTS = Path("/etc/hosts")
HOSTNAME_ARG = "BUILDKIT_SANDBOX_HOSTNAME"  # BuildKit's build argument for RUN's hostname (dockerui/config.go)


@dataclass(frozen=True)
class BuildResult:
    digest: str  # what the tags name: the image manifest's digest, or the index's when it has attestations
    config_digest: str
    manifest: bytes
    config: bytes
    size: int  # compressed layers + config + manifest
    steps: tuple[StepResult, ...]
    destinations: tuple[str, ...]  # what was pushed, as given
    warnings: tuple[str, ...] = ()
    plan: tuple[tuple[str, str, str], ...] = ()  # with the cache: (stage, instruction, "hit"|"miss"|"not cached")
    manifest_digest: str = ""  # the image manifest's digest
    attestations: tuple[tuple[str, str], ...] = ()  # (predicate type, digest of the in-toto statement)
    attestation_manifest: str = ""  # the attestation manifest's digest


def display_path(path: Path) -> str:
    """How to name a file in messages: relative to the working directory when below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def read_dockerfile(options: BuildOptions) -> tuple[Dockerfile, BuildContext]:
    if not options.context.exists():
        raise ContextError(f"the build context {options.context} does not exist")
    if not options.context.is_dir():
        raise ContextError(f"the build context {options.context} is not a directory")
    path = options.dockerfile
    if not path.is_file() and path.name == "Dockerfile" and path.with_name("dockerfile").is_file():
        path = path.with_name("dockerfile")  # BuildKit reads the lower-case name too (moby/moby#10858)
    if not path.is_file():
        raise ContextError(f"no Dockerfile at {path}"
                           + ("" if path.exists() else " (the file does not exist; pass --dockerfile)"))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ContextError(f"cannot read {path}: {exc}") from None
    dockerfile = load_dockerfile(text, file=display_path(path))
    return dockerfile, BuildContext.load(options.context, path)


@dataclass(frozen=True)
class PlannedStep:
    stage: str
    instruction: Instruction
    key: str | None  # None: not cacheable, or not knowable before the steps before it run


def proxy_environment(build_args: Mapping[str, str]) -> dict[str, str]:
    """The proxy variables a RUN gets from the build args, as BuildKit's ``proxyEnvFromBuildArgs`` and its
    executor's ``proxyEnvList``: each of http, https, ftp, no and all proxy under both spellings, from a build arg
    of either case (the lower-case one wins when both are given)."""
    out: dict[str, str] = {}
    for name in sorted(build_args):
        if name.upper() in PROXY_ARGS and build_args[name]:
            out[name.upper()] = out[name.lower()] = build_args[name]
    return out


def fill_history_times(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """History with a time on every entry, as BuildKit's exporter fills them (``normalizeLayersAndHistory``):
    an entry without one (a step that made no layer) takes the time of the first layer made after such an entry,
    and from there on the time of the latest layer before it; with no such layer, the last time there is. So a
    rebuild from the cache, whose layers keep their times, gives the same config."""
    created: str | None = None
    seen_untimed = False
    for entry in history:
        if entry.get("created"):
            created = entry["created"]
            if seen_untimed:
                break
        else:
            seen_untimed = True
    filled: list[dict[str, Any]] = []
    seen_untimed = False
    for entry in history:
        if entry.get("created"):
            if seen_untimed:
                created = entry["created"]
        else:
            seen_untimed = True
            if created is not None:
                entry = {"created": created, **entry}
        filled.append(entry)
    return filled


LINK_PARENT = "link"  # what a --link copy's key is chained from instead of the layers below it


def _independent_of_below(inst: Instruction) -> bool:
    """Is the step's layer made without the layers below it? A --link copy is, unless --chown names a user or a
    group (read from the /etc/passwd and /etc/group below)."""
    if not isinstance(inst, Copy) or not inst.linked:
        return False
    return inst.chown is None or re.fullmatch(r"\d+(:\d+)?", inst.chown) is not None


def _is_remote(source: str) -> bool:
    lowered = source.lower()
    return lowered.startswith(("http://", "https://", "git://", "ssh://", "git@")) or lowered.endswith(".git")


@contextmanager
def located(inst: Instruction) -> Iterator[None]:
    """Registry errors while pulling for an instruction say which instruction, as Dockerfile errors do."""
    try:
        yield
    except RegistryError as exc:
        exc.message = f"{inst.file}:{inst.line}:1: {inst.keyword}: {exc.message}"
        raise


@dataclass
class _Build:
    options: BuildOptions
    client: RegistryClient
    runner: Runner
    progress: Progress
    workspace: Workspace
    dockerfile: Dockerfile
    context: BuildContext
    platform: Platform
    meta: dict[str, str] = field(default_factory=dict)
    used_args: set[str] = field(default_factory=set)
    states: dict[int, StageState] = field(default_factory=dict)
    images: dict[str, Path] = field(default_factory=dict)  # COPY --from images, by reference
    steps: list[StepResult] = field(default_factory=list)
    step_total: int = 0
    created: str = ""
    cache: LayerCache | None = None
    planning: bool = False  # compute keys only: nothing is pulled, executed or pushed
    plan: list[PlannedStep] = field(default_factory=list)
    resolved: dict[str, PulledImage] = field(default_factory=dict)
    keys: dict[tuple[int, int, str | None], str | None] = field(default_factory=dict)  # (stage, line, parent) -> key
    inplace: InplaceRoot | None = None  # the inplace sandbox: each stage is built in / in turn (see inplace.py)
    last_stage: int | None = None  # the index of the stage built last (inplace: it keeps / when the build ends)
    rootfs_after: dict[int, bool] = field(default_factory=dict)  # stage index -> does a later stage need a rootfs?
    in_root: StageState | None = None  # inplace: the stage whose files are in / (until another stage needs it)
    skeleton_trees: dict[int, FinalTree] = field(default_factory=dict)  # stage index -> its layers' metadata tree
    clones: list[GitFetch] = field(default_factory=list)  # planning: the repositories ADD clones
    cloned: dict[GitFetch, Clone | GitError] = field(default_factory=dict)  # made before anything ran (inplace)
    facts: BuildFacts = field(default_factory=BuildFacts)  # what provenance records
    ssh_agents: SshAgents | None = None  # --ssh: the agents RUN --mount=type=ssh relays to
    hostname_warned: bool = False  # BUILDKIT_SANDBOX_HOSTNAME where it cannot apply: said once

    @property
    def escape(self) -> str:
        return self.dockerfile.escape

    def timestamp(self) -> str:
        if self.options.source_date_epoch is not None:
            return datetime.fromtimestamp(self.options.source_date_epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def evaluate_meta_args(self, target: Stage) -> None:
        build_args = self.options.build_arg_map
        self.meta.update(automatic_args(self.platform, Platform.host(), target))
        for name in (*PROXY_ARGS, HOSTNAME_ARG):
            if name in build_args:  # usable without ARG, never persisted (BuildKit)
                self.used_args.add(name)
        self.used_args |= evaluate_meta_args(self.dockerfile.meta_args, build_args, self.meta)

    # -- stages -------------------------------------------------------------------------------------------------

    def run_stage(self, stage: Stage) -> StageState:
        started = time.monotonic()
        base = stage.base
        image = expand_meta(base, base.image, self.meta)
        if not image:
            raise base.error(f"the base image name {base.image!r} expands to nothing")
        self.step_started(stage, base.original)
        platform = self.platform
        if base.platform:
            text = expand_meta(base, base.platform, self.meta)
            try:
                platform = Platform.parse(text)
            except ValueError as exc:
                raise base.error(f"--platform={text}: {exc}", column=base.column_of("--platform")) from None
        rootfs = self.workspace.rootfs("plan" if self.planning else "stages", stage.index)
        if self.inplace is not None and not self.planning:
            rootfs = ROOT
        parent = find_stage(self.dockerfile, image, before=stage.index)
        if image.lower() == "scratch":  # BuildKit's empty image: PATH set, WorkingDir /
            state = StageState(stage, rootfs, platform, config={"Env": [f"PATH={DEFAULT_PATH}"], "WorkingDir": "/"},
                               base_name="scratch", key=compute_base_key("scratch", "", str(platform)))
        elif parent is not None:
            state = self.states[parent.index].copy_for_child(stage, rootfs)
            state.platform = platform
        else:
            ref = self.parse_reference(base, image)
            with located(base):
                pulled = self.resolve_image(ref, platform)
            state = state_from_image(stage, rootfs, platform, pulled, str(ref))
            state.key = compute_base_key("image", pulled.manifest_digest, str(platform))
        self.step_finished(stage, base.original, started, None)
        triggers = [str(t) for t in state.config.pop("OnBuild", None) or []]  # run once, not inherited further
        self.step_total += len(triggers)
        for number, trigger in enumerate(triggers, 1):
            self.run_instruction(state, self.onbuild_trigger(base, image, number, trigger))
        for inst in stage.instructions:
            self.run_instruction(state, inst)
        if self.single_snapshot_stage(state) and not self.planning and state.materialized:
            layer = self.snapshot(state, final=True)
            if layer is not None:  # the one layer of everything the stage's steps changed
                state.history.append(self.history_entry(f"single snapshot of stage {stage.label} "
                                                        "(--single-snapshot)", layer, self.created))
        if state.rootfs == ROOT and not state.materialized and stage.index != self.last_stage:
            # inplace: a stage that never needed its files gets them outside / if a later step wants them; one
            # whose files are in / keeps them there until another stage needs / (a COPY --from reads them there)
            state.rootfs = self.workspace.rootfs("stages", stage.index)
        return state

    def give_up_root(self, state: StageState) -> None:
        """The inplace sandbox at the end of a stage: its files are moved out of ``/`` into the work directory
        (renames), where a later COPY --from or RUN --mount from= finds them, and ``/`` is empty for the next stage.
        Where the work directory is on another filesystem they are removed, and unpacked again if needed."""
        assert self.inplace is not None
        aside = self.workspace.rootfs("stages", state.stage.index)
        moved = False
        if state.materialized:
            moved = self.inplace.clear(into=aside)
            if not moved:
                shutil.rmtree(aside, ignore_errors=True)
                aside.mkdir(mode=0o755)
        state.rootfs, state.materialized, state.scan = aside, moved, None
        if self.in_root is state:
            self.in_root = None

    def resolve_image(self, ref: Reference, platform: Platform) -> PulledImage:
        key = f"{ref}|{platform}"
        if key not in self.resolved:
            self.resolved[key] = resolve_image(self.client, ref, platform, self.workspace, self.cache,
                                               cache_dir=self.options.cache_dir,
                                               ttl_seconds=self.options.cache_ttl_seconds, say=self.progress.message)
        if not self.planning:
            self.facts.image(str(ref), str(platform), self.resolved[key].manifest_digest)
        return self.resolved[key]

    def materialize(self, state: StageState) -> None:
        if state.materialized:
            return
        resumed = 0
        if self.inplace is not None and state.rootfs == ROOT:
            occupant = self.in_root
            parent = state.parent
            if (occupant is not None and occupant is parent and parent is not None
                    and state.layers[:len(parent.layers)] == parent.layers):
                # the parent stage's files are in / already: the child goes on from them (the parent, if a later
                # step reads it, is unpacked again elsewhere)
                resumed = len(parent.layers)
                parent.rootfs, parent.materialized, parent.scan = \
                    self.workspace.rootfs("stages", parent.stage.index), False, None
            elif occupant is not None and occupant is not state:
                self.give_up_root(occupant)
            self.in_root = state
        with located(state.stage.base):
            materialize(self.client, state, self.options.cache_dir, inplace=self.inplace,
                        mounts=self.workspace.mounts, reuse=self.may_reuse_root(state), resumed=resumed)

    def may_reuse_root(self, state: StageState) -> bool:
        """Inplace: may the stage be unpacked over the runtime image's files (see stage.materialize)? Only when no
        stage built after it needs a root filesystem (its files are never moved out of / then: those of the
        container's lower layers could not be) and none of its RUN steps places a mount (a placed mount renames the
        directory it covers, which a directory of a lower overlayfs layer refuses)."""
        if self.inplace is None or self.rootfs_after.get(state.stage.index, True):
            return False
        if self.options.single_snapshot and state.stage.index != self.last_stage:
            return False  # the target stage is then unpacked whatever its steps
        return not any(isinstance(inst, Run) and inst.mounts for inst in state.stage.instructions)

    def onbuild_trigger(self, base: Instruction, image: str, number: int, trigger: str) -> Instruction:
        """An ONBUILD trigger of the base image as an instruction; errors name the FROM line."""
        try:
            parsed = parse_dockerfile(trigger, file=f"{base.file}:{base.line} ONBUILD trigger {number} of {image}")
            inst = instruction_from_node(parsed.nodes[0], base.file)
        except DockerfileError as exc:
            raise base.error(f"the ONBUILD trigger {trigger!r} of {image} is invalid: {exc.detail}") from None
        if inst.keyword in ("ONBUILD", "FROM", "MAINTAINER"):
            raise base.error(f"{inst.keyword} isn't allowed as an ONBUILD trigger ({image})")
        return replace(inst, line=base.line, end_line=base.end_line)

    def parse_reference(self, inst: Instruction, text: str) -> Reference:
        try:
            return Reference.parse(text)
        except InvalidReference as exc:
            raise inst.error(str(exc)) from None

    # -- steps --------------------------------------------------------------------------------------------------

    def step_started(self, stage: Stage, text: str) -> None:
        if not self.planning:
            self.progress.step_started(stage.label, len(self.steps) + 1, self.step_total, text)

    def step_finished(self, stage: Stage, text: str, started: float, layer: LayerRef | None,
                      cached: bool = False) -> None:
        if self.planning:
            return
        result = StepResult(stage.label, len(self.steps) + 1, self.step_total, text, time.monotonic() - started,
                            layer.descriptor.size if layer else None, cached)
        self.steps.append(result)
        self.progress.step_finished(result)

    def run_instruction(self, state: StageState, inst: Instruction) -> None:
        started = time.monotonic()
        self.step_started(state.stage, inst.original)
        layer: LayerRef | None = None
        cached = False
        created: str | None = None
        if isinstance(inst, Run | Copy) or (isinstance(inst, Single) and inst.keyword == "WORKDIR"):
            text, layer, cached, created = self.filesystem_step(state, inst)
            if not self.planning:
                self.note_facts(state, inst, cached)
        else:
            text = self.metadata_step(state, inst)
        if not isinstance(inst, Onbuild):  # BuildKit records ONBUILD in the config only
            state.history.append(self.history_entry(text, layer, created))
        self.step_finished(state.stage, inst.original, started, layer, cached)

    def sboms(self, final: StageState, destinations: list[Reference]) -> list[dict[str, Any]]:
        """The SPDX documents to attach: the image's, then (BuildKit's BUILDKIT_SBOM_SCAN_STAGE) each other stage
        built that asks for one, and (BUILDKIT_SBOM_SCAN_CONTEXT) the build context's."""
        name = destinations[0].name if destinations else "image"
        documents = [self.stage_sbom(final, name)]
        built = [state for state in self.states.values() if state is not final]
        for state in sorted(built, key=lambda s: s.stage.index):
            if scan_enabled(SCAN_STAGE, state.stage.name or "", self.meta, state.args):
                documents.append(self.stage_sbom(state, f"{name} (stage {state.stage.label})"))
        if scan_enabled(SCAN_CONTEXT, final.stage.name or "", self.meta, final.args):
            documents.append(scan_directory(self.options.context, name=f"{name} (build context)",
                                            created=build_time(self.options.source_date_epoch)))
        return documents

    def stage_sbom(self, state: StageState, name: str) -> dict[str, Any]:
        """The SPDX document of a stage's filesystem: from the layer cache when an earlier build described the same
        layers (no layer is fetched), else read from the layer blobs (fetched if cache hits left them remote) and
        kept in the cache for the next builds."""
        started = time.monotonic()
        key = sbom_key([layer.diff_id for layer in state.layers])
        kept = self.cache.sbom(key) if self.cache is not None else None
        if kept is not None:
            try:
                document = cast(dict[str, Any], json.loads(kept))
                self.progress.message(f"sbom of {name}: from the cache ({len(document['packages']) - 1} packages)")
                return document
            except (ValueError, KeyError, TypeError):
                pass  # not an SPDX document after all: scanned again
        fetch_all(self.client, list(state.layers), self.options.cache_dir)
        document = scan_layers([layer.path for layer in state.layers], name=name, key=key, created=build_time(self.options.source_date_epoch))
        if self.cache is not None:
            data = canonical_json(document)
            path = self.workspace.root / f"sbom-{key}.spdx.json"
            path.write_bytes(data)
            self.cache.store_sbom(key, data, path)
        self.progress.message(f"sbom of {name}: {len(document['packages']) - 1} packages in "
                              f"{time.monotonic() - started:.2f}s")
        return document

    def note_facts(self, state: StageState, inst: Instruction, cached: bool) -> None:
        """What provenance records of a step: network access, secret ids, the sources of a cached ADD
        (an ADD that ran records its downloads itself, with their digests)."""
        if isinstance(inst, Run):
            self.facts.network = self.facts.network or inst.network != "none"
            for raw in inst.mounts:
                try:
                    mount = parse_run_mount(state, inst, raw, self.escape)
                except LaminaError:
                    continue  # the step reported it when it ran
                if isinstance(mount, SecretMount):
                    self.facts.secret_ids.append(mount.id)
                elif isinstance(mount, SshMount):
                    self.facts.ssh_ids.append(mount.id)
        elif isinstance(inst, Copy) and inst.keyword == "ADD" and cached and inst.checksum:
            # only an ADD pinned with --checksum is cached when it fetches (see cacheable): a URL's content is that
            for text in inst.sources:
                if is_http_source(text):
                    self.facts.downloads.append((text, inst.checksum))
                elif _is_remote(text):
                    self.facts.cached_downloads.append(text)  # a repository's commit: only its prefix is known

    def history_entry(self, text: str, layer: LayerRef | None, created: str | None = None) -> dict[str, Any]:
        """A history entry; ``created`` is the layer's time (a cached layer keeps the time it was made), and entries
        without a layer get theirs when the image is written (``fill_history_times``), as BuildKit's exporter."""
        entry: dict[str, Any] = {"created_by": text, "comment": HISTORY_COMMENT}
        if layer is None:
            entry["empty_layer"] = True
        elif created is not None:
            entry["created"] = created
        return entry

    def filesystem_step(self, state: StageState, inst: Instruction) -> tuple[str, LayerRef | None, bool, str | None]:
        """RUN, COPY, ADD and WORKDIR: from the cache when an entry matches, else executed on the rootfs. Returns
        the history text, the layer (if any), whether it came from the cache, and the time the layer was made."""
        text = self.filesystem_text(state, inst)
        if self.single_snapshot_stage(state):  # no layer per step, so no cache entry either
            if self.planning:
                self.plan.append(PlannedStep(state.stage.label, inst, None))
                state.key = None
                return text, None, False, None
            self.materialize(state)
            return text, self.execute(state, inst), False, self.created
        if self.cache is None and not self.planning:
            return text, self.run_step(state, inst), False, self.created
        key = self.step_key(state, inst)
        cacheable = key is not None and self.cacheable(inst)
        if self.planning:
            if self.inplace is not None and isinstance(inst, Copy) and inst.keyword == "ADD":
                try:
                    self.clones.extend(git_fetches(state, inst, self.escape))
                except DockerfileError:
                    pass  # the step reports it when it runs
            self.plan.append(PlannedStep(state.stage.label, inst, key if cacheable else None))
            state.key = self.key_after(state, inst, key) if cacheable else None
            return text, None, False, None
        assert self.cache is not None
        entry = self.cache.lookup(key) if cacheable and key is not None else None
        if entry is not None:
            state.key = self.key_after(state, inst, key)
            return text, self.apply_hit(state, entry), True, entry.layer_created or self.created
        layer = self.run_step(state, inst)
        if cacheable and key is not None:
            state.key = self.key_after(state, inst, key)
            self.cache.push(key, layer.descriptor if layer else None, layer.diff_id if layer else None,
                            layer.path if layer else None, self.history_entry(text, layer, self.created),
                            state.platform)
            source = self.cache.layer_source(key) if layer is not None and self.cache.push_enabled else None
            if layer is not None and source is not None:
                # the destination push mounts it from the cache entry instead of uploading the blob a second time
                layer = replace(layer, source=source)
                state.layers[-1] = layer
        elif state.key is not None:
            state.key = compute_executed_key(state.key, inst.original, layer.diff_id if layer else None)
        return text, layer, False, self.created

    @staticmethod
    def key_after(state: StageState, inst: Instruction, key: str | None) -> str | None:
        """The stage's key once this step is done. A step's own key is chained from the stage's, except a --link
        copy's (``independent_of_below``): the stage's key then chains the two, so what comes next still depends
        on every layer below."""
        if key is None or not _independent_of_below(inst):
            return key
        return compute_link_chain(state.key, key) if state.key is not None else None

    def apply_hit(self, state: StageState, entry: CacheEntry) -> LayerRef | None:
        """A cache hit: its layer joins the image; the blob is only fetched if a later step needs the rootfs."""
        if entry.layer is None or entry.diff_id is None:
            return None
        assert self.cache is not None
        kept = self.cache.layer_path(entry.layer)  # an OCI layout cache: its blob is read in place
        layer = LayerRef(entry.layer, entry.diff_id, kept or self.workspace.blob_path(entry.layer.digest),
                         source=self.cache.layer_source(entry.key))
        state.layers.append(layer)
        if state.materialized:  # a step before this one ran: apply the hit on top
            ensure_local(self.client, layer, self.options.cache_dir)
            self.apply_layer(state, layer.path, f"cached layer {entry.layer.digest}")
        return layer

    def cacheable(self, inst: Instruction) -> bool:
        if isinstance(inst, Run):
            return self.options.cache_run_layers
        if isinstance(inst, Copy):
            if inst.keyword == "ADD" and any(_is_remote(s) for s in inst.sources) and not inst.checksum:
                return False  # content unknown until downloaded: keyed by what it produced instead
            return self.options.cache_copy_layers
        return True

    def step_key(self, state: StageState, inst: Instruction) -> str | None:
        """The step's cache key, or None when it cannot be known before running (a step before it was not cacheable
        and has not run, or a stage it copies from has no key). The plan's keys are reused (no second hashing)."""
        if state.key is None and not _independent_of_below(inst):
            return None
        memo = (state.stage.index, inst.line, state.key)
        if memo not in self.keys:
            self.keys[memo] = self.compute_key(state, inst)
        return self.keys[memo]

    def compute_key(self, state: StageState, inst: Instruction) -> str | None:
        inputs: dict[str, str] = {}
        config: Mapping[str, Any] = state.config
        parent = state.key
        if isinstance(inst, Run):
            inputs["heredocs"] = "\n".join(h.content for h in inst.heredocs)
            for raw in inst.mounts:
                source_key = self.mount_source_key(state, inst, raw)
                if source_key is None:
                    return None
                if source_key:
                    inputs[f"mount:{raw}"] = source_key
        elif isinstance(inst, Copy):
            inputs["heredocs"] = "\n".join(f"{h.name}\0{h.content}" for h in inst.heredocs)
            if inst.from_stage:
                name = metadata.expand(inst, inst.from_stage, state.expansion_env(), self.escape)
                source_key = self.source_key(state, inst, name)
                if source_key is None:
                    return None
                inputs["from"] = source_key
            elif not (inst.keyword == "ADD" and any(_is_remote(s) for s in inst.sources)):
                inputs["sources"] = hash_copy_sources(state, inst, ContextSource(self.context), self.escape)
            if inst.checksum:
                inputs["checksum"] = inst.checksum
            if _independent_of_below(inst):
                # a --link layer is made without the layers below: only what expands its arguments counts
                parent = LINK_PARENT
                config = {name: state.config.get(name) for name in ("Env", "WorkingDir")}
        if parent is None:
            return None
        # the same key must always mean the same layer bytes: compression and clamped timestamps shape them
        inputs["compression"] = self.options.compression
        epoch = self.options.source_date_epoch
        inputs["source-date-epoch"] = "" if epoch is None else str(epoch)
        return compute_step_key(parent, instruction=inst.original, config=config, args=state.args,
                                platform=str(state.platform), inputs=inputs)

    def mount_source_key(self, state: StageState, inst: Run, raw: str) -> str | None:
        """What a RUN --mount reads into the step's key: for a bind of the build context, a digest of the bound
        files (as BuildKit keys it on their content); for a bind or cache seeded ``from`` a stage or an image,
        that source's key; "" for mounts whose content never enters a key (cache, tmpfs, secret, ssh). None when
        the source's key is not known yet. A mount that does not parse gives "" here: running the step reports it."""
        try:
            mount = parse_run_mount(state, inst, raw, self.escape)
        except LaminaError:
            return ""
        if isinstance(mount, BindMount) and mount.from_stage is None:
            return hash_source_paths(ContextSource(self.context), [mount.source])
        if isinstance(mount, (BindMount, CacheMount)) and mount.from_stage is not None:
            return self.source_key(state, inst, mount.from_stage)
        return ""

    def source_key(self, state: StageState, inst: Instruction, name: str) -> str | None:
        """What COPY --from / --mount from= reads: a stage's key, or an image's manifest digest."""
        stage = find_stage(self.dockerfile, name)
        if stage is not None:
            source = self.states.get(stage.index)
            return source.key if source is not None else None
        if name.isdigit():
            return None
        ref = self.parse_reference(inst, name)
        with located(inst):
            return self.resolve_image(ref, self.platform).manifest_digest

    def filesystem_text(self, state: StageState, inst: Instruction) -> str:
        """The history text (WORKDIR also sets the config's WorkingDir: it needs no rootfs)."""
        if isinstance(inst, Run):
            return run_created_by(state, inst)
        if isinstance(inst, Copy):
            return f"{inst.original} # buildkit" if inst.keyword == "ADD" else copy_created_by(state, inst, self.escape)
        assert isinstance(inst, Single)
        value = metadata.expand(inst, inst.value, state.expansion_env(), self.escape)
        path = "/" + posixpath.normpath(posixpath.join(state.workdir, value)).lstrip("/")
        state.config["WorkingDir"] = path
        return f"WORKDIR {path}"

    def run_step(self, state: StageState, inst: Instruction) -> LayerRef | None:
        """Run a filesystem step that missed the cache: on the skeleton of the stage's layers when the stage does
        not need unpacking (see build/sparse.py), else on its materialized rootfs. Returns its layer, if any."""
        if (self.options.skeleton_steps and not state.materialized and not self.single_snapshot_stage(state)
                and on_skeleton(state.stage, inst)):
            try:
                return self.execute_on_skeleton(state, inst)
            except SkeletonError as exc:
                self.progress.message(f"{inst.file}:{inst.line}: {inst.keyword} cannot be made on a skeleton ({exc}): "
                                      f"unpacking stage {state.stage.label}")
        self.materialize(state)
        return self.execute(state, inst)

    def execute_on_skeleton(self, state: StageState, inst: Instruction) -> LayerRef | None:
        """A COPY or WORKDIR made on the skeleton of the stage (rootfs/skeleton.py): the entries it can see, made in
        an empty directory (in memory when there is room, else on disk) from the metadata of the stage's layers,
        which are read once and never unpacked. Raises SkeletonError where that cannot be (the caller unpacks)."""
        from lamina.rootfs.image_files import FinalTree  # imported when asked for: lamina's start stays quick

        if isinstance(inst, Copy):
            destination = copy_destination(state, inst, self.escape)
            if destination == "/":
                raise SkeletonError("the destination is the whole filesystem")
            whole, paths = [destination], list(USER_DB)
        else:
            whole, paths = [], [state.workdir, *USER_DB]
        fetch_all(self.client, list(state.layers), self.options.cache_dir)
        final = self.skeleton_trees.get(state.stage.index)  # the stage's tree as its last skeleton step left it
        if final is None or [path for path, _ in final.layers] != [l.path for l in state.layers[:len(final.layers)]]:
            final = self.skeleton_trees[state.stage.index] = FinalTree(lambda path, _mode, _size: path in USER_DB)
        for number, added in enumerate(state.layers[len(final.layers):], len(final.layers) + 1):
            final.apply(added.path, f"layer {number} of stage {state.stage.label} ({added.descriptor.digest})")
        tree, files = final.tree, final.files()
        chosen = select(tree.root, whole=whole, paths=paths)
        for memory in (True, False):
            scratch = self.workspace.scratch("skeleton", memory=memory)
            try:
                made = write_skeleton(scratch, tree.root, chosen, files)
                view = replace(state, rootfs=scratch, overlay=None, materialized=True, scan=scan_tree(scratch))
                layer = self.execute_on(view, inst)
                log.info("%s at %s:%d: made on a skeleton of %d entries of stage %s (not unpacked)", inst.keyword,
                         inst.file, inst.line, made, state.stage.label)
                return layer
            except (LaminaError, OSError):
                if memory and is_full(scratch):
                    self.progress.message(f"{inst.keyword} filled its in-memory skeleton: running it again on disk")
                    continue
                raise
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        raise AssertionError("unreachable")  # pragma: no cover

    def execute(self, state: StageState, inst: Instruction) -> LayerRef | None:
        """Run a filesystem step on the (materialized) rootfs; return the layer it made, if any.

        On an overlay rootfs a step may write into memory (see StageOverlay); one that fills it runs again on disk."""
        overlay = state.overlay
        if overlay is None or not overlay.tmpfs:
            return self.execute_on(state, inst)
        try:
            return self.execute_on(state, inst)
        except (LaminaError, OSError):
            if not overlay.memory_full():
                raise
        self.progress.message(f"{inst.keyword} filled its in-memory upper directory: running it again on disk")
        overlay.retry_on_disk()
        return self.execute_on(state, inst)

    def execute_on(self, state: StageState, inst: Instruction) -> LayerRef | None:
        if isinstance(inst, Run):
            self.run(state, inst)
            return self.snapshot(state)
        if isinstance(inst, Copy) and inst.keyword == "ADD":
            scratch = Path(tempfile.mkdtemp(prefix="add-", dir=self.workspace.root))
            try:
                if inst.linked:
                    linked = Path(tempfile.mkdtemp(prefix="link-", dir=self.workspace.root))
                    linked.chmod(0o755)
                    add_files(state, inst, self.context, self.escape, scratch, into=linked, prefetched=self.cloned,
                              materials=self.facts.downloads)
                    return self.apply_linked(state, inst, linked)
                add_files(state, inst, self.context, self.escape, scratch, prefetched=self.cloned,
                          materials=self.facts.downloads)
                return self.snapshot(state)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        if isinstance(inst, Copy):
            inline = Path(tempfile.mkdtemp(prefix="heredoc-", dir=self.workspace.root)) if inst.heredocs else None
            try:
                copy, with_inline = prepare_copy_heredocs(inst, state.expansion_env(), inline)
                source = with_inline(self.copy_source(state, copy))
                if inst.linked:
                    linked = Path(tempfile.mkdtemp(prefix="link-", dir=self.workspace.root))
                    linked.chmod(0o755)
                    copy_files(state, copy, source, self.escape, into=linked)
                    return self.apply_linked(state, inst, linked)
                copy_files(state, copy, source, self.escape)
                return self.snapshot(state)
            finally:
                if inline is not None:
                    shutil.rmtree(inline, ignore_errors=True)
        assert isinstance(inst, Single)
        self.create_workdir(state)
        return self.snapshot(state)

    def metadata_step(self, state: StageState, inst: Instruction) -> str:
        if isinstance(inst, Single):
            if inst.keyword == "USER":
                return metadata.apply_user(state, inst, self.escape)
            if inst.keyword == "STOPSIGNAL":
                return metadata.apply_stopsignal(state, inst, self.escape)
            return metadata.apply_maintainer(state, inst)
        if isinstance(inst, KeyValues):
            if inst.keyword == "ENV":
                return metadata.apply_env(state, inst, self.escape)
            return metadata.apply_label(state, inst, self.escape)
        if isinstance(inst, Arg):
            return metadata.apply_arg(state, inst, self.escape, self.options.build_arg_map, self.meta, self.used_args)
        if isinstance(inst, Expose):
            return metadata.apply_expose(state, inst, self.escape)
        if isinstance(inst, Volume):
            return metadata.apply_volume(state, inst, self.escape)
        if isinstance(inst, Healthcheck):
            return metadata.apply_healthcheck(state, inst)
        if isinstance(inst, Onbuild):
            return metadata.apply_onbuild(state, inst)
        if isinstance(inst, Command):
            if inst.keyword == "CMD":
                return metadata.apply_cmd(state, inst)
            if inst.keyword == "SHELL":
                return metadata.apply_shell(state, inst)
            return metadata.apply_entrypoint(state, inst)
        raise inst.error("is not supported")  # pragma: no cover - load_dockerfile only makes the types above

    @staticmethod
    def check_supported(inst: Instruction) -> None:
        """Parts of the language that parse but do not execute stop the build here, before any step runs."""
        if isinstance(inst, Copy) and inst.keyword == "ADD" and inst.heredocs:
            raise UnsupportedInstruction("ADD: a heredoc is not supported yet (use COPY <<EOF)", file=inst.file,
                                         line=inst.line, column=1)

    @staticmethod
    def create_workdir(state: StageState) -> None:
        """WORKDIR creates its directory (owned by the USER in force), even if nothing uses it."""
        host = resolve_in_root(state.rootfs, state.workdir)
        if host.exists():
            return
        try:
            user = resolve_user(state.user or "root", read_user_db(state.rootfs))
        except UnknownUser:
            user = None
        created: list[Path] = []
        probe = host
        while not probe.exists():
            created.append(probe)
            probe = probe.parent
        host.mkdir(parents=True, mode=0o755)
        for directory in created:
            directory.chmod(0o755)
            if user is not None:
                os.chown(directory, user.uid, user.gid)

    def copy_source(self, state: StageState, inst: Copy) -> SourceTree:
        if not inst.from_stage:
            return ContextSource(self.context)
        name = metadata.expand(inst, inst.from_stage, state.expansion_env(), self.escape)
        stage = find_stage(self.dockerfile, name)
        if stage is not None:
            if stage.index == state.stage.index:
                raise inst.error(f"--from={name}: a stage cannot copy from itself", column=inst.column_of("--from"))
            if stage.index not in self.states:
                raise inst.error(f"--from={name}: stage {stage.label} has not been built (it depends on this one?)",
                                 column=inst.column_of("--from"))
            source = self.states[stage.index]
            if source is self.in_root and self.inplace is not None:  # still in / (inplace): read there
                return RootfsSource(ROOT, f"stage {stage.label}", ignored=self.inplace.ignored)
            self.materialize(source)
            return RootfsSource(source.rootfs, f"stage {stage.label}")
        if name.isdigit():
            raise inst.error(f"--from={name}: there is no stage {name} (stages are numbered from 0)",
                             column=inst.column_of("--from"))
        rootfs = self.image_rootfs(inst, name)
        return RootfsSource(rootfs, f"image {self.parse_reference(inst, name)}")

    def apply_linked(self, state: StageState, inst: Copy, linked: Path) -> LayerRef | None:
        """COPY/ADD --link: the files were written into the empty directory ``linked``; the layer is made from it
        alone (so it does not depend on the layers below, as BuildKit's), then applied to the rootfs."""
        try:
            changes = diff_scans({}, scan_tree(linked))
            if changes.is_empty:
                return None
            blob = self.write_layer(linked, changes)
        finally:
            shutil.rmtree(linked, ignore_errors=True)
        self.apply_layer(state, blob.path, f"the --link layer of {inst.file}:{inst.line}")
        layer = LayerRef(Descriptor(blob.media_type, blob.digest, blob.size), blob.diff_id, blob.path)
        state.layers.append(layer)
        return layer

    def apply_layer(self, state: StageState, blob: Path, description: str) -> None:
        """A layer made elsewhere joins the materialized rootfs, between steps."""
        if state.overlay is not None:
            state.overlay.add_layer(blob, description)
            return
        unpack_layer(state.rootfs, blob, description=description, keep=self.keep(state.rootfs))
        state.scan = self.scan(state.rootfs)

    def run(self, state: StageState, inst: Run) -> None:
        """RUN with its --mount and --network options, through the sandbox."""
        mounts = parse_run_mounts(state, inst, self.escape)
        environ = self.options.secret_environ if self.options.secret_environ is not None else os.environ
        proxies = proxy_environment(self.options.build_arg_map)
        with prepare_mounts(inst, mounts, context=self.context,
                            stage_rootfs=lambda name: self.mount_source(state, inst, name),
                            secrets=self.options.secrets, environ=environ,
                            cache_dir=mount_cache_location(
                                self.options.mount_cache_dir or default_mount_cache_dir(os.environ),
                                is_default=self.options.mount_cache_default or self.options.mount_cache_dir is None,
                                places_mounts=self.runner.places_mounts, workspace=self.workspace.root,
                                builds_in_root=self.inplace is not None),
                            scratch=self.workspace.root / "scratch",
                            exclusive_caches=self.runner.places_mounts, agents=self.ssh_agents) as prepared:
            if prepared.ssh_auth_sock is not None:  # as BuildKit: unless the image's environment sets it
                proxies = {**proxies, "SSH_AUTH_SOCK": prepared.ssh_auth_sock}
            execute_run(state, inst, self.runner, on_output=self.progress.step_output,
                        resolv_conf=HOST_RESOLV_CONF if HOST_RESOLV_CONF.exists() else None,
                        hosts=self.hosts_file(), mounts=prepared.mounts,
                        secret_env=prepared.secret_env, network=run_network(inst), extra_env=proxies,
                        scratch=prepared.scratch, hostname=self.run_hostname())

    def run_hostname(self) -> str:
        """RUN's hostname: ``lamina``, or the build argument BUILDKIT_SANDBOX_HOSTNAME, as BuildKit takes it. Only a
        sandbox with its own UTS namespace can set it: elsewhere RUN has the container's, which is said once."""
        hostname = self.options.build_arg_map.get(HOSTNAME_ARG) or DEFAULT_HOSTNAME
        if hostname != DEFAULT_HOSTNAME and self.runner.name in ("chroot", "inplace") and not self.hostname_warned:
            self.hostname_warned = True
            self.progress.message(f"warning: {HOSTNAME_ARG}={hostname}: the {self.runner.name} sandbox cannot set "
                                  "RUN's hostname (no UTS namespace here); RUN has the container's")
        return hostname

    def hosts_file(self) -> Path | None:
        """RUN's /etc/hosts (bound, or copied where the image has none): the host's, plus a line for RUN's hostname
        as BuildKit's hosts file has (``127.0.0.1 localhost <hostname>``), so the command can resolve its own name
        (Java's InetAddress.getLocalHost, hostname -f). Written once per build."""
        path = self.workspace.root / "hosts"
        if not path.exists():
            hostname = self.run_hostname()
            text = HOST_HOSTS.read_text(errors="replace") if HOST_HOSTS.exists() else ""
            if not any(hostname in line.split("#")[0].split()[1:] for line in text.splitlines()):
                text += ("" if not text or text.endswith("\n") else "\n") + f"127.0.0.1\tlocalhost {hostname}\n"
            path.write_text(text)
        return path

    def mount_source(self, state: StageState, inst: Run, name: str) -> Path | None:
        """The root of ``RUN --mount from=NAME``: another stage's rootfs, or an image's (pulled once)."""
        stage = find_stage(self.dockerfile, name)
        if stage is not None:
            if stage.index not in self.states:
                raise inst.error(f"--mount from={name}: stage {stage.label} is not built before this one")
            self.materialize(self.states[stage.index])
            return self.states[stage.index].rootfs
        if name.isdigit():
            raise inst.error(f"--mount from={name}: there is no stage {name}")
        return self.image_rootfs(inst, name)

    def image_rootfs(self, inst: Instruction, name: str) -> Path:
        ref = self.parse_reference(inst, name)
        key = str(ref)
        if key not in self.images:
            rootfs = self.workspace.rootfs("sources", len(self.images))
            with located(inst):
                pulled = self.resolve_image(ref, self.platform)
                fetch_all(self.client, list(pulled.layers), self.options.cache_dir)
                described = [(layer.path, f"layer {number} of {ref}") for number, layer in enumerate(pulled.layers, 1)]
                if StageOverlay.create(self.workspace.mounts, rootfs, described, f"image {ref}") is None:
                    for number, layer in enumerate(pulled.layers, 1):
                        unpack_layer(rootfs, layer.path, description=f"layer {number} of {ref}")
            self.images[key] = rootfs
        return self.images[key]

    def write_layer(self, root: Path, changes: Changes) -> LayerBlob:
        return write_layer(root, changes, self.workspace.blobs, compression=self.options.compression,
                           level=self.options.compression_level, source_date_epoch=self.options.source_date_epoch)

    def keep(self, rootfs: Path) -> tuple[str, ...] | None:
        """What unpacking into ``rootfs`` leaves alone: the inplace sandbox's ignored paths when it is ``/``."""
        return self.inplace.ignored if self.inplace is not None and rootfs == ROOT else None

    def scan(self, rootfs: Path) -> dict[str, FileState]:
        return scan_tree(rootfs, exclude=self.inplace.exclude if self.inplace is not None and rootfs == ROOT
                         else frozenset())

    def single_snapshot_stage(self, state: StageState) -> bool:
        """--single-snapshot: the target stage's changes become one layer, taken when the stage ends."""
        return self.options.single_snapshot and state.stage.index == self.last_stage

    def snapshot(self, state: StageState, *, final: bool = False) -> LayerRef | None:
        if self.single_snapshot_stage(state) and not final:
            return None  # the changes stay in the upper directory (or out of the scan) until the stage ends
        if state.overlay is not None:
            changes = without_paths(state.overlay.changes(), self.options.ignore_paths)
            blob = None if changes.is_empty else self.write_layer(state.rootfs, changes)
            state.overlay.commit(blob is not None, f"stage {state.stage.label}, layer {len(state.layers) + 1}")
            if blob is None:
                return None
        else:
            after = self.scan(state.rootfs)
            changes = without_paths(diff_scans(state.scan or {}, after, lambda key: has_capability(state.rootfs / key)),
                                    self.options.ignore_paths)
            state.scan = after
            if changes.is_empty:
                return None
            blob = self.write_layer(state.rootfs, changes)
        layer = LayerRef(Descriptor(blob.media_type, blob.digest, blob.size), blob.diff_id, blob.path)
        state.layers.append(layer)
        return layer

    # -- the image ----------------------------------------------------------------------------------------------

    def image(self, state: StageState) -> ImageBlobs:
        platform = state.platform
        config: dict[str, Any] = {"architecture": platform.architecture}
        if state.author:
            config["author"] = state.author
        image_config = dict(state.config)
        if self.options.labels:  # --label: on the image only, after the Dockerfile's own (as BuildKit's --label)
            image_config["Labels"] = {**(image_config.get("Labels") or {}), **dict(self.options.labels)}
        if image_config:
            config["config"] = image_config
        history = fill_history_times(state.history)
        config["created"] = self.created if self.options.source_date_epoch is not None else \
            next((h["created"] for h in reversed(history) if h.get("created")), self.created)
        config["history"] = history
        config["os"] = platform.os
        config["rootfs"] = {"type": "layers", "diff_ids": [layer.diff_id for layer in state.layers]}
        if platform.variant:
            config["variant"] = platform.variant
        config_bytes = canonical_json(config)
        config_digest = compute_digest(config_bytes)
        self.workspace.blob_path(config_digest).write_bytes(config_bytes)
        layers = [(Descriptor(layer_media_type_for_oci(layer.descriptor.media_type), layer.descriptor.digest,
                              layer.descriptor.size), layer.path) for layer in state.layers]
        manifest = Manifest(Descriptor(OCI_CONFIG, config_digest, len(config_bytes)), tuple(d for d, _ in layers))
        manifest_bytes = manifest.to_bytes()
        return ImageBlobs(manifest_bytes, compute_digest(manifest_bytes), config_bytes, config_digest, layers,
                          [layer.diff_id for layer in state.layers])


def with_dockerfile_epoch(options: BuildOptions, dockerfile: Dockerfile) -> BuildOptions:
    """A global ``ARG SOURCE_DATE_EPOCH=N`` sets the build's epoch when neither a build argument nor the environment
    gives one, as BuildKit reads it (dockerfile2llb/convert.go: ``getBuildArgValue`` over the build args and the
    global ARGs); anything but a number of seconds is an error there too."""
    if options.source_date_epoch is not None or "SOURCE_DATE_EPOCH" in options.build_arg_map:
        return options
    meta: dict[str, str] = {}
    evaluate_meta_args(dockerfile.meta_args, options.build_arg_map, meta)
    value = meta.get("SOURCE_DATE_EPOCH", "")
    if not value:
        return options
    if not value.isdigit():
        raise OptionsError(f"invalid SOURCE_DATE_EPOCH: {value} (the default of the Dockerfile's ARG "
                           "SOURCE_DATE_EPOCH: expected a number of seconds since 1970)")
    return replace(options, source_date_epoch=int(value))


def build(options: BuildOptions, *, client: RegistryClient, runner: Runner, progress: Progress) -> BuildResult:
    """Build the image ``options`` describe, push it and write the requested outputs.

    With the cache on, the build is planned first: every step's key is computed without touching a rootfs and all
    entries are looked up at once; then stages run, and a rootfs is only downloaded and unpacked when a step after
    the hits has to execute."""
    dockerfile, context = read_dockerfile(options)
    options = with_dockerfile_epoch(options, dockerfile)
    try:
        platform = Platform.parse(options.platform) if options.platform else Platform.host()
    except ValueError as exc:
        raise OptionsError(f"--platform: {exc}") from None
    destinations = [parse_destination(d) for d in options.destinations]
    target = select_target(dockerfile, options.target)
    cache = None
    if options.cache or options.dry_run:
        cache = LayerCache(cache_store(options, destinations, client),
                              ttl=timedelta(seconds=options.cache_ttl_seconds),
                              push=options.push_cache and not options.dry_run)
    if options.push_permission_check:  # before a long build, as Kaniko (not with --skip-push-permission-check);
        # not the cache repository: a cache that cannot be written only warns, and a fully cached build writes nothing
        for repository in {(ref.registry, ref.repository): ref for ref in destinations}.values():
            client.check_push(repository)
    overlay_off: str | None = None
    if options.rootfs_mode != "unpack":
        overlay_off = (f"the {runner.name} sandbox runs RUN" if runner.name != "namespace"
                       else overlay_unavailable(options.work_dir or Path(tempfile.gettempdir())))
        if overlay_off is not None and options.rootfs_mode == "overlay":
            raise OptionsError(f"--rootfs-mode overlay: not possible here: {overlay_off}")
    workspace = Workspace.create(options.work_dir)
    workspace.mounts.mode = options.rootfs_mode
    workspace.mounts.reason = overlay_off
    workspace.mounts.memory_left = (memory_budget(available_memory()) if options.rootfs_memory is None
                                    else options.rootfs_memory)
    ssh_agents = None
    if options.ssh:
        environ = options.secret_environ if options.secret_environ is not None else os.environ
        ssh_agents = SshAgents(options.ssh, environ, workspace.root / "ssh")
    inplace = None
    if runner.name == "inplace":  # / is the rootfs: leave the build's own files (and /lamina, mounts...) alone
        explicit_mount_cache = None if options.mount_cache_default else options.mount_cache_dir
        docker_config = Path(options.docker_config_dir) if options.docker_config_dir else None  # read on demand
        layout_cache = cache.store.path if cache is not None and isinstance(cache.store, LayoutStore) else None
        agent_sockets = ssh_agents.sockets() if ssh_agents is not None else []  # a job's ssh-agent, in /tmp
        inplace = InplaceRoot.create([workspace.root, options.context, options.dockerfile, docker_config,
                                      *agent_sockets],
                                     force=options.force, made=[options.cache_dir, explicit_mount_cache, layout_cache])
    warnings = list(dockerfile.warnings)
    facts = BuildFacts()
    cleaner: threading.Thread | None = None
    try:
        if ssh_agents is not None:
            ssh_agents.start()  # before anything clears / (the inplace sandbox), which takes ssh-agent with it

        def new_run(planning: bool) -> tuple[_Build, list[Stage]]:
            run = _Build(options, client, runner, progress, workspace, dockerfile, context, platform, cache=cache,
                         planning=planning, inplace=inplace, facts=facts, ssh_agents=ssh_agents)
            run.created = run.timestamp()
            run.evaluate_meta_args(target)
            stages = needed_stages(dockerfile, target, run.meta)
            run.last_stage = stages[-1].index
            parents = {}
            for stage in stages:
                parent = find_stage(dockerfile, expand_meta(stage.base, stage.base.image, run.meta), before=stage.index)
                parents[stage.index] = parent.index if parent is not None else None
            run.rootfs_after = rootfs_needed_after(stages, parents)
            run.step_total = sum(1 + len(s.instructions) for s in stages)
            return run, stages

        # the inplace sandbox clears / (and the git program with it): a plan first finds the clones ADD makes
        clones_first = inplace is not None and _may_add_from_git(dockerfile)
        run, stages = new_run(planning=cache is not None or clones_first)
        for stage in stages:  # refuse what cannot run before anything runs
            for inst in stage.instructions:
                run.check_supported(inst)
        if run.planning:
            for stage in stages:
                run.states[stage.index] = run.run_stage(stage)
            if cache is not None:
                cache.prefetch(step.key for step in run.plan if step.key)
                plan = tuple((step.stage, step.instruction.original, _verdict(cache, step)) for step in run.plan)
                if options.dry_run:
                    return BuildResult("", "", b"", b"", 0, (), (), tuple(warnings), plan)
            resolved, keys, clones = run.resolved, run.keys, run.clones
            run, stages = new_run(planning=False)
            run.resolved, run.keys = resolved, keys
            run.cloned = prefetch_clones(clones, workspace.root / "git")
        for stage in stages:
            run.states[stage.index] = run.run_stage(stage)
        unused = sorted(set(options.build_arg_map) - run.used_args)
        if unused:
            warnings.append("one or more build args were not consumed: " + ", ".join(unused))
        final = run.states[target.index]
        image = run.image(final)
        # attestations only where something carries them: a push, an OCI layout or archive (not a docker archive)
        carried = (destinations and not options.no_push) or options.oci_layout_path or options.oci_tar_path
        sboms = run.sboms(final, destinations) if options.sbom and carried else []
        attestations = (make_attestations(options, facts, image, [str(d) for d in destinations], run.steps, sboms)
                        if carried else None)
        attached = Attached.of(image, attestations) if attestations is not None else None
        cleaner = threading.Thread(target=_clean_up, args=(workspace, inplace), name="cleanup", daemon=True)
        cleaner.start()  # deleting thousands of files overlaps with the push
        sources = {layer.descriptor.digest: layer for layer in final.layers}
        if cache is not None and not options.no_push:
            warnings += cache.finish()  # entries stored first: the destination then mounts their blobs
            cache = None
        pushed = []
        if not options.no_push:
            for dest in destinations:
                try:
                    if attached is not None:
                        pushed.append(push_attested(client, dest, image, attached, sources, options.cache_dir,
                                                    by_digest=options.push_by_digest))
                    else:
                        pushed.append(push_image(client, dest, image, sources, options.cache_dir,
                                                 by_digest=options.push_by_digest))
                except RegistryError as exc:
                    if not (options.push_ignore_immutable_tag_errors and isinstance(exc, ImmutableTag)):
                        raise
                    warnings.append(f"{dest} is an immutable tag that already exists; not moved "
                                    f"(--push-ignore-immutable-tag-errors): {exc}")
        if options.tar_path is not None or options.oci_layout_path is not None:
            for layer in final.layers:
                ensure_local(client, layer, options.cache_dir)
        write_outputs(options, image, destinations, attached)
        if cache is not None:
            warnings += cache.finish()
            cache = None
        for warning in warnings:
            progress.message(f"warning: {warning}")
        size = sum(d.size for d, _ in image.layers) + len(image.config) + len(image.manifest)
        statements = tuple((b.descriptor.annotations.get(PREDICATE_TYPE, ""), b.descriptor.digest)
                           for b in attached.attestations.statements) if attached is not None else ()
        return BuildResult(attached.digest if attached is not None else image.manifest_digest, image.config_digest,
                           image.manifest, image.config, size, tuple(run.steps), tuple(pushed), tuple(warnings),
                           manifest_digest=image.manifest_digest, attestations=statements,
                           attestation_manifest=attached.attestations.digest if attached is not None else "")
    finally:
        if cache is not None:
            for warning in cache.finish():
                progress.message(f"warning: {warning}")
        if cleaner is not None:
            cleaner.join()
        if ssh_agents is not None:
            ssh_agents.close()
        if inplace is not None:
            inplace.restore()  # after a failure too: the job can run lamina again
        workspace.remove()


def _clean_up(workspace: Workspace, inplace: InplaceRoot | None) -> None:
    """Once the image is assembled: the stages' trees go, and (inplace) ``/`` is cleared and lamina's interpreter
    written back. The built files in ``/`` are moved next to the work directory, not deleted (deleting thousands of
    files is most of what clearing costs): the container ends with the job, and a next inplace build in it removes
    them with the rest of ``/`` when it first clears it."""
    workspace.remove_trees()
    if inplace is not None and inplace.interpreter is not None:  # (None: nothing to restore)
        aside = workspace.root / "cleared"
        inplace.restore(aside)
        try:
            os.rename(aside, workspace.root.parent / f".{workspace.root.name}-cleared")
        except OSError:
            pass  # removed with the work directory


def _may_add_from_git(dockerfile: Dockerfile) -> bool:
    """Could an ADD of this Dockerfile clone a repository (a git-like source, or one with a variable in it)?"""
    for stage in dockerfile.stages:
        for inst in stage.instructions:
            if isinstance(inst, Copy) and inst.keyword == "ADD" and any(
                    "$" in text or "://" in text or "@" in text for text in inst.sources):
                return True
    return False


def prefetch_clones(clones: list[GitFetch], into: Path) -> dict[GitFetch, Clone | GitError]:
    """Make each clone now; a failure is kept and reported by the ADD that wanted it."""
    done: dict[GitFetch, Clone | GitError] = {}
    for number, fetch in enumerate(clones):
        if fetch in done:
            continue
        work = into / str(number)
        work.mkdir(parents=True)
        try:
            done[fetch] = fetch_git(fetch, work)
        except GitError as exc:
            done[fetch] = exc
    return done


def _verdict(cache: LayerCache, step: PlannedStep) -> str:
    if step.key is None:
        return "not cached"
    return "hit" if cache.found.get(step.key) is not None else "miss"


# what registries answer when a tag may not move (Kaniko's list, plus Harbor's and Docker Hub's wording)
def cache_store(options: BuildOptions, destinations: list[Reference], client: RegistryClient) -> CacheStore:
    """--cache-repo (a repository, or ``oci:/path``), else ``<first destination's repository>/cache``."""
    if options.cache_repo:
        return open_store(options.cache_repo, client)
    if not destinations:
        raise OptionsError("--cache needs somewhere to keep the cache: pass --cache-repo REPOSITORY or "
                           "oci:/path (or a --destination, whose repository gets a /cache sibling)")
    first = destinations[0]
    return RegistryStore(client, Reference(first.registry, first.repository + "/cache", None, None))


