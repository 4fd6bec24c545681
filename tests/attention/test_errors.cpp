// Bad inputs: every entry point throws adamas::Error (never aborts, never silently continues) of the documented
// kind, with a message that names the bad input. error.h: invalid_argument = a value out of its domain (budget
// <= 0, d not a power of two, null pointer, out-of-range index), shape_mismatch = views whose shapes disagree,
// unsupported = a valid request this build cannot serve (e.g. a power-of-two head_dim outside [16, 512]).
#include "reference.h"

namespace {

using adamas::AttentionConfig;
using adamas::DType;
using adamas::ErrorKind;
using adamas::Method;
using adamas::SelectOptions;
using adamas::Thresholds;
using ref::expect_error;

constexpr ErrorKind kInvalid = ErrorKind::invalid_argument;
constexpr ErrorKind kShape = ErrorKind::shape_mismatch;

TEST(Errors, HeadDimNotPowerOfTwo) {
  std::vector<float> x(1024, 1.0f);
  std::vector<uint8_t> code(256);
  for (int64_t d : {48, 96, 100, 0, -16}) {
    const std::string tag = " d=" + std::to_string(d);
    expect_error([&] { adamas::hadamard_transform(x.data(), d); }, {kInvalid}, {"dim"}, "hadamard_transform" + tag);
    expect_error([&] { adamas::hadamard_rows(x.data(), DType::f32, 2, d, 128); }, {kInvalid}, {"dim"},
                 "hadamard_rows" + tag);
    expect_error([&] { adamas::encode_vector(x.data(), DType::f32, d, {}, code.data()); }, {kInvalid}, {"dim"},
                 "encode_vector" + tag);
    expect_error([&] { adamas::encode_rotated(x.data(), d, {}, code.data()); }, {kInvalid}, {"dim"},
                 "encode_rotated" + tag);
  }
}

// 8 and 1024 are powers of two the operator does not support: error.h lists head_dim under `unsupported`.
TEST(Errors, UnsupportedHeadDimKind) {
  std::vector<float> x(1024, 1.0f);
  for (int64_t d : {8, 1024}) {
    expect_error([&] { adamas::hadamard_transform(x.data(), d); }, {ErrorKind::unsupported}, {"dim"},
                 "hadamard_transform d=" + std::to_string(d));
  }
}

TEST(Errors, NullPointers) {
  std::vector<float> x(128, 1.0f);
  std::vector<uint8_t> code(32);
  std::vector<uint16_t> dist(16);
  std::vector<int32_t> out(16);
  expect_error([&] { adamas::hadamard_transform(nullptr, 64); }, {kInvalid}, {"null"}, "hadamard_transform(null)");
  expect_error([&] { adamas::hadamard_rows(nullptr, DType::f16, 1, 64, 64); }, {kInvalid}, {"null"},
               "hadamard_rows(null)");
  expect_error([&] { adamas::encode_vector(nullptr, DType::f32, 64, {}, code.data()); }, {kInvalid}, {"null"},
               "encode_vector(null x)");
  expect_error([&] { adamas::encode_vector(x.data(), DType::f32, 64, {}, nullptr); }, {kInvalid}, {"null"},
               "encode_vector(null code)");
  SelectOptions o;
  o.budget = 4;  // < n: the distances must be read
  expect_error([&] { adamas::select_topk(nullptr, 16, 384, o, out.data()); }, {kInvalid}, {"null"},
               "select_topk(null distances)");
  expect_error([&] { adamas::select_topk(dist.data(), 16, 384, o, nullptr); }, {kInvalid}, {"null"},
               "select_topk(null out)");
  std::mt19937 rng(1);
  const auto codes = ref::make_codes(rng, 1, 16, 64, false);
  expect_error([&] { adamas::l1_distances(nullptr, codes.view(), 0, dist.data()); }, {kInvalid}, {"null"},
               "l1_distances(null query)");
  expect_error([&] { adamas::l1_distances(code.data(), codes.view(), 0, nullptr); }, {kInvalid}, {"null"},
               "l1_distances(null out)");
  expect_error([&] { adamas::calibrate_thresholds(nullptr, 4, 64, 64); }, {kInvalid}, {"null"},
               "calibrate_thresholds(null)");
}

TEST(Errors, Thresholds) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const Thresholds bad[] = {{0, 0, 1}, {-1, 1, 1}, {1, 0, 2}, {-1, 2, 1}, {nan, 0, 1}, {-1, nan, 1},
                            {-1, 0, nan}, {-inf, 0, 1}, {-1, 0, inf}, {3, 2, 1}};
  for (const Thresholds& t : bad) {
    const std::string tag = " (" + std::to_string(t.t0) + ", " + std::to_string(t.t1) + ", " + std::to_string(t.t2) + ")";
    expect_error([&] { adamas::validate_thresholds(t); }, {kInvalid}, {"threshold", "t0", "t1", "t2"},
                 "validate_thresholds" + tag);
    std::vector<float> x(64, 0.5f);
    std::vector<uint8_t> code(16);
    expect_error([&] { adamas::encode_rotated(x.data(), 64, t, code.data()); }, {kInvalid},
                 {"threshold", "t0", "t1", "t2"}, "encode_rotated" + tag);
    AttentionConfig c;
    c.thresholds = t;
    expect_error([&] { adamas::validate_config(c); }, {kInvalid}, {"threshold", "t0", "t1", "t2"},
                 "validate_config" + tag);
  }
  EXPECT_NO_THROW(adamas::validate_thresholds({-10, 0, 10}));
  EXPECT_NO_THROW(adamas::validate_thresholds({-1e-3f, 0, 1e-3f}));
}

TEST(Errors, SelectOptions) {
  auto opts = [](int64_t b, int64_t s, int64_t w) {
    SelectOptions o;
    o.budget = b, o.sink = s, o.window = w;
    return o;
  };
  for (int64_t b : {0, -1, -256})
    expect_error([&] { adamas::validate_select(opts(b, 0, 0)); }, {kInvalid}, {"budget"},
                 "budget=" + std::to_string(b));
  // sink + max(window, 1) > budget
  for (auto [b, s, w] : {std::tuple{4, 4, 0}, std::tuple{4, 2, 3}, std::tuple{1, 1, 0}, std::tuple{8, 0, 9}})
    expect_error([&] { adamas::validate_select(opts(b, s, w)); }, {kInvalid}, {"sink", "window"},
                 "budget=" + std::to_string(b) + " sink=" + std::to_string(s) + " window=" + std::to_string(w));
  expect_error([&] { adamas::validate_select(opts(8, -1, 0)); }, {kInvalid}, {"sink"}, "sink=-1");
  expect_error([&] { adamas::validate_select(opts(8, 0, -2)); }, {kInvalid}, {"window"}, "window=-2");
  // select_topk validates its options too
  std::vector<uint16_t> dist(10, 3);
  std::vector<int32_t> out(10);
  expect_error([&] { adamas::select_topk(dist.data(), 10, 384, opts(0, 0, 0), out.data()); }, {kInvalid},
               {"budget"}, "select_topk budget=0");
  expect_error([&] { adamas::select_topk(dist.data(), 10, 384, opts(4, 3, 2), out.data()); }, {kInvalid},
               {"sink", "window"}, "select_topk sink+window>budget");
}

TEST(Errors, ConfigAndMethodNames) {
  AttentionConfig c;
  for (Method m : {Method::full, Method::adamas, Method::quest, Method::streaming}) {
    c = AttentionConfig{};
    c.method = m;
    c.budget = 0;
    expect_error([&] { adamas::validate_config(c); }, {kInvalid}, {"budget"},
                 std::string("budget=0 for ") + adamas::method_name(m));
  }
  c = AttentionConfig{};
  c.budget = 16, c.sink = 10, c.window = 10;
  expect_error([&] { adamas::validate_config(c); }, {kInvalid}, {"sink", "window"}, "sink+window>budget");
  expect_error([&] { adamas::parse_method("bogus-method"); }, {kInvalid}, {"bogus-method"}, "parse_method");
  expect_error([&] { adamas::parse_method(""); }, {kInvalid}, {"method"}, "parse_method(\"\")");
}

// Shared small inputs for the shape checks.
struct Small {
  std::mt19937 rng{ref::fresh_seed()};
  ref::Heads k = ref::make_heads(rng, DType::f32, 2, 40, 64);
  ref::Heads v = ref::make_heads(rng, DType::f32, 2, 40, 64);
  ref::Codes codes = ref::make_codes(rng, 2, 40, 64, false);
  std::vector<float> q = std::vector<float>(8 * 64, 0.25f);
};

TEST(Errors, EncodeKeysShapes) {
  Small s;
  std::vector<Thresholds> one(1);
  auto codes32 = ref::make_codes(s.rng, 2, 40, 32, false);  // code dim 32 for keys of dim 64
  expect_error([&] { adamas::encode_keys(s.k.view(), 0, 40, one, codes32.mut()); }, {kShape}, {"dim"},
               "encode_keys codes dim != k dim");
  auto codes3 = ref::make_codes(s.rng, 3, 40, 64, false);
  expect_error([&] { adamas::encode_keys(s.k.view(), 0, 40, one, codes3.mut()); }, {kShape}, {"head"},
               "encode_keys codes heads != k heads");
  auto short_codes = ref::make_codes(s.rng, 2, 10, 64, false);
  expect_error([&] { adamas::encode_keys(s.k.view(), 0, 40, one, short_codes.mut()); }, {kShape, kInvalid},
               {"token"}, "encode_keys codes too short");
  std::vector<Thresholds> three(3);  // neither 1 nor heads (2) entries
  expect_error([&] { adamas::encode_keys(s.k.view(), 0, 40, three, s.codes.mut()); }, {kShape, kInvalid},
               {"threshold"}, "encode_keys 3 thresholds for 2 heads");
  expect_error([&] { adamas::encode_keys(s.k.view(), 0, 40, {}, s.codes.mut()); }, {kShape, kInvalid},
               {"threshold"}, "encode_keys no thresholds");
  std::vector<Thresholds> bad = {{1, 0, 2}};
  expect_error([&] { adamas::encode_keys(s.k.view(), 0, 40, bad, s.codes.mut()); }, {kInvalid},
               {"threshold", "t0", "t1"}, "encode_keys bad thresholds");
  expect_error([&] { adamas::encode_keys(s.k.view(), 5, 41, one, s.codes.mut()); }, {kInvalid},
               {"range", "token", "end"}, "encode_keys end > tokens");
  expect_error([&] { adamas::encode_keys(s.k.view(), 7, 5, one, s.codes.mut()); }, {kInvalid},
               {"range", "begin", "token"}, "encode_keys begin > end");
}

TEST(Errors, EstimateShapes) {
  Small s;
  std::vector<uint8_t> qc(16 * 8);
  std::vector<uint16_t> out(8 * 40);
  expect_error([&] { adamas::l1_distances(qc.data(), s.codes.view(), 2, out.data()); }, {kInvalid}, {"head"},
               "l1_distances head out of range");
  expect_error([&] { adamas::l1_distances(qc.data(), s.codes.view(), -1, out.data()); }, {kInvalid}, {"head"},
               "l1_distances head -1");
  auto bad_dim = s.codes.view();
  bad_dim.dim = 48;
  expect_error([&] { adamas::l1_distances(qc.data(), bad_dim, 0, out.data()); }, {kInvalid}, {"dim"},
               "l1_distances codes dim 48");
  expect_error([&] { adamas::l1_distances_group(qc.data(), 2, s.codes.view(), 0, 10, 41, out.data(), 40); },
               {kInvalid}, {"range", "end", "token"}, "l1_distances_group end > tokens");
  expect_error([&] { adamas::l1_distances_group(qc.data(), 2, s.codes.view(), 0, 10, 30, out.data(), 5); },
               {kInvalid, kShape}, {"stride"}, "l1_distances_group out_stride < end - begin");
}

TEST(Errors, AttendShapes) {
  Small s;
  std::vector<float> out(8 * 64);
  const float scale = 0.125f;
  for (int32_t bad_row : {40, -1, 1000}) {
    const int32_t rows[] = {0, 5, bad_row};
    expect_error([&] { adamas::attend_rows(s.q.data(), s.k.view(), s.v.view(), 0, rows, 3, scale, out.data()); },
                 {kInvalid}, {"row"}, "attend_rows row " + std::to_string(bad_row));
  }
  const int32_t rows[] = {0, 1};
  expect_error([&] { adamas::attend_rows(s.q.data(), s.k.view(), s.v.view(), 2, rows, 2, scale, out.data()); },
               {kInvalid}, {"head"}, "attend_rows head out of range");
  auto v3 = ref::make_heads(s.rng, DType::f32, 3, 40, 64);  // V with 3 heads, K with 2
  expect_error([&] { adamas::attend_rows(s.q.data(), s.k.view(), v3.view(), 0, rows, 2, scale, out.data()); },
               {kShape}, {"head", "v"}, "attend_rows k/v heads differ");
  expect_error([&] { adamas::attend_dense_decode(s.q.data(), 4, s.k.view(), v3.view(), scale, out.data()); },
               {kShape}, {"head", "v"}, "attend_dense_decode k/v heads differ");
  auto v32 = ref::make_heads(s.rng, DType::f32, 2, 40, 32);
  expect_error([&] { adamas::attend_dense_decode(s.q.data(), 4, s.k.view(), v32.view(), scale, out.data()); },
               {kShape}, {"dim", "v"}, "attend_dense_decode k/v dims differ");
  for (int64_t n_heads : {3, 5, 0}) {
    expect_error([&] { adamas::attend_dense_decode(s.q.data(), n_heads, s.k.view(), s.v.view(), scale, out.data()); },
                 {kShape}, {"head"}, "attend_dense_decode n_heads=" + std::to_string(n_heads) + " for 2 KV heads");
  }
  expect_error([&] { adamas::attend_dense_causal(s.q.data(), 41, 2, 128, s.k.view(), s.v.view(), scale,
                                                 std::vector<float>(41 * 128).data(), 128); },
               {kInvalid, kShape}, {"quer", "token"}, "attend_dense_causal n_queries > tokens");
  expect_error([&] { adamas::attend_dense_causal(s.q.data(), 2, 2, 100, s.k.view(), s.v.view(), scale, out.data(),
                                                 128); },
               {kInvalid, kShape}, {"stride"}, "attend_dense_causal q_stride < n_heads * dim");
}

adamas::DecodeInputs inputs(const Small& s, int64_t n_heads) {
  adamas::DecodeInputs in;
  in.q = s.q.data();
  in.n_heads = n_heads;
  in.k = s.k.view();
  in.v = s.v.view();
  in.codes = s.codes.view();
  return in;
}

TEST(Errors, DecodeShapes) {
  Small s;
  adamas::DecodeWorkspace ws;
  std::vector<float> out(8 * 64);
  AttentionConfig cfg;
  cfg.budget = 8;  // < 40 tokens: the sparse path
  auto in = inputs(s, 4);
  EXPECT_NO_THROW(adamas::decode_attention(in, cfg, ws, out.data()));

  auto v3 = ref::make_heads(s.rng, DType::f32, 3, 40, 64);
  in = inputs(s, 6);
  in.v = v3.view();
  expect_error([&] { adamas::decode_attention(in, cfg, ws, out.data()); }, {kShape}, {"v"},
               "decode k and v heads differ");
  for (int64_t n_heads : {3, 7}) {
    in = inputs(s, n_heads);
    expect_error([&] { adamas::decode_attention(in, cfg, ws, out.data()); }, {kShape}, {"head"},
                 "decode n_heads=" + std::to_string(n_heads) + " not a multiple of 2 KV heads");
  }
  auto codes32 = ref::make_codes(s.rng, 2, 40, 32, false);
  in = inputs(s, 4);
  in.codes = codes32.view();
  expect_error([&] { adamas::decode_attention(in, cfg, ws, out.data()); }, {kShape}, {"dim"},
               "decode codes dim != k dim");
  auto codes_short = ref::make_codes(s.rng, 2, 20, 64, false);
  in = inputs(s, 4);
  in.codes = codes_short.view();
  expect_error([&] { adamas::decode_attention(in, cfg, ws, out.data()); }, {kShape}, {"token", "code"},
               "decode codes cover fewer tokens than k");
  std::vector<Thresholds> thr(3);  // 3 query thresholds for 4 query heads
  in = inputs(s, 4);
  in.query_thresholds = thr;
  expect_error([&] { adamas::decode_attention(in, cfg, ws, out.data()); }, {kShape, kInvalid}, {"threshold"},
               "decode query_thresholds size != n_heads");
  in = inputs(s, 4);
  in.q = nullptr;
  expect_error([&] { adamas::decode_attention(in, cfg, ws, out.data()); }, {kInvalid}, {"null"}, "decode null q");
  in = inputs(s, 4);
  expect_error([&] { adamas::decode_attention(in, cfg, ws, nullptr); }, {kInvalid}, {"null"}, "decode null out");
  AttentionConfig bad = cfg;
  bad.budget = 0;
  expect_error([&] { adamas::decode_attention(in, bad, ws, out.data()); }, {kInvalid}, {"budget"},
               "decode budget=0");
  bad = cfg;
  bad.sink = 5, bad.window = 5;
  expect_error([&] { adamas::decode_attention(in, bad, ws, out.data()); }, {kInvalid}, {"sink", "window"},
               "decode sink+window > budget");
  // last_selection of a head the last call did not have
  adamas::decode_attention(in, cfg, ws, out.data());
  expect_error([&] { adamas::last_selection(ws, 4); }, {kInvalid}, {"head"}, "last_selection head 4 of 4");
}

TEST(Errors, QuestShapes) {
  Small s;
  ref::Pages pages32(2, 4, 32);  // dim 32 pages for dim 64 keys
  expect_error([&] { adamas::quest_update_pages(s.k.view(), 0, 40, pages32.view); }, {kShape}, {"dim"},
               "quest_update_pages pages dim != k dim");
  ref::Pages small(2, 2, 64);  // 2 pages of 16 cannot hold 40 tokens
  expect_error([&] { adamas::quest_update_pages(s.k.view(), 0, 40, small.view); }, {kShape, kInvalid},
               {"page", "token"}, "quest_update_pages too few pages");
  ref::Pages ok(2, 3, 64);
  std::vector<int32_t> out;
  expect_error([&] { adamas::quest_select(s.q.data(), ok.view, 0, 40, 0, out); }, {kInvalid}, {"budget"},
               "quest_select budget=0");
  expect_error([&] { adamas::quest_select(s.q.data(), ok.view, 2, 40, 16, out); }, {kInvalid}, {"head"},
               "quest_select head out of range");
}

}  // namespace
