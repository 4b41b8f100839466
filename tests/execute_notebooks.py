"""Execute notebooks in place, the one canonical way (``make notebooks``).

Each notebook runs top to bottom in a fresh kernel of the current environment (the kernel
nbval uses with ``--nbval-current-env``), with the working directory set to the notebook's
folder, so execution counts run 1..N and outputs match what ``pytest --nbval`` produces.
"""

import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def execute(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=1800,
        record_timing=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    nbformat.write(nb, path)


def main(argv: list[str]) -> int:
    if os.environ.get("JAX_PLATFORMS") != "cpu":
        print("run through `make notebooks` (it sets JAX_PLATFORMS=cpu)", file=sys.stderr)
        return 2
    targets = [Path(a) for a in argv] or [Path("book")]
    paths = []
    for t in targets:
        paths += sorted(t.glob("*.ipynb")) if t.is_dir() else [t]
    for p in paths:
        print(f"executing {p}", flush=True)
        execute(p)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
