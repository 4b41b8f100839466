"""Insert (or update) the set-up cell: the first code cell of every chapter notebook.

    python tools/add_setup_cell.py            # every notebook of the table of contents
    python tools/add_setup_cell.py --check    # exit 1 if a notebook's set-up cell is missing or stale
    python tools/add_setup_cell.py book/06_masks_infinities_nan.ipynb

The set-up cell makes a chapter run outside the repository (a notebook downloaded from the
site, Colab, Binder). Where expnorm at this version and every module the chapter imports are
installed (as in the repository's environment) it does nothing and prints nothing, so the
stored outputs, and strict nbval, stay as they are. Otherwise it installs, with the kernel's
own pip, ``expnorm[book] @ <site>/_static/dist/expnorm-<version>-py3-none-any.whl`` (the
wheel `make book` publishes with the site; ``<site>`` is ``html.baseurl`` of _config.yml,
or the environment variable WHY_SOFTMAX_SITE), plus the ``torch`` extra for a chapter that
imports torch when torch is missing. ``book`` pins exactly the versions of requirements.txt.

The script is idempotent: the cell is found by its id (``why-softmax-setup``), its source is
regenerated from the chapter's imports, the version in pyproject.toml and the base URL, and
it is moved to the front if needed. A newly inserted cell gets execution count 1 and the
later counts shift by one (the stored outputs do not change: the cell prints nothing here),
so a notebook does not need re-executing. The cell is tagged ``hide-input`` (collapsed on
the site, visible in the notebook).
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import tomllib
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
CELL_ID = "why-softmax-setup"
TAGS = ["hide-input", CELL_ID]
ENV_VAR = "WHY_SOFTMAX_SITE"
# Modules a chapter may import that come with the kernel itself (no install needed).
KERNEL_MODULES = {"IPython", "ipykernel", "traitlets"}


def version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def site_url() -> str:
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["html"]["baseurl"]
    return url if url.endswith("/") else url + "/"


def toc_notebooks() -> list[Path]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for e in entries or []:
            if "file" in e:
                files.append(e["file"])
            for key in ("sections", "chapters"):
                walk(e.get(key))

    walk(toc.get("chapters"))
    for part in toc.get("parts", []) or []:
        walk(part.get("chapters"))
    out = []
    for f in files:
        p = ROOT / Path(f).with_suffix(".ipynb")
        if p.exists():
            out.append(p)
    return out


def is_setup(cell) -> bool:
    return cell.get("id") == CELL_ID or CELL_ID in cell.get("metadata", {}).get("tags", [])


def chapter_imports(nb) -> list[str]:
    """Top-level third-party modules imported by the chapter's code cells (not the set-up)."""
    mods: set[str] = set()
    for cell in nb.cells:
        if cell.cell_type != "code" or is_setup(cell):
            continue
        # IPython magics and shell escapes are not Python: blank them out.
        src = "\n".join("" if l.lstrip().startswith(("%", "!")) else l
                        for l in cell.source.splitlines())
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.Import):
                mods.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods.add(node.module.split(".")[0])
    mods -= set(sys.stdlib_module_names) | KERNEL_MODULES | {"expnorm"}
    return sorted(mods)


TEMPLATE = '''\
# Set-up: lets this notebook run outside the book's repository (downloaded, Colab, Binder).
# Where expnorm {version} and this chapter's imports are installed, it does nothing. Otherwise
# it installs them: expnorm from the book's site with the packages the chapters use, pinned
# (`expnorm[book]`). The environment variable {env} overrides the site's URL.
def _set_up(version, modules, extras, site="{site}"):
    import importlib, importlib.metadata as md, importlib.util, os, subprocess, sys
    try:
        ready = md.version("expnorm") == version
    except md.PackageNotFoundError:
        ready = False
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if ready and not missing:
        return
    extras = [e for e in extras if e != "torch" or "torch" in missing]
    site = os.environ.get("{env}", site).rstrip("/")
    wheel = f"{{site}}/_static/dist/expnorm-{{version}}-py3-none-any.whl"
    before = {{d.metadata["Name"]: d.version for d in md.distributions()}}
    print(f"Installing expnorm[{{','.join(extras)}}] from {{wheel}} ...", flush=True)
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    proc = subprocess.run([*pip, f"expnorm[{{','.join(extras)}}] @ {{wheel}}"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"pip install failed:\\n{{proc.stdout}}\\n{{proc.stderr}}")
    importlib.invalidate_caches()
    after = {{d.metadata["Name"]: d.version for d in md.distributions()}}
    changed = {{n for n, v in after.items() if before.get(n, v) != v}}
    stale = sorted({{m.split(".")[0] for m in sys.modules}} & set(modules)
                   & {{m for m, ds in md.packages_distributions().items() if set(ds) & changed}})
    if stale:  # e.g. a kernel that had imported another numpy before this cell
        print("Restart the kernel and run the notebook again: pip replaced the already",
              "imported", ", ".join(stale))
    else:
        print(f"Installed expnorm {{md.version('expnorm')}}.")


_set_up("{version}", {modules!r}, {extras!r})
del _set_up
'''


def setup_source(modules: list[str], ver: str | None = None, site: str | None = None) -> str:
    extras = ["book"] + (["torch"] if "torch" in modules else [])
    return TEMPLATE.format(version=ver or version(), site=site or site_url(), env=ENV_VAR,
                           modules=tuple(modules), extras=tuple(extras))


def apply(path: Path, check: bool = False) -> bool:
    """Put the set-up cell in place; return True if the notebook changed (or would)."""
    nb = nbformat.read(path, as_version=4)
    source = setup_source(chapter_imports(nb))
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    existing = [i for i in code if is_setup(nb.cells[i])]
    changed = False
    if existing:
        i = existing[0]
        cell = nb.cells[i]
        if cell.source != source:
            cell.source, changed = source, True
        tags = cell.metadata.get("tags", [])
        if tags[: len(TAGS)] != TAGS or cell.get("id") != CELL_ID:
            cell.metadata["tags"] = TAGS + [t for t in tags if t not in TAGS]
            cell["id"] = CELL_ID
            changed = True
        if code[0] != i:  # move it in front of the first code cell
            nb.cells.insert(code[0], nb.cells.pop(i))
            changed = True
    else:
        cell = nbformat.v4.new_code_cell(source, metadata={"tags": list(TAGS)})
        cell["id"] = CELL_ID
        counts = [nb.cells[i].get("execution_count") for i in code]
        executed = bool(code) and None not in counts
        if executed:
            cell.execution_count = 1
            for i in code:
                c = nb.cells[i]
                c.execution_count += 1
                for out in c.get("outputs", []):
                    if out.get("execution_count") is not None:
                        out["execution_count"] += 1
        nb.cells.insert(code[0] if code else len(nb.cells), cell)
        changed = True
    if changed and not check:
        nbformat.validate(nb)
        nbformat.write(nb, path)
    return changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", type=Path)
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    args = ap.parse_args(argv)
    paths = args.notebooks or toc_notebooks()
    stale = [p for p in paths if apply(p, check=args.check)]
    for p in stale:
        print(("stale: " if args.check else "updated: ") + str(p))
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
