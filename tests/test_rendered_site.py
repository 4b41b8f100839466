"""What the reader actually sees: every page of the table of contents in headless Chromium.

For every page (plus index, search and general index), in light and in dark mode, after
MathJax has typeset the page:

- no raw TeX in the visible text (no ``$...$``, no ``$$``, no ``\\(``/``\\[``, no ``\\command``)
  outside typeset math, code and ``pre`` elements;
- every table renders as a table: no Markdown pipe syntax left in the visible text, no empty
  header cell;
- axe-core reports no violation at any impact level (minor and moderate included);
- at a phone width (390 px) the page itself does not scroll horizontally (wide code, tables
  and equations scroll inside their own boxes).

Each page is loaded once per mode (``visit`` memoizes), and each check is its own test, so a
failure names the check, the page and the mode. A missing browser fails these tests.
"""

import re

import pytest

from test_browser import PAGES, MODES, open_page  # noqa: F401  (fixtures below)
from test_browser import axe_js, browser, server  # noqa: F401

PHONE = {"width": 390, "height": 844}

# Raw TeX a reader could see: display or inline delimiters, or a control word like \frac.
RAW_TEX = re.compile(
    r"\$\$|\\\(|\\\)|\\\[|\\\]"  # delimiters
    r"|\$[^$\s][^$\n]{0,200}?\$"  # $...$ (no space after the opening $, as in TeX)
    r"|\\[A-Za-z]{2,}"  # \frac, \operatorname, \lvert ...
    r"|(?<![\w^])[A-Za-z]\^[A-Za-z0-9{]"  # e^x: a formula that lost its math markup
)
# A Markdown table that was not parsed: a delimiter row, or a line of cells between pipes.
PIPE_TABLE = re.compile(r"\|\s*:?-{3,}:?\s*\||^\s*\|.*\|.*\|\s*$", re.M)

VISIBLE_TEXT_JS = """() => {
    // Open every collapsed block (solutions, hidden cells) first: a reader can open them.
    document.querySelectorAll('details').forEach(d => { d.open = true; });
    const skip = 'pre, code, kbd, samp, script, style, noscript, template, textarea, '
        + 'mjx-container, mjx-assistive-mml, .highlight';
    const blocks = 'p, li, td, th, dt, dd, h1, h2, h3, h4, h5, h6, caption, figcaption, div';
    const out = [];
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    let node, last = null;
    while ((node = walker.nextNode())) {
        const el = node.parentElement;
        if (!el || el.closest(skip)) continue;
        // Only what is rendered: not display:none (print-only copies), not visibility:hidden.
        if (!el.checkVisibility({visibilityProperty: true})) continue;
        const block = el.closest(blocks);
        if (block !== last) { out.push('\\n'); last = block; }
        out.push(node.textContent);
    }
    return out.join('');
}"""

TABLES_JS = """() => [...document.querySelectorAll('table')].map((t, i) => ({
    index: i,
    where: (t.closest('section[id]') || {}).id || '',
    rows: t.rows.length,
    // A header cell needs text a reader (and assistive technology) can see: typeset math
    // alone has none (MathJax's CHTML draws glyphs with CSS), nor has an empty cell.
    empty_th: [...t.querySelectorAll('th')].filter(th => {
        const c = th.cloneNode(true);
        c.querySelectorAll('mjx-container, mjx-assistive-mml').forEach(e => e.remove());
        return !c.textContent.trim() && !th.querySelector('img[alt]:not([alt=""])');
    }).length,
}))"""

OVERFLOW_JS = """() => {
    const doc = document.scrollingElement || document.documentElement;
    const width = doc.clientWidth;
    // The widest elements that stick out of the viewport and are not inside a scroll box.
    const culprits = [];
    for (const e of document.body.querySelectorAll('*')) {
        const r = e.getBoundingClientRect();
        if (r.right <= width + 1 || r.width === 0) continue;
        let p = e.parentElement, clipped = false;
        while (p && p !== document.body) {
            const s = getComputedStyle(p);
            if (['auto', 'scroll', 'hidden', 'clip'].includes(s.overflowX)) { clipped = true; break; }
            p = p.parentElement;
        }
        if (!clipped) culprits.push(`${e.tagName.toLowerCase()}${e.id ? '#' + e.id : ''}`
            + `${e.className && typeof e.className === 'string' ? '.' + e.className.split(' ')[0] : ''}`
            + ` right=${Math.round(r.right)}`);
    }
    return {scrollWidth: doc.scrollWidth, clientWidth: width, culprits: culprits.slice(0, 8)};
}"""

_CACHE: dict = {}


def visit(browser, server, axe_js, doc, mode):
    """Load ``doc`` in ``mode`` once, run every check's measurement, and keep the results."""
    key = (doc, mode)
    if key in _CACHE:
        return _CACHE[key]
    context, page, _ = open_page(browser, server, doc, mode)
    try:
        # MathJax may still be loading (window.MathJax is only its configuration until the
        # script runs): on a page with math, wait for the loader, then for the typesetting.
        page.evaluate("""async () => {
            const hasMath = document.querySelector('span.math, div.math') !== null;
            for (let i = 0; hasMath && i < 600 &&
                 !(window.MathJax && MathJax.startup && MathJax.startup.promise); i++)
                await new Promise(r => setTimeout(r, 100));
            if (window.MathJax && MathJax.startup && MathJax.startup.promise)
                await MathJax.startup.promise;
            if (window.MathJax && MathJax.typesetPromise) await MathJax.typesetPromise();
        }""")
        text = page.evaluate(VISIBLE_TEXT_JS)
        out = {
            "tex": [m.group(0) if len(m.group(0)) > 40 else
                    text[max(0, m.start() - 30):m.end() + 30].replace("\n", " ")
                    for m in RAW_TEX.finditer(text)],
            "pipes": [m.group(0)[:100] for m in PIPE_TABLE.finditer(text)],
            "tables": page.evaluate(TABLES_JS),
        }
        page.evaluate(axe_js)
        result = page.evaluate("""async () => await axe.run(document, {
            resultTypes: ['violations'],
        })""")
        out["axe"] = [
            {"id": v["id"], "impact": v.get("impact"), "help": v["help"],
             "nodes": [str(n["target"]) for n in v["nodes"]]}
            for v in result["violations"]
        ]
        page.set_viewport_size(PHONE)
        page.wait_for_timeout(100)
        out["phone"] = page.evaluate(OVERFLOW_JS)
    finally:
        context.close()
    _CACHE[key] = out
    return out


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("doc", PAGES)
def test_no_raw_tex_in_visible_text(browser, server, axe_js, doc, mode):
    found = visit(browser, server, axe_js, doc, mode)["tex"]
    assert not found, f"{doc} ({mode}): {len(found)} raw TeX fragment(s): {found[:8]}"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("doc", PAGES)
def test_tables_render_as_tables(browser, server, axe_js, doc, mode):
    r = visit(browser, server, axe_js, doc, mode)
    assert not r["pipes"], f"{doc} ({mode}): Markdown table syntax shown as text: {r['pipes'][:5]}"
    empty = [t for t in r["tables"] if t["empty_th"]]
    assert not empty, f"{doc} ({mode}): tables with empty header cells: {empty}"
    assert all(t["rows"] > 0 for t in r["tables"]), f"{doc} ({mode}): empty table: {r['tables']}"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("doc", PAGES)
def test_axe_reports_no_violation_at_any_impact(browser, server, axe_js, doc, mode):
    bad = visit(browser, server, axe_js, doc, mode)["axe"]
    report = "\n".join(f"  [{v['impact']}] {v['id']} ({len(v['nodes'])} node(s)): {v['help']}\n"
                       f"      {v['nodes'][:6]}" for v in bad)
    assert not bad, f"{doc} ({mode}): {len(bad)} axe violation(s):\n{report}"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("doc", PAGES)
def test_no_horizontal_scroll_at_phone_width(browser, server, axe_js, doc, mode):
    r = visit(browser, server, axe_js, doc, mode)["phone"]
    assert r["scrollWidth"] <= r["clientWidth"], (
        f"{doc} ({mode}): at {PHONE['width']} px the page is {r['scrollWidth']} px wide "
        f"(viewport {r['clientWidth']} px); sticking out: {r['culprits']}")
