"""Tests of expnorm.numerics' many-row helpers (reference_table, ulp_errors, rel_errors, Table).

Reference values are hand derivations: ulps of powers of two and exactly known spacings.
"""

import math

import mpmath
import numpy as np

from expnorm import numerics


def test_reference_table_columns():
    t = numerics.reference_table([mpmath.mpf(1), mpmath.mpf("1e-40"), mpmath.mpf(3)], np.float32)
    assert t.shape == (3, 3)
    np.testing.assert_array_equal(t[:, 0], [1.0, float(mpmath.mpf("1e-40")), 3.0])
    assert t[0, 1] == 2.0 ** -23 and t[2, 1] == 2.0 ** -22  # ulp(1), ulp(3) = ulp in [2, 4)
    np.testing.assert_array_equal(t[:, 2], [1.0, 0.0, 1.0])  # 1e-40 is subnormal in float32


def test_ulp_errors_padded_rows_and_infinities():
    tables = [numerics.reference_table([mpmath.mpf(1), mpmath.mpf(2)], np.float32),
              numerics.reference_table([mpmath.mpf(1)], np.float32)]
    got = np.array([[1.0 + 2.0 ** -23, 2.0 - 2.0 ** -22], [math.inf, -math.inf]])  # pad ignored
    errs = numerics.ulp_errors(got, tables)
    # ulp is measured at the exact value: ulp(1) = 2^-23, ulp(2) = 2^-22 (the spacing above 2)
    np.testing.assert_array_equal(errs[0], [1.0, 1.0])
    assert np.isinf(errs[1][0])


def test_ulp_errors_one_result_per_row_and_skips():
    tables = [numerics.reference_table([mpmath.mpf("1e-40")], np.float32),
              numerics.reference_table([mpmath.mpf(4)], np.float32)]
    errs = numerics.ulp_errors(np.array([0.0, 4.0 + 2.0 ** -21]), tables)
    assert errs[0].size == 0  # subnormal exact value: not counted
    np.testing.assert_array_equal(errs[1], [1.0])


def test_rel_errors_in_units_of_u():
    u = 2.0 ** -24
    tables = [numerics.reference_table([mpmath.mpf(1), mpmath.mpf(8)], np.float32)]
    rel = numerics.rel_errors(np.array([[1.0 + 2 * u, 8.0 - 8 * u]]), tables, u)
    np.testing.assert_allclose(rel[0], [2.0, 1.0])


def test_table_html_and_text():
    t = numerics.Table(["name", "x"], [["a<b", 0.5], ["c", math.inf], ["d", math.nan]], fmt=".2f")
    html = t._repr_html_()
    assert "<th>name</th>" in html and "<td>a&lt;b</td>" in html and "<td>0.50</td>" in html
    assert "<td>inf</td>" in html and "<td>nan</td>" in html
    assert repr(t).splitlines()[0].split() == ["name", "x"]
