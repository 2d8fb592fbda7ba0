"""A Docker token server for the tests, and docker-registry configured to trust it (``auth: token``).

The server is a threaded ``http.server`` on 127.0.0.1 that answers ``GET /token?service=..&scope=..`` the way
Docker's token specification says: HTTP Basic credentials are checked against ``users`` (a wrong password or an
unknown user: 401), anonymous requests are allowed, and the JWT it issues carries, for each requested scope, the
requested actions the rules allow (none allowed: the scope is left out, the registry then refuses).

Tokens are ES256 JWTs whose header carries the signing certificate in ``x5c``; the registry verifies that chain
against ``rootcertbundle`` (distribution 2.8: ``parseAndVerifyCertChain``), then the issuer, the audience (the
``service``) and the expiry with a leeway of 60 s. ``compensate_leeway`` shifts ``exp`` back by that minute so a
token announced with ``expires_in`` seconds really stops working then: expiry can be tested in seconds.

Every request is recorded (:attr:`TokenServer.requests`): the user, the scopes asked for, the answer.
"""

from __future__ import annotations

import base64
import datetime
import fnmatch
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from tests.support.registry import RunningRegistry
from tests.support.tls_registry import launch_registry

SERVICE = "lamina-test-registry"
ISSUER = "lamina-test-token-issuer"
REGISTRY_LEEWAY = 60  # distribution's token.Leeway


@dataclass(frozen=True)
class Rule:
    """``user`` (None: anonymous) may do ``actions`` on repositories matching ``pattern`` (fnmatch)."""

    user: str | None
    pattern: str
    actions: tuple[str, ...]


@dataclass(frozen=True)
class Grant:
    name: str
    actions: tuple[str, ...]


@dataclass(frozen=True)
class TokenRequest:
    user: str | None  # None: anonymous (no Authorization)
    scopes: tuple[str, ...]
    status: int
    granted: tuple[Grant, ...] = ()

    def asked(self, repository: str) -> set[str]:
        """The actions this request asked for on ``repository``."""
        actions: set[str] = set()
        for scope in self.scopes:
            kind, name, wanted = _split_scope(scope)
            if kind == "repository" and name == repository:
                actions.update(wanted)
        return actions


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _split_scope(scope: str) -> tuple[str, str, tuple[str, ...]]:
    """``repository:name:pull,push`` → (``repository``, ``name``, (``pull``, ``push``))."""
    kind, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    return kind, name, tuple(a for a in actions.split(",") if a)


class TokenServer:
    """``with TokenServer(workdir, users={...}, rules=[...]) as server:`` → ``server.realm``, ``server.cert_path``."""

    def __init__(self, workdir: Path, *, users: dict[str, str], rules: list[Rule], expires_in: int = 300,
                 compensate_leeway: bool = False) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.users = dict(users)
        self.rules = list(rules)
        self.expires_in = expires_in
        self.compensate_leeway = compensate_leeway
        self._requests: list[TokenRequest] = []
        self._lock = threading.Lock()
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lamina test token signer")])
        now = datetime.datetime.now(datetime.UTC)
        self._certificate = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.cert_path = workdir / "token-signer.pem"
        self.cert_path.write_bytes(self._certificate.public_bytes(serialization.Encoding.PEM))
        self._x5c = base64.b64encode(self._certificate.public_bytes(serialization.Encoding.DER)).decode("ascii")
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # -- lifecycle ------------------------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def realm(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/token"

    # -- records --------------------------------------------------------------------------------------------------

    @property
    def requests(self) -> list[TokenRequest]:
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    # -- tokens ---------------------------------------------------------------------------------------------------

    def grants(self, user: str | None, scopes: tuple[str, ...]) -> tuple[Grant, ...]:
        granted: list[Grant] = []
        for scope in scopes:
            kind, name, wanted = _split_scope(scope)
            if kind != "repository" or not name:
                continue
            allowed: set[str] = set()
            for rule in self.rules:
                if rule.user == user and fnmatch.fnmatchcase(name, rule.pattern):
                    allowed.update(rule.actions)
            actions = tuple(a for a in wanted if a in allowed or "*" in allowed)
            if actions:
                granted.append(Grant(name, actions))
        return tuple(granted)

    def make_token(self, user: str | None, granted: tuple[Grant, ...]) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256", "x5c": [self._x5c]}
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": user or "",
            "aud": SERVICE,
            "exp": now + self.expires_in - (REGISTRY_LEEWAY if self.compensate_leeway else 0),
            "nbf": now - 1,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": [{"type": "repository", "name": g.name, "actions": list(g.actions)} for g in granted],
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        der = self._key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")  # JOSE wants r || s, not DER
        return f"{signing_input}.{_b64url(signature)}"

    def _answer(self, authorization: str | None, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        scopes = tuple(s for value in query.get("scope", []) for s in value.split(" ") if s)
        user: str | None = None
        if authorization is not None:
            scheme, _, value = authorization.partition(" ")
            try:
                name, colon, password = base64.b64decode(value).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                name, colon, password = "", "", ""
            if scheme.lower() != "basic" or not colon or self.users.get(name) != password:
                self._record(TokenRequest(name or None, scopes, 401))
                return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication failed"}]}
            user = name
        if query.get("service", [""])[0] != SERVICE:
            self._record(TokenRequest(user, scopes, 400))
            return 400, {"errors": [{"code": "DENIED", "message": "unknown service"}]}
        granted = self.grants(user, scopes)
        self._record(TokenRequest(user, scopes, 200, granted))
        token = self.make_token(user, granted)
        issued = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
        return 200, {"token": token, "access_token": token, "expires_in": self.expires_in, "issued_at": issued}

    def _record(self, request: TokenRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path != "/token":
                    self._send(404, {"errors": [{"code": "NOT_FOUND", "message": parts.path}]})
                    return
                status, body = server._answer(self.headers.get("Authorization"), parse_qs(parts.query))
                self._send(status, body)

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Basic realm="lamina-test-token-server"')
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@dataclass
class TokenRegistry:
    """docker-registry with ``auth: token`` trusting ``tokens``."""

    registry: RunningRegistry
    tokens: TokenServer

    @property
    def host(self) -> str:
        return self.registry.host

    def stop(self) -> None:
        self.registry.stop()


def start_token_registry(workdir: Path, tokens: TokenServer, *, delete: bool = True) -> TokenRegistry:
    auth = (f"auth:\n  token:\n    realm: {tokens.realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n"
            f"    rootcertbundle: {tokens.cert_path}\n")
    return TokenRegistry(launch_registry(workdir, top_extra=auth, delete=delete), tokens)


@contextmanager
def token_registry(workdir: Path, *, users: dict[str, str], rules: list[Rule], expires_in: int = 300,
                   compensate_leeway: bool = False) -> Iterator[TokenRegistry]:
    """A running token server and a registry trusting it; both stopped on exit."""
    with TokenServer(workdir / "tokens", users=users, rules=rules, expires_in=expires_in,
                     compensate_leeway=compensate_leeway) as tokens:
        reg = start_token_registry(workdir / "registry", tokens)
        try:
            yield reg
        finally:
            reg.stop()
