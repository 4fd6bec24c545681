// One attention configuration under evaluation ("adamas-cal-64", "quest-128", "full"), and the grid of them that
// an `adamas eval` command runs: every method x budget, Adamas also x thresholds mode x group selection.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/session.h"

namespace adamas {

struct Variant {
  Method method = Method::full;
  int64_t budget = 0;       // 0 for full attention
  bool calibrated = false;  // adamas: thresholds calibrated at prefill instead of the fixed (-10, 0, 10)
  GroupSelection group = GroupSelection::per_head;  // adamas
  int64_t sink = 0;    // adamas: the first tokens always kept, inside the budget
  int64_t window = 0;  // adamas: the most recent tokens always kept, inside the budget
};

// "full", "adamas-64", "adamas-cal-64", "adamas-shared-sum-64", "adamas-cal-shared-union-64", "adamas-cal-s4w16-128"
// (sink 4, window 16), "quest-64", ...
std::string variant_name(const Variant& v);
// The engine options of the variant on a cache of `context` tokens (the paper's 2 dense layers).
EngineOptions engine_options(const Variant& v, int64_t context);

// "per-head" / "shared-sum" / "shared-union" (also "shared" = shared-sum); anything else is an error naming it.
GroupSelection parse_group_selection(const std::string& name);

struct VariantGrid {
  std::vector<std::string> methods{"full", "adamas"};
  std::vector<int64_t> budgets{64};
  std::vector<std::string> thresholds{"fixed"};  // adamas: fixed and/or calibrated
  std::vector<std::string> groups{"per-head"};   // adamas
  std::vector<std::string> keep{"0:0"};          // adamas: "SINK:WINDOW" pairs
};
// Full attention once (whatever the budgets), then each sparse method x budget (x thresholds x groups x keep for
// Adamas). Errors name an unknown method, thresholds mode or group, a budget <= 0, and a malformed keep pair or one
// that does not fit in a budget.
std::vector<Variant> expand_variants(const VariantGrid& grid);

}  // namespace adamas
