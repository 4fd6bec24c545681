#include "eval_report.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>

namespace adamas::app {

namespace {

// Full attention first, then Adamas, Quest, StreamingLLM; within a method by budget, then by name.
bool variant_less(const nlohmann::json& a, const nlohmann::json& b) {
  auto rank = [](const std::string& m) {
    static const char* order[] = {"full", "adamas", "quest", "streaming"};
    return int(std::find(std::begin(order), std::end(order), m) - std::begin(order));
  };
  const auto ka = std::make_tuple(rank(a["method"]), a["budget"].get<int64_t>(), a["variant"].get<std::string>());
  const auto kb = std::make_tuple(rank(b["method"]), b["budget"].get<int64_t>(), b["variant"].get<std::string>());
  return ka < kb;
}

// Mean of `value(row)` per (variant, column(row)); rows in variant order, columns in increasing order.
struct Pivot {
  std::vector<std::string> variants;
  std::vector<std::string> columns;
  std::map<std::pair<std::string, std::string>, std::pair<double, int64_t>> cells;  // sum, count

  template <class Col, class Val>
  Pivot(std::vector<nlohmann::json> rows, Col column, Val value) {
    std::stable_sort(rows.begin(), rows.end(), variant_less);
    std::vector<std::pair<int64_t, std::string>> cols;
    for (const auto& r : rows) {
      const std::string v = r["variant"];
      if (std::find(variants.begin(), variants.end(), v) == variants.end()) variants.push_back(v);
      const auto [order, name] = column(r);
      if (std::find(cols.begin(), cols.end(), std::make_pair(order, name)) == cols.end()) cols.push_back({order, name});
      auto& c = cells[{v, name}];
      c.first += value(r);
      ++c.second;
    }
    std::sort(cols.begin(), cols.end());
    for (const auto& c : cols) columns.push_back(c.second);
  }
  bool has(const std::string& v, const std::string& c) const { return cells.count({v, c}) != 0; }
  double mean(const std::string& v, const std::string& c) const {
    const auto& x = cells.at({v, c});
    return x.first / double(x.second);
  }
  int64_t count(const std::string& v, const std::string& c) const { return cells.at({v, c}).second; }
};

std::string table(const Pivot& p, const std::string& corner, const std::function<std::string(const std::string&,
                                                                                              const std::string&)>& cell) {
  std::string s = "| " + corner + " |";
  for (const auto& c : p.columns) s += " " + c + " |";
  s += "\n|---|";
  for (size_t i = 0; i < p.columns.size(); ++i) s += "---:|";
  s += "\n";
  for (const auto& v : p.variants) {
    s += "| " + v + " |";
    for (const auto& c : p.columns) s += fmt::format(" {} |", p.has(v, c) ? cell(v, c) : std::string("-"));
    s += "\n";
  }
  return s;
}

std::pair<int64_t, std::string> by_length(const nlohmann::json& r) {
  const int64_t n = r["length"];
  return {n, n % 1024 == 0 ? fmt::format("{}K", n / 1024) : std::to_string(n)};
}

std::string passkey_report(const std::vector<nlohmann::json>& rows) {
  const Pivot p(rows, by_length, [](const nlohmann::json& r) { return r["correct"].get<bool>() ? 1.0 : 0.0; });
  std::string s = "Exact-match accuracy (share of depths x keys where the answer holds the key):\n\n";
  s += table(p, "attention", [&](const std::string& v, const std::string& c) {
    return fmt::format("{:.2f} ({}/{})", p.mean(v, c), int64_t(std::lround(p.mean(v, c) * double(p.count(v, c)))),
                       p.count(v, c));
  });
  // Agreement with full attention on the prompts that full attention answers correctly.
  std::map<std::string, bool> full_ok;
  for (const auto& r : rows)
    if (r["method"] == "full") full_ok[r["prompt_id"].get<std::string>()] = r["correct"].get<bool>();
  std::vector<nlohmann::json> agree;
  for (const auto& r : rows) {
    const auto it = full_ok.find(r["prompt_id"].get<std::string>());
    if (r["method"] == "full" || it == full_ok.end() || !it->second) continue;
    agree.push_back(r);
  }
  if (agree.empty()) return s;
  const Pivot a(agree, by_length, [](const nlohmann::json& r) { return r["correct"].get<bool>() ? 1.0 : 0.0; });
  s += "\nWhere full attention finds the key: the share the sparse method also finds (1.00 = matches full):\n\n";
  s += table(a, "attention", [&](const std::string& v, const std::string& c) {
    const int64_t ok = int64_t(std::lround(a.mean(v, c) * double(a.count(v, c))));
    return fmt::format("{}/{}", ok, a.count(v, c));
  });
  return s;
}

std::string ppl_report(const std::vector<nlohmann::json>& rows) {
  const Pivot p(rows, by_length, [](const nlohmann::json& r) { return r["ppl"].get<double>(); });
  std::string s = "Cumulative perplexity over the first N tokens (every token a decode step); in brackets the change "
                  "against full attention:\n\n";
  s += table(p, "attention", [&](const std::string& v, const std::string& c) {
    const double x = p.mean(v, c);
    if (v == "full" || !p.has("full", c)) return fmt::format("{:.3f}", x);
    return fmt::format("{:.3f} ({:+.2f}%)", x, 100.0 * (x / p.mean("full", c) - 1.0));
  });
  return s;
}

std::string ruler_report(const std::vector<nlohmann::json>& rows) {
  const Pivot p(
      rows,
      [](const nlohmann::json& r) {
        const auto [n, len] = by_length(r);
        const std::string t = r["ruler_task"];
        return std::make_pair(int64_t(t[0]) * 1000000 + n, t + " " + len);
      },
      [](const nlohmann::json& r) { return r["score"].get<double>(); });
  return "Mean score (share of the expected strings in the answer; 1 = all):\n\n" +
         table(p, "attention", [&](const std::string& v, const std::string& c) {
           return fmt::format("{:.2f}", p.mean(v, c));
         });
}

std::string recall_report(const std::vector<nlohmann::json>& rows) {
  const Pivot m(rows, by_length, [](const nlohmann::json& r) { return r["mass"].get<double>(); });
  const Pivot o(rows, by_length, [](const nlohmann::json& r) { return r["overlap"].get<double>(); });
  std::vector<nlohmann::json> with_oracle;  // rows written before the oracle was measured lack it
  for (const auto& r : rows)
    if (r.contains("oracle_mass")) with_oracle.push_back(r);
  const Pivot b(with_oracle, by_length, [](const nlohmann::json& r) { return r["oracle_mass"].get<double>(); });
  return "Mean over the sparse layers, query heads and decode steps: exact attention mass of the selected tokens / "
         "overlap with the exact top-k [/ mass of the exact top-k, the best a selection of that size can keep]:\n\n" +
         table(m, "attention", [&](const std::string& v, const std::string& c) {
           std::string cell = fmt::format("{:.3f} / {:.3f}", m.mean(v, c), o.mean(v, c));
           if (b.has(v, c)) cell += fmt::format(" / {:.3f}", b.mean(v, c));
           return cell;
         });
}

}  // namespace

std::string markdown_report(const std::string& task, const std::vector<nlohmann::json>& rows,
                            const std::string& header) {
  std::string s = header + "\n";
  if (rows.empty()) return s + "(no rows)\n";
  if (task == "passkey") return s + passkey_report(rows);
  if (task == "ppl") return s + ppl_report(rows);
  if (task == "ruler") return s + ruler_report(rows);
  return s + recall_report(rows);
}

}  // namespace adamas::app
