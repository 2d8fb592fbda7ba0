"""``BuildOptions``: the only configuration object of a build. Frozen; made by the CLI or a CI adapter."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lamina.errors import OptionsError

SECRET_KINDS = ("file", "env")
ROOTFS_MODES = ("auto", "overlay", "unpack")  # see BuildOptions.rootfs_mode


@dataclass(frozen=True)
class BuildOptions:
    context: Path
    dockerfile: Path
    destinations: tuple[str, ...] = ()
    build_args: tuple[tuple[str, str], ...] = ()
    target: str | None = None
    no_push: bool = False
    push_by_digest: bool = False  # destinations' repositories get the manifest by digest, no tag
    tar_path: Path | None = None
    oci_layout_path: Path | None = None
    oci_tar_path: Path | None = None  # an OCI layout in a tar archive
    digest_file: Path | None = None
    registry_mirrors: tuple[str, ...] = ()
    insecure_registries: frozenset[str] = field(default_factory=frozenset)
    skip_tls_verify: bool = False
    work_dir: Path | None = None  # None: a fresh directory under the system temp dir
    platform: str | None = None  # None: the host's
    source_date_epoch: int | None = None
    docker_config_dir: str | None = None
    # --secret: (id, "file" or "env", the file's path or the variable's name); values are read only by the RUN
    # that mounts them, files from disk and variables from ``secret_environ`` (None: os.environ)
    secrets: tuple[tuple[str, str, str], ...] = ()
    # --ssh: (id, agent socket or private key files); no paths: the agent of $SSH_AUTH_SOCK (in secret_environ)
    ssh: tuple[tuple[str, tuple[str, ...]], ...] = ()
    secret_environ: Mapping[str, str] | None = field(default=None, repr=False, compare=False)
    mount_cache_dir: Path | None = None  # RUN --mount=type=cache directories; None: default_mount_cache_dir()
    mount_cache_default: bool = False  # mount_cache_dir is the default, not --mount-cache-dir (see run_mounts.py)
    # the registry layer cache
    cache: bool = False
    cache_repo: str | None = None  # None: <first destination's repository>/cache
    cache_ttl_seconds: int = 14 * 24 * 3600
    cache_copy_layers: bool = True
    cache_run_layers: bool = True
    push_cache: bool = True
    cache_dir: Path | None = None  # local store of pulled blobs, reused across builds
    dry_run: bool = False  # plan only: print each step with hit or miss
    # registry access
    registry_certificates: tuple[tuple[str, str], ...] = ()  # (registry, CA bundle path)
    registry_client_certs: tuple[tuple[str, str, str], ...] = ()  # (registry, certificate, key)
    skip_tls_verify_registries: tuple[str, ...] = ()
    registry_maps: tuple[tuple[str, str], ...] = ()  # (original registry, "mirror[;mirror2]")
    skip_default_registry_fallback: bool = False
    push_retry: int = 3
    image_download_retry: int = 3
    # layers and outputs
    compression: str = "gzip"  # "gzip" or "zstd" (OCI media types either way)
    compression_level: int | None = None
    image_name_with_digest_file: Path | None = None  # one line per destination: name@digest
    image_name_tag_with_digest_file: Path | None = None  # one line per destination: name:tag@digest
    metadata_file: Path | None = None  # buildx-style JSON
    # --digest-file, --image-name-with-digest-file, --image-name-tag-with-digest-file given as https:// URLs:
    # (flag dest, URL), written by HTTP PUT instead (Kaniko's pre-signed bucket URLs)
    output_urls: tuple[tuple[str, str], ...] = ()
    # how a stage's layers become its rootfs (lamina.rootfs.overlay): auto, overlay or unpack
    rootfs_mode: str = "auto"
    rootfs_memory: int | None = None  # bytes of step changes an overlay rootfs may keep in memory; None: default
    skeleton_steps: bool = True  # COPY/WORKDIR with no RUN or ADD after them run on the stage's skeleton
    # the RUN sandbox (lamina.sandbox.detect): auto, namespace, rootless, chroot or inplace
    sandbox: str = "auto"
    force: bool = False  # --force: the inplace sandbox outside lamina's runtime image
    cleanup: bool = False  # --cleanup: remove the directories the build created outside its work directory
    verbosity: str = "info"  # --verbosity: what the entry point shows and logs (lamina.console.LEVELS)
    # Kaniko's executor flags
    labels: tuple[tuple[str, str], ...] = ()  # --label: added to the image config's Labels
    ignore_paths: tuple[str, ...] = ()  # --ignore-path (and /var/run with --ignore-var-run): never in a layer
    insecure_pull: bool = False  # --insecure-pull: plain HTTP for a registry whose HTTPS fails
    push_ignore_immutable_tag_errors: bool = False
    push_permission_check: bool = True  # checked before the build (not with --skip-push-permission-check)
    image_fs_extract_retry: int = 0  # --image-fs-extract-retry
    single_snapshot: bool = False  # --single-snapshot: the target stage's changes in one layer
    log_format: str = "color"  # --log-format: text, color or json
    log_timestamp: bool = False  # --log-timestamp
    git_options: str | None = None  # --git: branch=...,single-branch=...,recurse-submodules=... for a git context
    # a context or Dockerfile to fetch first (lamina.build.context_source): then ``context`` and ``dockerfile`` are
    # resolved against what was fetched, and ``context_sub_path`` applies inside it
    context_source: str | None = None  # tar://, git://, https://, gs://, s3://
    context_sub_path: str | None = None
    dockerfile_url: str | None = None  # --dockerfile http(s)://...
    # attestations (lamina.attest), attached as BuildKit attaches them: SLSA provenance (mode "min" or "max", None:
    # off; SLSA version "v1" or "v0.2") and an SPDX SBOM; the CI run they record (lamina.attest.ci_run)
    provenance_mode: str | None = "min"
    provenance_version: str = "v1"
    sbom: bool = False
    ci_builder_id: str = ""
    ci_vcs: tuple[tuple[str, str], ...] = ()
    ci_facts: tuple[tuple[str, str], ...] = ()

    @property
    def build_arg_map(self) -> dict[str, str]:
        return dict(self.build_args)


SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """``"512M"``, ``"1g"``, ``"1GiB"``, ``"4096"`` in bytes; ValueError for anything else."""
    value = text.strip().lower().removesuffix("ib").removesuffix("b")
    number, unit = (value[:-1], value[-1]) if value and value[-1] in SIZE_UNITS else (value, "")
    if not number.isdigit():
        raise ValueError(f"{text!r} is not a size (a number of bytes, or with K, M, G, T)")
    return int(number) * SIZE_UNITS[unit]


def default_mount_cache_dir(environ: Mapping[str, str]) -> Path:
    """``$XDG_CACHE_HOME/lamina/mounts``, else ``~/.cache/lamina/mounts``."""
    xdg = environ.get("XDG_CACHE_HOME", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "lamina" / "mounts"
    home = environ.get("HOME") or os.path.expanduser("~")
    return Path(home) / ".cache" / "lamina" / "mounts"


def parse_ssh(items: Sequence[str]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``--ssh`` values, as ``docker buildx build --ssh`` takes them: ``ID`` alone (the agent of $SSH_AUTH_SOCK),
    ``ID=SOCKET`` (an agent's socket) or ``ID=KEY[,KEY...]`` (private key files, served by an agent lamina starts).
    Items may also arrive split at commas (``LAMINA_SSH=default,deploy=/k1,/k2``): one without ``=`` that holds a
    ``/`` is one more path of the item before. The last item for an id wins."""
    out: dict[str, tuple[str, ...]] = {}
    last: str | None = None
    for item in items:
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            ssh_id, eq, path = part.partition("=")
            if not eq and "/" in part and last is not None:
                out[last] = (*out[last], part)
                continue
            ssh_id = ssh_id.strip()
            if not ssh_id or "/" in ssh_id:
                raise OptionsError(f"--ssh {item}: expected ID, ID=SOCKET or ID=KEY[,KEY...], got {part!r}")
            if eq and not path.strip():
                raise OptionsError(f"--ssh {item}: {ssh_id}= names no socket or key file")
            out[ssh_id] = (path.strip(),) if eq else ()
            last = ssh_id
    return tuple(out.items())


def parse_secrets(items: Sequence[str]) -> tuple[tuple[str, str, str], ...]:
    """``--secret`` values, as ``docker buildx build --secret`` takes them: ``id=ID,src=PATH`` (also ``source=``),
    ``id=ID,env=VAR``, ``type=file|env`` to say which (``type=env,src=VAR`` names a variable), and ``id=ID`` alone:
    the variable ``ID`` when it is set, else the file ``ID`` (decided when the RUN reads it: kind ``auto``).

    Fields may also arrive split at commas (``LAMINA_SECRET=id=a,src=f,id=b,env=B``): a value with a key the
    previous secret already has starts the next secret; otherwise it completes the previous one."""
    groups: list[dict[str, str]] = []
    for item in items:
        if not item.strip():
            continue
        fields: dict[str, str] = {}
        for field_text in item.split(","):
            key, eq, value = field_text.partition("=")
            key = key.strip().lower()
            if not eq or key not in ("type", "id", "src", "source", "env"):
                raise OptionsError(f"--secret {item}: unexpected field {field_text!r} "
                                   "(expected id=ID with src=PATH or env=VARIABLE, and optionally type=file|env)")
            key = "src" if key == "source" else key
            if key in fields:
                raise OptionsError(f"--secret {item}: {key}= given twice")
            fields[key] = value.strip()
        current = groups[-1] if groups else None
        if current is None or any(k in current for k in fields):
            groups.append(fields)
        else:
            current.update(fields)
    out: dict[str, tuple[str, str, str]] = {}
    for group in groups:
        secret_id = group.get("id", "")
        shown = ",".join(f"{k}={v}" for k, v in group.items())
        if not secret_id:
            raise OptionsError(f"--secret {shown}: id=ID is missing")
        kind = group.get("type", "")
        if kind and kind not in SECRET_KINDS:
            raise OptionsError(f"--secret {shown}: type={kind}: expected file or env")
        src, env = group.get("src", ""), group.get("env", "")
        if src and env:
            raise OptionsError(f"--secret {shown}: give src= or env=, not both")
        if kind == "env":
            out[secret_id] = (secret_id, "env", env or src or secret_id)
        elif kind == "file" or src:
            out[secret_id] = (secret_id, "file", src or secret_id)
        elif env:
            out[secret_id] = (secret_id, "env", env)
        else:
            out[secret_id] = (secret_id, "auto", secret_id)
    return tuple(out.values())
