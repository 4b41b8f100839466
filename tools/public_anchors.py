"""The public surface of the site: every page URL and every label anchor a reader can link to.

    python tools/public_anchors.py _build/html            # print the surface of a build
    python tools/public_anchors.py _build/html --append   # releasing: add new entries to
                                                          # tests/data/public-anchors.txt

An entry is ``<page>.html`` or ``<page>.html#<id>``, relative to the site's base URL. The ids
are the names the authors chose: every label of the site's ``objects.inv`` (section labels,
figures, exercises, labelled solutions), every labelled sphinx-proof block (theorems,
definitions, ...) and every labelled equation (``equation-<label>``), each checked to be an id
in its page's article. Ids Sphinx makes up (``id3``, a section's id from its title, a
solution numbered by position as ``<docname>-solution-4``) are not public: they change when
text changes.

tests/test_public_anchors.py fails when a build drops or renames an entry of the manifest;
a later version may only add entries, which `--append` does when a version is released.
"""

from __future__ import annotations

import argparse
import sys
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "tests" / "data" / "public-anchors.txt"
SKIP_DIRS = {"_static", "_sources", "_images"}
NOT_PAGES = {"genindex.html", "search.html", "py-modindex.html", "prf-prf.html"}


class ArticleIds(HTMLParser):
    """(id, class) of the elements inside the page's <article> (not the theme's navigation)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.depth = 0
        self.ids: dict[str, str] = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "article":
            self.depth += 1
        if self.depth and a.get("id"):
            self.ids.setdefault(a["id"], a.get("class") or "")

    def handle_endtag(self, tag):
        if tag == "article" and self.depth:
            self.depth -= 1


def pages(site: Path) -> list[Path]:
    return sorted(p for p in site.rglob("*.html")
                  if not SKIP_DIRS & set(p.relative_to(site).parts))


def explicit_labels(site: Path) -> set[str]:
    """``page#id`` of every label in the site's objects.inv (names the authors wrote)."""
    from sphinx.util.inventory import InventoryFile

    with open(site / "objects.inv", "rb") as f:
        inv = InventoryFile.load(f, "", lambda base, uri: uri)
    out = set()
    for entries in inv.values():
        for name, item in entries.items():
            uri = item[2]
            if "#" in uri:
                out.add(uri)
    return out


def is_public(anchor: str, css: str, labels: set[str], page: str) -> bool:
    if "/" in anchor:  # numbered by sphinx-exercise ("<docname>-solution-4"): not stable
        return False
    if f"{page}#{anchor}" in labels or anchor.startswith("equation-"):
        return True
    classes = css.split()
    # sphinx-proof: theorem, definition, ... carry the label as id ("proof" alone is a proof)
    return "proof" in classes and len(classes) > 2 and anchor != "proof"


def surface(site: Path) -> set[str]:
    labels = explicit_labels(site)
    out: set[str] = set()
    for page in pages(site):
        rel = page.relative_to(site).as_posix()
        html = page.read_text(encoding="utf-8")
        if rel in NOT_PAGES:
            continue
        out.add(rel)
        if 'http-equiv="refresh"' in html.lower():
            continue
        parser = ArticleIds()
        parser.feed(html)
        out.update(f"{rel}#{i}" for i, css in parser.ids.items()
                   if is_public(i, css, labels, rel))
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
