"""Pruning lamina's layer cache in a GHCR package through GitHub's REST API for packages.

GHCR does not implement the registry API's manifest DELETE, so ``lamina cache prune`` cannot delete cache entries
there the way :mod:`lamina.cache.prune` does. On GHCR each pushed manifest is a *package version* of the container
package ``ghcr.io/OWNER/NAME`` (``NAME`` may hold slashes, sent as ``%2F``), with its digest as ``name`` and its
tags in ``metadata.container.tags``; a version is deleted with the REST API (API version 2022-11-28)::

    GET    /users/{owner}                                            "type": "Organization" or "User"
    GET    /user                                                     the token's own login (403 for GITHUB_TOKEN)
    GET    {prefix}/packages/container/{name}/versions?per_page=100  pages follow Link: <...>; rel="next"
    DELETE {prefix}/packages/container/{name}/versions/{id}          204 No Content

with ``{prefix}`` ``/orgs/{owner}`` for an organization, ``/user`` when the token belongs to the owner, else
``/users/{owner}``.

What is deleted (:func:`select_versions`, pure):

- versions whose tags are all lamina cache keys (64 hex digits) and that were last changed before the cutoff,
  always keeping the ``keep`` newest cache entries; a version carrying any other tag is never touched;
- untagged versions (left behind by earlier prunes or by a tag pushed again) last changed before the cutoff, but
  only when every tagged version of the package is a cache entry: in a package that also holds other images,
  untagged versions can be the platform manifests and attestations of a multi-platform index, and deleting them
  would break that image;
- never the package's last tagged version: GHCR refuses it (HTTP 400 "You cannot delete the last tagged version of
  a package. You must delete the package instead."), so the newest stale cache entry stays when nothing else would.

Rate limits (GitHub's documented rules): a 403 or 429 with ``retry-after`` waits that many seconds; with
``x-ratelimit-remaining: 0`` it waits until ``x-ratelimit-reset`` (UTC epoch seconds); other 403/429 answers that
say "rate limit" wait a minute. Waits up to :data:`MAX_RATE_LIMIT_WAIT` are taken, longer ones fail with the time
to run again. Errors are :class:`GitHubAPIError` with one line naming the request path, the HTTP status and what
to do; none ever holds the token.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlsplit

import requests

import lamina
from lamina.cache.prune import is_cache_key, parse_created, parse_duration_text, select_stale
from lamina.errors import InvalidReference, LaminaError, OptionsError
from lamina.oci.reference import Reference

GHCR = "ghcr.io"
DEFAULT_API_URL = "https://api.github.com"
API_VERSION = "2022-11-28"
TOKEN_VARIABLES = ("LAMINA_GITHUB_TOKEN", "GITHUB_TOKEN")  # the first one set wins
PER_PAGE = 100  # the documented maximum
TIMEOUT = 30
MAX_RATE_LIMIT_WAIT = 60.0  # seconds: longer waits fail with the time to run again
MAX_RATE_LIMIT_RETRIES = 3
SECONDARY_RATE_LIMIT_WAIT = 60.0  # "Otherwise, wait for at least one minute before retrying."
RESET_MARGIN = 1.0  # x-ratelimit-reset is in whole seconds: retry a little after it
PERMISSION_HINT = ("the token needs the read:packages and delete:packages scopes (a personal access token, classic); "
                   "a workflow's GITHUB_TOKEN needs `permissions: packages: write`, and the package must give the "
                   "workflow's repository the Admin role (package settings, Manage Actions access) to delete versions")


class GitHubAPIError(LaminaError):
    """GitHub's REST API refused a request or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class MalformedVersion(ValueError):
    """An element of the list-versions answer is not a package version as documented."""


@dataclass(frozen=True)
class Package:
    """A container package on GHCR: ``ghcr.io/{owner}/{name}``."""

    owner: str
    name: str  # may contain slashes: "app/cache"

    @property
    def path_name(self) -> str:
        """The name as one URL path segment (``app%2Fcache``)."""
        return quote(self.name, safe="")

    def __str__(self) -> str:
        return f"{GHCR}/{self.owner}/{self.name}"


@dataclass(frozen=True)
class Owner:
    """Whose namespace the package is in, and the API path prefix for its packages."""

    login: str
    kind: str  # "organization", "user" or "authenticated user"
    prefix: str  # "/orgs/acme", "/users/octocat" or "/user"


@dataclass(frozen=True)
class PackageVersion:
    """One version of a container package: a manifest, its digest and its tags."""

    id: int
    name: str  # the manifest digest, "sha256:..."
    created_at: datetime
    updated_at: datetime
    tags: tuple[str, ...]

    @property
    def changed(self) -> datetime:
        """When the version last changed (pushed, or tagged again): the time the age is measured from."""
        return max(self.created_at, self.updated_at)

    @property
    def is_cache_entry(self) -> bool:
        """Tagged, and every tag is a lamina cache key."""
        return bool(self.tags) and all(is_cache_key(tag) for tag in self.tags)


@dataclass(frozen=True)
class Selection:
    """What :func:`select_versions` decided for a package's versions."""

    cache: tuple[PackageVersion, ...]  # stale cache entries to delete, oldest first
    untagged: tuple[PackageVersion, ...]  # stale untagged versions to delete, oldest first
    kept_cache: int  # cache entries that stay
    kept_untagged: int  # untagged versions that stay
    other: int  # versions with some other tag: never touched
    notes: tuple[str, ...] = ()  # why versions that could have gone stay

    @property
    def to_delete(self) -> tuple[PackageVersion, ...]:
        return self.cache + self.untagged


@dataclass(frozen=True)
class GitHubPruneReport:
    package: Package
    owner: Owner
    selection: Selection
    deleted: tuple[PackageVersion, ...]  # deleted (or, in a dry run, that would be)
    refused: tuple[tuple[PackageVersion, str], ...]  # versions GitHub would not delete, and why
    dry_run: bool


@dataclass(frozen=True)
class RateLimit:
    """A rate-limited answer: wait ``seconds`` before the next request (``until`` is when that is)."""

    seconds: float
    until: datetime
    reason: str  # "retry-after", "x-ratelimit-reset" or "secondary"


# --- pure parts --------------------------------------------------------------------------------------------------

def parse_package(cache_repo: str) -> Package:
    """``ghcr.io/OWNER/NAME...`` → :class:`Package`. Refuses other registries, tags and digests
    (:class:`OptionsError`). Lower-cased first, as GHCR names are (``ghcr.io/${{ github.repository }}/cache``
    keeps the owner's capitals)."""
    try:
        ref = Reference.parse(cache_repo.lower())
    except InvalidReference as exc:
        raise OptionsError(f"--cache-repo {cache_repo}: {exc}") from None
    if ref.registry != GHCR:
        raise OptionsError(f"--cache-repo {cache_repo}: --github prunes packages on {GHCR} only, not on "
                           f"{ref.registry} (use lamina cache prune without --github for a registry that supports "
                           "deletion, or --gitlab)")
    last = cache_repo.rsplit("/", 1)[-1]
    if "@" in cache_repo or ":" in last:
        raise OptionsError(f"--cache-repo {cache_repo}: name the repository only, without a tag or digest")
    owner, _, name = ref.repository.partition("/")
    if not name:
        raise OptionsError(f"--cache-repo {cache_repo}: name a package, as in {GHCR}/{owner}/app/cache")
    return Package(owner, name)


def parse_version(raw: object) -> PackageVersion:
    """One element of the list-versions answer → :class:`PackageVersion`; :class:`MalformedVersion` if it is not
    one."""
    if not isinstance(raw, dict):
        raise MalformedVersion("a package version is not a JSON object")
    version_id = raw.get("id")
    name = raw.get("name")
    if not isinstance(version_id, int) or isinstance(version_id, bool) or not isinstance(name, str):
        raise MalformedVersion("a package version has no integer id or no name")
    created = parse_created(raw.get("created_at"))
    if created is None:
        raise MalformedVersion(f"package version {version_id} has no valid created_at")
    updated = parse_created(raw.get("updated_at")) or created
    metadata = raw.get("metadata")
    container = metadata.get("container") if isinstance(metadata, dict) else None
    tags = container.get("tags") if isinstance(container, dict) else None
    if tags is None:
        tags = []
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise MalformedVersion(f"package version {version_id} has malformed metadata.container.tags")
    return PackageVersion(version_id, name, created, updated, tuple(tags))


def select_versions(versions: Sequence[PackageVersion], *, older_than: timedelta, keep: int,
                    now: datetime) -> Selection:
    """Which versions of a package to delete (see the module docstring for the rules). Pure.

    Cache entries: last changed before ``now - older_than``, except the ``keep`` newest cache entries
    (:func:`lamina.cache.prune.select_stale`). Untagged versions: last changed before the cutoff, only when every
    tagged version is a cache entry. At least one tagged version always remains.
    """
    cache = [version for version in versions if version.is_cache_entry]
    untagged = [version for version in versions if not version.tags]
    other = len(versions) - len(cache) - len(untagged)
    by_key = {_sort_key(version): version for version in cache}
    stale = [by_key[key] for key in select_stale([(_sort_key(v), v.changed) for v in cache],
                                                 older_than=older_than, keep=keep, now=now)]
    notes: list[str] = []
    if stale and len(stale) == len(cache) and not other:
        last = stale.pop()  # select_stale answers oldest first: this is the newest
        notes.append(f"kept cache entry version {last.id}: GHCR does not delete a package's last tagged version")
    cutoff = now - older_than
    old_untagged = sorted((v for v in untagged if v.changed < cutoff), key=lambda v: (v.changed, v.id))
    if old_untagged and other:
        notes.append(f"kept {len(old_untagged)} untagged version(s): the package also holds images with other tags, "
                     "whose platform manifests and attestations are untagged versions")
        old_untagged = []
    if old_untagged and not cache and not other and len(old_untagged) == len(untagged):
        last = old_untagged.pop()
        notes.append(f"kept untagged version {last.id}: GHCR does not delete a package's last version")
    return Selection(cache=tuple(stale), untagged=tuple(old_untagged), kept_cache=len(cache) - len(stale),
                     kept_untagged=len(untagged) - len(old_untagged), other=other, notes=tuple(notes))


def _sort_key(version: PackageVersion) -> str:
    """A string key that orders like the id (select_stale breaks ties in time by key)."""
    return f"{version.id:020d}"


def rate_limit_wait(status: int, headers: Mapping[str, str], message: str, now: float) -> RateLimit | None:
    """How long to wait when an answer says the request was rate-limited, else ``None``. Pure.

    GitHub's rules: 403 or 429; ``retry-after`` seconds if present; else, with ``x-ratelimit-remaining: 0``, until
    ``x-ratelimit-reset`` (UTC epoch seconds); else, when the answer says it is a (secondary) rate limit or is a
    429, at least a minute.
    """
    if status not in (403, 429):
        return None
    lower = {key.lower(): value.strip() for key, value in headers.items()}
    retry_after = lower.get("retry-after", "")
    if retry_after.isdigit():
        seconds = float(retry_after)
        return RateLimit(seconds, _utc(now + seconds), "retry-after")
    if lower.get("x-ratelimit-remaining") == "0":
        reset = lower.get("x-ratelimit-reset", "")
        if reset.isdigit():
            seconds = max(0.0, int(reset) - now) + RESET_MARGIN
            return RateLimit(seconds, _utc(int(reset)), "x-ratelimit-reset")
        return RateLimit(SECONDARY_RATE_LIMIT_WAIT, _utc(now + SECONDARY_RATE_LIMIT_WAIT), "secondary")
    if status == 429 or "rate limit" in message.lower():
        return RateLimit(SECONDARY_RATE_LIMIT_WAIT, _utc(now + SECONDARY_RATE_LIMIT_WAIT), "secondary")
    return None


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def describe_failure(method: str, path: str, status: int, message: str, *, package: Package | None = None) -> str:
    """One line for a refused request: the request, the HTTP status and GitHub's message, and what to do. Pure."""
    said = f" {message.rstrip('.')}" if message else ""
    where = f"{method} {path}: HTTP {status}{said}"
    if status == 401:
        return (f"{where}: GitHub refused the token (invalid or expired): set GITHUB_TOKEN or LAMINA_GITHUB_TOKEN to "
                "a valid token")
    if status == 403:
        return f"{where}: the token is not allowed to do this: {PERMISSION_HINT}"
    if status == 404:
        what = f"the package {package}" if package is not None else "this"
        return (f"{where}: {what} does not exist or the token cannot see it: check --cache-repo; a private package "
                "needs a token with read:packages that has access to it (for GITHUB_TOKEN, the package must give "
                "the workflow's repository access)")
    return f"{where}: GitHub could not do this; try again later, or check the package on GitHub"


def version_line(version: PackageVersion, *, dry_run: bool) -> str:
    """The line printed for a version that is (or would be) deleted. Pure."""
    verb = "would delete" if dry_run else "deleted"
    if version.tags:
        what = f"cache entry {', '.join(version.tags)}"
    else:
        what = "untagged version"
    return f"{verb} {what} (version {version.id}, {version.name}, last changed {_when(version.changed)})"


def summary_line(report: GitHubPruneReport) -> str:
    """The closing line of ``lamina cache prune --github``. Pure."""
    selection = report.selection
    deleted_cache = sum(1 for version in report.deleted if version.tags)
    deleted_untagged = len(report.deleted) - deleted_cache
    done = (f"{'would delete' if report.dry_run else 'deleted'} {_count(deleted_cache, 'stale cache entry')} and "
            f"{_count(deleted_untagged, 'untagged version')}")
    kept = (f"kept {_count(selection.kept_cache + len(selection.cache) - deleted_cache, 'cache entry')}, "
            f"{_count(selection.kept_untagged + len(selection.untagged) - deleted_untagged, 'untagged version')} and "
            f"{_count(selection.other, 'version')} with other tags")
    if report.dry_run:
        kept = "would keep" + kept.removeprefix("kept")
    text = f"{report.package} ({report.owner.kind} {report.owner.login}): {done}; {kept}"
    if report.refused:
        text += f"; GitHub refused to delete {_count(len(report.refused), 'version')}"
    if report.dry_run:
        text += " (dry run: nothing was deleted)"
    return text


def _count(number: int, noun: str) -> str:
    if number == 1:
        return f"1 {noun}"
    plural = noun[:-1] + "ies" if noun.endswith("y") else noun + "s"
    return f"{number} {plural}"


def next_page_url(response: requests.Response) -> str | None:
    """The ``rel="next"`` URL of a ``Link`` header, or ``None`` on the last page."""
    link = response.links.get("next")
    url = link.get("url") if link else None
    return url or None


# --- talking to GitHub -------------------------------------------------------------------------------------------

class _BearerAuth(requests.auth.AuthBase):
    """``Authorization: Bearer <token>`` on every request. An auth object, not a plain header, so that requests
    does not replace it with credentials from ``~/.netrc``; its repr never shows the token."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return "_BearerAuth(token='***')"


class GitHubAPI:
    """A small client for GitHub's REST API: the documented headers, rate-limit waits, one-line errors."""

    def __init__(self, api_url: str, token: str, *, session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time,
                 max_wait: float = MAX_RATE_LIMIT_WAIT) -> None:
        self.api_url = api_url.rstrip("/")
        split = urlsplit(self.api_url)
        self._origin = (split.scheme, split.netloc)
        self._token = token
        self._session = session or requests.Session()
        self._session.auth = _BearerAuth(token)
        self._session.headers.update({"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION,
                                      "User-Agent": f"lamina/{lamina.__version__}"})
        self._sleep = sleep
        self._clock = clock
        self._max_wait = max_wait

    def close(self) -> None:
        self._session.close()

    def url(self, path: str) -> str:
        return self.api_url + path

    def path_of(self, url: str) -> str:
        """The URL's path, for messages (no host, no query)."""
        return urlsplit(url).path or "/"

    def request(self, method: str, url: str, *, params: Mapping[str, str | int] | None = None,
                expect: Iterable[int] = (200,), tolerate: Iterable[int] = (),
                package: Package | None = None) -> requests.Response:
        """Send one request, waiting out rate limits; return the answer when its status is in ``expect`` or
        ``tolerate``, else raise :class:`GitHubAPIError` (a 404 is described as ``package`` not being visible)."""
        if (urlsplit(url).scheme, urlsplit(url).netloc) != self._origin:
            raise GitHubAPIError(f"{method} {url}: not on the API at {self.api_url}; refusing to send the token there")
        allowed = set(expect) | set(tolerate)
        for attempt in range(MAX_RATE_LIMIT_RETRIES + 1):
            response = self._send(method, url, params)
            if response.status_code in allowed:
                return response
            message = error_message(response)
            limit = rate_limit_wait(response.status_code, response.headers, message, self._clock())
            if limit is None:
                raise self.error(describe_failure(method, self.path_of(url), response.status_code, message,
                                                   package=package), response.status_code)
            if limit.seconds > self._max_wait or attempt == MAX_RATE_LIMIT_RETRIES:
                raise self.error(self._rate_limited(method, url, response.status_code, limit), response.status_code)
            self._sleep(limit.seconds)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _send(self, method: str, url: str, params: Mapping[str, str | int] | None) -> requests.Response:
        try:
            return self._session.request(method, url, params=params, timeout=TIMEOUT)
        except requests.RequestException as exc:
            raise self.error(f"{method} {url}: GitHub's API could not be reached ({type(exc).__name__}: {exc}); "
                              "check GITHUB_API_URL and the network") from None

    def _rate_limited(self, method: str, url: str, status: int, limit: RateLimit) -> str:
        minutes = max(1, round(limit.seconds / 60))
        return (f"{method} {self.path_of(url)}: HTTP {status}: GitHub's rate limit for this token is exhausted "
                f"({limit.reason}); it resets at {_when(limit.until)} (in about {minutes} min): run the prune again "
                "after that")

    def error(self, message: str, status: int | None = None) -> GitHubAPIError:
        """The error, with the token scrubbed from the text should anything have echoed it."""
        if len(self._token) >= 8:  # a real token; a shorter one would scrub ordinary words
            message = message.replace(self._token, "***")
        return GitHubAPIError(message, status=status)

    def get_json(self, url: str, *, params: Mapping[str, str | int] | None = None,
                 package: Package | None = None) -> tuple[object, requests.Response]:
        response = self.request("GET", url, params=params, package=package)
        return self.json_of(response, url), response

    def json_of(self, response: requests.Response, url: str) -> object:
        try:
            return response.json()
        except ValueError:
            raise self.error(f"GET {self.path_of(url)}: HTTP {response.status_code}: the answer is not JSON; "
                              "check GITHUB_API_URL") from None


def error_message(response: requests.Response) -> str:
    """GitHub's ``message`` from an error answer, on one line and short; "" when there is none."""
    try:
        body = response.json()
    except ValueError:
        return ""
    message = body.get("message") if isinstance(body, dict) else None
    if not isinstance(message, str):
        return ""
    return " ".join(message.split())[:200]


def resolve_owner(api: GitHubAPI, login: str) -> Owner:
    """Is ``login`` an organization or a user, and which path prefix lists its packages?

    ``GET /users/{login}`` answers for organizations too, with ``"type": "Organization"``. For a user, ``/user``
    (the token's own packages, private ones included) when the token is that user's, else ``/users/{login}``;
    ``GET /user`` is refused (403) to GITHUB_TOKEN, which then uses ``/users/{login}``.
    """
    url = api.url(f"/users/{quote(login, safe='')}")
    response = api.request("GET", url, tolerate=(404,))
    if response.status_code == 404:
        raise GitHubAPIError(f"GET {api.path_of(url)}: HTTP 404: there is no GitHub user or organization {login}: "
                             "check the owner in --cache-repo", status=404)
    body = api.json_of(response, url)
    found = body.get("login") if isinstance(body, dict) else None
    kind = body.get("type") if isinstance(body, dict) else None
    name = found if isinstance(found, str) and found else login
    if kind == "Organization":
        return Owner(name, "organization", f"/orgs/{quote(name, safe='')}")
    me = api.request("GET", api.url("/user"), tolerate=(403,))
    mine = api.json_of(me, api.url("/user")) if me.status_code == 200 else None
    my_login = mine.get("login") if isinstance(mine, dict) else None
    if isinstance(my_login, str) and my_login.casefold() == name.casefold():
        return Owner(name, "authenticated user", "/user")
    return Owner(name, "user", f"/users/{quote(name, safe='')}")


def versions_url(api: GitHubAPI, owner: Owner, package: Package) -> str:
    return api.url(f"{owner.prefix}/packages/container/{package.path_name}/versions")


def list_versions(api: GitHubAPI, owner: Owner, package: Package) -> list[PackageVersion]:
    """Every active version of the package, following the ``Link: rel="next"`` pages."""
    url: str | None = versions_url(api, owner, package)
    params: Mapping[str, str | int] | None = {"per_page": PER_PAGE}
    versions: list[PackageVersion] = []
    while url is not None:
        body, response = api.get_json(url, params=params, package=package)
        if not isinstance(body, list):
            raise GitHubAPIError(f"GET {api.path_of(url)}: HTTP {response.status_code}: the answer is not a list of "
                                 "package versions; check GITHUB_API_URL")
        for raw in body:
            try:
                versions.append(parse_version(raw))
            except MalformedVersion as exc:
                raise GitHubAPIError(f"GET {api.path_of(url)}: HTTP {response.status_code}: {exc}") from None
        url = next_page_url(response)
        params = None  # the next URL carries them
    return versions


def delete_version(api: GitHubAPI, owner: Owner, package: Package, version: PackageVersion) -> str | None:
    """Delete one version: ``None`` when done, else why GitHub would not delete this one version (the rest may
    still go). Refusals that concern every version (401, 403 for permissions, rate limits) raise."""
    url = f"{versions_url(api, owner, package)}/{version.id}"
    response = api.request("DELETE", url, expect=(204,), tolerate=(400, 403, 404, 409, 422), package=package)
    if response.status_code == 204:
        return None
    message = error_message(response)
    if response.status_code == 403 and "download" not in message.lower():  # not the 5,000-downloads rule
        raise api.error(describe_failure("DELETE", api.path_of(url), 403, message, package=package), 403)
    if response.status_code == 404:
        message = (message or "Not Found") + " (deleted meanwhile, or the token may see but not delete it)"
    return f"HTTP {response.status_code} {message}".strip()


def prune_github_cache(api: GitHubAPI, package: Package, *, older_than: timedelta, keep: int, dry_run: bool,
                       echo: Callable[[str], None], now: datetime | None = None) -> GitHubPruneReport:
    """List the package's versions, select the stale ones (:func:`select_versions`) and delete them one at a time
    (GitHub asks for serial requests), calling ``echo`` with a line for each. ``dry_run`` deletes nothing."""
    if keep < 0:
        raise OptionsError("--keep must be 0 or more")
    owner = resolve_owner(api, package.owner)
    versions = list_versions(api, owner, package)
    selection = select_versions(versions, older_than=older_than, keep=keep, now=now or datetime.now(UTC))
    for note in selection.notes:
        echo(note)
    deleted: list[PackageVersion] = []
    refused: list[tuple[PackageVersion, str]] = []
    for version in selection.to_delete:
        reason = None if dry_run else _delete_counting(api, owner, package, version, len(deleted))
        if reason is None:
            deleted.append(version)
            echo(version_line(version, dry_run=dry_run))
        else:
            refused.append((version, reason))
            echo(f"could not delete version {version.id} ({version.name}): {reason}")
    return GitHubPruneReport(package, owner, selection, tuple(deleted), tuple(refused), dry_run)


def _delete_counting(api: GitHubAPI, owner: Owner, package: Package, version: PackageVersion, done: int) -> str | None:
    """:func:`delete_version`, with how many versions were already deleted added to an error that stops the run."""
    try:
        return delete_version(api, owner, package, version)
    except GitHubAPIError as exc:
        if done:
            raise GitHubAPIError(f"{exc} ({done} version(s) were deleted before this)", status=exc.status) from None
        raise


def token_from(environ: Mapping[str, str]) -> str:
    """``LAMINA_GITHUB_TOKEN``, else ``GITHUB_TOKEN``; :class:`OptionsError` when neither is set."""
    for name in TOKEN_VARIABLES:
        value = (environ.get(name) or "").strip()
        if value:
            return value
    raise OptionsError("no GitHub token: set GITHUB_TOKEN (in a workflow: `env: GITHUB_TOKEN: ${{ github.token }}` "
                       "with `permissions: packages: write`) or LAMINA_GITHUB_TOKEN")


def api_url_from(environ: Mapping[str, str]) -> str:
    """``GITHUB_API_URL`` (set in workflows; GitHub Enterprise Server's ``https://HOST/api/v3``), else
    ``https://api.github.com``."""
    url = (environ.get("GITHUB_API_URL") or "").strip().rstrip("/") or DEFAULT_API_URL
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
        raise OptionsError(f"GITHUB_API_URL {url!r} is not an http(s) URL")
    return url


def prune_command(cache_repo: str | None, older_than_text: str, keep: int, environ: Mapping[str, str], *,
                  dry_run: bool, echo: Callable[[str], None]) -> GitHubPruneReport:
    """``lamina cache prune --github``: check the flags, then :func:`prune_github_cache`."""
    if not cache_repo:
        raise OptionsError(f"--cache-repo is required with --github (the cache package, as {GHCR}/OWNER/app/cache)")
    package = parse_package(cache_repo)
    try:
        older_than = parse_duration_text(older_than_text)
    except ValueError as exc:
        raise OptionsError(f"--older-than {older_than_text}: {exc}") from None
    if keep < 0:
        raise OptionsError("--keep must be 0 or more")
    api = GitHubAPI(api_url_from(environ), token_from(environ))
    try:
        return prune_github_cache(api, package, older_than=older_than, keep=keep, dry_run=dry_run, echo=echo)
    finally:
        api.close()
