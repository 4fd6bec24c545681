// How well a sparse method's selection stands in for full attention, per layer: for each decode step and query
// head, the share of the exact attention probability mass (softmax of q.k / sqrt(d) over every cached key) that
// the selected tokens hold, and the overlap of the selection with the exact top-|selection| tokens. Measured on
// the queries the session computes while decoding with the method under test (Session::set_decode_observer).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/session.h"

namespace adamas {

struct SelectionRecall {
  double mass = 0;         // the exact probability mass of the selected tokens
  double overlap = 0;      // |selected ∩ exact top-|selected|| / |selected|
  double oracle_mass = 0;  // the mass of the exact top-|selected|: the best any selection of that size can keep
};

struct LayerRecall : SelectionRecall {  // means over steps and query heads
  int64_t samples = 0;                  // (step, head) pairs
};

struct RecallResult {
  std::vector<LayerRecall> layers;  // every layer (the dense ones read 1)
  double mass = 0, overlap = 0, oracle_mass = 0;  // means over the sparse layers (those from dense_layers on)
};

// Prefills prompt[0, n - steps) densely on a fresh sequence, then decodes the last `steps` prompt tokens with the
// session's method, measuring every layer's selection. Error(invalid_argument) unless 1 <= steps < n <= context.
RecallResult run_recall(Session& session, std::span<const int32_t> prompt, int64_t steps);
// The same after the prefill: `session` holds exactly prompt[0, n - steps).
RecallResult recall_after_prefill(Session& session, std::span<const int32_t> prompt, int64_t steps);

// One query head against its exact attention: `scores` are q.k over all n keys (any scale > 0), `selected` the
// rows kept.
SelectionRecall selection_recall(std::span<const float> scores, float scale, std::span<const int32_t> selected);

}  // namespace adamas
