"""The built HTML book, opened page by page in headless Chromium with the network blocked.

Run after the book is built (``.ci/run`` does):

    jupyter-book build . -W -n --keep-going
    pytest -m browser tests/browser

It serves ``_build/html`` (or the folder in ``BOOK_HTML_DIR``) on a loopback port and blocks
every other request, so a page that still loads a script, font or style sheet from a CDN fails.
For each page of the table of contents it checks: no console errors and no failed requests;
every image loaded; math typeset by MathJax; every saved widget rendered; internal links and
their anchors resolve. It also checks that search finds "attention", takes a screenshot of every
page (light and dark mode) into ``BOOK_SCREENSHOT_DIR`` (default ``_build/screenshots``, not
committed), and writes what it saw, page by page, to ``report.json`` there.

Needs Chromium (Debian's ``chromium`` package, at ``/usr/bin/chromium`` or ``CHROMIUM_PATH``)
and the ``playwright`` Python package; without them the tests are skipped with a reason.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
HTML_DIR = Path(os.environ.get("BOOK_HTML_DIR", ROOT / "_build" / "html"))
SCREENSHOTS = Path(os.environ.get("BOOK_SCREENSHOT_DIR", ROOT / "_build" / "screenshots"))
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-background-networking",  # no update checks or other calls home
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def toc_pages() -> list[str]:
    """The HTML path of every document in ``_toc.yml``, in reading order."""
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [chapter["file"] for chapter in part.get("chapters", [])]
    return [f"{f}.html" for f in files]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    if not (HTML_DIR / "index.html").is_file():
        pytest.skip(f"no built book in {HTML_DIR}: run `jupyter-book build .` first")
    handler = functools.partial(_Quiet, directory=str(HTML_DIR))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright to run the browser tests")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (or set CHROMIUM_PATH)")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def report() -> Iterator[dict]:
    data: dict = {"pages": {}}
    yield data
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    (SCREENSHOTS / "report.json").write_text(json.dumps(data, indent=2) + "\n")


def open_page(browser, base: str, path: str, *, dark: bool = False):
    """Open ``path`` with every non-local request blocked; return (page, problems)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900},
                                  color_scheme="dark" if dark else "light")
    page = context.new_page()
    problems: list[str] = []

    def route(r):
        if r.request.url.startswith(base) or r.request.url.startswith("data:"):
            r.continue_()
        else:
            problems.append(f"blocked request to {r.request.url}")
            r.abort()

    page.route("**/*", route)
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"failed request {r.url}: {r.failure}")
            if r.url.startswith(base) else None)
    page.on("response", lambda r: problems.append(f"HTTP {r.status} for {r.url}") if r.status >= 400 else None)
    page.goto(base + path, wait_until="load")
    page.wait_for_load_state("networkidle")
    return page, problems


def wait_for_rendering(page) -> None:
    """Give MathJax and the widget manager time to finish (both render asynchronously)."""
    page.evaluate(
        """async () => {
            if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
        }"""
    )
    page.wait_for_function(
        """() => document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]').length === 0
                 || document.querySelectorAll('.jupyter-widgets').length > 0""",
        timeout=30_000,
    )
    page.wait_for_timeout(500)


@pytest.mark.parametrize("path", toc_pages())
def test_page_renders_offline(browser, server: str, report: dict, path: str) -> None:
    page, problems = open_page(browser, server, path)
    wait_for_rendering(page)
    seen = page.evaluate(
        """() => ({
            images: Array.from(document.images).map(i => ({src: i.currentSrc, width: i.naturalWidth})),
            math_source: document.querySelectorAll('.math').length,
            math_typeset: document.querySelectorAll('mjx-container').length,
            widget_views: document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]').length,
            widgets: document.querySelectorAll('.jupyter-widgets.widget-container, .widget-vbox').length,
            sliders: document.querySelectorAll('.widget-slider, .widget-hslider').length,
            dropdowns: document.querySelectorAll('.widget-dropdown').length,
            widget_images: Array.from(document.querySelectorAll('.jupyter-widgets img')).map(i => i.naturalWidth),
            exercises: document.querySelectorAll('.exercise').length,
            solutions_hidden: document.querySelectorAll('details.solution, .solution.dropdown').length,
            title: document.title,
        })"""
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / (path.replace("/", "__").removesuffix(".html") + ".png")
    page.screenshot(path=str(shot), full_page=True)
    page.context.close()
    dark_page, dark_problems = open_page(browser, server, path, dark=True)
    dark_page.evaluate("document.documentElement.dataset.theme = 'dark'")
    dark_page.screenshot(path=str(shot.with_name(shot.stem + "-dark.png")))
    dark_mode = dark_page.evaluate("getComputedStyle(document.body).backgroundColor")
    dark_page.context.close()
    report["pages"][path] = {**seen, "images": len(seen["images"]), "dark_background": dark_mode}

    assert not problems, "\n".join(problems)
    assert not dark_problems, "\n".join(dark_problems)
    broken = [i["src"] for i in seen["images"] if i["width"] == 0]
    assert not broken, f"images that did not load: {broken}"
    if seen["math_source"]:
        assert seen["math_typeset"] >= seen["math_source"], "MathJax did not typeset every formula"
    if seen["widget_views"]:
        assert seen["widgets"] >= seen["widget_views"], "a saved widget did not render"
        assert seen["sliders"] + seen["dropdowns"] > 0, "widgets rendered without their controls"
        assert all(w > 0 for w in seen["widget_images"]), "an image inside a widget did not load"
    assert dark_mode not in ("rgb(255, 255, 255)", "rgba(0, 0, 0, 0)"), "dark mode did not darken the page"


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(values["id"])
        if tag == "a" and values.get("href"):
            self.hrefs.append(values["href"])


@functools.lru_cache(maxsize=None)
def _parse(file: Path) -> _Links:
    parser = _Links()
    parser.feed(file.read_text(encoding="utf-8"))
    return parser


@pytest.mark.parametrize("path", toc_pages())
def test_internal_links_and_anchors_resolve(server: str, path: str) -> None:
    del server  # only for the skip when the book is not built
    broken = []
    for href in _parse(HTML_DIR / path).hrefs:
        url = urlparse(urljoin(f"http://book/{path}", href))
        if url.netloc != "book" or url.scheme not in ("http", ""):
            continue  # external: not followed, and blocked in the rendering test
        target = HTML_DIR / unquote(url.path.lstrip("/"))
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            broken.append(f"{href} -> missing file {target.relative_to(HTML_DIR)}")
        elif url.fragment and target.suffix == ".html" and unquote(url.fragment) not in _parse(target).ids:
            broken.append(f"{href} -> no anchor #{url.fragment}")
    assert not broken, "\n".join(broken)


def test_search_finds_attention(browser, server: str, report: dict) -> None:
    page, problems = open_page(browser, server, "search.html?q=attention")
    page.wait_for_selector("#search-results ul.search li", timeout=30_000)
    hits = page.locator("#search-results ul.search li").count()
    page.screenshot(path=str(SCREENSHOTS / "search-attention.png"))
    page.context.close()
    report["search_attention_hits"] = hits
    assert not problems, "\n".join(problems)
    assert hits > 0
