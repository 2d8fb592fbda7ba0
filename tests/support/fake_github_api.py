"""A recording fake of GitHub's REST API for container packages, on 127.0.0.1 (``http.server`` in a thread).

It answers the requests ``lamina cache prune --github`` makes the way GitHub documents them (API 2022-11-28):

- ``GET /users/{username}``: ``{"login", "id", "type": "User" | "Organization"}``; 404 ``{"message": "Not Found"}``.
- ``GET /user``: the token's user; an installation token (a workflow's ``GITHUB_TOKEN``) gets 403
  ``Resource not accessible by integration``.
- ``GET /orgs/{org}|/users/{username}|/user`` + ``/packages/container/{name}/versions?per_page=&page=``: the active
  versions, newest first, ``metadata.container.tags``; the package name is one path segment (``app%2Fcache``).
  Pages hold at most :attr:`FakeGitHubAPI.page_size` versions (small, so that pagination happens) and carry a
  ``Link`` header with ``rel="next"``, ``"last"``, ``"first"``, ``"prev"`` URLs that keep ``per_page``.
  A package the token cannot see, or a user's private package asked for through ``/users/{username}`` by someone
  else, is 404 ``Package not found.``
- ``DELETE .../versions/{id}``: 204; 403 when the token may not delete; 404 for an unknown version; 400 for the last
  tagged version (and the last version) of a package, as GHCR refuses those, and for a public version with more
  than 5,000 downloads (which GitHub documents as not deletable; the status it answers is not documented).
- No or an unknown token: 401 ``Bad credentials``.

Every answer carries the primary rate-limit headers (``x-ratelimit-limit``, ``-remaining``, ``-used``, ``-reset``,
``-resource``). :meth:`FakeGitHubAPI.limit_primary` makes every request for some seconds answer 403 with
``x-ratelimit-remaining: 0`` and ``x-ratelimit-reset`` at the end of that time; :meth:`FakeGitHubAPI.limit_secondary`
answers the next requests 429 with ``retry-after``.

Every request is recorded (:attr:`FakeGitHubAPI.requests`): method, path as sent, query, headers with the
``Authorization`` token replaced by the name of the grant it matched, and the status answered.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode

from tests.support.loopback import LoopbackServer

DOCS = "https://docs.github.com/rest/packages/packages"
RATE_LIMIT = 5000
LAST_TAGGED = "You cannot delete the last tagged version of a package. You must delete the package instead."
LAST_VERSION = "You cannot delete the last version of a package. You must delete the package instead."
NO_DELETE = "You need at least delete:packages and read:packages scopes to delete a package version."
TOO_POPULAR = ("Publicly visible package versions with more than 5000 downloads cannot be deleted. Contact GitHub "
               "support for further assistance.")

_VERSIONS = re.compile(r"^/(?:(orgs|users)/([^/]+)|user)/packages/container/([^/]+)/versions(?:/([0-9]+))?$")


@dataclass(frozen=True)
class Grant:
    """What a token may do. ``login`` is the user a personal access token belongs to; ``None`` for an installation
    token such as a workflow's GITHUB_TOKEN. ``packages`` the ``owner/name`` it can see (``None``: all)."""

    name: str
    login: str | None = None
    delete: bool = True
    packages: frozenset[str] | None = None


@dataclass
class FakeVersion:
    id: int
    digest: str
    created_at: datetime
    updated_at: datetime
    tags: list[str]
    downloads: int = 0


@dataclass
class FakePackage:
    owner: str
    name: str
    public: bool = False
    versions: list[FakeVersion] = field(default_factory=list)


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str  # as sent, percent-encoding kept, without the query
    query: dict[str, list[str]]
    headers: dict[str, str]  # Authorization: "Bearer <grant name>" (or "<unknown token>"), never the token
    status: int


class FakeGitHubAPI(LoopbackServer):
    """``with FakeGitHubAPI() as fake:`` then point GITHUB_API_URL at :attr:`url`."""

    thread_name = "fake-github-api"

    def __init__(self, page_size: int = 2) -> None:
        self.page_size = page_size
        self.accounts: dict[str, str] = {}  # login (lower case) -> "User" | "Organization"
        self.logins: dict[str, str] = {}  # login (lower case) -> login as spelled
        self.tokens: dict[str, Grant] = {}
        self.packages: dict[tuple[str, str], FakePackage] = {}
        self._requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._next_id = 1000
        self._used = 0
        self._limited_until = 0.0
        self._secondary: list[int] = []  # retry-after of the next requests to refuse
        self._serve(_handler_for(self))
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=self.thread_name, daemon=True)  # stops in 50 ms, not 500

    # --- set-up ---------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def add_account(self, login: str, kind: str = "User") -> None:
        self.accounts[login.lower()] = kind
        self.logins[login.lower()] = login

    def add_token(self, token: str, grant: Grant) -> None:
        self.tokens[token] = grant

    def add_package(self, owner: str, name: str, *, public: bool = False) -> FakePackage:
        package = FakePackage(owner, name, public)
        self.packages[(owner.lower(), name)] = package
        return package

    def add_version(self, package: FakePackage, tags: list[str], *, age: timedelta,
                    updated_age: timedelta | None = None, downloads: int = 0) -> int:
        """A version pushed ``age`` ago (tagged again ``updated_age`` ago); its id, ids ascending with each call."""
        now = datetime.now(UTC).replace(microsecond=0)
        self._next_id += 1
        version_id = self._next_id
        digest = "sha256:" + f"{version_id:064x}"
        created = now - age
        updated = now - updated_age if updated_age is not None else created
        package.versions.append(FakeVersion(version_id, digest, created, updated, list(tags), downloads))
        return version_id

    def limit_primary(self, seconds: float) -> None:
        """Every request for the next ``seconds`` is refused: 403, ``x-ratelimit-remaining: 0``, reset at the end."""
        self._limited_until = time.time() + seconds

    def limit_secondary(self, retry_after: int, count: int = 1) -> None:
        """The next ``count`` requests are refused: 429 with ``retry-after: retry_after``."""
        self._secondary.extend([retry_after] * count)

    # --- what happened --------------------------------------------------------------------------------------

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._requests)

    def calls(self) -> list[tuple[str, str, int]]:
        return [(r.method, r.path, r.status) for r in self.requests]

    def deleted_ids(self) -> list[int]:
        """The ids of the versions deleted (204), in order."""
        return [int(r.path.rsplit("/", 1)[1]) for r in self.requests if r.method == "DELETE" and r.status == 204]

    def remaining_ids(self, owner: str, name: str) -> list[int]:
        return sorted(v.id for v in self.packages[(owner.lower(), name)].versions)

    # --- answering ------------------------------------------------------------------------------------------

    def answer(self, method: str, raw_path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and body for one request; records it."""
        path, _, query_text = raw_path.partition("?")
        query = parse_qs(query_text)
        token = _bearer(headers)
        grant = self.tokens.get(token) if token else None
        with self._lock:
            status, extra, body = self._route(method, path, query, grant)
            self._used += 1
            limits = self._limit_headers(status)
            recorded = dict(headers)
            for key in [k for k in recorded if k.lower() == "authorization"]:
                recorded[key] = f"Bearer {grant.name}" if grant else "<unknown token>"
            self._requests.append(Recorded(method, path, query, recorded, status))
        payload = b"" if body is None else json.dumps(body).encode()
        out = {**limits, **extra}
        if body is not None:
            out["Content-Type"] = "application/json; charset=utf-8"
        return status, out, payload

    def _limit_headers(self, status: int) -> dict[str, str]:
        limited = time.time() < self._limited_until
        reset = math.ceil(self._limited_until) if limited else int(time.time()) + 3600
        remaining = 0 if limited else max(0, RATE_LIMIT - self._used)
        return {"x-ratelimit-limit": str(RATE_LIMIT), "x-ratelimit-remaining": str(remaining),
                "x-ratelimit-used": str(RATE_LIMIT - remaining), "x-ratelimit-reset": str(reset),
                "x-ratelimit-resource": "core"}

    def _route(self, method: str, path: str, query: dict[str, list[str]],
               grant: Grant | None) -> tuple[int, dict[str, str], Any]:
        if self._secondary:
            retry_after = self._secondary.pop(0)
            return 429, {"retry-after": str(retry_after)}, _error(
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.")
        if time.time() < self._limited_until:
            return 403, {}, _error("API rate limit exceeded for user ID 1. If you reach out to GitHub Support for "
                                   "help, please include the request ID.")
        if grant is None:
            return 401, {}, _error("Bad credentials")
        if method == "GET" and re.fullmatch(r"/users/[^/]+", path):
            return self._get_account(unquote(path.split("/")[2]))
        if method == "GET" and path == "/user":
            if grant.login is None:
                return 403, {}, _error("Resource not accessible by integration")
            return 200, {}, self._account_json(grant.login)
        match = _VERSIONS.fullmatch(path)
        if match is None:
            return 404, {}, _error("Not Found")
        kind, owner, name, version_id = match.groups()
        package = self._visible_package(kind, unquote(owner) if owner else None, unquote(name), grant)
        if package is None:
            return 404, {}, _error("Package not found.")
        if method == "GET" and version_id is None:
            return self._list(package, path, query)
        if method == "DELETE" and version_id is not None:
            return self._delete(package, int(version_id), grant)
        return 404, {}, _error("Not Found")

    def _get_account(self, login: str) -> tuple[int, dict[str, str], Any]:
        if login.lower() not in self.accounts:
            return 404, {}, _error("Not Found")
        return 200, {}, self._account_json(login)

    def _account_json(self, login: str) -> dict[str, Any]:
        key = login.lower()
        spelled = self.logins.get(key, login)
        account_id = sorted(self.logins).index(key) + 1 if key in self.logins else 0
        return {"login": spelled, "id": account_id, "type": self.accounts.get(key, "User"),
                "url": f"{self.url}/users/{spelled}", "html_url": f"https://github.com/{spelled}"}

    def _visible_package(self, kind: str | None, owner: str | None, name: str, grant: Grant) -> FakePackage | None:
        """The package the path names, if it exists there and the token can see it."""
        if kind is None:  # /user/packages/...
            if grant.login is None:
                return None
            owner = grant.login
        assert owner is not None
        account = self.accounts.get(owner.lower())
        if (kind == "orgs" and account != "Organization") or (kind in ("users", None) and account != "User"):
            return None
        package = self.packages.get((owner.lower(), name))
        if package is None:
            return None
        if grant.packages is not None and f"{owner.lower()}/{name}" not in grant.packages:
            return None
        if kind == "users" and not package.public and (grant.login or "").lower() != owner.lower():
            return None  # /users/{username}/... lists a user's public packages to others
        return package

    def _list(self, package: FakePackage, path: str, query: dict[str, list[str]]) -> tuple[int, dict[str, str], Any]:
        per_page = int((query.get("per_page") or ["30"])[0])
        page = int((query.get("page") or ["1"])[0])
        size = min(per_page, 100, self.page_size)
        ordered = sorted(package.versions, key=lambda v: (v.created_at, v.id), reverse=True)
        pages = max(1, math.ceil(len(ordered) / size))
        chunk = ordered[(page - 1) * size:page * size]
        base = f"{self.url}{path}"

        def link(number: int, rel: str) -> str:
            return f'<{base}?{urlencode({"per_page": per_page, "page": number})}>; rel="{rel}"'

        links = []
        if page > 1:
            links.append(link(page - 1, "prev"))
        if page < pages:
            links += [link(page + 1, "next"), link(pages, "last")]
        if page > 1:
            links.append(link(1, "first"))
        headers = {"Link": ", ".join(links)} if links else {}
        return 200, headers, [self._version_json(package, version) for version in chunk]

    def _version_json(self, package: FakePackage, version: FakeVersion) -> dict[str, Any]:
        scope = "orgs/" if self.accounts.get(package.owner.lower()) == "Organization" else "users/"
        api = f"{self.url}/{scope}{package.owner}/packages/container/{package.name.replace('/', '%2F')}"
        return {"id": version.id, "name": version.digest, "url": f"{api}/versions/{version.id}",
                "package_html_url": f"https://github.com/{scope}{package.owner}/packages/container/package/"
                                    f"{package.name}",
                "created_at": _rfc3339(version.created_at), "updated_at": _rfc3339(version.updated_at),
                "html_url": f"https://github.com/{scope}{package.owner}/packages/container/{package.name}/"
                            f"{version.id}",
                "metadata": {"package_type": "container", "container": {"tags": list(version.tags)}}}

    def _delete(self, package: FakePackage, version_id: int, grant: Grant) -> tuple[int, dict[str, str], Any]:
        if not grant.delete:
            return 403, {}, _error(NO_DELETE)
        version = next((v for v in package.versions if v.id == version_id), None)
        if version is None:
            return 404, {}, _error("Package version not found.")
        if len(package.versions) == 1:
            return 400, {}, _error(LAST_VERSION)
        if version.tags and sum(1 for v in package.versions if v.tags) == 1:
            return 400, {}, _error(LAST_TAGGED)
        if package.public and version.downloads > 5000:
            return 400, {}, _error(TOO_POPULAR)
        package.versions.remove(version)
        return 204, {}, None


def _error(message: str) -> dict[str, str]:
    return {"message": message, "documentation_url": DOCS}


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _bearer(headers: dict[str, str]) -> str | None:
    for key, value in headers.items():
        if key.lower() == "authorization":
            scheme, _, token = value.partition(" ")
            return token if scheme.lower() in ("bearer", "token") and token else None
    return None


def _handler_for(fake: FakeGitHubAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass  # the requests are recorded instead

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            status, headers, body = fake.answer(self.command, self.path, dict(self.headers.items()))
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if body:
                self.wfile.write(body)

        do_GET = _handle
        do_DELETE = _handle

    return Handler
