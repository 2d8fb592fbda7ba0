"""Tag rules as docker/metadata-action computes them: ``images``, ``tags`` lines (``type=...``) and ``flavor``.

Pure: the event (name, ref, sha, payload) and the clock come in as arguments. What is supported, as in
metadata-action v5: ``type=schedule`` (``pattern``, default ``nightly``), ``type=semver`` (``pattern`` with
``{{version}}``, ``{{major}}``, ``{{minor}}``, ``{{patch}}``, ``{{raw}}``; pre-releases always get ``{{version}}``),
``type=ref,event=branch|tag|pr``, ``type=edge``, ``type=raw,value=...``, ``type=sha`` (``prefix``, default ``sha-``,
``format=short|long``); the attributes ``enable``, ``priority``, ``prefix``, ``suffix``; the expressions
``{{branch}}``, ``{{tag}}``, ``{{sha}}``, ``{{base_ref}}``, ``{{is_default_branch}}`` and ``{{date 'FORMAT'}}``;
flavor ``latest=auto|true|false``, ``prefix=``, ``suffix=``, ``onlatest=``. With ``latest=auto`` the first rule that
yields a tag decides: a ``type=ref,event=tag`` tag or a semver release adds ``latest``, the others do not.
Image names are lower-cased; tags have characters outside ``[A-Za-z0-9._-]`` replaced with ``-``.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from lamina.errors import OptionsError

TYPES = ("schedule", "semver", "ref", "edge", "raw", "sha")
PRIORITIES = {"schedule": 1000, "semver": 900, "pep440": 900, "match": 800, "edge": 700, "ref": 600, "raw": 200,
              "sha": 100}
DEFAULT_RULES = ("type=schedule", "type=ref,event=branch", "type=ref,event=tag", "type=ref,event=pr")
SHORT_SHA = 7
SEMVER = re.compile(r"^v?(?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)\.(?P<patch>0|[1-9]\d*)"
                    r"(?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+(?P<build>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$")
EXPRESSION = re.compile(r"\{\{\s*(?P<name>[A-Za-z_]+)(?P<args>(?:\s+[^}]*)?)\}\}")
MOMENT_TOKENS = re.compile(r"YYYY|YY|MM|DD|HH|mm|ss|SSS|\[[^\]]*\]")
MOMENT_FORMATS = {"YYYY": "%Y", "YY": "%y", "MM": "%m", "DD": "%d", "HH": "%H", "mm": "%M", "ss": "%S"}


@dataclass(frozen=True)
class Event:
    """What the workflow run is about: GITHUB_EVENT_NAME, GITHUB_REF, GITHUB_SHA and the event payload."""

    name: str = ""
    ref: str = ""
    sha: str = ""
    payload: Mapping[str, Any] = field(default_factory=dict)

    @property
    def effective_ref(self) -> str:
        """``pull_request_target`` runs on the base branch; metadata-action tags it as the PR (refs/pull/N/merge)."""
        number = self.payload.get("number")
        if "pull_request_target" in self.name and number is not None:
            return f"refs/pull/{number}/merge"
        if self.name.startswith("pull_request") and not self.ref.startswith("refs/pull/") and number is not None:
            return f"refs/pull/{number}/merge"
        return self.ref

    @property
    def default_branch(self) -> str:
        repository = self.payload.get("repository")
        if isinstance(repository, Mapping):
            return str(repository.get("default_branch") or "")
        return ""


@dataclass(frozen=True)
class Flavor:
    latest: str = "auto"  # auto, true or false
    prefix: str = ""
    prefix_latest: bool = False
    suffix: str = ""
    suffix_latest: bool = False


@dataclass(frozen=True)
class Rule:
    type: str
    attrs: Mapping[str, str]

    def __str__(self) -> str:
        return ",".join([f"type={self.type}", *(f"{k}={v}" for k, v in self.attrs.items())])


@dataclass
class Version:
    main: str | None = None
    partial: list[str] = field(default_factory=list)
    latest: bool | None = None


def _fields(line: str) -> list[str]:
    rows = list(csv.reader([line], skipinitialspace=True))
    return [f.strip() for f in rows[0]] if rows else []


def parse_flavor(lines: Iterable[str]) -> Flavor:
    latest, prefix, suffix = "auto", "", ""
    prefix_latest = suffix_latest = False
    for line in lines:
        on_latest_for = ""
        for item in _fields(line):
            key, eq, value = item.partition("=")
            key = key.strip().lower()
            value = value.strip()
            if not eq:
                raise OptionsError(f"flavor: invalid entry {line!r} (expected key=value)")
            if key == "latest":
                if value not in ("auto", "true", "false"):
                    raise OptionsError(f"flavor: latest={value}: expected auto, true or false")
                latest = value
            elif key == "prefix":
                prefix, on_latest_for = value, "prefix"
            elif key == "suffix":
                suffix, on_latest_for = value, "suffix"
            elif key == "onlatest":
                if value not in ("true", "false"):
                    raise OptionsError(f"flavor: onlatest={value}: expected true or false")
                if on_latest_for == "prefix":
                    prefix_latest = value == "true"
                elif on_latest_for == "suffix":
                    suffix_latest = value == "true"
            else:
                raise OptionsError(f"flavor: unknown entry {line!r}")
    return Flavor(latest, prefix, prefix_latest, suffix, suffix_latest)


def parse_rule(line: str) -> Rule:
    """One ``tags`` line: ``type=ref,event=branch``, ``type=raw,value=x``; a bare value is ``type=raw``."""
    rule_type = ""
    attrs: dict[str, str] = {}
    for item in _fields(line):
        key, eq, value = item.partition("=")
        if not eq:
            attrs["value"] = key.strip()
            continue
        key = key.strip().lower()
        value = value.strip()
        if key == "type":
            if value not in TYPES:
                raise OptionsError(f"tags: {line}: unknown type {value!r} (supported: {', '.join(TYPES)})")
            rule_type = value
        else:
            attrs[key] = value
    rule_type = rule_type or "raw"
    if rule_type == "schedule":
        attrs.setdefault("pattern", "nightly")
    elif rule_type == "semver":
        if "pattern" not in attrs:
            raise OptionsError(f"tags: {line}: type=semver needs pattern=")
        attrs.setdefault("value", "")
    elif rule_type == "edge":
        attrs.setdefault("branch", "")
    elif rule_type == "ref":
        event = attrs.get("event")
        if event is None:
            raise OptionsError(f"tags: {line}: type=ref needs event=branch, tag or pr")
        if event not in ("branch", "tag", "pr"):
            raise OptionsError(f"tags: {line}: event={event}: expected branch, tag or pr")
        if event == "pr":
            attrs.setdefault("prefix", "pr-")
    elif rule_type == "raw":
        if "value" not in attrs:
            raise OptionsError(f"tags: {line}: type=raw needs value=")
    elif rule_type == "sha":
        attrs.setdefault("prefix", "sha-")
        attrs.setdefault("format", "short")
        if attrs["format"] not in ("short", "long"):
            raise OptionsError(f"tags: {line}: format={attrs['format']}: expected short or long")
    attrs.setdefault("enable", "true")
    priority = attrs.setdefault("priority", str(PRIORITIES[rule_type]))
    if not re.fullmatch(r"-?\d+", priority):
        raise OptionsError(f"tags: {line}: priority={priority}: expected a number")
    return Rule(rule_type, attrs)


def parse_rules(lines: Sequence[str]) -> list[Rule]:
    """The rules, highest priority first (stable, as metadata-action sorts them); the default rules when none."""
    rules = [parse_rule(line) for line in (lines or DEFAULT_RULES)]
    return sorted(rules, key=lambda rule: -int(rule.attrs["priority"]))


def sanitize_tag(tag: str) -> str:
    return re.sub(r"[^a-zA-Z0-9._-]+", "-", tag)


def lower_image(name: str) -> str:
    """Lower-case an image reference's name, keeping its tag or digest as written."""
    slash = name.rfind("/")
    cut = len(name)
    for mark in ("@", ":"):
        at = name.find(mark, slash + 1)
        if at != -1:
            cut = min(cut, at)
    return name[:cut].lower() + name[cut:]


def _moment(fmt: str, when: datetime) -> str:
    def token(match: re.Match[str]) -> str:
        text = match.group(0)
        if text.startswith("["):
            return text[1:-1]
        if text == "SSS":
            return f"{when.microsecond // 1000:03d}"
        return when.strftime(MOMENT_FORMATS[text])

    return MOMENT_TOKENS.sub(token, fmt)


class _Expressions:
    def __init__(self, event: Event, now: datetime) -> None:
        self.event = event
        self.now = now

    def branch(self) -> str:
        ref = self.event.effective_ref
        return ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else ""

    def render(self, text: str, extra: Mapping[str, str] | None = None) -> str:
        def one(match: re.Match[str]) -> str:
            name, args = match.group("name"), match.group("args").strip()
            if extra is not None and name in extra:
                return extra[name]
            ref = self.event.effective_ref
            if name == "branch":
                return self.branch()
            if name == "tag":
                return ref.removeprefix("refs/tags/") if ref.startswith("refs/tags/") else ""
            if name == "sha":
                return self.event.sha[:SHORT_SHA]
            if name == "base_ref":
                pull = self.event.payload.get("pull_request")
                if ref.startswith("refs/pull/") and isinstance(pull, Mapping):
                    return str((pull.get("base") or {}).get("ref") or "")
                base = self.event.payload.get("base_ref")
                return str(base).removeprefix("refs/heads/") if ref.startswith("refs/tags/") and base else ""
            if name == "is_default_branch":
                branch = self.branch()
                if not branch:
                    return "false"
                if branch == self.event.default_branch:
                    return "true"
                return "true" if any(e in self.event.name for e in ("create", "discussion", "issues", "schedule")) \
                    else "false"
            if name == "date":
                return self._date(args, text)
            raise OptionsError(f"tags: unknown expression {{{{{name}}}}} in {text!r}")

        return EXPRESSION.sub(one, text)

    def _date(self, args: str, text: str) -> str:
        found = re.match(r"""^(['"])(?P<fmt>.*?)\1(?P<rest>.*)$""", args)
        if not found:
            raise OptionsError(f"tags: {text}: {{{{date 'FORMAT'}}}} needs a quoted format")
        when = self.now
        for key, value in re.findall(r"""(\w+)=['"]?([^'"\s]+)['"]?""", found.group("rest")):
            if key != "tz":
                raise OptionsError(f"tags: {text}: unknown date attribute {key}")
            try:
                when = when.astimezone(ZoneInfo(value))
            except ZoneInfoNotFoundError:
                raise OptionsError(f"tags: {text}: unknown time zone {value}") from None
        return _moment(found.group("fmt"), when)


def compute_version(rules: Sequence[Rule], flavor: Flavor, event: Event, now: datetime) -> Version:
    exp = _Expressions(event, now)
    version = Version()
    ref = event.effective_ref

    def auto(default: bool) -> bool:
        return default if flavor.latest == "auto" else flavor.latest == "true"

    def value_of(raw: str, rule: Rule) -> str:
        if "prefix" in rule.attrs:
            raw = exp.render(rule.attrs["prefix"]) + raw
        elif flavor.prefix:
            raw = exp.render(flavor.prefix) + raw
        if "suffix" in rule.attrs:
            raw = raw + exp.render(rule.attrs["suffix"])
        elif flavor.suffix:
            raw = raw + exp.render(flavor.suffix)
        return raw

    def add(raw: str, latest: bool) -> None:
        if not raw:
            return
        tag = sanitize_tag(raw)
        if version.main is None:
            version.main = tag
        elif tag != version.main and tag not in version.partial:
            version.partial.append(tag)
        if version.latest is None:
            version.latest = latest

    for rule in rules:
        enabled = exp.render(rule.attrs["enable"])
        if enabled not in ("true", "false"):
            raise OptionsError(f"tags: {rule}: enable={enabled}: expected true or false")
        if enabled == "false":
            continue
        kind, attrs = rule.type, rule.attrs
        if kind == "schedule":
            if "schedule" in event.name:
                add(value_of(exp.render(attrs["pattern"]), rule), auto(False))
        elif kind == "semver":
            if not ref.startswith("refs/tags/") and not attrs["value"]:
                continue
            raw = exp.render(attrs["value"]) if attrs["value"] else ref.removeprefix("refs/tags/").replace("/", "-")
            parsed = SEMVER.match(raw)
            if not parsed:
                continue  # metadata-action: a warning, no tag
            plain = f"{parsed['major']}.{parsed['minor']}.{parsed['patch']}"
            full = plain + (f"-{parsed['pre']}" if parsed["pre"] else "")
            names = {"version": full, "major": parsed["major"], "minor": parsed["minor"], "patch": parsed["patch"],
                     "raw": raw}
            if parsed["pre"]:
                pattern = attrs["pattern"] if attrs["pattern"].replace(" ", "") == "{{raw}}" else "{{version}}"
                add(value_of(exp.render(pattern, names), rule), auto(False))
            else:
                add(value_of(exp.render(attrs["pattern"], names), rule), auto(True))
        elif kind == "ref":
            event_kind = attrs["event"]
            if event_kind == "branch" and ref.startswith("refs/heads/"):
                add(value_of(ref.removeprefix("refs/heads/"), rule), auto(False))
            elif event_kind == "tag" and ref.startswith("refs/tags/"):
                add(value_of(ref.removeprefix("refs/tags/"), rule), auto(True))
            elif event_kind == "pr" and ref.startswith("refs/pull/"):
                add(value_of(ref.removeprefix("refs/pull/").removesuffix("/merge"), rule), auto(False))
        elif kind == "edge":
            if ref.startswith("refs/heads/"):
                branch = attrs["branch"] or event.default_branch
                if branch == ref.removeprefix("refs/heads/"):
                    add(value_of("edge", rule), auto(False))
        elif kind == "raw":
            add(value_of(exp.render(attrs["value"]), rule), auto(False))
        elif kind == "sha" and event.sha:
            sha = event.sha if attrs["format"] == "long" else event.sha[:SHORT_SHA]
            add(value_of(sha, rule), auto(False))
    if version.latest is None:
        version.latest = False
    return version


def expand_tags(images: Sequence[str], rules: Sequence[Rule], flavor: Flavor, event: Event,
                now: datetime) -> list[str]:
    """Full references ``image:tag`` for every image, in metadata-action's order (main, partials, latest)."""
    version = compute_version(rules, flavor, event, now)
    if version.main is None:
        return []
    tags = [version.main, *version.partial]
    if version.latest:
        latest = (flavor.prefix if flavor.prefix_latest else "") + "latest" + \
                 (flavor.suffix if flavor.suffix_latest else "")
        tags.append(sanitize_tag(latest))
    out: list[str] = []
    for image in images:
        for tag in tags:
            ref = f"{image.lower()}:{tag}"
            if ref not in out:
                out.append(ref)
    return out
