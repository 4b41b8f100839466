"""Binder: the repo2docker configuration in binder/ gives an environment that runs every chapter.

repo2docker (mybinder.org) reads binder/ and ignores the root's configuration: runtime.txt
(the Python version), apt.txt (system packages), requirements.txt (pip install -r, here the
repository's pinned requirements.txt), then runs postBuild at the root of a copy of the
repository. This test does the same in a fresh virtual environment outside the repository
(apt.txt's packages are checked to be installed here instead): it copies the repository's
files, installs binder/requirements.txt, runs binder/postBuild, and then imports, in that
environment, expnorm and every module every chapter imports; the chapters' set-up cells find
nothing to install there (they print nothing). Binder itself (building the image on
mybinder.org) cannot be tested here.
"""

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest

from conftest import ROOT

spec = importlib.util.spec_from_file_location("add_setup_cell", ROOT / "tools" / "add_setup_cell.py")
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)
BINDER = ROOT / "binder"


def test_binder_files():
    assert (BINDER / "requirements.txt").is_file()
    assert os.access(BINDER / "postBuild", os.X_OK), "binder/postBuild must be executable"
    runtime = (BINDER / "runtime.txt").read_text().strip()
    assert runtime == f"python-{sys.version_info.major}.{sys.version_info.minor}", \
        f"binder/runtime.txt says {runtime}; the book is tested on {sys.version.split()[0]}"


def test_apt_packages_are_system_packages_of_the_book():
    apt = [l.strip() for l in (BINDER / "apt.txt").read_text().splitlines()
           if l.strip() and not l.startswith("#")]
    assert apt
    for pkg in apt:
        assert shutil.which(pkg) or shutil.which(pkg.replace("g++", "c++")), pkg
        assert pkg in (ROOT / "Makefile").read_text(), f"{pkg} is not a system package of make"


def repository_copy(dest: Path) -> None:
    """The repository as repo2docker gets it: the tracked and untracked-but-not-ignored files."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)


@pytest.mark.slow
def test_binder_environment_runs_every_chapter_import(capsys):
    with tempfile.TemporaryDirectory(prefix="why-softmax-binder-") as tmp:
        tmp = Path(tmp)
        repo, venv = tmp / "repo", tmp / "venv"
        repository_copy(repo)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        env["PATH"] = os.pathsep.join([str(venv / "bin")] + [
            p for p in env["PATH"].split(os.pathsep) if p != str(Path(sys.executable).parent)])
        env["HOME"] = str(tmp)  # kernels compiled on first use go to ~/.cache: keep it here
        py = str(venv / "bin" / "python")
        proc = subprocess.run([py, "-m", "pip", "install", "--quiet", "-r",
                               "binder/requirements.txt"], cwd=repo, env=env,
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-4000:]
        proc = subprocess.run(["bash", "binder/postBuild"], cwd=repo, env=env,
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]

        modules = {"expnorm"}
        cells = []
        for path in tool.toc_notebooks():
            nb = nbformat.read(path, as_version=4)
            modules.update(tool.chapter_imports(nb))
            cells.append(next(c for c in nb.cells if c.cell_type == "code").source)
        code = "import importlib\n" + "".join(
            f"importlib.import_module({m!r})\n" for m in sorted(modules))
        code += "import expnorm, pathlib; print(pathlib.Path(expnorm.__file__).resolve())\n"
        proc = subprocess.run([py, "-c", code], cwd=repo / "book", env=env, capture_output=True,
                              text=True)
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert str(venv) in proc.stdout, f"expnorm not installed in the Binder venv: {proc.stdout}"
        for source in cells:  # the set-up cells have nothing to do in Binder's environment
            proc = subprocess.run([py, "-c", source], cwd=repo / "book", env=env,
                                  capture_output=True, text=True)
            assert proc.returncode == 0 and proc.stdout == "", proc.stdout + proc.stderr
        assert (repo / "benchmarks" / "results.json").is_file()  # chapter 7 reads it from book/
        with capsys.disabled():
            print(f"\n  Binder environment: imported {', '.join(sorted(modules))}")
