"""`make pdf`: the whole book as one PDF, with every chapter and no undefined reference.

Builds exactly like `make pdf` (`jupyter-book build . --builder pdflatex -W -n --keep-going`,
XeLaTeX through latexmk), from scratch, into _build/test-pdf. Needs TeX Live, latexmk, xindy
and poppler-utils (`make test` installs them when it can); a missing tool fails the test.
"""

import re
import shutil
import subprocess

import pytest

from conftest import ARTIFACTS, ROOT, build_env, jupyter_book, source_of, toc_files

TOOLS = ["xelatex", "latexmk", "xindy", "pdftotext", "pdfinfo"]
HINT = ("sudo apt-get install latexmk xindy texlive-latex-recommended texlive-latex-extra "
        "texlive-fonts-recommended texlive-xetex fonts-freefont-otf poppler-utils")


@pytest.fixture(scope="module")
def pdf():
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.fail(f"missing {missing}: {HINT} (or run `make test` as root)", pytrace=False)
    out = ROOT / "_build" / "test-pdf"
    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.run(
        [jupyter_book(), "build", str(ROOT), "--builder", "pdflatex", "-W", "-n", "--keep-going",
         "--path-output", str(out)],
        capture_output=True, text=True, cwd=ROOT, env=build_env(),
    )
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
    # Compare titles letter by letter: math ($e^x$) comes out of pdftotext as "ex".
    s = re.sub(r"\\[a-zA-Z]+", "", s)
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
