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
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

import lamina
from lamina.build.executor import BuildResult, build
from lamina.console import LEVELS, ConsoleProgress, human_size
from lamina.errors import LaminaError, OptionsError, StepFailed
from lamina.oci.registry.client import RegistryClient, RegistryConfig
from lamina.options import BuildOptions, default_mount_cache_dir, parse_secrets
from lamina.sandbox.namespace import NamespaceRunner

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
    Flag("--platform", "build for os/arch[/variant] (default: the host's); selects base images from indexes",
         metavar="PLATFORM"),
    Flag("--work-dir", "where root filesystems and blobs live during the build (default: the temp dir)",
         metavar="DIR"),
    Flag("--secret", "expose a secret to RUN --mount=type=secret: id=ID,src=PATH or id=ID,env=VARIABLE (repeatable)",
         "list", metavar="id=ID,src=PATH"),
    Flag("--mount-cache-dir", "where RUN --mount=type=cache directories persist between builds "
         "(default: $XDG_CACHE_HOME/lamina/mounts or ~/.cache/lamina/mounts)", metavar="DIR"),
    Flag("--verbosity", "log level: " + ", ".join(LEVELS) + " (default: info)", metavar="LEVEL"),
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
        elif flag.kind == "list":
            build_parser.add_argument(*names, dest=flag.dest, action="append", default=None, metavar=flag.metavar,
                                      help=text)
        else:
            build_parser.add_argument(*names, dest=flag.dest, default=None, metavar=flag.metavar, help=text)
    return top


def resolve_flags(namespace: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, object]:
    """Command line first, then LAMINA_<FLAG>; lists split on commas in the environment."""
    values: dict[str, object] = {}
    for flag in BUILD_FLAGS:
        given = getattr(namespace, flag.dest)
        if given is None and flag.env in environ:
            raw = environ[flag.env]
            if flag.kind == "bool":
                given = truthy(flag, raw)
            elif flag.kind == "list":
                given = [item.strip() for item in raw.split(",") if item.strip()]
            else:
                given = raw
        if given is None:
            given = False if flag.kind == "bool" else [] if flag.kind == "list" else None
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
    if not destinations and not no_push:
        raise OptionsError("no --destination given: name where to push the image, or pass --no-push "
                           "(with --tar-path or --oci-layout-path to keep it as a file)")
    verbosity = text("verbosity") or "info"
    if verbosity not in LEVELS:
        raise OptionsError(f"--verbosity {verbosity}: expected one of {', '.join(LEVELS)}")
    digest_file = text("digest_file")
    work_dir = text("work_dir")
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
        source_date_epoch=source_date_epoch(environ),
        docker_config_dir=environ.get("DOCKER_CONFIG") or None,
        secrets=parse_secrets(items("secret")),
        secret_environ=environ,
        mount_cache_dir=Path(text("mount_cache_dir") or default_mount_cache_dir(environ)),
    )


def registry_config(options: BuildOptions) -> RegistryConfig:
    return RegistryConfig(insecure_registries=tuple(sorted(options.insecure_registries)),
                          skip_tls_verify=options.skip_tls_verify, registry_mirrors=options.registry_mirrors,
                          docker_config_dir=options.docker_config_dir)


def report(console: Console, result: BuildResult) -> None:
    layers = sum(1 for step in result.steps if step.layer_size is not None)
    console.print(f"built {result.digest} ({human_size(result.size)}, {layers} new layer(s))", highlight=False)
    for dest in result.destinations:
        console.print(f"pushed {dest}@{result.digest}", highlight=False)


def run_build(values: Mapping[str, object], environ: Mapping[str, str], out: Console, err: Console) -> int:
    verbosity = str(values.get("verbosity") or "info")
    options = options_from(values, environ)
    progress = ConsoleProgress(out, verbosity)
    client = RegistryClient(registry_config(options), progress)
    try:
        result = build(options, client=client, runner=NamespaceRunner(), progress=progress)
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


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    args = parser().parse_args(argv)
    out = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if args.command != "build":
        parser().print_help()
        return 2
    values: dict[str, object] = {}
    try:
        values = resolve_flags(args, env)
        verbosity = str(values.get("verbosity") or "info")
        logging.basicConfig(level=logging.DEBUG if verbosity in ("debug", "trace") else logging.WARNING,
                            format="%(levelname)s %(name)s: %(message)s")
        return run_build(values, env, out, err)
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
