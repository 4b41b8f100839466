"""expnorm.explorable: the frames the explorable figures draw, their specs and their fallbacks.

References are independent of expnorm: softmax and z / sum(z) in float64 NumPy (closed forms),
sparsemax as the Euclidean projection onto the simplex (sort-based, Duchi et al. / Martins &
Astudillo) and 1.5-entmax by bisection on its threshold, both written here in NumPy; the online
states against NumPy's max and a direct sum. The browser side is in test_explorable_site.py.
"""

import base64
import json
import math
import os

import numpy as np
import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from expnorm import explorable as ex  # noqa: E402

# frames keep DIGITS significant digits: relative error <= 5e-4 (plus float32 rounding)
RTOL, ATOL = 6 * 10.0 ** -ex.DIGITS, 1e-7


@pytest.fixture(scope="module")
def figures():
    return {k: f() for k, f in ex.FIGURES.items()}


def np_softmax(z):
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()


def np_sparsemax(z):
    z = np.asarray(z, dtype=np.float64)
    s = np.sort(z)[::-1]
    k = np.arange(1, len(z) + 1)
    cs = np.cumsum(s)
    support = k[1 + k * s > cs].max()
    tau = (cs[support - 1] - 1) / support
    return np.maximum(z - tau, 0.0)


def np_entmax15(z):
    # p_i = max(z_i / 2 - tau, 0)^2, with tau such that sum p = 1 (bisection to 1e-15)
    z = np.asarray(z, dtype=np.float64) / 2.0
    lo, hi = z.max() - 1.0, z.max()
    for _ in range(200):
        tau = 0.5 * (lo + hi)
        if np.sum(np.maximum(z - tau, 0.0) ** 2) > 1.0:
            lo = tau
        else:
            hi = tau
    p = np.maximum(z - 0.5 * (lo + hi), 0.0) ** 2
    return p / p.sum()


def test_temperature_frames_are_softmax_of_z_over_t():
    frames = ex.temperature_frames()
    zs, ts = ex._grid(*ex.Z_EDIT), ex._grid(*ex.T_LOG)
    assert len(frames) == len(zs) ** 3 * len(ts)
    rng = np.random.default_rng(0)
    for _ in range(200):
        z2, z3, z4 = rng.choice(zs, 3)
        lt = rng.choice(ts)
        f = frames[ex.temperature_frame_index(z2, z3, z4, lt)]
        want = np_softmax(np.array([0.0, z2, z3, z4]) / 10.0 ** lt)
        np.testing.assert_allclose(f["p"], want, rtol=RTOL, atol=ATOL)


def test_temperature_limits_argmax_and_uniform():
    frames = ex.temperature_frames()
    cold = frames[ex.temperature_frame_index(1, 2, -1, ex.T_LOG[0])]["p"]
    hot = frames[ex.temperature_frame_index(1, 2, -1, ex.T_LOG[1])]["p"]
    assert cold[2] > 0.999  # T = 0.03: the argmax (z3 = 2) takes nearly all the mass
    assert max(hot) - min(hot) < 0.03  # T = 30: nearly uniform


def test_simplex_frames():
    rows = ex.simplex_frames()
    zs = ex._grid(*ex.Z_SIMPLEX)
    for z1 in zs[::3]:
        for z2 in zs[::2]:
            for z3 in zs:
                i = ex.simplex_frame_index(z1, z2, z3)
                sm, lin = rows[2 * i], rows[2 * i + 1]
                assert (sm["f"], sm["m"], lin["f"], lin["m"]) == (i, "softmax", i, "linear")
                z = np.array([z1, z2, z3])
                np.testing.assert_allclose(sm["p"], np_softmax(z), rtol=RTOL, atol=ATOL)
                assert min(sm["p"]) > 0
                if z.sum() == 0:
                    assert lin["p"] is None
                else:
                    np.testing.assert_allclose(lin["p"], z / z.sum(), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("method,ref", [("softmax", np_softmax), ("sparsemax", np_sparsemax),
                                        ("1.5-entmax", np_entmax15)])
def test_alternatives_frames(method, ref):
    ts = 10.0 ** ex._grid(*ex.ALT_T_LOG)
    rows = [r for r in ex.alternatives_frames() if r["m"] == method]
    assert [r["f"] for r in rows] == list(range(len(ts)))
    for r, t in zip(rows, ts):
        want = ref(np.array(ex.ALT_SCORES) / t)
        np.testing.assert_allclose(r["p"], want, rtol=1e-3, atol=1e-6)
        # exact zeros where the reference has them; no zero where it is clearly positive
        for v, w in zip(r["p"], want):
            assert (v == 0) if w == 0 else (v > 0 or w < 1e-6), (method, t, r["p"], want)


def test_sparse_methods_have_exact_zeros_at_the_default_temperature():
    at_default = [r for r in ex.alternatives_frames()
                  if r["f"] == round((ex.ALT_DEFAULT - ex.ALT_T_LOG[0]) / ex.ALT_T_LOG[2])]
    zeros = {r["m"]: sum(v == 0 for v in r["p"]) for r in at_default}
    assert zeros["softmax"] == 0 and zeros["sparsemax"] >= 2 and zeros["1.5-entmax"] >= 1


def test_online_frames():
    x = np.array(ex.ONLINE_X)
    rows = ex.online_frames()
    assert rows[0]["s"] == 0 and rows[0]["m"] is None
    for r in rows[1:]:
        seen = x[: ex.CHUNK * r["s"]]
        assert r["m"] == pytest.approx(seen.max(), rel=RTOL)
        assert r["d"] == pytest.approx(np.exp(seen - seen.max()).sum(), rel=RTOL)
        assert r["lse"] == pytest.approx(math.log(np.exp(seen).sum()), rel=RTOL)
    assert rows[-1]["lse"] == pytest.approx(math.log(np.exp(x).sum()), rel=RTOL)


def vega_lite_schema():
    import altair as alt
    return alt.vegalite.v6.schema.core.load_schema()


def test_specs_are_valid_vega_lite(figures):
    import jsonschema
    schema = vega_lite_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    for fig in figures.values():
        validator.validate(fig.spec)
    with pytest.raises(jsonschema.ValidationError):  # the check can fail
        validator.validate({**figures["online"].spec, "params": [{"name": 3}]})


def test_sliders_are_labelled_range_inputs(figures):
    for key, fig in figures.items():
        params = fig.spec["params"]
        assert params, key
        for p in params:
            assert p["bind"]["input"] == "range" and p["bind"]["name"], (key, p)


def test_html_block_is_self_contained(figures):
    for fig in figures.values():
        h = fig.html()
        assert f'data-explorable="{fig.name}"' in h and 'class="explorable"' in h
        assert "<script src" not in h and "http://" not in h
        # the only URL is Vega-Lite's $schema, which vega-embed parses and never fetches
        assert h.count("https://") == 1 and ex.SCHEMA in h
        spec = h.split('class="explorable-spec">', 1)[1].rsplit("</script>", 1)[0]
        assert json.loads(spec.replace("<\\/", "</")) == json.loads(json.dumps(fig.spec))
        assert 'alt="' in h and 'aria-label="' in h


def test_static_png_and_builder_choice(figures):
    from myst_nb.core.render import get_mime_priority

    for fig in figures.values():
        bundle = fig._repr_mimebundle_()
        png = base64.b64decode(bundle["image/png"])
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) < 200_000
        w, h = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
        assert 300 < w < 2000 and 100 < h < 1500
        pick = {b: next(m for m in get_mime_priority(b, []) if m in bundle)
                for b in ("latex", "html")}
        assert pick == {"latex": "image/png", "html": "text/html"}
        assert fig.alt and fig.caption and fig.name.startswith("fig-")


def test_glue_stores_both_versions(figures, monkeypatch):
    captured = {}
    import myst_nb

    monkeypatch.setattr(myst_nb, "glue", lambda name, obj, display: captured.update(
        name=name, obj=obj, display=display))
    figures["online"].glue()
    assert captured == {"name": "fig-ch7-explorable-online", "obj": figures["online"],
                        "display": False}
