"""Files served over plain HTTP on loopback (a directory, as a web server or a dumb git HTTP server would), and
small git repositories to serve that way."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """``directory`` at ``http://127.0.0.1:PORT`` until the block ends."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def git(*args: str, cwd: Path) -> str:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def publish_bare(work: Path, www: Path, name: str = "repo.git") -> Path:
    """A bare clone of the repository ``work`` under ``www``, ready for dumb HTTP (``update-server-info``)."""
    www.mkdir(parents=True, exist_ok=True)
    bare = www / name
    git("clone", "-q", "--bare", str(work), str(bare), cwd=www)
    git("update-server-info", cwd=bare)
    return bare
