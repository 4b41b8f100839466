"""Insert the explorable figures (expnorm.explorable) into the chapters; idempotent.

For each figure: a hidden-input code cell of one line that glues the figure, and a Markdown
cell with its ``{glue:figure}`` block (label, alt text, caption), placed right after the
Markdown cell that holds the figure's anchor label, e.g. ``(ch4-temperature)=``. The anchors
are stable; the prose around them may change. Running the script again updates the two cells
in place (found by their cell ids) and never duplicates them.

If an anchor is missing, the figure goes after the cell whose heading matches a fallback
pattern, with a warning; ``--strict`` makes a missing anchor an error instead.

The inserted code cells have no outputs: re-execute the changed notebooks afterwards, the
canonical way (``tests/execute_notebooks.py``). Usage::

    .venv/bin/python tools/add_explorable_figures.py [--strict] [--check]
    JAX_PLATFORMS=cpu PYTHONHASHSEED=0 .venv/bin/python tests/execute_notebooks.py \
        book/02_normalization.ipynb book/04_temperature_and_alternatives.ipynb \
        book/07_softmax_at_scale.ipynb

``--check`` changes nothing and exits 1 if any notebook would change.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]

# (key, notebook, anchor label, fallback heading pattern)
PLACES = [
    ("simplex", "book/02_normalization.ipynb", "ch2-linear-image",
     r"^## The picture for three classes"),
    ("temperature", "book/04_temperature_and_alternatives.ipynb", "ch4-temperature", None),
    ("alternatives", "book/04_temperature_and_alternatives.ipynb", "ch4-alternatives", None),
    ("online", "book/07_softmax_at_scale.ipynb", "ch7-online-monoid",
     r"^## The online normalizer"),
]


def figure_text(key: str) -> tuple[str, str, str, str]:
    """(factory name, label, alt, caption) of one figure, from the library."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from expnorm import explorable

    factory = explorable.FIGURES[key]
    fig = factory()
    return factory.__name__, fig.name, fig.alt, fig.caption


def code_source(factory: str) -> str:
    return f"from expnorm import explorable; explorable.{factory}().glue()"


def markdown_source(label: str, alt: str, caption: str) -> str:
    return (f":::{{glue:figure}} {label}\n:name: {label}\n:alt: {alt}\n\n{caption}\n:::")


def anchor_index(nb, label: str, fallback: str | None, strict: bool, path: str) -> int:
    pat = re.compile(rf"^\({re.escape(label)}\)=\s*$", re.M)
    for i, c in enumerate(nb.cells):
        if c.cell_type == "markdown" and pat.search(c.source):
            return i
    if strict or fallback is None:
        raise SystemExit(f"{path}: anchor ({label})= not found")
    fb = re.compile(fallback, re.M)
    for i, c in enumerate(nb.cells):
        if c.cell_type == "markdown" and fb.search(c.source):
            print(f"warning: {path}: anchor ({label})= not found; placed after the cell "
                  f"matching {fallback!r}", file=sys.stderr)
            return i
    raise SystemExit(f"{path}: neither ({label})= nor {fallback!r} found")


def apply(nb, key: str, texts, label_anchor: str, fallback, strict: bool, path: str) -> bool:
    factory, label, alt, caption = texts
    code_id, md_id = f"explorable-{key}", f"explorable-{key}-figure"
    want_code, want_md = code_source(factory), markdown_source(label, alt, caption)
    ids = [c.get("id") for c in nb.cells]
    if code_id in ids and md_id in ids:  # already there: update in place
        changed = False
        code, md = nb.cells[ids.index(code_id)], nb.cells[ids.index(md_id)]
        if code.source != want_code:
            code.source, code.outputs, code.execution_count = want_code, [], None
            changed = True
        if md.source != want_md:
            md.source = want_md
            changed = True
        tags = code.setdefault("metadata", {}).setdefault("tags", [])
        if "hide-input" not in tags:
            tags.append("hide-input")
            changed = True
        return changed
    # remove a half-present pair, then insert both after the anchor
    nb.cells = [c for c in nb.cells if c.get("id") not in (code_id, md_id)]
    at = anchor_index(nb, label_anchor, fallback, strict, path) + 1
    code = nbformat.v4.new_code_cell(want_code, metadata={"tags": ["hide-input"]})
    code["id"] = code_id
    md = nbformat.v4.new_markdown_cell(want_md)
    md["id"] = md_id
    nb.cells[at:at] = [code, md]
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strict", action="store_true", help="a missing anchor is an error")
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    args = ap.parse_args(argv)
    books: dict[str, object] = {}
    changed: set[str] = set()
    for key, path, label, fallback in PLACES:
        if path not in books:
            books[path] = nbformat.read(ROOT / path, as_version=4)
        if apply(books[path], key, figure_text(key), label, fallback, args.strict, path):
            changed.add(path)
    for path in sorted(changed):
        if args.check:
            print(f"would change {path}")
        else:
            nbformat.write(books[path], ROOT / path)
            print(f"updated {path} (re-execute it)")
    if not changed:
        print("all explorable figures already in place")
    return 1 if (args.check and changed) else 0


if __name__ == "__main__":
    sys.exit(main())
