"""A real browser (headless Chromium) opens the built site and checks what a reader would see.

Run after `jupyter-book build`; the site is served from ``_build/html`` on localhost. Each page must typeset its
math with the MathJax shipped inside the site (no raw ``\\(`` left, no request leaving localhost), load every
figure, and link only to pages and anchors that exist.
"""
from __future__ import annotations

import functools
import http.server
import re
import shutil
import threading
from pathlib import Path
from urllib.parse import unquote, urldefrag, urljoin, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "_build" / "html"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
FIRST_CHAPTER = "book/robustness/crown-bound-propagation.html"
PAGES = ["book/intro.html", "book/how-to-use.html", FIRST_CHAPTER, "book/reproductions.html"]

pytestmark = pytest.mark.skipif(not (SITE / "index.html").exists(), reason="build the site first (make book)")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    handler = functools.partial(QuietHandler, directory=str(SITE))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        profile = tmp_path_factory.mktemp("chromium-profile")
        context = pw.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM, args=FLAGS,
                                                        headless=True)
        yield context
        context.close()


def open_page(browser, url):
    """Load a page, wait for MathJax to finish typesetting, and record requests that left localhost."""
    page = browser.new_page()
    outside = []
    page.on("request", lambda req: outside.append(req.url) if not req.url.startswith(("http://127.0.0.1",
                                                                                       "data:")) else None)
    page.goto(url, wait_until="load")
    if page.locator("script[src*='mathjax']").count() == 0:  # Sphinx loads MathJax only on pages with math
        return page, outside
    page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=20000)
    page.evaluate("() => MathJax.startup.promise")
    return page, outside


def broken_links(page, url) -> list[str]:
    broken = []
    for href in page.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))"):
        if href.startswith(("http:", "https:", "mailto:", "javascript:")):
            continue
        target, fragment = urldefrag(urljoin(url, href))
        path = SITE / unquote(urlparse(target).path).lstrip("/")
        if path.is_dir():
            path = path / "index.html"
        if not path.exists():
            broken.append(href)
        elif fragment and path.suffix == ".html":
            ids = set(re.findall(r'id="([^"]+)"', path.read_text(errors="replace")))
            if unquote(fragment) not in ids:
                broken.append(href)
    return broken


@pytest.mark.parametrize("name", PAGES)
def test_page_renders_offline_with_math_figures_and_links(browser, server, name):
    assert (SITE / name).exists(), f"{name} was not built"
    page, outside = open_page(browser, server + name)
    text = page.inner_text("article")
    assert "\\(" not in text and "\\[" not in text, "raw LaTeX left in the page: MathJax did not typeset it"
    images = page.eval_on_selector_all("article img", "els => els.map(e => [e.src, e.complete && e.naturalWidth])")
    assert all(width for _, width in images), f"figures that did not load: {[s for s, w in images if not w]}"
    assert not broken_links(page, server + name)
    assert not outside, f"the page tried to reach outside the site: {outside[:3]}"
    page.close()


def test_first_chapter_has_math_figures_solutions_and_download(browser, server):
    page, _ = open_page(browser, server + FIRST_CHAPTER)
    assert page.locator("mjx-container").count() > 10, "the chapter's equations were not typeset"
    assert page.locator("article img").count() >= 3, "the chapter shows fewer than three figures"
    solutions = page.locator("article .solution")
    assert solutions.count() >= 2
    # Solutions start collapsed: their body is hidden until the reader opens them.
    assert not page.locator("article .solution .solution-content").first.is_visible()
    assert page.locator("a[href$='.ipynb']").count() >= 1, "no download link for the chapter's notebook"
    page.close()


def test_every_part_page_is_built_and_linked_from_the_intro(browser, server):
    page, _ = open_page(browser, server + "book/intro.html")
    hrefs = page.eval_on_selector_all("article a[href]", "els => els.map(e => e.getAttribute('href'))")
    for part in ("generative", "robustness", "explanations", "physics-informed", "operators", "dynamics",
                 "optimization"):
        assert any(f"{part}/index.html" in h for h in hrefs), f"the intro does not link the {part} part"
        assert (SITE / "book" / part / "index.html").exists()
    page.close()
