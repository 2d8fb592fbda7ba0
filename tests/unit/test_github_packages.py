"""The pure parts of ``lamina cache prune --github``: package names, version parsing, the selection, rate limits,
messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from lamina.ci.github_packages import (
    GitHubAPI,
    GitHubAPIError,
    GitHubPruneReport,
    MalformedVersion,
    Owner,
    Package,
    PackageVersion,
    Selection,
    api_url_from,
    describe_failure,
    parse_package,
    parse_version,
    rate_limit_wait,
    select_versions,
    summary_line,
    token_from,
    version_line,
)
from lamina.errors import OptionsError

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
KEY = "0123456789abcdef" * 4
TOKEN = "ghp_secretTokenValue123"


def key(n: int) -> str:
    return f"{n:064x}"


def version(version_id: int, tags: list[str], age_days: float, updated_days: float | None = None) -> PackageVersion:
    created = NOW - timedelta(days=age_days)
    updated = NOW - timedelta(days=updated_days) if updated_days is not None else created
    return PackageVersion(version_id, f"sha256:{version_id:064x}", created, updated, tuple(tags))


# --- parse_package ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "owner", "name", "path_name"), [
    ("ghcr.io/acme/app/cache", "acme", "app/cache", "app%2Fcache"),
    ("ghcr.io/octocat/cache", "octocat", "cache", "cache"),
    ("ghcr.io/acme/a/b/c", "acme", "a/b/c", "a%2Fb%2Fc"),
    ("ghcr.io/Lamina-Build/Lamina/cache", "lamina-build", "lamina/cache", "lamina%2Fcache"),  # ${{ github.repository }}
])
def test_parse_package(text: str, owner: str, name: str, path_name: str) -> None:
    package = parse_package(text)
    assert (package.owner, package.name, package.path_name) == (owner, name, path_name)
    assert str(package) == text.lower()


@pytest.mark.parametrize(("text", "message"), [
    ("registry.example.com/acme/cache", "ghcr.io only, not on registry.example.com"),
    ("docker.io/acme/cache", "ghcr.io only"),
    ("acme/cache", "ghcr.io only, not on docker.io"),
    ("ghcr.io/acme/cache:latest", "without a tag or digest"),
    ("ghcr.io/acme/cache@sha256:" + "a" * 64, "without a tag or digest"),
    ("ghcr.io/acme", "name a package"),
])
def test_parse_package_refusals(text: str, message: str) -> None:
    with pytest.raises(OptionsError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse_package(text)


# --- parse_version ---------------------------------------------------------------------------------------------

def test_parse_version_as_documented() -> None:
    raw = {"id": 212381245, "name": "sha256:43a3ee88abe3b37c64bc52ea93da01c3dcb4a332a953bcd7f438c8d7328d3947",
           "url": "https://api.github.com/orgs/gethomepage/packages/container/homepage/versions/212381245",
           "package_html_url": "https://github.com/orgs/gethomepage/packages/container/package/homepage",
           "created_at": "2024-05-06T05:20:30Z", "updated_at": "2024-05-07T05:20:30Z",
           "html_url": "https://github.com/orgs/gethomepage/packages/container/homepage/212381245",
           "metadata": {"package_type": "container", "container": {"tags": [KEY, "latest"]}}}
    parsed = parse_version(raw)
    assert parsed.id == 212381245
    assert parsed.name.startswith("sha256:43a3")
    assert parsed.created_at == datetime(2024, 5, 6, 5, 20, 30, tzinfo=UTC)
    assert parsed.changed == datetime(2024, 5, 7, 5, 20, 30, tzinfo=UTC)
    assert parsed.tags == (KEY, "latest")
    assert not parsed.is_cache_entry


def test_parse_version_untagged_and_without_updated_at() -> None:
    parsed = parse_version({"id": 1, "name": "sha256:x", "created_at": "2024-05-06T05:20:30Z",
                            "metadata": {"package_type": "container", "container": {"tags": []}}})
    assert parsed.tags == () and parsed.updated_at == parsed.created_at and not parsed.is_cache_entry
    assert parse_version({"id": 2, "name": "n", "created_at": "2024-05-06T05:20:30+02:00"}).tags == ()


@pytest.mark.parametrize("raw", [
    [], "x", {"name": "n", "created_at": "2024-05-06T05:20:30Z"}, {"id": "1", "name": "n"},
    {"id": True, "name": "n", "created_at": "2024-05-06T05:20:30Z"},
    {"id": 1, "name": "n", "created_at": "yesterday"},
    {"id": 1, "name": "n", "created_at": "2024-05-06T05:20:30Z", "metadata": {"container": {"tags": "latest"}}},
    {"id": 1, "name": "n", "created_at": "2024-05-06T05:20:30Z", "metadata": {"container": {"tags": [1]}}},
])
def test_parse_version_refuses_malformed(raw: object) -> None:
    with pytest.raises(MalformedVersion):
        parse_version(raw)


# --- select_versions -------------------------------------------------------------------------------------------

def ids(versions: tuple[PackageVersion, ...]) -> list[int]:
    return [v.id for v in versions]


MIXED = [
    version(1, [key(1)], 30),
    version(2, [key(2)], 20),
    version(3, [key(3), key(33)], 16),  # two cache keys on one manifest: still a cache entry
    version(4, [key(4)], 2),
    version(5, [key(5), "latest"], 40),  # a cache key and another tag: never touched
    version(6, ["v1.0"], 50),
    version(7, [], 25),  # untagged
]


@pytest.mark.parametrize(("older_than", "keep", "cache", "kept_cache"), [
    (timedelta(days=14), 0, [1, 2, 3], 1),
    (timedelta(days=14), 2, [1, 2], 2),  # 3 and 4 are the 2 newest cache entries
    (timedelta(days=14), 4, [], 4),
    (timedelta(days=25), 0, [1], 3),
    (timedelta(days=100), 0, [], 4),
    (timedelta(0), 0, [1, 2, 3, 4], 0),  # other tagged versions remain: everything may go
])
def test_select_cache_entries(older_than: timedelta, keep: int, cache: list[int], kept_cache: int) -> None:
    selection = select_versions(MIXED, older_than=older_than, keep=keep, now=NOW)
    assert ids(selection.cache) == cache
    assert selection.kept_cache == kept_cache
    assert selection.other == 2
    assert 5 not in ids(selection.to_delete) and 6 not in ids(selection.to_delete)


def test_untagged_versions_stay_in_a_package_with_other_images() -> None:
    selection = select_versions(MIXED, older_than=timedelta(days=14), keep=0, now=NOW)
    assert selection.untagged == () and selection.kept_untagged == 1
    assert any("untagged" in note and "other tags" in note for note in selection.notes)


def test_untagged_versions_go_from_a_cache_only_package() -> None:
    versions = [version(1, [key(1)], 30), version(2, [key(2)], 1), version(3, [], 20), version(4, [], 40),
                version(5, [], 3)]
    selection = select_versions(versions, older_than=timedelta(days=14), keep=0, now=NOW)
    assert ids(selection.cache) == [1]
    assert ids(selection.untagged) == [4, 3]  # oldest first; 5 is recent
    assert (selection.kept_cache, selection.kept_untagged, selection.other) == (1, 1, 0)
    assert ids(selection.to_delete) == [1, 4, 3]
    assert selection.notes == ()


def test_age_counts_from_the_last_change() -> None:
    versions = [version(1, [key(1)], 30, updated_days=1), version(2, [key(2)], 30), version(3, [], 30, 2),
                version(4, [key(4)], 0)]
    selection = select_versions(versions, older_than=timedelta(days=14), keep=0, now=NOW)
    assert ids(selection.cache) == [2] and selection.untagged == ()


def test_the_last_tagged_version_stays() -> None:
    versions = [version(1, [key(1)], 30), version(2, [key(2)], 20), version(3, [], 25)]
    selection = select_versions(versions, older_than=timedelta(days=14), keep=0, now=NOW)
    assert ids(selection.cache) == [1]  # 2, the newest, stays: GHCR refuses to delete the last tagged version
    assert ids(selection.untagged) == [3]
    assert selection.kept_cache == 1
    assert selection.notes == ("kept cache entry version 2: GHCR does not delete a package's last tagged version",)


def test_the_last_version_stays() -> None:
    versions = [version(1, [], 30), version(2, [], 20)]
    selection = select_versions(versions, older_than=timedelta(days=14), keep=0, now=NOW)
    assert ids(selection.untagged) == [1] and selection.kept_untagged == 1
    assert "last version" in selection.notes[0]


def test_ties_in_time_go_by_id() -> None:
    versions = [version(10, [key(10)], 30), version(9, [key(9)], 30), version(11, [key(11)], 30),
                version(12, ["keep-me"], 1)]
    selection = select_versions(versions, older_than=timedelta(days=1), keep=1, now=NOW)
    assert ids(selection.cache) == [9, 10]  # 11 is the newest by the tie-break


def test_select_edge_cases() -> None:
    empty = select_versions([], older_than=timedelta(days=1), keep=0, now=NOW)
    assert empty == Selection((), (), 0, 0, 0)
    with pytest.raises(ValueError, match="keep"):
        select_versions(MIXED, older_than=timedelta(days=1), keep=-1, now=NOW)


# --- rate limits ---------------------------------------------------------------------------------------------------

EPOCH = 1_700_000_000.0


def test_rate_limit_primary_waits_until_reset() -> None:
    limit = rate_limit_wait(403, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(EPOCH) + 30)},
                            "API rate limit exceeded", EPOCH)
    assert limit is not None
    assert limit.seconds == pytest.approx(31.0)  # until the reset, and a second more
    assert limit.until == datetime.fromtimestamp(EPOCH + 30, UTC)
    assert limit.reason == "x-ratelimit-reset"
    assert rate_limit_wait(429, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(EPOCH) - 5)}, "",
                           EPOCH).seconds == pytest.approx(1.0)  # type: ignore[union-attr]


def test_rate_limit_retry_after_wins() -> None:
    limit = rate_limit_wait(429, {"retry-after": "7", "x-ratelimit-remaining": "0",
                                  "x-ratelimit-reset": str(int(EPOCH) + 3000)}, "", EPOCH)
    assert limit is not None and limit.seconds == 7.0 and limit.reason == "retry-after"


def test_secondary_rate_limit_without_headers_waits_a_minute() -> None:
    limit = rate_limit_wait(403, {}, "You have exceeded a secondary rate limit", EPOCH)
    assert limit is not None and limit.seconds == 60.0 and limit.reason == "secondary"
    assert rate_limit_wait(429, {}, "", EPOCH) is not None


@pytest.mark.parametrize(("status", "headers", "message"), [
    (403, {"x-ratelimit-remaining": "4999"}, "Resource not accessible by integration"),
    (404, {"x-ratelimit-remaining": "0"}, "Not Found"),
    (500, {"retry-after": "1"}, ""),
    (400, {}, "rate limit"),
])
def test_not_rate_limited(status: int, headers: dict[str, str], message: str) -> None:
    assert rate_limit_wait(status, headers, message, EPOCH) is None


# --- messages ----------------------------------------------------------------------------------------------------

PACKAGE = Package("acme", "app/cache")


def test_describe_failure() -> None:
    path = "/orgs/acme/packages/container/app%2Fcache/versions"
    not_found = describe_failure("GET", path, 404, "Package not found.", package=PACKAGE)
    assert not_found.startswith(f"GET {path}: HTTP 404 Package not found: ")
    assert "ghcr.io/acme/app/cache does not exist or the token cannot see it" in not_found
    forbidden = describe_failure("DELETE", path + "/7", 403, "nope")
    assert "HTTP 403" in forbidden and "delete:packages" in forbidden and "packages: write" in forbidden
    assert "Admin role" in forbidden
    assert "GITHUB_TOKEN" in describe_failure("GET", "/user", 401, "Bad credentials")
    assert "HTTP 500" in describe_failure("GET", "/x", 500, "")
    for line in (not_found, forbidden):
        assert "\n" not in line


def test_lines() -> None:
    cache = version(1, [KEY], 30)
    untagged = version(2, [], 20)
    assert version_line(cache, dry_run=False) == (
        f"deleted cache entry {KEY} (version 1, sha256:{1:064x}, last changed 2024-05-02T12:00:00Z)")
    assert version_line(untagged, dry_run=True).startswith("would delete untagged version (version 2, ")
    selection = Selection((cache,), (untagged,), kept_cache=3, kept_untagged=0, other=2)
    owner = Owner("acme", "organization", "/orgs/acme")
    done = GitHubPruneReport(PACKAGE, owner, selection, (cache, untagged), (), dry_run=False)
    assert summary_line(done) == ("ghcr.io/acme/app/cache (organization acme): deleted 1 stale cache entry and "
                                  "1 untagged version; kept 3 cache entries, 0 untagged versions and 2 versions "
                                  "with other tags")
    dry = GitHubPruneReport(PACKAGE, owner, selection, (cache, untagged), (), dry_run=True)
    assert summary_line(dry).endswith("would delete 1 stale cache entry and 1 untagged version; would keep 3 cache "
                                      "entries, 0 untagged versions and 2 versions with other tags (dry run: "
                                      "nothing was deleted)")
    refused = GitHubPruneReport(PACKAGE, owner, selection, (untagged,), ((cache, "HTTP 400 no"),), dry_run=False)
    assert summary_line(refused).endswith("deleted 0 stale cache entries and 1 untagged version; kept 4 cache "
                                          "entries, 0 untagged versions and 2 versions with other tags; GitHub "
                                          "refused to delete 1 version")


# --- environment ---------------------------------------------------------------------------------------------------

def test_token_and_api_url_from_the_environment() -> None:
    assert token_from({"GITHUB_TOKEN": TOKEN}) == TOKEN
    assert token_from({"GITHUB_TOKEN": "other", "LAMINA_GITHUB_TOKEN": TOKEN}) == TOKEN
    assert token_from({"GITHUB_TOKEN": TOKEN, "LAMINA_GITHUB_TOKEN": " "}) == TOKEN
    with pytest.raises(OptionsError, match="no GitHub token"):
        token_from({})
    assert api_url_from({}) == "https://api.github.com"
    assert api_url_from({"GITHUB_API_URL": "https://ghes.example.com/api/v3/"}) == "https://ghes.example.com/api/v3"
    with pytest.raises(OptionsError, match="GITHUB_API_URL"):
        api_url_from({"GITHUB_API_URL": "ghes.example.com"})


def test_the_token_goes_to_the_api_only() -> None:
    api = GitHubAPI("http://127.0.0.1:9/api/v3/", TOKEN, sleep=lambda seconds: None)
    assert api.url("/users/acme") == "http://127.0.0.1:9/api/v3/users/acme"
    with pytest.raises(GitHubAPIError, match="refusing to send the token there") as info:
        api.request("GET", "https://elsewhere.example.com/api/v3/users/acme")  # e.g. a Link header to another host
    assert TOKEN not in str(info.value)
    assert TOKEN not in repr(api._session.auth)
    api.close()
