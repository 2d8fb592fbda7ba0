"""Registry authentication: parsing ``WWW-Authenticate`` challenges and the Bearer token exchange.

Everything here is pure: :func:`token_request` says what to send to the token server and :func:`parse_token_response`
reads its answer; ``client.py`` does the HTTP. Token values never appear in a ``repr``.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from lamina.oci.registry.credentials import Credentials

CLIENT_ID = "lamina"
DEFAULT_TOKEN_SECONDS = 60
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_SPACE = re.compile(r"[ \t]*")
_SEPARATORS = re.compile(r"[ \t,]*")
_BARE_VALUE = re.compile(r'[^\s,"]+')
_ESCAPE = re.compile(r"\\(.)")


class ChallengeError(ValueError):
    """A ``WWW-Authenticate`` header or a token server answer that cannot be understood."""


@dataclass(frozen=True)
class Challenge:
    """One challenge: ``scheme`` in lower case (``basic``, ``bearer``) and its parameters (names in lower case)."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")


@dataclass(frozen=True)
class TokenRequest:
    """What to send to a Bearer token server: a GET with ``params`` or an OAuth2 POST with ``form``."""

    method: str  # "GET" or "POST"
    url: str
    params: tuple[tuple[str, str], ...] = ()
    form: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    authorization: str | None = field(default=None, repr=False)  # "Basic ..." for GET with credentials


@dataclass(frozen=True)
class BearerToken:
    value: str = field(repr=False)
    expires_in: int = DEFAULT_TOKEN_SECONDS


def pull_scope(repository: str) -> str:
    return f"repository:{repository}:pull"


def push_scope(repository: str) -> str:
    return f"repository:{repository}:pull,push"


def basic_authorization(username: str, password: str) -> str:
    """The ``Authorization`` header value for HTTP Basic."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def parse_www_authenticate(header: str) -> list[Challenge]:
    """Parse a ``WWW-Authenticate`` value into its challenges, in order.

    Handles several challenges in one header (``Bearer realm="a", Basic realm="b"``), quoted values containing
    commas or escaped quotes, unquoted values, and token68 credentials (``Negotiate abc==``, kept as the param
    ``token68``). Raises :class:`ChallengeError` on malformed input (unterminated quotes, a parameter before any
    scheme, a parameter without a value, stray characters).
    """
    challenges: list[Challenge] = []
    pos = _skip(_SEPARATORS, header, 0)
    while pos < len(header):
        scheme = _TOKEN.match(header, pos)
        if scheme is None:
            raise ChallengeError(f"unexpected character {header[pos]!r} at position {pos}")
        pos = _skip(_SPACE, header, scheme.end())
        if header.startswith("=", pos):
            raise ChallengeError(f"parameter {scheme.group()!r} comes before any authentication scheme")
        params: dict[str, str] = {}
        token68 = _TOKEN68.match(header, pos)
        if token68 is not None:
            after = _skip(_SPACE, header, token68.end())
            if after == len(header) or header[after] == ",":
                params["token68"] = token68.group()
                pos = after
        pos = _skip(_SEPARATORS, header, pos)
        while pos < len(header) and "token68" not in params:
            name = _TOKEN.match(header, pos)
            if name is None:
                raise ChallengeError(f"unexpected character {header[pos]!r} at position {pos}")
            eq = _skip(_SPACE, header, name.end())
            if not header.startswith("=", eq):
                break  # the next challenge's scheme
            pos = _skip(_SPACE, header, eq + 1)
            quoted = _QUOTED.match(header, pos)
            if quoted is not None:
                value, pos = _ESCAPE.sub(r"\1", quoted.group(1)), quoted.end()
            elif header.startswith('"', pos):
                raise ChallengeError(f"the quoted value of {name.group()!r} is not terminated")
            else:
                token = _BARE_VALUE.match(header, pos)
                if token is None:
                    raise ChallengeError(f"parameter {name.group()!r} has no value")
                value, pos = token.group(), token.end()
            params[name.group().lower()] = value
            pos = _skip(_SPACE, header, pos)
            if pos < len(header) and header[pos] != ",":
                raise ChallengeError(f"expected ',' after the value of {name.group()!r} at position {pos}")
            pos = _skip(_SEPARATORS, header, pos)
        challenges.append(Challenge(scheme.group().lower(), params))
    return challenges


def _skip(pattern: re.Pattern[str], text: str, pos: int) -> int:
    match = pattern.match(text, pos)
    return match.end() if match else pos


def find_challenge(challenges: list[Challenge]) -> Challenge | None:
    """The challenge to answer: Bearer if offered, else Basic, else None."""
    for scheme in ("bearer", "basic"):
        for challenge in challenges:
            if challenge.scheme == scheme:
                return challenge
    return None


def token_request(challenge: Challenge, scopes: list[str], credentials: Credentials | None) -> TokenRequest:
    """The request that gets a Bearer token for ``scopes`` from the challenge's realm.

    With an identity token (``docker login`` against an OAuth2 token server) it is the OAuth2 refresh-token POST;
    otherwise a GET with ``service`` and one ``scope`` parameter per scope, with Basic credentials when we have them.
    """
    realm = challenge.realm
    parts = urlsplit(realm)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ChallengeError(f"the Bearer challenge has no usable realm URL ({realm!r})")
    service = challenge.params.get("service", "")
    if credentials is not None and credentials.identity_token:
        form = [("grant_type", "refresh_token"), ("refresh_token", credentials.identity_token),
                ("client_id", CLIENT_ID)]
        if service:
            form.append(("service", service))
        if scopes:
            form.append(("scope", " ".join(scopes)))
        return TokenRequest("POST", realm, form=tuple(form))
    params = [("service", service)] if service else []
    params += [("scope", scope) for scope in scopes]
    authorization = None
    if credentials is not None and credentials.password:
        authorization = basic_authorization(credentials.username, credentials.password)
    return TokenRequest("GET", realm, params=tuple(params), authorization=authorization)


def parse_token_response(body: bytes) -> BearerToken:
    """Read a token server's JSON answer (``token``, or OAuth2's ``access_token``, and ``expires_in``)."""
    try:
        data = json.loads(body)
    except ValueError as e:
        raise ChallengeError("the token server did not answer with JSON") from e
    if not isinstance(data, dict):
        raise ChallengeError("the token server's answer is not a JSON object")
    value = data.get("token") or data.get("access_token")
    if not isinstance(value, str) or not value:
        raise ChallengeError("the token server's answer has no token")
    expires_in = data.get("expires_in")
    if not isinstance(expires_in, int) or isinstance(expires_in, bool) or expires_in <= 0:
        expires_in = DEFAULT_TOKEN_SECONDS
    return BearerToken(value, expires_in)
