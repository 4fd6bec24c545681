// Environment settings for one scope: the kernels' A/B knobs (ADAMAS_CUDA_DENSE, ADAMAS_CUDA_DENSE_SPLIT, ...) are
// read per call, so tests and benchmarks set them around the calls they time or check, and unset them after.
#pragma once

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

namespace adamas::cuda {

// "NAME=VALUE,NAME=VALUE" set for the object's lifetime ("" sets nothing; an item without '=' is ignored).
class ScopedEnvSettings {
 public:
  explicit ScopedEnvSettings(const std::string& settings) {
    for (size_t b = 0; b < settings.size();) {
      const size_t e = std::min(settings.find(',', b), settings.size()), eq = settings.find('=', b);
      if (eq < e) {
        names_.push_back(settings.substr(b, eq - b));
        setenv(names_.back().c_str(), settings.substr(eq + 1, e - eq - 1).c_str(), 1);
      }
      b = e + 1;
    }
  }
  ~ScopedEnvSettings() {
    for (const std::string& n : names_) unsetenv(n.c_str());
  }
  ScopedEnvSettings(const ScopedEnvSettings&) = delete;
  ScopedEnvSettings& operator=(const ScopedEnvSettings&) = delete;

 private:
  std::vector<std::string> names_;
};

}  // namespace adamas::cuda
