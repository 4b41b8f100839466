"""The set-up cell of every chapter, and the `expnorm[book]` extra it installs.

- Every notebook of the table of contents starts (first code cell) with the set-up cell that
  tools/add_setup_cell.py generates now (current version, base URL, chapter imports).
- In the repository's environment the cell does nothing: run on its own it prints nothing
  and installs nothing (so strict nbval outputs stay as they are).
- `expnorm[book]` and `expnorm[torch]` pin exactly the versions of requirements.txt, and
  every module a chapter imports comes from expnorm, its dependencies or these extras.
tests/test_downloads.py runs the cells for real in a fresh environment.
"""

import importlib.metadata as md
import importlib.util
import re
import subprocess
import sys
import tomllib

import nbformat
import pytest
from packaging.requirements import Requirement

from conftest import ROOT

spec = importlib.util.spec_from_file_location("add_setup_cell", ROOT / "tools" / "add_setup_cell.py")
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)
NOTEBOOKS = tool.toc_notebooks()
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            r = Requirement(line)
            out[r.name.lower().replace("_", "-")] = str(r.specifier)
    return out


def test_there_are_chapter_notebooks():
    assert len(NOTEBOOKS) >= 8


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_code_cell_is_the_current_set_up_cell(path):
    nb = nbformat.read(path, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert first.get("id") == tool.CELL_ID, f"{path.name}: run tools/add_setup_cell.py"
    assert first.metadata.get("tags", [])[:2] == ["hide-input", tool.CELL_ID]
    assert first.source == tool.setup_source(tool.chapter_imports(nb)), \
        f"{path.name}: the set-up cell is stale; run tools/add_setup_cell.py"
    assert first.outputs == [], f"{path.name}: the set-up cell has output in the repository"
    assert not tool.apply(path, check=True)


def test_tool_is_idempotent(tmp_path):
    src = NOTEBOOKS[0]
    nb = nbformat.read(src, as_version=4)
    nb.cells = [c for c in nb.cells if c.get("id") != tool.CELL_ID]
    for c in nb.cells:  # as before the set-up cell existed: counts 1..N
        if c.cell_type == "code":
            c.execution_count -= 1
            for o in c.outputs:
                if o.get("execution_count") is not None:
                    o["execution_count"] -= 1
    path = tmp_path / src.name
    nbformat.write(nb, path)
    assert tool.apply(path)
    once = path.read_text()
    assert not tool.apply(path)
    assert path.read_text() == once == src.read_text()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_set_up_cell_does_nothing_here(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    source = next(c for c in nb.cells if c.cell_type == "code").source
    # A site URL that cannot answer: if the cell tried to install, pip would fail loudly.
    env = {"WHY_SOFTMAX_SITE": "http://127.0.0.1:9/", "PATH": "/usr/bin:/bin",
           "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", source + "\nprint(sorted(n for n in dir() "
                           "if not n.startswith('__')))"], capture_output=True, text=True,
                          env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", f"printed or left names: {proc.stdout!r}"
    assert proc.stderr == ""


def test_book_extra_pins_like_requirements():
    req = pins()
    extras = PROJECT["optional-dependencies"]
    assert set(extras) >= {"book", "torch"}
    for extra, deps in extras.items():
        for dep in deps:
            r = Requirement(dep)
            name = r.name.lower().replace("_", "-")
            assert str(r.specifier).startswith("=="), f"[{extra}] {dep} is not pinned"
            assert req.get(name) == str(r.specifier), \
                f"[{extra}] {dep} differs from requirements.txt ({req.get(name)})"


def test_every_chapter_import_is_provided():
    provided = {Requirement(d).name.lower().replace("_", "-") for d in PROJECT["dependencies"]}
    for deps in PROJECT["optional-dependencies"].values():
        provided |= {Requirement(d).name.lower().replace("_", "-") for d in deps}
    dists = md.packages_distributions()
    for path in NOTEBOOKS:
        for mod in tool.chapter_imports(nbformat.read(path, as_version=4)):
            names = {d.lower().replace("_", "-") for d in dists.get(mod, [])}
            assert names & provided, f"{path.name} imports {mod} ({names}), not in expnorm[book]"


def test_modules_are_top_level_names():
    for path in NOTEBOOKS:
        for mod in tool.chapter_imports(nbformat.read(path, as_version=4)):
            assert re.fullmatch(r"[A-Za-z_]\w*", mod), mod
