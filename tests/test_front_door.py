"""The reader's front door: the Q&A page, the reading paths, notation and teaching pages.

- the Q&A page comes right after the intro in the table of contents, and the intro links to it;
- every question of the Q&A page is a section of its own with a stable ``qa-`` anchor, and
  every answer links to at least one chapter page (to a section, theorem or figure there);
- the intro's table of reading times lists every chapter, with times that follow from the
  notebooks (the extension's count, recomputed here);
- the teaching page states the licence the repository's metadata declares;
- no BibTeX title holds raw TeX (a ``$`` or a ``\\command``), which the bibliography page
  would show as text.
"""

import re
import tomllib
from html import unescape
from pathlib import Path

import pytest

from conftest import ROOT, toc_files

QA_LABELS = [
    "qa-last-layer", "qa-normalized", "qa-nan-stable", "qa-why-exp", "qa-identified",
    "qa-implement", "qa-linear-ce", "qa-sigmoid", "qa-argmax", "qa-name", "qa-squared-error",
    "qa-output-layer", "qa-special-values", "qa-large-vocabulary",
]


def chapters() -> list[str]:
    return sorted(p.stem for p in (ROOT / "book").glob("0*.ipynb"))


def test_questions_follow_the_intro_in_the_toc():
    toc = toc_files()
    assert toc[:2] == ["book/intro", "book/questions"], toc[:3]
    for page in ("book/notation", "book/teaching"):
        assert page in toc, f"{page} not in _toc.yml"


def sections(html: str) -> dict[str, str]:
    """id -> inner HTML of every <section id=...> (nested sections included)."""
    out = {}
    for m in re.finditer(r'<section id="([^"]+)"', html):
        start, depth, i = m.start(), 0, m.start()
        for t in re.finditer(r"<(/?)section\b", html[start:]):
            depth += -1 if t.group(1) else 1
            if depth == 0:
                i = start + t.end()
                break
        out[m.group(1)] = html[start:i]
    return out


def test_every_question_has_its_anchor_and_links_to_the_book(built_site):
    html = (built_site / "book" / "questions.html").read_text(encoding="utf-8")
    secs = sections(html)
    # A MyST label "(qa-x)=" is an empty <span id="qa-x"> at the start of the section it names.
    for label in QA_LABELS:
        m = re.search(rf'<section id="([^"]+)">\s*<span id="{label}"></span>', html)
        if m:
            secs[label] = secs[m.group(1)]
    missing = [label for label in QA_LABELS if label not in secs]
    assert not missing, f"questions without their own section: {missing}"
    chapter_pages = tuple(f"{c}.html" for c in chapters())
    for label in QA_LABELS:
        body = secs[label]
        assert re.search(r"<h2>", body), f"{label}: not a heading of its own"
        links = [unescape(h) for h in re.findall(r'<a class="reference internal" href="([^"]+)"',
                                                  body)]
        to_chapters = [h for h in links if h.split("#")[0].endswith(chapter_pages)]
        assert to_chapters, f"{label}: no link to a chapter ({links})"
        text = re.sub(r"<[^>]+>", " ", body)
        sentences = [s for s in re.split(r"(?<=[.?!])\s+(?=[A-Z(])", " ".join(text.split())) if s]
        assert len(sentences) >= 2, f"{label}: the answer is not two sentences or more"


def test_intro_links_to_questions_notation_and_teaching(built_site):
    html = (built_site / "book" / "intro.html").read_text(encoding="utf-8")
    for page in ("questions.html", "notation.html", "teaching.html"):
        assert f'href="{page}' in html, f"the intro does not link to {page}"


def test_reading_times_cover_every_chapter_and_follow_the_notebooks(built_site):
    import sys
    sys.path.insert(0, str(ROOT / "book" / "_ext"))
    try:
        from why_softmax_site import reading_stats, round_minutes
    finally:
        sys.path.pop(0)
    html = (built_site / "book" / "intro.html").read_text(encoding="utf-8")
    table = html[html.index('id="intro-paths"'):]
    table = table[table.index("<table"):table.index("</table>")]
    rows = re.findall(r"<tr.*?</tr>", table, re.S)[1:]
    times = {}
    for row in rows:
        href = re.search(r'href="([^"#]+)\.html', row).group(1)
        minutes = re.search(r"(\d+) min", re.sub(r"<[^>]+>", "", row)).group(1)
        times[href] = int(minutes)
    assert set(chapters()) <= set(times), f"chapters missing from the table: {times}"
    for name, minutes in times.items():
        stats = reading_stats(ROOT / "book" / f"{name}.ipynb")
        assert stats["words"] > 500, (name, stats)
        assert minutes == round_minutes(stats["minutes"]), (name, minutes, stats)


def test_teaching_page_states_the_declared_licence():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]
    cff = re.search(r"^license:\s*(\S+)", (ROOT / "CITATION.cff").read_text(), re.M).group(1)
    assert declared == cff, (declared, cff)
    text = (ROOT / "book" / "teaching.md").read_text(encoding="utf-8")
    assert f"**{declared} licence**" in text


@pytest.mark.parametrize("field", ["title", "booktitle", "journal"])
def test_no_raw_tex_in_bibliography_fields(field):
    bib = (ROOT / "book" / "references.bib").read_text(encoding="utf-8")
    values = re.findall(rf"^\s*{field}\s*=\s*\{{(.*)\}},?\s*$", bib, re.M)
    assert values
    bad = [v for v in values if "$" in v or re.search(r"\\[A-Za-z]{2,}", v)]
    assert not bad, f"raw TeX in BibTeX {field}s (shown as text on the bibliography page): {bad}"
