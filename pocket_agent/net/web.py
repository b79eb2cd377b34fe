"""The web app at ``/`` (SPEC §11): files from the package, public, with a strict CSP.

The shell holds no data (everything goes through ``/ws`` with the token), so it needs
no token. Only regular files inside the static directory are served: any path segment
that is empty, starts with a dot (``..``, dotfiles) or holds a slash or backslash once
percent-decoded is a 404, and the real path (symlinks resolved) must stay inside the
directory. No directory listings, no index of any directory but ``/``.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import urllib.parse
from pathlib import Path

from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import Request

import pocket_agent

#: Where the app ships inside the package (pyproject's package-data carries it).
STATIC_ROOT = Path(pocket_agent.__file__).resolve().parent / "web" / "static"
INDEX = "index.html"

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'{ws}; manifest-src 'self'; worker-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
_TEXT = "; charset=utf-8"
MIME_TYPES = {
    ".html": "text/html" + _TEXT,
    ".mjs": "text/javascript" + _TEXT,
    ".js": "text/javascript" + _TEXT,
    ".css": "text/css" + _TEXT,
    ".svg": "image/svg+xml" + _TEXT,
    ".json": "application/json" + _TEXT,
    ".webmanifest": "application/manifest+json" + _TEXT,
    ".txt": "text/plain" + _TEXT,
    ".map": "application/json" + _TEXT,
    ".ico": "image/x-icon",
    ".png": "image/png",
    ".webp": "image/webp",
    ".woff2": "font/woff2",
}
DEFAULT_TYPE = "application/octet-stream"  # with nosniff, never run as a script
#: A Host header that may go into the CSP as-is (a name or address and a port).
_HOST = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


def security_headers(request: Request) -> None:
    """SPEC §11's headers, on every answer of the app, the 404s and 405s included.

    ``connect-src`` also names the page's own ``wss://host:port`` (older Safari does not
    count a WebSocket to the same host as ``'self'``)."""
    host = (request.getHeader(b"host") or b"").decode("latin-1")
    scheme = "wss" if request.isSecure() else "ws"
    ws = f" {scheme}://{host}" if _HOST.fullmatch(host) else ""
    request.setHeader(b"content-security-policy", CSP.format(ws=ws).encode())
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"referrer-policy", b"no-referrer")


def _plain(request: Request, code: int, text: str) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    body = text.encode() + b"\n"
    return _body(request, body)


def _body(request: Request, body: bytes) -> bytes:
    """HEAD gets the length but no body (Twisted would log a warning and eat it)."""
    if request.method == b"HEAD":
        request.setHeader(b"content-length", str(len(body)).encode())
        return b""
    return body


class StaticApp(Resource):
    """Serves ``root`` at ``/``: ``/`` is ``index.html``, other paths are files under it.

    A leaf mounted as the site's fallback child, so ``/ws``, ``/health`` and ``/metrics``
    keep their own resources and every other path ends here (a 404 unless it is a file).
    Files are read when asked (they are small; an update of the package shows at once);
    ``ETag``/``Last-Modified`` let the browser revalidate instead of downloading again.
    """

    isLeaf = True

    def __init__(self, root: Path = STATIC_ROOT) -> None:
        super().__init__()
        self.root = root

    def render(self, request: Request) -> bytes:
        security_headers(request)
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return _plain(request, 405, "method not allowed")
        path = self.resolve(request.path)
        if path is None:
            return _plain(request, 404, "not found")
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                if not stat.S_ISREG(st.st_mode):
                    return _plain(request, 404, "not found")
                data = f.read()
        except OSError:
            return _plain(request, 404, "not found")
        request.setHeader(b"content-type", MIME_TYPES.get(path.suffix, DEFAULT_TYPE).encode())
        # no-cache everywhere: the modules are not content-hashed, so a browser must not
        # mix an old module with a new index.html; revalidating is a cheap 304.
        request.setHeader(b"cache-control", b"no-cache")
        etag = f'"{hashlib.sha256(data).hexdigest()[:32]}"'.encode()
        request.setHeader(b"etag", etag)
        request.setHeader(b"last-modified", http.datetimeToString(int(st.st_mtime)))
        if _not_modified(request, etag, int(st.st_mtime)):
            request.setResponseCode(http.NOT_MODIFIED)
            return b""
        return _body(request, data)

    def resolve(self, raw_path: bytes) -> Path | None:
        """The file a request path names, or None (a 404) for anything but a regular
        file inside the root, whatever the encoding tricks."""
        if raw_path in (b"", b"/"):
            segments = [INDEX]
        else:
            if not raw_path.startswith(b"/"):
                return None
            segments = []
            for raw in raw_path[1:].split(b"/"):
                try:
                    segment = urllib.parse.unquote_to_bytes(raw).decode("utf-8")
                except UnicodeDecodeError:
                    return None
                if not segment or segment.startswith(".") or any(c in segment for c in "/\\\0"):
                    return None
                segments.append(segment)
        try:
            root = self.root.resolve(strict=True)
            path = root.joinpath(*segments).resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if not path.is_relative_to(root) or path == root or not path.is_file():
            return None
        return path


def _not_modified(request: Request, etag: bytes, mtime: int) -> bool:
    """RFC 9110 §13.1: If-None-Match decides when present, else If-Modified-Since."""
    if_none_match = request.getHeader(b"if-none-match")
    if if_none_match is not None:
        tags = {tag.strip().removeprefix(b"W/") for tag in if_none_match.split(b",")}
        return etag in tags or b"*" in tags
    if_modified_since = request.getHeader(b"if-modified-since")
    if if_modified_since is not None:
        try:
            since = http.stringToDatetime(if_modified_since)
        except (ValueError, IndexError):
            return False
        return bool(mtime <= since)
    return False
