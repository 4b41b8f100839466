"""Shared fixtures for the site tests: one strict build of the site per test session.

The site is built from scratch (`--all`) like `make book` (`jupyter-book build . -W -n
--keep-going`), into
`_build/test-site/_build/html`, so the browser, link, citation and notebook-download tests all
look at the same pages. Pages are found generically (every HTML page of the build), so new
chapters are covered without changing the tests.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "_build" / "test-artifacts"


def jupyter_book() -> str:
    return str(Path(sys.executable).with_name("jupyter-book"))


def build_env() -> dict:
    return {**os.environ, "JAX_PLATFORMS": "cpu"}


def toc_files() -> list[str]:
    """Every file named in _toc.yml (root first), in reading order, nested entries included."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    out = [toc["root"]]

    def walk(entries):
        for e in entries or []:
            if "file" in e:
                out.append(e["file"])
            for key in ("sections", "chapters"):
                walk(e.get(key))
            for part in e.get("parts", []) or []:
                walk(part.get("chapters"))

    walk(toc.get("chapters"))
    for part in toc.get("parts", []) or []:
        walk(part.get("chapters"))
    return [str(Path(f).with_suffix("")) for f in out]


def source_of(docname: str) -> Path:
    for suffix in (".ipynb", ".md", ".rst"):
        p = ROOT / f"{docname}{suffix}"
        if p.exists():
            return p
    raise FileNotFoundError(docname)


def chapter_docnames() -> list[str]:
    """Chapters are the notebooks in the table of contents."""
    return [d for d in toc_files() if source_of(d).suffix == ".ipynb"]


@pytest.fixture(scope="session")
def built_site() -> Path:
    out = ROOT / "_build" / "test-site"
    proc = subprocess.run(
        [jupyter_book(), "build", str(ROOT), "--all", "-W", "-n", "--keep-going",
         "--path-output", str(out)],
        capture_output=True, text=True, cwd=ROOT, env=build_env(),
    )
    assert proc.returncode == 0, f"build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    assert "warning" not in proc.stderr.lower(), proc.stderr[-4000:]
    return out / "_build" / "html"


def html_pages(site: Path) -> list[Path]:
    """Every HTML page of the site (not the copies of sources nor theme assets)."""
    skip = {"_static", "_sources", "_images"}
    return sorted(p for p in site.rglob("*.html") if not skip & set(p.relative_to(site).parts))
