"""A notebook downloaded from the site runs by itself, in an environment with only a kernel.

The site (built like `make book`, which also puts expnorm's wheel into `_static/dist/`) is
served over HTTP on 127.0.0.1. A fresh virtual environment outside the repository gets only
ipykernel (pinned as in requirements.txt): no expnorm, no book dependencies. For every
notebook of the table of contents, in reading order, the test follows the page's download
link to the .ipynb, saves it alone into an empty folder outside the repository, clears its
outputs and executes it there with nbclient. The chapter's set-up cell (its first code cell,
tools/add_setup_cell.py) must install what the chapter needs from the served wheel
(WHY_SOFTMAX_SITE points it at the local server) and the package index, and the chapter must
run top to bottom with no error. One environment serves every chapter: the first chapter
pays for the install, the later ones find what they need (chapter 6 adds torch).

The time of each chapter and of the whole run is printed.
"""

import functools
import http.server
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urljoin
from urllib.request import urlopen

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import ROOT, chapter_docnames

KERNEL = "why-softmax-fresh"
TIMES: dict[str, float] = {}


def pinned(name: str) -> str:
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.lower().startswith(name.lower() + "=="):
            return line.strip()
    raise LookupError(name)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def served_site(built_site):
    handler = functools.partial(QuietHandler, directory=str(built_site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def fresh_env():
    """A venv outside the repository with only ipykernel, and a kernel spec for it."""
    with tempfile.TemporaryDirectory(prefix="why-softmax-fresh-") as tmp:
        tmp = Path(tmp)
        assert ROOT not in tmp.parents
        venv = tmp / "venv"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        py = venv / "bin" / "python"
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", pinned("ipykernel")],
                       check=True, capture_output=True, text=True)
        subprocess.run([str(py), "-m", "ipykernel", "install", "--prefix", str(venv),
                        "--name", KERNEL], check=True, capture_output=True, text=True)
        # Nothing of the book in it: the set-up cells have everything to install.
        probe = subprocess.run([str(py), "-c", "import importlib.util as u; print("
                                "[m for m in ('expnorm', 'jax', 'numpy', 'myst_nb') "
                                "if u.find_spec(m)])"], capture_output=True, text=True,
                               cwd=tmp, env=kernel_env(venv, ""))
        assert probe.stdout.strip() == "[]", probe.stdout + probe.stderr
        TIMES["fresh venv with ipykernel"] = time.perf_counter() - t0
        yield venv
        TIMES["total"] = sum(TIMES.values())


def kernel_env(venv: Path, site: str) -> dict:
    """The kernel's environment: this one without the repository's venv and paths."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "JUPYTER_PATH", "PYTHONHOME")}
    repo_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([str(venv / "bin")] + [
        p for p in env.get("PATH", "").split(os.pathsep) if p and p != repo_bin])
    env["JUPYTER_PATH"] = str(venv / "share" / "jupyter")
    env["JAX_PLATFORMS"] = "cpu"
    env["WHY_SOFTMAX_SITE"] = site
    return env


def download_link(site: str, doc: str) -> str:
    page_url = urljoin(site, f"{doc}.html")
    html = urlopen(page_url, timeout=30).read().decode("utf-8")
    links = {l for l in re.findall(r'href="([^"]+\.ipynb)"', html) if "://" not in l}
    assert len(links) == 1, f"{doc}: download links {links}"
    return urljoin(page_url, links.pop())


@pytest.mark.slow
@pytest.mark.parametrize("doc", chapter_docnames())
def test_downloaded_notebook_runs_in_a_fresh_environment(served_site, fresh_env, doc, tmp_path,
                                                         monkeypatch, capsys):
    url = download_link(served_site, doc)
    assert url.rsplit("/", 1)[-1] == Path(doc).name + ".ipynb", url
    folder = Path(tempfile.mkdtemp(prefix="download-", dir=fresh_env.parent))
    target = folder / (Path(doc).name + ".ipynb")
    target.write_bytes(urlopen(url, timeout=30).read())

    nb = nbformat.read(target, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and "why-softmax-setup" in code[0].metadata.get("tags", []), \
        f"{doc}: the first code cell is not the set-up cell (run tools/add_setup_cell.py)"
    for cell in code:
        cell.outputs, cell.execution_count = [], None

    env = kernel_env(fresh_env, served_site)
    for key in set(os.environ) - set(env):
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    t0 = time.perf_counter()
    NotebookClient(nb, kernel_name=KERNEL, timeout=1800, allow_errors=False,
                   resources={"metadata": {"path": str(folder)}}).execute()
    TIMES[doc] = elapsed = time.perf_counter() - t0
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors
    setup_out = "".join(o.get("text", "") for o in code[0].outputs)
    with capsys.disabled():
        print(f"\n  fresh environment: {doc} ran in {elapsed:.0f} s"
              + (f" (set-up: {setup_out.strip()!r})" if setup_out else ""))


@pytest.fixture(scope="module", autouse=True)
def report_times(request):
    yield
    if TIMES:
        lines = [f"{k}: {v:.0f} s" for k, v in TIMES.items()]
        capman = request.config.pluginmanager.getplugin("capturemanager")
        with capman.global_and_fixture_disabled():
            print("\n  fresh-environment notebook test: " + "; ".join(lines), flush=True)
