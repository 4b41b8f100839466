"""The public surface of the site: every page URL and every label anchor a reader can link to.

    python tools/public_anchors.py _build/html            # print the surface of a build
    python tools/public_anchors.py _build/html --append   # releasing: add new entries to
                                                          # tests/data/public-anchors.txt

An entry is ``<page>.html`` or ``<page>.html#<id>``, relative to the site's base URL. The ids
are those of the page's article that come from a name the authors chose: section titles and
labels, theorems and proofs (sphinx-proof), figures, exercises and solutions
(sphinx-exercise), labelled equations (``equation-<label>``), bibliography entries. Ids that
Sphinx numbers by itself (``id3``, footnotes, citation back-references) are not public: they
change when text is added before them.

tests/test_public_anchors.py fails when a build drops or renames an entry of the manifest;
a later version may only add entries, which `--append` does when a version is released.
"""

from __future__ import annotations

import argparse
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "tests" / "data" / "public-anchors.txt"
SKIP_DIRS = {"_static", "_sources", "_images"}
# Ids Sphinx, MyST-NB or the theme generate by number or for their own machinery.
GENERATED = re.compile(
    r"^(id\d+|fn\d+|footnote-\d+|cite-\w+|citation-\d+|cell-.*|nb-.*|searchbox|"
    r"mathjax.*|MathJax.*|sphinx-.*|pst-.*|bd-.*|jb-.*|main-content|myst-nb.*|"
    r"index-\d+|target-\d+)$")


class ArticleIds(HTMLParser):
    """Ids inside the page's <article> (the content, not the theme's navigation)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.depth = 0
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "article":
            self.depth += 1
        if self.depth and a.get("id"):
            self.ids.add(a["id"])

    def handle_endtag(self, tag):
        if tag == "article" and self.depth:
            self.depth -= 1


def pages(site: Path) -> list[Path]:
    return sorted(p for p in site.rglob("*.html")
                  if not SKIP_DIRS & set(p.relative_to(site).parts))


def is_redirect(html: str) -> bool:
    return 'http-equiv="refresh"' in html.lower()


def surface(site: Path) -> set[str]:
    out: set[str] = set()
    for page in pages(site):
        rel = page.relative_to(site).as_posix()
        html = page.read_text(encoding="utf-8")
        out.add(rel)
        if is_redirect(html) or rel in ("genindex.html", "search.html"):
            continue
        parser = ArticleIds()
        parser.feed(html)
        out.update(f"{rel}#{i}" for i in parser.ids if not GENERATED.match(i))
    return out


def read_manifest(path: Path = MANIFEST) -> list[str]:
    return [l.strip() for l in path.read_text(encoding="utf-8").splitlines()
            if l.strip() and not l.startswith("#")]


HEADER = """\
# The public surface of "Why Softmax?": every page URL and label anchor a reader can link to,
# relative to html.baseurl of _config.yml. tests/test_public_anchors.py fails when a build
# drops or renames an entry. Never remove or edit a line: releasing a version appends the new
# entries (python tools/public_anchors.py _build/html --append) under a "# version" line.
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("site", type=Path, help="the built site, e.g. _build/html")
    ap.add_argument("--append", action="store_true", help="append new entries to the manifest")
    args = ap.parse_args(argv)
    found = surface(args.site)
    if not args.append:
        print("\n".join(sorted(found)))
        return 0
    import tomllib
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    known = read_manifest() if MANIFEST.exists() else []
    missing = sorted(set(known) - found)
    if missing:
        print("the build lacks entries of the manifest (restore them first):", *missing[:20],
              sep="\n  ", file=sys.stderr)
        return 1
    new = sorted(found - set(known))
    text = MANIFEST.read_text(encoding="utf-8") if MANIFEST.exists() else HEADER
    if new:
        text += f"# version {version}\n" + "".join(f"{e}\n" for e in new)
        MANIFEST.write_text(text, encoding="utf-8")
    print(f"{len(new)} entries appended for version {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
