"""docker/build-push-action's inputs that lamina's own inputs do not spell the same way: each is mapped onto a build
flag or refused with one line saying what to write instead, so that a workflow switched over in one line never
loses a setting silently (the runner only warns about inputs an action does not declare; this action declares all
of build-push-action's).

Pure: text in, :class:`BuildxInputs` out; raises :class:`lamina.errors.OptionsError`.

* ``cache-from`` / ``cache-to``: ``type=registry,ref=REPO[:TAG]`` (or a bare ``REPO[:TAG]``, buildx's shorthand)
  turns on lamina's registry layer cache in repository ``REPO``: one tag per step, keyed by its cache key, so the
  tag given is not used. ``cache-from`` alone reads the cache without pushing to it (``--no-push-cache``). Other
  types (``gha``, ``local``, ``inline``, ``s3``, ``azblob``) are refused.
* ``outputs``: ``type=registry`` and ``type=image,push=true`` push (``name=`` adds references),
  ``type=docker,dest=FILE`` writes a docker-archive tarball, ``type=oci,dest=FILE`` an OCI archive and
  ``type=oci,dest=DIR,tar=false`` an OCI layout; ``type=cacheonly`` builds only. A daemon load and filesystem
  exports are refused.
* ``load: true`` is refused (no Docker daemon: ``tar-path`` and ``docker load`` do it).
* ``platforms`` is ``platform``; ``secret-envs`` (``id=VARIABLE``) adds secrets read from the environment;
  ``ssh`` is ``--ssh``.
* Inputs that only tune BuildKit's builder (``builder``, ``pull``) are accepted with a note;
  those that would change the image or how RUN behaves in ways lamina cannot honour are refused.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from lamina.cache.entries import LAYOUT_PREFIX
from lamina.errors import InvalidReference, OptionsError
from lamina.oci.reference import Reference

# build-push-action inputs accepted with a note (they have nothing to do in lamina) → the note
NOTED_INPUTS = {
    "builder": "input builder: lamina has no builder instances; ignored",
    "pull": "input pull: lamina resolves every base image in its registry at each build; ignored",
}
# build-push-action inputs refused (a value given) → what to do instead
REFUSED_INPUTS = {
    "add-hosts": "lamina's RUN uses the runner's /etc/hosts; add the entries in the RUN step itself",
    "allow": "lamina grants no extra entitlements (network.host is RUN's default; security.insecure has no "
             "equivalent)",
    "annotations": "lamina does not set manifest annotations; use labels",
    "attests": "lamina does not attach attestations yet",
    "build-contexts": "lamina has no named build contexts; COPY --from an image reference or a stage instead",
    "call": "lamina only builds (no check or outline calls)",
    "cgroup-parent": "lamina's RUN runs in the action's own cgroup",
    "network": "lamina's RUN shares the runner's network (as network=host); RUN --network=none is per step",
    "no-cache-filters": "lamina rebuilds every step or none: use no-cache: true",
    "shm-size": "lamina's RUN uses the container's /dev/shm; size it with the job's container options",
    "ulimit": "lamina's RUN inherits the action's limits",
}


@dataclass(frozen=True)
class CacheSpec:
    """One ``cache-from`` / ``cache-to`` entry."""

    kind: str  # "registry", "gha", ...
    attributes: Mapping[str, str]


@dataclass
class BuildxInputs:
    """What build-push-action's inputs ask for, as lamina's build flags (Flag.dest → value) and action settings."""

    flags: dict[str, object] = field(default_factory=dict)
    push: bool | None = None  # outputs say push (True) or build only (False); None: the push input decides
    references: list[str] = field(default_factory=list)  # extra image references from outputs' name=
    secrets: list[str] = field(default_factory=list)  # --secret values (id=...,env=...)
    notes: list[str] = field(default_factory=list)


def parse_attributes(text: str, what: str) -> dict[str, str]:
    """``key=value,key=value`` as buildx reads it (CSV: a value holding a comma is quoted)."""
    fields = next(csv.reader([text], skipinitialspace=True), [])
    out: dict[str, str] = {}
    for item in fields:
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if not eq or not key:
            raise OptionsError(f"input {what}: {text!r}: expected key=value pairs separated by commas "
                               f"({item.strip()!r} has no '=')")
        out[key] = value.strip()
    return out


def parse_cache_spec(text: str, what: str) -> CacheSpec:
    """A ``cache-from`` / ``cache-to`` line; a bare reference is ``type=registry,ref=...`` (buildx's shorthand)."""
    if "=" not in text:
        return CacheSpec("registry", {"ref": text.strip()})
    attributes = parse_attributes(text, what)
    return CacheSpec(attributes.pop("type", "registry").lower(), attributes)


def _cache_repository(spec: CacheSpec, what: str) -> str:
    if spec.kind == "local":  # a directory (with actions/cache): lamina's cache as an OCI layout there
        directory = spec.attributes.get("src" if what == "cache-from" else "dest", "")
        if not directory:
            raise OptionsError(f"input {what}: type=local needs {'src' if what == 'cache-from' else 'dest'}=DIRECTORY")
        return LAYOUT_PREFIX + directory
    if spec.kind != "registry":
        hint = ("lamina keeps its layer cache in a registry or a directory, not in the GitHub Actions cache"
                if spec.kind == "gha" else f"lamina keeps its layer cache in a registry or a directory (type={spec.kind}"
                " is neither)")
        raise OptionsError(f"input {what}: type={spec.kind}: {hint}; use type=registry,ref=REGISTRY/IMAGE:cache "
                           "(or cache: true, which caches in <first tag's repository>/cache), or type=local with a "
                           "directory that actions/cache keeps")
    ref = spec.attributes.get("ref", "")
    if not ref:
        raise OptionsError(f"input {what}: type=registry needs ref=REGISTRY/REPOSITORY[:TAG]")
    try:
        reference = Reference.parse(ref.lower())
    except InvalidReference as exc:
        raise OptionsError(f"input {what}: ref={ref}: {exc}") from None
    if reference.digest:
        raise OptionsError(f"input {what}: ref={ref}: a cache is a repository; give it without a digest")
    return reference.name


def map_cache(cache_from: list[str], cache_to: list[str]) -> BuildxInputs:
    """``cache-from`` / ``cache-to`` → ``cache``, ``cache_repo`` and ``no_push_cache``."""
    out = BuildxInputs()
    read = [_cache_repository(parse_cache_spec(line, "cache-from"), "cache-from") for line in cache_from]
    write = [_cache_repository(parse_cache_spec(line, "cache-to"), "cache-to") for line in cache_to]
    repositories = list(dict.fromkeys(write + read))
    if not repositories:
        return out
    repository = repositories[0]
    out.flags.update(cache=True, cache_repo=repository)
    if not write:
        out.flags["no_push_cache"] = True
        out.notes.append(f"cache-from without cache-to: the layer cache in {repository} is read, not written")
    layouts = [r for r in repositories if r.startswith(LAYOUT_PREFIX)]
    if len(layouts) > 1:
        raise OptionsError(f"inputs cache-from/cache-to: type=local names {len(layouts)} directories; lamina keeps its "
                           "cache in one directory, which it updates in place and prunes with `lamina cache prune "
                           "--cache-repo oci:DIR` (no move step needed): give the same directory as src and dest")
    if len(repositories) > 1:
        out.notes.append(f"lamina uses one cache repository, {repository}; "
                         f"{', '.join(repositories[1:])} not used")
    if repository.startswith(LAYOUT_PREFIX):
        out.notes.append(f"layer cache in the OCI layout {repository.removeprefix(LAYOUT_PREFIX)}: one entry per step, "
                         "every step cached (as mode=max)")
        return out
    out.notes.append(f"layer cache in {repository}: one tag per step, named by its cache key (any tag given in "
                     "ref= is not used; every step is cached, as mode=max)")
    return out


def map_outputs(lines: list[str], out: BuildxInputs) -> None:
    """``outputs`` → push, tar_path, oci_layout_path, extra references; refuses what lamina cannot write."""
    for line in lines:
        if "=" not in line:  # buildx: a bare path is type=local,dest=PATH; "-" is a tar on stdout
            attributes = {"type": "local", "dest": line}
        else:
            attributes = parse_attributes(line, "outputs")
        kind = attributes.get("type", "").lower()
        dest = attributes.get("dest", "")
        if kind in ("registry", "image"):
            names = [name.strip() for name in attributes.get("name", "").split(",") if name.strip()]
            out.references += names
            if kind == "registry" or attributes.get("push", "false").lower() == "true":
                out.push = True
            elif out.push is None:
                out.push = False
        elif kind == "docker":
            if not dest:
                raise OptionsError("input outputs: type=docker without dest loads into a Docker daemon, which lamina "
                                   "does not use: give dest=FILE (a docker-archive tarball) and run docker load -i "
                                   "FILE in a later step")
            out.flags["tar_path"] = dest
        elif kind == "oci":
            if not dest:
                raise OptionsError("input outputs: type=oci needs dest=FILE (a tar archive), or dest=DIR,tar=false "
                                   "(a layout directory)")
            tarred = attributes.get("tar", "true").lower() != "false"
            out.flags["oci_tar_path" if tarred else "oci_layout_path"] = dest
        elif kind == "cacheonly":
            if out.push is None:
                out.push = False
        elif kind in ("local", "tar"):
            raise OptionsError(f"input outputs: type={kind}: lamina does not export the root filesystem; write "
                               "an image (type=docker,dest=FILE) and unpack it, e.g. with umoci or skopeo")
        else:
            raise OptionsError(f"input outputs: {line!r}: unknown output type {kind or '(none)'!r} (lamina writes "
                               "type=registry, type=image, type=docker,dest=FILE and type=oci,dest=FILE or DIR,tar=false)")


def map_inputs(get: Callable[[str], str], split: Callable[[str, bool], list[str]],
               is_true: Callable[[str], bool]) -> BuildxInputs:
    """Every build-push-action input lamina does not name the same way. ``get(name)`` is the input's text,
    ``split(text, commas)`` a list input's items, ``is_true(name)`` a boolean input's value."""
    out = map_cache(split(get("cache-from"), False), split(get("cache-to"), False))
    map_outputs(split(get("outputs"), False), out)
    if is_true("load"):
        raise OptionsError("input load: there is no Docker daemon for lamina to load into; give tar-path: "
                           "image.tar and run docker load -i image.tar in a later step")
    platforms = split(get("platforms"), True)
    if platforms:
        if get("platform"):
            raise OptionsError("inputs platform and platforms are both set: give one")
        if len(platforms) > 1:
            raise OptionsError(f"input platforms: {', '.join(platforms)}: lamina builds one platform per step; use "
                               "a matrix with one platform each and lamina manifest create to join them")
        out.flags["platform"] = platforms[0]
    for item in split(get("secret-envs"), True):
        secret_id, eq, variable = item.partition("=")
        if not eq or not secret_id.strip() or not variable.strip():
            raise OptionsError(f"input secret-envs: expected id=VARIABLE items, got {item!r}")
        out.secrets.append(f"id={secret_id.strip()},env={variable.strip()}")
    ssh = split(get("ssh"), False)  # default, ID=SOCKET or ID=KEY[,KEY...], one a line
    if ssh:
        out.flags["ssh"] = ssh
    for name, note in NOTED_INPUTS.items():
        if get(name) and not (name == "pull" and get(name).lower() == "false"):
            out.notes.append(note)
    if get("provenance"):  # buildx's spelling: false, true, mode=min|max[,version=...]
        out.flags["provenance"] = get("provenance")
    sbom = get("sbom").strip().lower()
    if sbom:  # true, false, or buildx's generator=IMAGE attributes (lamina has one generator: its own)
        if sbom.startswith("generator="):
            out.notes.append("input sbom: lamina writes the SBOM itself; the generator image is not used")
        out.flags["sbom"] = sbom not in ("false", "0", "no", "off")
    for name, hint in REFUSED_INPUTS.items():
        if get(name):
            raise OptionsError(f"input {name}: {hint}")
    return out
