// Synthetic RULER-style retrieval tasks (Hsieh et al. 2024), generated in code over a prose haystack:
//   multikey   - several "special magic number for <word>" needles, asked for one word's number;
//   multivalue - several numbers for the same word, asked for all of them;
//   vartrack   - a chain "VAR A = 12345", "VAR B = VAR A", ... spread over the text, asked for every variable that
//                holds the value.
// Scored as RULER does: the share of the expected strings that appear in the answer (1 = exact match of all).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "eval/prompt.h"

namespace adamas {

enum class RulerTask { multikey, multivalue, vartrack };
const char* ruler_task_name(RulerTask t);
RulerTask parse_ruler_task(const std::string& name);  // error naming an unknown task
std::vector<RulerTask> all_ruler_tasks();

struct RulerSample {
  std::vector<int32_t> tokens;
  std::vector<std::string> expected;  // strings the answer must contain
  int64_t max_new_tokens = 16;
};

// A sample of about `prompt_tokens` tokens in all, its needles and question drawn from `seed`.
RulerSample make_ruler_sample(RulerTask task, const Tokenizer& tokenizer, std::string_view text,
                              int64_t prompt_tokens, uint64_t seed);

// The share of `expected` found in `answer`.
double ruler_score(const std::string& answer, const std::vector<std::string>& expected);

}  // namespace adamas
