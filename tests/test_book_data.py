"""expnorm.book_data: the chapters' measured data is found in a clone, and from the site outside one."""

import http.server
import json
import threading
from pathlib import Path

import pytest

from expnorm import book_data

ROOT = Path(__file__).resolve().parents[1]


def test_found_in_the_clone(monkeypatch):
    monkeypatch.chdir(ROOT / "book")
    got = book_data.load_benchmark("results.json")
    assert got == json.loads((ROOT / "benchmarks" / "results.json").read_text())


def test_rejects_paths():
    with pytest.raises(ValueError):
        book_data.load_benchmark("../pyproject.toml")
    with pytest.raises(ValueError):
        book_data.load_benchmark("sub/results.json")


def test_falls_back_to_the_site(tmp_path, monkeypatch):
    """Outside a clone (no local copy), the site's published copy is read over HTTP."""
    served = tmp_path / "site" / "_static" / "dist" / "benchmarks"
    served.mkdir(parents=True)
    (served / "only_on_site.json").write_text(json.dumps({"from": "site"}))
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(
        *a, directory=str(tmp_path / "site"), **k)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("WHY_SOFTMAX_SITE", f"http://127.0.0.1:{server.server_port}/")
        monkeypatch.chdir(tmp_path)
        assert book_data.load_benchmark("only_on_site.json") == {"from": "site"}
        with pytest.raises(FileNotFoundError, match="could not be read"):
            book_data.load_benchmark("missing_everywhere.json")
    finally:
        server.shutdown()
