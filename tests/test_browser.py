"""The built book in a real headless browser: Debian's chromium driven by Playwright.

Never ``playwright install``: the browser is /usr/bin/chromium (``.ci/run`` installs it). Without it
the tests are skipped locally and fail under CI, where they must run.
"""
from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Console messages that are harmless and expected from the theme or a bare static server.
BENIGN = ("Got invalid theme mode", "favicon.ico", "Failed to load resource: the server responded "
          "with a status of 404")

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


@pytest.fixture
def page(browser, site):
    context = browser.new_context()
    page = context.new_page()
    page.errors, page.offsite = [], []
    page.on("console", lambda m: m.type == "error" and page.errors.append(m.text))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("request", lambda r: not r.url.startswith(site) and not r.url.startswith("data:")
            and page.offsite.append(r.url))
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


def test_search_returns_hits(page, site):
    page.goto(f"{site}/search.html?q=C-score", wait_until="networkidle")
    page.wait_for_selector("#search-results ul.search li", timeout=15_000)
    hits = page.locator("#search-results ul.search li").all_inner_texts()
    assert any("Difficulty scores" in h for h in hits), f"search for C-score should find the page: {hits}"
    assert not _real_errors(page), f"console errors: {page.errors}"
