"""The notebooks a reader downloads from the site run top to bottom in a fresh kernel.

For every chapter page, follow its download button to the .ipynb the site serves, copy it
alone into an empty folder (as a reader's download is), and execute it with nbclient in a
fresh `python3` kernel of this environment (which has expnorm installed, as `make lab` does).
"""

import re
import shutil
from pathlib import Path
from urllib.parse import unquote

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import chapter_docnames


@pytest.mark.slow
@pytest.mark.parametrize("doc", chapter_docnames())
def test_downloaded_notebook_runs_top_to_bottom(built_site, tmp_path, doc):
    page = built_site / f"{doc}.html"
    html = page.read_text(encoding="utf-8")
    links = set(re.findall(r'href="([^"]+\.ipynb)"', html))
    local = [l for l in links if "://" not in l]
    assert local, f"{doc}: no download link to the notebook"
    assert len(local) == 1, local
    source = (page.parent / unquote(local[0])).resolve()
    assert source.is_file(), f"{doc}: download link {local[0]} points at nothing"
    assert source.name == Path(doc).name + ".ipynb"
    target = tmp_path / source.name
    shutil.copy(source, target)

    nb = nbformat.read(target, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    NotebookClient(nb, kernel_name="python3", timeout=1200, allow_errors=False,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
