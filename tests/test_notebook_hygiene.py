"""Strict nbval checks only what was executed: these tests make sure everything was.

A code cell saved without running has no outputs and no execution count, and nbval then
compares nothing for it; a notebook run out of order hides state the reader cannot reproduce.
"""

import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))


def _toc_files():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    stack = list(toc.get("chapters", [])) + [
        c for part in toc.get("parts", []) for c in part.get("chapters", [])
    ]
    while stack:
        entry = stack.pop()
        files.append(entry["file"])
        stack.extend(entry.get("sections", []))
    return files


def test_there_are_notebooks():
    assert NOTEBOOKS, "no chapter notebooks found in book/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_executed_top_to_bottom_once(path):
    nb = json.loads(path.read_text())
    counts = [c.get("execution_count") for c in nb["cells"] if c["cell_type"] == "code"]
    assert counts, f"{path.name} has no code cells"
    assert None not in counts, f"{path.name}: a code cell was never executed"
    assert counts == list(range(1, len(counts) + 1)), f"{path.name}: counts {counts} are not 1..N"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_errors_or_stderr(path):
    nb = json.loads(path.read_text())
    for i, cell in enumerate(nb["cells"]):
        for out in cell.get("outputs", []):
            assert out["output_type"] != "error", f"{path.name} cell {i} holds an error"
            assert out.get("name") != "stderr", f"{path.name} cell {i} holds stderr output"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_imports_library_without_path_hacks(path):
    nb = json.loads(path.read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert "sys.path" not in code, f"{path.name} edits sys.path; install expnorm instead"
    assert "import expnorm" in code or "from expnorm" in code, f"{path.name} does not use expnorm"
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


def test_every_notebook_is_in_the_table_of_contents():
    listed = {f.removesuffix(".ipynb").removesuffix(".md") for f in _toc_files()}
    for path in NOTEBOOKS:
        assert f"book/{path.stem}" in listed, f"{path.name} is missing from _toc.yml"
    for f in listed:
        assert any((ROOT / f"{f}{ext}").exists() for ext in (".ipynb", ".md")), f"_toc.yml lists missing {f}"
