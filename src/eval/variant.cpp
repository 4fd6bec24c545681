#include "eval/variant.h"

#include <fmt/format.h>

#include "core/check.h"

namespace adamas {

std::string variant_name(const Variant& v) {
  if (v.method == Method::full) return "full";
  std::string name = method_name(v.method);
  if (v.method == Method::adamas) {
    if (v.calibrated) name += "-cal";
    if (v.group != GroupSelection::per_head) name += std::string("-") + group_selection_name(v.group);
    if (v.sink != 0 || v.window != 0) name += fmt::format("-s{}w{}", v.sink, v.window);
  }
  return fmt::format("{}-{}", name, v.budget);
}

EngineOptions engine_options(const Variant& v, int64_t context) {
  EngineOptions o;
  o.context = context;
  o.attention.method = v.method;
  // Full attention ignores the budget, but the config must still validate.
  o.attention.budget = v.method == Method::full ? std::max<int64_t>(context, 1) : v.budget;
  o.attention.group = v.group;
  o.attention.sink = v.sink;
  o.attention.window = v.window;
  o.calibrate_thresholds = v.method == Method::adamas && v.calibrated;
  return o;
}

GroupSelection parse_group_selection(const std::string& name) {
  if (name == "shared") return GroupSelection::shared_sum;
  for (GroupSelection g : {GroupSelection::per_head, GroupSelection::shared_sum, GroupSelection::shared_union})
    if (name == group_selection_name(g)) return g;
  fail(ErrorKind::invalid_argument, "unknown group selection '{}' (expected per-head, shared-sum or shared-union)",
       name);
}

namespace {

bool parse_thresholds(const std::string& mode) {
  if (mode == "fixed") return false;
  if (mode == "calibrated") return true;
  fail(ErrorKind::invalid_argument, "unknown thresholds mode '{}' (expected fixed or calibrated)", mode);
}

// "4:16" -> {4, 16}; both >= 0.
std::pair<int64_t, int64_t> parse_keep(const std::string& pair) {
  const size_t colon = pair.find(':');
  int64_t sink = -1, window = -1;
  size_t used_sink = 0, used_window = 0;
  try {
    if (colon != std::string::npos) {
      sink = std::stoll(pair.substr(0, colon), &used_sink);
      window = std::stoll(pair.substr(colon + 1), &used_window);
    }
  } catch (const std::exception&) {
    sink = -1;
  }
  ADAMAS_CHECK(colon != std::string::npos && used_sink == colon && used_window == pair.size() - colon - 1 &&
                   sink >= 0 && window >= 0,
               ErrorKind::invalid_argument, "keep pair '{}' (expected SINK:WINDOW, two integers >= 0, e.g. 4:16)",
               pair);
  return {sink, window};
}

}  // namespace

std::vector<Variant> expand_variants(const VariantGrid& grid) {
  ADAMAS_CHECK(!grid.methods.empty(), ErrorKind::invalid_argument, "no attention method given");
  for (int64_t b : grid.budgets) ADAMAS_CHECK(b > 0, ErrorKind::invalid_argument, "budget {} (expected > 0)", b);
  std::vector<bool> modes;
  for (const std::string& t : grid.thresholds) modes.push_back(parse_thresholds(t));
  std::vector<GroupSelection> groups;
  for (const std::string& g : grid.groups) groups.push_back(parse_group_selection(g));
  std::vector<std::pair<int64_t, int64_t>> keeps;
  for (const std::string& k : grid.keep) keeps.push_back(parse_keep(k));
  ADAMAS_CHECK(!keeps.empty(), ErrorKind::invalid_argument, "no keep pair given (the default is 0:0)");
  std::vector<Variant> out;
  for (const std::string& name : grid.methods) {
    const Method m = parse_method(name.c_str());
    if (m == Method::full) {
      out.push_back({Method::full, 0, false, GroupSelection::per_head});
      continue;
    }
    ADAMAS_CHECK(!grid.budgets.empty(), ErrorKind::invalid_argument, "method {} needs at least one budget", name);
    for (int64_t b : grid.budgets) {
      if (m != Method::adamas) {
        out.push_back({m, b, false, GroupSelection::per_head});
        continue;
      }
      for (bool cal : modes)
        for (GroupSelection g : groups)
          for (auto [sink, window] : keeps) {
            // The newest token is always kept, so sink + max(window, 1) must fit (AttentionConfig's rule).
            ADAMAS_CHECK(sink + std::max<int64_t>(window, 1) <= b, ErrorKind::invalid_argument,
                         "keep {}:{} does not fit in budget {}", sink, window, b);
            out.push_back({m, b, cal, g, sink, window});
          }
    }
  }
  return out;
}

}  // namespace adamas
