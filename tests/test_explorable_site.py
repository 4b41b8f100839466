"""The explorable figures on the built site, in headless Chromium (Debian's /usr/bin/chromium).

For each figure (expnorm.explorable): it is drawn by the site's own copy of Vega-Lite; moving
each slider with the keyboard changes the drawn SVG, and the numbers the figure shows at two
slider positions match expnorm's, computed here afresh (not read from the frames); axe-core
finds no violation inside the figure. For the pages: no request leaves 127.0.0.1, the one
vendored script has one URL for the whole site and is fetched once per visit, and every
chapter page transfers less than 3 MB in total (sizes written to
_build/test-artifacts/explorable-sizes.txt).
"""

import functools
import gzip
import http.server
import math
import os
import re
import threading
from urllib.parse import urlsplit

import numpy as np
import pytest

from conftest import ARTIFACTS, chapter_docnames
from test_browser import (QuietHandler, axe_js, browser, end_transitions, server,  # noqa: F401
                          settle, track_requests)

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import expnorm  # noqa: E402
from expnorm import explorable as ex  # noqa: E402

FIGURES = {
    "fig-ch2-explorable-simplex": "book/02_normalization",
    "fig-ch4-explorable-temperature": "book/04_temperature_and_alternatives",
    "fig-ch4-explorable-alternatives": "book/04_temperature_and_alternatives",
    "fig-ch7-explorable-online": "book/07_softmax_at_scale",
}
SCRIPT = "_static/explorable/explorable.js"
BUDGET = 3_000_000  # bytes transferred per chapter page, cold cache, served like a static host
SHOWN = 0.0005 + 1e-4  # a value shown with 3 decimals, from frames with 4 significant digits
NUMBER = r"[-\u2212]?\d+(?:\.\d+)?"


def num(s: str) -> float:
    return float(s.replace("\u2212", "-"))


class HostLikeHandler(QuietHandler):
    """Serves the site the way a static host does (GitHub Pages: gzip for text, max-age=600),
    so the browser's transfer sizes are those a reader of the published site pays."""

    GZIP = {".html", ".js", ".css", ".json", ".svg", ".txt", ".xml", ".map"}
    cache: dict = {}

    def end_headers(self):
        self.send_header("Cache-Control", "max-age=600")
        super().end_headers()

    def do_GET(self):
        path = self.translate_path(self.path)
        if (os.path.splitext(path)[1] not in self.GZIP or not os.path.isfile(path)
                or "gzip" not in self.headers.get("Accept-Encoding", "")):
            return super().do_GET()
        if path not in self.cache:
            with open(path, "rb") as f:
                self.cache[path] = gzip.compress(f.read(), compresslevel=6, mtime=0)
        body = self.cache[path]
        self.send_response(200)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def host(built_site):
    handler = functools.partial(HostLikeHandler, directory=str(built_site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


class Visit:
    """One page in a fresh browser context, with every request recorded."""

    def __init__(self, browser, server, doc, context=None, mode="light"):
        if context is None:
            context = browser.new_context(color_scheme=mode,
                                          viewport={"width": 1280, "height": 1000})
            # pydata-sphinx-theme keeps the reader's choice in localStorage ("mode")
            context.add_init_script(f"try {{ localStorage.setItem('mode', '{mode}'); "
                                    f"localStorage.setItem('theme', '{mode}'); }} catch (e) {{}}")
        self.context = context
        self.page = self.context.new_page()
        self.requests, self.foreign, self.sizes, self.errors = [], [], {}, []
        self.page.on("request", self._request)
        self.page.on("requestfinished", self._finished)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        # the page's other console messages are test_browser.py's business
        self.page.on("console", lambda m: m.type in ("error", "warning")
                     and re.search("explorable|vega", m.text, re.I)
                     and self.errors.append(m.text))
        self.record = {}
        track_requests(self.page, self.record)
        self.page.goto(server + f"{doc}.html", wait_until="load")
        settle(self.page, self.record)
        end_transitions(self.page)

    def _request(self, req):
        self.requests.append(req.url)
        host = urlsplit(req.url).hostname
        if not req.url.startswith(("data:", "blob:", "about:")) and host != "127.0.0.1":
            self.foreign.append(req.url)

    def _finished(self, req):
        s = req.sizes()
        self.sizes[req.url] = s["responseBodySize"] + s["responseHeadersSize"]

    def figure(self, label):
        el = self.page.locator(f"#explorable-{label}")
        self.page.wait_for_function(
            "id => document.getElementById(id)?.dataset.drawn === 'true'",
            arg=f"explorable-{label}", timeout=60_000)
        return el

    def close(self):
        self.context.close()


@pytest.fixture
def visit(browser, server, host):  # noqa: F811
    opened = []

    def open_(doc, context=None, like_host=False, mode="light"):
        v = Visit(browser, host if like_host else server, doc, context, mode)
        opened.append(v)
        return v

    yield open_
    for v in opened:
        v.close()


def svg_texts(fig) -> list[str]:
    return fig.locator("svg text").evaluate_all("els => els.map(e => e.textContent)")


def svg_markup(fig) -> str:
    return fig.locator("svg").first.evaluate("e => e.outerHTML")


def slider(fig, name):
    inp = fig.locator("label", has_text=name).locator("input[type=range]")
    assert inp.count() == 1, name
    return inp


def press(fig, name, key, times=1):
    """Move a slider with the keyboard and wait until the drawing changed."""
    before = svg_markup(fig)
    inp = slider(fig, name)
    inp.focus()
    for _ in range(times):
        inp.press(key)
    fig.page.wait_for_function(
        "([id, old]) => document.querySelector('#' + id + ' svg').outerHTML !== old",
        arg=[fig.get_attribute("id"), before], timeout=20_000)
    assert svg_markup(fig) != before
    return float(inp.input_value())


def assert_shown(shown, want, what):
    assert len(shown) == len(want), (what, shown, want)
    np.testing.assert_allclose(shown, want, atol=SHOWN, rtol=0, err_msg=what)


# ------------------------------------------------------------------------------------------
def test_temperature_figure(visit):
    v = visit(FIGURES["fig-ch4-explorable-temperature"])
    fig = v.figure("fig-ch4-explorable-temperature")

    def shown():
        return [num(t) for t in svg_texts(fig) if re.fullmatch(r"\d\.\d{3}", t)]

    def want(z, lt):
        return np.asarray(expnorm.softmax(np.array(z, np.float32), temperature=10.0 ** lt))

    d = ex.TEMP_DEFAULT
    z = [0.0, d["z2"], d["z3"], d["z4"]]
    assert_shown(shown(), want(z, d["lt"]), "default position")
    lt = press(fig, "temperature, log10 T", "Home")  # coldest: T = 10^-1.5
    assert lt == ex.T_LOG[0]
    assert_shown(shown(), want(z, lt), "T = 0.0316")
    assert any("T = 0.0316" in t for t in svg_texts(fig))
    lt = press(fig, "temperature, log10 T", "ArrowRight", times=20)  # T = 10^0.5
    assert lt == pytest.approx(0.5)
    for name, i in (("score z2", 1), ("score z3", 2), ("score z4", 3)):
        z[i] = press(fig, name, "ArrowLeft")
        assert_shown(shown(), want(z, lt), f"after {name} -> {z[i]}")
    assert not v.errors and not v.foreign, (v.errors, v.foreign)


def test_simplex_figure(visit):
    v = visit(FIGURES["fig-ch2-explorable-simplex"])
    fig = v.figure("fig-ch2-explorable-simplex")

    def shown(kind):
        (t,) = [t for t in svg_texts(fig) if t.startswith(f"{kind}(z)")]
        return t, [num(x) for x in re.findall(NUMBER, t.split("=", 1)[1])] if "=" in t else []

    def check(z):
        z = np.array(z, np.float32)
        _, sm = shown("softmax")
        assert_shown(sm, np.asarray(expnorm.softmax(z)), f"softmax at {z}")
        text, lin = shown("linear")
        if z.sum() == 0:
            assert "undefined" in text and not lin
        else:
            assert_shown(lin, np.asarray(expnorm.linear_normalize(z)), f"linear at {z}")

    z = [ex.SIMPLEX_DEFAULT[k] for k in ("z1", "z2", "z3")]
    check(z)
    z[2] = press(fig, "score z3", "End")  # (1, 0.5, 2)
    check(z)
    z[0] = press(fig, "score z1", "Home")  # (-2, 0.5, 2): linear image far outside
    check(z)
    z[1] = press(fig, "score z2", "ArrowLeft")  # (-2, 0, 2): the sum is 0
    assert z == [-2.0, 0.0, 2.0]
    check(z)
    assert not v.errors and not v.foreign, (v.errors, v.foreign)


def test_alternatives_figure(visit):
    v = visit(FIGURES["fig-ch4-explorable-alternatives"])
    fig = v.figure("fig-ch4-explorable-alternatives")
    k = len(ex.ALT_SCORES)

    def shown():
        labels = fig.locator("svg").first.evaluate("""svg => {
            const out = [];
            for (const cell of svg.querySelectorAll('g.mark-group.role-scope > g')) {
                const t = [...cell.querySelectorAll('g.role-mark text')]
                    .map(e => e.textContent).filter(s => /^(0|\\d\\.\\d{3})$/.test(s));
                if (t.length) out.push(t);
            }
            return out;
        }""")
        assert len(labels) == 3, labels
        return labels

    def check(lt):
        z = np.array(ex.ALT_SCORES, np.float32) / np.float32(10.0 ** lt)
        wants = [expnorm.softmax(z), expnorm.sparsemax(z), expnorm.entmax15(z)]
        for method, labels, want in zip(ex.METHODS, shown(), wants):
            want = np.asarray(want)
            assert len(labels) == k
            assert_shown([num(s) for s in labels], want, f"{method} at log10 T = {lt}")
            # a label "0" exactly where expnorm's value is exactly 0
            assert [s == "0" for s in labels] == [bool(w == 0) for w in want], (method, lt)

    check(ex.ALT_DEFAULT)
    assert "0" in shown()[1] and "0" not in shown()[0]  # sparsemax's exact zeros, softmax none
    lt = press(fig, "temperature, log10 T", "End")  # T = 10
    assert lt == ex.ALT_T_LOG[1]
    check(lt)
    lt = press(fig, "temperature, log10 T", "ArrowLeft", times=15)  # T = 10^-0.5
    check(lt)
    assert not v.errors and not v.foreign, (v.errors, v.foreign)


def test_online_figure(visit):
    v = visit(FIGURES["fig-ch7-explorable-online"])
    fig = v.figure("fig-ch7-explorable-online")
    x = np.array(ex.ONLINE_X)

    def check(step):
        (t,) = [t for t in svg_texts(fig) if t.startswith(("after chunk", "empty state"))]
        if step == 0:
            assert t.startswith("empty state")
            return
        seen = x[: ex.CHUNK * step]
        m = float(np.max(seen))
        lse = float(expnorm.logsumexp(seen))
        d = math.exp(lse - m)
        vals = [num(s) for s in re.findall(r"= (" + NUMBER + ")", t)]
        assert t.startswith(f"after chunk {step}:")
        np.testing.assert_allclose(vals[:3], [m, d, lse], atol=1e-4 + 5e-4, rtol=0,
                                   err_msg=t)

    check(2)
    step = press(fig, "chunks read", "End")
    assert step == len(x) // ex.CHUNK
    check(int(step))
    step = press(fig, "chunks read", "ArrowLeft", times=3)
    check(int(step))
    step = press(fig, "chunks read", "Home")
    check(int(step))
    assert not v.errors and not v.foreign, (v.errors, v.foreign)


@pytest.mark.parametrize("mode", ["light", "dark"])
@pytest.mark.parametrize("label", sorted(FIGURES))
def test_figure_has_no_axe_violation(visit, axe_js, label, mode):  # noqa: F811
    v = visit(FIGURES[label], mode=mode)
    v.figure(label)
    v.page.evaluate(axe_js)
    result = v.page.evaluate("""async id => await axe.run(document.getElementById(id),
        {resultTypes: ['violations']})""", f"explorable-{label}")
    bad = [(r["id"], r["impact"], [n["target"] for n in r["nodes"]]) for r in result["violations"]]
    assert not bad, f"{label} ({mode}): {bad}"


def test_pages_offline_one_cached_script_and_size_budget(visit):
    """Sizes as served by a static host (gzip); the uncompressed total is reported too."""
    lines, cold = [], {}
    for doc in chapter_docnames():
        raw = visit(doc)  # plain http.server: no compression
        raw_total = sum(raw.sizes.values())
        raw.close()
        v = visit(doc, like_host=True)
        assert not v.foreign, f"{doc}: requests off the site: {v.foreign}"
        n_figs = v.page.locator(".explorable").count()
        assert n_figs == sum(d == doc for d in FIGURES.values()), doc
        scripts = v.page.locator(f"script[src*='{SCRIPT}']")
        assert scripts.count() == (1 if n_figs else 0), doc
        if n_figs:
            for label in (lb for lb, d in FIGURES.items() if d == doc):
                v.figure(label)
            cold[doc] = scripts.first.get_attribute("src")
        total = sum(v.sizes.values())
        lines.append(f"{doc}: {total} bytes transferred gzip-served ({raw_total} "
                     f"uncompressed; {len(v.sizes)} requests, {n_figs} explorable figures)")
        assert total < BUDGET, lines[-1]
    # one URL for the whole site (relative to the pages, which all sit in book/)
    assert len(set(cold.values())) == 1, cold
    # a second figure page in the same visit does not download the script again
    first, second = sorted(cold)[:2]
    v1 = visit(first, like_host=True)
    v2 = visit(second, context=v1.context, like_host=True)
    label = next(lb for lb, d in FIGURES.items() if d == second)
    v2.figure(label)
    again = sum(s for u, s in v2.sizes.items() if SCRIPT in u)
    lines.append(f"{SCRIPT} on a second page of the same visit: {again} bytes")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "explorable-sizes.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    assert again < 20_000, lines[-1]
