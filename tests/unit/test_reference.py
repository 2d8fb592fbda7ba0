"""Image references: parsing and normalising the way Docker does."""

from __future__ import annotations

import pytest

from lamina.errors import InvalidReference
from lamina.oci.reference import Reference

D = "sha256:" + "a" * 64
E = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize("text, registry, repository, tag, digest", [
    ("busybox", "docker.io", "library/busybox", "latest", None),
    ("busybox:1.36", "docker.io", "library/busybox", "1.36", None),
    ("library/busybox", "docker.io", "library/busybox", "latest", None),
    ("docker.io/busybox", "docker.io", "library/busybox", "latest", None),
    ("docker.io/library/busybox:latest", "docker.io", "library/busybox", "latest", None),
    ("index.docker.io/busybox", "docker.io", "library/busybox", "latest", None),
    ("registry-1.docker.io/org/app:v1", "docker.io", "org/app", "v1", None),
    ("DOCKER.IO/org/app", "docker.io", "org/app", "latest", None),
    ("org/app", "docker.io", "org/app", "latest", None),
    ("org/team/app:v1", "docker.io", "org/team/app", "v1", None),
    ("ghcr.io/org/app:1.2", "ghcr.io", "org/app", "1.2", None),
    ("ghcr.io/app", "ghcr.io", "app", "latest", None),
    ("Ghcr.IO/org/app", "ghcr.io", "org/app", "latest", None),
    ("127.0.0.1:5000/x", "127.0.0.1:5000", "x", "latest", None),
    ("127.0.0.1:5000/x/y:dev", "127.0.0.1:5000", "x/y", "dev", None),
    ("localhost/app", "localhost", "app", "latest", None),
    ("localhost:5000/app:v2", "localhost:5000", "app", "v2", None),
    ("my-registry:5000/app", "my-registry:5000", "app", "latest", None),
    ("[::1]:5000/app", "[::1]:5000", "app", "latest", None),
    ("[fe80::1]/app", "[fe80::1]", "app", "latest", None),
    ("registry.example.com:443/a/b/c", "registry.example.com:443", "a/b/c", "latest", None),
    ("docker.io:443/org/app", "docker.io:443", "org/app", "latest", None),
    (f"busybox@{D}", "docker.io", "library/busybox", None, D),
    (f"busybox:1.36@{D}", "docker.io", "library/busybox", "1.36", D),
    (f"127.0.0.1:5000/x@{E}", "127.0.0.1:5000", "x", None, E),
    (f"127.0.0.1:5000/x:t@{E}", "127.0.0.1:5000", "x", "t", E),
    # a lone name with a colon is name:tag, never a registry (Docker does the same)
    ("localhost:5000", "docker.io", "library/localhost", "5000", None),
    ("localhost", "docker.io", "library/localhost", "latest", None),
    ("example.com", "docker.io", "library/example.com", "latest", None),
    # repository name components: separators . _ __ and runs of -
    ("org/a.b_c__d---e/f-g", "docker.io", "org/a.b_c__d---e/f-g", "latest", None),
    # a first component with "." is a registry, even when the rest looks like Hub
    ("a.b/c", "a.b", "c", "latest", None),
    ("app:UPPER_case-tag.1", "docker.io", "library/app", "UPPER_case-tag.1", None),
    ("app:_leading", "docker.io", "library/app", "_leading", None),
    ("app:" + "t" * 128, "docker.io", "library/app", "t" * 128, None),
])
def test_parse(text: str, registry: str, repository: str, tag: str | None, digest: str | None) -> None:
    ref = Reference.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)


@pytest.mark.parametrize("text, canonical", [
    ("busybox", "docker.io/library/busybox:latest"),
    (f"busybox@{D}", f"docker.io/library/busybox@{D}"),
    (f"busybox:1@{D}", f"docker.io/library/busybox:1@{D}"),
    ("127.0.0.1:5000/x", "127.0.0.1:5000/x:latest"),
    ("[::1]:5000/app:v", "[::1]:5000/app:v"),
])
def test_str_is_canonical_and_round_trips(text: str, canonical: str) -> None:
    ref = Reference.parse(text)
    assert str(ref) == canonical
    assert Reference.parse(str(ref)) == ref


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    (" busybox", "whitespace"),
    ("busy box", "whitespace"),
    ("busybox\n", "whitespace"),
    ("docker://busybox", "scheme"),
    ("https://ghcr.io/a/b", "scheme"),
    ("Busybox", "lower case"),
    ("ghcr.io/Org/app", "lower case"),
    ("docker.io/library/BusyBox:1", "lower case"),
    ("busybox:", "tag after ':' is empty"),
    ("busybox:.dot", "tag '.dot' is invalid"),
    ("busybox:-dash", "is invalid"),
    ("busybox:a+b", "is invalid"),
    ("busybox:" + "t" * 129, "is invalid"),
    ("busybox@sha256:abc", "digest"),
    (f"busybox@{D.upper()}", "digest"),
    ("busybox@md5:" + "a" * 32, "digest"),
    ("busybox@", "digest"),
    (":tag", "repository name is missing"),
    (f"@{D}", "repository name is missing"),
    ("ghcr.io/", "empty path component"),
    ("org//app", "empty path component"),
    ("org/app/", "empty path component"),
    ("-app", "not a valid repository name component"),
    ("app-", "not a valid repository name component"),
    ("a..b", "not a valid repository name component"),
    ("a___b", "not a valid repository name component"),
    ("a:b:c", "not a valid repository name component"),
    ("ghcr.io/a%b", "not a valid repository name component"),
    ("0123456789abcdef" * 4, "64-character hex"),
    ("library/" + "0123456789abcdef" * 4, "64-character hex"),
    ("host-.com/app", "not a valid registry host name"),
    ("ho_st.com/app", "not a valid registry host name"),
    ("host.com:/app", "empty port"),
    ("host.com:99999/app", "not a valid port number"),
    ("host.com:0/app", "not a valid port number"),
    ("host.com:12ab/app", "not a valid port number"),
    ("[::1/app", "unclosed"),
    ("[::1]x/app", r"not \[IPv6\]:port"),
    ("[::1]:/app", "empty port"),
    ("[zz::1]/app", "not a valid registry host name"),
    ("ghcr.io/" + "a" * 250, "longer than 255"),
])
def test_parse_invalid(text: str, message: str) -> None:
    with pytest.raises(InvalidReference, match=message) as info:
        Reference.parse(text)
    assert str(info.value).startswith("invalid image reference")


def test_name_and_docker_hub() -> None:
    hub = Reference.parse("busybox")
    assert hub.name == "docker.io/library/busybox"
    assert hub.is_docker_hub
    assert Reference.parse("index.docker.io/org/app").is_docker_hub
    assert not Reference.parse("ghcr.io/org/app").is_docker_hub
    assert not Reference.parse("localhost:5000/app").is_docker_hub


def test_with_tag_drops_the_digest() -> None:
    ref = Reference.parse(f"ghcr.io/org/app:1@{D}")
    assert str(ref.with_tag("2")) == "ghcr.io/org/app:2"
    with pytest.raises(InvalidReference):
        ref.with_tag("bad tag")


def test_with_digest_keeps_the_tag() -> None:
    ref = Reference.parse("ghcr.io/org/app:1")
    assert str(ref.with_digest(E)) == f"ghcr.io/org/app:1@{E}"
    assert Reference.parse(f"ghcr.io/org/app@{D}").with_digest(E).tag is None
    with pytest.raises(InvalidReference):
        ref.with_digest("sha256:short")


def test_with_registry() -> None:
    ref = Reference.parse(f"busybox:1@{D}")
    mirrored = ref.with_registry("127.0.0.1:5000")
    assert (mirrored.registry, mirrored.repository, mirrored.tag, mirrored.digest) == (
        "127.0.0.1:5000", "library/busybox", "1", D)
    assert mirrored.with_registry("index.docker.io") == ref
    assert ref.with_registry("Mirror.Example.com").registry == "mirror.example.com"
    with pytest.raises(InvalidReference):
        ref.with_registry("bad_host")


def test_references_are_hashable_values() -> None:
    assert Reference.parse("busybox") == Reference.parse("docker.io/library/busybox:latest")
    assert len({Reference.parse("busybox"), Reference.parse("index.docker.io/library/busybox")}) == 1
