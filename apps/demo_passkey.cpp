// `adamas demo`: the main job. A 5-digit pass key hidden in a few thousand tokens of public-domain prose, asked for
// at the end; the model answers with full attention, then with Adamas at a small budget (fixed thresholds, then
// thresholds calibrated at prefill). Prints the answers, the decode speed of each and the speedup.
#include <fmt/format.h>
#include <omp.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "apps.h"
#include "eval/passkey.h"

namespace adamas::app {

int demo_passkey(const PasskeyDemoArgs& a) {
  set_threads(a.threads);
  ADAMAS_CHECK_ARG(a.filler > 0, "--tokens {} (expected > 0)", a.filler);
  ADAMAS_CHECK_ARG(a.budget > 0, "--budget {} (expected > 0)", a.budget);
  ADAMAS_CHECK_ARG(a.depth >= 0 && a.depth <= 1, "--depth {} (expected in [0, 1])", a.depth);
  AttentionConfig sparse;  // the Adamas rows' configuration, checked before the model loads
  sparse.method = Method::adamas;
  sparse.budget = a.budget;
  sparse.sink = a.sink;
  sparse.window = a.window;
  validate_config(sparse);
  std::ifstream f(a.text, std::ios::binary);
  ADAMAS_CHECK(f.good(), ErrorKind::io, "cannot read the text {} (run scripts/fetch-texts)", a.text);
  std::ostringstream text;
  text << f.rdbuf();

  const LlamaModel model = LlamaModel::load(resolve_model_path(a.model));
  const Tokenizer tokenizer = Tokenizer::from_gguf(model.file());
  const std::string key = random_key(a.seed);
  const PasskeyPrompt prompt = make_passkey_prompt(tokenizer, text.str(), a.filler, a.depth, key, a.seed);
  fmt::print("Pass key {} hidden at {:.0f}% depth (token {}) of a {}-token prompt of {}.\n", key, 100 * a.depth,
             prompt.needle_token, prompt.tokens.size(), a.text);
  fmt::print("Prefill dense; the last {} prompt tokens and the answer decoded with the method; {} threads.\n\n",
             a.sparse_tail, omp_get_max_threads());
  nlohmann::json rows = nlohmann::json::array();
  double full_tps = 0;
  struct Row {
    Method method;
    bool calibrated;
  };
  for (const Row row : {Row{Method::full, false}, Row{Method::adamas, false}, Row{Method::adamas, true}}) {
    const Method m = row.method;
    EngineOptions eo;
    eo.attention = sparse;
    eo.attention.method = m;
    eo.context = int64_t(prompt.tokens.size()) + 64;
    eo.calibrate_thresholds = row.calibrated;
    Session session(model, eo);
    const PasskeyResult r = run_passkey(session, tokenizer, prompt, a.sparse_tail);
    const double tps = double(r.decode_steps) / r.decode_s;
    if (m == Method::full) full_tps = tps;
    const std::string kept = a.sink + a.window > 0 ? fmt::format(", sink {} window {}", a.sink, a.window) : "";
    const std::string label = m == Method::full ? "full attention"
                                                : fmt::format("adamas, budget {}{}{}", a.budget,
                                                              row.calibrated ? ", calibrated" : "", kept);
    fmt::print("{:<44} answer: \"{}\" ({})\n", label, r.answer, r.found ? "correct" : "WRONG");
    fmt::print("{:<44} decode: {:.1f} tokens/s over {} steps at ~{} tokens of context{}\n\n", "", tps,
               r.decode_steps, prompt.tokens.size(),
               m == Method::full ? "" : fmt::format(", {:.2f}x full attention", tps / full_tps));
    rows.push_back({{"method", method_name(m)}, {"calibrated", row.calibrated}, {"budget", a.budget},
                    {"answer", r.answer}, {"found", r.found}, {"decode_tokens_per_s", tps},
                    {"decode_steps", r.decode_steps}, {"prefill_s", r.prefill_s}});
  }
  if (!a.json.empty())
    write_json(a.json, nlohmann::json{{"command", "demo"}, {"key", key}, {"prompt_tokens", prompt.tokens.size()},
                                      {"rows", rows}});
  return 0;
}

}  // namespace adamas::app
