"""The documentation site: it builds, its links hold, and it works in a real browser.

The site is built once for the module, as ``make docs`` builds it (``sphinx -W
--keep-going -n``: warnings are errors, references to idigdask's own objects must
resolve, the worked examples of ``docs/examples/`` run), into a scratch folder. Then:

* every internal ``href`` and ``src`` of every built page names a file of the site,
  and every ``#anchor`` an id of its target page;
* every public name of ``idigdask.__all__`` has its page, and the architecture page
  carries ARCHITECTURE.md's table;
* in a real headless browser (Debian's ``chromium`` and ``chromium-driver``, driven
  by Selenium, ``ci/chromium.sh`` installs them) over a real HTTP server on
  127.0.0.1: every page loads without a console error, every image of the gallery
  decodes to a figure of a real size, and the search page finds ``build_dataset``
  and links to its API page.

Without chromium the browser tests skip and say why; under ``CI=true`` they fail.
"""

from __future__ import annotations

import functools
import html
import html.parser
import http.server
import os
import re
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
BUILD_TIMEOUT_S = 900

pytestmark = [pytest.mark.slow, pytest.mark.timeout(BUILD_TIMEOUT_S + 300)]


def under_ci() -> bool:
    """True under CI (``CI=true``), where a missing browser fails instead of skipping."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


# ---------------------------------------------------------------- the build

@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built once with warnings as errors; the build's output on failure."""
    out = tmp_path_factory.mktemp("docs") / "html"
    doctrees = out.parent / "doctrees"
    env = dict(os.environ, MPLBACKEND="Agg", TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONDONTWRITEBYTECODE="1")
    # Every example runs, whether or not an earlier build left its output behind.
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-b", "html",
               "-D", "sphinx_gallery_conf.run_stale_examples=True",
               "-d", str(doctrees), str(DOCS), str(out)]
    start = time.monotonic()
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=BUILD_TIMEOUT_S)
    took = time.monotonic() - start
    output = proc.stdout + proc.stderr
    warnings = [line for line in output.splitlines()
                if ("WARNING" in line or "ERROR" in line) and "absl::" not in line]
    if proc.returncode != 0:
        # a failing example: sphinx-gallery's summary of it ends the output
        summary = output[output.find("Here is a summary"):] if "Here is a summary" in output else ""
        pytest.fail(f"the docs build failed (exit code {proc.returncode}, {took:.0f} s):\n"
                    + "\n".join(warnings) + ("\n" + summary[-6000:] if summary else "")
                    + ("" if warnings or summary else output[-6000:]), pytrace=False)
    print(f"docs built in {took:.0f} s")
    return out


def html_pages(site: Path) -> list[Path]:
    """The site's pages (not the theme's template fragments under ``_static``)."""
    return sorted(p for p in site.rglob("*.html")
                  if not {"_sources", "_static"} & set(p.relative_to(site).parts))


class _Page(html.parser.HTMLParser):
    """The ids a page defines and the relative links it makes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[tuple[str, str]] = []   # (tag.attribute, value)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("id", "name") if tag == "a" else ("id",):
            if attrs.get(key):
                self.ids.add(attrs[key])
        for attr in {"a": ("href",), "link": ("href",), "img": ("src",),
                     "script": ("src",), "iframe": ("src",), "source": ("src",)}.get(tag, ()):
            value = attrs.get(attr)
            if value:
                self.links.append((f"{tag}.{attr}", value))


@functools.lru_cache(maxsize=None)
def parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def test_the_site_builds(site):
    for page in ("index.html", "api.html", "api/modules.html", "architecture.html",
                 "changelog.html", "howto/index.html", "auto_examples/index.html",
                 "search.html", "searchindex.js", "objects.inv",
                 "api/generated/idigdask.build_dataset.html"):
        assert (site / page).is_file(), f"{page} was not built"


def test_no_internal_link_is_broken(site):
    pages = html_pages(site)
    broken = []
    for page in pages:
        for what, link in parse(page).links:
            parts = urlsplit(link)
            if parts.scheme or link.startswith("//"):       # http:, https:, mailto:, data:
                continue
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                broken.append(f"{page.relative_to(site)}: {what}={link}: no such file")
                continue
            if parts.fragment and target.suffix == ".html":
                if unquote(parts.fragment) not in parse(target).ids:
                    broken.append(f"{page.relative_to(site)}: {what}={link}: no such anchor")
    assert not broken, f"{len(broken)} broken internal links:\n" + "\n".join(broken[:60])
    assert len(pages) > 20


def inventory_names(path: Path) -> set[str]:
    """The object names of a Sphinx inventory (version 2)."""
    data = path.read_bytes()
    body = data.split(b"\n", 4)[4]
    return {line.split(" ", 1)[0] for line in zlib.decompress(body).decode().splitlines()}


def test_every_public_name_has_its_page(site):
    import idigdask

    names = inventory_names(site / "objects.inv")
    public = [n for n in idigdask.__all__ if not n.startswith("__")]
    missing = [n for n in public if f"idigdask.{n}" not in names
               or not (site / "api" / "generated" / f"idigdask.{n}.html").is_file()]
    assert not missing, f"public names without an API page: {missing}"
    for name in ("idigdask.hpc.jobqueue_cluster", "idigdask.cluster.cluster_summary",
                 "idigdask.decode.decode_image", "idigdask.fetch.fetch_many",
                 "idigdask.hashing.NearDuplicateIndex",
                 "idigdask.testing.media_server.MediaServer"):
        assert name in names, name
    # the functions named like their modules are documented as functions
    train = (site / "api" / "generated" / "idigdask.train.html").read_text(encoding="utf-8")
    assert 'id="idigdask.train"' in train and "Parameters" in train


def test_the_architecture_page_is_architecture_md(site):
    page = (site / "architecture.html").read_text(encoding="utf-8")
    text = html.unescape(re.sub(r"<[^>]+>", "", page))
    markdown = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    modules = re.findall(r"^\| `([^`]+)`", markdown, flags=re.M)
    assert len(modules) > 10
    for module in modules:
        assert module in text, f"{module} is in ARCHITECTURE.md's table, not on the page"
    picture = markdown.split("```")[1].strip("\n").splitlines()
    for line in picture:
        assert line.strip() in text, f"the picture's line {line!r} is not on the page"


# ---------------------------------------------------------------- the browser

class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@pytest.fixture(scope="module")
def served(site):
    """The built site over a real HTTP server on 127.0.0.1: its base URL."""
    handler = functools.partial(_Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless chromium through chromedriver; skips (fails under CI) without them."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium (pip install 'idigdask[test]')")
    if missing:
        reason = f"no headless browser: {', '.join(missing)} missing (bash ci/chromium.sh)"
        if under_ci():
            pytest.fail(f"{reason}; CI=true does not run without it", pytrace=False)
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--no-proxy-server", "--window-size=1280,1024",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver: Selenium Manager never looks for (or downloads) one.
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)),
                              options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def severe(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser")
            if entry.get("level") == "SEVERE"]


def test_every_page_loads_without_errors(site, served, browser):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    failures = []
    pages = html_pages(site)
    for page in pages:
        path = page.relative_to(site).as_posix()
        browser.get(served + path)
        try:
            WebDriverWait(browser, 30).until(
                lambda d: d.execute_script("return document.readyState") == "complete")
        except TimeoutException:
            pass
        state = browser.execute_script("return document.readyState")
        title = browser.title
        errors = severe(browser)
        if state != "complete" or not title or errors:
            failures.append(f"{path}: readyState={state} title={title!r} errors={errors}")
    assert not failures, f"{len(failures)} of {len(pages)} pages:\n" + "\n".join(failures[:40])


IMAGES_READY = """
const images = Array.from(document.images);
images.forEach(img => { img.loading = 'eager'; });
return images.every(img => img.complete);
"""

IMAGE_SIZES = """
return Array.from(document.images).map(img => [
    img.getAttribute('src'), img.complete, img.naturalWidth, img.naturalHeight]);
"""


def test_the_gallery_shows_its_figures(site, served, browser):
    from selenium.webdriver.support.ui import WebDriverWait

    pages = [site / "auto_examples" / "index.html",
             *sorted((site / "auto_examples").glob("plot_*.html"))]
    bad, figures = [], {}
    for page in pages:
        path = page.relative_to(site).as_posix()
        browser.get(served + path)
        WebDriverWait(browser, 30).until(lambda d: d.execute_script(IMAGES_READY))
        images = browser.execute_script(IMAGE_SIZES)
        figures[path] = len(images)
        for src, complete, width, height in images:
            if not complete or width <= 50 or height <= 50:
                bad.append(f"{path}: {src}: complete={complete} {width}x{height}")
        bad += [f"{path}: console: {e}" for e in severe(browser)]
        if page.name.startswith("plot_"):
            shown = [src for src, *_ in images if "sphx_glr_" in src and "thumb" not in src]
            if not shown:
                bad.append(f"{path}: no figure on the page")
    assert not bad, "gallery images that do not show:\n" + "\n".join(bad)
    assert sum(figures.values()) > 0, figures


def test_search_finds_build_dataset(served, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(served + "search.html?q=build_dataset")

    def results(driver):
        links = driver.find_elements(By.CSS_SELECTOR, "#search-results ul.search li a")
        return links or False

    links = WebDriverWait(browser, 60).until(results)
    hrefs = [link.get_attribute("href") for link in links]
    assert any("api/generated/idigdask.build_dataset.html" in h for h in hrefs), hrefs
    assert not severe(browser)
    # the result's link opens the API page of build_dataset
    target = next(h for h in hrefs if "idigdask.build_dataset.html" in h)
    browser.get(target)
    assert browser.find_elements(By.ID, "idigdask.build_dataset")
