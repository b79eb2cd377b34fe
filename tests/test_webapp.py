"""SPEC §11: the web app at ``/``, through the real site (HTTPChannel, Site, resources) in memory.

Each test builds the site around a static directory of its own (``tmp_path``), except the
last two, which serve the app the package ships.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from twisted.web.server import Site
from twisted.web.test.requesthelper import DummyRequest

from pocket_agent.net.site import build_site
from pocket_agent.net.web import STATIC_ROOT, StaticApp, security_headers
from tests.support import TOKEN, Harness
from tests.test_web import Response, http_get

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws://localhost:8443; manifest-src 'self'; worker-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
INDEX = b"<!doctype html><title>Pocket Agent</title><script type=module src=/app.mjs></script>\n"
FILES = {
    "index.html": INDEX,
    "app.mjs": b"export const x = 1;\n",
    "app.css": b"body { margin: 0 }\n",
    "screens/projects.mjs": b"export function projects() {}\n",
    "vendor/marked.esm.js": b"export const marked = 1;\n",
    "vendor/VENDOR.json": b'{"files": {}}\n',
    "favicon.svg": b"<svg xmlns='http://www.w3.org/2000/svg'/>\n",
    "favicon.ico": b"\x00\x00\x01\x00",
    "manifest.webmanifest": b'{"name": "Pocket Agent"}\n',
    "icon.png": b"\x89PNG\r\n\x1a\n",
    "font.woff2": b"wOF2",
    "data.bin": b"\x00\x01",
    ".hidden": b"a dotfile\n",
}
SECRET = b"the operator's secret\n"


def request(
    site: Site,
    path: str,
    method: str = "GET",
    *,
    peer: str = "127.0.0.1",
    host: str = "localhost:8443",
    **headers: str,
) -> Response:
    """``tests.test_web.http_get`` with the method first and the page's host:port."""
    return http_get(site, path, method=method, peer=peer, host=host, **headers)


@pytest.fixture
def static(tmp_path: Path) -> Path:
    """The app's files, with a secret beside the directory and links pointing out of it."""
    root = tmp_path / "static"
    for name, data in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (tmp_path / "secret.txt").write_bytes(SECRET)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "x.mjs").write_bytes(SECRET)
    os.symlink(tmp_path / "secret.txt", root / "link-out.mjs")
    os.symlink(tmp_path / "outside", root / "dir-out")
    os.symlink(root / "app.css", root / "link-in.css")  # inside: fine
    return root


@pytest.fixture
def site(harness: Harness, static: Path) -> Site:
    app = harness.app
    return build_site(
        app.health.report, harness.authenticator, harness.factory, app.metrics, static_root=static
    )


def assert_secured(response: Response) -> None:
    assert response.headers["content-security-policy"] == CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


def test_root_is_index_html_with_the_headers_of_spec_11(site: Site) -> None:
    response = request(site, "/")
    assert (response.code, response.body) == (200, INDEX)
    assert_secured(response)
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"  # an update shows at once
    assert response.headers["etag"].startswith('"')
    assert "GMT" in response.headers["last-modified"]
    assert response.headers["content-length"] == str(len(INDEX))
    assert request(site, "/index.html").body == INDEX
    assert request(site, "/?x=1").body == INDEX


def test_no_token_is_needed_from_anywhere(site: Site, harness: Harness) -> None:
    """The shell holds no data: a phone on the LAN or behind a proxy loads it, unpaired."""
    for peer, headers in (("192.0.2.4", {}), ("127.0.0.1", {"X_Forwarded_For": "203.0.113.9"})):
        response = request(site, "/app.mjs", peer=peer, **headers)
        assert (response.code, response.body) == (200, FILES["app.mjs"])
    assert request(site, "/", Authorization="Bearer wrong").code == 200  # nothing to refuse
    assert harness.auth_failures == 0
    assert request(site, "/metrics", peer="192.0.2.4").code == 401  # still behind the token


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/app.mjs", "text/javascript; charset=utf-8"),
        ("/screens/projects.mjs", "text/javascript; charset=utf-8"),
        ("/vendor/marked.esm.js", "text/javascript; charset=utf-8"),
        ("/app.css", "text/css; charset=utf-8"),
        ("/favicon.svg", "image/svg+xml; charset=utf-8"),
        ("/favicon.ico", "image/x-icon"),
        ("/manifest.webmanifest", "application/manifest+json; charset=utf-8"),
        ("/vendor/VENDOR.json", "application/json; charset=utf-8"),
        ("/icon.png", "image/png"),
        ("/font.woff2", "font/woff2"),
        ("/data.bin", "application/octet-stream"),
        ("/link-in.css", "text/css; charset=utf-8"),
    ],
)
def test_mime_types(site: Site, path: str, content_type: str) -> None:
    response = request(site, path)
    assert response.code == 200
    assert response.headers["content-type"] == content_type
    assert_secured(response)
    assert response.headers["cache-control"] == "no-cache"
    assert response.body == FILES.get(path.lstrip("/"), FILES["app.css"])


TRAVERSALS = [
    "/../secret.txt",
    "/%2e%2e/secret.txt",
    "/%2E%2E/secret.txt",
    "/.%2e/secret.txt",
    "/screens/../../secret.txt",
    "/screens/%2e%2e/%2e%2e/secret.txt",
    "/%2e%2e%2fsecret.txt",  # an encoded slash inside one segment
    "/screens%2f..%2f..%2fsecret.txt",
    "/..%5csecret.txt",  # an encoded backslash
    "/%2fetc%2fpasswd",
    "//etc/passwd",
    "/%2F%2Fetc/passwd",
    f"/{'%2e%2e/' * 8}etc/passwd",
    "/%252e%252e/secret.txt",  # double encoding is a literal name, not found
    "/link-out.mjs",  # a symlink out of the directory
    "/dir-out/x.mjs",
    "/.hidden",
    "/%2ehidden",
    "/index.html%00.mjs",
    "/%ff%fe",
    "/screens",  # directories other than /
    "/screens/",
    "/vendor/",
    "/index.html/",
    "/nope",
    "/nope.mjs",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_only_files_inside_the_directory_are_served(site: Site, path: str) -> None:
    response = request(site, path)
    assert response.code == 404, path
    assert SECRET not in response.body and b"root:" not in response.body
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert_secured(response)


def test_resolve_refuses_what_a_request_line_cannot_carry(static: Path) -> None:
    app = StaticApp(static)
    assert app.resolve(b"/app.mjs") == static / "app.mjs"
    for raw in (b"app.mjs", str(static / "app.mjs").encode(), b"/a\\..\\secret.txt"):
        assert app.resolve(raw) in (None, static / "app.mjs") and app.resolve(raw) != (
            static.parent / "secret.txt"
        )
    assert app.resolve(b"app.mjs") is None  # not absolute: not a path of ours
    assert app.resolve(static.parent.joinpath("secret.txt").as_posix().encode()) is None
    assert StaticApp(static / "missing").resolve(b"/") is None


def test_head_has_the_headers_and_no_body(site: Site) -> None:
    response = request(site, "/app.mjs", "HEAD")
    assert (response.code, response.body) == (200, b"")
    assert response.headers["content-length"] == str(len(FILES["app.mjs"]))
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert_secured(response)
    missing = request(site, "/nope", "HEAD")
    assert (missing.code, missing.body) == (404, b"")


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"])
def test_only_get_and_head(site: Site, method: str) -> None:
    for path in ("/", "/app.mjs", "/nope"):
        response = request(site, path, method)
        assert response.code == 405, (method, path)
        assert response.headers["allow"] == "GET, HEAD"
        assert_secured(response)


def test_revalidation_with_etag_and_last_modified(site: Site, static: Path) -> None:
    first = request(site, "/app.mjs")
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    again = request(site, "/app.mjs", If_None_Match=etag)
    assert (again.code, again.body) == (304, b"")
    assert_secured(again)
    assert request(site, "/app.mjs", If_None_Match=f'"other", W/{etag}').code == 304
    assert request(site, "/app.mjs", If_Modified_Since=modified).code == 304
    # If-None-Match decides when present (RFC 9110), even with a matching date.
    assert (
        request(site, "/app.mjs", If_None_Match='"other"', If_Modified_Since=modified).code == 200
    )
    (static / "app.mjs").write_bytes(b"export const x = 2;\n")
    os.utime(static / "app.mjs", (1, 1))  # the content decides the ETag, not the clock
    changed = request(site, "/app.mjs", If_None_Match=etag)
    assert (changed.code, changed.body) == (200, b"export const x = 2;\n")
    assert changed.headers["etag"] != etag


def test_the_other_routes_are_unchanged(site: Site) -> None:
    assert request(site, "/ws").code == 426
    health = request(site, "/health", peer="192.0.2.4")
    assert (health.code, health.body) == (200, b'{"status": "healthy"}\n')
    assert "content-security-policy" not in health.headers
    assert request(site, "/health", peer="192.0.2.4", Authorization="Bearer x").code == 401
    assert request(site, f"/metrics?token={TOKEN}", peer="192.0.2.4").code == 200


def test_connect_src_names_the_pages_own_websocket_origin() -> None:
    """Older Safari does not count wss://same-host as 'self'; a Host header that is not a
    plain host:port never reaches the header."""
    for host, secure, expected in (
        (b"pocket.lan:8443", True, "connect-src 'self' wss://pocket.lan:8443;"),
        (b"[fd00::2]:8443", True, "connect-src 'self' wss://[fd00::2]:8443;"),
        (b"127.0.0.1:8080", False, "connect-src 'self' ws://127.0.0.1:8080;"),
        (b"evil; script-src *", True, "connect-src 'self';"),
        (b"a b", True, "connect-src 'self';"),
    ):
        dummy = DummyRequest([b""])
        dummy.requestHeaders.setRawHeaders(b"host", [host])
        dummy.isSecure = lambda secure=secure: secure  # type: ignore[method-assign]
        security_headers(dummy)
        [csp] = dummy.responseHeaders.getRawHeaders(b"content-security-policy")
        assert expected in csp.decode(), host
        assert "script-src 'self';" in csp.decode()


# ------------------------------------------------------- the app the package ships


def test_the_package_ships_the_app(harness: Harness) -> None:
    """The daemon's own site serves the packaged index.html and what it loads."""
    assert (STATIC_ROOT / "index.html").is_file()
    response = request(harness.app.site, "/", peer="192.0.2.4")
    assert response.code == 200
    assert response.body == (STATIC_ROOT / "index.html").read_bytes()
    assert_secured(response)
    for path in ("/app.mjs", "/app.css"):
        assert path.encode() in response.body
        loaded = request(harness.app.site, path, peer="192.0.2.4")
        assert loaded.code == 200, path


def test_every_packaged_file_has_a_known_type(harness: Harness) -> None:
    """No file of the app goes out as application/octet-stream (nosniff would refuse a
    module served so)."""
    files = [p for p in STATIC_ROOT.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert files
    for path in files:
        relative = "/" + path.relative_to(STATIC_ROOT).as_posix()
        if any(part.startswith(".") for part in relative.split("/")) or path.suffix == ".py":
            continue
        response = request(harness.app.site, relative)
        assert response.code == 200, relative
        assert response.headers["content-type"] != "application/octet-stream", relative


@pytest.mark.e2e
def test_the_wheel_ships_every_file_of_the_app(tmp_path: Path) -> None:
    """pyproject's package-data: an installed server serves the same app as the tree."""
    import subprocess
    import sys
    import zipfile

    source = STATIC_ROOT.parents[2]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path),
            str(source),
        ],
        check=True,
        timeout=300,
    )
    [wheel] = tmp_path.glob("pocket_agent_server-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        "pocket_agent/web/static/" + p.relative_to(STATIC_ROOT).as_posix()
        for p in STATIC_ROOT.rglob("*")
        if p.is_file()
    }
    assert "pocket_agent/web/static/index.html" in shipped
    assert shipped <= names, sorted(shipped - names)
