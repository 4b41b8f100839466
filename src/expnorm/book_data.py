"""The measured data the book's chapters read (``benchmarks/*.json``), wherever a chapter runs.

The chapters never time anything themselves: their speed and memory numbers come from the files
that ``make bench`` writes into the repository's ``benchmarks/`` folder. A chapter runs in a
clone (next to that folder), from an editable install of expnorm, or downloaded from the site
or opened in Colab, where neither exists: then the copy that the site publishes next to
expnorm's wheel (``<site>/_static/dist/benchmarks/<name>``) is used. The site's address is the
``WHY_SOFTMAX_SITE`` environment variable, else the book's published address.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

SITE = "https://why-softmax.github.io/why-softmax/"


def benchmark_candidates(name: str) -> list[Path]:
    """Local places where ``benchmarks/<name>`` may be, in the order they are tried."""
    return [
        Path.cwd().parent / "benchmarks" / name,  # a chapter run from the book/ folder
        Path.cwd() / "benchmarks" / name,  # run from the repository's root
        Path(__file__).resolve().parents[2] / "benchmarks" / name,  # an editable install
    ]


def load_benchmark(name: str = "results.json") -> dict:
    """The JSON file ``benchmarks/<name>`` of the repository, or the site's published copy.

    Raises:
      ValueError: ``name`` is not a plain file name.
      FileNotFoundError: no local copy, and the site could not be reached (with the reason).
    """
    if Path(name).name != name or not name.endswith(".json"):
        raise ValueError(f"name must be a file name in benchmarks/ ending in .json, got {name!r}")
    for path in benchmark_candidates(name):
        if path.is_file():
            return json.loads(path.read_text())
    from urllib.error import URLError
    from urllib.request import urlopen

    url = os.environ.get("WHY_SOFTMAX_SITE", SITE).rstrip("/") + f"/_static/dist/benchmarks/{name}"
    try:
        with urlopen(url, timeout=60) as f:
            return json.load(f)
    except (URLError, OSError) as err:
        raise FileNotFoundError(
            f"benchmarks/{name} is not next to this notebook nor in an editable install of "
            f"expnorm, and {url} could not be read ({err}); run `make bench` in a clone of the "
            "repository, or set WHY_SOFTMAX_SITE to the book's site") from err


__all__ = ["load_benchmark", "benchmark_candidates", "SITE"]
