"""The book, built once per session at the ci profile with -W --keep-going, checked as HTML."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from bs4 import BeautifulSoup

REPO = Path(__file__).resolve().parents[1]


def _toc_files() -> list[str]:
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        for chapter in part.get("chapters", []):
            files.append(chapter["file"])
            files += [s["file"] for s in chapter.get("sections", [])]
    return files


def _pages(html: Path) -> dict[str, BeautifulSoup]:
    return {f: BeautifulSoup((html / f"{f}.html").read_text(), "html.parser") for f in _toc_files()}


def test_build_succeeds(book):
    assert book.returncode == 0, f"jupyter-book build failed:\n{book.log[-4000:]}"
    assert "build succeeded" in book.log or "Finished generating HTML" in book.log, book.log[-2000:]


def test_every_toc_page_exists(book):
    for f in _toc_files():
        assert (book.html / f"{f}.html").exists(), f"{f}.html missing from the build"


def test_no_tracebacks_or_error_reports(book):
    for name, soup in _pages(book.html).items():
        assert not soup.select(".output.traceback"), f"{name} shows a traceback"
        assert "Traceback (most recent call last)" not in soup.get_text(), f"{name} shows a traceback"
    reports = list((book.html / "reports").rglob("*.err.log")) if (book.html / "reports").exists() else []
    assert not reports, f"execution error reports: {reports}"


def test_no_warnings_printed_on_pages(book):
    for name, soup in _pages(book.html).items():
        stderr = soup.select(".cell_output .output.stderr")
        assert not stderr, f"{name} prints to stderr: {stderr[0].get_text()[:300]}"


def test_notebook_pages_have_figures_that_exist(book):
    notebooks = [f for f in _toc_files() if f.startswith("notebooks/")]
    assert notebooks, "the toc lists no notebook"
    for name in notebooks:
        page = book.html / f"{name}.html"
        imgs = BeautifulSoup(page.read_text(), "html.parser").select(".cell_output img")
        assert imgs, f"{name} has no figure"
        for img in imgs:
            target = (page.parent / img["src"]).resolve()
            assert target.exists() and target.stat().st_size > 1000, f"{name}: {img['src']} missing"


def test_nothing_is_loaded_off_site(book):
    offsite = re.compile(r"^(https?:)?//")
    for page in book.html.rglob("*.html"):
        soup = BeautifulSoup(page.read_text(), "html.parser")
        for tag in soup.find_all(["script", "img", "iframe", "source", "video", "audio", "embed"]):
            assert not offsite.match(tag.get("src", "")), f"{page.name} loads {tag['src']}"
        for link in soup.find_all("link"):
            rel = " ".join(link.get("rel", []))
            if any(r in rel for r in ("stylesheet", "preload", "icon", "modulepreload")):
                assert not offsite.match(link.get("href", "")), f"{page.name} loads {link['href']}"


def test_mathjax_is_served_from_the_build(book):
    intro = (book.html / "book" / "intro.html").read_text()
    assert "_static/mathjax" in intro, "MathJax must come from _static (sphinx-mathjax-offline)"
    assert (book.html / "_static" / "mathjax" / "tex-chtml.js").exists()


def test_search_index_knows_every_page_title(book):
    index = (book.html / "searchindex.js").read_text()
    for name, soup in _pages(book.html).items():
        title = soup.find("h1").get_text(strip=True).rstrip("#¶").strip()
        assert title and title in index, f"search index lacks the title of {name}: {title!r}"


def test_no_widget_javascript(book):
    for page in book.html.rglob("*.html"):
        text = page.read_text()
        assert "jupyter-widgets" not in text and "require.js" not in text, f"{page.name} pulls widget JS"
        assert "unpkg.com" not in text, f"{page.name} names thebe's off-site bundle (see book/_ext)"
