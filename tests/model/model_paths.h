// Where the model tests find the real model and their fixtures.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

namespace adamas::test {

inline constexpr const char* kNoModelMessage =
    "the default model is missing: run scripts/fetch-model (or set ADAMAS_MODEL to a SmolLM2-135M-Instruct GGUF)";

// The model file to test on: $ADAMAS_MODEL, else models/SmolLM2-135M-Instruct.Q4_1.gguf; "" when absent.
inline std::string model_path() {
  const char* env = std::getenv("ADAMAS_MODEL");
  const std::string path = env != nullptr && *env != '\0' ? env : ADAMAS_DEFAULT_MODEL;
  return std::filesystem::is_regular_file(path) ? path : std::string();
}

inline std::string fixture_path(const std::string& name) { return std::string(ADAMAS_MODEL_FIXTURES) + "/" + name; }

}  // namespace adamas::test
