"""Every page of the built site in real headless Chromium (Debian's /usr/bin/chromium).

For each page of the table of contents (plus the index, search and general-index pages), in
light and in dark mode: no console error or uncaught exception; math typeset by the site's own
MathJax (output elements present, no raw TeX delimiters left in the visible text); every
image loaded; no request to any host but the local server; an axe-core accessibility check
with no serious or critical violation. A screenshot of each page goes to
_build/test-artifacts/. A missing browser fails these tests: it never skips them.
"""

import functools
import http.server
import os
import re
import threading
import time
import warnings
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conftest import ARTIFACTS, toc_files

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
INSTALL_HINT = ("headless Chromium is required: `sudo apt-get install chromium` (Debian), "
                "or set CHROMIUM=/path/to/chromium; `make test` installs it when run as root")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-default-apps", "--disable-extensions", "--mute-audio"]
BLOCKING = {"serious", "critical"}
PAGES = toc_files() + ["index", "search", "genindex"]
MODES = ["light", "dark"]


def axe_source() -> str:
    import axe_playwright_python
    return (Path(axe_playwright_python.__file__).parent / "axe.min.js").read_text(encoding="utf-8")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(built_site):
    handler = functools.partial(QuietHandler, directory=str(built_site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"no browser at {CHROMIUM}: {INSTALL_HINT}", pytrace=False)
    from playwright.sync_api import sync_playwright

    # Playwright gives each launch a fresh, empty profile of its own.
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        assert b.version, "Chromium did not start"
        yield b
        b.close()


@pytest.fixture(scope="module")
def axe_js():
    return axe_source()


def visible_text_js() -> str:
    # Text a reader sees, outside code, typeset math and scripts.
    return """() => {
        const clone = document.body.cloneNode(true);
        clone.querySelectorAll('pre, code, script, style, mjx-container, mjx-assistive-mml, '
            + 'textarea, .highlight, .cite-box pre').forEach(e => e.remove());
        return clone.textContent;
    }"""


def open_page(browser, server, doc, mode):
    context = browser.new_context(color_scheme=mode, viewport={"width": 1280, "height": 900})
    # pydata-sphinx-theme keeps the reader's choice in localStorage ("mode"); start from it.
    context.add_init_script(f"try {{ localStorage.setItem('mode', '{mode}'); "
                            f"localStorage.setItem('theme', '{mode}'); }} catch (e) {{}}")
    page = context.new_page()
    # Generous: on a loaded machine (2 shared cores) a long chapter can take over 30 s to load.
    page.set_default_timeout(180_000)
    record = {"console": [], "foreign": []}
    page.on("console", lambda m: m.type == "error" and record["console"].append(m.text))
    page.on("pageerror", lambda e: record["console"].append(f"uncaught: {e}"))

    def route(r):
        host = urlsplit(r.request.url).hostname
        if r.request.url.startswith(("data:", "blob:", "about:")) or host == "127.0.0.1":
            r.continue_()
        else:
            record["foreign"].append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("request", lambda req: (urlsplit(req.url).hostname not in (None, "127.0.0.1")
                                    and not req.url.startswith(("data:", "blob:"))
                                    and record["foreign"].append(req.url)))
    track_requests(page, record)
    page.goto(server + f"{doc}.html", wait_until="load")
    settle(page, record)
    end_transitions(page)
    return context, page, record


def track_requests(page, record):
    """Keep ``record["pending"]``: the requests the page has started and not yet ended."""
    pending = record.setdefault("pending", {})
    page.on("request", lambda req: pending.__setitem__(id(req), req.url))
    page.on("requestfinished", lambda req: pending.pop(id(req), None))
    page.on("requestfailed", lambda req: pending.pop(id(req), None))


def settle(page, record, quiet_ms=500, limit_s=60):
    """Wait until no request of the page has been in flight for ``quiet_ms``.

    Playwright's own "networkidle" wait has no diagnosis when it times out (one CI run sat
    180 s on it for chapter 7). This one gives up after ``limit_s`` and returns the requests
    still open, so that the caller can report them; every check that needs a resource
    (images, MathJax, the explorable figures) waits for that resource itself. Timed in
    Python, not in the page: the site's index page replaces itself (a meta refresh to the
    intro), and an evaluation in the page would fail during that navigation.
    """
    pending = record["pending"]
    start = quiet_since = time.monotonic()
    while True:
        now = time.monotonic()
        if pending:
            quiet_since = now
        elif now - quiet_since >= quiet_ms / 1000:
            page.wait_for_load_state("load")  # the document a redirect led to, if any
            return []
        if now - start > limit_s:
            return sorted(set(pending.values()))
        page.wait_for_timeout(100)


def end_transitions(page):
    """Turn off CSS transitions and animations, and wait two frames.

    The theme fades colours in (the switch to the reader's light or dark mode, the code cells'
    toggles). An accessibility check that reads colours mid-fade can report a contrast that no
    reader sees once the page has settled (an intermittent color-contrast failure on 456 code
    tokens of the CPU appendix). The final colours are the same with or without the fade.
    """
    page.add_style_tag(content="*, *::before, *::after { transition: none !important; "
                               "animation: none !important; }")
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("doc", PAGES)
def test_page_in_browser(browser, server, axe_js, doc, mode):
    context, page, record = open_page(browser, server, doc, mode)
    try:
        # Wait for MathJax (if the page has it) to finish typesetting.
        page.evaluate("""async () => {
            if (window.MathJax && MathJax.startup && MathJax.startup.promise)
                await MathJax.startup.promise;
        }""")
        # Images that are lazy-loaded get scrolled into view first.
        page.evaluate("""async () => {
            for (const img of document.images) { img.scrollIntoView(); }
            await Promise.all([...document.images].map(img => img.complete ? null :
                new Promise(r => { img.onload = img.onerror = r; setTimeout(r, 5000); })));
            window.scrollTo(0, 0);
        }""")
        # A request still open a minute after the load is reported, not failed on: what a
        # reader would miss (an image, the math, an explorable figure) is checked below.
        stuck = settle(page, record)
        if stuck:
            warnings.warn(f"{doc} ({mode}): requests still open after 60 s: {stuck[:5]}")

        theme = page.evaluate("document.documentElement.dataset.theme")
        assert theme == mode, f"{doc}: data-theme is {theme!r}, wanted {mode!r}"

        assert not record["console"], f"{doc} ({mode}): console errors: {record['console']}"
        assert not record["foreign"], f"{doc} ({mode}): requests off the site: {record['foreign']}"

        broken = page.evaluate("""() => [...document.images]
            .filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.currentSrc || i.src)""")
        assert not broken, f"{doc} ({mode}): images not loaded: {broken}"

        math = page.evaluate("""() => ({
            sphinx: document.querySelectorAll('span.math, div.math').length,
            typeset: document.querySelectorAll('mjx-container').length,
            raw: [...document.querySelectorAll('span.math, div.math')]
                    .filter(e => !e.querySelector('mjx-container')).map(e => e.textContent.slice(0, 80)),
            mathjax: !!window.MathJax && window.MathJax.version || null,
        })""")
        if math["sphinx"]:
            assert math["mathjax"] and math["mathjax"].startswith("3."), f"{doc}: MathJax missing"
            assert math["typeset"] >= math["sphinx"], f"{doc}: math not typeset: {math}"
            assert not math["raw"], f"{doc}: untypeset math: {math['raw'][:5]}"
        text = page.evaluate(visible_text_js())
        leftover = re.findall(r".{0,30}(?:\\\(|\\\)|\\\[|\\\]|\$\$).{0,30}", text)
        assert not leftover, f"{doc} ({mode}): raw TeX in the visible text: {leftover[:5]}"

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        name = doc.replace("/", "__")
        page.screenshot(path=str(ARTIFACTS / f"{name}-{mode}.png"), full_page=True)

        page.evaluate(axe_js)
        result = page.evaluate("""async () => await axe.run(document, {
            resultTypes: ['violations'],
        })""")
        bad = [v for v in result["violations"] if v.get("impact") in BLOCKING]
        report = "\n".join(
            f"  [{v['impact']}] {v['id']}: {v['help']}\n" + "\n".join(
                f"      {n['target']} {n.get('failureSummary', '')[:200]!r}" for n in v["nodes"][:8])
            for v in bad)
        (ARTIFACTS / f"{name}-{mode}-axe.txt").write_text(
            "\n".join(f"[{v.get('impact')}] {v['id']}: {len(v['nodes'])} node(s)"
                      for v in result["violations"]) + "\n")
        assert not bad, f"{doc} ({mode}): accessibility violations:\n{report}"
    finally:
        context.close()
