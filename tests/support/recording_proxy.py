"""A recording reverse proxy for the tests: a threaded HTTP server on 127.0.0.1 in front of a real registry.

Every request is forwarded as it came (method, path and query, headers including ``Authorization`` and ``Host``,
body streamed through) and every exchange is recorded as ``(method, path, status, request bytes, response
bytes)``. ``Host`` is passed on unchanged so the registry writes upload ``Location`` URLs for the proxy, and any
absolute ``Location`` naming the upstream is rewritten to the proxy: the client never leaves it.

With ``immutable_tags`` set, it behaves as Harbor with a tag immutability rule: a manifest PUT to a tag that already
exists upstream is refused with HTTP 412 and Harbor's error body, and never forwarded.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

from tests.support.loopback import LoopbackServer

CHUNK = 64 * 1024
MANIFEST_TAG = re.compile(r"^/v2/(?P<repo>.+)/manifests/(?P<tag>[A-Za-z0-9_][A-Za-z0-9._-]{0,127})$")
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
                        "transfer-encoding", "upgrade"})


@dataclass(frozen=True)
class Exchange:
    method: str
    path: str  # with the query string
    status: int
    sent: int  # request body bytes forwarded upstream
    received: int  # response body bytes passed back

    @property
    def route(self) -> str:
        """The path without the query string."""
        return self.path.split("?", 1)[0]


class RecordingProxy(LoopbackServer):
    """``with RecordingProxy("127.0.0.1:5000") as proxy:`` then talk to ``proxy.host``; read ``proxy.exchanges``."""

    thread_name = "recording-proxy"

    def __init__(self, upstream: str, *, immutable_tags: bool = False) -> None:
        self.upstream = upstream
        self.immutable_tags = immutable_tags
        self._lock = threading.Lock()
        self._exchanges: list[Exchange] = []
        self._serve(_handler_for(self))

    @property
    def exchanges(self) -> list[Exchange]:
        with self._lock:
            return list(self._exchanges)

    def clear(self) -> None:
        with self._lock:
            self._exchanges.clear()

    def record(self, exchange: Exchange) -> None:
        with self._lock:
            self._exchanges.append(exchange)


def _handler_for(proxy: RecordingProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet: the exchanges are recorded instead

        def _forward(self) -> None:
            upstream = http.client.HTTPConnection(proxy.upstream, timeout=60)
            try:
                if not self._refused_as_immutable(upstream):
                    self._exchange(upstream)
            finally:
                upstream.close()

        def _refused_as_immutable(self, upstream: http.client.HTTPConnection) -> bool:
            match = MANIFEST_TAG.match(self.path.split("?", 1)[0])
            if not proxy.immutable_tags or self.command != "PUT" or match is None:
                return False
            headers = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "host")}
            headers["Accept"] = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"
            upstream.request("HEAD", self.path, headers=headers)
            exists = upstream.getresponse()
            exists.read()
            if exists.status != 200:
                return False
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            body = json.dumps({"errors": [{"code": "DENIED", "message": (  # Harbor's immutable tag middleware
                f"The tag:{match['repo']}:{match['tag']} is immutable, cannot be overwrite.")}]}).encode()
            self.send_response_only(412, "Precondition Failed")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            proxy.record(Exchange(self.command, self.path, 412, length, len(body)))
            return True

        def _exchange(self, upstream: http.client.HTTPConnection) -> None:
            headers = [(k, v) for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP]  # repeated ones too
            length = self.headers.get("Content-Length")
            chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                upstream.putheader(name, value)
            if chunked:
                upstream.putheader("Transfer-Encoding", "chunked")
            upstream.endheaders()
            sent = 0
            if chunked:
                for piece in self._read_chunked():
                    upstream.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    sent += len(piece)
                upstream.send(b"0\r\n\r\n")
            elif length:
                remaining = int(length)
                while remaining > 0:
                    piece = self.rfile.read(min(CHUNK, remaining))
                    if not piece:
                        break
                    upstream.send(piece)
                    sent += len(piece)
                    remaining -= len(piece)
            resp = upstream.getresponse()
            self.send_response_only(resp.status, resp.reason)
            known_length = resp.getheader("Content-Length")
            for name, value in resp.getheaders():
                if name.lower() in HOP_BY_HOP:
                    continue
                if name.lower() == "location":
                    value = _to_proxy(value, proxy.upstream, proxy.host)
                self.send_header(name, value)
            stream_chunked = known_length is None and self.command != "HEAD" and resp.status not in (204, 304)
            if stream_chunked:
                self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            received = 0
            if self.command != "HEAD":
                while True:
                    piece = resp.read(CHUNK)
                    if not piece:
                        break
                    received += len(piece)
                    if stream_chunked:
                        self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    else:
                        self.wfile.write(piece)
                if stream_chunked:
                    self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            proxy.record(Exchange(self.command, self.path, resp.status, sent, received))

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

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

    return Handler


def _to_proxy(location: str, upstream: str, proxy_host: str) -> str:
    parts = urlsplit(location)
    if parts.netloc.lower() == upstream.lower():
        return parts._replace(netloc=proxy_host).geturl()
    return location
