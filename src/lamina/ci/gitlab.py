"""The GitLab CI adapter: ``lamina ci gitlab``.

GitLab's predefined variables → the build's flag values (what the job implies; every flag's ``LAMINA_<FLAG>``
variable wins over it) → :func:`lamina.launch.launch_build` → a dotenv report, a merge request note and a log with
one collapsible section per stage.

Defaults taken from the job:

* context ``$CI_PROJECT_DIR``;
* destinations ``$CI_REGISTRY_IMAGE:$CI_COMMIT_REF_SLUG``, plus ``:$CI_COMMIT_TAG`` in tag pipelines and ``:latest``
  on the default branch (``$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH``), plus ``LAMINA_EXTRA_TAGS``;
  ``LAMINA_REGISTRY_IMAGE`` replaces ``$CI_REGISTRY_IMAGE``, ``LAMINA_PUSH=false`` builds without pushing;
* cache repository ``$CI_REGISTRY_IMAGE/cache`` (the cache itself is on with ``LAMINA_CACHE=true``);
* docker.io images pulled through the Dependency Proxy (``$CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX``) when GitLab
  provides it, falling back to Docker Hub; ``LAMINA_DEPENDENCY_PROXY=false`` turns that off;
* credentials: a private ``config.json`` made for the job from ``$DOCKER_CONFIG/config.json`` (if any), then
  ``$CI_REGISTRY`` (``CI_REGISTRY_USER``/``CI_REGISTRY_PASSWORD``, else ``gitlab-ci-token``/``CI_JOB_TOKEN``) and the
  Dependency Proxy, then the ``auths`` of ``DOCKER_AUTH_CONFIG``, each later source winning for the same registry.

Outputs: ``lamina.env`` in ``$CI_PROJECT_DIR`` (``LAMINA_DOTENV`` elsewhere) with ``LAMINA_DIGEST``, ``LAMINA_IMAGE``
(``name@digest``) and ``LAMINA_TAGS`` (the pushed references, comma-separated), for ``artifacts:reports:dotenv``.
With ``LAMINA_MR_NOTE=true`` (or ``--mr-note``) in a merge request pipeline, the build report is posted on the merge
request with ``LAMINA_GITLAB_TOKEN`` (a token with the ``api`` scope: ``CI_JOB_TOKEN`` cannot post notes).

Secrets (registry passwords, job and API tokens, everything in ``DOCKER_AUTH_CONFIG``) are scrubbed from every
line this adapter prints.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lamina.build.executor import BuildResult
from lamina.ci.summary import cache_line
from lamina.console import human_size, level_at_least
from lamina.errors import InvalidReference, LaminaError, OptionsError, StepFailed
from lamina.launch import configure_logging, launch_build
from lamina.oci.reference import Reference
from lamina.progress import StepResult
from lamina.settings import BUILD_FLAGS, FALSE, TRUE, env_value, flag_values, options_from

JOB_TOKEN_USER = "gitlab-ci-token"
DOTENV_NAME = "lamina.env"
MASK = "[MASKED]"
# GitLab-only settings (not build flags): they configure how the job's variables become flags.
EXTRA_TAGS = "LAMINA_EXTRA_TAGS"
REGISTRY_IMAGE = "LAMINA_REGISTRY_IMAGE"
PUSH = "LAMINA_PUSH"
DEPENDENCY_PROXY = "LAMINA_DEPENDENCY_PROXY"
DOTENV = "LAMINA_DOTENV"
MR_NOTE = "LAMINA_MR_NOTE"
GITLAB_TOKEN = "LAMINA_GITLAB_TOKEN"
_TAG_CHARS = re.compile(r"[^A-Za-z0-9_.-]")
_SECTION_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")


# ---------------------------------------------------------------------------------------------------------------
# environment → settings (pure)


@dataclass(frozen=True)
class GitLabSettings:
    """What a GitLab job's environment asks for. ``values`` are the build's flag values (``lamina.settings``)."""

    values: dict[str, object]
    auths: dict[str, dict[str, str]]  # config.json ``auths`` entries made from the CI variables
    docker_auth_config: dict[str, Any] | None  # DOCKER_AUTH_CONFIG, parsed
    secrets: tuple[str, ...]  # to scrub from every printed line
    dotenv: Path
    mr_note: bool
    notes: tuple[str, ...] = ()  # what the adapter decided, for the log (no secrets)
    merge_request_iid: str | None = None
    defaults: dict[str, object] = field(default_factory=dict)  # the GitLab-derived values that were used


def _set(environ: Mapping[str, str], name: str) -> str | None:
    """A variable's value, or None when it is unset or blank (GitLab passes unset component inputs as "")."""
    value = environ.get(name)
    return value if value is not None and value.strip() else None


def _boolean(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _set(environ, name)
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered in TRUE:
        return True
    if lowered in FALSE:
        return False
    raise OptionsError(f"{name}={raw!r}: expected true or false")


def _split(text: str) -> list[str]:
    return [item.strip() for item in re.split(r"[,\s]+", text) if item.strip()]


def tag_from(text: str) -> str:
    """A registry tag made of ``text``: invalid characters become ``-``, at most 128 characters, no leading ``.``
    or ``-`` (a git tag ``v1.2.0+build`` → ``v1.2.0-build``)."""
    tag = _TAG_CHARS.sub("-", text.strip()).lstrip(".-")[:128]
    return tag or "latest"


def default_tags(environ: Mapping[str, str]) -> list[str]:
    """``$CI_COMMIT_REF_SLUG``, ``$CI_COMMIT_TAG`` on tag pipelines, ``latest`` on the default branch."""
    tags: list[str] = []
    slug = _set(environ, "CI_COMMIT_REF_SLUG")
    if slug:
        tags.append(tag_from(slug))
    commit_tag = _set(environ, "CI_COMMIT_TAG")
    if commit_tag:
        tags.append(tag_from(commit_tag))
    branch = _set(environ, "CI_COMMIT_BRANCH")
    if branch and branch == _set(environ, "CI_DEFAULT_BRANCH"):
        tags.append("latest")
    return list(dict.fromkeys(tags))


def default_destinations(environ: Mapping[str, str], image: str) -> list[str]:
    """Every default tag of ``image``, then ``LAMINA_EXTRA_TAGS`` (a tag name, or a full reference when it names
    a repository: ``registry/repo:tag``)."""
    out = [f"{image}:{tag}" for tag in default_tags(environ)]
    for extra in _split(environ.get(EXTRA_TAGS, "")):
        out.append(extra if "/" in extra else f"{image}:{tag_from(extra)}")
    return list(dict.fromkeys(out))


def _auth_entry(user: str, password: str) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def _strip_default_port(host: str) -> str | None:
    return host[:-len(":443")] if host.endswith(":443") else None


def parse_docker_auth_config(text: str) -> dict[str, Any]:
    """``DOCKER_AUTH_CONFIG``: a config.json document. Errors never quote it (it holds credentials)."""
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise OptionsError(f"DOCKER_AUTH_CONFIG is not valid JSON (line {getattr(exc, 'lineno', '?')}, "
                           f"column {getattr(exc, 'colno', '?')})") from None
    if not isinstance(config, dict) or not isinstance(config.get("auths", {}), dict):
        raise OptionsError('DOCKER_AUTH_CONFIG must be a JSON object like {"auths": {"HOST": {"auth": "..."}}}')
    return config


def _config_secrets(config: Mapping[str, Any]) -> list[str]:
    found: list[str] = []
    auths = config.get("auths")
    for entry in (auths.values() if isinstance(auths, dict) else ()):
        if not isinstance(entry, dict):
            continue
        for key in ("auth", "password", "identitytoken", "registrytoken"):
            value = entry.get(key)
            if isinstance(value, str) and value:
                found.append(value)
        auth = entry.get("auth")
        if isinstance(auth, str) and auth:
            try:
                found.append(base64.b64decode(auth, validate=True).decode("utf-8").partition(":")[2])
            except (binascii.Error, ValueError):
                pass
    return found


def settings_from(environ: Mapping[str, str], *, mr_note: bool | None = None) -> GitLabSettings:
    """Read a GitLab job's environment. Pure: touches no file and no network."""
    # what the job's variables imply; LAMINA_<FLAG> wins over it (a blank one counts as unset, so a component
    # input left empty keeps the GitLab default)
    given = {flag.dest for flag in BUILD_FLAGS if env_value(flag, environ) is not None}
    notes: list[str] = []
    defaults: dict[str, object] = {}

    def default(dest: str, value: object) -> None:
        if dest not in given:
            defaults[dest] = value

    project_dir = _set(environ, "CI_PROJECT_DIR")
    if project_dir:
        default("context", project_dir)
    image = _set(environ, REGISTRY_IMAGE) or _set(environ, "CI_REGISTRY_IMAGE")
    if image:
        image = image.strip().lower()
        try:
            Reference.parse(image)
        except InvalidReference as exc:
            raise OptionsError(f"{REGISTRY_IMAGE if _set(environ, REGISTRY_IMAGE) else 'CI_REGISTRY_IMAGE'}: "
                               f"{exc}") from None
        destinations = default_destinations(environ, image)
        if destinations:
            default("destination", destinations)
        default("cache_repo", f"{image}/cache")
    if not _boolean(environ, PUSH, True):
        default("no_push", True)

    auths: dict[str, dict[str, str]] = {}
    secrets: list[str] = []
    registry = _set(environ, "CI_REGISTRY")
    if registry:
        user, password = _set(environ, "CI_REGISTRY_USER"), _set(environ, "CI_REGISTRY_PASSWORD")
        if not (user and password) and _set(environ, "CI_JOB_TOKEN"):
            user, password = JOB_TOKEN_USER, environ["CI_JOB_TOKEN"]
        if user and password:
            auths[registry.strip()] = _auth_entry(user, password)
            notes.append(f"logged in to {registry.strip()} as {user}")
    proxy_server = _set(environ, "CI_DEPENDENCY_PROXY_SERVER")
    proxy_prefix = _set(environ, "CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX")
    if _boolean(environ, DEPENDENCY_PROXY, True) and proxy_prefix:
        server = (proxy_server or proxy_prefix.split("/", 1)[0]).strip()
        user = _set(environ, "CI_DEPENDENCY_PROXY_USER")
        password = _set(environ, "CI_DEPENDENCY_PROXY_PASSWORD")
        if user and password:
            for host in (server, _strip_default_port(server)):
                if host:
                    auths.setdefault(host, _auth_entry(user, password))
        if "registry_mirror" not in given:
            default("registry_mirror", [proxy_prefix.strip().rstrip("/")])
            notes.append(f"docker.io images through the Dependency Proxy {proxy_prefix.strip()}")
    for name in ("CI_REGISTRY_PASSWORD", "CI_JOB_TOKEN", "CI_DEPENDENCY_PROXY_PASSWORD", GITLAB_TOKEN):
        if _set(environ, name):
            secrets.append(environ[name])
    secrets += [entry["auth"] for entry in auths.values()]

    docker_auth_config = None
    if _set(environ, "DOCKER_AUTH_CONFIG"):
        docker_auth_config = parse_docker_auth_config(environ["DOCKER_AUTH_CONFIG"])
        secrets += _config_secrets(docker_auth_config)
        hosts = sorted(docker_auth_config.get("auths", {}))
        if hosts:
            notes.append(f"credentials from DOCKER_AUTH_CONFIG for {', '.join(hosts)}")

    dotenv_text = _set(environ, DOTENV)
    dotenv = Path(dotenv_text) if dotenv_text else Path(project_dir or ".") / DOTENV_NAME
    want_note = _boolean(environ, MR_NOTE, False) if mr_note is None else mr_note
    return GitLabSettings(values=flag_values({}, environ, defaults), auths=auths, docker_auth_config=docker_auth_config,
                          secrets=tuple(sorted({s for s in secrets if len(s) >= 3}, key=len, reverse=True)),
                          dotenv=dotenv, mr_note=want_note, notes=tuple(notes),
                          merge_request_iid=_set(environ, "CI_MERGE_REQUEST_IID"), defaults=defaults)


def merged_docker_config(existing: Mapping[str, Any] | None, auths: Mapping[str, Mapping[str, str]],
                         docker_auth_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """config.json = ``existing`` < the CI variables' ``auths`` < ``DOCKER_AUTH_CONFIG``; ``auths`` merged per
    registry, other keys (credHelpers, ...) taken whole from the later source."""
    merged: dict[str, Any] = {}
    merged_auths: dict[str, Any] = {}
    for source in (existing or {}, {"auths": auths}, docker_auth_config or {}):
        for key, value in source.items():
            if key == "auths" and isinstance(value, dict):
                merged_auths.update(value)
            else:
                merged[key] = value
    merged["auths"] = merged_auths
    return merged


def write_docker_config(directory: Path, config: Mapping[str, Any]) -> Path:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / "config.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    return path


def _existing_docker_config(environ: Mapping[str, str]) -> dict[str, Any] | None:
    directory = _set(environ, "DOCKER_CONFIG") or str(Path(environ.get("HOME") or Path.home()) / ".docker")
    path = Path(directory) / "config.json"
    try:
        loaded = json.loads(path.read_text(encoding="utf-8") or "{}")
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        raise OptionsError(f"{path} cannot be read as JSON; fix it or point DOCKER_CONFIG elsewhere") from None
    return loaded if isinstance(loaded, dict) else None


# ---------------------------------------------------------------------------------------------------------------
# the log: collapsible sections


class Scrubber:
    """Replaces every secret in a text with ``[MASKED]``."""

    def __init__(self, secrets: Sequence[str]) -> None:
        self.secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text


def section_name(text: str) -> str:
    return _SECTION_CHARS.sub("_", text).strip("_").lower() or "section"


class GitLabProgress:
    """:class:`lamina.progress.Progress` for a GitLab job log: one collapsible section per stage
    (``\\e[0Ksection_start:TIMESTAMP:NAME[collapsed=true]\\r\\e[0KHEADER`` … ``\\e[0Ksection_end:TIMESTAMP:NAME\\r\\e[0K``),
    steps and their output inside it, transfers as one line each when they end."""

    def __init__(self, write: Callable[[str], None], *, verbosity: str = "info",
                 scrub: Callable[[str], str] = lambda text: text, clock: Callable[[], float] = time.time) -> None:
        self._write = write
        self.verbosity = verbosity
        self._scrub = scrub
        self._clock = clock
        self._open: str | None = None
        self._stage: str | None = None
        self._count = 0
        self._transfers: dict[str, tuple[str, float, int]] = {}

    @property
    def show_steps(self) -> bool:
        return level_at_least(self.verbosity, "info")

    def line(self, text: str) -> None:
        self._write(self._scrub(text) + "\n")

    def start_section(self, name: str, header: str, *, collapsed: bool = False) -> None:
        self.end_section()
        self._count += 1
        self._open = f"lamina_{self._count}_{section_name(name)}"[:100]
        option = "[collapsed=true]" if collapsed else ""
        self._write(f"\x1b[0Ksection_start:{int(self._clock())}:{self._open}{option}\r\x1b[0K"
                    f"\x1b[36;1m{self._scrub(header)}\x1b[0m\n")

    def end_section(self) -> None:
        if self._open is not None:
            self._write(f"\x1b[0Ksection_end:{int(self._clock())}:{self._open}\r\x1b[0K\n")
            self._open = None
            self._stage = None

    # Progress
    def transfer_started(self, key: str, description: str, total: int | None) -> None:
        if self.show_steps:
            self._transfers[key] = (description, time.monotonic(), 0)

    def transfer_advanced(self, key: str, amount: int) -> None:
        if key in self._transfers:
            description, start, done = self._transfers[key]
            self._transfers[key] = (description, start, done + amount)

    def transfer_finished(self, key: str) -> None:
        if key in self._transfers:
            description, start, done = self._transfers.pop(key)
            self.line(f"  {description}: {human_size(done)} in {time.monotonic() - start:.1f}s")

    def step_started(self, stage: str, index: int, total: int, text: str) -> None:
        if not self.show_steps:
            return
        if stage != self._stage or self._open is None:
            self.start_section(f"stage_{stage}", f"stage {stage}")
            self._stage = stage
        self.line(f"[{stage}] STEP {index}/{total}: {text}")

    def step_output(self, line: str) -> None:
        if self.show_steps:
            self.line(line)

    def step_finished(self, result: StepResult) -> None:
        if not self.show_steps:
            return
        made = f"layer {human_size(result.layer_size)}" if result.layer_size is not None else "no layer"
        self.line(f"  {'cached' if result.cached else 'done'} in {result.seconds:.2f}s, {made}")

    def message(self, text: str) -> None:
        if level_at_least(self.verbosity, "warn" if text.startswith("warning") else "info"):
            self.line(text)


# ---------------------------------------------------------------------------------------------------------------
# outputs


def dotenv_lines(result: BuildResult) -> list[str]:
    """``LAMINA_DIGEST``, ``LAMINA_IMAGE`` (first destination's name@digest) and ``LAMINA_TAGS``; for an image with
    attestations also ``LAMINA_MANIFEST_DIGEST`` (the image manifest's) and ``LAMINA_ATTESTATIONS`` (the
    attestation manifest's digest)."""
    image = ""
    if result.destinations and result.digest:
        image = f"{Reference.parse(result.destinations[0]).name}@{result.digest}"
    lines = [f"LAMINA_DIGEST={result.digest}", f"LAMINA_IMAGE={image}", f"LAMINA_TAGS={','.join(result.destinations)}"]
    if result.attestation_manifest:
        lines += [f"LAMINA_MANIFEST_DIGEST={result.manifest_digest}",
                  f"LAMINA_ATTESTATIONS={result.attestation_manifest}"]
    return lines


def write_dotenv(path: Path, result: BuildResult) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(dotenv_lines(result)) + "\n", encoding="utf-8")


def report_markdown(result: BuildResult, environ: Mapping[str, str]) -> str:
    """The build report for a merge request note."""
    lines = ["### lamina build", ""]
    commit = _set(environ, "CI_COMMIT_SHORT_SHA")
    job_url = _set(environ, "CI_JOB_URL")
    if commit or job_url:
        lines += [" ".join(part for part in (f"Commit `{commit}`" if commit else "",
                                              f"([job]({job_url}))" if job_url else "") if part), ""]
    lines += [f"- digest: `{result.digest}`", f"- size: {human_size(result.size)}",
              f"- cache: {cache_line(result.steps)}"]
    if result.destinations:
        lines.append("- tags: " + ", ".join(f"`{d}`" for d in result.destinations))
    else:
        lines.append("- not pushed")
    lines += ["", "| # | stage | step | | seconds |", "|---|---|---|---|---|"]
    for step in result.steps:
        text = step.text.replace("|", "\\|").replace("\n", " ")
        if len(text) > 80:
            text = text[:77] + "..."
        lines.append(f"| {step.index} | {step.stage} | `{text}` | {'cached' if step.cached else 'built'} "
                     f"| {step.seconds:.1f} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# main


def _post_note(settings: GitLabSettings, result: BuildResult, environ: Mapping[str, str],
               progress: GitLabProgress) -> None:
    if not settings.merge_request_iid:
        progress.line("lamina: LAMINA_MR_NOTE is set but this is not a merge request pipeline; no note posted")
        return
    token = _set(environ, GITLAB_TOKEN)
    if not token:
        progress.line(f"warning: no note posted on !{settings.merge_request_iid}: set {GITLAB_TOKEN} to a project "
                      "or personal access token with the api scope (CI_JOB_TOKEN cannot post merge request notes)")
        return
    from lamina.ci.gitlab_api import GitLabAPIError, post_mr_note, server_url

    try:
        url = server_url(environ)
        project = _set(environ, "CI_PROJECT_ID") or _set(environ, "CI_PROJECT_PATH")
        if not project:
            raise GitLabAPIError("CI_PROJECT_ID is not set")
        post_mr_note(url, token, project, settings.merge_request_iid, report_markdown(result, environ))
    except GitLabAPIError as exc:
        progress.line(f"warning: could not post the note on !{settings.merge_request_iid}: {exc}")
        return
    progress.line(f"posted the build report on !{settings.merge_request_iid}")


def run(settings: GitLabSettings, environ: Mapping[str, str], write: Callable[[str], None]) -> int:
    """Build what ``settings`` ask for, logging to ``write``; then the dotenv report and the merge request note."""
    config_dir = Path(tempfile.mkdtemp(prefix="lamina-docker-config-"))
    try:
        env = {**environ, "DOCKER_CONFIG": str(config_dir)}
        options = options_from(settings.values, env)
        configure_logging(options.verbosity)
        progress = GitLabProgress(write, verbosity=options.verbosity, scrub=Scrubber(settings.secrets))
        write_docker_config(config_dir, merged_docker_config(_existing_docker_config(environ), settings.auths,
                                                             settings.docker_auth_config))
        progress.start_section("setup", "lamina: configuration from the GitLab job", collapsed=True)
        for note in settings.notes:
            progress.line(note)
        progress.line(f"context {options.context}, Dockerfile {options.dockerfile}")
        for dest in options.destinations:
            progress.line(f"destination {dest}")
        if options.cache:
            progress.line(f"layer cache in {options.cache_repo or '<first destination>/cache'}")
        progress.end_section()
        try:
            result = launch_build(options, progress, env)
        except StepFailed as exc:
            progress.end_section()
            if not progress.show_steps and exc.output_tail:
                for line in exc.output_tail.splitlines():
                    progress.line(line)
            raise
        finally:
            progress.end_section()
    finally:
        shutil.rmtree(config_dir, ignore_errors=True)
    progress.start_section("result", "lamina: result")
    if result.digest:
        progress.line(f"built {result.digest} ({human_size(result.size)}, {cache_line(result.steps)})")
    for dest in result.destinations:
        progress.line(f"pushed {dest}@{result.digest}")
    write_dotenv(settings.dotenv, result)
    progress.line(f"wrote {settings.dotenv} (LAMINA_DIGEST, LAMINA_IMAGE, LAMINA_TAGS)")
    if settings.mr_note and result.digest:
        _post_note(settings, result, environ, progress)
    progress.end_section()
    return 0


def main(environ: Mapping[str, str], *, mr_note: bool | None = None) -> int:
    """``lamina ci gitlab``: returns lamina's exit code (a failing RUN's own code, 2 for bad settings, 1 else)."""

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    scrub = Scrubber(())
    try:
        settings = settings_from(environ, mr_note=mr_note)
        scrub = Scrubber(settings.secrets)
        return run(settings, environ, write)
    except (LaminaError, OSError) as exc:
        sys.stdout.flush()
        sys.stderr.write(f"error: {scrub(str(exc))}\n")
        return exc.exit_code if isinstance(exc, LaminaError) else 1
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
