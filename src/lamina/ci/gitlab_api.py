"""GitLab API calls (python-gitlab): pruning the layer cache in a project's container registry, and posting the
build report on a merge request.

Tokens: the container registry API accepts ``CI_JOB_TOKEN`` (scoped to the job's own project); merge request notes
do not: they need a project, group or personal access token with the ``api`` scope (``LAMINA_GITLAB_TOKEN``).
Errors are :class:`GitLabAPIError` with one line that never holds a token.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import gitlab
import gitlab.exceptions
import requests
from gitlab.v4.objects import ProjectRegistryRepository

from lamina.cache.prune import parse_duration_text
from lamina.errors import InvalidReference, LaminaError, OptionsError
from lamina.oci.reference import Reference

CACHE_TAG_REGEX = "[0-9a-f]{64}"  # lamina's cache entries are tagged with their 64-hex-digit key
TOKEN_VARIABLE = "LAMINA_GITLAB_TOKEN"
TIMEOUT = 30


class GitLabAPIError(LaminaError):
    """The GitLab API refused or could not be reached."""


@dataclass(frozen=True)
class Token:
    value: str
    kind: str  # "private" (personal/project/group access token) or "job" (CI_JOB_TOKEN)

    def __repr__(self) -> str:
        return f"Token(kind={self.kind!r}, value='***')"


@dataclass(frozen=True)
class GitLabPruneReport:
    repository_id: int
    location: str
    older_than: str
    keep: int


def server_url(environ: Mapping[str, str]) -> str:
    """The GitLab instance: ``LAMINA_GITLAB_URL``, else ``CI_SERVER_URL``, else ``CI_API_V4_URL`` minus ``/api/v4``."""
    for name in ("LAMINA_GITLAB_URL", "CI_SERVER_URL"):
        value = (environ.get(name) or "").strip()
        if value:
            return value.rstrip("/")
    api = (environ.get("CI_API_V4_URL") or "").strip().rstrip("/")
    if api:
        return api.removesuffix("/api/v4")
    raise GitLabAPIError("no GitLab URL: set CI_SERVER_URL (GitLab sets it in jobs) or LAMINA_GITLAB_URL")


def token_from(environ: Mapping[str, str], *, allow_job_token: bool) -> Token:
    private = (environ.get(TOKEN_VARIABLE) or "").strip()
    if private:
        return Token(private, "private")
    job = (environ.get("CI_JOB_TOKEN") or "").strip()
    if allow_job_token and job:
        return Token(job, "job")
    raise GitLabAPIError(f"no GitLab API token: set {TOKEN_VARIABLE} to a token with the api scope"
                         + ("" if allow_job_token else " (CI_JOB_TOKEN cannot post merge request notes)"))


def client(url: str, token: Token) -> gitlab.Gitlab:
    if token.kind == "job":
        return gitlab.Gitlab(url, job_token=token.value, timeout=TIMEOUT, retry_transient_errors=True)
    return gitlab.Gitlab(url, private_token=token.value, timeout=TIMEOUT, retry_transient_errors=True)


def gitlab_duration(older_than: timedelta) -> str:
    """A duration as GitLab's ``older_than`` takes it (``14d``, ``36h``, ``90m``; at least one minute)."""
    seconds = int(older_than.total_seconds())
    if seconds and seconds % 86400 == 0:
        return f"{seconds // 86400}d"
    if seconds and seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    return f"{max(1, round(seconds / 60))}m"


def _describe(exc: Exception, doing: str) -> GitLabAPIError:
    if isinstance(exc, gitlab.exceptions.GitlabError):
        code = exc.response_code
        hint = ""
        if code in (401, 403):
            hint = ": the token was refused or lacks the permission (a token with the api scope, and at least the " \
                   "Developer role on the project for notes, Maintainer for registry deletion)"
        elif code == 404:
            hint = ": not found (or not visible to this token)"
        elif code == 429:
            hint = ": rate-limited (bulk tag deletion runs at most once an hour per repository)"
        message = str(exc.error_message or "")[:200].replace("\n", " ")
        return GitLabAPIError(f"{doing} failed (HTTP {code} {message}){hint}")
    return GitLabAPIError(f"{doing} failed: {type(exc).__name__}")


def find_registry_repository(gl: gitlab.Gitlab, project_id: int | str, cache_repo: Reference) -> tuple[int, str]:
    """The id and location of the project's registry repository that is ``cache_repo``."""
    project = gl.projects.get(project_id, lazy=True)
    repositories = project.repositories.list(get_all=True)
    wanted_location = cache_repo.name.lower()
    wanted_path = cache_repo.repository.lower()
    for repository in repositories:
        location = str(getattr(repository, "location", "") or "").lower()
        path = str(getattr(repository, "path", "") or "").lower()
        if location == wanted_location or path == wanted_path:
            return int(repository.get_id() or 0), location or path
    raise GitLabAPIError(f"project {project_id} has no container registry repository {cache_repo.name} "
                         "(nothing was ever pushed to the cache, or it belongs to another project)")


def prune_gitlab_cache(url: str, token: Token, project_id: int | str, cache_repo: str, *, older_than: timedelta,
                       keep: int) -> GitLabPruneReport:
    """Schedule the deletion of cache entries older than ``older_than`` from ``cache_repo`` in the project's
    container registry, keeping the ``keep`` newest (``DELETE .../registry/repositories/:id/tags`` with
    ``name_regex_delete``, ``older_than``, ``keep_n``). GitLab runs it in the background."""
    try:
        repo = Reference.parse(cache_repo)
    except InvalidReference as exc:
        raise OptionsError(f"--cache-repo {cache_repo}: {exc}") from None
    if keep < 0:
        raise OptionsError("--keep must be 0 or more")
    gl = client(url, token)
    try:
        repository_id, location = find_registry_repository(gl, project_id, repo)
    except (gitlab.exceptions.GitlabError, requests.RequestException) as exc:
        raise _describe(exc, f"listing the container registry of project {project_id}") from None
    duration = gitlab_duration(older_than)
    project = gl.projects.get(project_id, lazy=True)
    # The repositories manager has no get(): make the repository object from its id (and the project's, which
    # the tags path needs).
    registry_repository = ProjectRegistryRepository(project.repositories,
                                                    {"id": repository_id, "project_id": project_id})
    try:
        registry_repository.tags.delete_in_bulk(name_regex_delete=CACHE_TAG_REGEX, older_than=duration,
                                                keep_n=keep)
    except (gitlab.exceptions.GitlabError, requests.RequestException) as exc:
        raise _describe(exc, f"deleting stale cache tags in {location}") from None
    return GitLabPruneReport(repository_id, location, duration, keep)


def post_mr_note(url: str, token: str, project_id: int | str, mr_iid: int | str, body: str) -> int:
    """Post ``body`` as a note on merge request ``!mr_iid``; return the note's id. ``token`` must have the ``api``
    scope: CI_JOB_TOKEN cannot post notes."""
    gl = client(url, Token(token, "private"))
    try:
        mr = gl.projects.get(project_id, lazy=True).mergerequests.get(mr_iid, lazy=True)
        note = mr.notes.create({"body": body})
    except (gitlab.exceptions.GitlabError, requests.RequestException) as exc:
        raise _describe(exc, f"posting a note on !{mr_iid}") from None
    return int(note.get_id() or 0)


def prune_command(cache_repo: str | None, older_than_text: str, keep: int, environ: Mapping[str, str]) -> str:
    """``lamina cache prune --gitlab``: the line to print. The project comes from ``CI_PROJECT_ID`` (or
    ``LAMINA_GITLAB_PROJECT``), the cache repository defaults to ``$CI_REGISTRY_IMAGE/cache``."""
    try:
        older_than = parse_duration_text(older_than_text)
    except ValueError as exc:
        raise OptionsError(f"--older-than {older_than_text}: {exc}") from None
    repo = cache_repo or ((environ.get("CI_REGISTRY_IMAGE") or "").strip() + "/cache"
                          if (environ.get("CI_REGISTRY_IMAGE") or "").strip() else "")
    if not repo:
        raise OptionsError("--cache-repo is required (or CI_REGISTRY_IMAGE, to default to $CI_REGISTRY_IMAGE/cache)")
    project = (environ.get("LAMINA_GITLAB_PROJECT") or environ.get("CI_PROJECT_ID") or "").strip()
    if not project:
        raise OptionsError("no GitLab project: set CI_PROJECT_ID (GitLab sets it in jobs) or LAMINA_GITLAB_PROJECT")
    report = prune_gitlab_cache(server_url(environ), token_from(environ, allow_job_token=True), project, repo,
                                older_than=older_than, keep=keep)
    return (f"{report.location}: GitLab scheduled the deletion of cache tags older than {report.older_than}, "
            f"keeping the {report.keep} newest (repository {report.repository_id}; it runs in the background)")
