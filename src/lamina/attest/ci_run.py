"""The CI run a build happens in, from its environment (pure), for provenance: the builder id BuildKit records (the
run's URL: build-push-action passes ``.../actions/runs/ID/attempts/N``), the version control hint (``vcs``:
source repository and revision) and the run's own facts (workflow, run and job ids, job URL, ref, commit)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class CiRun:
    builder_id: str = ""
    vcs: dict[str, str] = field(default_factory=dict)
    facts: dict[str, str] = field(default_factory=dict)


def _present(pairs: Mapping[str, str | None]) -> dict[str, str]:
    return {key: value for key, value in pairs.items() if value}


def ci_run(environ: Mapping[str, str]) -> CiRun:
    """GitHub Actions (``GITHUB_ACTIONS=true``), GitLab CI (``GITLAB_CI=true``), or nothing."""
    get = environ.get
    if get("GITHUB_ACTIONS") == "true":
        server = get("GITHUB_SERVER_URL") or "https://github.com"
        repository = get("GITHUB_REPOSITORY", "")
        run_url = f"{server}/{repository}/actions/runs/{get('GITHUB_RUN_ID', '')}" if get("GITHUB_RUN_ID") else ""
        if run_url and get("GITHUB_RUN_ATTEMPT"):
            run_url += f"/attempts/{get('GITHUB_RUN_ATTEMPT')}"
        facts = _present({
            "system": "github-actions", "repository": repository, "workflow": get("GITHUB_WORKFLOW"),
            "workflow_ref": get("GITHUB_WORKFLOW_REF"), "run_id": get("GITHUB_RUN_ID"),
            "run_attempt": get("GITHUB_RUN_ATTEMPT"), "run_url": run_url, "job": get("GITHUB_JOB"),
            "event": get("GITHUB_EVENT_NAME"), "ref": get("GITHUB_REF"), "commit": get("GITHUB_SHA"),
            "runner_environment": get("RUNNER_ENVIRONMENT")})
        vcs = _present({"source": f"{server}/{repository}" if repository else None, "revision": get("GITHUB_SHA")})
        return CiRun(run_url, vcs, facts)
    if get("GITLAB_CI") == "true":
        facts = _present({
            "system": "gitlab-ci", "project": get("CI_PROJECT_PATH"), "pipeline_id": get("CI_PIPELINE_ID"),
            "pipeline_url": get("CI_PIPELINE_URL"), "job_id": get("CI_JOB_ID"), "job_name": get("CI_JOB_NAME"),
            "job_url": get("CI_JOB_URL"), "ref": get("CI_COMMIT_REF_NAME"), "commit": get("CI_COMMIT_SHA"),
            "server": get("CI_SERVER_URL")})
        vcs = _present({"source": get("CI_PROJECT_URL"), "revision": get("CI_COMMIT_SHA")})
        return CiRun(get("CI_JOB_URL", ""), vcs, facts)
    return CiRun()
