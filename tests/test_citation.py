"""Citation metadata: CITATION.cff (CFF 1.2.0), one version everywhere, cite boxes on chapters.

The version's single source of truth is pyproject.toml's [project] version; the Sphinx
extension book/_ext/why_softmax_site.py makes it the site's `release`.
"""

import json
import re
import tomllib
from html import unescape
from pathlib import Path

import jsonschema
import yaml

from conftest import ROOT, chapter_docnames, html_pages, toc_files

SCHEMA = Path(__file__).parent / "data" / "citation-file-format-1.2.0.schema.json"


def version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def base_url() -> str:
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["html"]["baseurl"]
    return url if url.endswith("/") else url + "/"


def load_cff() -> dict:
    return yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))


def test_citation_cff_is_valid_cff_1_2_0():
    cff = load_cff()
    assert cff["cff-version"] == "1.2.0"
    for key in ("cff-version", "message", "title", "authors"):  # required by CFF 1.2.0
        assert cff.get(key), f"CITATION.cff: {key} missing"
    schema = json.loads(SCHEMA.read_text())
    # Dates are YAML dates or strings; the schema wants strings.
    data = json.loads(json.dumps(cff, default=str))
    jsonschema.validate(data, schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


def test_one_version_everywhere():
    v = version()
    assert str(load_cff()["version"]) == v, "CITATION.cff version differs from pyproject.toml"
    changelog = (ROOT / "CHANGELOG.md").read_text()
    first = re.search(r"^## \[([^\]]+)\]", changelog, re.M)
    assert first and first.group(1) == v, "CHANGELOG.md's latest entry is not the current version"
    assert str(load_cff()["date-released"]) in changelog.split("\n## ")[1]
    assert "stable urls" in changelog.lower()
    assert "stable urls" in (ROOT / "book" / "how_to_cite.md").read_text().lower()


def test_how_to_cite_comes_right_after_the_intro():
    # The questions and answers page (issue 13) sits between the intro and How to cite.
    assert toc_files()[:3] == ["book/intro", "book/questions", "book/how_to_cite"]


def test_version_is_shown_on_every_page(built_site):
    v = version()
    for page in html_pages(built_site):
        html = page.read_text(encoding="utf-8")
        if 'http-equiv="Refresh"' in html or 'http-equiv="refresh"' in html:
            continue  # index.html only redirects to the intro
        assert f"version {v}" in html, f"{page.relative_to(built_site)}: version not shown"


def test_every_chapter_has_a_cite_box(built_site):
    v = version()
    chapters = chapter_docnames()
    assert chapters
    for doc in chapters:
        html = (built_site / f"{doc}.html").read_text(encoding="utf-8")
        assert html.count('class="cite-box') == 1, f"{doc}: no cite box"
        box = html[html.index('class="cite-box'):]
        box = unescape(re.sub(r"<[^>]+>", "", box[: box.index("</pre>")]))
        title = unescape(re.sub(r"<[^>]+>", "", re.search(r"<h1>(.*?)</h1>", html, re.S).group(1)))
        title = title.replace("#", "").strip()
        entry = box[box.index("@incollection{"):]
        assert re.search(r"title\s*=\s*\{.+\}", entry), f"{doc}: no title in the BibTeX entry"
        entry_title = re.search(r"\btitle\s*=\s*\{(.*)\},", entry).group(1)
        plain = lambda s: re.sub(r"[^a-z0-9]", "", s.lower().replace("\\", ""))
        assert plain(entry_title) == plain(title), f"{doc}: {entry_title!r} vs {title!r}"
        # and the words stay apart around inline math ("Why $e^x$?", not "Why$e^x$?"); the
        # page's first <h1> is the plain-text title ("Why e^x?")
        unescaped = re.sub(r"\\([{}&%#_$])", r"\1", entry_title.replace("\\$", "\0"))
        assert " ".join(unescaped.replace("$", "").replace("\0", "$").split()) == " ".join(
            title.split()), f"{doc}: {entry_title!r} vs {title!r}"
        assert "booktitle = {Why Softmax?}" in entry
        assert f"version   = {{{v}}}" in entry
        assert f"url       = {{{base_url()}{doc}.html}}" in entry, entry


def test_book_bibtex_on_how_to_cite_and_intro(built_site):
    v = version()
    for doc in ("book/how_to_cite", "book/intro"):
        text = unescape(re.sub(r"<[^>]+>", "", (built_site / f"{doc}.html").read_text()))
        assert "@book{whysoftmax," in text, doc
        assert f"version   = {{{v}}}" in text, doc
        assert f"url       = {{{base_url()}}}" in text, doc
