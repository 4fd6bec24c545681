// Typed errors of the Adamas library. Every bad input raises adamas::Error with a kind and a message that names
// the input and what was expected; nothing aborts.
#pragma once

#include <stdexcept>
#include <string>

namespace adamas {

enum class ErrorKind {
  invalid_argument,  // a value out of its documented domain (budget <= 0, d not a power of two, ...)
  shape_mismatch,    // views whose shapes do not agree
  unsupported,       // a valid request this build cannot serve (dtype, head_dim, ...)
  io,                // a file could not be read or written
  format,            // a file's contents are malformed
};

const char* error_kind_name(ErrorKind kind);

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message);
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

}  // namespace adamas
