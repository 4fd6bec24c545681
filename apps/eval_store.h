// The rows of one `adamas eval` task on disk: <dir>/<task>.jsonl is appended one finished row at a time (flushed),
// so an interrupted run loses at most the row in progress; on restart, rows whose "key" is already there are
// skipped. At the end the whole set is rewritten as <task>.json and <task>.csv (internal to apps/).
#pragma once

#include <string>
#include <unordered_set>
#include <vector>

#include <nlohmann/json.hpp>

namespace adamas::app {

class ResultStore {
 public:
  ResultStore(const std::string& dir, const std::string& task);

  bool has(const std::string& key) const { return keys_.count(key) != 0; }
  // Appends the row (which must carry a string "key") to the JSONL file and to rows().
  void append(nlohmann::json row);
  const std::vector<nlohmann::json>& rows() const { return rows_; }
  std::string path(const std::string& extension) const { return base_ + "." + extension; }

  // <task>.json (all rows) and <task>.csv (the scalar fields, the union of every row's columns, in first-seen order).
  void write_json_and_csv() const;

 private:
  std::string base_;
  std::vector<nlohmann::json> rows_;
  std::unordered_set<std::string> keys_;
};

// Progress on stderr: a bar redrawn in place on a terminal, one line per step otherwise (logs).
class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total);
  void step(const std::string& what);  // one unit of work finished
  void skip() { ++done_; }             // one unit already in the store
  void finish();

 private:
  std::string label_;
  int64_t total_, done_ = 0, run_ = 0;
  double t0_;
  bool tty_;
};

}  // namespace adamas::app
