// Reference implementations and test-data helpers for the attention tests.
//
// Everything here is written from the public header comments (include/adamas/attention.h), never from src/:
// plain scalar loops in double, explicit matrices, full sorts. They are slow on purpose, so keep the sizes they
// run on moderate. The helpers build inputs with fresh random values and poisoned padding.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "adamas/attention.h"

namespace ref {

using adamas::DType;
using adamas::Thresholds;

// ------------------------------------------------------------------------------------------------------------
// Seeds: every test draws a fresh seed (std::random_device) and prints it on failure; ADAMAS_TEST_SEED=<n>
// reruns with a fixed one.
// ------------------------------------------------------------------------------------------------------------

inline uint32_t fresh_seed() {
  if (const char* s = std::getenv("ADAMAS_TEST_SEED")) return uint32_t(std::strtoul(s, nullptr, 10));
  return std::random_device{}();
}

#define ADAMAS_SEEDED_RNG(rng)                                                                      \
  const uint32_t rng##_seed = ::ref::fresh_seed();                                                  \
  SCOPED_TRACE(::testing::Message() << "seed=" << rng##_seed << " (rerun: ADAMAS_TEST_SEED=" << rng##_seed \
                                    << ")");                                                        \
  std::mt19937 rng(rng##_seed)

inline double normal(std::mt19937& rng, double sigma = 1.0) { return std::normal_distribution<double>(0.0, sigma)(rng); }
inline int64_t uniform_int(std::mt19937& rng, int64_t lo, int64_t hi) {  // inclusive
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}

// ------------------------------------------------------------------------------------------------------------
// f16 / bf16, by bit manipulation (IEEE binary16; bfloat16 = the top half of a binary32), round to nearest even.
// ------------------------------------------------------------------------------------------------------------

inline float bf16_to_f32(uint16_t h) { return std::bit_cast<float>(uint32_t(h) << 16); }

inline uint16_t f32_to_bf16(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if (std::isnan(f)) return 0x7fc0;
  const uint32_t lower = u & 0xffffu, upper = u >> 16;
  // round half to even on the dropped 16 bits
  if (lower > 0x8000u || (lower == 0x8000u && (upper & 1u))) return uint16_t(upper + 1);
  return uint16_t(upper);
}

inline float f16_to_f32(uint16_t h) {
  const int sign = (h >> 15) & 1, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  double v;
  if (exp == 0x1f) v = mant ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  else if (exp == 0) v = std::ldexp(double(mant), -24);             // subnormal
  else v = std::ldexp(double(mant + 1024), exp - 25);               // 1.mant * 2^(exp-15)
  return float(sign ? -v : v);
}

inline uint16_t f32_to_f16(float f) {
  if (std::isnan(f)) return 0x7e00;
  const uint16_t sign = std::signbit(f) ? 0x8000 : 0;
  double a = std::fabs(double(f));
  if (a >= 65520.0) return sign | 0x7c00;  // rounds to infinity
  // Find the quantum of the binade of a (subnormals share the quantum 2^-24), round a / quantum to nearest even.
  int e = a == 0 ? -30 : std::ilogb(a);
  if (e < -14) e = -14;
  const double quantum = std::ldexp(1.0, e - 10);
  double m = std::nearbyint(a / quantum);  // default rounding mode: to nearest even
  // m in [0, 2048]; m == 2048 means rounding carried into the next binade
  int64_t bits;
  if (e == -14 && m < 1024) bits = int64_t(m);  // subnormal (or zero)
  else {
    if (m >= 2048) { m /= 2; ++e; }
    bits = (int64_t(e + 15) << 10) | (int64_t(m) - 1024);
  }
  return uint16_t(sign | bits);
}

// The value a float becomes once stored in `dtype` and loaded back.
inline float round_to(DType dtype, float x) {
  switch (dtype) {
    case DType::f32: return x;
    case DType::f16: return f16_to_f32(f32_to_f16(x));
    case DType::bf16: return bf16_to_f32(f32_to_bf16(x));
  }
  return x;
}
inline size_t elem_size(DType dtype) { return dtype == DType::f32 ? 4 : 2; }
inline const char* name(DType dtype) {
  return dtype == DType::f32 ? "f32" : dtype == DType::f16 ? "f16" : "bf16";
}

// Store / load element i of a raw buffer of `dtype`.
inline void store(void* data, DType dtype, int64_t i, float x) {
  if (dtype == DType::f32) std::memcpy(static_cast<char*>(data) + 4 * i, &x, 4);
  else {
    const uint16_t h = dtype == DType::f16 ? f32_to_f16(x) : f32_to_bf16(x);
    std::memcpy(static_cast<char*>(data) + 2 * i, &h, 2);
  }
}
inline float load(const void* data, DType dtype, int64_t i) {
  if (dtype == DType::f32) { float x; std::memcpy(&x, static_cast<const char*>(data) + 4 * i, 4); return x; }
  uint16_t h;
  std::memcpy(&h, static_cast<const char*>(data) + 2 * i, 2);
  return dtype == DType::f16 ? f16_to_f32(h) : bf16_to_f32(h);
}

// ------------------------------------------------------------------------------------------------------------
// 1. Hadamard: explicit Sylvester matrix H[i][j] = (-1)^popcount(i & j) / sqrt(d), in double.
// ------------------------------------------------------------------------------------------------------------

inline const std::vector<double>& hadamard_matrix(int64_t d) {
  static std::map<int64_t, std::vector<double>> cache;
  auto& m = cache[d];
  if (m.empty()) {
    m.resize(size_t(d * d));
    const double s = 1.0 / std::sqrt(double(d));
    for (int64_t i = 0; i < d; ++i)
      for (int64_t j = 0; j < d; ++j) m[size_t(i * d + j)] = (std::popcount(uint64_t(i & j)) & 1) ? -s : s;
  }
  return m;
}

// y = x H (H is symmetric, so also H x).
inline std::vector<double> hadamard(const double* x, int64_t d) {
  const auto& h = hadamard_matrix(d);
  std::vector<double> y(size_t(d), 0.0);
  for (int64_t i = 0; i < d; ++i) {
    const double xi = x[i];
    const double* hr = &h[size_t(i * d)];
    for (int64_t j = 0; j < d; ++j) y[size_t(j)] += xi * hr[j];
  }
  return y;
}
inline std::vector<double> hadamard(const std::vector<double>& x) { return hadamard(x.data(), int64_t(x.size())); }

// ------------------------------------------------------------------------------------------------------------
// 2. Codes: c = [x > t0] + [x > t1] + [x > t2]; coordinate i in byte i/4, bits 2*(i%4) and 2*(i%4)+1.
// ------------------------------------------------------------------------------------------------------------

inline int bucket(double x, const Thresholds& t) {
  return int(x > double(t.t0)) + int(x > double(t.t1)) + int(x > double(t.t2));
}
inline std::vector<int> bucketize(const std::vector<double>& rotated, const Thresholds& t) {
  std::vector<int> c(rotated.size());
  for (size_t i = 0; i < c.size(); ++i) c[i] = bucket(rotated[i], t);
  return c;
}
inline std::vector<uint8_t> pack(const std::vector<int>& codes) {
  std::vector<uint8_t> bytes(codes.size() / 4, 0);
  for (size_t i = 0; i < codes.size(); ++i) bytes[i / 4] = uint8_t(bytes[i / 4] | (codes[i] << (2 * (i % 4))));
  return bytes;
}
inline std::vector<int> unpack(const uint8_t* bytes, int64_t dim) {
  std::vector<int> c(static_cast<size_t>(dim));
  for (int64_t i = 0; i < dim; ++i) c[size_t(i)] = (bytes[i / 4] >> (2 * (i % 4))) & 3;
  return c;
}

// ------------------------------------------------------------------------------------------------------------
// 3. Estimate: L1 between two packed codes, by unpacking each.
// ------------------------------------------------------------------------------------------------------------

inline int l1(const uint8_t* a, const uint8_t* b, int64_t dim) {
  const auto ca = unpack(a, dim), cb = unpack(b, dim);
  int s = 0;
  for (int64_t i = 0; i < dim; ++i) s += std::abs(ca[size_t(i)] - cb[size_t(i)]);
  return s;
}

// ------------------------------------------------------------------------------------------------------------
// 4. Select, by a full sort: forced [0, sink) and the last max(window, 1) tokens; the rest by (distance
// ascending, index descending); budget >= n keeps all. Result increasing.
// ------------------------------------------------------------------------------------------------------------

inline std::vector<int32_t> all_tokens(int64_t n) {
  std::vector<int32_t> r(static_cast<size_t>(n));
  std::iota(r.begin(), r.end(), 0);
  return r;
}

template <class Dist>
std::vector<int32_t> select_topk(const std::vector<Dist>& dist, const adamas::SelectOptions& o) {
  const int64_t n = int64_t(dist.size());
  if (o.budget >= n) return all_tokens(n);
  std::vector<char> keep(size_t(n), 0);
  for (int64_t i = 0; i < std::min(o.sink, n); ++i) keep[size_t(i)] = 1;
  for (int64_t i = std::max<int64_t>(0, n - std::max<int64_t>(o.window, 1)); i < n; ++i) keep[size_t(i)] = 1;
  int64_t forced = std::count(keep.begin(), keep.end(), 1);
  std::vector<int32_t> rest;
  for (int64_t i = 0; i < n; ++i)
    if (!keep[size_t(i)]) rest.push_back(int32_t(i));
  std::sort(rest.begin(), rest.end(), [&](int32_t a, int32_t b) {
    if (dist[size_t(a)] != dist[size_t(b)]) return dist[size_t(a)] < dist[size_t(b)];
    return a > b;  // ties: the more recent token first
  });
  for (int64_t i = 0; i < o.budget - forced && i < int64_t(rest.size()); ++i) keep[size_t(rest[size_t(i)])] = 1;
  std::vector<int32_t> out;
  for (int64_t i = 0; i < n; ++i)
    if (keep[size_t(i)]) out.push_back(int32_t(i));
  return out;
}

// StreamingLLM: the first `sink` tokens and the most recent budget - sink; all when n <= budget.
inline std::vector<int32_t> streaming_select(int64_t n, int64_t budget, int64_t sink) {
  if (n <= budget) return all_tokens(n);
  std::vector<int32_t> out;
  for (int64_t i = 0; i < sink; ++i) out.push_back(int32_t(i));
  for (int64_t i = n - (budget - sink); i < n; ++i) out.push_back(int32_t(i));
  return out;
}

inline std::vector<int32_t> set_union(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  std::vector<int32_t> u;
  std::set_union(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(u));
  return u;
}

// ------------------------------------------------------------------------------------------------------------
// Test data: [heads][tokens][dim] of a dtype in a raw buffer with any strides, padding poisoned with NaN, plus
// the exact values (what the buffer decodes to) in double.
// ------------------------------------------------------------------------------------------------------------

enum class Layout {
  contiguous,   // [heads][tokens][dim]
  padded,       // odd padding after each row and each head (unaligned rows)
  interleaved,  // [tokens][heads][dim], as in an engine's cache
};
inline const char* name(Layout l) {
  return l == Layout::contiguous ? "contiguous" : l == Layout::padded ? "padded" : "interleaved";
}

struct Heads {
  DType dtype = DType::f32;
  int64_t heads = 0, tokens = 0, dim = 0, head_stride = 0, token_stride = 0;
  std::vector<unsigned char> bytes;
  std::vector<double> values;  // [heads][tokens][dim], exact

  adamas::HeadsView view() const { return {bytes.data(), dtype, heads, tokens, dim, head_stride, token_stride}; }
  int64_t offset(int64_t h, int64_t t, int64_t i) const { return h * head_stride + t * token_stride + i; }
  const double* row(int64_t h, int64_t t) const { return &values[size_t((h * tokens + t) * dim)]; }
  double at(int64_t h, int64_t t, int64_t i) const { return values[size_t((h * tokens + t) * dim + i)]; }
  void set(int64_t h, int64_t t, int64_t i, double x) {
    store(bytes.data(), dtype, offset(h, t, i), float(x));
    values[size_t((h * tokens + t) * dim + i)] = load(bytes.data(), dtype, offset(h, t, i));
  }
  double rms() const {
    double s = 0;
    for (double x : values) s += x * x;
    return values.empty() ? 0.0 : std::sqrt(s / double(values.size()));
  }
};

inline Heads make_heads(std::mt19937& rng, DType dtype, int64_t heads, int64_t tokens, int64_t dim,
                        Layout layout = Layout::contiguous, double sigma = 1.0) {
  Heads x;
  x.dtype = dtype, x.heads = heads, x.tokens = tokens, x.dim = dim;
  switch (layout) {
    case Layout::contiguous: x.token_stride = dim, x.head_stride = tokens * dim; break;
    case Layout::padded: x.token_stride = dim + 5, x.head_stride = tokens * (dim + 5) + 7; break;
    case Layout::interleaved: x.token_stride = heads * dim, x.head_stride = dim; break;
  }
  const int64_t elems = (heads - 1) * x.head_stride + std::max<int64_t>(tokens - 1, 0) * x.token_stride + dim;
  x.bytes.resize(size_t(elems) * elem_size(dtype));
  for (int64_t i = 0; i < elems; ++i) store(x.bytes.data(), dtype, i, std::numeric_limits<float>::quiet_NaN());
  x.values.resize(size_t(heads * tokens * dim));
  std::normal_distribution<float> nd(0.0f, float(sigma));
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t i = 0; i < dim; ++i) x.set(h, t, i, nd(rng));
  return x;
}

// Packed codes [heads][tokens] with optional padding between rows (filled with random bytes).
struct Codes {
  int64_t heads = 0, tokens = 0, dim = 0, head_stride = 0, token_stride = 0;
  std::vector<uint8_t> bytes;
  adamas::CodesView view() const { return {bytes.data(), heads, tokens, dim, head_stride, token_stride}; }
  adamas::MutCodesView mut() { return {bytes.data(), heads, tokens, dim, head_stride, token_stride}; }
  const uint8_t* row(int64_t h, int64_t t) const { return &bytes[size_t(h * head_stride + t * token_stride)]; }
  uint8_t* row(int64_t h, int64_t t) { return &bytes[size_t(h * head_stride + t * token_stride)]; }
};

inline Codes make_codes(std::mt19937& rng, int64_t heads, int64_t tokens, int64_t dim, bool padded) {
  Codes c;
  c.heads = heads, c.tokens = tokens, c.dim = dim;
  c.token_stride = dim / 4 + (padded ? 3 : 0);
  c.head_stride = tokens * c.token_stride + (padded ? 5 : 0);
  c.bytes.resize(size_t(heads * c.head_stride + 8));
  for (auto& b : c.bytes) b = uint8_t(rng());  // every byte is 4 valid codes
  return c;
}

// Reference codes of all tokens of `keys`: thresholds[h] or thresholds[0] when there is one.
inline void encode_all(const Heads& keys, const std::vector<Thresholds>& thresholds, Codes& codes) {
  for (int64_t h = 0; h < keys.heads; ++h) {
    const Thresholds& t = thresholds.size() == 1 ? thresholds[0] : thresholds[size_t(h)];
    for (int64_t j = 0; j < keys.tokens; ++j) {
      const auto packed = pack(bucketize(hadamard(keys.row(h, j), keys.dim), t));
      std::copy(packed.begin(), packed.end(), codes.row(h, j));
    }
  }
}

// ------------------------------------------------------------------------------------------------------------
// 5, 6. Attention in double: softmax(scale * q K[rows]^T) V[rows].
// ------------------------------------------------------------------------------------------------------------

inline std::vector<double> attention(const double* q, const Heads& k, const Heads& v, int64_t head,
                                     const std::vector<int32_t>& rows, double scale) {
  const int64_t d = k.dim;
  std::vector<double> logits(rows.size());
  double m = -std::numeric_limits<double>::infinity();
  for (size_t r = 0; r < rows.size(); ++r) {
    const double* kr = k.row(head, rows[r]);
    double s = 0;
    for (int64_t i = 0; i < d; ++i) s += q[i] * kr[i];
    logits[r] = scale * s;
    m = std::max(m, logits[r]);
  }
  std::vector<double> out(size_t(d), 0.0);
  double denom = 0;
  for (size_t r = 0; r < rows.size(); ++r) {
    const double w = std::exp(logits[r] - m);
    denom += w;
    const double* vr = v.row(head, rows[r]);
    for (int64_t i = 0; i < d; ++i) out[size_t(i)] += w * vr[i];
  }
  for (auto& x : out) x /= denom;
  return out;
}
inline std::vector<double> attention(const float* q, const Heads& k, const Heads& v, int64_t head,
                                     const std::vector<int32_t>& rows, double scale) {
  std::vector<double> qd(q, q + k.dim);
  return attention(qd.data(), k, v, head, rows, scale);
}

// Tolerance of an f32-accumulated attention output against the double reference: 1e-4 relative, plus an
// absolute part for the f32 sums over n rows (grows like sqrt(n), the random-walk error of a running sum).
inline double attention_tol(double want, double v_rms, int64_t n_rows) {
  return 1e-4 * std::fabs(want) + v_rms * (1e-5 + 2e-7 * std::sqrt(double(std::max<int64_t>(n_rows, 1))));
}

// Counts the elements out of tolerance and reports the first few as test failures.
inline int expect_attention_near(const float* got, const std::vector<double>& want, double v_rms, int64_t n_rows,
                                 const std::string& what) {
  int bad = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double tol = attention_tol(want[i], v_rms, n_rows);
    if (!(std::fabs(double(got[i]) - want[i]) <= tol)) {
      if (++bad <= 3)
        ADD_FAILURE() << what << ": element " << i << " got " << got[i] << " want " << want[i] << " (tol " << tol
                      << ", rows " << n_rows << ")";
    }
  }
  return bad;
}

// ------------------------------------------------------------------------------------------------------------
// 8. Quest: brute-force page min/max and page scores sum_i max(q_i*max_i, q_i*min_i), in double.
// ------------------------------------------------------------------------------------------------------------

inline std::vector<double> page_min_max(const Heads& k, int64_t head, int64_t page, int64_t page_size,
                                        int64_t n_tokens, bool want_max) {
  std::vector<double> r(size_t(k.dim), want_max ? -INFINITY : INFINITY);
  for (int64_t t = page * page_size; t < std::min(n_tokens, (page + 1) * page_size); ++t)
    for (int64_t i = 0; i < k.dim; ++i)
      r[size_t(i)] = want_max ? std::max(r[size_t(i)], k.at(head, t, i)) : std::min(r[size_t(i)], k.at(head, t, i));
  return r;
}

inline double quest_score(const float* q, const Heads& k, int64_t head, int64_t page, int64_t page_size,
                          int64_t n_tokens) {
  const auto mn = page_min_max(k, head, page, page_size, n_tokens, false);
  const auto mx = page_min_max(k, head, page, page_size, n_tokens, true);
  double s = 0;
  for (int64_t i = 0; i < k.dim; ++i) s += std::max(double(q[i]) * mx[size_t(i)], double(q[i]) * mn[size_t(i)]);
  return s;
}

// Owned Quest page buffers, poisoned with NaN.
struct Pages {
  std::vector<float> mn, mx;
  adamas::QuestPagesView view;
  Pages(int64_t heads, int64_t capacity_pages, int64_t dim, int64_t page_size = 16) {
    mn.assign(size_t(heads * capacity_pages * dim), NAN);
    mx.assign(mn.size(), NAN);
    view = {mn.data(), mx.data(), heads, capacity_pages, dim, page_size};
  }
};

// ------------------------------------------------------------------------------------------------------------
// Error checks: the call throws adamas::Error of one of `kinds`, whose message contains one of `words`
// (case-insensitive): the message must name the bad input.
// ------------------------------------------------------------------------------------------------------------

inline std::string lower(std::string s) {
  for (auto& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

template <class F>
void expect_error(F&& f, std::initializer_list<adamas::ErrorKind> kinds, std::initializer_list<const char*> words,
                  const std::string& what) {
  SCOPED_TRACE(what);
  try {
    f();
    ADD_FAILURE() << what << ": no adamas::Error thrown";
  } catch (const adamas::Error& e) {
    const bool kind_ok = std::find(kinds.begin(), kinds.end(), e.kind()) != kinds.end();
    EXPECT_TRUE(kind_ok) << what << ": wrong kind " << adamas::error_kind_name(e.kind()) << " (" << e.what() << ")";
    const std::string msg = lower(e.what());
    bool named = false;
    for (const char* w : words) named = named || msg.find(lower(w)) != std::string::npos;
    std::string list;
    for (const char* w : words) list += std::string(" '") + w + "'";
    EXPECT_TRUE(named) << what << ": message \"" << e.what() << "\" names none of" << list;
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << ": threw a non-adamas exception: " << e.what();
  }
}

// ------------------------------------------------------------------------------------------------------------
// Decode steps: a query whose rotated coordinates sit well inside their buckets (so the library's f32 rotation
// and the double reference give the same query code), and a whole decode input set.
// ------------------------------------------------------------------------------------------------------------

// A value inside bucket c of t, at least 15% of the smallest threshold gap away from every threshold.
inline double point_in_bucket(std::mt19937& rng, int c, const Thresholds& t) {
  const double gap = std::min(double(t.t1) - t.t0, double(t.t2) - t.t1), margin = 0.15 * gap;
  std::uniform_real_distribution<double> u(0.0, 1.0);
  switch (c) {
    case 0: return t.t0 - margin - u(rng) * 2 * gap;
    case 1: return t.t0 + margin + u(rng) * (double(t.t1) - t.t0 - 2 * margin);
    case 2: return t.t1 + margin + u(rng) * (double(t.t2) - t.t1 - 2 * margin);
    default: return t.t2 + margin + u(rng) * 2 * gap;
  }
}

// q = H r (H is its own inverse) with r chosen inside random buckets: the rotation of q is r.
inline std::vector<float> query_off_thresholds(std::mt19937& rng, int64_t d, const Thresholds& t) {
  std::vector<double> r(static_cast<size_t>(d));
  for (auto& x : r) x = point_in_bucket(rng, int(rng() % 4), t);
  const auto q = hadamard(r);
  return std::vector<float>(q.begin(), q.end());
}

inline std::vector<uint8_t> query_code(const float* q, int64_t d, const Thresholds& t) {
  std::vector<double> x(q, q + d);
  return pack(bucketize(hadamard(x), t));
}

// Quest pages filled by brute force from the key values (capacity one page more than needed, rest NaN).
inline void fill_pages(const Heads& k, Pages& pages) {
  const int64_t ps = pages.view.page_size;
  for (int64_t h = 0; h < k.heads; ++h)
    for (int64_t p = 0; p * ps < k.tokens; ++p) {
      const auto mn = page_min_max(k, h, p, ps, k.tokens, false), mx = page_min_max(k, h, p, ps, k.tokens, true);
      for (int64_t i = 0; i < k.dim; ++i) {
        pages.view.page_min(h, p)[i] = float(mn[size_t(i)]);
        pages.view.page_max(h, p)[i] = float(mx[size_t(i)]);
      }
    }
}

struct DecodeCase {
  int64_t d = 0, kv = 0, group = 0, n_heads = 0, tokens = 0;
  Heads k, v;
  Codes codes;
  std::unique_ptr<Pages> pages;
  std::vector<float> q;                 // [n_heads][d]
  std::vector<Thresholds> query_thr;    // n_heads entries: the thresholds each head's query code uses
  bool pass_query_thresholds = false;   // put query_thr in DecodeInputs (calibrated mode)

  adamas::DecodeInputs inputs() const {
    adamas::DecodeInputs in;
    in.q = q.data();
    in.n_heads = n_heads;
    in.k = k.view();
    in.v = v.view();
    in.codes = codes.view();
    in.pages = pages->view;
    if (pass_query_thresholds) in.query_thresholds = query_thr;
    return in;
  }
  const float* q_head(int64_t h) const { return &q[size_t(h * d)]; }
  // The reference L1 distances of query head h to every key of its KV head.
  std::vector<int> distances(int64_t h) const {
    const auto qc = query_code(q_head(h), d, query_thr[size_t(h)]);
    std::vector<int> dist(static_cast<size_t>(tokens));
    for (int64_t j = 0; j < tokens; ++j) dist[size_t(j)] = l1(qc.data(), codes.row(h / group, j), d);
    return dist;
  }
};

// A decode step: K/V of `dtype` and `layout`, key codes encoded by the reference with `key_thr` (or random codes
// when encode_keys is false: cheaper at long contexts, and decode never recomputes them), queries off-threshold
// for `thr` (one per query head, or one for all).
inline DecodeCase make_decode_case(std::mt19937& rng, DType dtype, Layout layout, int64_t d, int64_t kv,
                                   int64_t group, int64_t tokens, const std::vector<Thresholds>& query_thr,
                                   const Thresholds& key_thr, bool encode_keys = true) {
  DecodeCase c;
  c.d = d, c.kv = kv, c.group = group, c.n_heads = kv * group, c.tokens = tokens;
  c.k = make_heads(rng, dtype, kv, tokens, d, layout);
  c.v = make_heads(rng, dtype, kv, tokens, d, layout);
  c.codes = make_codes(rng, kv, tokens, d, layout != Layout::contiguous);
  if (encode_keys) encode_all(c.k, {key_thr}, c.codes);
  c.pages = std::make_unique<Pages>(kv, (tokens + 15) / 16 + 1, d, 16);
  fill_pages(c.k, *c.pages);
  for (int64_t h = 0; h < c.n_heads; ++h) {
    c.query_thr.push_back(query_thr.size() == 1 ? query_thr[0] : query_thr[size_t(h)]);
    const auto qh = query_off_thresholds(rng, d, c.query_thr.back());
    c.q.insert(c.q.end(), qh.begin(), qh.end());
  }
  return c;
}

// Runs decode_attention with a NaN-poisoned output.
inline std::vector<float> run_decode(const DecodeCase& c, const adamas::AttentionConfig& cfg,
                                     adamas::DecodeWorkspace& ws, adamas::DecodeTimings* timings = nullptr) {
  std::vector<float> out(size_t(c.n_heads * c.d), NAN);
  adamas::decode_attention(c.inputs(), cfg, ws, out.data(), timings);
  return out;
}

inline std::vector<int32_t> last_selection(const adamas::DecodeWorkspace& ws, int64_t head) {
  const auto s = adamas::last_selection(ws, head);
  return std::vector<int32_t>(s.begin(), s.end());
}

}  // namespace ref
