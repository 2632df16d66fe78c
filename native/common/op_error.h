// The error type native code throws: a kind (TypeError / RangeError / Error on the JS side) and
// a stable ERR_CRPO_* code. Free of N-API and libtorch so kernels and model code can use it.
#pragma once

#include <stdexcept>
#include <string>

namespace crpo {

enum class ErrorKind { Type, Range, Generic };

// An error raised by native code; `code` is a stable ERR_CRPO_* string.
class OpError : public std::runtime_error {
 public:
  OpError(ErrorKind kind, std::string code, const std::string& message)
      : std::runtime_error(message), kind_(kind), code_(std::move(code)) {}
  ErrorKind kind() const { return kind_; }
  const std::string& code() const { return code_; }

 private:
  ErrorKind kind_;
  std::string code_;
};

}  // namespace crpo
