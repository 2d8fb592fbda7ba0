"""Running a build from complete options: the one way every entry point (``lamina build``, ``lamina ci github``,
``lamina ci gitlab``) starts a build.

``launch_build`` chooses the sandbox (``--sandbox``, detected for ``auto``, and says which and why), re-enters
itself inside a user namespace for ``rootless`` (``python -m lamina.launch --rootless-inner``, see
``lamina.sandbox.rootless``), gives the build a private mount namespace where overlay root filesystems will be
mounted, makes the runner and the registry client, turns SIGTERM and SIGHUP into a clean stop, and removes what
``--cleanup`` asks for. It returns the ``BuildResult`` or raises a ``LaminaError``; rendering either is the entry
point's business.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from lamina.build.context_source import fetch_context
from lamina.build.executor import BuildResult, build
from lamina.oci.registry.client import RegistryClient, RegistryConfig
from lamina.options import BuildOptions
from lamina.progress import Progress
from lamina.rootfs.mounts import private_mount_namespace
from lamina.sandbox import rootless
from lamina.sandbox.detect import choose, probe
from lamina.sandbox.runners import cleanup_created, make_runner, terminating


def registry_config(options: BuildOptions) -> RegistryConfig:
    return RegistryConfig(insecure_registries=tuple(sorted(options.insecure_registries)),
                          skip_tls_verify=options.skip_tls_verify, registry_mirrors=options.registry_mirrors,
                          docker_config_dir=options.docker_config_dir,
                          # lamina unpacks only digest-checked blobs: what Kaniko retries as an extraction (a layer
                          # stream that broke off) is a download here
                          retries=options.image_download_retry + options.image_fs_extract_retry,
                          push_retries=options.push_retry, ca_certificates=options.registry_certificates,
                          client_certificates=options.registry_client_certs,
                          skip_tls_verify_registries=options.skip_tls_verify_registries,
                          registry_maps=options.registry_maps,
                          skip_default_registry_fallback=options.skip_default_registry_fallback,
                          http_fallback=options.insecure_pull)


def configure_logging(verbosity: str) -> None:
    """Library logs on stderr: everything at debug and trace verbosity, warnings otherwise."""
    logging.basicConfig(level=logging.DEBUG if verbosity in ("debug", "trace") else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


def launch_build(options: BuildOptions, progress: Progress, environ: Mapping[str, str]) -> BuildResult:
    """Build with ``options`` in the sandbox they ask for; progress goes to ``progress`` (closed by the caller).
    A remote context (tar://, git://, https://, ...) or Dockerfile URL is fetched first, and removed at the end."""
    if options.context_source is None and options.dockerfile_url is None:
        return _launch(options, progress, environ)
    work = options.work_dir if options.work_dir is not None and options.work_dir.is_dir() else None
    fetched = Path(tempfile.mkdtemp(prefix="lamina-context-", dir=work))
    try:
        progress.message(f"context: fetching {options.context_source or options.dockerfile_url}")
        return _launch(fetch_context(options, fetched, environ), progress, environ)
    finally:
        shutil.rmtree(fetched, ignore_errors=True)


def _launch(options: BuildOptions, progress: Progress, environ: Mapping[str, str]) -> BuildResult:
    facts = probe(environ)
    choice = choose(options.sandbox, facts, force=options.force)
    if not facts.rootless_inner:
        progress.message(f"sandbox: {choice.name} ({choice.reason})")
    if choice.name == "rootless":  # the whole build runs again inside a user namespace
        result = rootless.enter(replace(options, sandbox="namespace"), progress, environ, facts,
                                module="lamina.launch")
        assert isinstance(result, BuildResult)
        return result
    if choice.name == "namespace" and options.rootfs_mode != "unpack":
        private_mount_namespace()  # overlay root filesystems then vanish with the process, whatever happens
    runner = make_runner(choice.name, warn=progress.message, force=options.force)
    client = RegistryClient(registry_config(options), progress)
    try:
        with terminating(), cleanup_created((options.work_dir, options.mount_cache_dir, options.cache_dir),
                                            options.cleanup):
            return build(options, client=client, runner=runner, progress=progress)
    finally:
        client.close()


def _inner_build(request: Any, progress: Progress) -> BuildResult:
    """The rootless sandbox's inner half: the same build, as root of the user namespace."""
    assert isinstance(request, BuildOptions)
    configure_logging(request.verbosity)
    return launch_build(request, progress, os.environ)


if __name__ == "__main__":
    sys.exit(rootless.serve(sys.argv[1:], _inner_build))
