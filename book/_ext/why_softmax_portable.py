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
- One PDF per page (``jupyter-book build . --builder pdflatex --individualpages``): each page's
  own LaTeX title (math kept as math), no book-wide proof index, references to other pages as
  links to the site, and the page's own bibliography (the entries it cites).
- ``{cite-example} <label or docname>`` (used by book/how_to_cite.md) renders the plain-text
  citation and the BibTeX entry of a chapter, or of a labelled theorem, figure, exercise or
  section at this version: number and title as the site shows them, URL with its anchor.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

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
    # every measurement file the chapters read (expnorm.book_data.load_benchmark)
    measured = sorted((ROOT / "benchmarks").glob("*.json"))
    if measured:
        (dest / "benchmarks").mkdir()
        for results in measured:
            shutil.copy(results, dest / "benchmarks" / results.name)
    return files


class cite_example(nodes.General, nodes.Element):
    """Placeholder replaced at doctree-resolved, when every number is known."""


class CiteExample(SphinxDirective):
    required_arguments = 1
    has_content = False

    def run(self):
        return [cite_example(target=self.arguments[0])]


class ExpnormInstall(SphinxDirective):
    """``{expnorm-install}``: the pip command installing this version's wheel from the site."""

    has_content = False

    def run(self):
        from why_softmax_site import base_url

        wheel = f"{base_url(self.config)}{DIST}/expnorm-{self.config.release}-py3-none-any.whl"
        text = f'pip install "expnorm[book,torch] @ {wheel}"'
        return [nodes.literal_block(text, text, language="bash")]


def find_target(env, target: str):
    """(docname, anchor, kind, number, title) of a docname or a label."""
    if target in env.titles:
        return target, "", "", "", ""
    for docname, types in env.toc_fignumbers.items():
        for kind, ids in types.items():
            if target in ids:
                number = ".".join(map(str, ids[target]))
                return docname, target, kind, number, target_title(env, docname, target)
    label = env.domaindata["std"]["labels"].get(target)
    if label:
        return label[0], label[1], "section", "", label[2]
    raise KeyError(target)


def target_title(env, docname: str, anchor: str) -> str:
    """The title a theorem-like block shows in parentheses ("Uniqueness of the exponential")."""
    tree = env.get_doctree(docname)
    for node in tree.findall(nodes.Element):
        if anchor in node.get("ids", []):
            for t in node.findall(nodes.title):
                text = t.astext().strip()
                return text[1:-1].strip() if text[:1] == "(" and text[-1:] == ")" else text
            return ""
    return ""


def resolve_cite_examples(app: Sphinx, doctree: nodes.document) -> None:
    from why_softmax_site import base_url, bibtex_escape, book_year, title_bibtex

    env, config = app.env, app.config
    for node in list(doctree.findall(cite_example)):
        try:
            docname, anchor, kind, number, title = find_target(env, node["target"])
        except KeyError:
            logger.warning("cite-example: no label or page %r", node["target"], location=node)
            node.replace_self([])
            continue
        chapter = env.titles[docname]
        url = f"{base_url(config)}{docname}.html" + (f"#{anchor}" if anchor else "")
        what = ""
        if kind:
            name = {"figure": "Figure", "section": "Section"}.get(kind, kind.capitalize())
            what = f"{name} {number}".strip()
            if title and kind not in ("figure",):
                what += f" ({title})" if kind != "section" else f" “{title}”"
        v, project = config.release, config.project
        plain = (f"{config.author}. “{chapter.astext()}”"
                 + (f", {what}" if what else "")
                 + f". In {project}, version {v}, {book_year(config)}. {url}")
        key = "whysoftmax-" + docname.rsplit("/", 1)[-1].replace("_", "-").lower()
        if anchor:
            key += "-" + anchor.lower()
        lines = [f"@incollection{{{key},",
                 f"  title     = {{{title_bibtex(chapter)}}},",
                 f"  booktitle = {{{bibtex_escape(project)}}},",
                 f"  author    = {{{{{bibtex_escape(config.author)}}}}},",
                 f"  year      = {{{book_year(config)}}},",
                 f"  edition   = {{Version {v}}},",
                 f"  version   = {{{v}}},"]
        if what:
            lines.append(f"  note      = {{{bibtex_escape(what)}}},")
        lines += [f"  url       = {{{url}}}", "}"]
        bib = "\n".join(lines)
        node.replace_self([
            nodes.literal_block(plain, plain, language="text", classes=["cite-plain"]),
            nodes.literal_block(bib, bib, language="bibtex", classes=["cite-bibtex"]),
        ])


def individual_pages(app: Sphinx) -> bool:
    """Jupyter Book's --individualpages replaces latex_documents by one entry per page."""
    return app.builder.format == "latex" and len(app.config.latex_documents) > 1


def latex_title(node: nodes.Node) -> str:
    from sphinx.util.texescape import escape

    parts = []
    for child in node.children:
        if isinstance(child, nodes.math):
            tex = child.astext()
            parts.append(f"\\texorpdfstring{{${tex}$}}{{{escape(tex)}}}")
        else:
            parts.append(escape(child.astext()))
    return "".join(parts)


def on_env_updated(app: Sphinx, env) -> list[str]:
    """Per-page LaTeX documents (set by Jupyter Book after a first read, before the build)."""
    if not individual_pages(app):
        return []
    docs = []
    for entry in app.config.latex_documents:
        entry = list(entry)
        if entry[0] == app.config.root_doc:
            continue  # the root page pulls in the whole book: that is `make pdf`'s other PDF
        node = env.titles.get(entry[0])
        if node is not None and entry[2] == node.astext():
            entry[2] = latex_title(node)
        docs.append(tuple(entry))
    app.config.latex_documents = docs
    # sphinx-proof's index lists the proofs of every page: not for a one-page handout
    app.config.latex_domain_indices = False
    return []


_RESOLVING: set[str] = set()


def bibliography_citations(app: Sphinx) -> dict[str, nodes.citation]:
    """The citation nodes of the bibliography page(s), resolved for LaTeX, by id."""
    cache = getattr(app.env, "_why_softmax_citations", None)
    if cache is not None:
        return cache
    cache = {}
    from sphinxcontrib.bibtex.nodes import bibliography

    for docname in sorted(app.env.found_docs):
        if not any(True for _ in app.env.get_doctree(docname).findall(bibliography)):
            continue
        _RESOLVING.add(docname)
        try:
            tree = app.env.get_and_resolve_doctree(docname, app.builder)
        finally:
            _RESOLVING.discard(docname)
        for c in tree.findall(nodes.citation):
            for i in c.get("ids", []):
                cache[f"{c.get('docname', docname)}#{i}"] = c
    app.env._why_softmax_citations = cache
    return cache


def handout_references(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    """In a one-page PDF: links to other pages go to the site; the cited entries are added."""
    from sphinx.builders.latex.nodes import thebibliography

    from why_softmax_site import base_url

    # sphinx-proof labels a theorem in LaTeX by the docname of the section holding it, which
    # the LaTeX builder sets only on pages it inlines into another one: set it on this page's.
    title = app.env.titles.get(docname)
    for section in doctree.children:
        if isinstance(section, nodes.section) and "docname" not in section:
            section["docname"] = docname
            if title is not None and title.astext().lower() not in section["names"]:
                section["names"].append(title.astext().lower())
    citations = bibliography_citations(app)
    cited = []
    for ref in list(doctree.findall(nodes.reference)):
        uri = ref.get("refuri", "")
        if not uri.startswith("%"):
            continue
        target = uri[1:]
        if target in citations:
            if target not in cited:
                cited.append(target)
            continue
        page, _, anchor = target.partition("#")
        if page == docname:
            continue
        url = f"{base_url(app.config)}{page}.html" + (f"#{anchor}" if anchor else "")
        ref.replace_self(nodes.reference(ref.astext(), ref.astext(), refuri=url))
    # sphinxcontrib-bibtex writes its LaTeX citations as raw \\hyperlink{cite.<doc>:<id>}{
    from sphinxcontrib.bibtex.nodes import raw_latex

    for raw in doctree.findall(raw_latex):
        for doc, ident in re.findall(r"\\hyperlink\{cite\.([^:}]+):([^}]+)\}", raw.rawsource):
            target = f"{doc}#{ident}"
            if target in citations and target not in cited:
                cited.append(target)
    if cited and not list(doctree.findall(thebibliography)):
        bib = thebibliography()
        bib.extend(citations[t].deepcopy() for t in cited)
        doctree.append(bib)


def on_doctree_resolved(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    resolve_cite_examples(app, doctree)
    if individual_pages(app) and docname not in _RESOLVING:
        handout_references(app, doctree, docname)
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
    app.add_node(cite_example)
    app.add_directive("cite-example", CiteExample)
    app.add_directive("expnorm-install", ExpnormInstall)
    app.connect("doctree-resolved", on_doctree_resolved)
    app.connect("env-updated", on_env_updated)
    app.connect("build-finished", on_build_finished)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
