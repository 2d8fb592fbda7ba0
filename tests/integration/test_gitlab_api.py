"""python-gitlab calls against a fake GitLab API (pytest-httpserver) that records every request."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from lamina.ci.gitlab_api import (
    CACHE_TAG_REGEX,
    GitLabAPIError,
    Token,
    gitlab_duration,
    post_mr_note,
    prune_command,
    prune_gitlab_cache,
    server_url,
    token_from,
)
from lamina.errors import OptionsError

TOKEN = "glpat-secret-token-value"
JOB_TOKEN = "job-token-secret-value"

pytestmark = pytest.mark.integration


class FakeGitLab:
    """Records (method, path, query params, headers, body) of each request and answers like GitLab's API v4."""

    def __init__(self, server: HTTPServer, repositories: list[dict[str, Any]]) -> None:
        self.server = server
        self.requests: list[dict[str, Any]] = []
        self.repositories = repositories
        server.expect_request("/api/v4/projects/42/registry/repositories", method="GET").respond_with_handler(
            self.handle(lambda request: Response(json.dumps(self.repositories), 200,
                                                 content_type="application/json")))
        server.expect_request("/api/v4/projects/42/registry/repositories/7/tags", method="DELETE") \
            .respond_with_handler(self.handle(lambda request: Response(status=202)))
        server.expect_request("/api/v4/projects/42/merge_requests/17/notes", method="POST").respond_with_handler(
            self.handle(lambda request: Response(json.dumps({"id": 901, "body": request.get_json()["body"]}), 201,
                                                 content_type="application/json")))

    def handle(self, respond: Any) -> Any:
        def handler(request: Request) -> Response:
            self.requests.append({"method": request.method, "path": request.path,
                                  "params": {k: request.args.getlist(k) for k in request.args},
                                  "headers": dict(request.headers), "body": request.get_data(as_text=True)})
            result: Response = respond(request)
            return result
        return handler

    @property
    def url(self) -> str:
        return self.server.url_for("/").rstrip("/")

    def calls(self) -> list[tuple[str, str]]:
        return [(r["method"], r["path"]) for r in self.requests]


REPOSITORIES = [
    {"id": 6, "name": "", "path": "group/project", "project_id": 42, "location": "registry.example.com/group/project"},
    {"id": 7, "name": "cache", "path": "group/project/cache", "project_id": 42,
     "location": "registry.example.com/group/project/cache"},
]


@pytest.fixture
def fake(httpserver: HTTPServer) -> FakeGitLab:
    return FakeGitLab(httpserver, REPOSITORIES)


def test_prune_deletes_cache_tags_in_bulk(fake: FakeGitLab) -> None:
    report = prune_gitlab_cache(fake.url, Token(TOKEN, "private"), 42, "registry.example.com/group/project/cache",
                                older_than=timedelta(days=14), keep=5)
    assert fake.calls() == [("GET", "/api/v4/projects/42/registry/repositories"),
                            ("DELETE", "/api/v4/projects/42/registry/repositories/7/tags")]
    delete = fake.requests[1]
    assert delete["params"] == {"name_regex_delete": [CACHE_TAG_REGEX], "older_than": ["14d"], "keep_n": ["5"]}
    assert delete["headers"]["Private-Token"] == TOKEN
    assert report.repository_id == 7 and report.location == "registry.example.com/group/project/cache"
    assert report.older_than == "14d" and report.keep == 5


def test_prune_with_the_job_token(fake: FakeGitLab) -> None:
    prune_gitlab_cache(fake.url, Token(JOB_TOKEN, "job"), 42, "registry.example.com/group/project/cache",
                       older_than=timedelta(hours=36), keep=0)
    for request in fake.requests:
        assert request["headers"]["Job-Token"] == JOB_TOKEN and "Private-Token" not in request["headers"]
    assert fake.requests[1]["params"]["older_than"] == ["36h"]
    assert fake.requests[1]["params"]["keep_n"] == ["0"]


def test_prune_unknown_repository_is_one_line(fake: FakeGitLab) -> None:
    with pytest.raises(GitLabAPIError, match="no container registry repository registry.example.com/group/x/cache"):
        prune_gitlab_cache(fake.url, Token(TOKEN, "private"), 42, "registry.example.com/group/x/cache",
                           older_than=timedelta(days=1), keep=0)
    assert [m for m, _ in fake.calls()] == ["GET"]  # nothing deleted


def test_prune_refused_names_the_status_without_the_token(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/api/v4/projects/42/registry/repositories").respond_with_json(
        {"message": "403 Forbidden"}, status=403)
    with pytest.raises(GitLabAPIError) as info:
        prune_gitlab_cache(httpserver.url_for("/").rstrip("/"), Token(TOKEN, "private"), 42,
                           "registry.example.com/group/project/cache", older_than=timedelta(days=1), keep=0)
    message = str(info.value)
    assert "HTTP 403" in message and "permission" in message and TOKEN not in message and "\n" not in message


def test_prune_command_reads_the_job_environment(fake: FakeGitLab) -> None:
    environ = {"CI_SERVER_URL": fake.url, "CI_PROJECT_ID": "42", "CI_JOB_TOKEN": JOB_TOKEN,
               "CI_REGISTRY_IMAGE": "registry.example.com/group/project"}
    line = prune_command(None, "2w", 3, environ)
    assert "registry.example.com/group/project/cache" in line and "14d" in line and "3 newest" in line
    assert fake.requests[1]["params"]["keep_n"] == ["3"]
    assert fake.requests[1]["headers"]["Job-Token"] == JOB_TOKEN


def test_prune_command_errors() -> None:
    with pytest.raises(OptionsError, match="--older-than"):
        prune_command("r.example.com/a/cache", "soon", 0, {})
    with pytest.raises(OptionsError, match="--cache-repo is required"):
        prune_command(None, "1d", 0, {})
    with pytest.raises(OptionsError, match="CI_PROJECT_ID"):
        prune_command("r.example.com/a/cache", "1d", 0, {})


def test_post_mr_note(fake: FakeGitLab) -> None:
    note_id = post_mr_note(fake.url, TOKEN, 42, 17, "### lamina build\n\n- digest: `sha256:abc`\n")
    assert note_id == 901
    assert fake.calls() == [("POST", "/api/v4/projects/42/merge_requests/17/notes")]
    assert json.loads(fake.requests[0]["body"]) == {"body": "### lamina build\n\n- digest: `sha256:abc`\n"}
    assert fake.requests[0]["headers"]["Private-Token"] == TOKEN


def test_post_mr_note_with_a_project_path(httpserver: HTTPServer) -> None:
    seen: list[str] = []

    def handler(request: Request) -> Response:
        seen.append(request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or request.path)
        return Response(json.dumps({"id": 5}), 201, content_type="application/json")

    httpserver.expect_request("/api/v4/projects/group/project/merge_requests/3/notes", method="POST") \
        .respond_with_handler(handler)
    assert post_mr_note(httpserver.url_for("/").rstrip("/"), TOKEN, "group/project", 3, "hi") == 5
    assert "group%2Fproject" in seen[0]


def test_job_token_cannot_post_notes() -> None:
    with pytest.raises(GitLabAPIError, match="CI_JOB_TOKEN cannot post merge request notes"):
        token_from({"CI_JOB_TOKEN": JOB_TOKEN}, allow_job_token=False)
    assert token_from({"CI_JOB_TOKEN": JOB_TOKEN}, allow_job_token=True).kind == "job"
    assert token_from({"CI_JOB_TOKEN": JOB_TOKEN, "LAMINA_GITLAB_TOKEN": TOKEN}, allow_job_token=True).kind == "private"
    assert TOKEN not in repr(Token(TOKEN, "private"))


def test_server_url_and_durations() -> None:
    assert server_url({"CI_SERVER_URL": "https://gitlab.example.com/"}) == "https://gitlab.example.com"
    assert server_url({"CI_API_V4_URL": "https://g.example.com/gitlab/api/v4"}) == "https://g.example.com/gitlab"
    assert server_url({"LAMINA_GITLAB_URL": "http://x", "CI_SERVER_URL": "https://y"}) == "http://x"
    with pytest.raises(GitLabAPIError):
        server_url({})
    assert gitlab_duration(timedelta(weeks=2)) == "14d"
    assert gitlab_duration(timedelta(hours=36)) == "36h"
    assert gitlab_duration(timedelta(minutes=90)) == "90m"
    assert gitlab_duration(timedelta(seconds=10)) == "1m"
