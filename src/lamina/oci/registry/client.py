"""The registry client: the only module of lamina that speaks HTTP (Docker Registry HTTP API v2 / OCI distribution).

One :class:`RegistryClient` holds one ``requests.Session`` and, for its lifetime, what it learned about each registry:
whether it speaks plain HTTP, its authentication challenge, Bearer tokens per scope, Basic credentials. Nothing is
kept at module level.

Reads (:meth:`RegistryClient.resolve_image`, :meth:`RegistryClient.fetch_blob`) of Docker Hub images go through the
configured mirrors first, then Docker Hub itself (``registry-1.docker.io``); :meth:`RegistryClient.fetch_manifest`
(used for the layer cache) never does. Everything fetched is checked against its digest. Uploads skip blobs the
registry already has, mount blobs from other repositories of the same registry when asked to, and send blobs
monolithically or in ``PATCH`` chunks. :meth:`RegistryClient.list_tags` and :meth:`RegistryClient.delete_manifest`
serve cache maintenance.

Failures are retried with exponential backoff and jitter (base ``RegistryConfig.backoff_seconds``): connection errors,
timeouts, 429 (honouring ``Retry-After``) and 5xx, for every request that may be repeated safely. An upload that
fails resumes where the registry says it stands (``GET`` of the session: ``Range: 0-N``), finishes if the registry
turns out to have stored the blob already (its answer was lost), or starts over when the session is gone. A download
that breaks off resumes with ``Range: bytes=N-`` (or starts over if the registry ignores ranges); content that does
not match its digest is fetched again, then refused with :class:`~lamina.errors.DigestMismatch`, and never reaches
its destination.

Bearer tokens are requested per set of scopes: ``repository:<name>:pull`` to read, ``repository:<name>:pull,push`` to
write, ``repository:<name>:delete`` to delete (what distribution's access controller asks for a ``DELETE``), and for a
cross-repository mount one token carrying ``repository:<dest>:pull,push`` and ``repository:<source>:pull``.

Errors are :mod:`lamina.errors` types that name the registry, the repository, the HTTP status and what to do. Tokens
and passwords only ever travel in ``Authorization`` headers: never in a message, a log line or a ``repr``.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import random
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Self, TypeVar
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from lamina.errors import AuthError, DigestMismatch, ImmutableTag, NotFound, RegistryError, RegistryUnreachable
from lamina.oci.digest import DigestingWriter, compute_digest
from lamina.oci.model import ACCEPT_MANIFESTS, INDEX_TYPES, MANIFEST_TYPES, Descriptor, Manifest, Platform
from lamina.oci.reference import DOCKER_HUB, DOCKER_HUB_ALIASES, Reference
from lamina.oci.registry.auth import Challenge as AuthChallenge
from lamina.oci.registry.auth import (
    ChallengeError,
    basic_authorization,
    find_challenge,
    parse_token_response,
    parse_www_authenticate,
    pull_scope,
    push_scope,
    token_request,
)
from lamina.oci.registry.credentials import (
    Credentials,
    config_path,
    configured_helper,
    credentials_from_environment,
    lookup_credentials,
)
from lamina.progress import NullProgress, Progress

log = logging.getLogger(__name__)
_T = TypeVar("_T")

DOCKER_HUB_API_HOST = "registry-1.docker.io"
USER_AGENT = "lamina/0.1 (+https://github.com/lamina)"
DOWNLOAD_CHUNK = 64 << 10  # small reads: what arrived before a connection broke is kept, and resumed after
MAX_MANIFEST_BYTES = 4 << 20
MAX_CONFIG_BYTES = 64 << 20
BACKOFF_SECONDS = 0.5  # first retry delay; doubled per attempt, with jitter
MAX_BACKOFF_SECONDS = 30.0
MAX_RETRY_AFTER_SECONDS = 30.0
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_LOOPBACK_HOSTS = frozenset({"localhost", "[::1]", "::1"})
_OCTET_STREAM = "application/octet-stream"
_PULL = "pull"
_PUSH = "push"
_DELETE = "delete"
MAX_TAG_PAGES = 10_000  # a registry that keeps sending rel="next" links is broken; stop somewhere
DELETE_DISABLED_HINT = "the registry does not allow deletion: enable it (distribution: storage.delete.enabled: true)"


@dataclass(frozen=True)
class RegistryConfig:
    insecure_registries: tuple[str, ...] = ()  # hosts spoken to over plain HTTP
    skip_tls_verify: bool = False
    registry_mirrors: tuple[str, ...] = ()  # "host[:port][/prefix]" used for docker.io images, in order, then docker.io
    docker_config_dir: str | None = None  # else $DOCKER_CONFIG or ~/.docker
    chunk_size: int = 8 * 1024 * 1024  # blobs larger than this are pushed in PATCH chunks
    timeout: float = 60.0
    retries: int = 3  # reads (GET, HEAD): --image-download-retry
    push_retries: int = 3  # writes (POST, PUT, PATCH, DELETE): --push-retry
    backoff_seconds: float = BACKOFF_SECONDS  # base of the exponential backoff between retries (jittered)
    # per registry host: a CA bundle to trust, a client certificate and key (mTLS), no verification at all
    ca_certificates: tuple[tuple[str, str], ...] = ()
    client_certificates: tuple[tuple[str, str, str], ...] = ()
    skip_tls_verify_registries: tuple[str, ...] = ()
    # --registry-map ORIG=NEW[;NEW2]: pull images of ORIG from NEW first (any registry, Kaniko's semantics)
    registry_maps: tuple[tuple[str, str], ...] = ()
    skip_default_registry_fallback: bool = False  # mirrors and maps only: never fall back to the origin
    http_fallback: bool = False  # any registry whose HTTPS fails is spoken to over plain HTTP (--insecure-pull)
    environ: Mapping[str, str] | None = field(default=None, repr=False, compare=False)  # CI credentials; None: os


@dataclass(frozen=True)
class ResolvedImage:
    reference: Reference  # where it was actually fetched from (the mirror host if a mirror served it)
    manifest_digest: str  # digest of the platform manifest (not the index)
    manifest: Manifest
    config_bytes: bytes
    config: dict[str, Any]


@dataclass(frozen=True)
class FetchedManifest:
    """A manifest or index as the registry served it, verified against its digest."""

    digest: str  # sha256 of ``body``
    media_type: str  # from the body's ``mediaType``, else the Content-Type header
    body: bytes


@dataclass
class _Token:
    header: str = field(repr=False)
    expires_at: float


class _ContentError(Exception):
    """A download broke off in the middle (resumed by :meth:`RegistryClient.fetch_blob`)."""


class _PartialDownload:
    """A download in progress: the file it goes to and the running digest of what it holds."""

    def __init__(self, f: BinaryIO) -> None:
        self._file = f
        self.writer = DigestingWriter(f)

    @property
    def size(self) -> int:
        return self.writer.size

    def restart(self) -> None:
        """Throw away what arrived: the next request fetches the whole blob."""
        self._file.seek(0)
        self._file.truncate()
        self.writer = DigestingWriter(self._file)


@dataclass
class _UploadState:
    """Where one blob upload stands, as far as the client knows; updated step by step so that a failure can be
    recovered from where it happened."""

    location: str | None = None  # the upload session (None: start a new one)
    offset: int = 0  # bytes the registry has confirmed
    finishing: bool = False  # the closing PUT was sent: the blob may exist although its answer was lost
    retry_after: float | None = None  # the registry's Retry-After for the last failure
    recoverable: bool = False  # the last failure is an answer worth retrying (5xx, 429, a lost session)
    lost_session: bool = False  # the session is gone (404/416/400 upload codes, digest invalid): start anew


class RegistryClient:
    """Pulls and pushes images. One per build; it may be shared by threads (parallel blob transfers)."""

    def __init__(self, config: RegistryConfig, progress: Progress | None = None) -> None:
        self._config = config
        self._progress: Progress = progress if progress is not None else NullProgress()
        self._session = requests.Session()
        self._session.headers["User-Agent"] = USER_AGENT
        self._session.verify = not config.skip_tls_verify
        if config.skip_tls_verify or config.skip_tls_verify_registries:
            # asked for: no warning per request (urllib3's filter is process-wide, as the flag's intent)
            warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
        self._plain_http: set[str] = {_api_host(host) for host in config.insecure_registries}
        self._challenges: dict[str, AuthChallenge] = {}
        self._tokens: dict[tuple[str, tuple[str, ...]], _Token] = {}  # (host, scopes) -> token
        self._basic: dict[str, str] = {}
        self._credentials: dict[str, Credentials | None] = {}
        self._lock = threading.RLock()
        self._mirrors = tuple(_parse_mirror(m) for m in config.registry_mirrors if m.strip())
        for host, plain in self._mirrors:
            if plain:
                self._plain_http.add(host.split("/", 1)[0])

    # -- context manager ------------------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._session.close()

    # -- pulling --------------------------------------------------------------------------------------------------

    def resolve_image(self, ref: Reference, platform: Platform,
                      known_config: Callable[[Descriptor], bytes | None] | None = None) -> ResolvedImage:
        """The manifest and config of ``ref`` for ``platform`` (an index is resolved to the platform's manifest).

        ``known_config`` may supply the config blob from elsewhere (the layer cache keeps base image configs in
        manifests); what it gives is used only if it matches the descriptor's digest and size."""
        return self._through_mirrors(ref, lambda source: self._resolve_image(source, platform, known_config))

    def fetch_blob(self, ref: Reference, descriptor: Descriptor, dest: Path) -> None:
        """Download a blob to ``dest`` (through ``dest.tmp``, renamed when complete and verified)."""
        self._through_mirrors(ref, lambda source: self._fetch_blob(source, descriptor, dest))

    def fetch_blob_bytes(self, ref: Reference, descriptor: Descriptor) -> bytes:
        """A small blob (an image config) in memory, verified; larger than 64 MiB is refused."""
        return self._fetch_small_blob(ref, descriptor, MAX_CONFIG_BYTES)

    def blob_exists(self, ref: Reference, digest: str) -> bool:
        """Does the repository of ``ref`` hold blob ``digest``? (HEAD)"""
        return self._blob_exists(ref, digest, _PULL)

    def fetch_manifest(self, ref: Reference, *, accept: str = ACCEPT_MANIFESTS) -> FetchedManifest | None:
        """The manifest (or index) ``ref`` names, by digest if it has one, else by tag; ``None`` if the registry
        answers 404 (no such tag, digest or repository).

        The body is checked against the digest it was fetched by and against ``Docker-Content-Digest``. Unlike
        :meth:`resolve_image`, this never goes through mirrors: it reads exactly the registry ``ref`` names (a cache
        repository, say). ``accept`` is sent as the ``Accept`` header.
        """
        fetched = self._get_manifest(ref, ref.digest or ref.tag or "latest", accept=accept, missing_ok=True)
        if fetched is None:
            return None
        body, media_type, digest = fetched
        return FetchedManifest(digest, media_type, body)

    def list_tags(self, ref: Reference, *, page_size: int | None = None) -> list[str]:
        """The tags of ``ref``'s repository (its tag and digest are ignored), in the registry's order (the spec says
        lexical; docker-registry 2.8 does not sort); ``[]`` when the repository does not exist.

        ``page_size`` is sent as ``n``; whatever it is, the registry may paginate, and every ``Link: <...>;
        rel="next"`` (relative or absolute) is followed until there is none.
        """
        if page_size is not None and page_size < 1:
            raise ValueError(f"page_size must be positive, not {page_size}")
        path = f"/v2/{ref.repository}/tags/list"
        params: dict[str, str] | None = {"n": str(page_size)} if page_size is not None else None
        tags: list[str] = []
        seen_tags: set[str] = set()
        seen_pages: set[str] = set()
        for _ in range(MAX_TAG_PAGES):
            resp = self._request("GET", ref, path, action=_PULL, headers={"Accept": "application/json"},
                                 params=params)
            with resp:
                if resp.status_code == 404:
                    return tags
                if resp.status_code != 200:
                    raise self._status_error(resp, ref, f"listing the tags of {ref.name} failed", _PULL)
                page = _tags_page(resp.content)
                next_link = _next_link(resp.headers.get("Link", ""))
                url = resp.url
            if page is None:
                raise RegistryError(f"listing the tags of {ref.name} failed: the answer is not a tag list",
                                    registry=ref.registry, repository=ref.repository, status=200,
                                    hint="check that the registry speaks the distribution API")
            for tag in page:
                if tag not in seen_tags:
                    seen_tags.add(tag)
                    tags.append(tag)
            if next_link is None:
                return tags
            path = urljoin(url, next_link)
            params = None  # the link carries the whole query
            if path in seen_pages:
                log.warning("%s sent the tag page %s twice; stopping there", ref.registry, path)
                return tags
            seen_pages.add(path)
        log.warning("%s sent more than %d tag pages; stopping there", ref.registry, MAX_TAG_PAGES)
        return tags

    # -- pushing --------------------------------------------------------------------------------------------------

    def push_blob(self, ref: Reference, descriptor: Descriptor, path: Path, *,
                  mount_from: Reference | None = None) -> None:
        """Upload the blob in ``path`` unless the repository already has it, or (with ``mount_from``) it can be
        mounted from that repository of the same registry. See :meth:`ensure_blob`."""
        if mount_from is not None:
            self.ensure_blob(ref, descriptor, sources=(mount_from,), path=path)
            return
        if self._blob_exists(ref, descriptor.digest, _PUSH):
            log.debug("%s already has %s", ref.name, descriptor.digest)
            return
        self._upload_file(ref, descriptor, path)

    def ensure_blob(self, dest: Reference, descriptor: Descriptor, *, sources: Sequence[Reference],
                    path: Path | None) -> None:
        """Make sure ``dest``'s repository holds the blob ``descriptor``, moving as few bytes as possible:

        1. nothing to do if it already has it (HEAD);
        2. else mount it from each of ``sources`` on the same registry, in order (sources on other registries, or
           ``dest``'s own repository, are skipped);
        3. else upload it from ``path``.

        Without ``path`` (the caller has no local copy) a blob that could not be mounted raises
        :class:`RegistryError`: this method never downloads, so the caller decides whether to fetch the blob
        (:meth:`fetch_blob`) and call again with a path.
        """
        if self._blob_exists(dest, descriptor.digest, _PUSH):
            log.debug("%s already has %s", dest.name, descriptor.digest)
            return
        tried: list[str] = []
        for source in sources:
            if source.registry != dest.registry or source.repository == dest.repository \
                    or source.repository in tried:
                continue
            tried.append(source.repository)
            if self.mount_blob(dest, descriptor.digest, source):
                log.debug("mounted %s into %s from %s", descriptor.digest, dest.name, source.repository)
                return
        if path is not None:
            self._upload_file(dest, descriptor, path)
            return
        where = f" and could not be mounted from {', '.join(tried)}" if tried else ""
        raise RegistryError(f"blob {descriptor.digest} is not in {dest.name}{where}, and there is no local copy"
                            " to upload", registry=dest.registry, repository=dest.repository,
                            hint="the source image lost the blob, or this account may not read it; pull the"
                                 " source image again or push the blob from a local copy")

    def check_push(self, ref: Reference) -> None:
        """Does the registry let this account push to ``ref``'s repository? Starts a blob upload (as Kaniko's
        permission check does, before a long build) and cancels it; raises the error a push would get."""
        resp = self._request("POST", ref, f"/v2/{ref.repository}/blobs/uploads/", action=_PUSH,
                             headers={"Content-Length": "0"})
        with resp:
            if resp.status_code not in (201, 202):
                raise self._status_error(resp, ref, f"the push permission check of {ref.name} failed", _PUSH)
            location = resp.headers.get("Location")
            url = resp.url
        if location:
            self._cancel_upload(ref, urljoin(url, location))

    def mount_blob(self, dest: Reference, digest: str, source: Reference) -> bool:
        """Mount blob ``digest`` from ``source``'s repository into ``dest``'s (``POST .../blobs/uploads/?mount=
        <digest>&from=<source>``) without transferring it; ``True`` if the registry did (201).

        ``False`` when ``source`` is on another registry (mounts only work within one), when the registry started a
        plain upload instead (202: it does not know the blob in ``source``, or does not support mounts; that upload
        is cancelled), or when it refused the mount for lack of access (401/403: the account may not read
        ``source``). Other failures raise :class:`RegistryError`. One Bearer token carries push on ``dest`` and pull
        on ``source``.
        """
        if source.registry != dest.registry:
            return False
        if source.repository == dest.repository:
            return self._blob_exists(dest, digest, _PUSH)
        scopes = (push_scope(dest.repository), pull_scope(source.repository))
        try:
            resp = self._request("POST", dest, f"/v2/{dest.repository}/blobs/uploads/", action=_PUSH,
                                 scopes=scopes, params={"mount": digest, "from": source.repository},
                                 headers={"Content-Length": "0"})  # a repeated mount is harmless
        except AuthError as e:
            log.info("mounting %s into %s from %s was refused (%s); it has to be uploaded", digest, dest.name,
                     source.repository, e)
            return False
        with resp:
            status = resp.status_code
            location = resp.headers.get("Location")
            if status == 201:
                return True
            if status in (401, 403):
                log.info("mounting %s into %s from %s was refused (HTTP %d)", digest, dest.name, source.repository,
                         status)
                return False
            if status != 202:
                raise self._status_error(resp, dest, f"mounting blob {digest} from {source.repository} failed",
                                         _PUSH, blob=digest)
            url = resp.url
        log.debug("%s could not mount %s from %s; cancelling the upload it started", dest.registry, digest,
                  source.repository)
        if location:
            self._cancel_upload(dest, urljoin(url, location))
        return False

    def delete_manifest(self, ref: Reference, digest: str) -> None:
        """Delete the manifest ``digest`` from ``ref``'s repository, and with it every tag pointing to it
        (``DELETE /v2/<name>/manifests/<digest>``; the spec allows deleting by digest only). A manifest that is
        already gone (404) is fine.

        A registry that does not allow deletion answers 405: that raises :class:`RegistryError` with ``status``
        405 and :data:`DELETE_DISABLED_HINT`. The Bearer scope asked for is ``repository:<name>:delete``.
        """
        if not _is_digest(digest):
            raise ValueError(f"{digest!r} is not a sha256 digest; manifests can only be deleted by digest")
        resp = self._request("DELETE", ref, f"/v2/{ref.repository}/manifests/{digest}", action=_DELETE)
        with resp:
            if resp.status_code in (200, 202, 204, 404):
                return
            if resp.status_code == 405:
                detail = _error_text(resp)
                raise RegistryError(f"deleting the manifest {digest} of {ref.name} was refused",
                                    registry=ref.registry, repository=ref.repository, status=405,
                                    hint=DELETE_DISABLED_HINT + (f" ({detail})" if detail else ""))
            raise self._status_error(resp, ref, f"deleting the manifest {digest} of {ref.name} failed", _DELETE)

    def _upload_file(self, ref: Reference, descriptor: Descriptor, path: Path) -> None:
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed by the with below
        except OSError as e:
            raise RegistryError(f"cannot read blob {descriptor.digest} from {path}: {e.strerror}",
                                registry=ref.registry, repository=ref.repository) from None
        with f:
            def read_at(offset: int, length: int) -> bytes:
                f.seek(offset)
                return f.read(length)

            self._upload(ref, descriptor.digest, descriptor.size, read_at)

    def push_blob_bytes(self, ref: Reference, data: bytes, media_type: str) -> Descriptor:
        """Upload ``data`` (a config blob, say) and return its descriptor."""
        descriptor = Descriptor(media_type, compute_digest(data), len(data))
        if not self._blob_exists(ref, descriptor.digest, _PUSH):
            self._upload(ref, descriptor.digest, len(data), lambda offset, length: data[offset:offset + length])
        return descriptor

    def push_manifest(self, ref: Reference, body: bytes, media_type: str) -> str:
        """PUT a manifest or index to ``ref``'s tag (or its digest when it has no tag); return its digest."""
        digest = compute_digest(body)
        if ref.digest is not None and ref.digest != digest:
            raise DigestMismatch(f"cannot push the manifest as {ref}: its content has digest {digest}",
                                 registry=ref.registry, repository=ref.repository,
                                 hint="push it by tag, or by its own digest")
        target = ref.tag if ref.tag is not None else digest
        resp = self._request("PUT", ref, f"/v2/{ref.repository}/manifests/{target}", action=_PUSH,
                             headers={"Content-Type": media_type}, data=body)
        with resp:
            if resp.status_code not in (200, 201, 202):
                raise self._status_error(resp, ref, f"pushing the manifest of {ref} failed", _PUSH, manifest=target)
            served = resp.headers.get("Docker-Content-Digest")
        if served and served != digest:
            raise DigestMismatch(f"the registry stored the manifest of {ref} as {served}, but its digest is {digest}",
                                 registry=ref.registry, repository=ref.repository, status=resp.status_code,
                                 hint="the registry rewrote the manifest; report this to its operators")
        return digest

    # -- internals: images ----------------------------------------------------------------------------------------

    def _pull_sources(self, ref: Reference) -> list[str]:
        """Where to try pulling ``ref`` from before its own registry: --registry-map entries for its registry,
        then --registry-mirror entries for docker.io."""
        sources: list[str] = []
        for original, mapped in self._config.registry_maps:
            if _api_host(original) == _api_host(ref.registry) or (original in DOCKER_HUB_ALIASES and ref.is_docker_hub):
                sources += [m for m in (_parse_mirror(x)[0] for x in mapped.split(";")) if m]
        if ref.registry == DOCKER_HUB:
            sources += [mirror for mirror, _ in self._mirrors]
        return sources

    def _through_mirrors(self, ref: Reference, action: Callable[[Reference], _T]) -> _T:
        sources = self._pull_sources(ref)
        if not sources:
            return action(ref)
        last: RegistryError | None = None
        for mirror in sources:
            source = _on_mirror(ref, mirror)
            try:
                return action(source)
            except DigestMismatch:
                raise
            except RegistryError as e:
                last = e
                log.warning("mirror %s could not serve %s (%s); trying the next source", mirror, ref, e)
        if self._config.skip_default_registry_fallback and last is not None:
            raise RegistryError(f"no mirror could serve {ref} and falling back to {ref.registry} is disabled: {last}",
                                registry=ref.registry, repository=ref.repository, status=last.status,
                                hint="check the mirrors, or drop --skip-default-registry-fallback")
        return action(ref)

    def _resolve_image(self, ref: Reference, platform: Platform,
                       known_config: Callable[[Descriptor], bytes | None] | None) -> ResolvedImage:
        body, media_type, digest = self._fetch_manifest(ref, ref.digest or ref.tag or "latest")
        if _is_index(media_type):
            chosen = _pick_platform(body, platform, ref)
            body, media_type, digest = self._fetch_manifest(ref, chosen.digest)
            if _is_index(media_type):
                raise RegistryError(f"the index of {ref} points to another index for {platform}; nested indexes are"
                                    " not supported", registry=ref.registry, repository=ref.repository)
        if media_type not in MANIFEST_TYPES:
            raise RegistryError(f"{ref} has a manifest of type {media_type or 'unknown'}, which lamina cannot use",
                                registry=ref.registry, repository=ref.repository,
                                hint="only OCI and Docker schema 2 images are supported; re-push the image with a"
                                     " current tool")
        try:
            manifest = Manifest.from_bytes(body, media_type)
        except (ValueError, KeyError, TypeError) as e:
            raise RegistryError(f"the manifest {digest} of {ref} is malformed ({e!r})", registry=ref.registry,
                                repository=ref.repository) from None
        config_bytes = known_config(manifest.config) if known_config is not None else None
        if config_bytes is None or len(config_bytes) != manifest.config.size or \
                compute_digest(config_bytes) != manifest.config.digest:
            config_bytes = self._fetch_small_blob(ref, manifest.config, MAX_CONFIG_BYTES)
        try:
            config = json.loads(config_bytes)
        except ValueError:
            config = None
        if not isinstance(config, dict):
            raise RegistryError(f"the image config {manifest.config.digest} of {ref} is not a JSON object",
                                registry=ref.registry, repository=ref.repository)
        found = {"os": config.get("os", ""), "architecture": config.get("architecture", ""),
                 "variant": config.get("variant", "")}
        if found["os"] and not platform.matches(found):
            log.warning("%s is for %s, not the requested %s", ref, _platform_text(found), platform)
        return ResolvedImage(ref, digest, manifest, config_bytes, config)

    def _fetch_manifest(self, ref: Reference, target: str) -> tuple[bytes, str, str]:
        """(body, media type, digest) of the manifest or index ``target`` (a tag or a digest)."""
        fetched = self._get_manifest(ref, target, accept=ACCEPT_MANIFESTS, missing_ok=False)
        assert fetched is not None
        return fetched

    def _get_manifest(self, ref: Reference, target: str, *, accept: str,
                      missing_ok: bool) -> tuple[bytes, str, str] | None:
        """Like :meth:`_fetch_manifest`; with ``missing_ok``, ``None`` for a 404 instead of :class:`NotFound`."""
        resp = self._request("GET", ref, f"/v2/{ref.repository}/manifests/{target}", action=_PULL,
                             headers={"Accept": accept})
        with resp:
            if resp.status_code == 404 and missing_ok:
                return None
            if resp.status_code != 200:
                raise self._status_error(resp, ref, f"fetching the manifest {target} of {ref.name} failed", _PULL,
                                         manifest=target)
            body = resp.content  # read (and retried when it breaks off) by _send
        if len(body) > MAX_MANIFEST_BYTES:
            raise RegistryError(f"the manifest of {ref} is larger than {MAX_MANIFEST_BYTES} bytes (4 MiB), the most "
                                "registries accept", registry=ref.registry, repository=ref.repository,
                                status=resp.status_code,
                                hint="this is not a normal image manifest: check the reference, or ask the "
                                     "image's publisher to split it")
        digest = compute_digest(body)
        served = resp.headers.get("Docker-Content-Digest", "")
        for expected in (target, served):
            if expected.startswith("sha256:") and expected != digest:
                raise DigestMismatch(f"the manifest {target} of {ref.name} has digest {digest}, expected {expected}",
                                     registry=ref.registry, repository=ref.repository,
                                     hint="the registry or a proxy altered it; try again or use another mirror")
        media_type = _manifest_media_type(body, resp.headers.get("Content-Type", ""))
        return body, media_type, digest

    def _fetch_small_blob(self, ref: Reference, descriptor: Descriptor, limit: int) -> bytes:
        if descriptor.size > limit:
            raise RegistryError(f"blob {descriptor.digest} of {ref} is {descriptor.size} bytes, more than the"
                                f" {limit} allowed here", registry=ref.registry, repository=ref.repository)
        attempt = 0
        while True:
            resp = self._request("GET", ref, f"/v2/{ref.repository}/blobs/{descriptor.digest}", action=_PULL)
            with resp:
                if resp.status_code != 200:
                    raise self._status_error(resp, ref, f"fetching blob {descriptor.digest} failed", _PULL,
                                             blob=descriptor.digest)
                data = resp.content
            digest = compute_digest(data)
            if digest == descriptor.digest and len(data) == descriptor.size:
                return data
            error = DigestMismatch(f"blob {descriptor.digest} of {ref.name} arrived as {len(data)} bytes with"
                                   f" digest {digest} (expected {descriptor.size} bytes)", registry=ref.registry,
                                   repository=ref.repository, hint="try again, or use another mirror")
            if attempt >= self._config.retries:
                raise error
            delay = _backoff(attempt, self._config.backoff_seconds)
            log.info("%s; fetching it again in %.1fs", error, delay)
            time.sleep(delay)
            attempt += 1

    # -- internals: blobs -----------------------------------------------------------------------------------------

    def _fetch_blob(self, ref: Reference, descriptor: Descriptor, dest: Path) -> None:
        """Download into ``dest.tmp``; a download that breaks off is resumed (``Range: bytes=N-``) where it stopped,
        or started over if the registry ignores the range; content that does not match the digest is fetched once
        more from scratch, then refused. Only verified content is renamed to ``dest``."""
        tmp = dest.with_name(dest.name + ".tmp")
        dest.parent.mkdir(parents=True, exist_ok=True)
        key = f"pull {descriptor.digest}"
        description = f"pull {_short(descriptor.digest)}"
        failures = 0
        self._progress.transfer_started(key, description, descriptor.size)
        try:
            with open(tmp, "wb") as f:
                part = _PartialDownload(f)
                while True:
                    try:
                        self._download(ref, descriptor, part, key)
                    except _ContentError as e:
                        if failures >= self._config.retries:
                            raise RegistryUnreachable(f"the download of blob {descriptor.digest} of {ref.name} broke"
                                                      f" off ({e})", registry=ref.registry,
                                                      repository=ref.repository,
                                                      hint="check the network and try again") from None
                        delay = _backoff(failures, self._config.backoff_seconds)
                        log.info("download of %s broke off after %d bytes (%s); resuming in %.1fs",
                                 descriptor.digest, part.size, e, delay)
                        time.sleep(delay)
                        failures += 1
                        continue
                    if part.size == descriptor.size and part.writer.digest == descriptor.digest:
                        break
                    error = DigestMismatch(f"blob {descriptor.digest} of {ref.name} arrived as {part.size} bytes"
                                           f" with digest {part.writer.digest} (expected {descriptor.size} bytes)",
                                           registry=ref.registry, repository=ref.repository,
                                           hint="the registry or a proxy served other content; try again or use"
                                                " another mirror")
                    if failures >= self._config.retries:
                        raise error
                    delay = _backoff(failures, self._config.backoff_seconds)
                    log.info("%s; downloading it again in %.1fs", error, delay)
                    time.sleep(delay)
                    failures += 1
                    part.restart()
                    self._progress.transfer_started(key, description, descriptor.size)
            tmp.replace(dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            self._progress.transfer_finished(key)

    def _download(self, ref: Reference, descriptor: Descriptor, part: _PartialDownload, key: str) -> None:
        """Append the blob to ``part`` from byte ``part.size`` on (a ranged request unless it is 0), or all of it
        again if the registry answers a ranged request with the whole blob."""
        if part.size >= descriptor.size:
            return  # all there: the digest decides
        resumed = part.size
        headers = {"Range": f"bytes={resumed}-"} if resumed else None
        resp = self._request("GET", ref, f"/v2/{ref.repository}/blobs/{descriptor.digest}", action=_PULL,
                             headers=headers, stream=True)
        with resp:
            if resumed and resp.status_code == 206:
                served = resp.headers.get("Content-Range")
                if _content_range_start(served) != resumed:
                    log.info("%s answered a request for bytes %d- with %r; starting over", ref.registry, resumed,
                             served)
                    part.restart()
                    self._progress.transfer_started(key, f"pull {_short(descriptor.digest)}", descriptor.size)
                    raise _ContentError("the registry sent another range")
            elif resp.status_code == 200:
                if resumed:  # the registry ignores Range: everything comes again
                    log.info("%s ignores Range requests; downloading %s from the start", ref.registry,
                             descriptor.digest)
                    part.restart()
                    self._progress.transfer_started(key, f"pull {_short(descriptor.digest)}", descriptor.size)
            elif resumed and resp.status_code == 416:
                return  # nothing after what we have: the digest decides
            else:
                raise self._status_error(resp, ref, f"fetching blob {descriptor.digest} failed", _PULL,
                                         blob=descriptor.digest)
            try:
                for chunk in resp.iter_content(DOWNLOAD_CHUNK):
                    part.writer.write(chunk)
                    self._progress.transfer_advanced(key, len(chunk))
                    if part.size > descriptor.size:
                        break  # more than announced: the digest check fails, no need to read on
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.ContentDecodingError) as e:
                raise _ContentError(type(e).__name__) from None
        if part.size < descriptor.size:
            raise _ContentError(f"{part.size} of {descriptor.size} bytes")  # a short body, yet no error

    def _cancel_upload(self, ref: Reference, location: str) -> None:
        """Cancel an upload session (``DELETE`` its Location), best effort: the registry purges stale uploads
        anyway. distribution wants the ``delete`` action for this; a token without it just fails here."""
        try:
            resp = self._request("DELETE", ref, location, action=_DELETE, retry=False)
        except RegistryError as e:
            log.debug("cancelling the upload %s failed: %s", location, e)
            return
        with resp:
            if resp.status_code not in (200, 202, 204, 404):
                log.debug("cancelling the upload %s failed: HTTP %d", location, resp.status_code)

    def _blob_exists(self, ref: Reference, digest: str, action: str) -> bool:
        resp = self._request("HEAD", ref, f"/v2/{ref.repository}/blobs/{digest}", action=action)
        with resp:
            if resp.status_code == 200:
                return True
            if resp.status_code == 404:
                return False
            raise self._status_error(resp, ref, f"checking for blob {digest} failed", action)

    def _upload(self, ref: Reference, digest: str, size: int, read_at: Callable[[int, int], bytes]) -> None:
        """Upload a blob: ``POST`` a session, then one ``PUT`` (up to ``chunk_size``) or ``PATCH`` chunks and a
        closing ``PUT``. After a failure (broken connection, timeout, 429, 5xx), up to ``push_retries`` times and
        after a backoff (or the registry's ``Retry-After``):

        * if the closing ``PUT`` was sent, the registry may have stored the blob and only its answer was lost: a
          ``HEAD`` tells, and if it is there the upload is done;
        * else the session's ``Location`` is asked (``GET``) how much it holds (``Range: 0-N``) and the upload goes
          on from byte N+1 with the ``Location`` that answer gave;
        * a session the registry no longer knows (404, an invalid state, a refused range) or cannot report on, and
          a blob the registry found corrupt, start a new upload from scratch.
        """
        key = f"push {digest}"
        description = f"push {_short(digest)}"
        self._progress.transfer_started(key, description, size)
        state = _UploadState()
        failures = 0
        try:
            while True:
                state.finishing = state.recoverable = state.lost_session = False
                state.retry_after = None
                try:
                    self._upload_steps(ref, digest, size, read_at, key, state)
                    return
                except RegistryError as e:
                    retryable = isinstance(e, RegistryUnreachable) or state.recoverable
                    if not retryable or failures >= self._config.push_retries:
                        raise
                    delay = state.retry_after if state.retry_after is not None \
                        else _backoff(failures, self._config.backoff_seconds)
                    failures += 1
                    log.info("upload of %s to %s failed at byte %d (%s); recovering in %.1fs", digest, ref.name,
                             state.offset, e, delay)
                    time.sleep(delay)
                if state.finishing and self._blob_stored(ref, digest):
                    log.debug("%s stored %s although the answer was lost", ref.name, digest)
                    return
                resumed = None
                if state.location is not None and not state.lost_session:
                    resumed = self._upload_status(ref, digest, state.location)
                if resumed is None or resumed[1] > size:
                    state.location, state.offset = None, 0
                else:
                    state.location, state.offset = resumed
                    log.info("resuming the upload of %s at byte %d of %d", digest, state.offset, size)
                self._progress.transfer_started(key, description, size)
                if state.offset:
                    self._progress.transfer_advanced(key, state.offset)
        finally:
            self._progress.transfer_finished(key)

    def _upload_steps(self, ref: Reference, digest: str, size: int, read_at: Callable[[int, int], bytes], key: str,
                      state: _UploadState) -> None:
        """Upload from ``state`` on (a new session if it has none), recording in ``state`` what the registry
        confirmed, so that a failure can be resumed."""
        if state.location is None:
            resp = self._request("POST", ref, f"/v2/{ref.repository}/blobs/uploads/", action=_PUSH,
                                 headers={"Content-Length": "0"})  # a repeated POST only leaves a stale session
            state.offset = 0
            state.location = self._upload_location(resp, ref, digest, state, session=False)
        chunk_size = max(1, self._config.chunk_size)
        if size <= chunk_size and state.offset == 0:
            data = read_at(0, size)
            _check_read(data, size, digest, ref)
            state.finishing = True
            resp = self._request("PUT", ref, state.location, action=_PUSH, params={"digest": digest}, data=data,
                                 headers={"Content-Type": _OCTET_STREAM}, retry=False)
            self._progress.transfer_advanced(key, len(data))
        else:
            while state.offset < size:
                length = min(chunk_size, size - state.offset)
                data = read_at(state.offset, length)
                _check_read(data, length, digest, ref)
                resp = self._request("PATCH", ref, state.location, action=_PUSH, data=data, retry=False,
                                     headers={"Content-Type": _OCTET_STREAM,
                                              "Content-Range": f"{state.offset}-{state.offset + length - 1}"})
                state.location = self._upload_location(resp, ref, digest, state, session=True)
                state.offset += length
                self._progress.transfer_advanced(key, length)
            state.finishing = True
            resp = self._request("PUT", ref, state.location, action=_PUSH, params={"digest": digest},
                                 headers={"Content-Length": "0"}, retry=False)
        with resp:
            if resp.status_code not in (201, 204):
                self._note_upload_failure(resp, state, session=True)
                raise self._status_error(resp, ref, f"uploading blob {digest} failed", _PUSH, blob=digest)
            served = resp.headers.get("Docker-Content-Digest")
        if served and served != digest:
            raise DigestMismatch(f"the registry stored blob {digest} as {served}", registry=ref.registry,
                                 repository=ref.repository, status=resp.status_code)

    def _upload_location(self, resp: requests.Response, ref: Reference, digest: str, state: _UploadState, *,
                         session: bool) -> str:
        """The session ``Location`` of an accepted (202) upload step."""
        with resp:
            if resp.status_code != 202:
                self._note_upload_failure(resp, state, session=session)
                raise self._status_error(resp, ref, f"uploading blob {digest} failed", _PUSH, blob=digest)
            location = resp.headers.get("Location")
            if not location:
                raise RegistryError(f"uploading blob {digest} failed: the registry sent no upload Location",
                                    registry=ref.registry, repository=ref.repository, status=resp.status_code)
            return urljoin(resp.url, location)

    @staticmethod
    def _note_upload_failure(resp: requests.Response, state: _UploadState, *, session: bool) -> None:
        """Classify a failed upload answer for :meth:`_upload`: worth retrying, and whether the session is lost."""
        status = resp.status_code
        if status in RETRY_STATUSES or status >= 500:
            state.recoverable = True
            state.retry_after = _retry_after(resp.headers.get("Retry-After"))
            return
        if not session:
            return
        codes = _error_codes(resp)
        if status in (404, 416) or "BLOB_UPLOAD_UNKNOWN" in codes or "BLOB_UPLOAD_INVALID" in codes \
                or "DIGEST_INVALID" in codes:
            # the session expired, was cancelled (distribution cancels one resumed with a stale state), or the
            # registry received other bytes than sent: start again
            state.recoverable = state.lost_session = True

    def _blob_stored(self, ref: Reference, digest: str) -> bool:
        """Does the registry hold ``digest`` now? ``False`` when it cannot tell (the upload goes on then)."""
        try:
            return self._blob_exists(ref, digest, _PUSH)
        except RegistryError as e:
            log.debug("checking for %s after a failed upload failed: %s", digest, e)
            return False

    def _upload_status(self, ref: Reference, digest: str, location: str) -> tuple[str, int] | None:
        """``(Location, bytes received)`` of an upload session (``GET`` it: ``204`` with ``Range: 0-N``); ``None``
        if the session is gone or its state cannot be learned (the upload then starts over)."""
        try:
            resp = self._request("GET", ref, location, action=_PUSH, retry=False)
        except RegistryError as e:
            log.debug("asking for the state of the upload of %s failed: %s", digest, e)
            return None
        with resp:
            if resp.status_code not in (202, 204):
                log.debug("the upload session of %s is gone (HTTP %d)", digest, resp.status_code)
                return None
            received = _range_end(resp.headers.get("Range"))
            if received is None:
                log.debug("the upload session of %s reports no usable Range (%r)", digest,
                          resp.headers.get("Range"))
                return None
            next_location = resp.headers.get("Location")
            return (urljoin(resp.url, next_location) if next_location else location), received

    # -- internals: HTTP, auth, retries ---------------------------------------------------------------------------

    def _request(self, method: str, ref: Reference, path: str, *, action: str, headers: Mapping[str, str] | None = None,
                 data: bytes | None = None, params: Mapping[str, str] | None = None, stream: bool = False,
                 retry: bool = True, scopes: tuple[str, ...] | None = None) -> requests.Response:
        """Send a request for ``ref``'s repository, answering authentication challenges; ``path`` is ``/v2/...`` or
        an absolute URL (an upload Location). Returns any response but 401.

        A Bearer token is asked for ``scopes``, by default the one ``action`` needs on ``ref``'s repository."""
        host = _api_host(ref.registry)
        scope = scopes if scopes is not None else (_scope(action, ref.repository),)
        renewed = False
        while True:
            authorization, fresh = self._authorization(host, ref, scope)
            send_headers = dict(headers or {})
            if path.startswith(("http://", "https://")) and urlsplit(path).netloc.lower() != host.lower():
                authorization = None  # an upload Location on another host: it carries its own authorisation
            if authorization is not None:
                send_headers["Authorization"] = authorization
            resp = self._send(method, host, path, registry=ref.registry, repository=ref.repository,
                              headers=send_headers, data=data, params=params, stream=stream, retry=retry)
            if resp.status_code != 401:
                return resp
            resp.close()
            try:
                challenge = find_challenge(parse_www_authenticate(resp.headers.get("WWW-Authenticate", "")))
            except ChallengeError as e:
                raise AuthError(f"the registry asks for authentication with a WWW-Authenticate header lamina cannot"
                                f" read ({e})", registry=ref.registry, repository=ref.repository, status=401) from None
            if challenge is None:
                raise AuthError("the registry asks for authentication but offers neither Bearer nor Basic",
                                registry=ref.registry, repository=ref.repository, status=401)
            with self._lock:
                self._challenges[host] = challenge
                self._tokens.pop((host, scope), None)
            if authorization is None:
                if challenge.scheme == "basic":
                    self._basic_authorization(host, ref)
                continue
            if not fresh and not renewed:
                renewed = True  # a cached token may have expired early, or the scheme changed: answer anew once
                continue
            raise self._unauthorized(ref, action)

    def _authorization(self, host: str, ref: Reference, scope: tuple[str, ...]) -> tuple[str | None, bool]:
        """The Authorization header for the scopes ``scope`` on ``host`` (fetching a token if the host wants
        Bearer), and whether it was fetched just now."""
        with self._lock:
            token = self._tokens.get((host, scope))
            if token is not None and token.expires_at > time.monotonic():
                return token.header, False
            challenge = self._challenges.get(host)
            if challenge is None:
                return None, False
            if challenge.scheme == "basic":
                return self._basic.get(host), True  # nothing to renew: a 401 to it means the password is wrong
            token = self._fetch_token(host, ref, challenge, scope)
            self._tokens[(host, scope)] = token
            return token.header, True

    def _basic_authorization(self, host: str, ref: Reference) -> None:
        credentials = self._lookup_credentials(ref.registry)
        if credentials is None or not credentials.password:
            raise AuthError(f"{ref.name} needs credentials", registry=ref.registry, repository=ref.repository,
                            status=401, hint=self._login_hint(ref.registry))
        with self._lock:
            self._basic[host] = basic_authorization(credentials.username, credentials.password)

    def _fetch_token(self, host: str, ref: Reference, challenge: AuthChallenge, scope: tuple[str, ...]) -> _Token:
        credentials = self._lookup_credentials(ref.registry)
        if credentials is not None and credentials.registry_token:  # a ready token from config.json
            return _Token("Bearer " + credentials.registry_token, time.monotonic() + 300.0)
        try:
            request = token_request(challenge, list(scope), credentials)
        except ChallengeError as e:
            raise AuthError(f"cannot get a token for {ref.name}: {e}", registry=ref.registry,
                            repository=ref.repository) from None
        headers = {"Authorization": request.authorization} if request.authorization else {}
        realm_host = urlsplit(request.url).netloc
        resp = self._send(request.method, realm_host, request.url, registry=ref.registry, repository=ref.repository,
                          headers=headers, params=request.params or None, data=request.form or None, stream=False,
                          retry=True)
        with resp:
            if resp.status_code in (401, 403):
                if credentials is None:
                    raise AuthError(f"the token server {realm_host} wants credentials for {ref.name}",
                                    registry=ref.registry, repository=ref.repository, status=resp.status_code,
                                    hint=self._login_hint(ref.registry))
                raise AuthError(f"credentials for {ref.registry} were rejected by the token server {realm_host}",
                                registry=ref.registry, repository=ref.repository, status=resp.status_code,
                                hint=f"run `docker login {ref.registry}` again or fix the auths entry in"
                                     f" {self._config_path()}")
            if resp.status_code != 200:
                raise RegistryError(f"the token server {realm_host} failed", registry=ref.registry,
                                    repository=ref.repository, status=resp.status_code,
                                    hint=_error_text(resp) or "try again later")
            body = resp.content
        try:
            token = parse_token_response(body)
        except ChallengeError as e:
            raise AuthError(f"cannot use the answer of the token server {realm_host}: {e}", registry=ref.registry,
                            repository=ref.repository) from None
        # renew a little early; never cache for less than a few seconds
        lifetime = max(5.0, token.expires_in - 10.0)
        return _Token("Bearer " + token.value, time.monotonic() + lifetime)

    def _lookup_credentials(self, registry: str) -> Credentials | None:
        with self._lock:
            if registry not in self._credentials:
                found = lookup_credentials(registry, self._config.docker_config_dir)
                if found is None:
                    found = credentials_from_environment(registry, self._config.environ or os.environ)
                self._credentials[registry] = found
            return self._credentials[registry]

    def _config_path(self) -> Path:
        return config_path(self._config.docker_config_dir)

    def _login_hint(self, registry: str) -> str:
        helper = configured_helper(registry, self._config.docker_config_dir)
        if helper is not None:
            return (f"the credential helper {helper} (named in {self._config_path()}) has no credentials for "
                    f"{registry}; run `docker login {registry}` to store them there")
        return (f"no credentials for {registry} in {self._config_path()}; run `docker login {registry}` or add an"
                " auths entry")

    def _unauthorized(self, ref: Reference, action: str) -> AuthError:
        """The error for a 401 that came back although we answered the challenge."""
        credentials = self._lookup_credentials(ref.registry)
        verb = {_PUSH: "push to", _DELETE: "delete from"}.get(action, "pull from")
        if credentials is None:
            return AuthError(f"{verb} {ref.name} was refused without credentials: the repository does not exist or"
                             " needs credentials", registry=ref.registry, repository=ref.repository, status=401,
                             hint=self._login_hint(ref.registry))
        host = _api_host(ref.registry)
        challenge = self._challenges.get(host)
        if challenge is not None and challenge.scheme == "bearer":
            return AuthError(f"{verb} {ref.name} was refused for user {credentials.username!r}",
                             registry=ref.registry, repository=ref.repository, status=401,
                             hint=f"check that the account may {action} {ref.repository} (and that the repository"
                                  " exists)")
        return AuthError(f"credentials for {ref.registry} were rejected", registry=ref.registry,
                         repository=ref.repository, status=401,
                         hint=f"run `docker login {ref.registry}` again or fix the auths entry in {self._config_path()}")

    def _send(self, method: str, host: str, path: str, *, registry: str, repository: str,
              headers: Mapping[str, str], data: bytes | tuple[tuple[str, str], ...] | None,
              params: Mapping[str, str] | tuple[tuple[str, str], ...] | None, stream: bool,
              retry: bool) -> requests.Response:
        """One request with retries on connection errors, timeouts, 429 and 5xx (exponential backoff with jitter;
        a ``Retry-After`` is honoured), and plain-HTTP fallback for loopback hosts.

        Only requests that may be repeated safely ask for retries (``retry``): reads, ``PUT``s of manifests,
        ``DELETE``s, and ``POST``s that start an upload or mount a blob (a repeat at worst leaves an upload
        session the registry purges). Upload chunks are recovered by :meth:`_upload`, which first asks the registry
        what it received."""
        limit = self._config.retries if method in ("GET", "HEAD") else self._config.push_retries
        retries = limit if retry else 0
        attempt = 0
        while True:
            absolute = path.startswith(("http://", "https://"))
            url = path if absolute else f"{self._scheme(host)}://{host}{path}"
            try:
                resp = self._session.request(method, url, headers=dict(headers), data=data,
                                             params=params, stream=stream, timeout=self._config.timeout,
                                             verify=self._verify(host), cert=self._cert(host))
            except requests.exceptions.SSLError as e:
                # a loopback registry that answers TLS with plain HTTP gets plain HTTP (as Docker); a real TLS
                # problem (an untrusted certificate, a client certificate missing) is reported as one
                if not absolute and _speaks_plain_http(e) and self._fall_back_to_http(host):
                    continue
                raise _tls_error(registry, repository, host, e) from None
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.ContentDecodingError) as e:
                # ChunkedEncodingError / ContentDecodingError: the body (read here unless ``stream``) broke off
                if not absolute and isinstance(e, (requests.ConnectionError, requests.Timeout)) \
                        and self._fall_back_to_http(host):
                    continue
                if attempt < retries:
                    delay = _backoff(attempt, self._config.backoff_seconds)
                    log.info("%s %s: %s; retrying in %.1fs", method, host, type(e).__name__, delay)
                    time.sleep(delay)
                    attempt += 1
                    continue
                raise _unreachable(registry, repository, host, e) from None
            except OSError as e:  # requests checks the CA bundle path before it connects
                if "CA certificate bundle" not in str(e):
                    raise
                raise RegistryUnreachable(
                    f"cannot verify {host}: {e}", registry=registry, repository=repository,
                    hint="REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE or SSL_CERT_FILE names a file that does not exist here "
                         "(a variable from another machine or container?): unset it, or point it at a CA bundle"
                ) from None
            if resp.status_code in RETRY_STATUSES and attempt < retries:
                asked = _retry_after(resp.headers.get("Retry-After"))
                delay = asked if asked is not None else _backoff(attempt, self._config.backoff_seconds)
                log.info("%s %s: HTTP %d; retrying in %.1fs", method, host, resp.status_code, delay)
                resp.close()
                time.sleep(delay)
                attempt += 1
                continue
            return resp

    def _verify(self, host: str) -> bool | str:
        """TLS verification for ``host``: its --registry-certificate CA bundle, off, or the system's."""
        bare = _api_host(host)
        if self._config.skip_tls_verify or bare in {_api_host(h) for h in self._config.skip_tls_verify_registries}:
            return False
        for registry, path in self._config.ca_certificates:
            if _api_host(registry) == bare:
                return path
        return True

    def _cert(self, host: str) -> tuple[str, str] | None:
        """The client certificate and key for ``host`` (--registry-client-cert), for mutual TLS."""
        for registry, cert, key in self._config.client_certificates:
            if _api_host(registry) == _api_host(host):
                return (cert, key)
        return None

    def _scheme(self, host: str) -> str:
        return "http" if host in self._plain_http else "https"

    def _fall_back_to_http(self, host: str) -> bool:
        """Switch a loopback host (any host with ``http_fallback``) that fails over HTTPS to plain HTTP (once), like
        Docker (and Kaniko's --insecure-pull)."""
        with self._lock:
            if host in self._plain_http or not (_is_loopback(host) or self._config.http_fallback):
                return False
            log.debug("%s does not speak HTTPS; using plain HTTP", host)
            self._plain_http.add(host)
            return True

    def _status_error(self, resp: requests.Response, ref: Reference, doing: str, action: str, *,
                      manifest: str | None = None, blob: str | None = None) -> RegistryError:
        """The error for an unexpected status (not 401, which :meth:`_request` handles)."""
        status = resp.status_code
        codes = _error_codes(resp)
        detail = _error_text(resp)

        def error(cls: type[RegistryError], message: str, hint: str) -> RegistryError:
            return cls(message, registry=ref.registry, repository=ref.repository, status=status, hint=hint)

        if manifest is not None and action == _PUSH and status in (400, 403, 409, 412) and (
                "TAG_INVALID" in codes or "immutab" in detail.lower() or "already exists" in detail.lower()):
            # ECR 400 TAG_INVALID; Artifact Registry 400 "...enabled tag immutability"; Harbor 412 (older: 409)
            # "... is immutable"; Docker Hub 403 with immutability on
            return error(ImmutableTag, f"{doing}: the tag {manifest} exists and the repository does not allow "
                         "overwriting it (immutable tags)",
                         f"push a new tag, or turn off tag immutability for {ref.repository}"
                         + (f" ({detail})" if detail else ""))
        if status == 403:
            verb = action if action in (_PUSH, _DELETE) else _PULL
            return error(AuthError, f"access to {ref.name} denied (HTTP 403)",
                         f"check that the account has {verb} permission on {ref.repository}"
                         + (f" ({detail})" if detail else ""))
        if status == 404 and manifest is not None:
            image = f"{ref.name}@{manifest}" if manifest.startswith("sha256:") else f"{ref.name}:{manifest}"
            if "NAME_UNKNOWN" in codes:
                return error(NotFound, f"image {image} not found: the repository does not exist",
                             f"check the image name; {ref.registry} has no repository {ref.repository}")
            if manifest.startswith("sha256:"):
                return error(NotFound, f"image {image} not found: no manifest has that digest", "check the digest")
            return error(NotFound, f"image {image} not found: the tag does not exist",
                         f"check the tag; push {image} first or pick an existing tag")
        if status == 404 and blob is not None:
            if "NAME_UNKNOWN" in codes:
                return error(NotFound, f"repository {ref.name} not found", "check the image name")
            return error(NotFound, f"blob {blob} not found in {ref.name}",
                         "the image refers to a blob the registry does not have; re-push the image")
        if status == 404:
            return error(NotFound, f"{doing}: not found", detail)
        if "DIGEST_INVALID" in codes and blob is not None:
            return error(DigestMismatch, f"the registry rejected blob {blob}: its content does not match the digest",
                         "the local file changed since its digest was computed; rebuild")
        if "MANIFEST_BLOB_UNKNOWN" in codes or "BLOB_UNKNOWN" in codes:
            return error(RegistryError, f"{doing}: the registry lacks a blob the manifest refers to",
                         detail or "push the blobs before the manifest")
        if status == 429:
            return error(RegistryError, f"{doing}: too many requests",
                         "the registry rate-limits you; wait, log in or use a mirror")
        if status >= 500:
            return error(RegistryError, f"{doing}: the registry failed", (detail + "; " if detail else "")
                         + "try again later")
        return error(RegistryError, f"{doing}: unexpected answer", detail)


# -- helpers (pure) ----------------------------------------------------------------------------------------------


def _scope(action: str, repository: str) -> str:
    """The Bearer scope ``action`` needs on ``repository`` (distribution wants ``delete`` for any DELETE)."""
    if action == _PUSH:
        return push_scope(repository)
    if action == _DELETE:
        return f"repository:{repository}:{_DELETE}"
    return pull_scope(repository)


def _is_digest(text: str) -> bool:
    algorithm, _, hexdigits = text.partition(":")
    return algorithm == "sha256" and len(hexdigits) == 64 and all(c in "0123456789abcdef" for c in hexdigits)


def _tags_page(body: bytes) -> list[str] | None:
    """The ``tags`` of a tag list answer (``null`` counts as none); ``None`` if it is not one."""
    try:
        raw = json.loads(body)
    except ValueError:
        return None
    if not isinstance(raw, dict):
        return None
    tags = raw.get("tags")
    if tags is None:
        return []
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        return None
    return list(tags)


def _next_link(header: str) -> str | None:
    """The target of the ``rel="next"`` link in an RFC 8288 ``Link`` header (possibly several links)."""
    pos = 0
    while True:
        start = header.find("<", pos)
        if start < 0:
            return None
        end = header.find(">", start)
        if end < 0:
            return None
        target = header[start + 1:end]
        following = header.find("<", end)
        params = header[end + 1:following if following >= 0 else len(header)]
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "rel" and "next" in value.strip().strip('"').lower().split():
                return target
        pos = end + 1


def _api_host(registry: str) -> str:
    """The host the API of ``registry`` lives on (Docker Hub's is ``registry-1.docker.io``)."""
    return DOCKER_HUB_API_HOST if registry == DOCKER_HUB else registry


def _is_loopback(host: str) -> bool:
    if host.startswith("["):
        name = host[:host.find("]") + 1]
    else:
        name = host.rsplit(":", 1)[0] if ":" in host else host
    name = name.lower()
    return name in _LOOPBACK_HOSTS or name.startswith("127.")


def _parse_mirror(text: str) -> tuple[str, bool]:
    """``host[:port][/prefix]`` of a mirror, and whether it was given as ``http://`` (plain HTTP)."""
    mirror = text.strip()
    plain = mirror.lower().startswith("http://")
    for scheme in ("http://", "https://"):
        if mirror.lower().startswith(scheme):
            mirror = mirror[len(scheme):]
    return mirror.strip("/"), plain


def _on_mirror(ref: Reference, mirror: str) -> Reference:
    host, _, prefix = mirror.partition("/")
    repository = f"{prefix}/{ref.repository}" if prefix else ref.repository
    return replace(ref, registry=host.lower(), repository=repository)


def _backoff(attempt: int, base: float = BACKOFF_SECONDS) -> float:
    """The delay before retry number ``attempt + 1``: ``base * 2**attempt`` ("equal jitter": a random point in its
    upper half, so clients that failed together do not retry together), at most :data:`MAX_BACKOFF_SECONDS`."""
    delay: float = min(max(base, 0.0) * (2.0 ** attempt), MAX_BACKOFF_SECONDS)
    return delay / 2 + random.uniform(0.0, delay / 2)


def _range_end(value: str | None) -> int | None:
    """The offset after the last byte an upload ``Range`` header (``0-N``, perhaps ``bytes=0-N``) confirms; ``None``
    if it is not one. distribution answers ``0-0`` for an empty upload: read as nothing received (if a byte was,
    the next ``PATCH`` is refused and the upload starts over)."""
    if not value:
        return None
    text = value.strip().removeprefix("bytes=").strip()
    start, sep, end = text.partition("-")
    if not sep or not start.strip().isdigit() or not end.strip().isdigit() or int(start) != 0:
        return None
    last = int(end)
    return 0 if last == 0 else last + 1


def _content_range_start(value: str | None) -> int | None:
    """The first byte of a ``Content-Range: bytes START-END/TOTAL`` answer."""
    if not value:
        return None
    text = value.strip()
    if not text.startswith("bytes "):
        return None
    start = text[6:].split("-", 1)[0].strip()
    return int(start) if start.isdigit() else None


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def _short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


def _check_read(data: bytes, expected: int, digest: str, ref: Reference) -> None:
    if len(data) != expected:
        raise RegistryError(f"blob {digest} is shorter than its descriptor says ({expected} bytes expected)",
                            registry=ref.registry, repository=ref.repository, hint="the local file changed; rebuild")


def _manifest_media_type(body: bytes, content_type: str) -> str:
    try:
        raw = json.loads(body)
    except ValueError:
        raw = None
    declared = raw.get("mediaType") if isinstance(raw, dict) else None
    if isinstance(declared, str) and declared:
        return declared
    header = content_type.split(";", 1)[0].strip()
    if header and header not in ("application/json", "text/plain", _OCTET_STREAM):
        return header
    if isinstance(raw, dict):
        if "manifests" in raw:
            return INDEX_TYPES[0]
        if "config" in raw and "layers" in raw:
            return MANIFEST_TYPES[0]
    return header


def _is_index(media_type: str) -> bool:
    return media_type in INDEX_TYPES


def _platform_text(platform: Mapping[str, Any]) -> str:
    text = f"{platform.get('os', '?')}/{platform.get('architecture', '?')}"
    variant = platform.get("variant")
    return text + (f"/{variant}" if variant else "")


def _pick_platform(body: bytes, platform: Platform, ref: Reference) -> Descriptor:
    try:
        raw = json.loads(body)
        entries = [Descriptor.from_json(m) for m in raw.get("manifests") or []]
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise RegistryError(f"the index of {ref} is malformed ({e!r})", registry=ref.registry,
                            repository=ref.repository) from None
    candidates = [e for e in entries if e.platform is not None and e.media_type not in INDEX_TYPES]
    for entry in candidates:
        assert entry.platform is not None
        if platform.matches(entry.platform):
            return entry
    available = sorted({_platform_text(e.platform) for e in candidates
                        if e.platform is not None and e.platform.get("os") != "unknown"})
    raise NotFound(f"image {ref} has no manifest for platform {platform}", registry=ref.registry,
                   repository=ref.repository,
                   hint=f"it is available for {', '.join(available)}; choose one with --platform" if available
                   else "the index lists no platforms")


def _error_codes(resp: requests.Response) -> list[str]:
    return [code for code, _ in _errors(resp)]


def _errors(resp: requests.Response) -> list[tuple[str, str]]:
    """The ``errors`` of a distribution error body: [(code, message)]."""
    if resp.request is not None and resp.request.method == "HEAD":
        return []
    try:
        raw = json.loads(resp.content[:65536])
    except (ValueError, RuntimeError):
        return []
    errors = raw.get("errors") if isinstance(raw, dict) else None
    if not isinstance(errors, list):
        return []
    out = []
    for error in errors:
        if isinstance(error, dict):
            out.append((str(error.get("code", "")), str(error.get("message", ""))))
    return out


def _error_text(resp: requests.Response) -> str:
    return "; ".join(f"{code}: {message}" if message else code for code, message in _errors(resp))


def _unreachable(registry: str, repository: str, host: str, error: Exception) -> RegistryUnreachable:
    text = str(error)
    if isinstance(error, requests.Timeout):
        what = f"{host} did not answer in time"
        hint = "check the network, or raise the timeout"
    elif isinstance(error, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)):
        what = f"the answer of {host} broke off ({type(error).__name__})"
        hint = "check the network and try again"
    elif "Name or service not known" in text or "nodename nor servname" in text or "getaddrinfo" in text \
            or "Temporary failure in name resolution" in text:
        what = f"cannot resolve the registry host {host}"
        hint = "check the host name and your DNS"
    elif "refused" in text.lower():
        what = f"cannot connect to {host}: connection refused"
        hint = "check the host name and port, and that the registry is running"
    else:
        what = f"cannot connect to {host} ({type(error).__name__})"
        hint = "check the host name, the port and the network"
    return RegistryUnreachable(what, registry=registry, repository=repository, hint=hint)


def _speaks_plain_http(error: Exception) -> bool:
    """Did the TLS handshake fail because the server answered in plain HTTP?"""
    text = str(error).upper()
    return "WRONG_VERSION_NUMBER" in text or "WRONG VERSION NUMBER" in text or "RECORD_LAYER_FAILURE" in text


def _tls_error(registry: str, repository: str, host: str, error: Exception) -> RegistryUnreachable:
    text = str(error).upper()
    if _speaks_plain_http(error):
        hint = f"{host} seems to speak plain HTTP; pass --insecure-registry {host} if that is intended"
    elif "CERTIFICATE_VERIFY_FAILED" in text:
        hint = (f"the certificate of {host} is not trusted: pass --registry-certificate {host}=CA.pem with its CA, "
                f"or --skip-tls-verify-registry {host} to not check it")
    elif "CERTIFICATE_REQUIRED" in text or "HANDSHAKE_FAILURE" in text or "ALERT" in text:
        hint = (f"{host} may want a client certificate: pass --registry-client-cert {host}=CERT,KEY; for an "
                f"untrusted server certificate, --registry-certificate {host}=CA.pem")
    else:
        hint = (f"for a certificate signed by your own CA pass --registry-certificate {host}=CA.pem; for mutual "
                f"TLS --registry-client-cert {host}=CERT,KEY; if {host} serves plain HTTP, --insecure-registry {host}")
    return RegistryUnreachable(f"the TLS handshake with {host} failed", registry=registry, repository=repository,
                               hint=hint)
