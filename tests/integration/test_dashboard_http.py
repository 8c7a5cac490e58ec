"""The API Keys page over HTTP (the browser tests drive it in Chromium): `/` and its three files, the
headers that keep a browser strict with them, and nothing else of the disk.

The page holds no secret (the JWT stays in the browser's fragment and sessionStorage; keys come from
/api/ answers, which are no-store), so its files may be cached: `no-cache` makes a browser revalidate
them (304) so that it never runs an old script against a new service.
"""

import asyncio
import contextlib
import json
import re
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest

from service.cli.serve import _banner
from service.config import from_environment
from service.http.routes.dashboard import CONTENT_SECURITY_POLICY, FILES, FOLDER

pytestmark = pytest.mark.server_independent  # HTTP parsing and our code: CI's second pass leaves it out

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
CONTENT_TYPES = {
    "index.html": "text/html",
    "dashboard.css": "text/css",
    "dashboard.js": "text/javascript",
}


def assert_page_headers(response) -> None:
    assert response.headers["Content-Security-Policy"] == CSP
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_the_page_is_html_with_a_strict_content_security_policy(client):
    response = await client.get("/")
    assert response.status == 200
    assert response.content_type == "text/html" and response.charset == "utf-8"
    assert_page_headers(response)
    assert await response.read() == (FOLDER / "index.html").read_bytes()
    assert CONTENT_SECURITY_POLICY == CSP


@pytest.mark.parametrize("name", sorted(CONTENT_TYPES))
async def test_each_file_is_served_with_its_content_type(client, name):
    response = await client.get(f"/dashboard/{name}")
    assert response.status == 200
    assert response.content_type == CONTENT_TYPES[name] and response.charset == "utf-8"
    assert_page_headers(response)
    assert await response.read() == (FOLDER / name).read_bytes()


async def test_a_browser_revalidates_a_file_and_keeps_its_copy(client):
    first = await client.get("/dashboard/dashboard.js")
    etag = first.headers["ETag"]
    again = await client.get("/dashboard/dashboard.js", headers={"If-None-Match": etag})
    assert again.status == 304 and await again.read() == b""


def test_only_the_three_files_are_served_and_they_are_in_the_package():
    assert set(FILES) == set(CONTENT_TYPES)
    for name, (path, _) in FILES.items():
        assert path.parent == FOLDER and path.name == name and path.is_file()


# Names that are not one of the three files: each answers the JSON 404 envelope, never a file.
NOT_FILES = [
    "/dashboard/app.py",
    "/dashboard/dashboard_api.py",
    "/dashboard/DASHBOARD.JS",
    "/dashboard/dashboard.js.map",
    "/dashboard/",
    "/dashboard",
    "/dashboard/index.html/",
    "/dashboard/../app.py",
    "/dashboard/../../pyproject.toml",
    "/dashboard/%2e%2e/app.py",
    "/dashboard/%2E%2E/%2E%2E/pyproject.toml",
    "/dashboard/..%2fapp.py",
    "/dashboard/%2e%2e%2fapp.py",
    "/dashboard/%2e%2e%5capp.py",
    "/dashboard/%252e%252e%252fapp.py",
    "/dashboard/.%2e/.%2e/pyproject.toml",
    "/dashboard/dashboard.js%00",
    "/dashboard/dashboard.js%00.html",
    "/dashboard/%00",
    "/dashboard/..",
    "/dashboard/.",
    "/dashboard//etc/passwd",
    "/dashboard/%2fetc%2fpasswd",
    "/dashboard/index.html%3f",
    "/dashboard.js",
    "/index.html",
    "/..%2fservice%2fapp.py",
]


async def raw_get(client, target: str) -> tuple[int, dict[str, str], bytes]:
    """GET the target exactly as written (a client library would normalise `..` and escapes away)."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        answer = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {
        name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)
    }
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize("target", NOT_FILES)
async def test_any_other_name_or_a_path_traversal_is_the_404_envelope(client, target):
    status, headers, body = await raw_get(client, target)
    assert status == 404, (target, body[:200])
    assert headers["content-type"].startswith("application/json")
    envelope = json.loads(body)
    assert envelope["error"]["type"] == "not_found" and envelope["error"]["message"]
    assert b"import " not in body and b"[project]" not in body and b"root:" not in body


async def test_the_control_the_raw_request_serves_a_known_file(client):
    """The helper above can see a file: the refusals are not an artefact of how it asks."""
    status, headers, body = await raw_get(client, "/dashboard/dashboard.css")
    assert status == 200 and headers["content-type"].startswith("text/css")
    assert body == (FOLDER / "dashboard.css").read_bytes()


class _Page(HTMLParser):
    """What the page loads, and anything its CSP would block (inline script, style or handler)."""

    def __init__(self):
        super().__init__()
        self.loads: list[str] = []
        self.inline: list[str] = []
        self._tag: str | None = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        for name in ("src", "href"):
            if tag in ("script", "link", "img") and attributes.get(name):
                self.loads.append(attributes[name])
        if tag == "script" and not attributes.get("src"):
            self.inline.append("an inline <script>")
        if tag == "style":
            self.inline.append("a <style> element")
        self.inline += [
            f"{name}= on <{tag}>" for name in attributes if name == "style" or name.startswith("on")
        ]
        self._tag = tag

    def handle_data(self, data):
        if self._tag == "script" and data.strip():
            self.inline.append("script text")


async def test_the_page_loads_only_its_own_files_and_has_nothing_its_policy_blocks(client):
    page = _Page()
    page.feed(await (await client.get("/")).text())
    assert page.inline == []
    assert page.loads, "the page loads its script and style sheet"
    for url in page.loads:
        if url.startswith("data:"):
            continue  # img-src allows data: (the empty favicon)
        assert url.startswith("/dashboard/"), url
        response = await client.get(url)
        assert response.status == 200, url


def test_the_script_inserts_text_never_html():
    """Key names and API messages reach the page as text (textContent, value, setAttribute)."""
    script = (FOLDER / "dashboard.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink
    # And nothing is fetched from another origin.
    assert not re.search(r"""["'`]https?://""", script.replace('"http://www.w3.org/2000/svg"', ""))


async def test_the_banner_link_opens_the_page_with_the_token_in_the_fragment(client):
    banner = _banner(from_environment({}), service_token_generated=True)
    [link] = re.findall(r"^Open the dashboard: (\S+)$", banner, re.MULTILINE)
    url = urlsplit(link)
    assert url.fragment.startswith("token=eyJ")
    response = await client.get(url.path)  # what the browser asks for: the fragment stays behind
    assert response.status == 200 and response.content_type == "text/html"
    assert_page_headers(response)
