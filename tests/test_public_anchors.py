"""Citations never break: every page URL and label anchor of a released version still exists.

tests/data/public-anchors.txt lists the public surface of every released version (written by
tools/public_anchors.py; releasing a version appends to it). A build may add pages and
anchors, never drop or rename one: a link or citation to `<page>.html#<label>` of an older
version must keep landing on its target.
"""

import importlib.util
import re
import shutil

import pytest

from conftest import ROOT

spec = importlib.util.spec_from_file_location("public_anchors", ROOT / "tools" / "public_anchors.py")
public_anchors = importlib.util.module_from_spec(spec)
spec.loader.exec_module(public_anchors)


def test_manifest_is_append_only_text():
    text = public_anchors.MANIFEST.read_text(encoding="utf-8")
    entries = public_anchors.read_manifest()
    assert entries, "the manifest is empty"
    assert len(entries) == len(set(entries)), "an entry is listed twice"
    for e in entries:
        assert re.fullmatch(r"[\w./-]+\.html(#[\w.:-]+)?", e), f"not a page or anchor: {e!r}"
    assert re.findall(r"^# version (\S+)$", text, re.M), "no '# version' line"


def test_build_keeps_every_page_and_anchor(built_site):
    found = public_anchors.surface(built_site)
    missing = [e for e in public_anchors.read_manifest() if e not in found]
    assert not missing, (f"{len(missing)} public URLs or anchors dropped or renamed (restore "
                         "the label; never rename one):\n  " + "\n  ".join(missing[:40]))


def test_surface_covers_each_kind_of_anchor(built_site):
    found = public_anchors.surface(built_site)
    for kind in ("fig-", "-ex-"):
        assert any(kind in e for e in found), f"no {kind} anchor found"
    proofs = [e for e in found if re.search(r"#ch\d-(?!ex-)", e)]
    assert proofs, "no theorem or section label found"
    assert not [e for e in found if "#id" in e or e.endswith("#proof")], "generated ids listed"


def test_a_dropped_label_is_detected(built_site, tmp_path):
    """The check can fail: remove one label from a copy of a page and it is missing."""
    entry = next(e for e in public_anchors.read_manifest() if "#fig-" in e)
    page, anchor = entry.split("#")
    shutil.copy(built_site / "objects.inv", tmp_path / "objects.inv")
    (tmp_path / page).parent.mkdir(parents=True)
    html = (built_site / page).read_text(encoding="utf-8")
    assert entry in public_anchors.surface(built_site)
    (tmp_path / page).write_text(html.replace(f'id="{anchor}"', 'id="renamed"'), encoding="utf-8")
    found = public_anchors.surface(tmp_path)
    assert page in found and entry not in found
