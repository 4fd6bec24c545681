#include "eval/ruler.h"

#include <fmt/format.h>

#include <algorithm>
#include <random>

#include "core/check.h"

namespace adamas {

const char* ruler_task_name(RulerTask t) {
  switch (t) {
    case RulerTask::multikey: return "multikey";
    case RulerTask::multivalue: return "multivalue";
    case RulerTask::vartrack: return "vartrack";
  }
  return "?";
}

std::vector<RulerTask> all_ruler_tasks() { return {RulerTask::multikey, RulerTask::multivalue, RulerTask::vartrack}; }

RulerTask parse_ruler_task(const std::string& name) {
  for (RulerTask t : all_ruler_tasks())
    if (name == ruler_task_name(t)) return t;
  fail(ErrorKind::invalid_argument, "unknown RULER task '{}' (expected multikey, multivalue or vartrack)", name);
}

namespace {

constexpr int kNeedles = 4;  // keys of multikey, values of multivalue, hops of vartrack

// Keys of the needles: common concrete nouns, distinct so that a key names one needle.
const char* const kWords[] = {"apple",  "river",   "lantern", "violin", "pepper", "harbor", "falcon", "marble",
                              "cactus", "blanket", "compass", "tulip",  "anchor", "pillow", "saddle", "walnut"};

std::string random_number(std::mt19937_64& rng) { return std::to_string(1000000 + rng() % 9000000); }

std::string random_variable(std::mt19937_64& rng) {
  std::string v;
  for (int i = 0; i < 5; ++i) v += char('A' + rng() % 26);
  return v;
}

// The spec (needles, question) and the expected strings of one sample.
HaystackSpec spec_of(RulerTask task, std::mt19937_64& rng, std::vector<std::string>& expected) {
  HaystackSpec s;
  std::vector<double> depths(kNeedles);
  for (double& d : depths) d = double(rng() % 1001) / 1000.0;
  std::sort(depths.begin(), depths.end());  // a variable chain must be read in order
  std::vector<std::string> words(std::begin(kWords), std::end(kWords));
  std::shuffle(words.begin(), words.end(), rng);
  switch (task) {
    case RulerTask::multikey: {
      s.intro = "Some special magic numbers are hidden within the following text. Make sure to memorize them. "
                "I will quiz you about the numbers afterwards.\n\n";
      std::vector<std::string> numbers;
      for (int i = 0; i < kNeedles; ++i) {
        numbers.push_back(random_number(rng));
        s.needles.push_back({depths[size_t(i)], fmt::format("\nOne of the special magic numbers for {} is: {}.\n",
                                                            words[size_t(i)], numbers.back())});
      }
      const size_t target = rng() % kNeedles;
      s.question = fmt::format("\n\nWhat is the special magic number for {} mentioned in the provided text?",
                               words[target]);
      s.answer_prefix = fmt::format("The special magic number for {} mentioned in the provided text is", words[target]);
      expected = {numbers[target]};
      break;
    }
    case RulerTask::multivalue: {
      s.intro = "Some special magic numbers are hidden within the following text. Make sure to memorize them. "
                "I will quiz you about the numbers afterwards.\n\n";
      for (int i = 0; i < kNeedles; ++i) {
        expected.push_back(random_number(rng));
        s.needles.push_back({depths[size_t(i)], fmt::format("\nOne of the special magic numbers for {} is: {}.\n",
                                                            words[0], expected.back())});
      }
      s.question = fmt::format("\n\nWhat are all the special magic numbers for {} mentioned in the provided text?",
                               words[0]);
      s.answer_prefix = fmt::format("The special magic numbers for {} mentioned in the provided text are", words[0]);
      break;
    }
    case RulerTask::vartrack: {
      s.intro = "Memorize and track the chain of variable assignment hidden in the following text.\n\n";
      const std::string value = std::to_string(10000 + rng() % 90000);
      std::string previous;
      for (int i = 0; i < kNeedles; ++i) {
        std::string name = random_variable(rng);
        while (std::find(expected.begin(), expected.end(), name) != expected.end()) name = random_variable(rng);
        const std::string rhs = i == 0 ? value : "VAR " + previous;
        s.needles.push_back({depths[size_t(i)], fmt::format("\nVAR {} = {}.\n", name, rhs)});
        expected.push_back(name);
        previous = name;
      }
      s.question = fmt::format("\n\nFind all variables that are assigned the value {} in the text above.", value);
      s.answer_prefix = fmt::format(
          "According to the chain of variable assignment in the text above, {} variables are assigned the value {}, "
          "they are:",
          kNeedles, value);
      break;
    }
  }
  return s;
}

}  // namespace

RulerSample make_ruler_sample(RulerTask task, const Tokenizer& tokenizer, std::string_view text,
                              int64_t prompt_tokens, uint64_t seed) {
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + uint64_t(task));
  RulerSample r;
  const HaystackSpec spec = spec_of(task, rng, r.expected);
  const int64_t overhead = haystack_overhead(tokenizer, spec);
  ADAMAS_CHECK(prompt_tokens > overhead + 16, ErrorKind::invalid_argument,
               "ruler {}: a prompt of {} tokens has no room for filler (needles and question take {})",
               ruler_task_name(task), prompt_tokens, overhead);
  r.tokens = make_haystack_prompt(tokenizer, text, prompt_tokens - overhead, rng(), spec).tokens;
  r.max_new_tokens = task == RulerTask::multikey ? 12 : 48;
  return r;
}

double ruler_score(const std::string& answer, const std::vector<std::string>& expected) {
  if (expected.empty()) return 0;
  int64_t hit = 0;
  for (const std::string& e : expected) hit += answer.find(e) != std::string::npos;
  return double(hit) / double(expected.size());
}

}  // namespace adamas
