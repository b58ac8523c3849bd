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

``test_page_is_readable`` then checks, page by page, what a reader sees at a 1280 x 800 window
(with every folded cell and solution opened), and lists every offender, not only the first:

* figures: every image in a cell output sits in a numbered figure with a caption and has alt
  text (MyST-NB's ``mystnb.figure`` and ``mystnb.image`` cell metadata);
* overflow: no code cell, output, table, widget or displayed formula is wider than the text
  column (its ``scrollWidth`` exceeds its ``clientWidth``, or it sticks out of the column);
* nbval cells: the source of every cell tagged ``remove-cell`` in the notebook is absent from
  the page;
* figure scale: every output image is shown at >= 90% of its natural width, so a 10-pt label
  stays >= 9 pt;
* one search box is visible;
* dark mode: output images are not dimmed and not framed, widgets not put on a light slab.

``report.json`` holds the offenders under ``pages.<page>.offenders`` and their counts under
``offender_summary``; visible cells made only of ``assert`` statements are listed under
``pages.<page>.assert_only_cells`` for a person to judge (they may teach something).

Needs Chromium (Debian's ``chromium`` package, at ``/usr/bin/chromium`` or ``CHROMIUM_PATH``)
and the ``playwright`` Python package; without them the tests are skipped with a reason.
"""

from __future__ import annotations

import ast
import functools
import http.server
import json
import os
import re
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
    data["offender_summary"] = {
        page: {check: len(found) for check, found in seen["offenders"].items()}
        for page, seen in data["pages"].items() if "offenders" in seen
    }
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    (SCREENSHOTS / "report.json").write_text(json.dumps(data, indent=2) + "\n")


def open_page(browser, base: str, path: str, *, dark: bool = False, height: int = 900):
    """Open ``path`` with every non-local request blocked; return (page, problems)."""
    context = browser.new_context(viewport={"width": 1280, "height": height},
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
            text_boxes: document.querySelectorAll('.widget-text input').length,
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
    report["pages"].setdefault(path, {}).update({**seen, "images": len(seen["images"]), "dark_background": dark_mode})

    assert not problems, "\n".join(problems)
    assert not dark_problems, "\n".join(dark_problems)
    broken = [i["src"] for i in seen["images"] if i["width"] == 0]
    assert not broken, f"images that did not load: {broken}"
    if seen["math_source"]:
        assert seen["math_typeset"] >= seen["math_source"], "MathJax did not typeset every formula"
    if seen["widget_views"]:
        assert seen["widgets"] >= seen["widget_views"], "a saved widget did not render"
        controls = seen["sliders"] + seen["dropdowns"] + seen["text_boxes"]
        assert controls > 0, "widgets rendered without their controls"
        assert all(w > 0 for w in seen["widget_images"]), "an image inside a widget did not load"
    assert dark_mode not in ("rgb(255, 255, 255)", "rgba(0, 0, 0, 0)"), "dark mode did not darken the page"


# What a reader sees, measured in the page. Every check returns a list of offenders, each a dict
# with "what" (a short description) and "cell" (the first line of the code cell it belongs to,
# or of the element itself), so that the report says where to look.
_OPEN_EVERYTHING = """() => {
    document.querySelectorAll('details').forEach(d => { d.open = true; });
    document.querySelectorAll('.toggle-hidden').forEach(e => e.classList.remove('toggle-hidden'));
    document.querySelectorAll('button.toggle-button:not(.toggle-button-hidden)').forEach(b => {
        const target = document.querySelector(b.dataset.target || '#none');
        if (target && getComputedStyle(target).display === 'none') b.click();
    });
}"""

_CELL_OF = """
    const firstLine = (text) => (text || '').split('\\n').map(l => l.trim()).find(l => l) || '';
    const cellOf = (el) => {
        const cell = el.closest('.cell');
        const code = cell && cell.querySelector('.cell_input pre');
        return firstLine(code ? code.textContent : el.textContent).slice(0, 100);
    };
"""

_FIGURES = "() => {" + _CELL_OF + """
    const found = [];
    document.querySelectorAll('.bd-article .cell_output img').forEach(img => {
        if (img.closest('.jupyter-widgets')) return;  // an explorer's picture, not a figure
        const figure = img.closest('figure');
        const number = figure && figure.querySelector('figcaption .caption-number');
        const caption = figure && figure.querySelector('figcaption .caption-text');
        const missing = [];
        if (!figure) missing.push('not in a figure');
        else {
            if (!number || !number.textContent.trim()) missing.push('no figure number');
            if (!caption || !caption.textContent.trim()) missing.push('no caption');
            if (!figure.id) missing.push('no label');
        }
        if (!(img.getAttribute('alt') || '').trim()) missing.push('no alt text');
        if (missing.length) found.push({what: missing.join(', '), cell: cellOf(img)});
    });
    return found;
}"""

_OVERFLOW = "() => {" + _CELL_OF + """
    const column = document.querySelector('.bd-article').getBoundingClientRect();
    const kinds = [
        ['code', '.bd-article .cell_input pre, .bd-article .cell_input div.highlight'],
        ['output', '.bd-article .cell_output pre, .bd-article .cell_output div.highlight, '
                   + '.bd-article .cell_output .output, .bd-article .cell_output .text_html'],
        ['table', '.bd-article table, .bd-article .pst-scrollable-table-container'],
        ['widget', '.bd-article .cell_output .jupyter-widgets.widget-container'],
        ['math', '.bd-article mjx-container[display="true"], .bd-article div.math'],
        ['code block', '.bd-article div.highlight pre'],
    ];
    const found = [], seen = new Set();
    for (const [kind, selector] of kinds) {
        document.querySelectorAll(selector).forEach(el => {
            if (!el.getClientRects().length) return;  // not displayed
            const box = el.getBoundingClientRect();
            const scrolls = el.scrollWidth > el.clientWidth + 1;
            const spills = box.right > column.right + 1;
            if (!scrolls && !spills) return;
            const owner = el.closest('.cell') || el.closest('table') || el;
            const key = kind.split(' ')[0] + '|' + (owner.id || '') + '|' + cellOf(el) + '|'
                        + Math.round(owner.getBoundingClientRect().top + window.scrollY);
            if (seen.has(key)) return;
            seen.add(key);
            const lines = (el.textContent || '').split('\\n');
            const longest = lines.reduce((a, b) => (b.length > a.length ? b : a), '');
            found.push({
                what: `${kind} ${scrolls ? el.scrollWidth + ' px of content in ' + el.clientWidth + ' px'
                                         : 'reaches ' + Math.round(box.right - column.right) + ' px past the column'}`
                      + `, longest line ${longest.length} characters`,
                cell: cellOf(el),
                line: longest.trim().slice(0, 100),
            });
        });
    }
    return found;
}"""

_SCALE = "() => {" + _CELL_OF + """
    const found = [];
    document.querySelectorAll('.bd-article .cell_output img').forEach(img => {
        if (!img.naturalWidth || !img.getClientRects().length) return;
        const shown = img.getBoundingClientRect().width / img.naturalWidth;
        if (shown < 0.9) found.push({
            what: `shown at ${Math.round(100 * shown)}% of its ${img.naturalWidth} px (${Math.round(img.getBoundingClientRect().width)} px on the page): a 10-pt label becomes ${(10 * shown).toFixed(1)} pt`,
            cell: cellOf(img),
        });
    });
    return found;
}"""

_SEARCH_BOXES = """() => Array.from(document.querySelectorAll(
        '.search-button-field, button.search-button, .search-button__button, form.bd-search, input[type=search]'))
    .filter(e => !e.closest('dialog') && e.getClientRects().length && getComputedStyle(e).visibility !== 'hidden')
    .filter(e => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0; })
    .map(e => ({what: `${e.tagName.toLowerCase()}.${e.className.split(' ').join('.')}`,
                cell: `at ${Math.round(e.getBoundingClientRect().x)}, ${Math.round(e.getBoundingClientRect().y)}`}))"""

_DARK = "() => {" + _CELL_OF + """
    const light = (colour) => {  // a light, opaque background: what the theme's frames are
        const m = colour.match(/rgba?\\(([^)]+)\\)/);
        if (!m) return false;
        const [r, g, b, a = 1] = m[1].split(',').map(Number);
        return a > 0.5 && (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255 > 0.5;
    };
    const found = [];
    document.querySelectorAll('.bd-article .cell_output img').forEach(img => {
        const style = getComputedStyle(img);
        if (style.filter !== 'none') found.push({what: `image dimmed (filter: ${style.filter})`, cell: cellOf(img)});
        if (parseFloat(style.paddingLeft) > 0) {
            found.push({what: `image framed (${style.paddingLeft} padding on ${style.backgroundColor})`, cell: cellOf(img)});
        }
    });
    document.querySelectorAll('.bd-article .cell_output .widget-subarea').forEach(area => {
        const background = getComputedStyle(area).backgroundColor;
        if (light(background)) found.push({what: `widget on a light slab (${background})`, cell: cellOf(area)});
    });
    return found;
}"""


def _code_cells(path: str) -> list[tuple[list[str], str]]:
    """(tags, source) of every code cell of the notebook a page was built from; [] for Markdown pages."""
    notebook = ROOT / path.removesuffix(".html")
    notebook = notebook.with_suffix(".ipynb")
    if not notebook.is_file():
        return []
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return [(c.get("metadata", {}).get("tags", []), "".join(c["source"])) for c in cells if c["cell_type"] == "code"]


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _only_asserts(source: str) -> bool:
    try:
        tree = ast.parse(source)
    except SyntaxError:  # IPython magics
        return False
    return bool(tree.body) and all(isinstance(node, ast.Assert) for node in tree.body)


def _first_line(source: str) -> str:
    return next((line.strip() for line in source.splitlines() if line.strip()), "")[:100]


@pytest.mark.parametrize("path", toc_pages())
def test_page_is_readable(browser, server: str, report: dict, path: str) -> None:
    page, problems = open_page(browser, server, path, height=800)
    wait_for_rendering(page)
    page.evaluate(_OPEN_EVERYTHING)
    page.wait_for_timeout(300)
    offenders = {
        "figures without number, caption or alt text": page.evaluate(_FIGURES),
        "wider than the text column": page.evaluate(_OVERFLOW),
        "figures shown below 90% of their size": page.evaluate(_SCALE),
    }
    boxes = page.evaluate(_SEARCH_BOXES)
    offenders["search boxes (one expected)"] = boxes if len(boxes) != 1 else []
    text = _squash(page.evaluate("document.querySelector('.bd-article').textContent"))
    cells = _code_cells(path)
    offenders["remove-cell cells shown on the page"] = [
        {"what": "tagged remove-cell, but its source is on the page", "cell": _first_line(source)}
        for tags, source in cells if "remove-cell" in tags and _squash(source) and _squash(source) in text
    ]
    page.context.close()
    dark_page, _ = open_page(browser, server, path, dark=True, height=800)
    dark_page.evaluate("document.documentElement.dataset.theme = 'dark'")
    dark_page.wait_for_timeout(200)
    offenders["dark mode: figures or widgets dimmed or framed"] = dark_page.evaluate(_DARK)
    dark_page.context.close()

    entry = report["pages"].setdefault(path, {})
    entry["offenders"] = offenders
    entry["assert_only_cells"] = [_first_line(source) for tags, source in cells
                                  if "remove-cell" not in tags and _only_asserts(source)]
    assert not problems, "\n".join(problems)
    failing = {check: found for check, found in offenders.items() if found}
    summary = [f"{path}: " + "; ".join(f"{len(found)} {check}" for check, found in failing.items())]
    for check, found in failing.items():
        summary.append(f"  {check}:")
        summary += [f"    - {o['what']}  [cell: {o['cell']}]" + (f"  longest: {o['line']!r}" if o.get("line") else "")
                    for o in found]
    assert not failing, "\n".join(summary)


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


@functools.cache
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
