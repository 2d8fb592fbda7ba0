"""Image references (``busybox``, ``ghcr.io/org/app:1.2``, ``127.0.0.1:5000/x@sha256:...``), parsed and normalised
the way Docker does it. Pure: no I/O.

Grammar (Docker's ``distribution/reference``)::

    reference  := [registry "/"] path [":" tag] ["@" digest]
    registry   := host [":" port]          host: DNS name, IPv4, or "[" IPv6 "]"
    path       := component ("/" component)*
    component  := [a-z0-9]+ (("." | "_" | "__" | "-"+) [a-z0-9]+)*
    tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
    digest     := "sha256:" 64 lower-case hex digits

The first path component is a registry only if it contains ``.`` or ``:`` or is ``localhost``; otherwise the image
is on Docker Hub (``docker.io``), where one-component names live under ``library/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from lamina.errors import InvalidReference

DOCKER_HUB = "docker.io"
DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
DEFAULT_TAG = "latest"
MAX_NAME_LENGTH = 255

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DNS_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*")
_IPV6_HOST = re.compile(r"\[[0-9A-Fa-f:.]+\]")
_PORT = re.compile(r"[0-9]{1,5}")


@dataclass(frozen=True)
class Reference:
    """A normalised image reference. Build one with :meth:`parse`."""

    registry: str  # "docker.io", "ghcr.io", "127.0.0.1:5000", "[::1]:5000"
    repository: str  # "library/busybox", "org/app"
    tag: str | None  # None only when a digest is set and no tag was given
    digest: str | None

    @classmethod
    def parse(cls, text: str) -> Reference:
        """Parse and normalise ``text``; raise :class:`InvalidReference` saying what is wrong."""
        if not text:
            raise InvalidReference("invalid image reference: the reference is empty")
        if text != text.strip() or any(c.isspace() for c in text):
            raise InvalidReference(f"invalid image reference {text!r}: it contains whitespace")
        if "://" in text:
            raise InvalidReference(f"invalid image reference {text!r}: leave out the scheme ({text.split('://')[0]}://)")

        rest, at, digest = text.partition("@")
        if at:
            _check_digest(text, digest)
        last_slash = rest.rfind("/")
        colon = rest.rfind(":")
        tag: str | None = None
        if colon > last_slash:
            rest, tag = rest[:colon], rest[colon + 1:]
            _check_tag(text, tag)
        if not rest:
            raise InvalidReference(f"invalid image reference {text!r}: the repository name is missing")

        first, slash, remainder = rest.partition("/")
        if slash and ("." in first or ":" in first or first == "localhost"):
            registry, repository = _normalise_registry(text, first), remainder
        else:
            registry, repository = DOCKER_HUB, rest
        if registry == DOCKER_HUB and "/" not in repository:
            repository = "library/" + repository
        _check_repository(text, repository)
        if len(registry) + 1 + len(repository) > MAX_NAME_LENGTH:
            raise InvalidReference(f"invalid image reference {text!r}: the name is longer than {MAX_NAME_LENGTH}"
                                   " characters")
        if tag is None and not at:
            tag = DEFAULT_TAG
        return cls(registry, repository, tag, digest if at else None)

    def __str__(self) -> str:
        out = self.name
        if self.tag is not None:
            out += ":" + self.tag
        if self.digest is not None:
            out += "@" + self.digest
        return out

    @property
    def name(self) -> str:
        """``registry/repository``, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def is_docker_hub(self) -> bool:
        return self.registry == DOCKER_HUB

    def with_tag(self, tag: str) -> Reference:
        """The same repository at ``tag``; any digest is dropped (the result names the tag)."""
        _check_tag(f"{self.name}:{tag}", tag)
        return replace(self, tag=tag, digest=None)

    def with_digest(self, digest: str) -> Reference:
        """The same repository pinned to ``digest``; the tag is kept (``repo:tag@digest``)."""
        _check_digest(f"{self.name}@{digest}", digest)
        return replace(self, digest=digest)

    def with_registry(self, registry: str) -> Reference:
        """The same repository, tag and digest on another registry (``docker.io`` aliases are normalised)."""
        return replace(self, registry=_normalise_registry(f"{registry}/{self.repository}", registry))


def _normalise_registry(text: str, registry: str) -> str:
    host, port = registry, ""
    if registry.startswith("["):
        end = registry.find("]")
        if end < 0:
            raise InvalidReference(f"invalid image reference {text!r}: registry {registry!r} has an unclosed '['")
        host, after = registry[:end + 1], registry[end + 1:]
        if after:
            if not after.startswith(":"):
                raise InvalidReference(f"invalid image reference {text!r}: registry {registry!r} is not [IPv6]:port")
            port = after[1:]
            if not port:
                raise InvalidReference(f"invalid image reference {text!r}: registry {registry!r} has an empty port")
        valid_host = bool(_IPV6_HOST.fullmatch(host))
    else:
        if ":" in registry:
            host, port = registry.split(":", 1)
            if not port:
                raise InvalidReference(f"invalid image reference {text!r}: registry {registry!r} has an empty port")
        valid_host = bool(_DNS_HOST.fullmatch(host))
    if not valid_host:
        raise InvalidReference(f"invalid image reference {text!r}: {host!r} is not a valid registry host name")
    if port and (not _PORT.fullmatch(port) or not 0 < int(port) < 65536):
        raise InvalidReference(f"invalid image reference {text!r}: {port!r} is not a valid port number")
    host = host.lower()
    if host in DOCKER_HUB_ALIASES and not port:
        return DOCKER_HUB
    return host + (":" + port if port else "")


def _check_repository(text: str, repository: str) -> None:
    if _HEX64.fullmatch(repository.removeprefix("library/")):
        raise InvalidReference(f"invalid image reference {text!r}: a repository name cannot be a 64-character hex"
                               " string (it looks like an image ID)")
    for component in repository.split("/"):
        if not component:
            raise InvalidReference(f"invalid image reference {text!r}: the repository {repository!r} has an empty"
                                   " path component")
        if _COMPONENT.fullmatch(component):
            continue
        if _COMPONENT.fullmatch(component.lower()):
            raise InvalidReference(f"invalid image reference {text!r}: repository names must be lower case"
                                   f" ({repository!r})")
        raise InvalidReference(f"invalid image reference {text!r}: {component!r} is not a valid repository name"
                               " component (lower-case letters and digits, separated by '.', '_', '__' or '-')")


def _check_tag(text: str, tag: str) -> None:
    if not tag:
        raise InvalidReference(f"invalid image reference {text!r}: the tag after ':' is empty")
    if not _TAG.fullmatch(tag):
        raise InvalidReference(f"invalid image reference {text!r}: tag {tag!r} is invalid (up to 128 letters, digits,"
                               " '_', '.' and '-', not starting with '.' or '-')")


def _check_digest(text: str, digest: str) -> None:
    if not _DIGEST.fullmatch(digest):
        raise InvalidReference(f"invalid image reference {text!r}: digest {digest!r} is not sha256:<64 lower-case"
                               " hex digits>")
