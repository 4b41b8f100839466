// CPU kernels for expnorm's float32 fast path, called from JAX through the XLA FFI.
//
// Why a kernel: XLA on CPU fuses jax.nn.softmax's float32 exp and sums into one vectorized
// pass, but a float64 exp inside a row reduction is not vectorized (measured here: 20x slower
// than float32), and expnorm needs more than float32 precision to stay within 1 ulp. These
// loops compute exp(x - max) in float64 with a short polynomial that the compiler vectorizes.
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
constexpr double kLn2Hi = 6.93147180369123816490e-01;  // 32 significant bits: k * hi is exact
constexpr double kLn2Lo = 1.90821492927058770002e-10;  // ln 2 - kLn2Hi
constexpr double kShifter = 6755399441055744.0;  // 1.5 * 2**52: adding it rounds to an integer
constexpr int64_t kShifterBits = 0x4338000000000000LL;
constexpr int kTableBits = 7;
constexpr int kTableSize = 1 << kTableBits;
constexpr int64_t kParallelMin = 1 << 16;  // below this many elements, one thread
constexpr int64_t kCacheMax = 1 << 18;     // rows up to this length keep exp(x - m) (2 MiB)

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

// The statistics of one stretch with max m (finite): the sum of exp(x - m) over the entries
// below m, and the number of entries equal to m, in one loop.
struct Stretch {
  float m;
  bool nan;
  double others;  // sum of exp(x - m) over x != m (0 unless m is finite)
  int64_t ties;   // entries equal to m
};

// Sums in three levels: vectorized blocks of kBlock entries, groups of kGroup entries, and
// the total. A plain running sum of n terms can be off by about n/8 roundings (8 lanes);
// this keeps it to about kBlock/8 + kGroup/kBlock + n/kGroup, 200 roundings (4e-14 relative)
// for any row up to 2**24 entries: far below a float32 ulp, so results stay correctly rounded.
constexpr int64_t kBlock = 512;
constexpr int64_t kGroup = 65536;

// One block: sum of exp(x - m) over the entries below m (mf = m as a float), counting the
// entries equal to m into *ties. (Plain pointer arguments: captured in a lambda, x made the
// compiler gather its loads one by one.)
static double block_others(const float* x, int64_t n, float mf, double m, int64_t* ties) {
  double s = 0.0;
  int64_t t = 0;
#pragma omp simd reduction(+ : s, t)
  for (int64_t i = 0; i < n; ++i) {
    const bool at_max = x[i] == mf;
    const double e = exp_nonpositive(static_cast<double>(x[i]) - m);
    s += at_max ? 0.0 : e;
    t += at_max;
  }
  *ties += t;
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
  const float mf = rm.m;
  const double m = mf;
  int64_t ties = 0;
  st.others = blocked_sum(n, x + n, [=, &ties](int64_t b, int64_t len) {
    return block_others(x + b, len, mf, m, &ties);
  });
  st.ties = ties;
  return st;
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
// In parallel, each stretch is summed relative to its own max in the same pass as that max
// (the online normalizer of Milakov & Gimelshein 2018), and the stretches are then rescaled
// to the row max: one pass over memory instead of two.
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
    return {st.m, false, st.others + static_cast<double>(st.ties - 1)};
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
  double others = 0.0;
  int64_t ties = 0;
  for (const Stretch& st : parts) {
    if (st.m == m) {
      others += st.others;
      ties += st.ties;
    } else if (std::isfinite(m) && st.m != -std::numeric_limits<float>::infinity()) {
      // every entry of this stretch is below m: rescale its sum (ties included) to m
      const double scale = exp_nonpositive(static_cast<double>(st.m) - static_cast<double>(m));
      others += (st.others + static_cast<double>(st.ties)) * scale;
    }
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
