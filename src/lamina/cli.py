"""The ``lamina`` command: ``build`` (Kaniko's executor flags, defined in ``lamina.settings``) → flag values →
``BuildOptions`` → ``lamina.launch.launch_build``, with progress and errors rendered with rich; ``ci github`` and
``ci gitlab`` hand over to the CI adapters; ``cache prune`` and ``manifest create``.

Every build flag can also come from the environment as ``LAMINA_<FLAG>`` (see ``lamina.settings``); a flag on the
command line wins over the environment.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from rich.console import Console

import lamina
from lamina.build.executor import BuildResult
from lamina.cache.entries import LAYOUT_PREFIX
from lamina.cache.prune import parse_duration_text, prune_cache, prune_layout
from lamina.console import ConsoleProgress, JsonProgress, human_size, make_console
from lamina.errors import InvalidReference, LaminaError, OptionsError, StepFailed
from lamina.launch import configure_logging, launch_build, registry_config
from lamina.oci.model import Platform
from lamina.oci.reference import Reference
from lamina.oci.registry.assemble import create_index
from lamina.oci.registry.client import RegistryClient, RegistryConfig
from lamina.settings import (
    BUILD_FLAGS,
    KANIKO_NO_EFFECT,
    NoEffect,
    flag_values,
    options_from,
    parse_build_args,
)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="lamina", description="Build container images from Dockerfiles, "
                                  "without a daemon.")
    top.add_argument("--version", action="version", version=f"lamina {lamina.__version__}")
    commands = top.add_subparsers(dest="command", metavar="COMMAND")
    build_parser = commands.add_parser("build", help="build an image from a Dockerfile",
                                       description="Build an image. Every flag can also be set as LAMINA_<FLAG> "
                                       "(repeatable flags: comma-separated).")
    for flag in BUILD_FLAGS:
        names = [flag.name, *flag.aliases] + ([flag.short] if flag.short else [])
        text = f"{flag.help} [env {flag.env}{', ' + flag.kaniko_env if flag.kaniko_env else ''}]"
        if flag.kind in ("bool", "switch"):  # --x, --x=true, --x=false (as Kaniko's flags)
            build_parser.add_argument(*names, dest=flag.dest, nargs="?", const="true", default=None,
                                      metavar="true|false", help=text)
        elif flag.kind == "list":
            build_parser.add_argument(*names, dest=flag.dest, action="append", default=None, metavar=flag.metavar,
                                      help=text)
        elif flag.kind == "optional":  # --provenance, --provenance=mode=max
            build_parser.add_argument(*names, dest=flag.dest, nargs="?", const="true", default=None,
                                      metavar=flag.metavar, help=text)
        else:
            build_parser.add_argument(*names, dest=flag.dest, default=None, metavar=flag.metavar, help=text)
    for no_effect in KANIKO_NO_EFFECT:
        shape: dict[str, Any] = {"metavar": "VALUE"} if no_effect.takes_value else \
            {"nargs": "?", "const": "true", "metavar": "true|false"}
        build_parser.add_argument(*no_effect.names, dest=no_effect_dest(no_effect), action="append", default=None,
                                  help=f"accepted from Kaniko, no effect: {no_effect.reason}", **shape)
    build_parser.add_argument("--bucket", "-b", dest="kaniko_bucket", default=None, metavar="BUCKET",
                              help="Kaniko's hidden GCS context flag: refused (give the context as a directory)")
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
    warm_parser = commands.add_parser(
        "warm", help="keep base images in a cache directory for later builds (Kaniko's warmer)",
        description="Resolve images (given, or the base images of a Dockerfile's stages) and keep their manifests, "
        "configs and layers in --cache-dir; a build with the same --cache-dir then uses them without the registry "
        "for digest references, and when the registry cannot be reached for tags.")
    warm_parser.add_argument("--image", "-i", action="append", default=[], metavar="IMAGE",
                             help="an image to keep (repeatable)")
    warm_parser.add_argument("--dockerfile", "-d", metavar="PATH", help="keep the base image of every stage")
    warm_parser.add_argument("--build-arg", action="append", default=[], metavar="KEY=VALUE",
                             help="for the FROM lines of --dockerfile (repeatable)")
    warm_parser.add_argument("--cache-dir", "-c", default="/cache", metavar="DIR", help="where (default: /cache)")
    warm_parser.add_argument("--force", "-f", action="store_true", help="fetch again what is already kept")
    warm_parser.add_argument("--cache-ttl", default="336h", metavar="DURATION",
                             help="kept images older than this are fetched again (default: 336h)")
    warm_parser.add_argument("--platform", "--custom-platform", "--customPlatform", metavar="PLATFORM",
                             help="os/arch[/variant] (default: the host's)")
    for name in ("--insecure-registry", "--skip-tls-verify-registry", "--registry-certificate",
                 "--registry-client-cert", "--registry-map", "--registry-mirror"):
        warm_parser.add_argument(name, action="append", default=[], metavar="VALUE", help="as lamina build's")
    for name in ("--insecure-pull", "--skip-tls-verify-pull", "--skip-default-registry-fallback"):
        warm_parser.add_argument(name, nargs="?", const="true", default=None, metavar="true|false",
                                 help="as lamina build's")
    warm_parser.add_argument("--verbosity", "-v", default="info", metavar="LEVEL")
    warm_parser.add_argument("--log-format", default="color", metavar="FORMAT")
    warm_parser.add_argument("--log-timestamp", nargs="?", const="true", default=None, metavar="true|false")
    cache_parser = commands.add_parser("cache", help="maintain the registry layer cache")
    cache_commands = cache_parser.add_subparsers(dest="cache_command", metavar="COMMAND")
    prune = cache_commands.add_parser("prune", help="delete stale cache entries through the registry API (or "
                                      "GitHub's or GitLab's API)")
    prune.add_argument("--cache-repo", metavar="REPO",
                       help="the cache repository (required, except with --gitlab: default $CI_REGISTRY_IMAGE/cache)")
    prune.add_argument("--older-than", required=True, metavar="DURATION",
                       help="delete entries older than this (e.g. 336h, 14d, 2w)")
    prune.add_argument("--keep", type=int, default=0, metavar="N", help="always keep the N newest entries")
    prune.add_argument("--insecure-registry", action="append", default=[], metavar="HOST",
                       help="talk plain HTTP to this registry (repeatable)")
    prune.add_argument("--skip-tls-verify", action="store_true", help="do not verify registry TLS certificates")
    api = prune.add_mutually_exclusive_group()
    api.add_argument("--gitlab", action="store_true",
                     help="delete through the GitLab API (the project's container registry, CI_PROJECT_ID, "
                     "CI_SERVER_URL, LAMINA_GITLAB_TOKEN or CI_JOB_TOKEN); GitLab deletes in the background")
    api.add_argument("--github", action="store_true",
                     help="delete package versions of a ghcr.io cache package through GitHub's REST API "
                     "(LAMINA_GITHUB_TOKEN or GITHUB_TOKEN, GITHUB_API_URL); untagged versions older than "
                     "--older-than go too")
    prune.add_argument("--dry-run", action="store_true",
                       help="with --github: list what would be deleted, delete nothing")
    return top


def no_effect_dest(no_effect: NoEffect) -> str:
    return "no_effect_" + no_effect.names[0].lstrip("-").replace("-", "_")


def no_effect_notes(args: argparse.Namespace, environ: Mapping[str, str]) -> list[str]:
    """One line for each Kaniko flag given that has no effect in lamina (and for KANIKO_DIR)."""
    notes = [f"{no_effect.names[0]} has no effect in lamina: {no_effect.reason}" for no_effect in KANIKO_NO_EFFECT
             if getattr(args, no_effect_dest(no_effect), None)]
    if environ.get("KANIKO_DIR"):
        notes.append("KANIKO_DIR has no effect in lamina: lamina keeps its state in --work-dir")
    return notes


def build_flag_values(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, object]:
    """``lamina build``'s flag values: the command line, then LAMINA_<FLAG> (lamina.settings.flag_values)."""
    return flag_values({flag.dest: getattr(args, flag.dest) for flag in BUILD_FLAGS}, environ)


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


def run_warm(args: argparse.Namespace, environ: Mapping[str, str], out: Console) -> int:
    """``lamina warm``: the images (and a Dockerfile's base images) into --cache-dir."""
    from lamina.cache.warm import blob_path, load_image, warm

    def switch(value: str | None) -> bool:
        return value is not None and value.lower() in ("1", "true", "yes", "on")

    refs: list[Reference] = []
    texts = list(args.image)
    if args.dockerfile:
        texts += dockerfile_base_images(Path(args.dockerfile), args.build_arg, environ)
    if not texts:
        raise OptionsError("lamina warm: give --image IMAGE (repeatable) or --dockerfile PATH")
    for text in dict.fromkeys(texts):
        try:
            refs.append(Reference.parse(text))
        except InvalidReference as exc:
            raise OptionsError(f"--image {text}: {exc}") from None
    try:
        platform = Platform.parse(args.platform) if args.platform else Platform.host()
        ttl = parse_duration_text(args.cache_ttl).total_seconds()
    except ValueError as exc:
        raise OptionsError(f"lamina warm: {exc}") from None
    cache_dir = Path(args.cache_dir)
    if not args.force:  # what is kept, fresh and whole stays as it is
        def whole(ref: Reference) -> bool:
            kept = load_image(cache_dir, ref, platform, ttl_seconds=ttl)
            return kept is not None and all(blob_path(cache_dir, layer.digest).exists()
                                            for layer in kept.manifest.layers)
        for ref in [ref for ref in refs if whole(ref)]:
            out.print(f"{ref}: kept already ({platform})", markup=False, highlight=False)
            refs.remove(ref)
    # the registry settings as lamina build reads them (LAMINA_<FLAG> variables included): one RegistryConfig
    registry_flags: dict[str, object | None] = {
        "insecure_registry": args.insecure_registry or None, "registry_mirror": args.registry_mirror or None,
        "skip_tls_verify_registry": args.skip_tls_verify_registry or None,
        "registry_certificate": args.registry_certificate or None,
        "registry_client_cert": args.registry_client_cert or None, "registry_map": args.registry_map or None,
        "skip_default_registry_fallback": switch(args.skip_default_registry_fallback) or None,
        "insecure_pull": switch(args.insecure_pull) or None, "skip_tls_verify_pull": switch(args.skip_tls_verify_pull)
        or None, "no_push": True}
    config = registry_config(options_from(flag_values(registry_flags, environ), environ))
    with RegistryClient(config) as client:
        for image in warm(client, cache_dir, refs, platform, force=args.force):
            out.print(f"{image.reference}: kept {image.manifest_digest} for {image.platform} ({image.layers} layers, "
                      f"{image.downloaded} downloaded) in {cache_dir}", markup=False, highlight=False)
    return 0


def dockerfile_base_images(path: Path, build_args: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """The base image of every stage of the Dockerfile at ``path`` (FROM lines expanded with the meta ARGs and
    ``build_args``), leaving out scratch and earlier stages."""
    from lamina.dockerfile.instructions import load_dockerfile
    from lamina.dockerfile.stages import evaluate_meta_args, expand_meta, find_stage

    try:
        dockerfile = load_dockerfile(path.read_text(encoding="utf-8"), file=str(path))
    except OSError as exc:
        raise OptionsError(f"--dockerfile {path}: {exc.strerror or exc}") from None
    meta: dict[str, str] = {}
    evaluate_meta_args(dockerfile.meta_args, dict(parse_build_args(build_args, environ)), meta)
    images = []
    for stage in dockerfile.stages:
        image = expand_meta(stage.base, stage.base.image, meta)
        if image.lower() != "scratch" and find_stage(dockerfile, image, before=stage.index) is None:
            images.append(image)
    return images


def run_prune(args: argparse.Namespace, environ: Mapping[str, str], out: Console) -> int:
    if args.dry_run and not args.github:
        raise OptionsError("--dry-run works with --github only (the registry API and GitLab's bulk deletion have no "
                           "dry run here)")
    if args.github:
        return run_github_prune(args, environ, out)
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
    if args.cache_repo.startswith(LAYOUT_PREFIX):
        return run_layout_prune(Path(args.cache_repo[len(LAYOUT_PREFIX):]), older_than, args.keep, out)
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


def run_layout_prune(path: Path, older_than: timedelta, keep: int, out: Console) -> int:
    """``lamina cache prune --cache-repo oci:/path``: a cache kept in an OCI layout."""
    if not (path / "index.json").is_file():
        raise OptionsError(f"--cache-repo oci:{path}: no OCI layout there (no index.json)")
    report = prune_layout(path, older_than=older_than, keep=keep)
    count = len(report.deleted)
    out.print(f"oci:{path}: deleted {count} stale cache entr{'y' if count == 1 else 'ies'}, kept {report.kept}",
              markup=False)
    return 0


def run_github_prune(args: argparse.Namespace, environ: Mapping[str, str], out: Console) -> int:
    """``lamina cache prune --github``: one line per deleted (or, with --dry-run, deletable) version, then a summary;
    exit 1 when GitHub refused to delete some version."""
    from lamina.ci.github_packages import prune_command, summary_line

    if args.insecure_registry or args.skip_tls_verify:
        raise OptionsError("--insecure-registry and --skip-tls-verify do not apply to --github (it talks to "
                           "GITHUB_API_URL, not to the registry)")

    def echo(line: str) -> None:
        out.print(line, markup=False, highlight=False)

    result = prune_command(args.cache_repo, args.older_than, args.keep, environ, dry_run=args.dry_run, echo=echo)
    echo(summary_line(result))
    if result.refused:
        make_console(stderr=True).print(f"error: GitHub refused to delete {len(result.refused)} version(s) of "
                                        f"{result.package} (see above)", markup=False, highlight=False)
        return 1
    return 0


def report(say: Callable[[str], None], result: BuildResult) -> None:
    """The build's outcome, a line at a time: the plan of a dry run, or the digest and where it was pushed."""
    if result.plan and not result.digest:  # --dry-run
        for stage, instruction, verdict in result.plan:
            say(f"[{verdict}] ({stage}) {instruction}")
        hits = sum(1 for *_, verdict in result.plan if verdict == "hit")
        say(f"dry run: {hits} of {len(result.plan)} filesystem steps would come from the cache; nothing was run or "
            "pushed")
        return
    layers = sum(1 for step in result.steps if step.layer_size is not None and not step.cached)
    cached = sum(1 for step in result.steps if step.cached)
    reused = f", {cached} step(s) from the cache" if cached else ""
    say(f"built {result.digest} ({human_size(result.size)}, {layers} new layer(s){reused})")
    for dest in result.destinations:
        say(f"pushed {dest if '@' in dest else f'{dest}@{result.digest}'}")


def run_build(values: Mapping[str, object], environ: Mapping[str, str], out: Console, err: Console,
              notes: Sequence[str] = ()) -> int:
    """``lamina build``: flag values → options → the build, with its progress and result on the console (or as
    JSON lines with --log-format json)."""
    options = options_from(values, environ)
    configure_logging(options.verbosity)
    progress: ConsoleProgress | JsonProgress
    if options.log_format == "json":
        progress = JsonProgress(verbosity=options.verbosity)
    else:
        if options.log_format == "text":
            out = make_console(log_format="text")
        progress = ConsoleProgress(out, options.verbosity, timestamps=options.log_timestamp)
    for note in notes:
        progress.message(f"note: {note}")
    try:
        result = launch_build(options, progress, environ)
    except StepFailed as exc:
        progress.close()
        if not progress.show_steps and exc.output_tail:
            err.print(exc.output_tail, markup=False, highlight=False)
        raise
    finally:
        progress.close()
    if isinstance(progress, JsonProgress):
        report(lambda line: progress.emit("info", line), result)
    else:
        report(lambda line: out.print(line, markup=False, highlight=False), result)
    return 0


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    args = parser().parse_args(argv)
    out = make_console()
    err = make_console(stderr=True)
    if args.command not in ("build", "cache", "ci", "manifest", "warm") or \
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
        if args.command == "warm":
            return run_warm(args, env, out)
        if args.kaniko_bucket:
            raise OptionsError(f"--bucket {args.kaniko_bucket}: contexts in Google Cloud Storage buckets are not "
                               "supported yet; download the context and give it as --context DIR")
        values = build_flag_values(args, env)
        return run_build(values, env, out, err, no_effect_notes(args, env))
    except LaminaError as exc:
        if values.get("verbosity") in ("debug", "trace"):
            err.print_exception()
        err.print(f"error: {exc}", markup=False, highlight=False)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("error: interrupted", highlight=False)
        return 130


if __name__ == "__main__":
    sys.exit(main())
