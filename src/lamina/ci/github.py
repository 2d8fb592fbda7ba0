"""The GitHub Action: the runner's environment (``INPUT_*``, ``GITHUB_*``) → build flag values (``lamina.settings``)
→ ``lamina.launch.launch_build`` → step outputs, job summary, annotations and log groups.

An input names a build flag (``ACTION_FLAGS``) and wins over its ``LAMINA_<FLAG>`` variable; every other flag is
read from its ``LAMINA_<FLAG>`` variable (``env:`` of the step), as in ``lamina build``.

Runner conventions followed: inputs arrive as ``INPUT_<NAME>`` with the name upper-cased and hyphens kept
(``INPUT_BUILD-ARGS``; a shell drops such variables, Python reads them); outputs are appended to ``$GITHUB_OUTPUT`` as
``name<<DELIMITER`` blocks (actions-toolkit's format); the summary is appended to ``$GITHUB_STEP_SUMMARY``; workflow
commands (``::add-mask::``, ``::group::``, ``::error file=,line=,col=::``) go to stdout. Every password, token and
secret value is masked before anything else is printed, and is replaced with ``***`` in everything lamina prints.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from actions_toolkit.command import Command
from actions_toolkit.file_command import prepare_key_value_message

from lamina.build.executor import BuildResult
from lamina.cache.entries import LAYOUT_PREFIX
from lamina.ci import summary
from lamina.ci.buildpush import REFUSED_INPUTS, map_inputs
from lamina.ci.credentials import read_docker_config, write_docker_config
from lamina.ci.tags import Event, expand_tags, lower_image, parse_flavor, parse_rules
from lamina.console import human_size
from lamina.errors import DockerfileError, LaminaError, OptionsError, StepFailed
from lamina.launch import launch_build
from lamina.options import BuildOptions
from lamina.progress import StepResult
from lamina.settings import flag_values, options_from

GHCR = "ghcr.io"
TRUE = frozenset({"true", "True", "TRUE"})  # YAML 1.2 core schema, as core.getBooleanInput
FALSE = frozenset({"false", "False", "FALSE"})
SECRET_VARIABLE = "LAMINA_GITHUB_SECRET_{}"
MIN_REDACTED = 3  # shorter values are masked by the runner but not rewritten by lamina (they would garble the log)

# Every input of action.yml (tests check the two agree).
INPUTS = ("context", "file", "push", "tags", "labels", "build-args", "target", "secrets", "secret-files", "no-cache",
          "cache", "cache-repo", "cache-ttl", "registry", "username", "password", "github-token", "images", "flavor",
          "registry-mirror", "insecure-registry", "platform", "dry-run", "tar-path", "oci-layout-path", "oci-tar-path",
          # docker/build-push-action's own spellings (lamina.ci.buildpush maps or refuses each)
          "cache-from", "cache-to", "outputs", "load", "platforms", "secret-envs", "builder", "pull", "provenance",
          "sbom", "ssh", *REFUSED_INPUTS)


# ---------------------------------------------------------------------------------------------------------------
# inputs


def get_input(environ: Mapping[str, str], name: str) -> str:
    """``INPUT_<NAME>`` as the runner sets it (hyphens kept), trimmed; the underscore spelling is accepted too."""
    key = "INPUT_" + name.replace(" ", "_").upper()
    value = environ.get(key)
    if value is None:
        value = environ.get(key.replace("-", "_"), "")
    return value.strip()


def split_list(text: str, *, commas: bool = True) -> list[str]:
    """A list input: one item a line, or comma-separated (``commas=False``: lines only, as build-push-action reads
    build-args, labels and secrets); blank lines and ``#`` comment lines are skipped."""
    items: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        items += [part.strip() for part in line.split(",") if part.strip()] if commas else [line]
    return items


def get_bool(environ: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = get_input(environ, name)
    if not raw:
        return default
    if raw in TRUE:
        return True
    if raw in FALSE:
        return False
    raise OptionsError(f"input {name}: {raw!r} is not a boolean (true or false)")


def _key_values(items: Sequence[str], what: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise OptionsError(f"input {what}: expected KEY=VALUE lines, got a line without '=' "
                               f"(starting {key.strip()[:20]!r})")
        out.append((key.strip(), value))
    return out


def secret_values(environ: Mapping[str, str]) -> list[str]:
    """Everything to mask: the password, the GitHub token and the value of every ``secrets`` line. Never raises:
    this runs before anything else is printed, before the inputs are checked."""
    values = [get_input(environ, "password"), get_input(environ, "github-token")]
    for line in split_list(get_input(environ, "secrets"), commas=False):
        values.append(line.partition("=")[2].strip())
    out: list[str] = []
    for value in values:
        for part in [value, *value.splitlines()]:  # a multi-line secret is masked line by line too
            part = part.strip()
            if part and part not in out:
                out.append(part)
    return out


@dataclass(frozen=True)
class ActionPlan:
    """What the inputs ask for: the build's flag values and environment (before the logins are written, which
    writes files), and the rest."""

    values: dict[str, object]
    environ: Mapping[str, str] = field(repr=False)
    options: BuildOptions  # what the values give (checked here, so that bad inputs fail before anything is done)
    tags: tuple[str, ...]
    push: bool
    logins: Mapping[str, tuple[str, str]] = field(repr=False)
    notes: tuple[str, ...] = ()


def event_from(environ: Mapping[str, str]) -> Event:
    payload: dict[str, Any] = {}
    path = environ.get("GITHUB_EVENT_PATH", "")
    if path:
        try:
            loaded = json.loads(Path(path).read_text(encoding="utf-8"))
            payload = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            payload = {}
    return Event(environ.get("GITHUB_EVENT_NAME", ""), environ.get("GITHUB_REF", ""), environ.get("GITHUB_SHA", ""),
                 payload)


def resolve_tags(environ: Mapping[str, str], now: datetime) -> list[str]:
    """``tags`` lines starting ``type=`` are metadata-action rules applied to each of ``images``; other lines are
    full references (comma-separated allowed). Image names are lower-cased."""
    rule_lines: list[str] = []
    references: list[str] = []
    for line in split_list(get_input(environ, "tags"), commas=False):
        if line.replace(" ", "").lower().startswith("type="):
            rule_lines.append(line)
        else:
            references += [lower_image(part.strip()) for part in line.split(",") if part.strip()]
    images = [image.lower() for image in split_list(get_input(environ, "images"))]
    tags: list[str] = []
    if images:
        flavor = parse_flavor(split_list(get_input(environ, "flavor"), commas=False))
        tags = expand_tags(images, parse_rules(rule_lines), flavor, event_from(environ), now)
    elif rule_lines:
        raise OptionsError("input tags: type= rules need the images input (the image names to tag)")
    for reference in references:
        if reference not in tags:
            tags.append(reference)
    return tags


# inputs that are build flags: input → flag (Flag.dest); "list" inputs take one item a line or comma-separated,
# "lines" inputs one item a line (build-push-action's build-args), "bool" inputs count only when true
ACTION_FLAGS: dict[str, tuple[str, str]] = {
    "context": ("context", "value"), "file": ("dockerfile", "value"), "build-args": ("build_arg", "lines"),
    "target": ("target", "value"), "tar-path": ("tar_path", "value"), "oci-layout-path": ("oci_layout_path", "value"),
    "oci-tar-path": ("oci_tar_path", "value"),
    "registry-mirror": ("registry_mirror", "list"), "insecure-registry": ("insecure_registry", "list"),
    "platform": ("platform", "value"), "cache": ("cache", "bool"), "cache-ttl": ("cache_ttl", "value"),
    "dry-run": ("dry_run", "bool"), "labels": ("label", "lines"),
}


def plan_from_environ(environ: Mapping[str, str], *, now: datetime | None = None) -> ActionPlan:
    """The environment → what to build, where to push and with which logins. Pure: reads no file but the event
    payload, writes nothing."""
    now = now or datetime.now(UTC)
    notes: list[str] = []
    explicit: dict[str, object | None] = {}
    for name, (dest, kind) in ACTION_FLAGS.items():
        text = get_input(environ, name)
        if kind == "bool":
            explicit[dest] = True if get_bool(environ, name) else None
        elif kind == "list" or kind == "lines":
            explicit[dest] = split_list(text, commas=kind == "list") or None
        else:
            explicit[dest] = text or None
    if "://" in str(explicit["context"] or "").removeprefix("dir://"):
        raise OptionsError(f"input context: {explicit['context']}: only directories are supported (check out the "
                           "repository with actions/checkout and give its path)")
    buildx = map_inputs(lambda name: get_input(environ, name), lambda text, commas: split_list(text, commas=commas),
                        lambda name: get_bool(environ, name))
    notes += buildx.notes
    for dest, value in buildx.flags.items():
        if explicit.get(dest) is None:
            explicit[dest] = value
    tags = resolve_tags(environ, now)
    tags += [reference for reference in map(lower_image, buildx.references) if reference not in tags]
    act = environ.get("ACT", "").lower() == "true"
    push = get_bool(environ, "push") or buildx.push is True
    dry_run = get_bool(environ, "dry-run")
    if push and not tags and not dry_run:
        raise OptionsError("input push is true but there is nothing to push to: give tags (full image references) "
                           "or images with type= tag rules")
    if act and not push:
        notes.append("running under act (ACT=true): the image is built but not pushed; set push: true to push")
    elif not push and tags and not dry_run:
        notes.append("push is false: the image is built but not pushed")
    explicit["destination"] = list(tags) or None
    explicit["no_push"] = not push  # build-push-action's default: build only
    if get_bool(environ, "no-cache"):
        if get_bool(environ, "cache"):
            notes.append("no-cache is true: the registry layer cache is not used")
        explicit["cache"] = False
    cache_repo = get_input(environ, "cache-repo")
    if cache_repo:
        if not cache_repo.startswith(LAYOUT_PREFIX):  # a directory's path keeps its case
            cache_repo = lower_image(cache_repo)
        if buildx.flags.get("cache_repo") not in (None, cache_repo):
            notes.append(f"input cache-repo {cache_repo} wins over the repository of cache-from/cache-to")
        explicit["cache_repo"] = cache_repo
    platforms = split_list(get_input(environ, "platform"))
    if len(platforms) > 1:
        raise OptionsError(f"input platform: {', '.join(platforms)}: lamina builds one platform per step; "
                           "use a matrix with one platform each")
    build_environ: dict[str, str] = dict(environ)
    secrets: list[str] = []
    for index, (secret_id, value) in enumerate(_key_values(split_list(get_input(environ, "secrets"), commas=False),
                                                           "secrets")):
        variable = SECRET_VARIABLE.format(index)
        build_environ[variable] = value
        secrets.append(f"id={secret_id},env={variable}")
    for secret_id, path in _key_values(split_list(get_input(environ, "secret-files"), commas=False), "secret-files"):
        secrets.append(f"id={secret_id},src={path.strip()}")
    secrets += buildx.secrets
    explicit["secret"] = secrets or None
    values = flag_values(explicit, build_environ)
    return ActionPlan(values=values, environ=build_environ, options=options_from(values, build_environ),
                      tags=tuple(tags), push=push, logins=logins_from(environ),
                      notes=tuple(notes))


def logins_from(environ: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """docker/login-action's inputs: ``registry`` (default Docker Hub), ``username``, ``password``; and the
    ``github-token`` for ghcr.io unless a password is given for ghcr.io itself."""
    registry = get_input(environ, "registry") or "docker.io"
    username = get_input(environ, "username")
    password = get_input(environ, "password")
    token = get_input(environ, "github-token")
    logins: dict[str, tuple[str, str]] = {}
    if password:
        if not username:
            raise OptionsError("input password is set but username is not")
        logins[registry] = (username, password)
    if token and not (password and registry.removeprefix("https://").rstrip("/") == GHCR):
        actor = (username if registry == GHCR and username else "") or environ.get("GITHUB_ACTOR") or "github-actions"
        logins.setdefault(GHCR, (actor, token))
    return logins


# ---------------------------------------------------------------------------------------------------------------
# the log


class Log:
    """stdout for the runner: workflow commands and lines, with every secret value replaced by ``***``."""

    def __init__(self, stream: TextIO, secrets: Sequence[str] = ()) -> None:
        self.stream = stream
        self.secrets = sorted((s for s in secrets if len(s) >= MIN_REDACTED), key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def line(self, text: str) -> None:
        self.stream.write(self.redact(text) + "\n")
        self.stream.flush()

    def command(self, command: str, message: str = "", **properties: object) -> None:
        props = {k: v for k, v in properties.items() if v is not None}
        self.line(str(Command(command, props, self.redact(message))))

    def mask(self, value: str) -> None:  # the one place a secret is written, for the runner to register it
        self.stream.write(str(Command("add-mask", {}, value)) + "\n")
        self.stream.flush()


class GitHubProgress:
    """Progress as a GitHub log: one collapsible group per stage, a line per step; the output of RUN steps is
    printed with workflow commands stopped, so a build cannot issue ``::`` commands (set outputs, add masks)."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.stage: str | None = None
        self.stop_token: str | None = None
        self.transfers: dict[str, tuple[str, int]] = {}

    def transfer_started(self, key: str, description: str, total: int | None) -> None:
        self.transfers[key] = (description, 0)

    def transfer_advanced(self, key: str, amount: int) -> None:
        if key in self.transfers:
            description, done = self.transfers[key]
            self.transfers[key] = (description, done + amount)

    def transfer_finished(self, key: str) -> None:
        if key in self.transfers:
            description, done = self.transfers.pop(key)
            self.log.line(f"  {description}: {human_size(done)}")

    def step_started(self, stage: str, index: int, total: int, text: str) -> None:
        self._resume()
        if stage != self.stage:
            self._end_group()
            self.log.command("group", f"Stage {stage}")
            self.stage = stage
        self.log.line(f"[{stage}] STEP {index}/{total}: {text}")
        self.stop_token = uuid.uuid4().hex
        self.log.command("stop-commands", self.stop_token)

    def step_output(self, line: str) -> None:
        self.log.line(line)

    def step_finished(self, result: StepResult) -> None:
        self._resume()
        made = f"layer {human_size(result.layer_size)}" if result.layer_size is not None else "no layer"
        self.log.line(f"  {'cached' if result.cached else 'done'} in {result.seconds:.2f}s, {made}")

    def message(self, text: str) -> None:
        if text.startswith("warning") and self.stop_token is None:
            self.log.command("warning", text.removeprefix("warning:").strip())
        else:
            self.log.line(text)

    def close(self) -> None:
        self._resume()
        self._end_group()

    def _resume(self) -> None:
        if self.stop_token is not None:
            self.log.line(f"::{self.stop_token}::")
            self.stop_token = None

    def _end_group(self) -> None:
        if self.stage is not None:
            self.log.command("endgroup")
            self.stage = None


# ---------------------------------------------------------------------------------------------------------------
# outputs


def set_output(environ: Mapping[str, str], log: Log, name: str, value: str) -> None:
    """Append ``name<<ghadelimiter_UUID`` ... to $GITHUB_OUTPUT (actions-toolkit's message); without the file (an
    old runner) fall back to the ``::set-output::`` command."""
    path = environ.get("GITHUB_OUTPUT", "")
    if path:
        with open(path, "a", encoding="utf-8", newline="") as f:
            f.write(prepare_key_value_message(name, value) + "\n")
    else:
        log.command("set-output", value, name=name)


def append_summary(environ: Mapping[str, str], log: Log, markdown: str) -> None:
    path = environ.get("GITHUB_STEP_SUMMARY", "")
    if not path:
        return
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(log.redact(markdown) + "\n")
    except OSError as exc:
        log.command("warning", f"cannot write the job summary: {exc.strerror or exc}")


def annotation_path(file: str, environ: Mapping[str, str]) -> str:
    """A Dockerfile path as annotations want it: relative to the workspace (the repository root)."""
    workspace = environ.get("GITHUB_WORKSPACE", "")
    path = Path(file)
    if workspace:
        try:
            return str(path.resolve().relative_to(Path(workspace).resolve()))
        except (ValueError, OSError):
            pass
    return file


def report_error(exc: LaminaError, environ: Mapping[str, str], log: Log) -> None:
    """An error annotation; on its Dockerfile line when the error has one (a malformed instruction, a failed RUN)."""
    located = isinstance(exc, DockerfileError) or (isinstance(exc, StepFailed) and exc.file is not None)
    if located:
        assert isinstance(exc, (DockerfileError, StepFailed)) and exc.file is not None
        file, line, detail = exc.file, exc.line, exc.detail
        column = exc.column if isinstance(exc, DockerfileError) else 1
        if line is not None:
            log.command("error", detail, title="Dockerfile", file=annotation_path(file, environ), line=line,
                        col=column)
        else:
            log.command("error", f"{file}: {detail}", title="Dockerfile")
    else:
        log.command("error", str(exc), title="lamina")


def main(environ: Mapping[str, str], stdout: TextIO | None = None) -> int:
    """``lamina ci github``: run the action. Returns the exit code (a failed RUN's own code)."""
    stream = stdout or sys.stdout
    secrets = secret_values(environ)
    log = Log(stream, secrets)
    for secret in secrets:  # first of all, before any other line
        log.mask(secret)
    title = "lamina build"
    # private (0700), inside the action's container: the runner does not mount $RUNNER_TEMP into container actions
    scratch = Path(tempfile.mkdtemp(prefix="lamina-"))
    try:
        try:
            plan = plan_from_environ(environ)
            values, build_environ = dict(plan.values), dict(plan.environ)
            title = f"lamina: {plan.tags[0]}" if plan.tags else "lamina build"
            for note in plan.notes:
                log.command("notice", note, title="lamina")
            if plan.logins:
                base = read_docker_config(environ.get("DOCKER_CONFIG") or None)
                build_environ["DOCKER_CONFIG"] = str(write_docker_config(scratch / "docker-config", plan.logins,
                                                                         base))
                log.line("registry logins: " + ", ".join(sorted(plan.logins)))
            options = options_from(values, build_environ)
            progress = GitHubProgress(log)
            try:
                result = launch_build(options, progress, build_environ)
            finally:
                progress.close()
        except LaminaError as exc:
            report_error(exc, environ, log)
            append_summary(environ, log, summary.failure_summary(title=title, message=str(exc)))
            return exc.exit_code
        except KeyboardInterrupt:
            log.command("error", "interrupted", title="lamina")
            return 130
        publish(result, plan, environ, log, title)
        return 0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # the docker config with the passwords goes first


def image_name(reference: str) -> str:
    """``host:5000/repo:tag`` → ``host:5000/repo``."""
    slash = reference.rfind("/")
    for mark in ("@", ":"):
        at = reference.find(mark, slash + 1)
        if at != -1:
            reference = reference[:at]
    return reference


def publish(result: BuildResult, plan: ActionPlan, environ: Mapping[str, str], log: Log, title: str) -> None:
    if result.plan and not result.digest:  # dry run
        for stage, instruction, verdict in result.plan:
            log.line(f"[{verdict}] ({stage}) {instruction}")
        append_summary(environ, log, summary.plan_summary(title=title, plan=result.plan))
        set_output(environ, log, "tags", "\n".join(plan.tags))
        return
    pushed = plan.push and bool(result.destinations)
    log.line(f"built {result.digest} ({human_size(result.size)})")
    for tag in plan.tags:
        log.line(f"{'pushed' if pushed else 'tagged (not pushed)'} {tag}@{result.digest}")
    image = image_name(plan.tags[0]) if plan.tags else ""
    meta = summary.metadata(image=image, digest=result.digest, config_digest=result.config_digest, tags=plan.tags,
                            size=result.size, steps=result.steps, pushed=pushed, manifest_digest=result.manifest_digest,
                            attestation_manifest=result.attestation_manifest, attestations=result.attestations)
    set_output(environ, log, "digest", result.digest)
    set_output(environ, log, "imageid", result.config_digest)
    set_output(environ, log, "tags", "\n".join(plan.tags))
    set_output(environ, log, "metadata", json.dumps(meta))
    note = plan.notes[0] if plan.notes else ""
    append_summary(environ, log, summary.build_summary(title=title, digest=result.digest, size=result.size,
                                                       tags=plan.tags, steps=result.steps, pushed=pushed, note=note))
