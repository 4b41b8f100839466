"""The PDF gets the explorable figures' static PNGs (MyST-NB's LaTeX mime priority).

Builds the LaTeX sources (Sphinx's latex builder, no TeX run: test_pdf.py compiles the PDF)
into _build/test-explorable-latex and checks, for every explorable figure placed by
tools/add_explorable_figures.py, that the figure with its label includes a PNG whose bytes are
the static PNG glued in the chapter notebook, and that nothing of the HTML version is left.
"""

import base64
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from conftest import ROOT, build_env, jupyter_book

sys.path.insert(0, str(ROOT / "tools"))
from add_explorable_figures import PLACES  # noqa: E402

PNG_KEY = "application/papermill.record/image/png"
HTML_KEY = "application/papermill.record/text/html"


def glued_outputs(notebook: str) -> dict:
    """{glue name: output data} of a notebook's glued explorable figures."""
    nb = nbformat.read(ROOT / notebook, as_version=4)
    out = {}
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            name = o.get("metadata", {}).get("scrapbook", {}).get("name", "")
            if "explorable" in name:
                out[name] = o["data"]
    return out


def expected():
    """(notebook, figure label) for each placed figure, from the insertion script."""
    from expnorm import explorable

    return [(nb, explorable.FIGURES[key].__defaults__[0]) for key, nb, _, _ in PLACES]


def test_chapters_glue_both_versions():
    for notebook, label in expected():
        data = glued_outputs(notebook).get(label)
        assert data is not None, f"{notebook}: {label} not glued (run the script, re-execute)"
        assert base64.b64decode(data[PNG_KEY])[:8] == b"\x89PNG\r\n\x1a\n"
        assert f'data-explorable="{label}"' in data[HTML_KEY]


@pytest.fixture(scope="module")
def latex_dir():
    out = ROOT / "_build" / "test-explorable-latex"
    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.run(
        [jupyter_book(), "build", str(ROOT), "--builder", "latex", "-W", "-n", "--keep-going",
         "--path-output", str(out)],
        capture_output=True, text=True, cwd=ROOT, env=build_env(),
    )
    assert proc.returncode == 0, f"LaTeX build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-3000:]}"
    return out / "_build" / "latex"


def test_latex_includes_the_static_png(latex_dir: Path):
    (tex,) = latex_dir.glob("*.tex")
    text = tex.read_text(encoding="utf-8")
    assert "explorable-spec" not in text and "vega" not in text.lower()
    for notebook, label in expected():
        doc = Path(notebook).with_suffix("").as_posix()
        m = re.search(r"\\begin\{figure\}(?:(?!\\end\{figure\}).)*?"
                      r"\\sphinxincludegraphics(?:\[[^\]]*\])?\{\{([^}]+)\}(\.png)\}"
                      r"(?:(?!\\end\{figure\}).)*?\\label\{\\detokenize\{"
                      + re.escape(f"{doc}:{label}") + r"\}\}", text, re.S)
        assert m, f"{label}: no figure with an included PNG in {tex.name}"
        png = (latex_dir / (m.group(1) + m.group(2))).read_bytes()
        assert png == base64.b64decode(glued_outputs(notebook)[label][PNG_KEY]), label
