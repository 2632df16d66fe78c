// Shared N-API helpers of both addons: one error type with a stable code, argument readers
// that name the parameter and the value received, and one wrapper that turns every C++
// exception (including c10::Error, a std::exception) into a JS error instead of an abort.
#pragma once

#include <napi.h>

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "op_error.h"

namespace crpo {

std::string describe_value(const Napi::Value& v);

[[noreturn]] void throw_type_error(const std::string& op, const std::string& param, const std::string& expected,
                                   const Napi::Value& received);
[[noreturn]] void throw_range_error(const std::string& op, const std::string& param, const std::string& expected,
                                    const std::string& received);

// Builds the JS error object for an OpError (or a plain message) with .code and .op set.
Napi::Error make_js_error(Napi::Env env, ErrorKind kind, const std::string& code, const std::string& op,
                          const std::string& message);

// A typed array's storage, as seen by a kernel.
struct ByteView {
  uint8_t* data = nullptr;
  size_t byte_length = 0;
  size_t length = 0;  // elements
  napi_typedarray_type type = napi_uint8_array;
  size_t element_bytes = 1;
};

ByteView read_typed_array(const Napi::Value& v, const std::string& op, const std::string& param);
int64_t read_int(const Napi::Value& v, const std::string& op, const std::string& param, int64_t min, int64_t max);
double read_number(const Napi::Value& v, const std::string& op, const std::string& param);
// Reads a typed array of exactly `length` elements of type `type` (`optional`: undefined/null -> empty view).
// obj[key] as a typed array of `type` and `length`; errors name it `param` (default: key).
ByteView read_array_of(const Napi::Object& obj, const char* key, napi_typedarray_type type, size_t length,
                       const std::string& op, bool optional, const std::string& param = "");

// Reading call arguments and option objects, with one set of rules for every binding: a value
// that is undefined or null is absent (an optional one gives its fallback, a required one is an
// error); any other value must have the expected type and range, else a TypeError / RangeError
// that names the parameter and the value received (never silently the fallback).
namespace args {
bool absent(const Napi::Value& v);
// True when o[key] is present (neither undefined nor null).
bool present(const Napi::Object& o, const char* key);
// info[i] / v as an object (not an array); required.
Napi::Object object(const Napi::CallbackInfo& info, size_t i, const std::string& op, const std::string& name);
Napi::Object object(const Napi::Value& v, const std::string& op, const std::string& name);
// info[i] as an object, or an empty object when absent.
Napi::Object optional_object(const Napi::CallbackInfo& info, size_t i, const std::string& op, const std::string& name);
// o[key] as a finite number / an integer in [min, max] / a boolean / a string, or `fallback` when absent.
double optional_number(const Napi::Object& o, const char* key, const std::string& op, double fallback);
// ... a finite number in [min, max].
double optional_number(const Napi::Object& o, const char* key, const std::string& op, double fallback, double min,
                       double max);
int64_t optional_int(const Napi::Object& o, const char* key, const std::string& op, int64_t fallback, int64_t min,
                     int64_t max);
bool optional_bool(const Napi::Object& o, const char* key, const std::string& op, bool fallback);
std::string optional_string(const Napi::Object& o, const char* key, const std::string& op, const std::string& fallback);
// o[key] as an integer in [min, max]; required (absent is an error naming it).
int64_t required_int(const Napi::Object& o, const char* key, const std::string& op, int64_t min, int64_t max);
// o[key] as an array of integers in [min, max] / of strings, or an empty vector when absent.
std::vector<int64_t> optional_ints(const Napi::Object& o, const char* key, const std::string& op, int64_t min,
                                   int64_t max);
std::vector<std::string> optional_strings(const Napi::Object& o, const char* key, const std::string& op);
}  // namespace args

// Runs `body`, translating every exception into a thrown JS error tagged with `op`.
template <typename F>
Napi::Value guarded(const Napi::CallbackInfo& info, const std::string& op, F body) {
  Napi::Env env = info.Env();
  try {
    return body();
  } catch (const Napi::Error&) {
    throw;
  } catch (const OpError& e) {
    throw make_js_error(env, e.kind(), e.code(), op, e.what());
  } catch (const std::bad_alloc&) {
    throw make_js_error(env, ErrorKind::Generic, "ERR_CRPO_OUT_OF_MEMORY", op, op + ": out of memory");
  } catch (const std::exception& e) {
    throw make_js_error(env, ErrorKind::Generic, "ERR_CRPO_NATIVE", op, op + ": " + e.what());
  }
}

// Captures an exception inside AsyncWorker::Execute for OnError (no JS access there).
struct CapturedError {
  bool set = false;
  ErrorKind kind = ErrorKind::Generic;
  std::string code;
  std::string message;
  void capture(const std::string& op, const std::exception_ptr& p);
};

}  // namespace crpo
