// `adamas eval <task>`: accuracy of the attention methods on the default model. Each task runs a grid of variants
// (methods x budgets, Adamas also x thresholds x group selection) and writes <out>/<task>.{jsonl,json,csv,md};
// finished rows are appended as they come, and a restarted run skips them.
#include <fmt/chrono.h>
#include <fmt/format.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "apps.h"
#include "eval/passkey.h"
#include "eval/perplexity.h"
#include "eval/recall.h"
#include "eval/ruler.h"
#include "eval/shared_prefill.h"
#include "eval/variant.h"
#include "eval_report.h"
#include "eval_store.h"

namespace adamas::app {

namespace {

struct Context {
  const EvalArgs& args;
  const LlamaModel& model;
  const Tokenizer& tokenizer;
  std::string text;       // the prose
  std::string text_name;  // its file name
  std::vector<Variant> variants;
  ResultStore& store;
  std::string command;  // this invocation, recorded in each row it writes
};

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  ADAMAS_CHECK(f.good(), ErrorKind::io, "cannot read the text {} (run scripts/fetch-texts)", path);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

nlohmann::json variant_fields(const Variant& v) {
  return {{"variant", variant_name(v)},
          {"method", method_name(v.method)},
          {"budget", v.budget},
          {"thresholds", v.calibrated ? "calibrated" : "fixed"},
          {"group", group_selection_name(v.group)},
          {"sink", v.sink},
          {"window", v.window}};
}

// Rows that differ only in the variant share a prompt id (so reports can compare them with full attention).
nlohmann::json base_row(const Context& c, const std::string& prompt_id, const Variant& v) {
  nlohmann::json row = variant_fields(v);
  row["prompt_id"] = prompt_id;
  row["key"] = prompt_id + " " + variant_name(v);
  row["text"] = c.text_name;
  row["command"] = c.command;
  return row;
}

// The variants of prompt `id` whose rows are not in the store yet, each with its row to fill.
std::pair<std::vector<Variant>, std::vector<nlohmann::json>> pending(const Context& c, const std::string& id,
                                                                     ProgressBar& bar) {
  std::pair<std::vector<Variant>, std::vector<nlohmann::json>> out;
  for (const Variant& v : c.variants) {
    nlohmann::json row = base_row(c, id, v);
    if (c.store.has(row["key"])) bar.skip();
    else out.first.push_back(v), out.second.push_back(std::move(row));
  }
  return out;
}

// The prompt of a retrieval task at `length` tokens must leave room for the answer in the model's context.
int64_t prompt_length(const Context& c, int64_t length, int64_t answer_tokens) {
  return std::min(length, c.model.config().context_length - answer_tokens);
}

void run_passkey_task(const Context& c) {
  const EvalArgs& a = c.args;
  const int64_t max_new = 10;
  ProgressBar bar("passkey", int64_t(a.lengths.size()) * a.depths * a.samples * int64_t(c.variants.size()));
  for (int64_t length : a.lengths)
    for (int64_t d = 0; d < a.depths; ++d)
      for (int64_t s = 0; s < a.samples; ++s) {
        const double depth = a.depths == 1 ? 0.5 : double(d) / double(a.depths - 1);
        const uint64_t seed = a.seed + uint64_t(s) * 1000003 + uint64_t(d) * 7919 + uint64_t(length);
        const std::string id = fmt::format("passkey len={} depth={:.3f} sample={} seed={} text={}", length, depth, s,
                                           a.seed, c.text_name);
        auto [todo, rows] = pending(c, id, bar);
        if (todo.empty()) continue;
        const int64_t n = prompt_length(c, length, max_new);
        const PasskeyPrompt prompt = make_passkey_prompt(
            c.tokenizer, c.text, passkey_filler_for_length(c.tokenizer, n), depth, random_key(seed), seed);
        answer_variants(c.model, c.tokenizer, prompt.tokens, todo, a.sparse_tail, max_new,
                        [&](size_t i, const Answer& r) {
                          const bool found = r.text.find(prompt.key) != std::string::npos;
                          rows[i].update({{"length", length}, {"prompt_tokens", prompt.tokens.size()},
                                          {"depth", depth}, {"sample", s}, {"needle_token", prompt.needle_token},
                                          {"passkey", prompt.key}, {"answer", r.text}, {"correct", found},
                                          {"prefill_s", r.prefill_s}, {"decode_s", r.decode_s}});
                          c.store.append(rows[i]);
                          bar.step(fmt::format("{} depth {:.2f} {}: {}", length, depth, variant_name(todo[i]),
                                               found ? "ok" : "MISS"));
                        });
      }
  bar.finish();
}

void run_ppl_task(const Context& c) {
  const EvalArgs& a = c.args;
  const int64_t last = *std::max_element(a.lengths.begin(), a.lengths.end());
  // The text from its start (a whole book, as PG-19 is), enough bytes for last + 1 tokens.
  const size_t bytes = std::min(c.text.size(), size_t(last) * 8 + 4096);
  std::vector<int32_t> tokens = c.tokenizer.encode(std::string_view(c.text).substr(0, bytes));
  ADAMAS_CHECK(int64_t(tokens.size()) > last, ErrorKind::invalid_argument, "ppl: the text {} has only {} tokens",
               c.text_name, tokens.size());
  tokens.resize(size_t(last) + 1);
  const std::string id = fmt::format("ppl tokens={} text={}", last, c.text_name);
  ProgressBar bar("ppl", int64_t(c.variants.size()));
  for (const Variant& v : c.variants) {
    const std::string name = variant_name(v);
    auto key_at = [&](int64_t n) { return fmt::format("{} at={} {}", id, n, name); };
    if (std::all_of(a.lengths.begin(), a.lengths.end(), [&](int64_t n) { return c.store.has(key_at(n)); })) {
      bar.skip();
      continue;
    }
    Session session(c.model, engine_options(v, last));
    const auto t0 = std::chrono::steady_clock::now();
    const auto points = run_perplexity(session, tokens, a.lengths, [&](int64_t done, int64_t total) {
      if (done % 1024 == 0) fmt::print(stderr, "[ppl] {}: {}/{} tokens\n", name, done, total);
    });
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (const PerplexityPoint& p : points) {
      nlohmann::json row = base_row(c, id, v);
      row["key"] = key_at(p.tokens);
      row.update({{"length", p.tokens}, {"nll", p.nll_sum / double(p.tokens)}, {"ppl", p.perplexity},
                  {"run_s", secs}});
      if (!c.store.has(row["key"])) c.store.append(row);
    }
    bar.step(fmt::format("{}: ppl {:.3f} at {}", name, points.back().perplexity, points.back().tokens));
  }
  bar.finish();
}

void run_ruler_task(const Context& c) {
  const EvalArgs& a = c.args;
  std::vector<RulerTask> tasks;
  for (const std::string& t : a.ruler_tasks) tasks.push_back(parse_ruler_task(t));
  ProgressBar bar("ruler", int64_t(tasks.size() * a.lengths.size()) * a.samples * int64_t(c.variants.size()));
  for (RulerTask task : tasks)
    for (int64_t length : a.lengths)
      for (int64_t s = 0; s < a.samples; ++s) {
        const uint64_t seed = a.seed + uint64_t(s) * 1000003 + uint64_t(length);
        const std::string id = fmt::format("ruler {} len={} sample={} seed={} text={}", ruler_task_name(task), length,
                                           s, a.seed, c.text_name);
        auto [todo, rows] = pending(c, id, bar);
        if (todo.empty()) continue;
        const RulerSample sample = make_ruler_sample(task, c.tokenizer, c.text, prompt_length(c, length, 48), seed);
        answer_variants(c.model, c.tokenizer, sample.tokens, todo, a.sparse_tail, sample.max_new_tokens,
                        [&](size_t i, const Answer& r) {
                          const double score = ruler_score(r.text, sample.expected);
                          rows[i].update({{"ruler_task", ruler_task_name(task)}, {"length", length}, {"sample", s},
                                          {"prompt_tokens", sample.tokens.size()}, {"expected", sample.expected},
                                          {"answer", r.text}, {"score", score}, {"correct", score == 1.0}});
                          c.store.append(rows[i]);
                          bar.step(fmt::format("{} {} {}: {:.2f}", ruler_task_name(task), length,
                                               variant_name(todo[i]), score));
                        });
      }
  bar.finish();
}

void run_recall_task(const Context& c) {
  const EvalArgs& a = c.args;
  ProgressBar bar("recall", int64_t(a.lengths.size() * c.variants.size()));
  for (int64_t length : a.lengths) {
    // A real prompt: the passkey prompt of this length (key at mid depth), its last tokens decoded sparsely.
    const uint64_t seed = a.seed + uint64_t(length);
    const std::string id = fmt::format("recall len={} steps={} seed={} text={}", length, a.recall_steps, a.seed,
                                       c.text_name);
    auto [todo, rows] = pending(c, id, bar);
    if (todo.empty()) continue;
    const PasskeyPrompt prompt = make_passkey_prompt(
        c.tokenizer, c.text, passkey_filler_for_length(c.tokenizer, prompt_length(c, length, 0)), 0.5,
        random_key(seed), seed);
    const std::span<const int32_t> tokens(prompt.tokens);
    with_shared_prefill(c.model, todo, int64_t(tokens.size()), tokens.first(tokens.size() - size_t(a.recall_steps)),
                        [&](size_t i, Session& session, double) {
                          const RecallResult r = recall_after_prefill(session, tokens, a.recall_steps);
                          std::vector<double> mass, overlap;
                          for (const LayerRecall& l : r.layers) mass.push_back(l.mass), overlap.push_back(l.overlap);
                          rows[i].update({{"length", length}, {"prompt_tokens", tokens.size()},
                                          {"steps", a.recall_steps}, {"mass", r.mass}, {"overlap", r.overlap},
                                          {"oracle_mass", r.oracle_mass}, {"layer_mass", mass},
                                          {"layer_overlap", overlap}});
                          c.store.append(rows[i]);
                          bar.step(fmt::format("{} {}: mass {:.3f} overlap {:.3f}", length, variant_name(todo[i]),
                                               r.mass, r.overlap));
                        });
  }
  bar.finish();
}

std::string default_text(const std::string& task) {
  if (task == "ppl") return "data/texts/austen-prideprejudice.txt";
  if (task == "ruler") return "data/texts/kjv.txt";
  return "data/texts/austen-emma.txt";
}

}  // namespace

int eval_command(const EvalArgs& a, const std::string& command_line) {
  set_threads(a.threads);
  const std::vector<std::string> tasks{"passkey", "ppl", "ruler", "recall"};
  ADAMAS_CHECK_ARG(std::find(tasks.begin(), tasks.end(), a.task) != tasks.end(),
                   "unknown eval task '{}' (expected passkey, ppl, ruler or recall)", a.task);
  ADAMAS_CHECK_ARG(!a.lengths.empty(), "--lengths: none given");
  ADAMAS_CHECK_ARG(a.depths >= 1, "--depths {} (expected >= 1)", a.depths);
  ADAMAS_CHECK_ARG(a.samples >= 1, "--samples {} (expected >= 1)", a.samples);
  ADAMAS_CHECK_ARG(a.sparse_tail >= 1, "--sparse-tail {} (expected >= 1)", a.sparse_tail);
  ADAMAS_CHECK_ARG(a.recall_steps >= 1, "--recall-steps {} (expected >= 1)", a.recall_steps);
  const std::vector<Variant> variants = expand_variants({a.attn, a.budgets, a.thresholds, a.groups, a.keep});
  const LlamaModel model = LlamaModel::load(resolve_model_path(a.model));
  const int64_t ctx = model.config().context_length;
  for (int64_t n : a.lengths) {
    ADAMAS_CHECK_ARG(n > 0, "--lengths: {} (expected > 0)", n);
    ADAMAS_CHECK_ARG(n <= ctx, "--lengths: {} tokens exceed the model's context of {}", n, ctx);
    ADAMAS_CHECK_ARG(a.task == "ppl" || n > a.sparse_tail + 64,
                     "--lengths: {} tokens leave no room for a prompt before the sparse tail of {}", n, a.sparse_tail);
  }
  const Tokenizer tokenizer = Tokenizer::from_gguf(model.file());
  const std::string text_path = a.text.empty() ? default_text(a.task) : a.text;
  ResultStore store(a.out, a.task);
  const Context c{a, model, tokenizer, read_text(text_path),
                  std::filesystem::path(text_path).filename().string(), variants, store, command_line};
  if (a.report_only) {
  } else if (a.task == "passkey") {
    run_passkey_task(c);
  } else if (a.task == "ppl") {
    run_ppl_task(c);
  } else if (a.task == "ruler") {
    run_ruler_task(c);
  } else {
    run_recall_task(c);
  }
  store.write_json_and_csv();
  // The commands that wrote the rows. Rows from before commands were recorded count as this one's, less
  // --report-only: scripts/eval reports with the very command lines that ran.
  std::string this_command = command_line;
  if (const size_t at = this_command.find(" --report-only"); at != std::string::npos) this_command.erase(at, 14);
  std::vector<std::string> commands;
  for (const auto& row : store.rows()) {
    const std::string cmd = row.value("command", this_command);
    if (std::find(commands.begin(), commands.end(), cmd) == commands.end()) commands.push_back(cmd);
  }
  std::string command_lines;
  for (const std::string& cmd : commands) command_lines += fmt::format("`{}`  \n", cmd);
  const std::string header = fmt::format(
      "Commands:  \n{}Model: {} ({})  \nText: {}  \nDate: {:%Y-%m-%d %H:%M} UTC  \nRows: {} (every run in {})\n",
      command_lines, std::filesystem::path(resolve_model_path(a.model)).filename().string(),
      model.config().name.empty() ? "llama" : model.config().name, c.text_name,
      fmt::gmtime(std::chrono::system_clock::to_time_t(std::chrono::system_clock::now())), store.rows().size(),
      store.path("jsonl"));
  std::ofstream md(store.path("md"));
  md << markdown_report(a.task, store.rows(), header);
  ADAMAS_CHECK(md.good(), ErrorKind::io, "writing {} failed", store.path("md"));
  fmt::print("{}", markdown_report(a.task, store.rows(), header));
  return 0;
}

}  // namespace adamas::app
