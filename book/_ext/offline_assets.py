"""Serve the book's JavaScript from the book itself, so it renders with no network.

By default a Jupyter Book page loads require.js and the ipywidgets manager
(``@jupyter-widgets/html-manager``) from public CDNs to show saved widget state, and
MathJax from another CDN to typeset math. Read offline, such a page shows blank
widgets and raw TeX. This Sphinx extension fetches pinned releases of those three
packages from the npm registry once, checks each archive against the SHA-512 that
the registry publishes for it, unpacks the files the pages need into a cache folder
(``_build/web_assets`` by default), and points the build at the local copies.

If the files cannot be fetched (no network on first build) the build stops with an
error that says which archive to fetch and where to put it. Set
``offline_assets_allow_cdn = True`` in the Sphinx config to fall back to the CDNs
with a warning instead.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.errors import ExtensionError
from sphinx.util import logging

logger = logging.getLogger(__name__)

VENDOR = "vendor"  # the folder under _static/ that the pages load these files from


@dataclass(frozen=True)
class NpmPackage:
    """One pinned npm release and the files of it that the pages need."""

    name: str
    version: str
    integrity: str  # the registry's "dist.integrity": sha512-<base64>
    keep: tuple[str, ...]  # path prefixes inside the archive's package/ folder
    drop: tuple[str, ...] = ()  # prefixes and suffixes to leave out of what `keep` selects
    dest: str = ""  # folder under vendor/

    @property
    def url(self) -> str:
        base = self.name.rsplit("/", 1)[-1]
        return f"https://registry.npmjs.org/{self.name}/-/{base}-{self.version}.tgz"


PACKAGES = (
    NpmPackage(
        name="requirejs",
        version="2.3.8",
        integrity="sha512-7/cTSLOdYkNBNJcDMWf+luFvMriVm7eYxp4BcFCsAX0wF421Vyce5SXP17c+Jd5otXKGNehIonFlyQXSowL6Mw==",
        keep=("require.js",),
        dest="requirejs",
    ),
    NpmPackage(
        name="@jupyter-widgets/html-manager",
        version="1.0.15",
        integrity="sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA==",
        # embed-amd.js and the fonts and images its stylesheet refers to
        keep=("dist/",),
        drop=(".map", "dist/embed.js", "dist/libembed-amd.js"),
        dest="html-manager",
    ),
    NpmPackage(
        name="mathjax",
        version="3.2.2",
        integrity="sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
        # the TeX-to-HTML component, the extensions it loads on demand, its fonts and menu
        keep=("es5/tex-chtml.js", "es5/input/", "es5/output/chtml", "es5/a11y/", "es5/ui/", "es5/adaptors/"),
        dest="mathjax",
    ),
)

REQUIRE_JS = f"{VENDOR}/requirejs/require.js"
WIDGET_SUPPORT_JS = f"{VENDOR}/widget-support.js"
EMBED_AMD_JS = f"{VENDOR}/html-manager/dist/embed-amd.js"
MATHJAX_JS = f"{VENDOR}/mathjax/es5/tex-chtml.js"


def _check_integrity(data: bytes, integrity: str) -> None:
    algo, _, expected = integrity.partition("-")
    actual = base64.b64encode(hashlib.new(algo, data).digest()).decode()
    if actual != expected:
        raise ExtensionError(
            f"offline_assets: archive has {algo} {actual}, expected {expected}; "
            "delete the download and build again"
        )


def _wanted(pkg: NpmPackage, member: str) -> bool:
    path = member.removeprefix("package/")
    if not any(path.startswith(k) for k in pkg.keep):
        return False
    return not any(path.endswith(d) or path.startswith(d) for d in pkg.drop)


def _install(pkg: NpmPackage, root: Path) -> None:
    """Download, verify and unpack one package into ``root/vendor/<dest>`` atomically."""
    target = root / VENDOR / pkg.dest
    stamp = target / ".installed"
    if stamp.is_file() and stamp.read_text() == pkg.integrity:
        return
    logger.info(f"offline_assets: fetching {pkg.name}@{pkg.version} from {pkg.url}")
    try:
        with urllib.request.urlopen(pkg.url, timeout=60) as response:
            data = response.read()
    except OSError as exc:
        raise ExtensionError(
            f"offline_assets: could not download {pkg.url} ({exc}). Without network, fetch "
            f"it on another machine and unpack the files under {target}, or set "
            "offline_assets_allow_cdn = True to load them from a CDN."
        ) from exc
    _check_integrity(data, pkg.integrity)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{pkg.dest}-", dir=target.parent))
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            for member in archive.getmembers():
                if not member.isfile() or not _wanted(pkg, member.name):
                    continue
                out = staging / member.name.removeprefix("package/")
                out.parent.mkdir(parents=True, exist_ok=True)
                with archive.extractfile(member) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        (staging / ".installed").write_text(pkg.integrity)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


# Support code for the widget manager, loaded between require.js and embed-amd.js. It does two
# things:
# 1. The widget manager finds the fonts and images of its style sheet relative to the URL that
#    require.js gives its module; without a mapping that URL is next to each page, where
#    nothing is. The script locates itself, so it works at any page depth.
# 2. The widgets typeset their labels with MathJax 2's API (MathJax.Hub.Queue), while the book
#    loads MathJax 3, which has no Hub: on a page with both math and labelled widgets every
#    label threw an error. A two-line Hub that forwards to MathJax 3's typesetPromise fixes it;
#    it is added to the configuration object now and to MathJax 3 itself once it has loaded.
WIDGET_SUPPORT = """\
// Written by book/_ext/offline_assets.py: load the widget manager's files from this book,
// and let its MathJax 2 calls reach MathJax 3.
(function () {
  var here = document.currentScript.src;
  var dist = here.slice(0, here.lastIndexOf("/") + 1) + "html-manager/dist";
  // the most specific prefix wins: modules such as @jupyter-widgets/controls and
  // @jupyter-widgets/html-manager/dist/libembed-amd both resolve into dist/
  require.config({paths: {"@jupyter-widgets": dist, "@jupyter-widgets/html-manager/dist": dist}});

  function addHub() {
    var mathjax = window.MathJax;
    if (mathjax && !mathjax.Hub) {
      mathjax.Hub = {Queue: function (command) {
        var element = command && command[2];
        if (element && window.MathJax.typesetPromise) window.MathJax.typesetPromise([element]);
      }};
    }
  }
  addHub();
  document.addEventListener("DOMContentLoaded", addHub);
  window.addEventListener("load", addHub);
})();
"""


def _configure(app: Sphinx, config: Config) -> None:
    root = Path(config.offline_assets_dir)
    if not root.is_absolute():
        root = Path(app.confdir) / root
    try:
        for pkg in PACKAGES:
            _install(pkg, root)
    except ExtensionError as exc:
        if not config.offline_assets_allow_cdn:
            raise
        logger.warning(f"{exc}; the pages will load these files from CDNs")
        return
    (root / WIDGET_SUPPORT_JS).write_text(WIDGET_SUPPORT)
    config.html_static_path = [*config.html_static_path, str(root)]
    # myst-nb adds these to pages that hold saved widget state (no CDN attribute:
    # the widgets the course uses are all bundled in embed-amd.js)
    config.nb_ipywidgets_js = {REQUIRE_JS: {}, WIDGET_SUPPORT_JS: {}, EMBED_AMD_JS: {}}
    config.mathjax_path = MATHJAX_JS


def _drop_duplicate_scripts(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Keep one copy of each identical <script> in a page.

    sphinx-thebe and sphinx-togglebutton each register an inline configuration script
    twice in this Jupyter Book build (at two priorities), so every page declared
    ``const THEBE_JS_URL`` twice and the browser reported a script error.
    """
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[tuple] = set()
    unique = []
    for script in scripts:
        # the same file or inline body (filename None or "") with the same attributes,
        # whatever its priority
        key = (str(getattr(script, "filename", script) or ""), tuple(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app: Sphinx) -> dict:
    app.add_config_value("offline_assets_dir", "_build/web_assets", "env")
    app.add_config_value("offline_assets_allow_cdn", False, "env")
    # after myst-nb and sphinx.ext.mathjax have registered their own defaults
    app.connect("config-inited", _configure, priority=900)
    app.connect("html-page-context", _drop_duplicate_scripts)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
