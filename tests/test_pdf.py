"""`make pdf`: the whole book as one PDF, and one PDF handout per page.

Builds exactly like `make pdf` (`jupyter-book build . --builder pdflatex -W -n --keep-going`,
XeLaTeX through latexmk), from scratch, into _build/test-pdf; and the handouts (the same with
`--individualpages`) into _build/test-handouts. Needs TeX Live, latexmk, xindy and
poppler-utils (`make test` installs them when it can); a missing tool fails the test.

Every chapter (every notebook of the table of contents) has its handout: its title, its own
figures, the entries of the bibliography it cites, no "??" (an undefined reference) and no
undefined reference in the LaTeX log; the page count of each is printed. Each chapter page of
the site links to its handout, at the place `make pdf` copies it to.
"""

import re
import shutil
import subprocess
import time
import unicodedata

import pytest
import yaml

from conftest import (ARTIFACTS, ROOT, build_env, chapter_docnames, jupyter_book, source_of,
                      toc_files)

TOOLS = ["xelatex", "latexmk", "xindy", "pdftotext", "pdfinfo"]
HINT = ("sudo apt-get install latexmk xindy texlive-latex-recommended texlive-latex-extra "
        "texlive-fonts-recommended texlive-xetex fonts-freefont-otf poppler-utils")


@pytest.fixture(scope="module")
def builds():
    """Both PDF builds of `make pdf`, run side by side (LaTeX uses one core each), timed."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.fail(f"missing {missing}: {HINT} (or run `make test` as root)", pytrace=False)
    runs = {"book": (ROOT / "_build" / "test-pdf", []),
            "handouts": (ROOT / "_build" / "test-handouts", ["--individualpages"])}
    procs = {}
    t0 = time.perf_counter()
    for name, (out, extra) in runs.items():
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        logs = (open(out / "stdout.log", "w+"), open(out / "stderr.log", "w+"))
        procs[name] = (subprocess.Popen(
            [jupyter_book(), "build", str(ROOT), "--builder", "pdflatex", *extra, "-W", "-n",
             "--keep-going", "--path-output", str(out)],
            stdout=logs[0], stderr=logs[1], text=True, cwd=ROOT, env=build_env()), logs)
    results = {}
    for name, (proc, logs) in procs.items():
        proc.wait()
        texts = []
        for f in logs:
            f.seek(0)
            texts.append(f.read())
            f.close()
        results[name] = (runs[name][0], proc.returncode, *texts, time.perf_counter() - t0)
    return results


@pytest.fixture(scope="module")
def pdf(builds, capsys_disabled_print):
    out, returncode, stdout, stderr, seconds = builds["book"]
    capsys_disabled_print(f"whole-book PDF built in {seconds:.0f} s")
    proc = subprocess.CompletedProcess([], returncode, stdout, stderr)
    latex = out / "_build" / "latex"
    assert proc.returncode == 0, f"PDF build failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    pdfs = list(latex.glob("*.pdf"))
    assert len(pdfs) == 1, pdfs
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(pdfs[0], ARTIFACTS / pdfs[0].name)
    return pdfs[0]


def title_of(docname: str) -> str:
    src = source_of(docname)
    if src.suffix == ".ipynb":
        import nbformat
        nb = nbformat.read(src, as_version=4)
        text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    else:
        text = src.read_text(encoding="utf-8")
    m = re.search(r"^#\s+(.+)$", text, re.M)
    assert m, f"{docname}: no title"
    return m.group(1)


def letters(s: str) -> str:
    # Compare titles letter by letter: math ($e^x$) comes out of pdftotext as "ex", or as
    # math italic letters (U+1D452 for e), which NFKC maps to plain ones.
    s = unicodedata.normalize("NFKC", re.sub(r"\\[a-zA-Z]+", "", s))
    return re.sub(r"[^a-z0-9]", "", s.lower())


def test_pdf_has_every_chapter(pdf):
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True,
                          text=True, check=True).stdout
    flat = letters(text)
    for doc in toc_files():
        if doc == "book/intro":
            continue  # the root page is the PDF's front matter, not a chapter
        title = title_of(doc)
        assert letters(title) in flat, f"{doc}: chapter {title!r} not in the PDF"
    pages = int(re.search(r"Pages:\s+(\d+)", subprocess.run(
        ["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout).group(1))
    assert pages > len(toc_files())
    print(f"{pdf.name}: {pages} pages")


def test_latex_log_has_no_undefined_reference(pdf):
    log = pdf.with_suffix(".log").read_text(encoding="utf-8", errors="replace")
    bad = [line for line in log.splitlines() if re.search(r"undefined", line, re.I)]
    assert not bad, "undefined references or citations in the LaTeX log:\n" + "\n".join(bad[:20])
    assert "Label(s) may have changed" not in log, "LaTeX did not settle its cross-references"


@pytest.fixture(scope="module")
def handouts(builds, capsys_disabled_print):
    out, returncode, stdout, stderr, seconds = builds["handouts"]
    capsys_disabled_print(f"handouts (one PDF per page) built in {seconds:.0f} s")
    assert returncode == 0, f"handouts failed:\n{stdout[-6000:]}\n{stderr[-3000:]}"
    return out / "_build" / "latex"


@pytest.fixture(scope="module")
def capsys_disabled_print(request):
    capman = request.config.pluginmanager.getplugin("capturemanager")

    def show(text):
        with capman.global_and_fixture_disabled():
            print(f"\n  {text}", flush=True)
    return show


def pdf_pages(pdf) -> int:
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True)
    return int(re.search(r"Pages:\s+(\d+)", info.stdout).group(1))


@pytest.mark.slow
@pytest.mark.parametrize("doc", chapter_docnames())
def test_every_chapter_has_its_handout(handouts, doc, capsys):
    name = doc.rsplit("/", 1)[-1]
    pdf = handouts / f"{name}.pdf"
    assert pdf.is_file(), f"{doc}: no handout {pdf.name}"
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True,
                          text=True, check=True).stdout
    assert letters(title_of(doc)) in letters(text[:3000]), f"{doc}: title not on the first page"
    assert "??" not in text, f"{doc}: undefined reference (??) in the handout"
    log = pdf.with_suffix(".log").read_text(encoding="utf-8", errors="replace")
    bad = [l for l in log.splitlines() if re.search(r"undefined", l, re.I)]
    assert not bad, f"{doc}: " + "\n".join(bad[:10])
    tex = pdf.with_suffix(".tex").read_text(encoding="utf-8")
    # its own figures, each with its label
    figures = set(re.findall(r'(?:"name": "|:name: )(fig-[\w-]+)', source_of(doc).read_text()))
    for fig in figures:
        assert f"{doc}:{fig}}}" in tex, f"{doc}: figure {fig} not in the handout"
    for img in re.findall(r"\\sphinxincludegraphics(?:\[[^]]*\])?\{\{?([^}]+?)\}?\}", tex):
        assert list(handouts.glob(img.strip("{}") + "*")), f"{doc}: image {img} missing"
    # its own bibliography: every work it cites
    cited = set(re.findall(r"\\hyperlink\{cite\.([^}]+)\}", tex))
    items = set(re.findall(r"\\bibitem\[[^]]*\]\{([^}]+)\}", tex))
    assert cited <= items, f"{doc}: cited but not in its bibliography: {sorted(cited - items)}"
    pages = pdf_pages(pdf)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(pdf, ARTIFACTS / pdf.name)
    with capsys.disabled():
        print(f"\n  handout {pdf.name}: {pages} pages, {len(cited)} works cited")


def test_chapter_pages_link_to_their_handout(built_site):
    base = yaml.safe_load((ROOT / "_config.yml").read_text())["html"]["baseurl"].rstrip("/")
    makefile = (ROOT / "Makefile").read_text()
    assert "_build/html/pdf" in makefile, "make pdf no longer copies the handouts into the site"
    for doc in chapter_docnames():
        html = (built_site / f"{doc}.html").read_text(encoding="utf-8")
        url = f"{base}/pdf/{doc.rsplit('/', 1)[-1]}.pdf"
        assert f'href="{url}"' in html, f"{doc}: no link to its handout {url}"
