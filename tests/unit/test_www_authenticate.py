"""WWW-Authenticate parsing and the Bearer token exchange (pure parts of lamina.oci.registry.auth)."""

from __future__ import annotations

import base64
import json

import pytest

from lamina.oci.registry.auth import (
    DEFAULT_TOKEN_SECONDS,
    BearerToken,
    Challenge,
    ChallengeError,
    basic_authorization,
    find_challenge,
    parse_token_response,
    parse_www_authenticate,
    pull_scope,
    push_scope,
    token_request,
)
from lamina.oci.registry.credentials import Credentials

HUB = ('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
       'scope="repository:library/busybox:pull,push"')


@pytest.mark.parametrize("header, expected", [
    (HUB, [Challenge("bearer", {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                                "scope": "repository:library/busybox:pull,push"})]),
    ('Basic realm="lamina-test"', [Challenge("basic", {"realm": "lamina-test"})]),
    ('Bearer realm="https://a/token", Basic realm="b"',
     [Challenge("bearer", {"realm": "https://a/token"}), Challenge("basic", {"realm": "b"})]),
    ('Basic realm="x", Bearer realm="https://a/t",service="s"',
     [Challenge("basic", {"realm": "x"}), Challenge("bearer", {"realm": "https://a/t", "service": "s"})]),
    ('Bearer realm="a \\"quoted\\" b, with comma"', [Challenge("bearer", {"realm": 'a "quoted" b, with comma'})]),
    ('Bearer realm="back\\\\slash"', [Challenge("bearer", {"realm": "back\\slash"})]),
    ("Bearer realm=https://a/token,service=reg", [Challenge("bearer", {"realm": "https://a/token", "service": "reg"})]),
    ('BEARER REALM="X"', [Challenge("bearer", {"realm": "X"})]),
    ('Bearer realm = "x" , service = "y"', [Challenge("bearer", {"realm": "x", "service": "y"})]),
    ('Bearer realm="x",,  service="y",', [Challenge("bearer", {"realm": "x", "service": "y"})]),
    ("Negotiate abc==", [Challenge("negotiate", {"token68": "abc=="})]),
    ("Negotiate abc==, Basic realm=x", [Challenge("negotiate", {"token68": "abc=="}), Challenge("basic", {"realm": "x"})]),
    ("Bearer", [Challenge("bearer", {})]),
    ("Bearer, Basic", [Challenge("bearer", {}), Challenge("basic", {})]),
    ('Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:u/i:pull",error="insufficient_scope"',
     [Challenge("bearer", {"realm": "https://ghcr.io/token", "service": "ghcr.io", "scope": "repository:u/i:pull",
                           "error": "insufficient_scope"})]),
    ("", []),
    ("  ", []),
])
def test_parse_www_authenticate(header: str, expected: list[Challenge]) -> None:
    assert parse_www_authenticate(header) == expected


@pytest.mark.parametrize("header, message", [
    ('Bearer realm="x', "not terminated"),
    ('realm="x"', "before any authentication scheme"),
    ("=x", "unexpected character"),
    ('Bearer realm="x" junk', "expected ','"),
    ("@", "unexpected character"),
    ('Bearer realm="x", @', "unexpected character"),
])
def test_parse_www_authenticate_malformed(header: str, message: str) -> None:
    with pytest.raises(ChallengeError, match=message):
        parse_www_authenticate(header)


def test_challenge_realm() -> None:
    assert Challenge("basic", {"realm": "r"}).realm == "r"
    assert Challenge("basic").realm == ""


@pytest.mark.parametrize("header, scheme", [
    ('Basic realm="x", Bearer realm="https://a/t"', "bearer"),
    ('Negotiate abc, Basic realm="x"', "basic"),
    ("Negotiate abc", None),
    ("", None),
])
def test_find_challenge_prefers_bearer(header: str, scheme: str | None) -> None:
    found = find_challenge(parse_www_authenticate(header))
    assert (found.scheme if found else None) == scheme


def test_scopes_and_basic() -> None:
    assert pull_scope("library/busybox") == "repository:library/busybox:pull"
    assert push_scope("org/app") == "repository:org/app:pull,push"
    header = basic_authorization("user", "pa:ss")
    assert header.startswith("Basic ")
    assert base64.b64decode(header[6:]) == b"user:pa:ss"


def test_token_request_anonymous() -> None:
    challenge = parse_www_authenticate(HUB)[0]
    req = token_request(challenge, ["repository:library/busybox:pull"], None)
    assert req.method == "GET"
    assert req.url == "https://auth.docker.io/token"
    assert req.params == (("service", "registry.docker.io"), ("scope", "repository:library/busybox:pull"))
    assert req.authorization is None
    assert req.form == ()


def test_token_request_with_password_several_scopes() -> None:
    challenge = Challenge("bearer", {"realm": "https://ghcr.io/token"})
    creds = Credentials("me", "hunter2-secret")
    req = token_request(challenge, ["repository:a:pull", "repository:b:pull,push"], creds)
    assert req.method == "GET"
    assert req.params == (("scope", "repository:a:pull"), ("scope", "repository:b:pull,push"))
    assert req.authorization == basic_authorization("me", "hunter2-secret")
    assert "hunter2-secret" not in repr(req)
    assert req.authorization is not None and req.authorization not in repr(req)


def test_token_request_with_identity_token_is_oauth2_post() -> None:
    challenge = parse_www_authenticate(HUB)[0]
    creds = Credentials("<token>", "", identity_token="refresh-me-secret")
    req = token_request(challenge, ["repository:x/y:pull", "repository:x/z:pull"], creds)
    assert req.method == "POST"
    form = dict(req.form)
    assert form == {"grant_type": "refresh_token", "refresh_token": "refresh-me-secret", "client_id": "lamina",
                    "service": "registry.docker.io", "scope": "repository:x/y:pull repository:x/z:pull"}
    assert req.authorization is None
    assert "refresh-me-secret" not in repr(req)


@pytest.mark.parametrize("realm", ["", "/token", "ftp://a/token", "https://"])
def test_token_request_needs_a_usable_realm(realm: str) -> None:
    with pytest.raises(ChallengeError, match="realm"):
        token_request(Challenge("bearer", {"realm": realm}), ["repository:a:pull"], None)


@pytest.mark.parametrize("body, value, expires", [
    ({"token": "tok-abc", "expires_in": 300}, "tok-abc", 300),
    ({"access_token": "tok-oauth", "expires_in": 60}, "tok-oauth", 60),
    ({"token": "tok-t", "access_token": "tok-a"}, "tok-t", DEFAULT_TOKEN_SECONDS),
    ({"token": "tok-t", "expires_in": 0}, "tok-t", DEFAULT_TOKEN_SECONDS),
    ({"token": "tok-t", "expires_in": "300"}, "tok-t", DEFAULT_TOKEN_SECONDS),
    ({"token": "tok-t", "expires_in": True}, "tok-t", DEFAULT_TOKEN_SECONDS),
    ({"token": "", "access_token": "tok-a"}, "tok-a", DEFAULT_TOKEN_SECONDS),
])
def test_parse_token_response(body: dict[str, object], value: str, expires: int) -> None:
    token = parse_token_response(json.dumps(body).encode())
    assert token == BearerToken(value, expires)
    assert value not in repr(token)


@pytest.mark.parametrize("body, message", [
    (b"not json", "not answer with JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b"{}", "no token"),
    (b'{"token": 5}', "no token"),
    (b'{"token": ""}', "no token"),
])
def test_parse_token_response_errors(body: bytes, message: str) -> None:
    with pytest.raises(ChallengeError, match=message):
        parse_token_response(body)
