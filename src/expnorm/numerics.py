r"""High-precision references and ulp errors, to measure expnorm (and anything else) against.

Everything here is independent of expnorm's implementation: the references are computed with
:mod:`mpmath` at ``DPS`` significant decimal digits (60 by default, settable per call or via
:func:`set_dps`), straight from the definitions

.. math::

    \operatorname{LSE}(x) = m + \log \sum_i e^{x_i - m}, \qquad
    \operatorname{softmax}(x)_i = \frac{e^{x_i - m}}{\sum_j e^{x_j - m}}, \qquad
    \operatorname{log\_softmax}(x)_i = (x_i - m) - \log \sum_j e^{x_j - m},

with ``m = max_i x_i`` (the shift only keeps mpmath's numbers of moderate size; at 60 digits
it changes nothing). The inputs are 1-D NumPy arrays of any float dtype (float16, bfloat16,
float32, float64): each element is converted *exactly* (every such value is a float64, and a
float64 is an mpmath number exactly), so the reference is the true value of the function at
the very numbers the library was given.

Special entries follow the limits: ``-inf`` entries contribute ``e^{-inf} = 0``; if a row
holds ``+inf`` entries they share the mass equally (``k`` of them: ``LSE = +inf``, softmax
``1/k`` there and 0 elsewhere, log-softmax ``-log k`` there and ``-inf`` elsewhere); a NaN
makes every result NaN; a row with no entry above ``-inf`` has ``LSE = -inf`` and softmax 0.

Errors are measured in units in the last place (ulp) of the *output* dtype, at the exact
value: :func:`ulp` and :func:`ulp_error`. The accuracy target of expnorm is
``ulp_error <= 1`` for float16, bfloat16 and float32 and ``<= 4`` for float64, on every
output whose exact value is a normal number of the output dtype (:func:`is_normal`).

Cost: about 12 microseconds per element at 50 digits (one ``exp``), so a row of 1e5 entries
takes about a second.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import mpmath
import ml_dtypes
import numpy as np

DPS = 60
"""Default working precision, in significant decimal digits."""

__all__ = [
    "DPS",
    "Table",
    "is_normal",
    "max_ulp_error",
    "precision_bits",
    "ref_cross_entropy_label",
    "ref_cross_entropy_probs",
    "ref_log_softmax",
    "ref_logsumexp",
    "ref_softmax",
    "reference_table",
    "rel_errors",
    "set_dps",
    "ulp",
    "ulp_error",
    "ulp_errors",
]


def set_dps(dps: int) -> None:
    """Set the default working precision (decimal digits) of every ``ref_*`` function."""
    global DPS
    if int(dps) < 20:
        raise ValueError(f"dps must be at least 20 to be a reference, got {dps}")
    DPS = int(dps)


def _dps(dps: int | None) -> int:
    return DPS if dps is None else int(dps)


def _values(row) -> list[float]:
    """The entries of a 1-D array of any float dtype, as Python floats (exact conversion)."""
    a = np.asarray(row)
    if a.ndim != 1:
        raise ValueError(f"expected a 1-D row, got shape {a.shape}")
    if a.dtype.kind not in "fiub" and a.dtype != ml_dtypes.bfloat16:
        raise TypeError(f"unsupported dtype {a.dtype}")
    # float16, bfloat16 and float32 values are all float64 values: astype is exact.
    return a.astype(np.float64).tolist()


class _Row:
    """Max, shifted exponentials and the sum of the others, at the current mpmath precision.

    ``rest = sum_{i != i*} b_i e^{x_i - m} + (b_{i*} - 1)`` (``i*`` one position of the max), so
    that ``log sum_i b_i e^{x_i - m} = log1p(rest)`` keeps full relative accuracy when the sum is
    within 1e-60 of 1 (one dominant entry): ``log(1 + rest)`` at 60 digits would round a
    ``rest`` of 1e-70 away.
    """

    def __init__(self, xs: Sequence[float], weights: Sequence[float] | None = None):
        self.xs = xs
        self.nan = any(x != x for x in xs) or (weights is not None and any(w != w for w in weights))
        self.n_inf = sum(1 for x in xs if x == np.inf)
        finite = [i for i, x in enumerate(xs) if -np.inf < x < np.inf
                  and (weights is None or weights[i] != 0)]
        self.m = None
        self.exps: list = []  # e^(x_i - m), 0 at -inf entries
        if self.nan or self.n_inf or not finite:
            return
        top = max(finite, key=lambda i: xs[i])
        self.m = m = mpmath.mpf(xs[top])
        self.exps = [mpmath.exp(mpmath.mpf(x) - m) if x != -np.inf else mpmath.mpf(0) for x in xs]
        others = self.exps[:top] + self.exps[top + 1:]
        if weights is None:
            self.rest = mpmath.fsum(others)
        else:
            ws = list(weights[:top]) + list(weights[top + 1:])
            self.rest = mpmath.fsum([mpmath.mpf(weights[top]) - 1]
                                    + [mpmath.mpf(w) * e for w, e in zip(ws, others)])
        self.total = 1 + self.rest

    def log_total(self):
        """``log sum_i b_i e^{x_i - m}`` with full relative accuracy."""
        return mpmath.log1p(self.rest)


def ref_logsumexp(row, b=None, *, dps: int | None = None):
    r"""Exact ``log(sum_i b_i e^{x_i})`` of a 1-D row, as an :class:`mpmath.mpf`.

    .. math:: \operatorname{LSE}(x) = m + \operatorname{log1p}\Big(\sum_{i \ne i^*}
        b_i e^{x_i - m} + b_{i^*} - 1\Big)

    ``b`` (optional, the same length) are weights; a negative total gives NaN (as SciPy does
    without ``return_sign``), a zero total ``-inf``. When ``m + log(...)`` cancels (a result
    much smaller than ``|m|``, e.g. the LSE of log-probabilities) the sum is recomputed with as
    many more digits as the cancellation took.
    """
    xs = _values(row)
    ws = None if b is None else _values(np.broadcast_to(np.asarray(b), np.shape(row)))
    digits = _dps(dps)
    for _ in range(3):
        with mpmath.workdps(digits):
            r = _Row(xs, ws)
            if r.nan:
                return mpmath.mpf("nan")
            if r.n_inf:
                return mpmath.mpf("inf")  # weights of +inf entries assumed positive
            if r.m is None or r.total == 0:
                return mpmath.mpf("-inf")
            if r.total < 0:
                return mpmath.mpf("nan")
            lse = r.m + r.log_total()
            if lse == 0:
                return lse
            lost = int(mpmath.log10(abs(r.m) / abs(lse))) if r.m != 0 else 0
            if lost <= 10:
                return +lse
            digits = _dps(dps) + lost + 10
    return +lse


def ref_softmax(row, *, dps: int | None = None) -> list:
    r"""Exact ``softmax(x)_i = e^{x_i - m} / sum_j e^{x_j - m}`` of a 1-D row (list of mpf)."""
    xs = _values(row)
    with mpmath.workdps(_dps(dps)):
        r = _Row(xs)
        if r.nan:
            return [mpmath.mpf("nan")] * len(xs)
        if r.n_inf:
            share = mpmath.mpf(1) / r.n_inf
            return [share if x == np.inf else mpmath.mpf(0) for x in xs]
        if r.m is None:
            return [mpmath.mpf(0)] * len(xs)
        return [e / r.total for e in r.exps]  # r.total = 1 + rest: no cancellation


def ref_log_softmax(row, *, dps: int | None = None) -> list:
    r"""Exact ``log_softmax(x)_i = (x_i - m) - log sum_j e^{x_j - m}`` of a 1-D row.

    Both terms are ``<= 0`` and ``>= 0`` respectively, so nothing cancels: full relative
    accuracy even when the result is tiny (one dominant entry).
    """
    xs = _values(row)
    with mpmath.workdps(_dps(dps)):
        r = _Row(xs)
        if r.nan:
            return [mpmath.mpf("nan")] * len(xs)
        if r.n_inf:
            top = -mpmath.log(r.n_inf)
            return [top if x == np.inf else mpmath.mpf("-inf") for x in xs]
        if r.m is None:
            return [mpmath.mpf("-inf")] * len(xs)
        log_total = r.log_total()
        return [mpmath.mpf("-inf") if x == -np.inf else (mpmath.mpf(x) - r.m) - log_total
                for x in xs]


def ref_cross_entropy_label(row, k: int, *, dps: int | None = None):
    r"""Exact ``-log softmax(x)_k = log sum_j e^{x_j - m} - (x_k - m)`` (an mpf).

    A sum of two non-negative terms, so a tiny loss (a confident, correct prediction) keeps
    full relative accuracy.
    """
    return -ref_log_softmax(row, dps=dps)[int(k)]


def ref_cross_entropy_probs(row, targets, *, dps: int | None = None):
    r"""Exact ``-sum_i y_i log softmax(x)_i`` (an mpf); terms with ``y_i == 0`` count 0.

    ``targets`` is a 1-D array (any float dtype, converted exactly) of the row's length.
    """
    ys = _values(np.broadcast_to(np.asarray(targets), np.shape(row)))
    with mpmath.workdps(_dps(dps)):
        ls = ref_log_softmax(row, dps=_dps(dps))
        terms = [mpmath.mpf(0) if y == 0 else -mpmath.mpf(y) * l for y, l in zip(ys, ls)]
        if any(mpmath.isnan(t) for t in terms):
            return mpmath.mpf("nan")
        return mpmath.fsum(terms)


def _finfo(dtype):
    return ml_dtypes.finfo(np.dtype(dtype))


def precision_bits(dtype) -> int:
    """Significand bits ``p`` (with the implicit bit): 11, 8, 24, 53 for float16, bfloat16,
    float32, float64."""
    return int(_finfo(dtype).nmant) + 1


def ulp(value, dtype):
    r"""Spacing of the floating-point numbers of ``dtype`` at ``|value|`` (an mpf).

    .. math:: \operatorname{ulp}(v) = 2^{\max(\lfloor \log_2 |v| \rfloor,\ e_{\min}) - (p - 1)}

    with ``p`` the significand bits and ``e_min`` the exponent of the smallest normal number
    (so subnormal and zero values get the subnormal spacing ``2^{e_min - p + 1}``). At a power
    of two this is the spacing *above* it. Infinite or NaN values give NaN.
    """
    fi = _finfo(dtype)
    p = int(fi.nmant) + 1
    emin = int(fi.minexp)
    v = mpmath.mpf(value)
    if not mpmath.isfinite(v):
        return mpmath.mpf("nan")
    if v == 0:
        e = emin
    else:
        _, n = mpmath.frexp(abs(v))  # |v| = y * 2**n with y in [0.5, 1): floor(log2|v|) = n - 1
        e = max(int(n) - 1, emin)
    return mpmath.ldexp(mpmath.mpf(1), e - (p - 1))


def is_normal(value, dtype) -> bool:
    """True when the exact ``value`` is a normal finite number of ``dtype``:
    ``smallest_normal <= |value| <= max``."""
    fi = _finfo(dtype)
    v = mpmath.mpf(value)
    if not mpmath.isfinite(v):
        return False
    return mpmath.mpf(float(fi.smallest_normal)) <= abs(v) <= mpmath.mpf(float(fi.max))


def ulp_error(got, ref, dtype) -> float:
    r"""``|got - ref| / ulp(ref, dtype)`` as a float: the error of ``got`` in ulps of the exact value.

    ``got`` is a number of ``dtype`` (anything ``float()`` accepts; converted exactly), ``ref``
    the exact value (an mpf). A correctly rounded result has error ``<= 0.5``.
    Non-finite cases: equal infinities (or NaN against NaN) give 0; a non-finite ``got`` for
    a finite ``ref``, or a finite ``got`` for a non-finite ``ref``, gives ``inf``.
    """
    g = float(got)
    r = mpmath.mpf(ref)
    if mpmath.isnan(r) or g != g:
        return 0.0 if (mpmath.isnan(r) and g != g) else float("inf")
    if mpmath.isinf(r) or not np.isfinite(g):
        return 0.0 if mpmath.mpf(g) == r else float("inf")
    with mpmath.workdps(max(DPS, 30)):
        return float(abs(mpmath.mpf(g) - r) / ulp(r, dtype))


def max_ulp_error(got, refs: Iterable, dtype, *, normal_only: bool = True) -> tuple[float, int]:
    """Largest :func:`ulp_error` of ``got`` (array-like, flattened) against ``refs``.

    With ``normal_only`` (the default) entries whose exact value is not a normal number of
    ``dtype`` (zero, subnormal, overflowing, infinite, NaN) are skipped. Returns
    ``(max_error, number_of_entries_checked)``; the maximum of no entries is 0.0, so callers
    should check the count to avoid passing vacuously.
    """
    g = np.asarray(got).astype(np.float64).ravel().tolist()
    rs = list(refs)
    if len(g) != len(rs):
        raise ValueError(f"{len(g)} results for {len(rs)} references")
    worst, n = 0.0, 0
    for gi, ri in zip(g, rs):
        if normal_only and not is_normal(ri, dtype):
            continue
        worst = max(worst, ulp_error(gi, ri, dtype))
        n += 1
    return worst, n


# ------------------------------------------------------------------ many rows at once (the book)


def reference_table(values: Iterable, dtype) -> np.ndarray:
    """Exact values prepared for fast, repeated error measurement against many algorithms.

    Returns an array of shape ``(k, 3)``: per exact value (an mpf), its float64 rounding
    (relative error ``2**-53``, far below an ulp of float16, bfloat16 and float32), its
    :func:`ulp` in ``dtype`` and ``1.0`` if it counts (:func:`is_normal`) else ``0.0``. For
    float64 outputs use :func:`ulp_error` on the mpf values instead: the float64 rounding of the
    reference would then be as large as the errors measured.
    """
    return np.array([(float(v), float(ulp(v, dtype)), float(is_normal(v, dtype)))
                     for v in values], dtype=np.float64).reshape(-1, 3)


def ulp_errors(got, tables: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per row, the ulp errors of the counted entries of ``got`` against :func:`reference_table` results.

    ``got`` is 2-D (row ``r`` holds the results of ``tables[r]`` in its first ``len(tables[r])``
    columns, the rest is padding) or 1-D (one result per row, e.g. a log-sum-exp). A non-finite
    result for a finite exact value counts as ``inf``.
    """
    got = np.asarray(got).astype(np.float64)
    out = []
    for r, ref in enumerate(tables):
        g = got[r, :len(ref)] if got.ndim == 2 else got[r:r + 1]
        with np.errstate(invalid="ignore"):
            e = np.abs(g - ref[:, 0]) / ref[:, 1]
        e = np.where(np.isfinite(g) | ~np.isfinite(ref[:, 0]), e, np.inf)
        out.append(e[ref[:, 2] > 0])
    return out


def rel_errors(got, tables: Sequence[np.ndarray], u: float) -> list[np.ndarray]:
    """Per row, the relative errors ``|got - exact| / |exact|`` in units of ``u`` (counted entries)."""
    got = np.asarray(got).astype(np.float64)
    out = []
    for r, ref in enumerate(tables):
        keep = ref[:, 2] > 0
        out.append(np.abs(got[r, :len(ref)][keep] - ref[keep, 0]) / np.abs(ref[keep, 0]) / u)
    return out


class Table:
    """A small table for notebooks: rendered as HTML, with a plain-text ``repr`` as well.

    ``Table(header, rows)`` with ``rows`` a list of sequences of cells; cells are shown with
    ``str`` except floats, which use ``fmt`` (a format spec such as ``".3g"``). Used by the
    book's chapters so that tables a reader should read are tables, not fixed-width text.
    """

    def __init__(self, header: Sequence[str], rows: Iterable[Sequence], fmt: str = ".4g",
                 caption: str | None = None):
        self.header = [str(h) for h in header]
        self.rows = [[self._cell(c, fmt) for c in row] for row in rows]
        self.caption = caption

    @staticmethod
    def _cell(c, fmt: str) -> str:
        if isinstance(c, (float, np.floating)):
            v = float(c)
            if v != v:
                return "nan"
            if v in (float("inf"), float("-inf")):
                return "inf" if v > 0 else "-inf"
            return format(v, fmt)
        return str(c)

    def _repr_html_(self) -> str:
        from html import escape
        head = "".join(f"<th>{escape(h)}</th>" for h in self.header)
        body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>"
                       for row in self.rows)
        cap = f"<caption>{escape(self.caption)}</caption>" if self.caption else ""
        return (f'<table class="dataframe">{cap}<thead><tr>{head}</tr></thead>'
                f"<tbody>{body}</tbody></table>")

    def __repr__(self) -> str:
        widths = [max(len(r[i]) for r in [self.header] + self.rows) for i in range(len(self.header))]
        lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in [self.header] + self.rows]
        return "\n".join(([self.caption] if self.caption else []) + lines)
