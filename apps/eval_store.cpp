#include "eval_store.h"

#include <fmt/format.h>
#include <omp.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "core/check.h"

namespace adamas::app {

ResultStore::ResultStore(const std::string& dir, const std::string& task) : base_(dir + "/" + task) {
  std::filesystem::create_directories(dir);
  std::ifstream f(path("jsonl"));
  std::string line;
  int64_t lineno = 0;
  while (std::getline(f, line)) {
    ++lineno;
    if (line.empty()) continue;
    // A run killed mid-write leaves a partial last line: drop it (its row is simply redone).
    nlohmann::json row = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (row.is_discarded() || !row.contains("key")) {
      fmt::print(stderr, "eval: {}:{}: ignoring an unreadable row\n", path("jsonl"), lineno);
      continue;
    }
    keys_.insert(row["key"].get<std::string>());
    rows_.push_back(std::move(row));
  }
}

void ResultStore::append(nlohmann::json row) {
  std::ofstream f(path("jsonl"), std::ios::app);
  ADAMAS_CHECK(f.good(), ErrorKind::io, "cannot append to {}", path("jsonl"));
  f << row.dump() << "\n";
  f.flush();
  ADAMAS_CHECK(f.good(), ErrorKind::io, "writing {} failed", path("jsonl"));
  keys_.insert(row["key"].get<std::string>());
  rows_.push_back(std::move(row));
}

namespace {

std::string csv_cell(const nlohmann::json& v) {
  if (v.is_null()) return "";
  if (v.is_number_float()) return fmt::format("{:.6g}", v.get<double>());
  std::string s = v.is_string() ? v.get<std::string>() : v.dump();
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

}  // namespace

void ResultStore::write_json_and_csv() const {
  {
    std::ofstream f(path("json"));
    f << nlohmann::json(rows_).dump(1) << "\n";
    ADAMAS_CHECK(f.good(), ErrorKind::io, "writing {} failed", path("json"));
  }
  std::vector<std::string> cols;
  for (const auto& row : rows_)
    for (const auto& [k, v] : row.items())
      if (!v.is_array() && !v.is_object() && std::find(cols.begin(), cols.end(), k) == cols.end()) cols.push_back(k);
  std::ofstream f(path("csv"));
  for (size_t i = 0; i < cols.size(); ++i) f << (i ? "," : "") << cols[i];
  f << "\n";
  for (const auto& row : rows_) {
    for (size_t i = 0; i < cols.size(); ++i) f << (i ? "," : "") << (row.contains(cols[i]) ? csv_cell(row[cols[i]]) : "");
    f << "\n";
  }
  ADAMAS_CHECK(f.good(), ErrorKind::io, "writing {} failed", path("csv"));
}

ProgressBar::ProgressBar(std::string label, int64_t total)
    : label_(std::move(label)), total_(total), t0_(omp_get_wtime()), tty_(isatty(STDERR_FILENO) != 0) {}

void ProgressBar::step(const std::string& what) {
  ++done_, ++run_;
  const double el = omp_get_wtime() - t0_;
  const double eta = el / double(run_) * double(total_ - done_);
  const int width = 24, fill = total_ > 0 ? int(width * done_ / total_) : width;
  const std::string line = fmt::format("[{}] [{}{}] {}/{} {:.0f}s elapsed, ~{:.0f}s left | {}", label_,
                                       std::string(size_t(fill), '#'), std::string(size_t(width - fill), '.'), done_,
                                       total_, el, eta, what);
  if (tty_) fmt::print(stderr, "\r{:<130.130}", line);
  else fmt::print(stderr, "{}\n", line);
}

void ProgressBar::finish() {
  if (tty_) fmt::print(stderr, "\n");
  fmt::print(stderr, "[{}] {} rows done ({} new) in {:.0f}s\n", label_, done_, run_, omp_get_wtime() - t0_);
}

}  // namespace adamas::app
