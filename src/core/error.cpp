#include "adamas/error.h"

namespace adamas {

const char* error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::invalid_argument: return "invalid argument";
    case ErrorKind::shape_mismatch: return "shape mismatch";
    case ErrorKind::unsupported: return "unsupported";
    case ErrorKind::io: return "i/o error";
    case ErrorKind::format: return "format error";
  }
  return "error";
}

Error::Error(ErrorKind kind, const std::string& message)
    : std::runtime_error(std::string(error_kind_name(kind)) + ": " + message), kind_(kind) {}

}  // namespace adamas
