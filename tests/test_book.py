"""The book, built once per session at the ci profile with -W --keep-going, checked as HTML."""
from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote, urldefrag

import pytest
import yaml
from bs4 import BeautifulSoup

REPO = Path(__file__).resolve().parents[1]


def toc_files() -> list[str]:
    """Every docname the table of contents lists, root first (also used by test_browser.py)."""
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        for chapter in part.get("chapters", []):
            files.append(chapter["file"])
            files += [s["file"] for s in chapter.get("sections", [])]
    return files


_toc_files = toc_files


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
    titles = set(_search_index(book.html)["titles"])          # decoded: "–" is \u2013 in the file
    for name, soup in _pages(book.html).items():
        title = soup.find("h1").get_text(strip=True).rstrip("#¶").strip()
        assert title and title in titles, f"search index lacks the title of {name}: {title!r}"


def test_no_widget_javascript(book):
    for page in book.html.rglob("*.html"):
        text = page.read_text()
        assert "jupyter-widgets" not in text and "require.js" not in text, f"{page.name} pulls widget JS"
        assert "unpkg.com" not in text, f"{page.name} names thebe's off-site bundle (see book/_ext)"


CITE = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]+)`")


def _cited_keys() -> set[str]:
    keys = set()
    for md in (REPO / "book").glob("*.md"):
        for group in CITE.findall(md.read_text()):
            keys |= {k.strip() for k in group.split(",")}
    return keys


def test_citations_resolve_to_the_bibliography(book):
    cited = _cited_keys()
    assert len(cited) >= 10, f"the chapters should cite the papers they explain, found {sorted(cited)}"
    bib = (REPO / "book" / "references.bib").read_text()
    known = set(re.findall(r"@\w+\{([^,]+),", bib))
    assert cited <= known, f"cited but not in book/references.bib: {sorted(cited - known)}"
    page = book.html / "book" / "bibliography.html"
    soup = BeautifulSoup(page.read_text(), "html.parser")
    entries = soup.select("div.citation")
    assert len(entries) == len(cited), f"{len(entries)} bibliography entries for {len(cited)} cited works"
    for entry in entries:
        links = [a["href"] for a in entry.select("a[href]")]
        assert any(h.startswith(("https://arxiv.org/", "https://doi.org/")) for h in links), \
            f"bibliography entry without an arXiv or DOI link: {entry.get_text(' ', strip=True)[:120]}"
    ids = {tag["id"] for tag in soup.find_all(id=True)}
    n_links = 0
    for name, doc in _pages(book.html).items():
        for a in doc.select("a[href*='bibliography.html#']"):
            n_links += 1
            assert a["href"].split("#", 1)[1] in ids, f"{name}: citation {a.get_text()!r} points nowhere"
    assert n_links >= len(cited), f"only {n_links} citation links for {len(cited)} cited works"


def test_every_internal_link_resolves(book):
    """Every relative href of every page names an existing file, and its #fragment an existing id."""
    ids: dict[Path, set[str]] = {}
    for page in book.html.rglob("*.html"):
        soup = BeautifulSoup(page.read_text(), "html.parser")
        for a in soup.select("a[href]"):
            href = a["href"]
            if re.match(r"^([a-z]+:|//)", href):
                continue
            path, fragment = urldefrag(href)
            target = (page.parent / unquote(path)).resolve() if path else page
            assert target.exists(), f"{page.relative_to(book.html)} links to missing {href}"
            if fragment and target.suffix == ".html":
                if target not in ids:
                    ids[target] = {t["id"] for t in BeautifulSoup(target.read_text(), "html.parser")
                                   .find_all(id=True)}
                assert fragment in ids[target], f"{page.relative_to(book.html)}: no #{fragment} in {path}"


def test_nothing_in_the_stylesheets_is_loaded_off_site(book):
    offsite = re.compile(r"(url\(\s*['\"]?|@import\s+['\"])(https?:)?//")
    for css in (book.html / "_static").rglob("*.css"):
        assert not offsite.search(css.read_text(errors="replace")), f"{css.name} loads a file off-site"


def _search_index(html: Path) -> dict:
    text = (html / "searchindex.js").read_text()
    return json.loads(text[text.index("(") + 1:text.rindex(")")])


def test_search_index_knows_every_page_and_the_course_terms(book):
    index = _search_index(book.html)
    assert set(index["docnames"]) >= set(_toc_files()), \
        f"pages missing from the search index: {set(_toc_files()) - set(index['docnames'])}"
    terms = index["terms"]

    def docs(term):
        found = terms.get(term, [])
        return {found} if isinstance(found, int) else set(found)
    for term in ("dasm", "coverag", "α", "ablat", "distil", "trajectori"):
        assert docs(term), f"the search index has no page with {term!r}"
    assert docs("α") & docs("ablat"), "no page is found by the search 'α ablation'"


def test_every_notebook_page_offers_its_executed_ipynb(book):
    import nbformat

    notebooks = [f for f in _toc_files() if f.startswith("notebooks/")]
    for name in notebooks:
        page = book.html / f"{name}.html"
        hrefs = [a["href"] for a in BeautifulSoup(page.read_text(), "html.parser").select("a[href]")]
        wanted = [h for h in hrefs if h.endswith(f"_sources/{name}.ipynb")]
        assert wanted, f"{name}: no .ipynb download link"
        nb = nbformat.read(page.parent / wanted[0], as_version=4)
        assert nb.metadata.get("kernelspec"), f"{name}.ipynb has no kernelspec"
        assert any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
            f"{name}.ipynb is not the executed notebook (no outputs)"


def test_every_page_has_the_favicon(book):
    for name, soup in _pages(book.html).items():
        icons = soup.select("link[rel~=icon]")
        assert icons, f"{name} has no favicon link"
        target = (book.html / name).parent / icons[0]["href"]
        assert target.exists() and target.stat().st_size > 100, f"{name}: favicon {icons[0]['href']} missing"


def test_execution_statistics_list_every_notebook(book):
    soup = BeautifulSoup((book.html / "book" / "execution.html").read_text(), "html.parser")
    rows = [[c.get_text(" ", strip=True) for c in r.select("td")] for r in soup.select("table tbody tr")]
    for name in (f for f in _toc_files() if f.startswith("notebooks/")):
        mine = [r for r in rows if r[0] == f"{name}.py"]
        assert len(mine) == 1, f"the execution statistics lack {name}: {rows}"
        assert mine[0][1] == "ci" and "profile: ci" in mine[0][2], mine[0]
        assert float(mine[0][4]) > 0, mine[0]


def test_every_notebook_page_is_rendered_from_its_papermill_run(book):
    """papermill executed each page once, through its parameters cell, and the book rendered that
    executed notebook: the downloaded .ipynb is papermill's, of the page's current source, at ci."""
    import nbformat

    from ddbook.rerun import source_sha256

    assert "execution_mode='off'" in book.log and "Executing notebook" not in book.log
    pages = [f for f in _toc_files() if f.startswith("notebooks/")]
    assert sorted(p.name for p in book.executed.glob("*.ipynb")) == \
        sorted(f"{f.removeprefix('notebooks/')}.ci.ipynb" for f in pages)
    for name in pages:
        nb = nbformat.read(book.html / "_sources" / f"{name}.ipynb", as_version=4)
        assert nb.metadata.get("papermill", {}).get("parameters", {}).get("profile") == "ci", name
        record = nb.metadata["ddbook"]
        assert record["source_sha256"] == source_sha256((REPO / f"{name}.py").read_text()), name
        injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert len(injected) == 1 and 'profile = "ci"' in injected[0].source, name


def test_results_inventories_count_the_result_files(book):
    """The reproducibility chapters' tables are made from results/, not typed: their counts agree."""
    page = BeautifulSoup((book.html / "book" / "repro_mtt.html").read_text(), "html.parser")
    captions = [p.get_text(" ", strip=True) for p in page.select("p")
                if "result files (results/quick/distill/mtt-*.json)" in p.get_text()]
    files = sorted((REPO / "results" / "quick" / "distill").glob("mtt-*.json"))
    assert files, "results/quick/distill holds the committed MTT runs"
    assert captions and captions[0].startswith(f"{len(files)} result files"), captions
    table = page.select("table.results-inventory")[0]
    names = [tr.find("td").get_text(strip=True) for tr in table.select("tbody tr")]
    assert names == [json.loads(f.read_text())["name"] for f in files], names


def test_figure_numbers_are_labelled_as_the_books(book):
    """A caption's number reads "Book fig. N", never a bare "Fig. N" that could pass for a paper's."""
    n = 0
    for name, soup in _pages(book.html).items():
        for number in soup.select("figcaption .caption-number"):
            n += 1
            assert number.get_text(strip=True).startswith("Book fig."), \
                f"{name}: figure number {number.get_text(strip=True)!r} could be read as a paper's"
    assert n, "no numbered figure found: the notebook pages' figures carry captions and names"
