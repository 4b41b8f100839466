// CPU kernels for expnorm's float32 fast path, called from JAX through the XLA FFI.
//
// Why a kernel: XLA on CPU fuses jax.nn.softmax's float32 exp and sums into one vectorized
// pass, but a float64 exp inside a row reduction is not vectorized (measured here: 20x slower
// than float32), and expnorm needs more than float32 precision to stay within 1 ulp. These
// loops compute exp(x - max) in float64 with a short polynomial that the compiler vectorizes:
// one pass for the max, one for exp and the sum, one for the output. Rows of up to 65536
// entries keep their exponentials in cache for the output; longer rows compute them again.
// Many rows run in parallel; a few long rows are each split over all threads.
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
constexpr double kLn2Hi = 6.93147180369123816490e-01;  // 32 significant bits: k * hi is exact
constexpr double kLn2Lo = 1.90821492927058770002e-10;  // ln 2 - kLn2Hi
constexpr double kShifter = 6755399441055744.0;  // 1.5 * 2**52: adding it rounds to an integer
constexpr int64_t kShifterBits = 0x4338000000000000LL;
constexpr int kTableBits = 7;
constexpr int kTableSize = 1 << kTableBits;
constexpr int64_t kParallelMin = 1 << 16;  // below this many elements, one thread
constexpr int64_t kCacheMax = 1 << 16;     // rows up to this length keep exp(x - m) (512 KiB)

// 2**(j / 128), j = 0..127, each correctly rounded (glibc's exp2 is within 1 ulp; the error
// it adds is 1.1e-16 relative, far below what a float32 result can show).
struct Exp2Table {
  double v[kTableSize];
  Exp2Table() {
    for (int j = 0; j < kTableSize; ++j) v[j] = std::exp2(static_cast<double>(j) / kTableSize);
  }
};
static const Exp2Table kExp2Table;

// exp(d) for d <= 0 in float64, relative error below 2e-15 (tests/test_accuracy.py checks the
// float32 results it gives); 0 below -708, NaN for NaN.
// Tang's method: d = (128 k + j) ln2 / 128 + r with |r| <= ln2 / 256, so
// exp(d) = 2**k * 2**(j/128) * exp(r); exp(r) by a degree-4 Taylor polynomial (truncation
// |r|**5 / 120 < 1.3e-15); 2**k enters the exponent bits of the table entry. The short
// polynomial keeps the dependency chain short, so the vectorized loop runs at full speed.
static inline double exp_nonpositive(double d) {
  const double dc = d < -708.0 ? -708.0 : d;  // keeps the exponent k >= -1022 (normal)
  const double t = dc * (kTableSize * kLog2e) + kShifter;
  const double nk = t - kShifter;  // round(d * 128 / ln2)
  const double r = (dc - nk * (kLn2Hi / kTableSize)) - nk * (kLn2Lo / kTableSize);
  const double p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0))));
  int64_t tb;
  std::memcpy(&tb, &t, sizeof tb);
  const int64_t n = tb - kShifterBits;  // the integer round(d * 128 / ln2)
  int64_t bits;
  std::memcpy(&bits, &kExp2Table.v[n & (kTableSize - 1)], sizeof bits);
  bits += (n >> kTableBits) * (int64_t{1} << 52);  // times 2**k, k = floor(n / 128)
  double scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return d < -708.0 ? 0.0 : scale * p;
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

// sum of exp(x - m) over the stretch; entries equal to m are skipped when skip_max, and the
// exponentials are stored in cache when it is not null.
static double sum_exp_serial(const float* x, int64_t n, double m, bool skip_max, double* cache) {
  double s = 0.0;
  const float mf = static_cast<float>(m);
  if (cache != nullptr) {
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; ++i) {
      const double e = exp_nonpositive(static_cast<double>(x[i]) - m);
      cache[i] = e;
      s += e;
    }
  } else if (skip_max) {
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; ++i) {
      const double e = exp_nonpositive(static_cast<double>(x[i]) - m);
      s += x[i] == mf ? 0.0 : e;
    }
  } else {
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; ++i) s += exp_nonpositive(static_cast<double>(x[i]) - m);
  }
  return s;
}

static void scaled_exp_serial(const float* x, float* y, int64_t n, double m, double inv) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    y[i] = static_cast<float>(exp_nonpositive(static_cast<double>(x[i]) - m) * inv);
  }
}

// ---- one row: either on the calling thread, or split into stretches over all threads ----

constexpr int64_t kStretch = 1 << 16;

static int64_t stretches(int64_t n) { return (n + kStretch - 1) / kStretch; }

static RowMax row_max(const float* x, int64_t n, bool parallel) {
  if (!parallel) return max_serial(x, n);
  float m = -std::numeric_limits<float>::infinity();
  int nan = 0;
#pragma omp parallel for schedule(static) reduction(max : m) reduction(| : nan)
  for (int64_t c = 0; c < stretches(n); ++c) {
    const RowMax part = max_serial(x + c * kStretch, std::min(kStretch, n - c * kStretch));
    m = part.m > m ? part.m : m;
    nan |= part.nan;
  }
  return {m, nan != 0};
}

static int64_t count_equal(const float* x, int64_t n, float m, bool parallel) {
  if (!parallel) return count_equal_serial(x, n, m);
  int64_t count = 0;
#pragma omp parallel for schedule(static) reduction(+ : count)
  for (int64_t c = 0; c < stretches(n); ++c) {
    count += count_equal_serial(x + c * kStretch, std::min(kStretch, n - c * kStretch), m);
  }
  return count;
}

static double sum_exp(const float* x, int64_t n, double m, bool skip_max, bool parallel) {
  if (!parallel) return sum_exp_serial(x, n, m, skip_max, nullptr);
  double s = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : s)
  for (int64_t c = 0; c < stretches(n); ++c) {
    s += sum_exp_serial(x + c * kStretch, std::min(kStretch, n - c * kStretch), m, skip_max,
                        nullptr);
  }
  return s;
}

static void fill(float* y, int64_t n, float v) {
  for (int64_t i = 0; i < n; ++i) y[i] = v;
}

// Special rows; returns true when the row was one (and y is filled).
static bool softmax_special(const float* x, float* y, int64_t n, const RowMax& rm, bool parallel) {
  const float inf = std::numeric_limits<float>::infinity();
  if (rm.nan) {
    fill(y, n, std::numeric_limits<float>::quiet_NaN());
  } else if (rm.m == -inf) {  // all -inf: no distribution; zeros, as documented
    fill(y, n, 0.0f);
  } else if (rm.m == inf) {  // the +inf entries share the mass
    const float share = 1.0f / static_cast<float>(count_equal(x, n, inf, parallel));
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] == inf ? share : 0.0f;
  } else {
    return false;
  }
  return true;
}

static void softmax_row(const float* x, float* y, int64_t n, bool parallel) {
  const RowMax rm = row_max(x, n, parallel);
  if (softmax_special(x, y, n, rm, parallel)) return;
  const double m = rm.m;
  if (!parallel && n <= kCacheMax) {
    // one exp per entry: keep them (in L2) between the sum and the output
    thread_local std::vector<double> cache;
    if (static_cast<int64_t>(cache.size()) < n) cache.resize(n);
    const double inv = 1.0 / sum_exp_serial(x, n, m, false, cache.data());
    const double* e = cache.data();
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) y[i] = static_cast<float>(e[i] * inv);
    return;
  }
  const double inv = 1.0 / sum_exp(x, n, m, false, parallel);
  if (!parallel) {
    scaled_exp_serial(x, y, n, m, inv);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < stretches(n); ++c) {
    const int64_t len = std::min(kStretch, n - c * kStretch);
    scaled_exp_serial(x + c * kStretch, y + c * kStretch, len, m, inv);
  }
}

static void row_stats(const float* x, int64_t n, float* m_out, double* t_out, bool parallel) {
  const RowMax rm = row_max(x, n, parallel);
  if (rm.nan) {
    *m_out = std::numeric_limits<float>::quiet_NaN();
    *t_out = std::numeric_limits<double>::quiet_NaN();
    return;
  }
  *m_out = rm.m;
  const double ties = static_cast<double>(count_equal(x, n, rm.m, parallel)) - 1.0;
  if (!std::isfinite(rm.m)) {
    *t_out = ties;
    return;
  }
  *t_out = sum_exp(x, n, rm.m, true, parallel) + ties;
}

// (x - m) - log1p(t) in float64, rounded once; special rows as in expnorm.log_softmax.
static void log_softmax_row(const float* x, float* y, int64_t n, bool parallel) {
  float m;
  double t;
  row_stats(x, n, &m, &t, parallel);
  const float inf = std::numeric_limits<float>::infinity();
  if (std::isnan(m)) {
    fill(y, n, std::numeric_limits<float>::quiet_NaN());
    return;
  }
  if (m == -inf) {  // all -inf: log of probability 0
    fill(y, n, -inf);
    return;
  }
  const double l = std::log1p(t);
  if (m == inf) {  // k entries +inf: each has log(1/k), the others -inf
    const float at_inf = static_cast<float>(-l);
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] == inf ? at_inf : -inf;
    return;
  }
  const double md = m;
#pragma omp parallel for simd schedule(static) if (parallel)
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<float>((static_cast<double>(x[i]) - md) - l);
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

ffi::Error SoftmaxF32(ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::F32> y) {
  const auto dims = x.dimensions();
  if (dims.size() == 0) return ffi::Error::InvalidArgument("softmax kernel: need rank >= 1");
  const int64_t n = dims.back();
  if (n == 0 || x.element_count() == 0) return ffi::Error::Success();
  const int64_t rows = static_cast<int64_t>(x.element_count()) / n;
  const float* xp = x.typed_data();
  float* yp = y->typed_data();
  for_rows(rows, n, [&](int64_t r, bool par) { softmax_row(xp + r * n, yp + r * n, n, par); });
  return ffi::Error::Success();
}

ffi::Error LogSoftmaxF32(ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::F32> y) {
  const auto dims = x.dimensions();
  if (dims.size() == 0) return ffi::Error::InvalidArgument("log_softmax kernel: need rank >= 1");
  const int64_t n = dims.back();
  if (n == 0 || x.element_count() == 0) return ffi::Error::Success();
  const int64_t rows = static_cast<int64_t>(x.element_count()) / n;
  const float* xp = x.typed_data();
  float* yp = y->typed_data();
  for_rows(rows, n, [&](int64_t r, bool par) { log_softmax_row(xp + r * n, yp + r * n, n, par); });
  return ffi::Error::Success();
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
  for_rows(rows, n, [&](int64_t r, bool par) { row_stats(xp + r * n, n, mp + r, tp + r, par); });
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
