// Argument checks that raise adamas::Error with a formatted message (internal header).
#pragma once

#include <fmt/format.h>

#include "adamas/error.h"

namespace adamas {

template <class... Args>
[[noreturn]] void fail(ErrorKind kind, fmt::format_string<Args...> format, Args&&... args) {
  throw Error(kind, fmt::format(format, std::forward<Args>(args)...));
}

#define ADAMAS_CHECK(cond, kind, ...)                  \
  do {                                                 \
    if (!(cond)) ::adamas::fail(kind, __VA_ARGS__);    \
  } while (0)

}  // namespace adamas
