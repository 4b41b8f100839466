// CPU kernels for expnorm's float32 fast path, called from JAX through the XLA FFI.
//
// Why a kernel: XLA on CPU fuses jax.nn.softmax's float32 exp and sums into one vectorized
// pass, but a float64 exp inside a row reduction is not vectorized (measured here: 20x slower
// than float32), and expnorm needs more than float32 precision to stay within 1 ulp. These
// loops compute exp(x - max) in float64 with a polynomial and no table or branch, so that the
// compiler vectorizes them. That also needs -fno-trapping-math (see FLAGS in __init__.py):
// without it GCC 12 keeps the selects of these loops as branches, for fear of raising a
// floating-point exception that the scalar code would not, and vectorizes none of them
// (measured here: the row statistics of 1024 x 32768 entries 3.5 times slower). No code here
// reads the exception flags.
// Many rows run in parallel, one row per thread; a row is read from memory once for its max
// (prefetched while the previous row is summed), and for rows of up to 2**18 entries the
// exponentials are kept in a per-thread buffer (2 MiB, in cache) for the output; longer rows
// compute them again.
// A few long rows are each split into stretches over all threads: one pass over memory for
// the statistics (each stretch relative to its own max, then rescaled), one for the output.
//
// Rows are the last axis; every leading axis is a batch of rows.
//
//   expnorm_softmax_f32:   y = exp(x - m) / sum(exp(x - m))                      (f32 -> f32)
//   expnorm_log_softmax_f32: y = (x - m) - log1p(t), t as below                  (f32 -> f32)
//   expnorm_row_stats_f32: m = max(x), t = sum_{x_i != m} exp(x_i - m) + (#{x_i == m} - 1)
//                          (f32 -> f32[rows], f64[rows]); log1p(t) then gives LSE - m
//                          accurately even when t is tiny (Blanchard, Higham & Higham 2021).
//
// Special rows (the semantics of expnorm.softmax): a NaN makes the row NaN (m = NaN); an
// all -inf row has m = -inf and softmax 0; +inf entries share the mass equally
// (m = +inf, t = #inf - 1).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include <omp.h>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr double kLog2e = 1.4426950408889634;
constexpr double kLn2 = 0.6931471805599453;  // ln 2 rounded to double (error 2.3e-17)
constexpr double kShifter = 6755399441055744.0;  // 1.5 * 2**52: adding it rounds to an integer
constexpr int64_t kOneBits = 0x3FF0000000000000LL;  // the bits of 1.0
constexpr int64_t kParallelMin = 1 << 16;  // below this many elements, one thread
constexpr int64_t kCacheMax = 1 << 18;     // rows up to this length keep exp(x - m) (2 MiB)

// exp(r) = 1 + r (1 + r q(r)) for |r| <= ln2 / 2: 1 + r q(r) of degree 7 interpolates
// (e^r - 1) / r at the 8 Chebyshev nodes of [-ln2/2, ln2/2] (mpmath at 50 digits, rounded to
// double, the constant term set to exactly 1 so that exp(0) = 1 exactly). Relative error of
// the polynomial, measured with mpmath at 8001 points of the interval: at most 3.92e-12.
constexpr double kQ[7] = {0.4999999999995511,     0.16666666786309303,   0.04166666678626645,
                          0.008333283538509153,   0.0013888839110372732, 0.00019907569443646444,
                          2.4867870312419464e-05};

// exp(d) for d <= 0 in float64 with relative error below 4e-12 (the polynomial's 3.92e-12,
// 2.4e-14 from the rounding of ln 2 times |k| <= 1022, and a few float64 roundings): 2e-12 of
// a float32 ulp, far below what a float32 result can show (tests/test_native.py checks every
// kernel path's float32 results against exactly summed references and mpmath); 0 for
// d < -708 (and for -inf). Not for NaN: the callers handle rows with a NaN first.
// d = k ln2 + r with k = round(d / ln2), |r| <= ln2 / 2, so exp(d) = 2**k exp(r), with 2**k
// made by adding k to the exponent bits of 1.0. No table, no branch: every step is a vector
// instruction. (The table method of Tang 1989, used until expnorm 0.3, needs a lookup per
// entry, and a lookup does not vectorize well on CPUs without a fast gather: GCC 12 for AMD
// Zen 3 loads the entries one by one, seen in its assembly.)
static inline double exp_nonpositive(double d) {
  const double t = d * kLog2e + kShifter;
  const double k = t - kShifter;  // round(d / ln2); for d >= -708, k >= -1022
  const double r = __builtin_fma(-k, kLn2, d);  // k * ln2 exact inside the fma: one rounding
  const double q =
      kQ[0] + r * (kQ[1] + r * (kQ[2] + r * (kQ[3] + r * (kQ[4] + r * (kQ[5] + r * kQ[6])))));
  const double p = 1.0 + r * (1.0 + r * q);
  // the low bits of t hold k + 2**51; shifted by 52 they leave k * 2**52 (mod 2**64), which,
  // added to the bits of 1.0, gives the bits of 2**k for -1022 <= k <= 0
  const int64_t bits = kOneBits + (__builtin_bit_cast(int64_t, t) << 52);
  const double e = __builtin_bit_cast(double, bits) * p;
  return d >= -708.0 ? e : 0.0;
}

struct RowMax {
  float m;
  bool nan;
};

// ---- serial loops over one stretch of a row (vectorized by the compiler; no threads) ----

static RowMax max_serial(const float* x, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
  int nan = 0;
#pragma omp simd reduction(max : m) reduction(| : nan)
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    nan |= (v != v);
    m = v > m ? v : m;
  }
  return {m, nan != 0};
}

static int64_t count_equal_serial(const float* x, int64_t n, float m) {
  int64_t c = 0;
#pragma omp simd reduction(+ : c)
  for (int64_t i = 0; i < n; ++i) c += (x[i] == m);
  return c;
}

// The statistics of one stretch with max m (finite): the sum of exp(x - m) over the entries
// below m, and the number of entries equal to m, in one loop.
struct Stretch {
  float m;
  bool nan;
  double sum;    // m finite: sum of exp(x - m) over the stretch, the entries equal to m included
                 // (each adds exactly 1); otherwise 0
  int64_t ties;  // m infinite: the number of entries equal to m; otherwise 0
};

// Sums in three levels: vectorized blocks of kBlock entries, groups of kGroup entries, and
// the total. A plain running sum of n terms can be off by about n/8 roundings (8 lanes);
// this keeps it to about kBlock/8 + kGroup/kBlock + n/kGroup, 200 roundings (4e-14 relative)
// for any row up to 2**24 entries: far below a float32 ulp.
constexpr int64_t kBlock = 512;
constexpr int64_t kGroup = 65536;

// One block: sum of exp(x - m) over the entries below m, counting the entries equal to m into
// *ties. (Plain pointer arguments: captured in a lambda, x made the compiler gather its loads
// one by one. The test x == m is made on the float64 difference, in the vector type of the
// sum: a float32 mask took 16 instructions per 8 entries to widen.)
static double block_others(const float* x, int64_t n, double m, int64_t* ties) {
  double s = 0.0;
  double t = 0.0;  // a count, exact in float64; a double keeps the loop in one vector type
#pragma omp simd reduction(+ : s, t)
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(x[i]) - m;  // exact: x and m are float32
    const bool at_max = d == 0.0;
    const double e = exp_nonpositive(d);
    s += at_max ? 0.0 : e;
    t += at_max ? 1.0 : 0.0;
  }
  *ties += static_cast<int64_t>(t);
  return s;
}

// One block: sum of exp(x - m) over all its entries (those equal to m add exactly 1).
static double block_all(const float* x, int64_t n, double m) {
  double s = 0.0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += exp_nonpositive(static_cast<double>(x[i]) - m);
  return s;
}

// One block: sum of exp(x - m), storing the exponentials in cache.
static double block_store(const float* x, int64_t n, double m, double* cache) {
  double s = 0.0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) {
    const double e = exp_nonpositive(static_cast<double>(x[i]) - m);
    cache[i] = e;
    s += e;
  }
  return s;
}

// While block [b, b + len) is summed (compute-bound: the exponentials), the same stretch of
// `ahead` is prefetched into the cache: `ahead` is what this thread reads next (the next
// row, or the next stretch), whose max pass then finds it in cache instead of memory.
// (A prefetch never faults, so `ahead` may run past the end of the array.)
template <typename BlockSum>
static double blocked_sum(int64_t n, const float* ahead, BlockSum block_sum) {
  double total = 0.0;
  for (int64_t g = 0; g < n; g += kGroup) {
    const int64_t g_end = std::min(n, g + kGroup);
    double group = 0.0;
    for (int64_t b = g; b < g_end; b += kBlock) {
      const int64_t len = std::min(g_end, b + kBlock) - b;
      for (int64_t i = 0; i < len; i += 16) __builtin_prefetch(ahead + b + i, 0, 2);
      group += block_sum(b, len);
    }
    total += group;
  }
  return total;
}

static Stretch stretch_serial(const float* x, int64_t n) {
  const RowMax rm = max_serial(x, n);
  Stretch st{rm.m, rm.nan, 0.0, 0};
  if (rm.nan) return st;
  if (!std::isfinite(rm.m)) {
    st.ties = count_equal_serial(x, n, rm.m);
    return st;
  }
  const double m = rm.m;
  st.sum = blocked_sum(n, x + n, [=](int64_t b, int64_t len) { return block_all(x + b, len, m); });
  return st;
}

// The exact split of a stretch's sum relative to m (the row max): the sum over the entries
// below m, and the number equal to m. Only for rows whose t is small (kExactBelow).
struct Others {
  double others;
  int64_t ties;
};

static Others others_serial(const float* x, int64_t n, double m) {
  int64_t ties = 0;
  const double others = blocked_sum(n, x + n, [=, &ties](int64_t b, int64_t len) {
    return block_others(x + b, len, m, &ties);
  });
  return {others, ties};
}

// sum of exp(x - m) over the stretch, storing the exponentials in cache.
static double sum_exp_store_serial(const float* x, int64_t n, double m, double* cache) {
  return blocked_sum(n, x + n, [=](int64_t b, int64_t len) {
    return block_store(x + b, len, m, cache + b);
  });
}

static void scaled_exp_serial(const float* x, float* y, int64_t n, double m, double inv) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    y[i] = static_cast<float>(exp_nonpositive(static_cast<double>(x[i]) - m) * inv);
  }
}

static void shifted_serial(const float* x, float* y, int64_t n, double m, double l) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<float>((static_cast<double>(x[i]) - m) - l);
}

// ---- one row: either on the calling thread, or split into stretches over all threads ----

constexpr int64_t kStretch = 1 << 16;

static int64_t stretches(int64_t n) { return (n + kStretch - 1) / kStretch; }

static int64_t stretch_len(int64_t n, int64_t c) { return std::min(kStretch, n - c * kStretch); }

// Run body(offset, length) over the stretches of a row, on all threads.
template <typename Body>
static void parallel_stretches(int64_t n, Body body) {
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < stretches(n); ++c) body(c * kStretch, stretch_len(n, c));
}

// The row statistics: max m, NaN flag, and t = sum_{x != m} exp(x - m) + (ties - 1).
// t is the sum of all exp(x - m) minus 1, since each entry equal to m adds exactly 1: one
// loop with no test per entry. That difference is accurate when t is not small: the sum's
// rounding errors, at most about 450 roundings of 2**-53 of the sum (kBlock, kGroup), are then
// below 4e-12 of t. For t < kExactBelow (a row whose max has probability above 64/65) the
// row is summed again with the entries equal to m left out, so a tiny t keeps its relative
// accuracy (log1p(t) and the log-probability of the max depend on it).
// In parallel, each stretch is summed relative to its own max in the same pass as that max
// (the online normalizer of Milakov & Gimelshein 2018), and the stretches are then rescaled
// to the row max: one pass over memory instead of two.
constexpr double kExactBelow = 1.0 / 64;

struct RowStats {
  float m;
  bool nan;
  double t;
};

static RowStats row_stats(const float* x, int64_t n, bool parallel) {
  const float qnan = std::numeric_limits<float>::quiet_NaN();
  if (!parallel) {
    const Stretch st = stretch_serial(x, n);
    if (st.nan) return {qnan, true, 0.0};
    if (!std::isfinite(st.m)) return {st.m, false, static_cast<double>(st.ties - 1)};
    const double t = st.sum - 1.0;
    if (t >= kExactBelow) return {st.m, false, t};
    const Others o = others_serial(x, n, st.m);
    return {st.m, false, o.others + static_cast<double>(o.ties - 1)};
  }
  std::vector<Stretch> parts(stretches(n));
  parallel_stretches(n, [&](int64_t off, int64_t len) {
    parts[off / kStretch] = stretch_serial(x + off, len);
  });
  float m = -std::numeric_limits<float>::infinity();
  bool nan = false;
  for (const Stretch& st : parts) {
    nan |= st.nan;
    m = st.m > m ? st.m : m;
  }
  if (nan) return {qnan, true, 0.0};
  if (!std::isfinite(m)) {  // all -inf, or +inf entries: t = (number equal to m) - 1
    int64_t ties = 0;
    for (const Stretch& st : parts) ties += st.m == m ? st.ties : 0;
    return {m, false, static_cast<double>(ties - 1)};
  }
  double sum = 0.0;
  for (const Stretch& st : parts) {
    if (st.m == m) {
      sum += st.sum;
    } else if (st.m != -std::numeric_limits<float>::infinity()) {
      // every entry of this stretch is below m: rescale its sum to m
      sum += st.sum * exp_nonpositive(static_cast<double>(st.m) - static_cast<double>(m));
    }
  }
  const double t = sum - 1.0;
  if (t >= kExactBelow) return {m, false, t};
  std::vector<Others> exact(stretches(n));
  parallel_stretches(n, [&](int64_t off, int64_t len) {
    exact[off / kStretch] = others_serial(x + off, len, m);
  });
  double others = 0.0;
  int64_t ties = 0;
  for (const Others& o : exact) {
    others += o.others;
    ties += o.ties;
  }
  return {m, false, others + static_cast<double>(ties - 1)};
}

static void fill(float* y, int64_t n, float v) {
  for (int64_t i = 0; i < n; ++i) y[i] = v;
}

// Special rows (NaN, all -inf, +inf entries); returns true when the row was one (y filled).
// ties_inf: the number of +inf entries when m = +inf.
static bool softmax_special(const float* x, float* y, int64_t n, float m, bool nan,
                            int64_t ties_inf) {
  const float inf = std::numeric_limits<float>::infinity();
  if (nan) {
    fill(y, n, std::numeric_limits<float>::quiet_NaN());
  } else if (m == -inf) {  // all -inf: no distribution; zeros, as documented
    fill(y, n, 0.0f);
  } else if (m == inf) {  // the +inf entries share the mass
    const float share = 1.0f / static_cast<float>(ties_inf);
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] == inf ? share : 0.0f;
  } else {
    return false;
  }
  return true;
}

static void softmax_row(const float* x, float* y, int64_t n, bool parallel) {
  if (!parallel && n <= kCacheMax) {
    // one exp per entry: keep them (in a per-thread buffer, in cache) for the output
    const RowMax rm = max_serial(x, n);
    const bool inf_row = !rm.nan && rm.m == std::numeric_limits<float>::infinity();
    if (softmax_special(x, y, n, rm.m, rm.nan, inf_row ? count_equal_serial(x, n, rm.m) : 0)) {
      return;
    }
    thread_local std::vector<double> cache;
    if (static_cast<int64_t>(cache.size()) < n) cache.resize(n);
    const double inv = 1.0 / sum_exp_store_serial(x, n, rm.m, cache.data());
    const double* e = cache.data();
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) y[i] = static_cast<float>(e[i] * inv);
    return;
  }
  // long rows: statistics in one pass, then the exponentials again for the output
  const RowStats rs = row_stats(x, n, parallel);
  const int64_t ties_inf = static_cast<int64_t>(rs.t) + 1;  // t = ties - 1 on a +inf row
  if (softmax_special(x, y, n, rs.m, rs.nan, ties_inf)) return;
  const double m = rs.m;
  const double inv = 1.0 / (1.0 + rs.t);
  if (!parallel) {
    scaled_exp_serial(x, y, n, m, inv);
    return;
  }
  parallel_stretches(n, [&](int64_t off, int64_t len) {
    scaled_exp_serial(x + off, y + off, len, m, inv);
  });
}

// (x - m) - log1p(t) in float64, rounded once; special rows as in expnorm.log_softmax.
static void log_softmax_row(const float* x, float* y, int64_t n, bool parallel) {
  const RowStats rs = row_stats(x, n, parallel);
  const float inf = std::numeric_limits<float>::infinity();
  if (rs.nan) {
    fill(y, n, std::numeric_limits<float>::quiet_NaN());
    return;
  }
  if (rs.m == -inf) {  // all -inf: log of probability 0
    fill(y, n, -inf);
    return;
  }
  const double l = std::log1p(rs.t);
  if (rs.m == inf) {  // k entries +inf: each has log(1/k), the others -inf
    const float at_inf = static_cast<float>(-l);
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] == inf ? at_inf : -inf;
    return;
  }
  const double m = rs.m;
  if (!parallel) {
    shifted_serial(x, y, n, m, l);
    return;
  }
  parallel_stretches(n, [&](int64_t off, int64_t len) { shifted_serial(x + off, y + off, len, m, l); });
}

// Many rows: rows in parallel, each on one thread. A few long rows: each row over all threads.
template <typename RowFn>
static void for_rows(int64_t rows, int64_t n, RowFn fn) {
  const bool big = rows * n >= kParallelMin;
  if (!big) {
    for (int64_t r = 0; r < rows; ++r) fn(r, false);
  } else if (rows >= 2 * omp_get_max_threads() || n < 2 * kStretch) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r) fn(r, false);
  } else {
    for (int64_t r = 0; r < rows; ++r) fn(r, true);
  }
}

// y = row_fn applied to every row of x (the last axis), for the kernels whose output has the
// shape of their input.
template <void (*RowFn)(const float*, float*, int64_t, bool)>
ffi::Error MapRowsF32(ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::F32> y) {
  const auto dims = x.dimensions();
  if (dims.size() == 0) return ffi::Error::InvalidArgument("expnorm kernel: need rank >= 1");
  const int64_t n = dims.back();
  if (n == 0 || x.element_count() == 0) return ffi::Error::Success();
  const int64_t rows = static_cast<int64_t>(x.element_count()) / n;
  const float* xp = x.typed_data();
  float* yp = y->typed_data();
  for_rows(rows, n, [&](int64_t r, bool par) { RowFn(xp + r * n, yp + r * n, n, par); });
  return ffi::Error::Success();
}

ffi::Error SoftmaxF32(ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::F32> y) {
  return MapRowsF32<softmax_row>(x, y);
}

ffi::Error LogSoftmaxF32(ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::F32> y) {
  return MapRowsF32<log_softmax_row>(x, y);
}

ffi::Error RowStatsF32(ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::F32> m,
                       ffi::ResultBuffer<ffi::F64> t) {
  const auto dims = x.dimensions();
  if (dims.size() == 0) return ffi::Error::InvalidArgument("row_stats kernel: need rank >= 1");
  const int64_t n = dims.back();
  if (n == 0) return ffi::Error::InvalidArgument("row_stats kernel: empty rows");
  const int64_t rows = static_cast<int64_t>(x.element_count()) / n;
  const float* xp = x.typed_data();
  float* mp = m->typed_data();
  double* tp = t->typed_data();
  for_rows(rows, n, [&](int64_t r, bool par) {
    const RowStats rs = row_stats(xp + r * n, n, par);
    mp[r] = rs.m;
    tp[r] = rs.nan ? std::numeric_limits<double>::quiet_NaN() : rs.t;
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(ExpnormSoftmaxF32, SoftmaxF32,
                              ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(ExpnormRowStatsF32, RowStatsF32,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F64>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(ExpnormLogSoftmaxF32, LogSoftmaxF32,
                              ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::F32>>());
