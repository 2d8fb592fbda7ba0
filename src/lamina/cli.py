"""``lamina build``: Kaniko's executor flags → BuildOptions → build(); progress and errors rendered with rich.

Every flag can also come from the environment as ``LAMINA_<FLAG>`` (``--build-arg`` → ``LAMINA_BUILD_ARG``);
repeatable flags take comma-separated values there. A flag on the command line wins over the environment.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from rich.console import Console

import lamina
from lamina.build.executor import BuildResult, build
from lamina.cache.prune import parse_duration_text, prune_cache
from lamina.console import LEVELS, ConsoleProgress, human_size, make_console
from lamina.errors import InvalidReference, LaminaError, OptionsError, StepFailed
from lamina.oci.reference import Reference
from lamina.oci.registry.assemble import create_index
from lamina.oci.registry.client import RegistryClient, RegistryConfig
from lamina.options import ROOTFS_MODES, BuildOptions, default_mount_cache_dir, parse_secrets, parse_size
from lamina.rootfs.mounts import private_mount_namespace
from lamina.sandbox import rootless
from lamina.sandbox.detect import SANDBOXES, choose, probe
from lamina.sandbox.runners import cleanup_created, make_runner, terminating

TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off", ""})


@dataclass(frozen=True)
class Flag:
    name: str  # "--build-arg"
    help: str
    kind: str = "value"  # "value", "list" (repeatable) or "bool"
    short: str | None = None
    metavar: str | None = None

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
    Flag("--no-push", "build without pushing", "bool"),
    Flag("--tar-path", "also write the image as a docker-archive tarball (docker load, skopeo docker-archive:)",
         metavar="PATH"),
    Flag("--oci-layout-path", "also write the image into an OCI image layout directory", metavar="DIR"),
    Flag("--digest-file", "write the image digest (sha256:...) to this file", metavar="PATH"),
    Flag("--registry-mirror", "pull docker.io images through this mirror first (repeatable)", "list",
         metavar="HOST"),
    Flag("--insecure-registry", "talk plain HTTP to this registry (repeatable)", "list", metavar="HOST"),
    Flag("--skip-tls-verify", "do not verify registry TLS certificates", "bool"),
    Flag("--skip-tls-verify-registry", "do not verify the TLS certificate of this registry (repeatable)", "list",
         metavar="HOST"),
    Flag("--registry-certificate", "trust this CA bundle for a registry: HOST=PATH (repeatable)", "list",
         metavar="HOST=PATH"),
    Flag("--registry-client-cert", "a client certificate for mutual TLS: HOST=CERT,KEY (repeatable)", "list",
         metavar="HOST=CERT,KEY"),
    Flag("--registry-map", "pull images of a registry from mirrors first: ORIGINAL=MIRROR[;MIRROR2] (repeatable)",
         "list", metavar="ORIG=NEW"),
    Flag("--skip-default-registry-fallback", "with mirrors or maps, never fall back to the original registry",
         "bool"),
    Flag("--push-retry", "retries of each push request on connection errors, 429 and 5xx (default: 3)",
         metavar="N"),
    Flag("--image-download-retry", "retries of each pull request on connection errors, 429 and 5xx (default: 3)",
         metavar="N"),
    Flag("--platform", "build for os/arch[/variant] (default: the host's); selects base images from indexes",
         metavar="PLATFORM"),
    Flag("--work-dir", "where root filesystems and blobs live during the build (default: the temp dir)",
         metavar="DIR"),
    Flag("--secret", "expose a secret to RUN --mount=type=secret: id=ID,src=PATH or id=ID,env=VARIABLE (repeatable)",
         "list", metavar="id=ID,src=PATH"),
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
    Flag("--verbosity", "log level: " + ", ".join(LEVELS) + " (default: info)", metavar="LEVEL"),
    Flag("--sandbox", "where RUN steps run: " + ", ".join(SANDBOXES) + " (default: auto, the best one available; "
         "see README, Sandboxes)", metavar="NAME"),
    Flag("--rootfs-mode", "how a stage's layers become its root filesystem: overlay (an EROFS image of the layers "
         "under an overlay: no file is created per entry; root with loop devices), unpack (extracted into a "
         "directory) or auto (default: overlay where possible)", metavar="MODE"),
    Flag("--rootfs-memory", "on an overlay rootfs, how much of what steps write may be kept in memory (tmpfs), e.g. "
         "512M; beyond it, on disk (default: a quarter of the available memory, at most 1G; 0: always on disk)",
         metavar="SIZE"),
    Flag("--force", "run the inplace sandbox (which builds in /) outside lamina's runtime image", "bool"),
    Flag("--cleanup", "also remove the directories the build created outside its work directory (--work-dir, "
         "mount cache, --cache-dir) when it ends", "bool"),
)


def truthy(flag: Flag, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in TRUE:
        return True
    if lowered in FALSE:
        return False
    raise OptionsError(f"{flag.env}={text!r}: expected true or false")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="lamina", description="Build container images from Dockerfiles, "
                                  "without a daemon.")
    top.add_argument("--version", action="version", version=f"lamina {lamina.__version__}")
    commands = top.add_subparsers(dest="command", metavar="COMMAND")
    build_parser = commands.add_parser("build", help="build an image from a Dockerfile",
                                       description="Build an image. Every flag can also be set as LAMINA_<FLAG> "
                                       "(repeatable flags: comma-separated).")
    for flag in BUILD_FLAGS:
        names = [flag.name] + ([flag.short] if flag.short else [])
        text = f"{flag.help} [env {flag.env}]"
        if flag.kind == "bool":
            build_parser.add_argument(*names, dest=flag.dest, action="store_const", const=True, default=None,
                                      help=text)
        elif flag.kind == "switch":  # --x, --x=true, --x=false
            build_parser.add_argument(*names, dest=flag.dest, nargs="?", const="true", default=None,
                                      metavar="true|false", help=text)
        elif flag.kind == "list":
            build_parser.add_argument(*names, dest=flag.dest, action="append", default=None, metavar=flag.metavar,
                                      help=text)
        else:
            build_parser.add_argument(*names, dest=flag.dest, default=None, metavar=flag.metavar, help=text)
    ci_parser = commands.add_parser("ci", help="build inside a CI job, configured from its environment")
    ci_parser.add_argument("system", choices=("github", "gitlab"),
                           help="github: the GitHub Action (INPUT_* variables); gitlab: GitLab CI variables")
    ci_parser.add_argument("--mr-note", action="store_true", default=None,
                           help="gitlab: post the build report on the merge request (needs LAMINA_GITLAB_TOKEN, "
                           "a token with the api scope; CI_JOB_TOKEN cannot post notes)")
    manifest_parser = commands.add_parser("manifest", help="multi-platform images: combine per-platform images")
    manifest_commands = manifest_parser.add_subparsers(dest="manifest_command", metavar="COMMAND")
    create = manifest_commands.add_parser(
        "create", help="push an index (OCI) or manifest list (Docker) over images built for different platforms")
    create.add_argument("--destination", "-d", required=True, metavar="IMAGE", help="where to push the index")
    create.add_argument("sources", nargs="+", metavar="IMAGE@DIGEST",
                        help="the per-platform images (by digest, as lamina build --digest-file gives it)")
    create.add_argument("--digest-file", metavar="PATH", help="write the index digest to this file")
    create.add_argument("--insecure-registry", action="append", default=[], metavar="HOST",
                        help="talk plain HTTP to this registry (repeatable)")
    create.add_argument("--skip-tls-verify", action="store_true", help="do not verify registry TLS certificates")
    cache_parser = commands.add_parser("cache", help="maintain the registry layer cache")
    cache_commands = cache_parser.add_subparsers(dest="cache_command", metavar="COMMAND")
    prune = cache_commands.add_parser("prune", help="delete stale cache entries through the registry API")
    prune.add_argument("--cache-repo", metavar="REPO",
                       help="the cache repository (required, except with --gitlab: default $CI_REGISTRY_IMAGE/cache)")
    prune.add_argument("--older-than", required=True, metavar="DURATION",
                       help="delete entries older than this (e.g. 336h, 14d, 2w)")
    prune.add_argument("--keep", type=int, default=0, metavar="N", help="always keep the N newest entries")
    prune.add_argument("--insecure-registry", action="append", default=[], metavar="HOST",
                       help="talk plain HTTP to this registry (repeatable)")
    prune.add_argument("--skip-tls-verify", action="store_true", help="do not verify registry TLS certificates")
    prune.add_argument("--gitlab", action="store_true",
                       help="delete through the GitLab API (the project's container registry, CI_PROJECT_ID, "
                       "CI_SERVER_URL, LAMINA_GITLAB_TOKEN or CI_JOB_TOKEN); GitLab deletes in the background")
    return top


def run_manifest_create(args: argparse.Namespace, environ: Mapping[str, str], out: Console) -> int:
    def parse(text: str, what: str) -> Reference:
        try:
            return Reference.parse(text)
        except InvalidReference as exc:
            raise OptionsError(f"{what} {text}: {exc}") from None

    destination = parse(args.destination, "--destination")
    sources = [parse(text, "image") for text in args.sources]
    config = RegistryConfig(insecure_registries=tuple(args.insecure_registry), skip_tls_verify=args.skip_tls_verify,
                            docker_config_dir=environ.get("DOCKER_CONFIG") or None)
    with RegistryClient(config) as client:
        index = create_index(client, destination, sources)
    for entry in index.entries:
        out.print(f"  {entry.platform_text}: {entry.digest}", markup=False, highlight=False)
    out.print(f"pushed {destination}@{index.digest} ({len(index.entries)} platforms)", markup=False, highlight=False)
    if args.digest_file:
        Path(args.digest_file).write_text(index.digest)
    return 0


def run_prune(args: argparse.Namespace, environ: Mapping[str, str], out: Console) -> int:
    if args.gitlab:
        from lamina.ci.gitlab_api import prune_command

        if args.keep < 0:
            raise OptionsError("--keep must be 0 or more")
        out.print(prune_command(args.cache_repo, args.older_than, args.keep, environ), markup=False,
                  highlight=False)
        return 0
    if not args.cache_repo:
        raise OptionsError("--cache-repo is required (or --gitlab, to default to $CI_REGISTRY_IMAGE/cache)")
    try:
        older_than = parse_duration_text(args.older_than)
    except ValueError as exc:
        raise OptionsError(f"--older-than {args.older_than}: {exc}") from None
    if args.keep < 0:
        raise OptionsError("--keep must be 0 or more")
    try:
        repo = Reference.parse(args.cache_repo)
    except InvalidReference as exc:
        raise OptionsError(f"--cache-repo {args.cache_repo}: {exc}") from None
    config = RegistryConfig(insecure_registries=tuple(args.insecure_registry), skip_tls_verify=args.skip_tls_verify,
                            docker_config_dir=environ.get("DOCKER_CONFIG") or None)
    with RegistryClient(config) as client:
        report = prune_cache(client, repo, older_than=older_than, keep=args.keep)
    out.print(f"{repo.name}: deleted {len(report.deleted)} stale cache entr{'y' if len(report.deleted) == 1 else 'ies'}"
              f", kept {report.kept}", markup=False)
    if report.refused:
        make_console(stderr=True).print(f"error: {report.refused}", markup=False)
        return 1
    return 0


def resolve_flags(namespace: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, object]:
    """Command line first, then LAMINA_<FLAG>; lists split on commas in the environment."""
    values: dict[str, object] = {}
    for flag in BUILD_FLAGS:
        given = getattr(namespace, flag.dest)
        if given is None and flag.env in environ:
            raw = environ[flag.env]
            if flag.kind in ("bool", "switch"):
                given = truthy(flag, raw)
            elif flag.kind == "list":
                given = [item.strip() for item in raw.split(",") if item.strip()]
            else:
                given = raw
        if flag.kind == "switch" and isinstance(given, str):
            given = truthy(flag, given)
        if given is None:
            given = False if flag.kind == "bool" else True if flag.kind == "switch" else [] \
                if flag.kind == "list" else None
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


def source_date_epoch(environ: Mapping[str, str]) -> int | None:
    raw = environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise OptionsError(f"SOURCE_DATE_EPOCH={raw!r}: expected a number of seconds since 1970")
    return int(raw)


def options_from(values: Mapping[str, object], environ: Mapping[str, str]) -> BuildOptions:
    def text(name: str) -> str | None:
        value = values[name]
        return value if isinstance(value, str) and value else None

    def items(name: str) -> list[str]:
        value = values[name]
        assert isinstance(value, list)
        return [str(v) for v in value]

    context_text = text("context") or "."
    if context_text.startswith("dir://"):
        context_text = context_text[len("dir://"):]
    elif "://" in context_text:
        scheme = context_text.split("://", 1)[0]
        raise OptionsError(f"--context {context_text}: {scheme}:// contexts are not supported; give a directory")
    context = Path(context_text)
    dockerfile_text = text("dockerfile")
    dockerfile = Path(dockerfile_text) if dockerfile_text else context / "Dockerfile"
    if dockerfile_text and not dockerfile.is_absolute() and not dockerfile.exists() and (context / dockerfile).exists():
        dockerfile = context / dockerfile  # Kaniko: a relative --dockerfile may be relative to the context
    destinations = tuple(items("destination"))
    no_push = bool(values["no_push"])
    tar_path = text("tar_path")
    oci_layout = text("oci_layout_path")
    dry_run = bool(values["dry_run"])
    if not destinations and not no_push and not dry_run:
        raise OptionsError("no --destination given: name where to push the image, or pass --no-push "
                           "(with --tar-path or --oci-layout-path to keep it as a file)")
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
        return Path(value) if value else None
    epoch = source_date_epoch(environ)
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
        build_args=parse_build_args(items("build_arg"), environ),
        target=text("target"),
        no_push=no_push,
        tar_path=Path(tar_path) if tar_path else None,
        oci_layout_path=Path(oci_layout) if oci_layout else None,
        digest_file=Path(digest_file) if digest_file else None,
        registry_mirrors=tuple(items("registry_mirror")),
        insecure_registries=frozenset(items("insecure_registry")),
        skip_tls_verify=bool(values["skip_tls_verify"]),
        work_dir=Path(work_dir) if work_dir else None,
        platform=text("platform"),
        source_date_epoch=epoch,
        docker_config_dir=environ.get("DOCKER_CONFIG") or None,
        secrets=parse_secrets(items("secret")),
        secret_environ=environ,
        mount_cache_dir=Path(text("mount_cache_dir") or default_mount_cache_dir(environ)),
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
        registry_maps=tuple(pairs("registry_map", "--registry-map")),
        skip_default_registry_fallback=bool(values["skip_default_registry_fallback"]),
        push_retry=count("push_retry", "--push-retry"),
        image_download_retry=count("image_download_retry", "--image-download-retry"),
        compression=compression,
        compression_level=level,
        rootfs_mode=rootfs_mode,
        rootfs_memory=rootfs_memory,
        image_name_with_digest_file=path_or_none("image_name_with_digest_file"),
        image_name_tag_with_digest_file=path_or_none("image_name_tag_with_digest_file"),
        metadata_file=path_or_none("metadata_file"),
    )


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


def registry_config(options: BuildOptions) -> RegistryConfig:
    return RegistryConfig(insecure_registries=tuple(sorted(options.insecure_registries)),
                          skip_tls_verify=options.skip_tls_verify, registry_mirrors=options.registry_mirrors,
                          docker_config_dir=options.docker_config_dir, retries=options.image_download_retry,
                          push_retries=options.push_retry, ca_certificates=options.registry_certificates,
                          client_certificates=options.registry_client_certs,
                          skip_tls_verify_registries=options.skip_tls_verify_registries,
                          registry_maps=options.registry_maps,
                          skip_default_registry_fallback=options.skip_default_registry_fallback)


def report(console: Console, result: BuildResult) -> None:
    if result.plan and not result.digest:  # --dry-run
        for stage, instruction, verdict in result.plan:
            console.print(f"[{verdict}] ({stage}) {instruction}", markup=False, highlight=False)
        hits = sum(1 for *_, verdict in result.plan if verdict == "hit")
        console.print(f"dry run: {hits} of {len(result.plan)} filesystem steps would come from the cache; "
                      "nothing was run or pushed", highlight=False)
        return
    layers = sum(1 for step in result.steps if step.layer_size is not None and not step.cached)
    cached = sum(1 for step in result.steps if step.cached)
    reused = f", {cached} step(s) from the cache" if cached else ""
    console.print(f"built {result.digest} ({human_size(result.size)}, {layers} new layer(s){reused})",
                  highlight=False)
    for dest in result.destinations:
        console.print(f"pushed {dest}@{result.digest}", markup=False, highlight=False)


def run_build(values: Mapping[str, object], environ: Mapping[str, str], out: Console, err: Console) -> int:
    verbosity = str(values.get("verbosity") or "info")
    options = options_from(values, environ)
    options = replace(options, sandbox=str(values.get("sandbox") or "auto").strip().lower(),
                      force=bool(values.get("force")), cleanup=bool(values.get("cleanup")))
    progress = ConsoleProgress(out, verbosity)
    facts = probe(environ)
    choice = choose(options.sandbox, facts, force=options.force)
    if not facts.rootless_inner:
        progress.message(f"sandbox: {choice.name} ({choice.reason})")
    if choice.name == "rootless":  # the whole build runs again inside a user namespace
        return rootless.enter(values, environ, facts)
    if choice.name == "namespace" and options.rootfs_mode != "unpack":
        private_mount_namespace()  # overlay root filesystems then vanish with the process, whatever happens
    runner = make_runner(choice.name, warn=progress.message, force=options.force)
    client = RegistryClient(registry_config(options), progress)
    try:
        with terminating(), cleanup_created((options.work_dir, options.mount_cache_dir, options.cache_dir),
                                            options.cleanup):
            result = build(options, client=client, runner=runner, progress=progress)
    except StepFailed as exc:
        progress.close()
        if not progress.show_steps and exc.output_tail:
            err.print(exc.output_tail, markup=False, highlight=False)
        raise
    finally:
        progress.close()
        client.close()
    report(out, result)
    return 0


def report_error(err: Console, exc: LaminaError, *, debug: bool) -> int:
    """One line on stderr (the traceback too at debug verbosity); the error's exit code."""
    if debug:
        err.print_exception()
    err.print(f"error: {exc}", markup=False, highlight=False)
    return exc.exit_code


def run_build_reporting(values: Mapping[str, object], environ: Mapping[str, str], out: Console,
                        err: Console) -> int:
    """``lamina build`` with logging set from --verbosity and errors reported (also the rootless re-run's entry)."""
    verbosity = str(values.get("verbosity") or "info")
    debug = verbosity in ("debug", "trace")
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return run_build(values, environ, out, err)
    except LaminaError as exc:
        return report_error(err, exc, debug=debug)
    except KeyboardInterrupt:
        err.print("error: interrupted", highlight=False)
        return 130


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    args = parser().parse_args(argv)
    out = make_console()
    err = make_console(stderr=True)
    if args.command not in ("build", "cache", "ci", "manifest") or \
            (args.command == "cache" and args.cache_command is None) or \
            (args.command == "manifest" and args.manifest_command is None):
        parser().print_help()
        return 2
    if args.command == "ci":  # the adapters render their own output and errors (annotations, sections)
        if args.system == "github":
            from lamina.ci import github
            return github.main(env)
        from lamina.ci import gitlab
        return gitlab.main(env, mr_note=args.mr_note)
    values: dict[str, object] = {}
    try:
        if args.command == "cache":
            return run_prune(args, env, out)
        if args.command == "manifest":
            return run_manifest_create(args, env, out)
        values = resolve_flags(args, env)
        return run_build_reporting(values, env, out, err)
    except LaminaError as exc:
        return report_error(err, exc, debug=values.get("verbosity") in ("debug", "trace"))


if __name__ == "__main__":
    sys.exit(main())
