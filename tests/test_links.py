"""Internal links of the built site, and nothing loaded from outside it.

- every local href/src of every page resolves to a file of the site, and every #anchor exists
  in the target page;
- no page loads a script, stylesheet, font, image or frame from another host (links to other
  sites, <a href>, are fine; so are <link rel="canonical"> and OpenGraph metadata);
- the theme's CSS pulls nothing from the web;
- MathJax is served from the site;
- the sitemap lists every page under the site's base URL, and every page has OpenGraph
  metadata.
"""

import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

from conftest import ROOT, html_pages, toc_files

LOAD_TAGS = {"script": "src", "img": "src", "iframe": "src", "source": "src", "video": "src",
             "audio": "src", "embed": "src", "object": "data", "input": "src"}
NOT_A_LOAD = {"canonical", "alternate", "author", "license", "next", "prev", "search", "index",
              "help", "me", "bookmark"}


class Page(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[tuple[str, str, str]] = []  # (tag, attribute, url)
        self.loads: list[tuple[str, str]] = []  # (tag, url) fetched by the browser

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("id", "name"):
            if a.get(key) and (key == "id" or tag == "a"):
                self.ids.add(a[key])
        for attr in ("href", "src", "data", "poster"):
            if a.get(attr):
                self.links.append((tag, attr, a[attr]))
        if tag in LOAD_TAGS and a.get(LOAD_TAGS[tag]):
            self.loads.append((tag, a[LOAD_TAGS[tag]]))
        if tag == "img" and a.get("srcset"):
            for part in a["srcset"].split(","):
                self.loads.append((tag, part.split()[0]))
        if tag == "link" and a.get("href"):
            rels = set((a.get("rel") or "").lower().split())
            if not rels <= NOT_A_LOAD:
                self.loads.append((tag, a["href"]))
        if tag in ("video",) and a.get("poster"):
            self.loads.append((tag, a["poster"]))

    handle_startendtag = handle_starttag


def parse(path: Path) -> Page:
    p = Page()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def is_external(url: str) -> bool:
    s = urlsplit(url)
    # data: URIs (the explorable figures' inline PNG fallbacks) are inline: they load nothing
    return bool(s.scheme and s.scheme not in ("file", "data")) or url.startswith("//")


@pytest.fixture(scope="module")
def parsed(built_site):
    return {p: parse(p) for p in html_pages(built_site)}


def test_every_toc_page_is_built(built_site):
    for doc in toc_files():
        assert (built_site / f"{doc}.html").exists(), f"{doc}.html missing"


def test_internal_links_and_anchors_resolve(built_site, parsed):
    cache = dict(parsed)
    problems = []
    for page, info in parsed.items():
        for tag, attr, url in info.links:
            s = urlsplit(url)
            if s.scheme or url.startswith("//") or url.startswith(("mailto:", "javascript:", "data:")):
                continue
            if not s.path and not s.fragment:
                continue
            target = (page.parent / unquote(s.path)).resolve() if s.path else page
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                problems.append(f"{page.relative_to(built_site)}: <{tag} {attr}={url!r}> -> missing file")
                continue
            if s.fragment and target.suffix == ".html":
                if target not in cache:
                    cache[target] = parse(target)
                if unquote(s.fragment) not in cache[target].ids:
                    problems.append(f"{page.relative_to(built_site)}: {url!r} -> no #{s.fragment}")
    assert not problems, "\n".join(problems)


def test_no_page_loads_anything_from_outside_the_site(built_site, parsed):
    problems = [
        f"{page.relative_to(built_site)}: <{tag}> loads {url}"
        for page, info in parsed.items() for tag, url in info.loads if is_external(url)
    ]
    assert not problems, "\n".join(problems)


def test_stylesheets_and_scripts_fetch_nothing_from_the_web(built_site):
    problems = []
    for css in (built_site / "_static").rglob("*.css"):
        text = css.read_text(encoding="utf-8", errors="replace")
        for m in re.finditer(r"url\(\s*['\"]?(https?:)?//[^)]*\)|@import\s+(url\()?['\"]?(https?:)?//", text):
            problems.append(f"{css.relative_to(built_site)}: {m.group(0)[:120]}")
    assert not problems, "\n".join(problems)


def test_mathjax_is_served_from_the_site(built_site, parsed):
    pages_with_math = 0
    for page, info in parsed.items():
        srcs = [url for tag, url in info.loads if tag == "script" and "mathjax" in url.lower()]
        for url in srcs:
            assert not is_external(url), f"{page}: MathJax from {url}"
            assert (page.parent / urlsplit(url).path).resolve().exists(), f"{page}: {url} missing"
            assert urlsplit(url).path.endswith("_static/mathjax/tex-mml-chtml.js")
        pages_with_math += bool(srcs)
    assert pages_with_math >= 1
    fonts = list((built_site / "_static" / "mathjax" / "output" / "chtml" / "fonts").rglob("*.woff"))
    assert fonts, "MathJax's CHTML fonts are not in the site"


def base_url() -> str:
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    url = cfg["html"]["baseurl"]
    return url if url.endswith("/") else url + "/"


def test_sitemap_lists_every_page(built_site):
    sitemap = (built_site / "sitemap.xml").read_text()
    locs = set(re.findall(r"<loc>([^<]+)</loc>", sitemap))
    for doc in toc_files():
        assert f"{base_url()}{doc}.html" in locs, f"{doc} not in sitemap.xml"


def test_every_toc_page_has_opengraph_metadata(built_site):
    for doc in toc_files():
        html = (built_site / f"{doc}.html").read_text()
        assert f'<meta property="og:url" content="{base_url()}{doc}.html"' in html, doc
        assert '<meta property="og:title"' in html, doc
        assert f'<link rel="canonical" href="{base_url()}{doc}.html"' in html, doc
