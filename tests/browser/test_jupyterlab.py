"""Chapter 2 run in JupyterLab, the second way readers use the course, with a real browser.

Not part of the default run (it starts a server and a browser); run it on its own:

    pytest -m jupyter tests/browser/test_jupyterlab.py

It starts the pinned JupyterLab (``jupyter lab`` from this environment, checked against
``requirements.txt``) on a free loopback port with a random token, in a temporary folder that
holds a copy of ``book/ch02_working_with_text.ipynb`` (the repository's notebook and its stored
outputs are never touched). The server's configuration, data, runtime and settings folders are
temporary too, and news, announcements and the update check are turned off, so it makes no
calls home. Headless Chromium then opens the notebook through JupyterLab's interface, runs every
cell from the Run menu, and checks that every code cell ran without an error. Finally it changes
the tokenizer explorer's menu and text box and checks that the tokens shown change: only the
kernel computes them, so this proves the kernel and the widget manager talk to each other. A
screenshot of the explorer after the change goes to ``BOOK_SCREENSHOT_DIR`` (default
``_build/screenshots``) as ``jupyterlab_ch02.png``.

The kernel inherits this process's environment: ``companion`` must be importable and
``COMPANION_DATA_DIR`` must hold the course's data files. Needs Chromium (Debian's
``chromium`` at ``/usr/bin/chromium`` or ``CHROMIUM_PATH``) and the ``playwright`` package;
without them the test is skipped with a reason.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.jupyter

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = "ch02_working_with_text.ipynb"
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

# Generous bounds for a shared 2-core machine; the notebook itself runs in about 10 s.
SERVER_START_S = 90
KERNEL_START_MS = 120_000
RUN_ALL_MS = 240_000
WIDGET_UPDATE_MS = 30_000

# JupyterLab user settings written into the temporary settings folder.
LAB_SETTINGS = {
    # Never fetch news nor check for a newer JupyterLab, and never ask about it.
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    # Keep every cell in the DOM, so that all prompts and outputs can be inspected.
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
}
# The front-end plugin that fetches news and checks for updates is not even loaded.
PAGE_CONFIG = {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}


@dataclass(frozen=True)
class Lab:
    """A running JupyterLab server."""

    base_url: str  # e.g. http://127.0.0.1:PORT/
    token: str
    root: Path  # its root_dir, holding the copy of the notebook
    log: Path  # its stdout and stderr

    def log_tail(self, chars: int = 4000) -> str:
        text = self.log.read_text(errors="replace") if self.log.is_file() else ""
        return text[-chars:]


def pinned_version(package: str) -> str | None:
    """The version ``requirements.txt`` pins for ``package`` (``package==X``), if any."""
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        name, sep, version = line.split("#")[0].strip().partition("==")
        if sep and name.strip().lower() == package:
            return version.strip()
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_status(base_url: str, token: str) -> dict | None:
    """``GET /api/status`` with the token, or None while the server does not answer."""
    request = urllib.request.Request(base_url + "api/status", headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
        return None


def stop(process: subprocess.Popen) -> None:
    """Terminate the server (it shuts its kernels down); kill its process group if it hangs.

    A kernel runs in a session of its own, and ipykernel's parent poller ends it when the
    server it was started by is gone.
    """
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # started in a new session: its group id is its pid
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    jupyterlab = pytest.importorskip("jupyterlab", reason="pip install -r requirements.txt to run the JupyterLab test")
    pin = pinned_version("jupyterlab")
    assert pin is None or jupyterlab.__version__ == pin, (
        f"this environment has jupyterlab {jupyterlab.__version__}, requirements.txt pins {pin}: "
        "pip install -r requirements.txt"
    )

    home = tmp_path_factory.mktemp("jupyterlab")
    root = home / "notebooks"
    root.mkdir()
    shutil.copyfile(ROOT / "book" / NOTEBOOK, root / NOTEBOOK)
    settings = home / "user-settings"
    for name, values in LAB_SETTINGS.items():
        file = settings / f"{name}.jupyterlab-settings"
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps(values))
    config = home / "config"
    (config / "labconfig").mkdir(parents=True)
    (config / "labconfig" / "page_config.json").write_text(json.dumps(PAGE_CONFIG))

    venv_bin = str(Path(sys.executable).parent)  # the kernel spec runs `python`: this environment's
    env = {
        **os.environ,  # the kernel needs companion and COMPANION_DATA_DIR
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
        # nothing from the user's own Jupyter or IPython set-up, and nothing written there
        "JUPYTER_CONFIG_DIR": str(config),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "IPYTHONDIR": str(home / "ipython"),
    }
    token = secrets.token_hex(24)
    port = free_port()
    command = [
        sys.executable, "-m", "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        f"--LabApp.user_settings_dir={settings}",
        f"--LabApp.workspaces_dir={home / 'workspaces'}",
        "--LabApp.extension_manager=readonly",  # lists installed extensions, never asks PyPI
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # CI containers run as root
    log = home / "jupyterlab.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    server = Lab(base_url=f"http://127.0.0.1:{port}/", token=token, root=root, log=log)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while server_status(server.base_url, token) is None:
            assert process.poll() is None, (
                f"jupyter lab exited with code {process.returncode} before answering:\n{server.log_tail()}"
            )
            assert time.monotonic() < deadline, (
                f"jupyter lab did not answer on {server.base_url}api/status within {SERVER_START_S} s:\n"
                f"{server.log_tail()}"
            )
            time.sleep(0.5)
        yield server
    finally:
        stop(process)


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


def code_cell_count(notebook: Path) -> int:
    return sum(cell["cell_type"] == "code" for cell in json.loads(notebook.read_text())["cells"])


# What JupyterLab 4 puts in the DOM (checked against 4.6): each cell is a `.jp-Cell`, a code cell
# also `.jp-CodeCell`, whose `.jp-InputArea-prompt` reads `[ ]:` before it runs, `[*]:` while
# it waits or runs and `[n]:` after. Errors and stderr are both rendered as
# `.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]` (an error's
# traceback joined into text). The notebook toolbar's `.jp-Notebook-ExecutionIndicator` carries
# the kernel's state in `data-status` ("idle", "busy", ...).
KERNEL_IDLE = '.jp-NotebookPanel-toolbar .jp-Notebook-ExecutionIndicator[data-status="idle"]'

PROMPTS_JS = """() => Array.from(document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell'))
    .map(cell => (cell.querySelector('.jp-InputArea-prompt') || {}).textContent || '')"""

# Execution has stopped: the kernel is idle, some cell ran and none waits or runs (`[*]`).
# Run All queues every cell at once, so no cell is left waiting between two of them.
STOPPED_JS = """([selector]) => {
    const prompts = Array.from(document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputArea-prompt'))
        .map(p => p.textContent.trim());
    return document.querySelector(selector) !== null && prompts.some(p => /^\\[\\d+\\]:$/.test(p))
        && !prompts.includes('[*]:');
}"""

STDERR_JS = """() => Array.from(document.querySelectorAll(
        '.jp-NotebookPanel .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'))
    .map(output => {
        const cell = output.closest('.jp-CodeCell');
        const prompt = cell && cell.querySelector('.jp-InputArea-prompt');
        return {prompt: prompt ? prompt.textContent.trim() : '?', text: output.innerText};
    })"""

ERROR_TEXT = re.compile(r"Traceback|^\s*\w*(Error|Exception)\b", re.MULTILINE)


def wait_until(page, expression: str, failure: Callable[[], str], *, timeout_ms: int, arg: object = None,
               polling: str | int = "raf") -> None:
    """Wait until the JavaScript ``expression`` is truthy, or fail with ``failure()`` (built only then)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(expression, arg=arg, timeout=timeout_ms, polling=polling)
    except PlaywrightTimeout:
        pytest.fail(f"{failure()} (waited {timeout_ms // 1000} s)")


def test_chapter_2_runs_in_jupyterlab_with_a_live_widget(browser, lab: Lab) -> None:
    problems: list[str] = []
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()

    def route(r):
        url = r.request.url
        if url.startswith(lab.base_url) or url.startswith(("data:", "blob:")):
            r.continue_()
        else:
            problems.append(f"blocked request to {url}")
            r.abort()

    page.route("**/*", route)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    try:
        page.goto(f"{lab.base_url}lab/tree/{NOTEBOOK}?token={lab.token}", wait_until="load")
        page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=KERNEL_START_MS)
        page.wait_for_selector(KERNEL_IDLE, timeout=KERNEL_START_MS)

        # Run > Run All Cells, as a reader would. The item stays disabled until the notebook is
        # the current document, so click into the notebook first, then wait for the item to be
        # enabled (Lumino tags menu items with their command and disabled ones with a class).
        page.locator(".jp-NotebookPanel .jp-Cell").first.click()
        page.locator(".lm-MenuBar-item", has_text=re.compile(r"^\s*Run\s*$")).click()
        page.locator('.lm-Menu-item[data-command="runmenu:run-all"]:not(.lm-mod-disabled)').click(
            timeout=KERNEL_START_MS)
        # Run All marks every queued cell `[*]` at once and the chapter takes seconds, so this is seen.
        wait_until(page, f"() => ({PROMPTS_JS})().some(p => p.trim() === '[*]:')",
                   lambda: f"Run > Run All Cells started no cell; prompts: {page.evaluate(PROMPTS_JS)}",
                   timeout_ms=KERNEL_START_MS)
        wait_until(page, STOPPED_JS,
                   lambda: f"Run All did not finish; prompts: {page.evaluate(PROMPTS_JS)}\n"
                           f"server log:\n{lab.log_tail()}",
                   arg=[KERNEL_IDLE], timeout_ms=RUN_ALL_MS, polling=500)

        errors = [o for o in page.evaluate(STDERR_JS) if ERROR_TEXT.search(o["text"])]
        assert not errors, "cells that failed in JupyterLab:\n" + "\n\n".join(
            f"cell {o['prompt']}\n{o['text'][-2000:]}" for o in errors)
        prompts = page.evaluate(PROMPTS_JS)
        code_cells = code_cell_count(lab.root / NOTEBOOK)
        not_run = [i for i, p in enumerate(prompts) if not re.fullmatch(r"\[\d+\]:", p.strip())]
        assert len(prompts) == code_cells and not not_run, (
            f"Run All stopped before every code cell ran: {code_cells} code cells in the notebook, "
            f"{len(prompts)} shown, these (0-based) without an execution count: {not_run}; prompts: {prompts}")

        # The tokenizer explorer: a Dropdown ("Tokenizer"), a Textarea and an HTML output.
        explorers = page.locator(".jp-OutputArea-output .widget-vbox").filter(
            has=page.locator(".widget-dropdown", has_text="Tokenizer"))
        assert explorers.count() == 1, f"expected one tokenizer explorer, found {explorers.count()}"
        explorer = explorers.first
        menu = explorer.locator(".widget-dropdown select")
        tokens = explorer.locator(".widget-html-content")
        tokens.wait_for(timeout=WIDGET_UPDATE_MS)
        explorer.scroll_into_view_if_needed()

        # 1. Another tokenizer: only the kernel can cut the text again, so the tokens must change.
        before = tokens.inner_html()
        current = menu.evaluate("s => s.options[s.selectedIndex].text")
        others = [o for o in menu.locator("option").all_inner_texts() if o != current]
        assert others, f"the explorer's menu offers only {current!r}"
        menu.select_option(label=others[0])
        wait_until(page, "([el, old]) => el.innerHTML !== old",
                   lambda: f"choosing {others[0]!r} instead of {current!r} did not change the explorer's tokens: "
                           "the widget is not connected to the kernel",
                   arg=[tokens.element_handle(), before], timeout_ms=WIDGET_UPDATE_MS)

        # 2. New text: the summary must count exactly its characters (counted here, in Python).
        text = "Hello, Jupyter!"
        summary = f"for {len(text)} characters"
        explorer.locator("textarea").fill(text)
        wait_until(page, "([el, s]) => el.textContent.includes(s)",
                   lambda: f"typing {text!r} did not update the explorer to {summary!r}; "
                           f"it shows: {tokens.inner_text()!r}",
                   arg=[tokens.element_handle(), summary], timeout_ms=WIDGET_UPDATE_MS)

        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        explorer.scroll_into_view_if_needed()
        page.screenshot(path=str(SCREENSHOTS / "jupyterlab_ch02.png"))
    finally:
        context.close()

    assert not problems, "the page called out or threw:\n" + "\n".join(problems)
