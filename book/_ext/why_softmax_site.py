"""Local Sphinx extension for the "Why Softmax?" site.

- Offline math: MathJax 3.2.2 (bundled by the pinned PyPI package ``sphinx-mathjax-offline``)
  is copied into the built site at ``build-finished`` and ``mathjax_path`` points at that copy,
  so no page loads anything from a CDN. (Jupyter Book 1 adds a ``<script>`` tag for every .js
  under ``_static``, so MathJax is deliberately *not* placed in ``html_static_path``.)
- One version: ``release``/``version`` come from ``pyproject.toml`` ``[project] version`` (the
  single source of truth, also checked against CITATION.cff and CHANGELOG.md by the tests) and
  are shown in every page's footer.
- Citing: every chapter (every page whose source is a notebook) ends with a "Cite this
  chapter" box holding a BibTeX entry with the chapter title, the book, the version and the
  chapter's stable URL (``html_baseurl`` + docname + ".html"). The ``book-bibtex`` directive
  renders the entry for the whole book.
- Reading times: the ``reading-times`` directive renders a table of chapters with their
  prerequisites and reading times, and the ``reading-time`` role the total time of a list of
  pages. Both count the words of the notebooks at build time (``reading_stats``), so the
  numbers follow the chapters; the assumed reading speeds are in ``READING``.
- Accessibility and offline fixes in ``why_softmax_site.css`` (added to every page), and in
  ``on_html_page_context`` (ARIA roles, landmarks, empty table headers).
"""

from __future__ import annotations

import re
import shutil
import tomllib
from datetime import date
from importlib import metadata
from pathlib import Path

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MATHJAX_ENTRY = "mathjax/tex-mml-chtml.js"  # relative to _static


def mathjax_source() -> Path:
    """The MathJax 3.2.2 es5 tree shipped by the pinned ``sphinx-mathjax-offline`` wheel."""
    dist = metadata.distribution("sphinx-mathjax-offline")
    for f in dist.files or []:
        if f.as_posix().endswith("static/mathjax/tex-mml-chtml.js"):
            return Path(dist.locate_file(f)).parent
    raise RuntimeError("sphinx-mathjax-offline does not ship static/mathjax/tex-mml-chtml.js")


def book_version() -> str:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return data["project"]["version"]


def base_url(config) -> str:
    url = config.html_baseurl or ""
    return url if url.endswith("/") else url + "/"


def bibtex_escape(text: str) -> str:
    text = " ".join(text.split())
    return re.sub(r"([{}&%#_$])", r"\\\1", text)


def bibtex_key(name: str) -> str:
    return "whysoftmax-" + re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()


def book_year(config) -> str:
    """The first year in ``copyright`` (fixed in _config.yml, so builds are reproducible)."""
    m = re.search(r"\d{4}", config.copyright or "")
    return m.group(0) if m else str(date.today().year)


def title_bibtex(title: nodes.Node) -> str:
    """A title as BibTeX: text escaped, inline math kept as $...$, and the spaces next to the
    math kept ("Why $e^x$?", not "Why$e^x$?": each text piece is escaped unstripped)."""
    parts = []
    for node in title.children:
        if isinstance(node, nodes.math):
            parts.append(f"${node.astext()}$")
        else:
            parts.append(re.sub(r"([{}&%#_$])", r"\\\1", node.astext()))
    return " ".join("".join(parts).split())


def book_bibtex(config) -> str:
    v = config.release
    year = book_year(config)
    return (
        "@book{whysoftmax,\n"
        f"  title     = {{{bibtex_escape(config.project)}}},\n"
        f"  author    = {{{{{bibtex_escape(config.author)}}}}},\n"
        f"  year      = {{{year}}},\n"
        f"  edition   = {{Version {v}}},\n"
        f"  version   = {{{v}}},\n"
        f"  url       = {{{base_url(config)}}}\n"
        "}"
    )


def chapter_bibtex(config, docname: str, title: str) -> str:
    """``title`` is already BibTeX (see ``title_bibtex``)."""
    v = config.release
    year = book_year(config)
    url = f"{base_url(config)}{docname}.html"
    return (
        f"@incollection{{{bibtex_key(docname.rsplit('/', 1)[-1])},\n"
        f"  title     = {{{title}}},\n"
        f"  booktitle = {{{bibtex_escape(config.project)}}},\n"
        f"  author    = {{{{{bibtex_escape(config.author)}}}}},\n"
        f"  year      = {{{year}}},\n"
        f"  edition   = {{Version {v}}},\n"
        f"  version   = {{{v}}},\n"
        f"  url       = {{{url}}}\n"
        "}"
    )


# The reading model of the reading times: words of prose a minute (mathematical text is read
# more slowly than the ~250 words a minute of ordinary prose), seconds per displayed equation
# and per line of code shown on the page. Hidden code, outputs and the collapsed solutions of
# the exercises are not counted: the times are for a first reading, not for doing the exercises.
READING = {"words_per_minute": 150, "seconds_per_equation": 15, "seconds_per_code_line": 3}
WORD = re.compile(r"[A-Za-z0-9]+(?:['-][A-Za-z0-9]+)*")
HIDDEN_TAGS = {"hide-input", "remove-input", "remove-cell", "hide-cell"}


def prose_stats(text: str) -> tuple[int, int]:
    """(words, displayed equations) of MyST Markdown; an inline formula counts as one word."""
    equations = len(re.findall(r"^\s*\$\$", text, flags=re.M)) // 2
    equations += len(re.findall(r"^\s*\\begin\{(?:align|equation|gather)", text, flags=re.M))
    text = re.sub(r"\$\$.*?\$\$", " ", text, flags=re.S)  # displayed math
    text = re.sub(r"\$[^$\n]+\$", " x ", text)  # inline math: one word
    text = re.sub(r"^\s*\([^)\s]+\)=\s*$", " ", text, flags=re.M)  # labels
    text = re.sub(r"^\s*:[a-z-]+:.*$", " ", text, flags=re.M)  # directive options
    text = re.sub(r"^\s*[`:]{3,}.*$", " ", text, flags=re.M)  # directive fences
    text = re.sub(r"\{[a-z:]+\}`[^`]*`", " x ", text)  # a role ({ref}`...`) reads as one word
    text = re.sub(r"\]\([^)]*\)", "]", text)  # link targets
    return len(WORD.findall(text)), equations


def reading_stats(path: Path) -> dict:
    """Words, equations, lines of code shown and reading minutes of one page of the book."""
    words = equations = code_lines = 0
    if path.suffix == ".ipynb":
        import json

        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    else:
        cells = [{"cell_type": "markdown", "source": path.read_text(encoding="utf-8")}]
    in_solution = False
    for cell in cells:
        src = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            if re.search(r"\{solution-start\}", src):
                in_solution = True
            if in_solution:
                if re.search(r"\{solution-end\}", src):
                    in_solution = False
                continue
            w, e = prose_stats(src)
            words, equations = words + w, equations + e
        elif cell["cell_type"] == "code" and not in_solution:
            if HIDDEN_TAGS & set(cell.get("metadata", {}).get("tags", [])):
                continue
            code_lines += sum(1 for line in src.splitlines()
                              if line.strip() and not line.strip().startswith("#"))
    minutes = (words / READING["words_per_minute"]
               + (equations * READING["seconds_per_equation"]
                  + code_lines * READING["seconds_per_code_line"]) / 60)
    return {"words": words, "equations": equations, "code_lines": code_lines,
            "minutes": minutes}


def page_path(env, name: str) -> Path:
    """The source of page ``name`` (a docname relative to the current page, no suffix)."""
    base = Path(env.doc2path(env.docname)).parent
    for suffix in (".ipynb", ".md"):
        p = (base / f"{name}{suffix}").resolve()
        if p.exists():
            return p
    raise FileNotFoundError(name)


def round_minutes(minutes: float) -> int:
    return max(5, int(5 * round(minutes / 5)))


class ReadingTimes(SphinxDirective):
    """``reading-times``: a table of pages, prerequisites and reading times.

    One content line per page: ``<page> | <title, MyST> | <prerequisites, MyST>``.
    """

    has_content = True

    def run(self):
        rows = []
        for line in self.content:
            if not line.strip():
                continue
            name, title, prereq = (part.strip() for part in line.split("|", 2))
            path = page_path(self.env, name)
            self.env.note_dependency(str(path))
            st = reading_stats(path)
            rows.append(f"| {title} | {prereq} | {st['words']:,} | {st['equations']} "
                        f"| {st['code_lines']} | {round_minutes(st['minutes'])} min |")
        text = ("| chapter | prerequisites | words of prose | displayed equations "
                "| lines of code shown | reading time |\n|---|---|---:|---:|---:|---:|\n"
                + "\n".join(rows))
        return self.parse_text_to_nodes(text)


def reading_time_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    """``{reading-time}`01_x 02_y```: the total reading time of the listed pages."""
    env = inliner.document.settings.env
    total = 0.0
    for page in text.split():
        path = page_path(env, page)
        env.note_dependency(str(path))
        total += reading_stats(path)["minutes"]
    hours, minutes = divmod(round_minutes(total), 60)
    label = (f"{hours} h {minutes:02d} min" if hours else f"{minutes} min")
    return [nodes.inline(rawtext, f"about {label}")], []


def reading_model_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    """``{reading-model}`assumptions```: the assumptions of the reading times, in words."""
    r = READING
    sentence = (f"{r['words_per_minute']} words of prose a minute, "
                f"{r['seconds_per_equation']} seconds per displayed equation and "
                f"{r['seconds_per_code_line']} seconds per line of code shown; hidden code, "
                "outputs and the collapsed solutions of the exercises are not counted, and "
                "each time is rounded to 5 minutes")
    return [nodes.inline(rawtext, sentence)], []


class BookBibtex(SphinxDirective):
    """``{book-bibtex}``: the BibTeX entry for the whole book, with the current version."""

    has_content = False

    def run(self):
        text = book_bibtex(self.config)
        block = nodes.literal_block(text, text, language="bibtex")
        return [block]


def on_config_inited(app: Sphinx, config) -> None:
    v = book_version()
    config.release = v
    config.version = v
    config.mathjax_path = MATHJAX_ENTRY
    if not config.project or config.project == "Python":
        config.project = config.html_title or "Why Softmax?"
    if not getattr(config, "ogp_site_url", None):
        config.ogp_site_url = base_url(config)
    opts = dict(config.html_theme_options or {})
    # repository.path_to_book "." (the book is the repository root) would put "./" into the
    # Binder and Colab URLs; sphinx-book-theme wants "" for the root.
    if opts.get("path_to_docs", "").strip("/") == ".":
        opts["path_to_docs"] = ""
    footer = opts.get("extra_footer", "")
    opts["extra_footer"] = (
        f'{footer}<p class="why-softmax-version">{config.project} version {v}</p>'
    )
    config.html_theme_options = opts
    # why-softmax-home.html: the theme's title link inside a landmark (see on_html_page_context)
    config.templates_path = [*config.templates_path, str(HERE / "templates")]


def on_builder_inited(app: Sphinx) -> None:
    if app.builder.format == "html":
        app.config.html_static_path.append(str(HERE / "static"))
        app.add_css_file("why_softmax_site.css")


def is_chapter(app: Sphinx, docname: str) -> bool:
    return str(app.env.doc2path(docname)).endswith(".ipynb")


def latex_exercise_labels(app: Sphinx, doctree: nodes.document) -> None:
    """Give sphinx-exercise's exercises the LaTeX labels that {numref} points to.

    sphinx-exercise labels an exercise ``exercise:<label>`` in LaTeX, but a numbered reference
    from another page is written by Sphinx as ``\\ref{<docname>:<label>}``: without this, the
    PDF has undefined references. The label carries the exercise's number (as on the site).
    """
    try:
        from sphinx_exercise.nodes import exercise_enumerable_node
    except ImportError:  # pragma: no cover
        return
    registry = getattr(app.env, "sphinx_exercise_registry", {})
    for node in list(doctree.findall(exercise_enumerable_node)):
        label = node.get("label")
        docname = registry.get(label, {}).get("docname")
        if not docname or node.parent is None:
            continue
        ids = list(dict.fromkeys([*node.get("ids", []), label]))
        numbers = app.env.toc_fignumbers.get(docname, {}).get("exercise", {})
        number = next((".".join(map(str, numbers[i])) for i in ids if i in numbers), None)
        tex = "\\phantomsection"
        if number:
            tex += f"\\expandafter\\def\\csname @currentlabel\\endcsname{{{number}}}"
        tex += "".join(f"\\label{{\\detokenize{{{docname}:{i}}}}}" for i in ids)
        node.parent.insert(node.parent.index(node), nodes.raw("", tex + "%\n", format="latex"))


def typeset_doc_link_titles(app: Sphinx, doctree: nodes.document) -> None:
    """A {doc} link shows the target's title as plain text: "Why $e^x$?" becomes "Why e^x?".

    Put the title's own nodes (math included) into the link instead, so MathJax typesets it.
    """
    for ref in list(doctree.findall(nodes.reference)):
        inner = ref.children[0] if len(ref.children) == 1 else None
        if not isinstance(inner, nodes.inline) or "doc" not in inner.get("classes", []):
            continue
        target = ref.get("refuri", "").split("#")[0].rsplit(".", 1)[0]
        for docname, title in app.env.titles.items():
            if not any(isinstance(n, nodes.math) for n in title.findall(nodes.math)):
                continue
            if inner.astext() == title.astext() and docname.endswith(target.lstrip("./")):
                inner.children = []
                inner.extend(child.deepcopy() for child in title.children)
                break


def on_doctree_resolved(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    if app.builder.format == "latex":
        latex_exercise_labels(app, doctree)
        return
    if app.builder.format == "html":
        typeset_doc_link_titles(app, doctree)
    if app.builder.format != "html" or not is_chapter(app, docname):
        return
    node = app.env.titles.get(docname)
    title = node.astext() if node is not None else docname
    text = chapter_bibtex(app.config, docname, title_bibtex(node) if node is not None else title)
    box = nodes.admonition(classes=["cite-box", "tip"])
    box += nodes.title("", "Cite this chapter")
    url = f"{base_url(app.config)}{docname}.html"
    para = nodes.paragraph()
    para += nodes.Text("“")
    if node is not None:
        para.extend(child.deepcopy() for child in node.children)
    else:
        para += nodes.Text(title)
    para += nodes.Text(f"”, in {app.config.project}, version {app.config.release}. ")
    para += nodes.reference(url, url, refuri=url)
    box += para
    box += nodes.literal_block(text, text, language="bibtex")
    sections = list(doctree.findall(nodes.section))
    (sections[0] if sections else doctree).append(box)


MATH_ONLY_TH = re.compile(
    r'<th(?P<attrs>[^>]*)>\s*(?P<p><p>)?\s*<span class="math notranslate nohighlight">'
    r'(?P<tex>[^<]*)</span>\s*(?:</p>)?\s*</th>')
GREEK = {name: chr(code) for name, code in (
    ("alpha", 0x3B1), ("beta", 0x3B2), ("gamma", 0x3B3), ("delta", 0x3B4), ("epsilon", 0x3B5),
    ("varepsilon", 0x3B5), ("eta", 0x3B7), ("theta", 0x3B8), ("kappa", 0x3BA),
    ("lambda", 0x3BB), ("mu", 0x3BC), ("pi", 0x3C0), ("rho", 0x3C1), ("sigma", 0x3C3),
    ("tau", 0x3C4), ("phi", 0x3C6), ("omega", 0x3C9), ("Gamma", 0x393), ("Delta", 0x394),
    ("Theta", 0x398), ("Lambda", 0x39B), ("Sigma", 0x3A3), ("Phi", 0x3A6), ("Omega", 0x3A9),
)}
TEX_TOKEN = re.compile(r"\\([A-Za-z]+)|\\(.)|([_^])|(\{)|(\})|([A-Za-z])|(\s+)|(.)", re.S)


def tex_to_html(tex: str) -> str | None:
    """A short formula as HTML text (Greek letters, italic variables, sub- and superscripts,
    upright operator names), or None if it uses anything else."""
    import html

    out, stack, pending = [], [], None  # stack: closing tags of open groups
    for m in TEX_TOKEN.finditer(tex):
        word, sym, script, opening, closing, letter, space, other = m.groups()
        if script:
            pending = "sup" if script == "^" else "sub"
            continue
        piece = None
        if word:
            if word in GREEK:
                piece = f"<var>{GREEK[word]}</var>" if word[0].islower() else GREEK[word]
            elif word in ("operatorname", "mathrm", "text"):
                out.append("<span class=\"upright\">")
                stack.append("</span>")
                pending = "group-opened-by-command"
                continue
            elif word in ("ast",):
                piece = "*"
            else:
                return None
        elif sym:
            piece = html.escape(sym)
        elif opening:
            if pending == "group-opened-by-command":
                pending = None
                continue
            if pending:
                out.append(f"<{pending}>")
                stack.append(f"</{pending}>")
                pending = None
            else:
                stack.append("")
            continue
        elif closing:
            if not stack:
                return None
            out.append(stack.pop())
            continue
        elif letter:
            piece = letter if stack and stack[-1] == "</span>" else f"<var>{letter}</var>"
        elif space:
            continue
        else:
            piece = html.escape(other)
        if pending:
            piece, pending = f"<{pending}>{piece}</{pending}>", None
        out.append(piece)
    if stack or pending:
        return None
    return "".join(out)


def text_math_header(m: re.Match) -> str:
    """A table header cell that holds only a formula, as HTML text.

    MathJax's CHTML output has no text content, so a header cell with only math has no
    visible text for assistive technology (axe-core: empty-table-header). Short formulas
    are written out as HTML instead (Greek letters, sub- and superscripts); anything else
    is left to MathJax.
    """
    import html

    tex = html.unescape(m.group("tex")).strip()
    tex = re.sub(r"^\\\(|\\\)$", "", tex).strip()
    text = tex_to_html(tex)
    if text is None:
        return m.group(0)
    p_open, p_close = ("<p>", "</p>") if m.group("p") else ("", "")
    return f'<th{m.group("attrs")}>{p_open}<span class="why-softmax-math-text">{text}</span>{p_close}</th>'


def on_html_page_context(app: Sphinx, pagename, templatename, context, doctree) -> None:
    """Fix the page's ARIA roles (below) and drop repeated <script> entries.

    sphinx-thebe adds its configuration script at every ``env-before-read-docs``, which Jupyter
    Book emits twice: the second ``const THEBE_JS_URL`` is a console error on every page.
    """
    # docutils marks bibliography entries role="doc-biblioentry" inside a role="list";
    # DPUB-ARIA 1.1 deprecates that role and axe-core 4.12 treats it as generic, so the list
    # has no list items (a critical aria-required-children violation). Use plain list items.
    body = context.get("body")
    if isinstance(body, str) and 'role="doc-biblioentry"' in body:
        body = context["body"] = body.replace('role="doc-biblioentry"', 'role="listitem"')
    # A table header holding only a formula has no text (see text_math_header).
    if isinstance(body, str) and "<th" in body:
        context["body"] = MATH_ONLY_TH.sub(text_math_header, body)
    # The theme's title link sits outside every landmark (axe-core "region"): render it
    # inside a <nav> (templates/why-softmax-home.html).
    sidebars = context.get("sidebars")
    if sidebars and "navbar-logo.html" in sidebars:
        context["sidebars"] = ["why-softmax-home.html" if s == "navbar-logo.html" else s
                               for s in sidebars]
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for js in scripts:
        attrs = getattr(js, "attributes", {}) or {}
        key = (str(getattr(js, "filename", js) or ""),  # None and "" both mean inline
               tuple(sorted((k, str(v)) for k, v in attrs.items())))
        if key not in seen:
            seen.add(key)
            unique.append(js)
    context["script_files"] = unique


def on_build_finished(app: Sphinx, exc) -> None:
    if exc is not None or app.builder.format != "html":
        return
    dest = Path(app.outdir) / "_static" / "mathjax"
    src = mathjax_source()
    shutil.copytree(src, dest, dirs_exist_ok=True)
    if not (dest / "tex-mml-chtml.js").exists():
        logger.warning("MathJax was not copied into the site")


def setup(app: Sphinx):
    app.add_directive("book-bibtex", BookBibtex)
    app.add_directive("reading-times", ReadingTimes)
    app.add_role("reading-time", reading_time_role)
    app.add_role("reading-model", reading_model_role)
    # MathJax on every page, not only on pages with equations: the navigation sidebar shows
    # chapter titles with math (e.g. "Why $e^x$?") on every page.
    app.set_html_assets_policy("always")
    app.connect("config-inited", on_config_inited, priority=900)
    app.connect("builder-inited", on_builder_inited)
    app.connect("doctree-resolved", on_doctree_resolved)
    app.connect("html-page-context", on_html_page_context, priority=990)  # after the theme
    app.connect("build-finished", on_build_finished)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
