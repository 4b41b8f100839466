"""Explorable figures for the book's website: Vega-Lite charts with sliders, values from expnorm.

Each figure is an :class:`Explorable`: a Vega-Lite specification whose data are *precomputed
frames* (one row per slider position, every number computed here by expnorm), plus a static PNG
of the default position (rendered by ``vl-convert``, no browser, no network) for the PDF and for
readers without JavaScript. Its rich display carries both:

- ``text/html``: a ``<figure>``-ready block holding the PNG (shown until the chart is drawn) and
  the specification as JSON; the site's one vendored script (``book/_ext/explorable.py``) draws
  every such block with vega-embed. No JavaScript is inlined in the page and nothing is fetched
  from the web.
- ``image/png``: the static version, which MyST-NB's LaTeX builder picks (it never picks HTML).

The sliders are Vega-Lite parameters bound to ``<input type="range">`` elements: labelled and
operable with the keyboard (arrow keys, Home, End). The browser only looks frames up: it never
computes a probability.

In a chapter, one hidden line glues a figure, and a ``{glue:figure}`` block places it with its
caption and label::

    from expnorm import explorable; explorable.temperature_figure().glue()
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field

import numpy as np

from .alternatives import entmax15, sparsemax
from .online import online_identity, online_logsumexp, online_state, online_update
from .softmax import softmax
from .teaching import linear_normalize

__all__ = [
    "Explorable",
    "alternatives_figure",
    "online_figure",
    "simplex_figure",
    "temperature_figure",
    "FIGURES",
]

SCHEMA = "https://vega.github.io/schema/vega-lite/v6.json"
DIGITS = 4  # significant digits kept in the frames (the charts show 3 decimals)
WIDTH = 520


def _r(x: float) -> float | None:
    """A float for the JSON frames: ``DIGITS`` significant digits (so a tiny probability stays
    positive and only an exact 0 is 0), ``None`` for inf or NaN."""
    x = float(x)
    return float(f"{x:.{DIGITS}g}") if math.isfinite(x) else None


def _grid(lo: float, hi: float, step: float) -> np.ndarray:
    n = int(round((hi - lo) / step))
    return np.round(lo + step * np.arange(n + 1), 10)


def _slider(name: str, label: str, lo: float, hi: float, step: float, value: float) -> dict:
    return {"name": name, "value": value,
            "bind": {"input": "range", "min": lo, "max": hi, "step": step, "name": label}}


def _index_expr(param: str, lo: float, step: float) -> str:
    """The Vega expression for a slider's position (0, 1, ...) on its grid."""
    return f"round(({param} - ({lo})) / {step})"


@dataclass(frozen=True)
class Explorable:
    """An interactive figure: Vega-Lite spec with precomputed frames + static PNG fallback."""

    name: str  # the figure's label (MyST ``:name:``), also its glue key
    spec: dict
    alt: str
    caption: str
    png: bytes = field(repr=False, default=b"")

    def static_png(self) -> bytes:
        return self.png

    def html(self) -> str:
        spec = json.dumps(self.spec, separators=(",", ":"), sort_keys=True, allow_nan=False)
        spec = spec.replace("</", "<\\/")  # never close the <script> early
        png = base64.b64encode(self.png).decode("ascii")
        alt = html.escape(self.alt, quote=True)
        return (
            f'<div class="explorable" id="explorable-{self.name}" data-explorable="{self.name}" '
            f'role="group" aria-label="{alt}" style="overflow-x: auto">'
            f'<div class="explorable-view">'
            f'<img class="explorable-fallback" src="data:image/png;base64,{png}" alt="{alt}">'
            f"</div>"
            f'<script type="application/json" class="explorable-spec">{spec}</script>'
            f"</div>"
        )

    def _repr_mimebundle_(self, include=None, exclude=None):
        return {
            "text/html": self.html(),
            "image/png": base64.b64encode(self.png).decode("ascii"),
            "text/plain": f"<explorable figure {self.name}>",
        }

    def glue(self, name: str | None = None) -> None:
        """Glue the figure (MyST-NB) under ``name`` (default: its label), displaying nothing."""
        from myst_nb import glue

        glue(name or self.name, self, display=False)


def _finish(name: str, spec: dict, alt: str, caption: str) -> Explorable:
    spec = {"$schema": SCHEMA, "description": alt, "config": CONFIG, **spec}
    import vl_convert as vlc

    png = vlc.vegalite_to_png(spec, scale=1.5)
    return Explorable(name=name, spec=spec, alt=alt, caption=caption, png=bytes(png))


CONFIG = {
    "font": "sans-serif",
    "view": {"stroke": None},
    "axis": {"labelFontSize": 12, "titleFontSize": 13},
    "title": {"fontSize": 14},
}
BLUE, ORANGE, GREY = "#1f5fa8", "#b35900", "#6b6b6b"  # >= 4.5:1 on white


# --------------------------------------------------------------------------------------------
# (1) softmax(z / T): temperature and scores
# --------------------------------------------------------------------------------------------
T_LOG = (-1.5, 1.5, 0.1)  # slider over log10 T
Z_EDIT = (-2.0, 2.0, 1.0)  # sliders for z2, z3, z4 (z1 = 0: softmax ignores a common shift)
TEMP_DEFAULT = {"z2": 1.0, "z3": 2.0, "z4": -1.0, "lt": 0.0}


def temperature_frames():
    """Rows ``{"f": frame, "p": softmax(z / T)}`` for every (z2, z3, z4, log10 T) on the grids."""
    zs, ts = _grid(*Z_EDIT), _grid(*T_LOG)
    grid = np.array(np.meshgrid(zs, zs, zs, indexing="ij")).reshape(3, -1).T  # (125, 3)
    z = np.concatenate([np.zeros((len(grid), 1)), grid], axis=1)  # (125, 4)
    temps = 10.0 ** ts
    p = np.asarray(softmax(z[:, None, :] / temps[None, :, None], axis=-1), dtype=np.float64)
    p = p.reshape(-1, 4)
    return [{"f": i, "p": [_r(v) for v in row]} for i, row in enumerate(p)]


def temperature_frame_index(z2: float, z3: float, z4: float, log10_t: float) -> int:
    lo, _, step = Z_EDIT
    n_z, n_t = len(_grid(*Z_EDIT)), len(_grid(*T_LOG))
    iz = [int(round((v - lo) / step)) for v in (z2, z3, z4)]
    it = int(round((log10_t - T_LOG[0]) / T_LOG[2]))
    return ((iz[0] * n_z + iz[1]) * n_z + iz[2]) * n_t + it


def temperature_figure(name: str = "fig-ch4-explorable-temperature") -> Explorable:
    n_z, n_t = len(_grid(*Z_EDIT)), len(_grid(*T_LOG))
    iz = [_index_expr(p, Z_EDIT[0], Z_EDIT[2]) for p in ("z2", "z3", "z4")]
    it = _index_expr("lt", T_LOG[0], T_LOG[2])
    frame = f"((({iz[0]}) * {n_z} + ({iz[1]})) * {n_z} + ({iz[2]})) * {n_t} + ({it})"
    params = [
        _slider("lt", "temperature, log10 T", *T_LOG, TEMP_DEFAULT["lt"]),
        _slider("z2", "score z2", *Z_EDIT, TEMP_DEFAULT["z2"]),
        _slider("z3", "score z3", *Z_EDIT, TEMP_DEFAULT["z3"]),
        _slider("z4", "score z4", *Z_EDIT, TEMP_DEFAULT["z4"]),
    ]
    zexpr = "datum.k == 1 ? 0 : datum.k == 2 ? z2 : datum.k == 3 ? z3 : z4"
    spec = {
        "width": WIDTH, "height": 260,
        "params": params,
        "title": {"text": {"expr": "'softmax(z / T) at T = ' + format(pow(10, lt), '.3~g')"}},
        "data": {"values": temperature_frames()},
        "transform": [
            {"filter": f"datum.f == {frame}"},
            {"flatten": ["p"]},
            {"window": [{"op": "row_number", "as": "k"}]},
            {"calculate": zexpr, "as": "z"},
            {"calculate": "'class ' + datum.k + ' (z = ' + format(datum.z, '+.0f') + ')'",
             "as": "cls"},
            {"calculate": "format(datum.p, '.3f')", "as": "label"},
        ],
        "encoding": {
            "x": {"field": "cls", "type": "nominal", "title": None, "sort": None,
                  "axis": {"labelAngle": 0}},
            "y": {"field": "p", "type": "quantitative", "title": "probability",
                  "scale": {"domain": [0, 1]}},
        },
        "layer": [
            {"mark": {"type": "bar", "color": BLUE}},
            {"mark": {"type": "text", "dy": -8, "fontSize": 13},
             "encoding": {"text": {"field": "label"}}},
        ],
    }
    alt = ("Interactive bar chart of softmax(z / T) for four classes with scores z1 = 0 and z2, "
           "z3, z4 set by sliders (-2 to 2), and a temperature slider from T = 0.03 to T = 30. "
           "At small T the bar of the largest score approaches 1 (argmax); at large T all four "
           "bars approach 0.25 (uniform). Each bar is labelled with its probability.")
    caption = ("Softmax under temperature. On the website, sliders set the temperature (log10 T "
               "from -1.5 to 1.5) and the scores z2, z3, z4 (z1 stays 0, since softmax ignores "
               "a common shift); the printed book shows the sliders' starting position. Every "
               "probability drawn was computed by expnorm.softmax for that slider position.")
    return _finish(name, spec, alt, caption)


# --------------------------------------------------------------------------------------------
# (2) the K = 3 simplex: softmax's image vs linear normalization's
# --------------------------------------------------------------------------------------------
Z_SIMPLEX = (-2.0, 2.0, 0.5)
SIMPLEX_DEFAULT = {"z1": 1.0, "z2": 0.5, "z3": -0.5}
SQ3 = math.sqrt(3.0) / 2.0


def simplex_frames():
    """Rows ``{"f", "m": "softmax" | "linear", "p": [p1, p2, p3]}`` for every score triple."""
    zs = _grid(*Z_SIMPLEX)
    z = np.array(np.meshgrid(zs, zs, zs, indexing="ij")).reshape(3, -1).T
    sm = np.asarray(softmax(z, axis=-1), dtype=np.float64)
    with np.errstate(all="ignore"):
        lin = np.asarray(linear_normalize(z, axis=-1), dtype=np.float64)
    rows = []
    for i in range(len(z)):
        rows.append({"f": i, "m": "softmax", "p": [_r(v) for v in sm[i]]})
        ok = bool(np.all(np.isfinite(lin[i])))
        rows.append({"f": i, "m": "linear", "p": [_r(v) for v in lin[i]] if ok else None})
    return rows


def simplex_frame_index(z1: float, z2: float, z3: float) -> int:
    lo, _, step = Z_SIMPLEX
    n = len(_grid(*Z_SIMPLEX))
    i = [int(round((v - lo) / step)) for v in (z1, z2, z3)]
    return (i[0] * n + i[1]) * n + i[2]


def simplex_figure(name: str = "fig-ch2-explorable-simplex") -> Explorable:
    n = len(_grid(*Z_SIMPLEX))
    iz = [_index_expr(p, Z_SIMPLEX[0], Z_SIMPLEX[2]) for p in ("z1", "z2", "z3")]
    frame = f"(({iz[0]}) * {n} + ({iz[1]})) * {n} + ({iz[2]})"
    params = [_slider(k, f"score {k}", *Z_SIMPLEX, v) for k, v in SIMPLEX_DEFAULT.items()]
    x_dom, y_dom = [-1.0, 2.0], [-0.9, 1.6]
    corners = [{"x": 0.0, "y": 0.0, "v": "e1 = (1, 0, 0)", "o": 0},
               {"x": 1.0, "y": 0.0, "v": "e2 = (0, 1, 0)", "o": 1},
               {"x": 0.5, "y": SQ3, "v": "e3 = (0, 0, 1)", "o": 2},
               {"x": 0.0, "y": 0.0, "v": "", "o": 3}]
    enc_xy = {"x": {"field": "x", "type": "quantitative", "scale": {"domain": x_dom},
                    "axis": None},
              "y": {"field": "y", "type": "quantitative", "scale": {"domain": y_dom},
                    "axis": None}}
    points = {
        "data": {"values": simplex_frames()},
        "transform": [
            {"filter": f"datum.f == {frame}"},
            {"calculate": "datum.p == null ? null : datum.p[1] + 0.5 * datum.p[2]", "as": "x"},
            {"calculate": f"datum.p == null ? null : {SQ3!r} * datum.p[2]", "as": "y"},
            {"calculate": "datum.p == null ? (datum.m + '(z): undefined (the scores sum to 0)')"
                          " : datum.m + '(z) = (' + format(datum.p[0], '.3f') + ', '"
                          " + format(datum.p[1], '.3f') + ', ' + format(datum.p[2], '.3f') + ')'",
             "as": "label"},
            {"calculate": "datum.m == 'softmax' ? 1.5 : 1.38", "as": "ty"},
        ],
    }
    color = {"field": "m", "type": "nominal", "title": None,
             "scale": {"domain": ["softmax", "linear"], "range": [BLUE, ORANGE]}}
    spec = {
        "width": 440, "height": 380,
        "params": params,
        "title": {"text": {"expr": "'scores z = (' + z1 + ', ' + z2 + ', ' + z3 + ')'"}},
        "layer": [
            {"data": {"values": corners}, "mark": {"type": "line", "color": GREY},
             "encoding": {**enc_xy, "order": {"field": "o"}}},
            {"data": {"values": [{**c, "y": c["y"] + (0.09 if c["o"] == 2 else -0.09)}
                                 for c in corners[:3]]},
             "mark": {"type": "text", "color": GREY, "fontSize": 12},
             "encoding": {**enc_xy, "text": {"field": "v"}}},
            {**points, "mark": {"type": "point", "filled": True, "size": 160, "clip": True},
             "encoding": {**enc_xy, "color": color,
                          "shape": {"field": "m", "type": "nominal", "title": None,
                                    "scale": {"domain": ["softmax", "linear"],
                                              "range": ["circle", "square"]}}}},
            {**points, "mark": {"type": "text", "align": "left", "fontSize": 13},
             "encoding": {"x": {"datum": -0.95, "type": "quantitative",
                                "scale": {"domain": x_dom}},
                          "y": {"field": "ty", "type": "quantitative",
                                "scale": {"domain": y_dom}},
                          "text": {"field": "label"}, "color": color}},
        ],
    }
    alt = ("Interactive plot of the probability simplex for three classes, a triangle with "
           "corners e1, e2, e3, and three sliders for the scores z1, z2, z3 (-2 to 2). A blue "
           "circle marks softmax(z), which stays strictly inside the triangle; an orange square "
           "marks the linear normalization z / sum(z), which leaves the triangle as soon as a "
           "score is negative and is undefined when the scores sum to 0. Both values are "
           "printed above the plot.")
    caption = ("The images of softmax and of linear normalization on the K = 3 simplex. On the "
               "website, sliders set the scores (the printed book shows their starting "
               "position). Softmax never leaves the open triangle; "
               "z / sum(z) does whenever a score is negative, and jumps when the sum crosses 0. "
               "Both points were computed by expnorm (softmax, linear_normalize) for every "
               "slider position.")
    return _finish(name, spec, alt, caption)


# --------------------------------------------------------------------------------------------
# (3) softmax, sparsemax, 1.5-entmax under a temperature
# --------------------------------------------------------------------------------------------
ALT_SCORES = (1.6, 1.1, 0.5, -0.2, -1.0)
ALT_T_LOG = (-1.0, 1.0, 0.1)
ALT_DEFAULT = 0.0
METHODS = ("softmax", "sparsemax", "1.5-entmax")


def alternatives_frames():
    """Rows ``{"f": T position, "m": method, "p": [...]}``."""
    ts = 10.0 ** _grid(*ALT_T_LOG)
    z = np.asarray(ALT_SCORES)[None, :] / ts[:, None]
    out = {"softmax": softmax(z, axis=-1), "sparsemax": sparsemax(z, axis=-1),
           "1.5-entmax": entmax15(z, axis=-1)}
    rows = []
    for i in range(len(ts)):
        for m in METHODS:
            p = np.asarray(out[m], dtype=np.float64)[i]
            rows.append({"f": i, "m": m, "p": [_r(v) for v in p]})  # exact zeros stay 0
    return rows


def alternatives_figure(name: str = "fig-ch4-explorable-alternatives") -> Explorable:
    it = _index_expr("lt", ALT_T_LOG[0], ALT_T_LOG[2])
    spec = {
        "params": [_slider("lt", "temperature, log10 T", *ALT_T_LOG, ALT_DEFAULT)],
        "title": {"text": {"expr": "'scores z / T at T = ' + format(pow(10, lt), '.3~g')"}},
        "data": {"values": alternatives_frames()},
        "transform": [
            {"filter": f"datum.f == {it}"},
            {"flatten": ["p"]},
            {"window": [{"op": "row_number", "as": "k"}], "groupby": ["m"]},
            {"calculate": "datum.p == 0 ? '0' : format(datum.p, '.3f')", "as": "label"},
            {"calculate": "datum.p == 0 ? 'exactly 0' : 'positive'", "as": "support"},
        ],
        "facet": {"column": {"field": "m", "type": "nominal", "title": None,
                             "sort": list(METHODS), "header": {"labelFontSize": 14}}},
        "spec": {
            "width": 170, "height": 240,
            "encoding": {
                "x": {"field": "k", "type": "ordinal", "title": "class",
                      "axis": {"labelAngle": 0}},
                "y": {"field": "p", "type": "quantitative", "title": "probability",
                      "scale": {"domain": [0, 1]}},
            },
            "layer": [
                {"mark": {"type": "bar", "color": BLUE}},
                {"mark": {"type": "text", "dy": -8, "fontSize": 11},
                 "encoding": {"text": {"field": "label"},
                              "color": {"field": "support", "type": "nominal", "title": None,
                                        "scale": {"domain": ["positive", "exactly 0"],
                                                  "range": ["#222222", ORANGE]}}}},
            ],
        },
    }
    alt = ("Interactive figure: three bar charts side by side, softmax, sparsemax and 1.5-entmax "
           f"of the five scores {', '.join(map(str, ALT_SCORES))} divided by a temperature T set "
           "by a slider (T = 0.1 to 10). Softmax keeps every bar positive; sparsemax and "
           "1.5-entmax set the smallest classes to exactly 0 (labelled 0 in orange), fewer of "
           "them as T grows.")
    caption = ("Softmax, sparsemax and 1.5-entmax on the same scores under a temperature (a "
               "slider on the website; the printed book shows T = 1). A label 0 (orange) is an "
               "exact zero. Every value drawn was computed by expnorm (softmax, sparsemax, "
               "entmax15) for that slider position.")
    return _finish(name, spec, alt, caption)


# --------------------------------------------------------------------------------------------
# (4) the online normalizer, chunk by chunk
# --------------------------------------------------------------------------------------------
ONLINE_X = (0.3, -1.2, 0.8, 2.1, -0.4, 1.0, 3.2, 0.1, -2.0, 1.7, 2.6, -0.7)
CHUNK = 3


def online_frames():
    """Rows ``{"s": chunks seen, "m", "d": sum exp(x - m) over them, "lse"}`` for s = 0..n."""
    x = np.asarray(ONLINE_X, dtype=np.float64)
    state = online_identity()
    rows = [{"s": 0, "m": None, "d": 0.0, "lse": None, "scale": None}]
    for s, start in enumerate(range(0, len(x), CHUNK), start=1):
        old_m = float(state.m)
        state = online_update(state, x[start:start + CHUNK])
        m, t = float(state.m), float(state.t)
        scale = math.exp(old_m - m) if math.isfinite(old_m) else None
        rows.append({"s": s, "m": _r(m), "d": _r(1.0 + t),
                     "lse": _r(float(online_logsumexp(state))), "scale": _r(scale)
                     if scale is not None else None})
    return rows


def online_figure(name: str = "fig-ch7-explorable-online") -> Explorable:
    x = np.asarray(ONLINE_X, dtype=np.float64)
    n_chunks = len(x) // CHUNK
    total = float(online_logsumexp(online_state(x)))
    bars = [{"i": i + 1, "x": float(v), "c": i // CHUNK + 1} for i, v in enumerate(x)]
    status = ("datum.c <= step - 1 ? 'folded in' : datum.c == step ? 'this chunk' "
              ": 'not read yet'")
    label = ("datum.s == 0 ? 'empty state: m = -inf, d = 0' : 'after chunk ' + datum.s + ': "
             "m = ' + format(datum.m, '.3f') + ',  d = sum exp(x - m) = ' + format(datum.d, "
             "'.4f') + ',  m + log d = ' + format(datum.lse, '.4f') + (datum.scale == null ? '' "
             ": ',  old d rescaled by exp(m_old - m) = ' + format(datum.scale, '.4f'))")
    spec = {
        "params": [{"name": "step", "value": 2,
                    "bind": {"input": "range", "min": 0, "max": n_chunks, "step": 1,
                             "name": "chunks read"}}],
        "title": {"text": f"online log-sum-exp, chunks of {CHUNK}; the whole row's "
                          f"log-sum-exp is {total:.4f}"},
        "vconcat": [
            {"width": WIDTH, "height": 220,
             "layer": [
                 {"data": {"values": bars},
                  "transform": [{"calculate": status, "as": "status"}],
                  "mark": {"type": "bar"},
                  "encoding": {
                      "x": {"field": "i", "type": "ordinal", "title": "entry",
                            "axis": {"labelAngle": 0}},
                      "y": {"field": "x", "type": "quantitative", "title": "score x"},
                      "color": {"field": "status", "type": "nominal", "title": None,
                                "scale": {"domain": ["folded in", "this chunk",
                                                     "not read yet"],
                                          "range": [BLUE, ORANGE, "#c8c8c8"]}}}},
                 {"data": {"values": online_frames()},
                  "transform": [{"filter": "datum.s == step && datum.m != null"}],
                  "mark": {"type": "rule", "strokeDash": [6, 3], "color": "#222222"},
                  "encoding": {"y": {"field": "m", "type": "quantitative"}}},
             ]},
            {"width": WIDTH, "height": 20,
             "data": {"values": online_frames()},
             "transform": [{"filter": "datum.s == step"}, {"calculate": label, "as": "label"}],
             "mark": {"type": "text", "align": "left", "x": 0, "y": 10, "fontSize": 13},
             "encoding": {"text": {"field": "label"}}},
        ],
    }
    alt = (f"Interactive figure: a bar chart of {len(x)} scores read in {n_chunks} chunks of "
           f"{CHUNK}, with a slider for the number of chunks read (0 to {n_chunks}). Chunks "
           "already folded into the state are blue, the chunk just read is orange, the others "
           "grey; a dashed line marks the running maximum m. A line of text gives the state "
           "after each chunk: m, d = sum of exp(x - m) so far, the running log-sum-exp m + log d "
           "and the factor by which the old d was rescaled.")
    caption = ("The online normalizer, one chunk at a time (a slider on the website steps "
               "through the chunks; the printed book shows the state after two). The state "
               "(m, d) is updated with each chunk, and the old sum is rescaled only when the "
               "maximum grows. After the last chunk m + log d is the whole row's log-sum-exp. The "
               "states were computed by expnorm.online_update.")
    return _finish(name, spec, alt, caption)


FIGURES = {
    "temperature": temperature_figure,
    "simplex": simplex_figure,
    "alternatives": alternatives_figure,
    "online": online_figure,
}
