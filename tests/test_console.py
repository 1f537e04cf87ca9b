"""The console's static files: the page for browsers at ``/``, JSON for programs, nothing else.

In memory (the resource tree over a memory reactor): content types, ETags and 304s, the
headers that keep the page out of other sites' frames, and that no name, encoded or not,
leads outside the console's folder or lists it.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gb28181talk.web.console import CONTENT_TYPES, load_files, wants_page
from tests.fuzzing import InMemoryApi

BROWSER = b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
FOLDER = Path(__file__).resolve().parent.parent / "gb28181talk" / "web" / "console"


@pytest.fixture
def service() -> Iterator[InMemoryApi]:
    with tempfile.TemporaryDirectory() as media_dir:
        yield InMemoryApi(None, media_dir)


def get(service: InMemoryApi, uri: bytes, **headers: bytes) -> tuple[int, dict[str, str], bytes]:
    names = {name.replace("_", "-").encode(): value for name, value in headers.items()}
    return service.request(b"GET", uri, b"", names)


def test_a_browser_gets_the_page_and_a_program_the_json_index(service: InMemoryApi) -> None:
    status, headers, body = get(service, b"/", accept=BROWSER)
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert b"<title>gb28181talk console</title>" in body
    assert headers["vary"] == "Accept"
    for accept in (None, b"application/json", b"*/*", b"application/json, text/html"):
        extra = {"accept": accept} if accept else {}
        status, headers, body = get(service, b"/", **extra)
        assert status == 200 and headers["content-type"].startswith("application/json")
        index = json.loads(body)
        assert index["code"] == 0 and index["console"] == "/"


def test_every_file_has_its_type_an_etag_and_the_page_policy(service: InMemoryApi) -> None:
    names = sorted(load_files())
    assert {"index.html", "console.js", "console.css", "api.js", "rtc.js", "meter.js",
            "words.js", "icon.svg"} <= set(names)
    for name in names:
        status, headers, body = get(service, b"/console/" + name.encode())
        assert status == 200, name
        assert headers["content-type"] == CONTENT_TYPES["." + name.rsplit(".", 1)[1]]
        assert body == (FOLDER / name).read_bytes()
        assert headers["cache-control"] == "no-cache"
        assert headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY"
        again = get(service, b"/console/" + name.encode(), if_none_match=headers["etag"].encode())
        assert again[0] == 304 and again[2] == b""
        stale = get(service, b"/console/" + name.encode(), if_none_match=b'"other"')
        assert stale[0] == 200


def test_the_page_loads_only_its_own_files(service: InMemoryApi) -> None:
    """No CDN, no external font: every src/href of the page is one of the console's files."""
    page = (FOLDER / "index.html").read_text()
    links = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert links and all(link.startswith("/console/") for link in links), links
    names = set(load_files())
    assert {link.removeprefix("/console/") for link in links} <= names
    for name in names:
        text = (FOLDER / name).read_text().replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert "http://" not in text.replace("http://localhost", "")
        assert "https://" not in text and "//cdn" not in text, name
        for module in re.findall(r'from "\./([^"]+)"', text):
            assert module in names, (name, module)


@pytest.mark.parametrize("uri", [
    b"/console/", b"/console", b"/console/../pyproject.toml", b"/console/%2e%2e/console.py",
    b"/console/..%2fconsole.py", b"/console/nope.js", b"/console/index.html/x",
    b"/console/__init__.py", b"/console/.hidden", b"/console//etc/passwd",
    b"/console/%2fetc%2fpasswd", b"/console.js", b"/index.html",
])
def test_no_other_name_leads_anywhere_nor_lists_the_folder(service: InMemoryApi,
                                                           uri: bytes) -> None:
    status, headers, body = get(service, uri, accept=BROWSER)
    assert status == 404, (uri, status, body[:200])
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body)["code"] == -500


def test_only_get_and_head(service: InMemoryApi) -> None:
    status, _, body = service.request(b"POST", b"/console/console.js", b"", {})
    assert status == 405
    status, headers, body = service.request(b"HEAD", b"/console/console.js", b"", {})
    assert status == 200 and body == b""
    assert headers["content-type"].startswith("text/javascript")


def test_wants_page_reads_accept_as_browsers_send_it() -> None:
    class Request:
        def __init__(self, method: bytes, accept: bytes | None) -> None:
            self.method = method
            self.accept = accept

        def getHeader(self, name: bytes) -> bytes | None:
            return self.accept

    assert wants_page(Request(b"GET", BROWSER))  # type: ignore[arg-type]
    assert wants_page(Request(b"HEAD", b"text/html"))  # type: ignore[arg-type]
    assert not wants_page(Request(b"POST", BROWSER))  # type: ignore[arg-type]
    assert not wants_page(Request(b"GET", None))  # type: ignore[arg-type]
    assert not wants_page(Request(b"GET", b"application/json;q=1, text/html"))  # type: ignore[arg-type]
