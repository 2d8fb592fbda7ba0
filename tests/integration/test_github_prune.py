"""``lamina cache prune --github`` against a recording fake of GitHub's REST API for packages (on loopback): which
versions are deleted, through which documented requests, and what the user is told when GitHub refuses."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import pytest

from lamina.ci.github_packages import GitHubAPIError, prune_command
from lamina.cli import main
from tests.support.fake_github_api import FakeGitHubAPI, FakePackage, Grant

pytestmark = pytest.mark.integration

PAT = "ghp_FakePersonalAccessToken0123456789"
ACTIONS = "ghs_FakeInstallationToken0123456789"
READ_ONLY = "ghp_FakeReadOnlyToken0123456789abcdef"
DAYS = timedelta(days=1)
ORG_VERSIONS = "/orgs/acme/packages/container/app%2Fcache/versions"


def key(n: int) -> str:
    return f"{n:064x}"


@pytest.fixture
def github() -> Iterator[FakeGitHubAPI]:
    """The fake API with an organization ``acme``, a user ``octocat``, and three tokens: ``pat`` (octocat's
    personal access token), ``actions`` (an installation token, as a workflow's GITHUB_TOKEN) and ``read-only``."""
    with FakeGitHubAPI(page_size=2) as fake:
        fake.add_account("acme", "Organization")
        fake.add_account("octocat", "User")
        fake.add_token(PAT, Grant("pat", login="octocat"))
        fake.add_token(ACTIONS, Grant("actions"))
        fake.add_token(READ_ONLY, Grant("read-only", login="octocat", delete=False))
        yield fake


def environ(fake: FakeGitHubAPI, token: str = PAT) -> dict[str, str]:
    return {"GITHUB_API_URL": fake.url, "GITHUB_TOKEN": token, "HOME": "/nonexistent"}


def prune(capsys: pytest.CaptureFixture[str], env: dict[str, str], *args: str) -> tuple[int, str, str]:
    code = main(["cache", "prune", "--github", *args], environ=env)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def org_package(fake: FakeGitHubAPI) -> tuple[FakePackage, dict[str, int]]:
    """``acme/app/cache``: old and new cache entries, versions with other tags, an old untagged version."""
    package = fake.add_package("acme", "app/cache")
    ids = {
        "old1": fake.add_version(package, [key(1)], age=40 * DAYS),
        "old2": fake.add_version(package, [key(2)], age=30 * DAYS),
        "old3": fake.add_version(package, [key(3), key(33)], age=20 * DAYS),
        "new": fake.add_version(package, [key(4)], age=2 * DAYS),
        "latest": fake.add_version(package, ["latest"], age=50 * DAYS),
        "mixed": fake.add_version(package, [key(5), "v1.2"], age=60 * DAYS),
        "untagged": fake.add_version(package, [], age=45 * DAYS),
    }
    return package, ids


def test_org_package(github: FakeGitHubAPI, capsys: pytest.CaptureFixture[str]) -> None:
    _, ids = org_package(github)
    code, out, err = prune(capsys, environ(github), "--cache-repo", "ghcr.io/acme/app/cache", "--older-than", "14d")
    assert code == 0, err
    assert github.deleted_ids() == [ids["old1"], ids["old2"], ids["old3"]]  # oldest first
    assert github.remaining_ids("acme", "app/cache") == sorted([ids["new"], ids["latest"], ids["mixed"],
                                                                ids["untagged"]])
    calls = [(method, path) for method, path, _ in github.calls()]
    assert calls == [("GET", "/users/acme")] + [("GET", ORG_VERSIONS)] * 4 + [
        ("DELETE", f"{ORG_VERSIONS}/{ids[name]}") for name in ("old1", "old2", "old3")]
    for request in github.requests:
        assert request.headers["Accept"] == "application/vnd.github+json"
        assert request.headers["X-GitHub-Api-Version"] == "2022-11-28"
        assert request.headers["Authorization"] == "Bearer pat"
        assert request.status in (200, 204)
    lines = out.splitlines()
    assert lines[0].startswith("kept 1 untagged version(s): the package also holds images with other tags")
    assert lines[1].startswith(f"deleted cache entry {key(1)} (version {ids['old1']}, sha256:")
    assert lines[3].startswith(f"deleted cache entry {key(3)}, {key(33)} (version {ids['old3']}, ")
    assert lines[-1] == ("ghcr.io/acme/app/cache (organization acme): deleted 3 stale cache entries and "
                         "0 untagged versions; kept 1 cache entry, 1 untagged version and 2 versions with other tags")


def test_pagination_follows_the_link_header(github: FakeGitHubAPI, capsys: pytest.CaptureFixture[str]) -> None:
    org_package(github)  # 7 versions, 2 per page
    code, _, err = prune(capsys, environ(github), "--cache-repo", "ghcr.io/acme/app/cache", "--older-than", "14d",
                         "--dry-run")
    assert code == 0, err
    pages = [r for r in github.requests if r.method == "GET" and r.path == ORG_VERSIONS]
    assert [r.query for r in pages] == [{"per_page": ["100"]}] + [
        {"per_page": ["100"], "page": [str(n)]} for n in (2, 3, 4)]


def test_user_package_with_the_users_own_token(github: FakeGitHubAPI, capsys: pytest.CaptureFixture[str]) -> None:
    package = github.add_package("octocat", "cache")
    old = github.add_version(package, [key(1)], age=20 * DAYS)
    new = github.add_version(package, [key(2)], age=1 * DAYS)
    code, out, err = prune(capsys, environ(github), "--cache-repo", "ghcr.io/octocat/cache", "--older-than", "336h")
    assert code == 0, err
    assert github.deleted_ids() == [old]
    assert github.remaining_ids("octocat", "cache") == [new]
    assert [(m, p) for m, p, _ in github.calls()] == [
        ("GET", "/users/octocat"), ("GET", "/user"), ("GET", "/user/packages/container/cache/versions"),
        ("DELETE", f"/user/packages/container/cache/versions/{old}")]
    assert "(authenticated user octocat): deleted 1 stale cache entry" in out


def test_user_package_with_a_workflow_token(github: FakeGitHubAPI, capsys: pytest.CaptureFixture[str]) -> None:
    package = github.add_package("octocat", "app/cache", public=True)
    old = github.add_version(package, [key(1)], age=20 * DAYS)
    github.add_version(package, [key(2)], age=1 * DAYS)
    code, out, err = prune(capsys, environ(github, ACTIONS), "--cache-repo", "ghcr.io/octocat/app/cache",
                           "--older-than", "14d")
    assert code == 0, err
    assert github.deleted_ids() == [old]
    assert github.calls() == [
        ("GET", "/users/octocat", 200), ("GET", "/user", 403),  # GET /user is refused to GITHUB_TOKEN
        ("GET", "/users/octocat/packages/container/app%2Fcache/versions", 200),
        ("DELETE", f"/users/octocat/packages/container/app%2Fcache/versions/{old}", 204)]
    assert all(r.headers["Authorization"] == "Bearer actions" for r in github.requests)
    assert "(user octocat)" in out


def test_keep_the_newest(github: FakeGitHubAPI, capsys: pytest.CaptureFixture[str]) -> None:
    package = github.add_package("acme", "app/cache")
    versions = [github.add_version(package, [key(n)], age=(50 - n) * DAYS) for n in range(5)]  # oldest first
    code, out, err = prune(capsys, environ(github), "--cache-repo", "ghcr.io/acme/app/cache", "--older-than", "1d",
                           "--keep", "3")
    assert code == 0, err
    assert github.deleted_ids() == versions[:2]
    assert github.remaining_ids("acme", "app/cache") == versions[2:]
    assert "deleted 2 stale cache entries and 0 untagged versions; kept 3 cache entries" in out


def test_older_than(github: FakeGitHubAPI, capsys: pytest.CaptureFixture[str]) -> None:
    package = github.add_package("acme", "app/cache")
    month = github.add_version(package, [key(1)], age=30 * DAYS)
    retagged = github.add_version(package, [key(2)], age=30 * DAYS, updated_age=2 * DAYS)  # tagged again lately
    ten = github.add_version(package, [key(3)], age=10 * DAYS)
    github.add_version(package, [key(4)], age=1 * DAYS)
    code, _, err = prune(capsys, environ(github), "--cache-repo", "ghcr.io/acme/app/cache", "--older-than", "7d")
    assert code == 0, err
    assert github.deleted_ids() == [month, ten]
    assert retagged in github.remaining_ids("acme", "app/cache")


def test_dry_run_deletes_nothing(github: FakeGitHubAPI, capsys: pytest.CaptureFixture[str]) -> None:
    _, ids = org_package(github)
    before = github.remaining_ids("acme", "app/cache")
    code, out, err = prune(capsys, environ(github), "--cache-repo", "ghcr.io/acme/app/cache", "--older-than", "14d",
                           "--dry-run")
    assert code == 0, err
    assert [r for r in github.requests if r.method != "GET"] == []
    assert github.remaining_ids("acme", "app/cache") == before
    would = [line for line in out.splitlines() if line.startswith("would delete")]
    assert [int(line.split("(version ")[1].split(",")[0]) for line in would] == [ids["old1"], ids["old2"],
                                                                                 ids["old3"]]
    assert out.splitlines()[-1].endswith("(dry run: nothing was deleted)")


def test_untagged_versions_of_a_cache_package(github: FakeGitHubAPI, capsys: pytest.CaptureFixture[str]) -> None:
    package = github.add_package("acme", "app/cache")
    stale = github.add_version(package, [key(1)], age=30 * DAYS)
    old_untagged = github.add_version(package, [], age=40 * DAYS)
    older_untagged = github.add_version(package, [], age=50 * DAYS)
    recent_untagged = github.add_version(package, [], age=3 * DAYS)
    fresh = github.add_version(package, [key(2)], age=1 * DAYS)
    code, out, err = prune(capsys, environ(github), "--cache-repo", "ghcr.io/acme/app/cache", "--older-than", "14d")
    assert code == 0, err
    assert github.deleted_ids() == [stale, older_untagged, old_untagged]
    assert github.remaining_ids("acme", "app/cache") == [recent_untagged, fresh]
    assert f"deleted untagged version (version {older_untagged}, " in out
    assert "deleted 1 stale cache entry and 2 untagged versions; kept 1 cache entry, 1 untagged version and " \
           "0 versions with other tags" in out


def test_versions_with_other_tags_are_never_touched(github: FakeGitHubAPI,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    package = github.add_package("acme", "app/cache")
    untouchable = [github.add_version(package, ["latest"], age=90 * DAYS),
                   github.add_version(package, ["v1", "v1.0"], age=80 * DAYS),
                   github.add_version(package, [key(1), "main"], age=70 * DAYS),
                   github.add_version(package, [key(2)[:63]], age=70 * DAYS),  # 63 hex digits: not a cache key
                   github.add_version(package, [], age=60 * DAYS)]  # untagged next to other images: kept
    entry = github.add_version(package, [key(3)], age=60 * DAYS)
    code, out, err = prune(capsys, environ(github), "--cache-repo", "ghcr.io/acme/app/cache", "--older-than", "0",
                           "--keep", "0")
    assert code == 0, err
    assert github.deleted_ids() == [entry]
    assert github.remaining_ids("acme", "app/cache") == untouchable
    assert "4 versions with other tags" in out


def test_the_last_tagged_version_is_kept(github: FakeGitHubAPI, capsys: pytest.CaptureFixture[str]) -> None:
    package = github.add_package("acme", "app/cache")
    first = github.add_version(package, [key(1)], age=30 * DAYS)
    last = github.add_version(package, [key(2)], age=20 * DAYS)
    code, out, err = prune(capsys, environ(github), "--cache-repo", "ghcr.io/acme/app/cache", "--older-than", "1d")
    assert code == 0, err
    assert github.deleted_ids() == [first]  # no DELETE that GHCR would refuse (400) was sent
    assert all(status != 400 for _, _, status in github.calls())
    assert f"kept cache entry version {last}: GHCR does not delete a package's last tagged version" in out


def test_a_version_github_will_not_delete(github: FakeGitHubAPI, capsys: pytest.CaptureFixture[str]) -> None:
    package = github.add_package("acme", "app/cache", public=True)
    first = github.add_version(package, [key(1)], age=30 * DAYS)
    popular = github.add_version(package, [key(2)], age=25 * DAYS, downloads=6000)
    third = github.add_version(package, [key(3)], age=20 * DAYS)
    github.add_version(package, [key(4)], age=1 * DAYS)
    code, out, err = prune(capsys, environ(github), "--cache-repo", "ghcr.io/acme/app/cache", "--older-than", "14d")
    assert code == 1
    assert github.deleted_ids() == [first, third]  # the refusal of one version does not stop the others
    assert f"could not delete version {popular} (sha256:{popular:064x}): HTTP 400 Publicly visible package " \
           "versions with more than 5000 downloads cannot be deleted." in out
    assert "deleted 2 stale cache entries" in out and "GitHub refused to delete 1 version" in out
    assert "error: GitHub refused to delete 1 version(s) of ghcr.io/acme/app/cache" in err


def test_missing_package(github: FakeGitHubAPI, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = prune(capsys, environ(github), "--cache-repo", "ghcr.io/acme/nothing/here", "--older-than", "1d")
    assert code == 1
    message = err.strip()
    assert message.startswith("error: GET /orgs/acme/packages/container/nothing%2Fhere/versions: HTTP 404 Package not "
                              "found: ")
    assert "ghcr.io/acme/nothing/here does not exist or the token cannot see it" in message
    assert PAT not in out + err
    assert github.deleted_ids() == []


def test_a_package_the_token_cannot_see(github: FakeGitHubAPI, capsys: pytest.CaptureFixture[str]) -> None:
    package = github.add_package("octocat", "cache")  # private: only octocat's own token sees it
    github.add_version(package, [key(1)], age=20 * DAYS)
    code, _, err = prune(capsys, environ(github, ACTIONS), "--cache-repo", "ghcr.io/octocat/cache", "--older-than",
                         "1d")
    assert code == 1
    assert "GET /users/octocat/packages/container/cache/versions: HTTP 404" in err
    assert "does not exist or the token cannot see it" in err


def test_unknown_owner(github: FakeGitHubAPI, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = prune(capsys, environ(github), "--cache-repo", "ghcr.io/nobody/cache", "--older-than", "1d")
    assert code == 1
    assert "GET /users/nobody: HTTP 404: there is no GitHub user or organization nobody" in err


def test_no_permission_to_delete(github: FakeGitHubAPI, capsys: pytest.CaptureFixture[str]) -> None:
    _, ids = org_package(github)
    code, out, err = prune(capsys, environ(github, READ_ONLY), "--cache-repo", "ghcr.io/acme/app/cache",
                           "--older-than", "14d")
    assert code == 1
    message = err.strip()
    assert message.startswith(f"error: DELETE {ORG_VERSIONS}/{ids['old1']}: HTTP 403 You need at least "
                              "delete:packages and read:packages scopes to delete a package version: ")
    for needed in ("read:packages and delete:packages", "permissions: packages: write", "Admin role",
                   "Manage Actions access"):
        assert needed in message
    assert "\n" not in message
    assert READ_ONLY not in out + err
    assert github.deleted_ids() == []
    assert [r.method for r in github.requests].count("DELETE") == 1  # stopped at the first refusal

    with pytest.raises(GitHubAPIError) as info:
        prune_command("ghcr.io/acme/app/cache", "14d", 0, environ(github, READ_ONLY), dry_run=False,
                      echo=lambda line: None)
    assert info.value.status == 403
    assert READ_ONLY not in str(info.value) and READ_ONLY not in repr(info.value)
    assert all(READ_ONLY not in repr(value) for value in vars(info.value).values())


def test_bad_credentials(github: FakeGitHubAPI, capsys: pytest.CaptureFixture[str]) -> None:
    org_package(github)
    code, out, err = prune(capsys, environ(github, "ghp_NotAKnownToken"), "--cache-repo", "ghcr.io/acme/app/cache",
                           "--older-than", "14d")
    assert code == 1
    assert "GET /users/acme: HTTP 401 Bad credentials: GitHub refused the token" in err
    assert "ghp_NotAKnownToken" not in out + err


def test_lamina_github_token_comes_first(github: FakeGitHubAPI, capsys: pytest.CaptureFixture[str]) -> None:
    package = github.add_package("acme", "app/cache")
    github.add_version(package, [key(1)], age=1 * DAYS)
    env = {**environ(github, "ghp_NotAKnownToken"), "LAMINA_GITHUB_TOKEN": PAT}
    code, _, err = prune(capsys, env, "--cache-repo", "ghcr.io/acme/app/cache", "--older-than", "14d")
    assert code == 0, err
    assert {r.headers["Authorization"] for r in github.requests} == {"Bearer pat"}


def test_waits_for_the_rate_limit_reset(github: FakeGitHubAPI, capsys: pytest.CaptureFixture[str]) -> None:
    package = github.add_package("acme", "app/cache")
    stale = github.add_version(package, [key(1)], age=30 * DAYS)
    github.add_version(package, [key(2)], age=1 * DAYS)
    github.limit_primary(1.5)
    started = time.monotonic()
    code, _, err = prune(capsys, environ(github), "--cache-repo", "ghcr.io/acme/app/cache", "--older-than", "14d")
    assert code == 0, err
    assert time.monotonic() - started >= 1.5
    first, *rest = github.requests
    assert (first.method, first.path, first.status) == ("GET", "/users/acme", 403)
    assert [(r.method, r.path, r.status) for r in rest][:1] == [("GET", "/users/acme", 200)]
    assert all(r.status in (200, 204) for r in rest)
    assert github.deleted_ids() == [stale]


def test_a_long_rate_limit_fails_naming_the_reset(github: FakeGitHubAPI, capsys: pytest.CaptureFixture[str]) -> None:
    org_package(github)
    github.limit_primary(3600)
    started = time.monotonic()
    code, _, err = prune(capsys, environ(github), "--cache-repo", "ghcr.io/acme/app/cache", "--older-than", "14d")
    assert code == 1
    assert time.monotonic() - started < 10  # no waiting an hour
    assert "GET /users/acme: HTTP 403: GitHub's rate limit for this token is exhausted (x-ratelimit-reset); it " \
           "resets at 20" in err
    assert "run the prune again after that" in err
    assert len(github.requests) == 1


def test_secondary_rate_limit_retry_after(github: FakeGitHubAPI, capsys: pytest.CaptureFixture[str]) -> None:
    package = github.add_package("acme", "app/cache")
    stale = github.add_version(package, [key(1)], age=30 * DAYS)
    github.add_version(package, [key(2)], age=1 * DAYS)
    github.limit_secondary(retry_after=1)
    started = time.monotonic()
    code, _, err = prune(capsys, environ(github), "--cache-repo", "ghcr.io/acme/app/cache", "--older-than", "14d")
    assert code == 0, err
    assert time.monotonic() - started >= 1.0
    assert github.calls()[0] == ("GET", "/users/acme", 429)
    assert github.deleted_ids() == [stale]


def test_unreachable_api(capsys: pytest.CaptureFixture[str]) -> None:
    with FakeGitHubAPI() as fake:
        url = fake.url
    code, _, err = prune(capsys, {"GITHUB_API_URL": url, "GITHUB_TOKEN": PAT}, "--cache-repo",
                         "ghcr.io/acme/app/cache", "--older-than", "1d")
    assert code == 1
    assert f"GET {url}/users/acme: GitHub's API could not be reached (ConnectionError" in err
    assert PAT not in err


@pytest.mark.parametrize(("args", "message"), [
    (["--github", "--cache-repo", "registry.example.com/a/cache", "--older-than", "1d"], "ghcr.io only"),
    (["--github", "--older-than", "1d"], "--cache-repo is required with --github"),
    (["--github", "--cache-repo", "ghcr.io/acme/cache", "--older-than", "soon"], "--older-than soon"),
    (["--github", "--cache-repo", "ghcr.io/acme/cache", "--older-than", "1d", "--keep", "-1"], "--keep"),
    (["--github", "--cache-repo", "ghcr.io/acme/cache", "--older-than", "1d", "--skip-tls-verify"],
     "do not apply to --github"),
    (["--cache-repo", "registry.example.com/a/cache", "--older-than", "1d", "--dry-run"],
     "--dry-run works with --github only"),
    (["--gitlab", "--older-than", "1d", "--dry-run"], "--dry-run works with --github only"),
])
def test_refusals(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache", "prune", *args], environ={"GITHUB_TOKEN": PAT, "GITHUB_API_URL": "http://127.0.0.1:9"}) == 2
    assert message in capsys.readouterr().err


def test_github_and_gitlab_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["cache", "prune", "--github", "--gitlab", "--older-than", "1d"], environ={})
    assert info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_no_token(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["cache", "prune", "--github", "--cache-repo", "ghcr.io/acme/cache", "--older-than", "1d"],
                environ={})
    assert code == 2
    assert "no GitHub token: set GITHUB_TOKEN" in capsys.readouterr().err
