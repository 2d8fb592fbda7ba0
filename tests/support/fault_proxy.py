"""A fault-injecting reverse proxy for the tests: a threaded HTTP server on 127.0.0.1 in front of a real registry.

Each request is read whole from the client, then a *schedule* (any callable ``(method, path) -> Fault | None``)
decides what happens to it:

* ``503`` / ``429``: answered by the proxy itself (a distribution error body; ``429`` with ``Retry-After``); the
  registry never sees the request;
* ``drop_before``: the connection is closed before anything is forwarded (the registry never sees it);
* ``stall``: nothing is forwarded; after ``delay`` seconds (more than the client's timeout) the connection is closed;
* ``drop_after``: forwarded, the registry acts, then the connection is closed: the client never sees the answer;
* ``truncate``: forwarded; the answer's headers (with the full ``Content-Length``) and half of its body are sent,
  then the connection is closed;
* ``corrupt``: forwarded; one byte of the answer's body is flipped (meant for blob ``GET``\\ s);
* ``slow``: forwarded and answered after ``delay`` seconds;
* ``ignore_range``: forwarded without its ``Range`` header, as by a server that does not support ranges.

``Host`` is passed on unchanged, so the registry writes upload ``Location`` URLs for the proxy; an absolute
``Location`` naming the upstream is rewritten to the proxy. Every request is recorded as an :class:`Exchange`
(with the fault applied, if any), and :attr:`FaultProxy.injected` counts the faults by kind.

Schedules: :class:`Script` (rules that fire a given number of times on matching requests) and
:class:`RandomFaults` (seeded; each request draws a fault that makes sense for it with a given probability).
"""

from __future__ import annotations

import http.client
import json
import random
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

from tests.support.loopback import LoopbackServer

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
                        "transfer-encoding", "upgrade"})

STATUS_503 = "503"
STATUS_429 = "429"
DROP_BEFORE = "drop_before"
DROP_AFTER = "drop_after"
TRUNCATE = "truncate"
CORRUPT = "corrupt"
SLOW = "slow"
STALL = "stall"
IGNORE_RANGE = "ignore_range"
KINDS = (STATUS_503, STATUS_429, DROP_BEFORE, DROP_AFTER, TRUNCATE, CORRUPT, SLOW, STALL, IGNORE_RANGE)

_BLOB_GET = re.compile(r"^/v2/.+/blobs/sha256:[0-9a-f]{64}$")
_BODY_GET = re.compile(r"^/v2/.+/(blobs/sha256:[0-9a-f]{64}|manifests/[^/]+)$")


@dataclass(frozen=True)
class Fault:
    kind: str
    delay: float = 0.0  # slow: added before answering; stall: how long to hold the connection
    retry_after: str = "1"  # 429: the Retry-After header

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; one of {', '.join(KINDS)}")


Schedule = Callable[[str, str], Fault | None]  # (method, path with query) -> the fault to inject, or None


def no_faults(method: str, path: str) -> Fault | None:
    return None


@dataclass(frozen=True)
class Exchange:
    method: str
    path: str  # with the query string
    fault: str | None  # the kind injected, or None
    status: int | None  # what the client was told (None: it was told nothing)
    range: str | None = None  # the request's Range header
    content_range: str | None = None  # the request's Content-Range header (upload chunks)

    @property
    def route(self) -> str:
        return self.path.split("?", 1)[0]


def is_blob_get(method: str, path: str) -> bool:
    return method == "GET" and bool(_BLOB_GET.match(path.split("?", 1)[0]))


def has_body(method: str, path: str) -> bool:
    """A request whose answer carries content worth truncating: a blob or manifest ``GET``."""
    return method == "GET" and bool(_BODY_GET.match(path.split("?", 1)[0]))


def applicable(kind: str, method: str, path: str) -> bool:
    if kind == CORRUPT:
        return is_blob_get(method, path)
    if kind in (TRUNCATE, IGNORE_RANGE):
        return has_body(method, path)
    return True


@dataclass
class Rule:
    """Inject ``fault`` into the next ``times`` requests that match ``method`` (None: any) and ``route`` (a regex
    searched in the path, None: any), after letting the first ``skip`` of them through."""

    fault: Fault
    method: str | None = None
    route: str | None = None
    times: int = 1
    skip: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) \
            and (self.route is None or re.search(self.route, path) is not None)


class Script:
    """A schedule of :class:`Rule`\\ s; the first matching rule that has not fired ``times`` times wins."""

    def __init__(self, *rules: Rule) -> None:
        self._rules = list(rules)
        self._lock = threading.Lock()

    def __call__(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for rule in self._rules:
                if rule.times > 0 and rule.matches(method, path):
                    if rule.skip > 0:
                        rule.skip -= 1
                        continue
                    rule.times -= 1
                    return rule.fault
        return None

    @property
    def pending(self) -> int:
        with self._lock:
            return sum(rule.times for rule in self._rules)


@dataclass
class RandomFaults:
    """Each request gets a fault with probability ``rate``, drawn by ``weights`` among the kinds that make sense
    for it (:func:`applicable`), from ``random.Random(seed)``."""

    seed: int
    rate: float = 0.2
    weights: dict[str, float] = field(default_factory=lambda: {
        STATUS_503: 3, STATUS_429: 0.6, DROP_BEFORE: 3, DROP_AFTER: 3, TRUNCATE: 5, CORRUPT: 5, SLOW: 2, STALL: 0.2})
    slow_delay: tuple[float, float] = (0.02, 0.2)
    stall_delay: float = 2.5
    enabled: bool = True

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        self._lock = threading.Lock()

    def __call__(self, method: str, path: str) -> Fault | None:
        with self._lock:
            if not self.enabled or self._random.random() >= self.rate:
                return None
            kinds = [k for k, w in self.weights.items() if w > 0 and applicable(k, method, path)]
            if not kinds:
                return None
            kind = self._random.choices(kinds, [self.weights[k] for k in kinds])[0]
            if kind == SLOW:
                return Fault(SLOW, delay=self._random.uniform(*self.slow_delay))
            if kind == STALL:
                return Fault(STALL, delay=self.stall_delay)
            return Fault(kind)


class FaultProxy(LoopbackServer):
    """``with FaultProxy("127.0.0.1:5000", schedule) as proxy:`` then talk to ``proxy.host``."""

    thread_name = "fault-proxy"

    def __init__(self, upstream: str, schedule: Schedule = no_faults) -> None:
        self.upstream = upstream
        self.schedule = schedule
        self._lock = threading.Lock()
        self._exchanges: list[Exchange] = []
        self._injected: Counter[str] = Counter()
        self._serve(_handler_for(self))

    @property
    def exchanges(self) -> list[Exchange]:
        with self._lock:
            return list(self._exchanges)

    @property
    def injected(self) -> Counter[str]:
        """Faults injected so far, by kind."""
        with self._lock:
            return Counter(self._injected)

    def clear(self) -> None:
        with self._lock:
            self._exchanges.clear()

    def record(self, exchange: Exchange) -> None:
        with self._lock:
            self._exchanges.append(exchange)
            if exchange.fault is not None:
                self._injected[exchange.fault] += 1


@dataclass
class _Answer:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes


def _handler_for(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _handle(self) -> None:
            body = self._read_body()
            fault = proxy.schedule(self.command, self.path)
            kind = fault.kind if fault is not None else None

            def record(status: int | None) -> None:
                proxy.record(Exchange(self.command, self.path, kind, status, self.headers.get("Range"),
                                      self.headers.get("Content-Range")))

            if fault is not None and fault.kind in (DROP_BEFORE, STALL):
                if fault.kind == STALL:
                    time.sleep(fault.delay)
                record(None)
                return self._drop()
            if fault is not None and fault.kind in (STATUS_503, STATUS_429):
                status = int(fault.kind)
                code = "TOOMANYREQUESTS" if status == 429 else "UNAVAILABLE"
                payload = json.dumps({"errors": [{"code": code, "message": "injected by the fault proxy"}]}).encode()
                headers = [("Content-Type", "application/json")]
                if status == 429:
                    headers.append(("Retry-After", fault.retry_after))
                record(status)
                return self._answer(_Answer(status, "Injected", headers, payload))
            answer = self._forward(body, drop_range=kind == IGNORE_RANGE)
            if fault is None:
                record(answer.status)
                return self._answer(answer)
            if fault.kind == DROP_AFTER:
                record(None)
                return self._drop()
            if fault.kind == SLOW:
                time.sleep(fault.delay)
                record(answer.status)
                return self._answer(answer)
            if fault.kind == TRUNCATE and len(answer.body) >= 2 and self.command != "HEAD":
                record(answer.status)
                return self._answer(answer, send=len(answer.body) // 2)
            if fault.kind == CORRUPT and answer.body and self.command != "HEAD":
                data = bytearray(answer.body)
                data[len(data) // 2] ^= 0x5A
                answer.body = bytes(data)
            record(answer.status)
            return self._answer(answer)

        def _read_body(self) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                return b"".join(self._read_chunked())
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _read_chunked(self) -> Iterator[bytes]:
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                data = self.rfile.read(size)
                self.rfile.readline()
                yield data

        def _forward(self, body: bytes, *, drop_range: bool = False) -> _Answer:
            upstream = http.client.HTTPConnection(proxy.upstream, timeout=60)
            try:
                upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in self.headers.items():
                    if name.lower() in HOP_BY_HOP or name.lower() == "content-length" \
                            or (drop_range and name.lower() == "range"):
                        continue
                    upstream.putheader(name, value)
                if body or self.command in ("POST", "PUT", "PATCH"):
                    upstream.putheader("Content-Length", str(len(body)))
                upstream.endheaders(body or None)
                resp = upstream.getresponse()
                data = resp.read() if self.command != "HEAD" else b""
                headers = []
                for name, value in resp.getheaders():
                    if name.lower() in HOP_BY_HOP:
                        continue
                    if name.lower() == "location":
                        value = _to_proxy(value, proxy.upstream, proxy.host)
                    headers.append((name, value))
                return _Answer(resp.status, resp.reason, headers, data)
            finally:
                upstream.close()

        def _answer(self, answer: _Answer, *, send: int | None = None) -> None:
            self.send_response_only(answer.status, answer.reason)
            has_length = False
            for name, value in answer.headers:
                if name.lower() == "content-length":
                    has_length = True
                    if self.command != "HEAD":
                        value = str(len(answer.body))
                self.send_header(name, value)
            if not has_length and self.command != "HEAD":
                self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(answer.body if send is None else answer.body[:send])
            self.wfile.flush()
            if send is not None:
                self._drop()

        def _drop(self) -> None:
            """Close the connection abruptly: the client reads EOF (or a reset) where it expects an answer."""
            self.close_connection = True
            try:
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    return Handler


def _to_proxy(location: str, upstream: str, proxy_host: str) -> str:
    parts = urlsplit(location)
    if parts.netloc.lower() == upstream.lower():
        return parts._replace(netloc=proxy_host).geturl()
    return location
