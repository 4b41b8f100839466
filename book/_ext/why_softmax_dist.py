"""Local Sphinx extension: what a reader needs to run or print a chapter away from the repository.

- At ``build-finished`` of an HTML build, expnorm's wheel and sdist are built (``python -m
  build``) into ``_static/dist/`` of the site, with an ``index.html`` naming them (usable as
  ``pip install --find-links <site>/_static/dist/ expnorm``) and ``latest.txt`` (the wheel's
  file name). The set-up cell of every chapter (tools/add_setup_cell.py) installs
  ``expnorm[book] @ <site>/_static/dist/expnorm-<version>-py3-none-any.whl``. The benchmark
  results chapter 7 reads are published next to them (``_static/dist/benchmarks/results.json``).
- Every chapter page (source a notebook) links to its PDF handout,
  ``<html_baseurl>pdf/<chapter>.pdf``, which `make pdf` builds (one PDF per chapter) and
  copies into ``_build/html/pdf/``. The link is absolute (the published site) so that a site
  built without the PDFs has no broken local link.
"""

from __future__ import annotations

import html
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
DIST = "_static/dist"
PDF_DIR = "pdf"


def version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]


def pdf_url(config, docname: str) -> str:
    base = config.html_baseurl or ""
    base = base if base.endswith("/") else base + "/"
    return f"{base}{PDF_DIR}/{docname.rsplit('/', 1)[-1]}.pdf"


def build_dist(outdir: Path) -> list[Path]:
    dest = outdir / DIST
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    # No --sdist/--wheel: build makes the sdist, then the wheel from the unpacked sdist (so the
    # sdist is known to work and no build/ folder is left in the repository).
    proc = subprocess.run([sys.executable, "-m", "build", "--outdir", str(dest), str(ROOT)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        logger.warning("building expnorm's wheel failed:\n%s\n%s", proc.stdout[-3000:],
                       proc.stderr[-3000:])
        return []
    files = sorted(p for p in dest.iterdir() if p.suffix in (".whl", ".gz"))
    v = version()
    wheel = dest / f"expnorm-{v}-py3-none-any.whl"
    if not wheel.exists():
        logger.warning("expected %s, built %s", wheel.name, [f.name for f in files])
        return files
    (dest / "latest.txt").write_text(wheel.name + "\n", encoding="utf-8")
    items = "\n".join(f'<li><a href="{html.escape(f.name)}">{html.escape(f.name)}</a></li>'
                      for f in files)
    (dest / "index.html").write_text(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>expnorm {v}</title></head><body>\n<h1>expnorm {v}</h1>\n"
        "<p>The library of <em>Why Softmax?</em>, built with this version of the site. "
        "Install with <code>pip install \"expnorm[book] @ &lt;this folder&gt;/"
        f"{html.escape(wheel.name)}\"</code>.</p>\n<ul>\n{items}\n</ul>\n</body></html>\n",
        encoding="utf-8")
    results = ROOT / "benchmarks" / "results.json"
    if results.exists():
        (dest / "benchmarks").mkdir()
        shutil.copy(results, dest / "benchmarks" / "results.json")
    return files


def on_doctree_resolved(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    if app.builder.format != "html" or not str(app.env.doc2path(docname)).endswith(".ipynb"):
        return
    url = pdf_url(app.config, docname)
    para = nodes.paragraph(classes=["pdf-handout"])
    para += nodes.Text("This chapter as a PDF handout: ")
    para += nodes.reference(url, url.rsplit("/", 1)[-1], refuri=url)
    para += nodes.Text(".")
    sections = list(doctree.findall(nodes.section))
    if not sections:
        return
    first = sections[0]
    titles = [i for i, c in enumerate(first.children) if isinstance(c, nodes.title)]
    first.insert(titles[0] + 1 if titles else 0, para)


def on_build_finished(app: Sphinx, exc) -> None:
    if exc is None and app.builder.format == "html":
        build_dist(Path(app.outdir))


def setup(app: Sphinx):
    app.connect("doctree-resolved", on_doctree_resolved)
    app.connect("build-finished", on_build_finished)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
