"""The site builds with no warnings (-W -n) and contains every chapter."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    jb = Path(sys.executable).with_name("jupyter-book")
    proc = subprocess.run(
        [str(jb), "build", str(ROOT), "-W", "-n", "--keep-going", "--path-output", str(out)],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert proc.returncode == 0, f"build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    assert "warning" not in proc.stderr.lower(), proc.stderr[-4000:]
    return out / "_build" / "html"


def test_intro_and_chapters_are_built(site):
    assert 'url=book/intro.html' in (site / "index.html").read_text()  # root redirects to the intro
    intro = (site / "book" / "intro.html").read_text()
    assert "Why Softmax?" in intro
    for nb in sorted((ROOT / "book").glob("*.ipynb")):
        page = site / "book" / f"{nb.stem}.html"
        assert page.exists(), f"{page} missing"
        html = page.read_text()
        assert "Traceback" not in html
        assert "<figcaption" in html, f"{nb.stem}: no captioned figure"
        assert 'alt=""' not in html, f"{nb.stem}: an image without alt text"


def test_notebook_outputs_are_rendered_not_reexecuted(site):
    # execute_notebooks is "off": the committed (nbval-verified) outputs are what readers see.
    page = (site / "book" / "01_scores_to_probabilities.html").read_text()
    assert "output" in page and "<img" in page


def test_bibliography_resolves(site):
    page = (site / "book" / "bibliography.html").read_text()
    assert "Blanchard" in page and "Bridle" in page
