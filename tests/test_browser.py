"""The built book in a real headless browser: Debian's chromium driven by Playwright.

Every page of the table of contents is opened at a desktop (1280 px) and a phone (390 px) width:
no horizontal overflow, every image decodes, no console error, no off-site request, and every
link that stays on the site resolves (the file answers 200, the #fragment names an element).

Never ``playwright install``: the browser is /usr/bin/chromium (``.ci/run`` installs it). Without it
the tests are skipped locally and fail under CI, where they must run.
"""
from __future__ import annotations

import functools
import http.server
import os
import shutil
import re
import threading
from pathlib import Path
from urllib.parse import urldefrag

import pytest
from test_book import toc_files

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# The one console message that is harmless: pydata-sphinx-theme's warning when no mode is stored.
# (A 404 is not benign: the book has a favicon, so every request it makes must succeed.)
BENIGN = ("Got invalid theme mode",)
WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}
PAGES = toc_files()

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} is missing under CI: .ci/run must apt-get install chromium")
    pytest.skip("no /usr/bin/chromium (apt-get install chromium)", allow_module_level=True)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site(book):
    assert book.returncode == 0, "the book did not build"
    handler = functools.partial(_Quiet, directory=str(book.html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield b
        b.close()


def _open(browser, site, width=1280, height=900):
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.errors, page.offsite = [], []
    page.on("console", lambda m: m.type == "error" and page.errors.append(m.text))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("request", lambda r: not r.url.startswith(site) and not r.url.startswith("data:")
            and page.offsite.append(r.url))
    page.failed = []
    page.on("response", lambda r: r.status >= 400 and page.failed.append(f"{r.status} {r.url}"))
    return context, page


@pytest.fixture
def page(browser, site):
    context, page = _open(browser, site)
    yield page
    context.close()


def _real_errors(page):
    return [e for e in page.errors if not any(b in e for b in BENIGN)]


def test_intro_loads_and_typesets_maths(page, site):
    page.goto(f"{site}/book/intro.html", wait_until="networkidle")
    assert "Difficulty-aware dataset distillation" in page.title()
    page.wait_for_selector("mjx-container", timeout=15_000)
    assert page.locator("mjx-container").count() >= 3, "MathJax should typeset the intro's maths"
    assert not _real_errors(page), f"console errors: {page.errors}"
    assert not page.offsite, f"off-site requests: {page.offsite}"


def test_notebook_figures_decode(page, site):
    page.goto(f"{site}/notebooks/difficulty_scores.html", wait_until="networkidle")
    imgs = page.locator(".cell_output img")
    assert imgs.count() >= 2, "the difficulty page shows its figures"
    widths = page.eval_on_selector_all(".cell_output img", "els => els.map(e => e.complete ? e.naturalWidth : 0)")
    assert all(w > 0 for w in widths), f"every figure decodes (naturalWidth > 0): {widths}"
    page.wait_for_selector("mjx-container", timeout=15_000)
    assert not _real_errors(page), f"console errors: {page.errors}"
    assert not page.offsite, f"off-site requests: {page.offsite}"


@pytest.mark.parametrize("query, expected", [
    ("C-score", "Difficulty scores"),
    ("α ablation", "SelMatch: selection and partial updates"),
    ("coverage", "SelMatch: selection and partial updates"),
    ("DASM", "DASM: difficulty-aligned sequential matching"),
])
def test_search_returns_hits(page, site, query, expected):
    page.goto(f"{site}/search.html?q={query}", wait_until="networkidle")
    page.wait_for_selector("#search-results ul.search li", timeout=15_000)
    hits = page.locator("#search-results ul.search li").all_inner_texts()
    assert any(expected in h for h in hits), f"search for {query!r} should find {expected!r}: {hits}"
    assert not _real_errors(page), f"console errors: {page.errors}"


_LINKS: dict[str, str | None] = {}   # url without fragment -> its HTML (None: not HTML)


def _check_link(page, url: str) -> str | None:
    """None when ``url`` resolves on the site, else why it does not."""
    path, fragment = urldefrag(url)
    if path not in _LINKS:
        response = page.request.get(path)
        if response.status != 200:
            return f"{url}: HTTP {response.status}"
        kind = response.headers.get("content-type", "")
        _LINKS[path] = response.text() if "html" in kind else None
    html = _LINKS[path]
    if fragment and html is not None and not re.search(rf"id=[\"']{re.escape(fragment)}[\"']", html):
        return f"{url}: no element with id {fragment!r}"
    return None


@pytest.mark.parametrize("width", list(WIDTHS))
@pytest.mark.parametrize("name", PAGES)
def test_every_page_at_desktop_and_phone_width(browser, site, name, width):
    context, page = _open(browser, site, *WIDTHS[width])
    try:
        page.goto(f"{site}/{name}.html", wait_until="networkidle")
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"{name} at {width} width scrolls sideways by {overflow} px"
        sizes = page.evaluate("""async () => Promise.all([...document.images].map(img => {
            img.loading = 'eager';
            return img.decode().then(() => img.naturalWidth, () => 0); }))""")
        assert all(w > 0 for w in sizes), f"{name}: an image does not decode: {sizes}"
        if name.startswith("notebooks/"):
            assert sizes, f"{name} shows no figure"
        if width == "phone":
            # [natural width, shown width] of every visible figure (a folded output has width 0)
            shown = page.eval_on_selector_all(".cell_output img", """els => els.map(
                e => [e.naturalWidth, e.getBoundingClientRect().width]).filter(s => s[1] > 0)""")
            small = [f"{w:.0f} of {n} px" for n, w in shown if w < 0.45 * n]
            assert not small, f"{name}: figures shown below 45 % of their natural width: {small}"
        links = page.eval_on_selector_all("a[href]", "els => els.map(a => a.href)")
        broken = [why for url in sorted(set(links)) if url.startswith(site)
                  and (why := _check_link(page, url))]
        assert not broken, f"{name}: links that do not resolve: {broken}"
        assert not page.failed, f"{name}: failed requests: {page.failed}"
        assert not _real_errors(page), f"{name}: console errors: {page.errors}"
        assert not page.offsite, f"{name}: off-site requests: {page.offsite}"
    finally:
        context.close()
