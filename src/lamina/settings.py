"""The build settings: every ``lamina build`` flag, defined once, and how flag values become ``BuildOptions``.

Each entry point only finds the flag values its environment gives and hands them to ``flag_values``: the CLI its
command line, the GitHub Action its inputs, the GitLab job what its CI variables imply. Every flag can also come
from the environment as ``LAMINA_<FLAG>`` (``--build-arg`` → ``LAMINA_BUILD_ARG``; repeatable flags take
comma-separated values there; a blank variable counts as unset). The order, for every entry point: a value the
entry point was given explicitly (a command-line flag, an Action input) wins over ``LAMINA_<FLAG>``, which wins
over what the entry point derives from its environment (GitLab's ``$CI_REGISTRY_IMAGE:$CI_COMMIT_REF_SLUG``), which
wins over lamina's default. ``options_from`` then turns the values into one complete ``BuildOptions`` (the
``SOURCE_DATE_EPOCH``, the sandbox and everything else included), which ``lamina.launch.launch_build`` runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lamina.attest.ci_run import ci_run
from lamina.attest.provenance import parse_mode
from lamina.build.context_source import parse_context, parse_git_options
from lamina.cache.prune import parse_duration_text
from lamina.console import LEVELS
from lamina.errors import InvalidReference, OptionsError
from lamina.oci.reference import Reference
from lamina.options import (
    ROOTFS_MODES,
    BuildOptions,
    default_mount_cache_dir,
    parse_secrets,
    parse_size,
    parse_ssh,
)
from lamina.sandbox.detect import SANDBOXES

LOG_FORMATS = ("text", "color", "json")
TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off", ""})


@dataclass(frozen=True)
class Flag:
    name: str  # "--build-arg"
    help: str
    kind: str = "value"  # "value", "list" (repeatable), "bool" (default false), "switch" (default true) or
    # "optional" (a value that may be left out: the bare flag means "true")
    short: str | None = None
    metavar: str | None = None
    aliases: tuple[str, ...] = ()  # other spellings on the command line (Kaniko's older names)
    kaniko_env: str | None = None  # the KANIKO_* variable Kaniko reads for it (after LAMINA_<FLAG>)

    @property
    def dest(self) -> str:
        return self.name[2:].replace("-", "_")

    @property
    def env(self) -> str:
        return "LAMINA_" + self.dest.upper()


BUILD_FLAGS = (
    Flag("--context", "the build context directory (default: .; dir:// prefix accepted)", short="-c", metavar="DIR"),
    Flag("--dockerfile", "the Dockerfile (default: <context>/Dockerfile)", short="-f", metavar="PATH"),
    Flag("--destination", "push the image here (repeatable)", "list", short="-d", metavar="IMAGE"),
    Flag("--build-arg", "set a build argument: KEY=VALUE, or KEY to take it from the environment (repeatable)",
         "list", metavar="KEY=VALUE"),
    Flag("--target", "build this stage (default: the last one)", metavar="STAGE"),
    Flag("--no-push", "build without pushing", "bool", kaniko_env="KANIKO_NO_PUSH"),
    Flag("--push-by-digest", "push the image to each destination's repository by its digest only, with no tag "
         "(for joining platforms with lamina manifest create)", "bool"),
    Flag("--tar-path", "also write the image as a docker-archive tarball (docker load, skopeo docker-archive:)",
         metavar="PATH", aliases=("--tarPath",)),
    Flag("--oci-layout-path", "also write the image into an OCI image layout directory", metavar="DIR"),
    Flag("--oci-tar-path", "also write the image as an OCI image layout in a tar archive (BuildKit's type=oci, skopeo's "
         "oci-archive:), attestations included", metavar="PATH"),
    Flag("--digest-file", "write the image digest (sha256:...) to this file", metavar="PATH"),
    Flag("--registry-mirror", "pull docker.io images through this mirror first (repeatable)", "list",
         metavar="HOST", kaniko_env="KANIKO_REGISTRY_MIRROR"),
    Flag("--insecure-registry", "talk plain HTTP to this registry (repeatable)", "list", metavar="HOST"),
    Flag("--skip-tls-verify", "do not verify registry TLS certificates", "bool"),
    Flag("--skip-tls-verify-registry", "do not verify the TLS certificate of this registry (repeatable)", "list",
         metavar="HOST"),
    Flag("--registry-certificate", "trust this CA bundle for a registry: HOST=PATH (repeatable)", "list",
         metavar="HOST=PATH"),
    Flag("--registry-client-cert", "a client certificate for mutual TLS: HOST=CERT,KEY (repeatable)", "list",
         metavar="HOST=CERT,KEY"),
    Flag("--registry-map", "pull images of a registry from mirrors first: ORIGINAL=MIRROR[;MIRROR2] (repeatable)",
         "list", metavar="ORIG=NEW", kaniko_env="KANIKO_REGISTRY_MAP"),
    Flag("--skip-default-registry-fallback", "with mirrors or maps, never fall back to the original registry",
         "bool"),
    Flag("--push-retry", "retries of each push request on connection errors, 429 and 5xx (default: 3)",
         metavar="N"),
    Flag("--image-download-retry", "retries of each pull request on connection errors, 429 and 5xx (default: 3)",
         metavar="N"),
    Flag("--platform", "build for os/arch[/variant] (default: the host's); selects base images from indexes",
         metavar="PLATFORM", aliases=("--custom-platform", "--customPlatform")),
    Flag("--work-dir", "where root filesystems and blobs live during the build (default: the temp dir)",
         metavar="DIR"),
    Flag("--secret", "expose a secret to RUN --mount=type=secret: id=ID,src=PATH or id=ID,env=VARIABLE (repeatable)",
         "list", metavar="id=ID,src=PATH"),
    Flag("--ssh", "expose an SSH agent to RUN --mount=type=ssh: default (the agent of $SSH_AUTH_SOCK), "
         "ID=SOCKET or ID=KEY[,KEY...] (repeatable)", "list", metavar="ID[=SOCKET|KEY]"),
    Flag("--mount-cache-dir", "where RUN --mount=type=cache directories persist between builds "
         "(default: $XDG_CACHE_HOME/lamina/mounts or ~/.cache/lamina/mounts)", metavar="DIR"),
    Flag("--cache", "use the registry layer cache: reuse layers of earlier builds, store new ones", "bool"),
    Flag("--cache-repo", "the repository holding the cache (default: <first destination>/cache)", metavar="REPO"),
    Flag("--cache-ttl", "cache entries older than this are misses and get rewritten (default: 336h = 2 weeks; "
         "units s, m, h, d, w)", metavar="DURATION"),
    Flag("--cache-copy-layers", "cache COPY and local ADD steps too (default: true)", "switch"),
    Flag("--cache-run-layers", "cache RUN steps (default: true)", "switch"),
    Flag("--no-push-cache", "use cache hits but store nothing new", "bool"),
    Flag("--cache-dir", "a local store of pulled layer blobs, reused across builds", metavar="DIR"),
    Flag("--reproducible", "all timestamps from SOURCE_DATE_EPOCH, or 0 when it is not set", "bool"),
    Flag("--dry-run", "plan only: print each step with cache hit or miss; run and push nothing", "bool"),
    Flag("--compression", "layer compression: gzip (default) or zstd", metavar="ALGORITHM"),
    Flag("--compression-level", "compression level (gzip 1-9, zstd 1-22)", metavar="N"),
    Flag("--image-name-with-digest-file", "write NAME@DIGEST of each destination to this file", metavar="PATH"),
    Flag("--image-name-tag-with-digest-file", "write NAME:TAG@DIGEST of each destination to this file",
         metavar="PATH"),
    Flag("--metadata-file", "write build metadata as JSON (the keys docker buildx writes)", metavar="PATH"),
    Flag("--verbosity", "log level: " + ", ".join(LEVELS) + " (default: info)", short="-v", metavar="LEVEL"),
    Flag("--sandbox", "where RUN steps run: " + ", ".join(SANDBOXES) + " (default: auto, the best one available; "
         "see README, Sandboxes)", metavar="NAME"),
    Flag("--rootfs-mode", "how a stage's layers become its root filesystem: overlay (an EROFS image of the layers "
         "under an overlay: no file is created per entry; root with loop devices), unpack (extracted into a "
         "directory) or auto (default: overlay where possible)", metavar="MODE"),
    Flag("--rootfs-memory", "on an overlay rootfs, how much of what steps write may be kept in memory (tmpfs), e.g. "
         "512M; beyond it, on disk (default: a quarter of the available memory, at most 1G; 0: always on disk)",
         metavar="SIZE"),
    Flag("--skeleton-steps", "make a COPY or WORKDIR that no RUN or ADD follows in its stage on a skeleton of the "
         "stage's layers, without unpacking them (default: true; false unpacks the stage as for any step)", "switch"),
    Flag("--force", "run the inplace sandbox (which builds in /) outside lamina's runtime image", "bool"),
    Flag("--cleanup", "also remove the directories the build created outside its work directory (--work-dir, "
         "mount cache, --cache-dir) when it ends", "bool"),
    # Kaniko's executor flags, with Kaniko's meaning (see the README's Kaniko table)
    Flag("--label", "add a label to the image config: KEY=VALUE (repeatable)", "list", metavar="KEY=VALUE"),
    Flag("--context-sub-path", "build from this directory inside the context", metavar="PATH"),
    Flag("--insecure", "push to the destinations' registries (and the cache's) over plain HTTP", "bool"),
    Flag("--insecure-pull", "pull over plain HTTP from a registry whose HTTPS fails", "bool"),
    Flag("--skip-tls-verify-pull", "do not verify TLS certificates of the registries pulled from", "bool"),
    Flag("--push-ignore-immutable-tag-errors", "a push refused because the tag is immutable counts as done "
         "(with a warning)", "bool"),
    Flag("--skip-push-permission-check", "do not check before the build that every destination accepts a push",
         "bool"),
    Flag("--ignore-path", "leave whatever changes under this path out of every layer (repeatable)", "list",
         metavar="PATH"),
    Flag("--ignore-var-run", "leave changes under /var/run out of every layer (Kaniko's default is true; "
         "lamina's, as BuildKit's, false)", "bool", aliases=("--whitelist-var-run",)),
    Flag("--image-fs-extract-retry", "retries of downloading and unpacking a layer that fails to unpack "
         "(default: 0)", metavar="N"),
    Flag("--single-snapshot", "one layer for everything the target stage's steps change, taken at its end",
         "bool"),
    Flag("--git", "for a git context: branch=NAME,single-branch=true|false,recurse-submodules=true|false",
         metavar="OPTIONS"),
    Flag("--log-format", "text, color (default) or json (one JSON object a line: level, msg, time)",
         metavar="FORMAT"),
    Flag("--log-timestamp", "begin each line of text and color logs with the time", "bool"),
    Flag("--provenance", "attach SLSA provenance: false, true or mode=min (the default, as build-push-action), "
         "mode=max; version=v0.2 for SLSA v0.2 (v1 by default)", "optional", metavar="MODE"),
    Flag("--sbom", "attach an SPDX SBOM of the packages in the image (Debian, Alpine, Python, npm, Go)", "bool"),
)


@dataclass(frozen=True)
class NoEffect:
    """A Kaniko executor flag that lamina accepts and says why it has no effect here."""

    names: tuple[str, ...]
    takes_value: bool
    reason: str


KANIKO_NO_EFFECT = (
    NoEffect(("--snapshot-mode", "--snapshotMode"), True,
             "lamina compares a file's type, mode, owner, size, mtime and inode (as BuildKit) on every snapshot; "
             "there is no mode to choose"),
    NoEffect(("--use-new-run",), False, "lamina's RUN never needs a full-filesystem snapshot (it reads the overlay's "
             "upper directory, or scans an unpacked root once per step)"),
    NoEffect(("--compressed-caching",), False, "lamina streams layers compressed as it writes them; there is no "
             "uncompressed copy to choose"),
    NoEffect(("--skip-unused-stages",), False, "lamina always builds only the stages the target needs, as "
             "BuildKit (Kaniko builds every stage up to the target without it)"),
    NoEffect(("--kaniko-dir",), True, "lamina keeps its state in --work-dir (a new temporary directory by default), "
             "never in /kaniko"),
    NoEffect(("--force-build-metadata",), False, "lamina records metadata instructions in the config and history, "
             "as BuildKit, and makes no empty layers for them"),
)



def truthy(flag: Flag, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in TRUE:
        return True
    if lowered in FALSE:
        return False
    raise OptionsError(f"{flag.env}={text!r}: expected true or false")


def env_value(flag: Flag, environ: Mapping[str, str]) -> object | None:
    """``LAMINA_<FLAG>``, else Kaniko's ``KANIKO_*`` variable for it, as a flag value (None when unset or blank):
    lists split at commas (Kaniko's registry map at semicolons too), booleans parsed."""
    raw = environ.get(flag.env, "")
    if not raw.strip() and flag.kaniko_env:
        raw = environ.get(flag.kaniko_env, "")
    if not raw.strip():
        return None
    if flag.kind in ("bool", "switch"):
        return truthy(flag, raw)
    if flag.kind == "list":
        return [item.strip() for item in raw.split(",") if item.strip()]
    return raw


def flag_values(explicit: Mapping[str, object | None], environ: Mapping[str, str],
                derived: Mapping[str, object] | None = None) -> dict[str, object]:
    """Every build flag's value (keyed by ``Flag.dest``): ``explicit`` (None: not given), else ``LAMINA_<FLAG>``,
    else ``derived`` (what an entry point's environment implies), else the default (False, True for switches, [],
    None). Unknown keys in ``explicit`` or ``derived`` are an error: a flag is named the same everywhere."""
    unknown = (set(explicit) | set(derived or {})) - {flag.dest for flag in BUILD_FLAGS}
    if unknown:
        raise ValueError(f"not build flags: {', '.join(sorted(unknown))}")
    values: dict[str, object] = {}
    for flag in BUILD_FLAGS:
        given = explicit.get(flag.dest)
        if given is None:
            given = env_value(flag, environ)
        if given is None and derived is not None:
            given = derived.get(flag.dest)
        if flag.kind in ("bool", "switch") and isinstance(given, str):
            given = truthy(flag, given)
        if given is None:
            given = {"bool": False, "switch": True, "list": []}.get(flag.kind)
        values[flag.dest] = given
    return values


def parse_build_args(items: Sequence[str], environ: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    out: dict[str, str] = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not name:
            raise OptionsError(f"--build-arg {item!r}: expected KEY=VALUE")
        if not eq:
            if name not in environ:
                continue  # Docker: KEY alone takes the value from the environment, if set
            value = environ[name]
        out[name] = value
    return tuple(out.items())


def source_date_epoch(environ: Mapping[str, str], build_args: Mapping[str, str] | None = None) -> int | None:
    """The build's epoch: ``--build-arg SOURCE_DATE_EPOCH=N`` (BuildKit reads the build arg: dockerui's config;
    its other values, ``context`` and stage names, are not supported and leave it unset), else the
    ``SOURCE_DATE_EPOCH`` variable."""
    arg = (build_args or {}).get("SOURCE_DATE_EPOCH", "").strip()
    raw = arg if arg.isdigit() else environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise OptionsError(f"SOURCE_DATE_EPOCH={raw!r}: expected a number of seconds since 1970")
    return int(raw)


def options_from(values: Mapping[str, object], environ: Mapping[str, str]) -> BuildOptions:
    """The complete options of a build from ``flag_values`` and the environment it runs in (SOURCE_DATE_EPOCH,
    DOCKER_CONFIG, HOME or XDG_CACHE_HOME, the variables ``--secret env=`` and ``--build-arg KEY`` read)."""
    def text(name: str) -> str | None:
        value = values[name]
        return value if isinstance(value, str) and value else None

    def items(name: str) -> list[str]:
        value = values[name]
        assert isinstance(value, list)
        return [str(v) for v in value]

    context_text = text("context") or "."
    context_source: str | None = None
    if context_text.startswith("dir://"):
        context_text = context_text[len("dir://"):]
    elif "://" in context_text:
        parse_context(context_text)  # an unknown scheme is refused now, not after the flags are all read
        parse_git_options(text("git"))
        context_source, context_text = context_text, "."
    context = Path(context_text)
    sub_path = text("context_sub_path")
    if sub_path and (Path(sub_path).is_absolute() or ".." in Path(sub_path).parts):
        raise OptionsError(f"--context-sub-path {sub_path}: expected a relative path inside the context")
    if sub_path and context_source is None:  # the context is this directory inside the given one
        context = context / sub_path
    dockerfile_text = text("dockerfile")
    dockerfile_url = dockerfile_text if dockerfile_text and dockerfile_text.startswith(("http://", "https://")) \
        else None
    if dockerfile_url or context_source:  # resolved once the context is fetched (lamina.build.context_source)
        dockerfile = Path("Dockerfile" if dockerfile_url or not dockerfile_text else dockerfile_text)
    else:
        dockerfile = Path(dockerfile_text) if dockerfile_text else context / "Dockerfile"
    if dockerfile_text and not dockerfile_url and not context_source and not dockerfile.is_absolute() \
            and not dockerfile.exists() and (context / dockerfile).exists():
        dockerfile = context / dockerfile  # Kaniko: a relative --dockerfile may be relative to the context
    destinations = tuple(items("destination"))
    no_push = bool(values["no_push"])
    tar_path = text("tar_path")
    oci_layout = text("oci_layout_path")
    dry_run = bool(values["dry_run"])
    if not destinations and not no_push and not dry_run:
        raise OptionsError("no --destination given: name where to push the image, or pass --no-push "
                           "(with --tar-path, --oci-layout-path or --oci-tar-path to keep it as a file)")
    verbosity = text("verbosity") or "info"
    if verbosity not in LEVELS:
        raise OptionsError(f"--verbosity {verbosity}: expected one of {', '.join(LEVELS)}")
    digest_file = text("digest_file")
    work_dir = text("work_dir")
    cache_dir = text("cache_dir")
    compression = (text("compression") or "gzip").lower()
    if compression not in ("gzip", "zstd"):
        raise OptionsError(f"--compression {compression}: expected gzip or zstd")
    level_text = text("compression_level")
    level: int | None = None
    if level_text is not None:
        limit = 9 if compression == "gzip" else 22
        if not level_text.isdigit() or not 0 <= int(level_text) <= limit:
            raise OptionsError(f"--compression-level {level_text}: expected 0-{limit} for {compression}")
        level = int(level_text)
    sandbox = (text("sandbox") or "auto").strip().lower()
    if sandbox not in SANDBOXES:
        raise OptionsError(f"--sandbox {sandbox}: expected one of {', '.join(SANDBOXES)}")
    rootfs_mode = (text("rootfs_mode") or "auto").lower()
    if rootfs_mode not in ROOTFS_MODES:
        raise OptionsError(f"--rootfs-mode {rootfs_mode}: expected one of {', '.join(ROOTFS_MODES)}")
    memory_text = text("rootfs_memory")
    try:
        rootfs_memory = parse_size(memory_text) if memory_text is not None else None
    except ValueError as exc:
        raise OptionsError(f"--rootfs-memory: {exc}") from None

    def pairs(name: str, flag: str) -> list[tuple[str, str]]:
        out = []
        for item in rejoin(items(name)):
            key, eq, value = item.partition("=")
            if not eq or not key or not value:
                raise OptionsError(f"{flag} {item}: expected REGISTRY=VALUE")
            out.append((key, value))
        return out

    def count(name: str, flag: str) -> int:
        value = text(name)
        if value is None:
            return 3
        if not value.isdigit():
            raise OptionsError(f"{flag} {value}: expected a number of retries")
        return int(value)

    client_certs = []
    for registry, value in pairs("registry_client_cert", "--registry-client-cert"):
        cert, comma, key = value.partition(",")
        if not comma or not cert or not key:
            raise OptionsError(f"--registry-client-cert {registry}={value}: expected REGISTRY=CERT,KEY")
        client_certs.append((registry, cert, key))

    def path_or_none(name: str) -> Path | None:
        value = text(name)
        return Path(value) if value and not is_url(value) else None
    labels = []
    for item in items("label"):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise OptionsError(f"--label {item}: expected KEY=VALUE")
        labels.append((key.strip(), value))
    insecure = set(items("insecure_registry"))
    if values["insecure"]:  # Kaniko: push over plain HTTP, to the destinations (and the cache repository)
        cache_repo = text("cache_repo")
        for name in [*destinations, *([cache_repo] if cache_repo and not cache_repo.startswith("oci:") else [])]:
            try:
                insecure.add(Reference.parse(name).registry)
            except InvalidReference:
                pass  # the build reports the bad name where it reads it
    ignore_paths = [path.rstrip("/") or "/" for path in items("ignore_path")]
    if values["ignore_var_run"]:
        ignore_paths.append("/var/run")
    for path in ignore_paths:
        if not path.startswith("/") or path == "/":
            raise OptionsError(f"--ignore-path {path}: expected an absolute path below /")
    try:
        provenance_mode, provenance_version = parse_mode(text("provenance") or "true")
    except ValueError as exc:
        raise OptionsError(f"--provenance {exc}") from None
    run = ci_run(environ)
    log_format = (text("log_format") or "color").lower()
    if log_format not in LOG_FORMATS:
        raise OptionsError(f"--log-format {log_format}: expected one of {', '.join(LOG_FORMATS)}")
    extract_retry = text("image_fs_extract_retry") or "0"
    if not extract_retry.isdigit():
        raise OptionsError(f"--image-fs-extract-retry {extract_retry}: expected a number of retries")
    build_args = parse_build_args(items("build_arg"), environ)
    epoch = source_date_epoch(environ, dict(build_args))
    if epoch is None and values["reproducible"]:
        epoch = 0
    cache_ttl = 14 * 24 * 3600
    if text("cache_ttl"):
        try:
            cache_ttl = int(parse_duration_text(str(text("cache_ttl"))).total_seconds())
        except ValueError as exc:
            raise OptionsError(f"--cache-ttl {text('cache_ttl')}: {exc}") from None
    return BuildOptions(
        context=context,
        dockerfile=dockerfile,
        destinations=destinations,
        build_args=build_args,
        target=text("target"),
        no_push=no_push,
        push_by_digest=bool(values["push_by_digest"]),
        tar_path=Path(tar_path) if tar_path else None,
        oci_layout_path=Path(oci_layout) if oci_layout else None,
        oci_tar_path=Path(str(text("oci_tar_path"))) if text("oci_tar_path") else None,
        digest_file=Path(digest_file) if digest_file and not is_url(digest_file) else None,
        registry_mirrors=tuple(items("registry_mirror")),
        insecure_registries=frozenset(insecure),
        skip_tls_verify=bool(values["skip_tls_verify"] or values["skip_tls_verify_pull"]),
        work_dir=Path(work_dir) if work_dir else None,
        platform=text("platform"),
        source_date_epoch=epoch,
        docker_config_dir=environ.get("DOCKER_CONFIG") or None,
        secrets=parse_secrets(items("secret")),
        ssh=parse_ssh(items("ssh")),
        secret_environ=dict(environ),
        mount_cache_dir=Path(text("mount_cache_dir") or default_mount_cache_dir(environ)),
        mount_cache_default=not text("mount_cache_dir"),
        cache=bool(values["cache"]),
        cache_repo=text("cache_repo"),
        cache_ttl_seconds=cache_ttl,
        cache_copy_layers=bool(values["cache_copy_layers"]),
        cache_run_layers=bool(values["cache_run_layers"]),
        push_cache=not values["no_push_cache"],
        cache_dir=Path(cache_dir) if cache_dir else None,
        dry_run=dry_run,
        registry_certificates=tuple(pairs("registry_certificate", "--registry-certificate")),
        registry_client_certs=tuple(client_certs),
        skip_tls_verify_registries=tuple(items("skip_tls_verify_registry")),
        registry_maps=registry_maps(items("registry_map")),
        skip_default_registry_fallback=bool(values["skip_default_registry_fallback"]),
        push_retry=count("push_retry", "--push-retry"),
        image_download_retry=count("image_download_retry", "--image-download-retry"),
        compression=compression,
        compression_level=level,
        rootfs_mode=rootfs_mode,
        skeleton_steps=bool(values["skeleton_steps"]),
        rootfs_memory=rootfs_memory,
        image_name_with_digest_file=path_or_none("image_name_with_digest_file"),
        image_name_tag_with_digest_file=path_or_none("image_name_tag_with_digest_file"),
        output_urls=tuple((name, str(text(name))) for name in OUTPUT_FILES if is_url(text(name))),
        metadata_file=path_or_none("metadata_file"),
        sandbox=sandbox,
        force=bool(values["force"]),
        cleanup=bool(values["cleanup"]),
        verbosity=verbosity,
        labels=tuple(labels),
        ignore_paths=tuple(dict.fromkeys(ignore_paths)),
        insecure_pull=bool(values["insecure_pull"]),
        push_ignore_immutable_tag_errors=bool(values["push_ignore_immutable_tag_errors"]),
        push_permission_check=not values["skip_push_permission_check"] and not no_push and not dry_run,
        image_fs_extract_retry=int(extract_retry),
        single_snapshot=bool(values["single_snapshot"]),
        log_format=log_format,
        log_timestamp=bool(values["log_timestamp"]),
        git_options=text("git"),
        context_source=context_source,
        context_sub_path=sub_path if context_source else None,
        dockerfile_url=dockerfile_url,
        provenance_mode=provenance_mode,
        provenance_version=provenance_version,
        sbom=bool(values["sbom"]),
        ci_builder_id=run.builder_id,
        ci_vcs=tuple(sorted(run.vcs.items())),
        ci_facts=tuple(sorted(run.facts.items())),
    )


OUTPUT_FILES = ("digest_file", "image_name_with_digest_file", "image_name_tag_with_digest_file")


def is_url(value: str | None) -> bool:
    """An output file given as an https:// URL (written by HTTP PUT), as Kaniko takes them."""
    return bool(value) and str(value).startswith("https://")


def registry_maps(items: list[str]) -> tuple[tuple[str, str], ...]:
    """``--registry-map`` values as Kaniko reads them: ``ORIG=NEW;ORIG2=NEW2`` (and the flag repeated); a piece
    without ``=`` is one more mirror of the registry before it (``ORIG=NEW;NEW2``). Grouped per registry, mirrors
    joined with ``;`` in order."""
    maps: dict[str, list[str]] = {}
    last: str | None = None
    for item in items:
        for piece in item.split(";"):
            piece = piece.strip()
            if not piece:
                continue
            key, eq, value = piece.partition("=")
            if eq:
                if not key or not value:
                    raise OptionsError(f"--registry-map {item}: expected ORIGINAL=MIRROR[;ORIGINAL2=MIRROR2]")
                last = key
                maps.setdefault(key, []).append(value)
            elif last is not None:
                maps[last].append(piece)
            else:
                raise OptionsError(f"--registry-map {item}: expected ORIGINAL=MIRROR[;ORIGINAL2=MIRROR2]")
    return tuple((key, ";".join(mirrors)) for key, mirrors in maps.items())


def rejoin(items: list[str]) -> list[str]:
    """Values split at commas by LAMINA_* parsing, put back together: a piece without '=' belongs to the previous
    value (``HOST=CERT,KEY``)."""
    out: list[str] = []
    for item in items:
        if out and "=" not in item:
            out[-1] += "," + item
        else:
            out.append(item)
    return out


