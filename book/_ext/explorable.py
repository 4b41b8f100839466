"""Local Sphinx extension: serve the explorable figures' JavaScript from the site itself.

The explorable figures (``expnorm.explorable``) are Vega-Lite specifications embedded in the
pages as JSON; no page carries JavaScript of its own. This extension writes *one* file,
``_static/explorable/explorable.js``: Vega, Vega-Lite and vega-embed as bundled by the pinned
PyPI package ``vl-convert-python`` (``vl_convert.javascript_bundle``, no network), followed by
a few lines that draw every ``.explorable`` block of the page. It is added (as one
``<script type="module">``) only to the pages that hold such a figure, under one URL for the
whole site, so a browser downloads it once and caches it across pages.

The file is written into the output at ``builder-inited`` and is deliberately *not* under
``html_static_path``: Jupyter Book 1 adds a ``<script>`` tag to every page for each .js file
found there.
"""

from __future__ import annotations

from pathlib import Path

from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)

SCRIPT = "explorable/explorable.js"  # relative to _static
MARKER = 'class="explorable"'

# Draws each figure with vega-embed (SVG renderer, no action menu); the static PNG stays in place
# until the chart is drawn, and remains if anything fails.
INIT = r"""
async function drawExplorables() {
  for (const el of document.querySelectorAll('.explorable[data-explorable]')) {
    if (el.dataset.drawn) continue;
    const view = el.querySelector('.explorable-view');
    const source = el.querySelector('script.explorable-spec');
    if (!view || !source) continue;
    const target = document.createElement('div');
    target.className = 'explorable-chart';
    view.appendChild(target);
    try {
      const result = await vegaEmbed(target, JSON.parse(source.textContent),
                                     {renderer: 'svg', actions: false});
      const img = view.querySelector('img.explorable-fallback');
      if (img) img.remove();
      el.explorable = result.view;
      el.dataset.drawn = 'true';
    } catch (err) {
      target.remove();
      console.warn('explorable figure ' + el.dataset.explorable + ': ' + err);
    }
  }
}
if (document.readyState === 'loading') {
  document.addEventListener('DOMContentLoaded', drawExplorables);
} else {
  drawExplorables();
}
"""


def bundle() -> str:
    import vl_convert as vlc

    return vlc.javascript_bundle(INIT)


def write_script(app: Sphinx) -> None:
    if app.builder.format != "html":
        return
    out = Path(app.outdir) / "_static" / SCRIPT
    out.parent.mkdir(parents=True, exist_ok=True)
    text = bundle()
    if not out.exists() or out.read_text(encoding="utf-8") != text:
        out.write_text(text, encoding="utf-8")


def add_script(app: Sphinx, pagename, templatename, context, doctree) -> None:
    if app.builder.format == "html" and MARKER in context.get("body", ""):
        app.add_js_file(SCRIPT, type="module")


def setup(app: Sphinx):
    app.connect("builder-inited", write_script)
    app.connect("html-page-context", add_script)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
