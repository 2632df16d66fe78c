// Implementation of the shared N-API helpers (see napi_util.h).
#include "napi_util.h"

#include <cmath>
#include <limits>

namespace crpo {

std::string describe_value(const Napi::Value& v) {
  if (v.IsUndefined()) return "undefined";
  if (v.IsNull()) return "null";
  if (v.IsBoolean()) return std::string(v.As<Napi::Boolean>().Value() ? "true" : "false") + " of type boolean";
  if (v.IsNumber()) {
    std::ostringstream s;
    s << v.As<Napi::Number>().DoubleValue() << " of type number";
    return s.str();
  }
  if (v.IsString()) return "'" + v.As<Napi::String>().Utf8Value() + "' of type string";
  if (v.IsTypedArray()) {
    static const char* names[] = {"Int8Array",    "Uint8Array",    "Uint8ClampedArray", "Int16Array",
                                  "Uint16Array",  "Int32Array",    "Uint32Array",       "Float32Array",
                                  "Float64Array", "BigInt64Array", "BigUint64Array"};
    auto ta = v.As<Napi::TypedArray>();
    int t = static_cast<int>(ta.TypedArrayType());
    std::ostringstream s;
    s << (t >= 0 && t < 11 ? names[t] : "TypedArray") << "(" << ta.ElementLength() << ")";
    return s.str();
  }
  if (v.IsArray()) return "an array";
  if (v.IsFunction()) return "a function";
  if (v.IsObject()) return "an object";
  return "a value of unsupported type";
}

void throw_type_error(const std::string& op, const std::string& param, const std::string& expected,
                      const Napi::Value& received) {
  throw OpError(ErrorKind::Type, "ERR_CRPO_INVALID_ARG",
                op + ": expected " + expected + " for " + param + " but received " + describe_value(received));
}

void throw_range_error(const std::string& op, const std::string& param, const std::string& expected,
                       const std::string& received) {
  throw OpError(ErrorKind::Range, "ERR_CRPO_OUT_OF_RANGE",
                op + ": expected " + expected + " for " + param + " but received " + received);
}

Napi::Error make_js_error(Napi::Env env, ErrorKind kind, const std::string& code, const std::string& op,
                          const std::string& message) {
  Napi::Error err = kind == ErrorKind::Type    ? Napi::TypeError::New(env, message)
                    : kind == ErrorKind::Range ? Napi::RangeError::New(env, message)
                                               : Napi::Error::New(env, message);
  err.Set("code", Napi::String::New(env, code));
  err.Set("op", Napi::String::New(env, op));
  return err;
}

ByteView read_typed_array(const Napi::Value& v, const std::string& op, const std::string& param) {
  if (!v.IsTypedArray()) throw_type_error(op, param, "a typed array", v);
  auto ta = v.As<Napi::TypedArray>();
  Napi::ArrayBuffer buffer = ta.ArrayBuffer();
  if (buffer.IsDetached()) {
    throw OpError(ErrorKind::Type, "ERR_CRPO_DETACHED_BUFFER",
                  op + ": expected a live buffer for " + param + " but its ArrayBuffer is detached");
  }
  ByteView view;
  view.type = ta.TypedArrayType();
  view.element_bytes = ta.ElementSize();
  view.length = ta.ElementLength();
  view.byte_length = ta.ByteLength();
  view.data = static_cast<uint8_t*>(buffer.Data()) + ta.ByteOffset();
  return view;
}

int64_t read_int(const Napi::Value& v, const std::string& op, const std::string& param, int64_t min, int64_t max) {
  if (!v.IsNumber()) throw_type_error(op, param, "an integer", v);
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || d != std::floor(d)) throw_type_error(op, param, "an integer", v);
  if (d < static_cast<double>(min) || d > static_cast<double>(max)) {
    std::ostringstream expected, got;
    expected << "an integer in [" << min << ", " << max << "]";
    got << d;
    throw_range_error(op, param, expected.str(), got.str());
  }
  return static_cast<int64_t>(d);
}

double read_number(const Napi::Value& v, const std::string& op, const std::string& param) {
  if (!v.IsNumber()) throw_type_error(op, param, "a finite number", v);
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d)) throw_type_error(op, param, "a finite number", v);
  return d;
}

ByteView read_array_of(const Napi::Object& obj, const char* key, napi_typedarray_type type, size_t length,
                       const std::string& op, bool optional, const std::string& param) {
  const std::string name = param.empty() ? std::string(key) : param;
  Napi::Value v = obj.Get(key);
  if (optional && (v.IsUndefined() || v.IsNull())) return ByteView{};
  static const char* names[] = {"Int8Array",    "Uint8Array",    "Uint8ClampedArray", "Int16Array",
                                "Uint16Array",  "Int32Array",    "Uint32Array",       "Float32Array",
                                "Float64Array", "BigInt64Array", "BigUint64Array"};
  std::string expected = names[static_cast<int>(type)];
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type) {
    throw_type_error(op, name, "an " + expected, v);
  }
  ByteView view = read_typed_array(v, op, name);
  if (view.length != length) {
    std::ostringstream e, g;
    e << "an " << expected << " of length " << length;
    g << "length " << view.length;
    throw_range_error(op, name, e.str(), g.str());
  }
  return view;
}

namespace args {

bool absent(const Napi::Value& v) { return v.IsUndefined() || v.IsNull(); }

bool present(const Napi::Object& o, const char* key) { return !absent(o.Get(key)); }

Napi::Object object(const Napi::Value& v, const std::string& op, const std::string& name) {
  if (!v.IsObject() || v.IsArray()) throw_type_error(op, name, "an object", v);
  return v.As<Napi::Object>();
}

Napi::Object object(const Napi::CallbackInfo& info, size_t i, const std::string& op, const std::string& name) {
  return object(info.Length() > i ? info[i] : info.Env().Undefined(), op, name);
}

Napi::Object optional_object(const Napi::CallbackInfo& info, size_t i, const std::string& op, const std::string& name) {
  if (info.Length() <= i || absent(info[i])) return Napi::Object::New(info.Env());
  return object(info, i, op, name);
}

double optional_number(const Napi::Object& o, const char* key, const std::string& op, double fallback) {
  Napi::Value v = o.Get(key);
  if (absent(v)) return fallback;
  return read_number(v, op, key);
}

double optional_number(const Napi::Object& o, const char* key, const std::string& op, double fallback, double min,
                       double max) {
  Napi::Value v = o.Get(key);
  if (absent(v)) return fallback;
  const double x = read_number(v, op, key);
  if (!(x >= min && x <= max)) {
    std::ostringstream expected, got;
    expected << "a number in [" << min << ", " << max << "]";
    got << x;
    throw_range_error(op, key, expected.str(), got.str());
  }
  return x;
}

int64_t optional_int(const Napi::Object& o, const char* key, const std::string& op, int64_t fallback, int64_t min,
                     int64_t max) {
  Napi::Value v = o.Get(key);
  if (absent(v)) return fallback;
  return read_int(v, op, key, min, max);
}

bool optional_bool(const Napi::Object& o, const char* key, const std::string& op, bool fallback) {
  Napi::Value v = o.Get(key);
  if (absent(v)) return fallback;
  if (!v.IsBoolean()) throw_type_error(op, key, "a boolean", v);
  return v.As<Napi::Boolean>().Value();
}

std::string optional_string(const Napi::Object& o, const char* key, const std::string& op,
                            const std::string& fallback) {
  Napi::Value v = o.Get(key);
  if (absent(v)) return fallback;
  if (!v.IsString()) throw_type_error(op, key, "a string", v);
  return v.As<Napi::String>().Utf8Value();
}

int64_t required_int(const Napi::Object& o, const char* key, const std::string& op, int64_t min, int64_t max) {
  return read_int(o.Get(key), op, key, min, max);
}

std::vector<int64_t> optional_ints(const Napi::Object& o, const char* key, const std::string& op, int64_t min,
                                   int64_t max) {
  std::vector<int64_t> out;
  Napi::Value v = o.Get(key);
  if (absent(v)) return out;
  if (!v.IsArray()) throw_type_error(op, key, "an array of integers", v);
  Napi::Array a = v.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); ++i) out.push_back(read_int(a.Get(i), op, key, min, max));
  return out;
}

std::vector<std::string> optional_strings(const Napi::Object& o, const char* key, const std::string& op) {
  std::vector<std::string> out;
  Napi::Value v = o.Get(key);
  if (absent(v)) return out;
  if (!v.IsArray()) throw_type_error(op, key, "an array of strings", v);
  Napi::Array a = v.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); ++i) {
    Napi::Value e = a.Get(i);
    if (!e.IsString()) throw_type_error(op, key, "an array of strings", v);
    out.push_back(e.As<Napi::String>().Utf8Value());
  }
  return out;
}

}  // namespace args

void CapturedError::capture(const std::string& op, const std::exception_ptr& p) {
  set = true;
  try {
    std::rethrow_exception(p);
  } catch (const OpError& e) {
    kind = e.kind();
    code = e.code();
    message = e.what();
  } catch (const std::bad_alloc&) {
    kind = ErrorKind::Generic;
    code = "ERR_CRPO_OUT_OF_MEMORY";
    message = op + ": out of memory";
  } catch (const std::exception& e) {
    kind = ErrorKind::Generic;
    code = "ERR_CRPO_NATIVE";
    message = op + ": " + e.what();
  } catch (...) {
    kind = ErrorKind::Generic;
    code = "ERR_CRPO_NATIVE";
    message = op + ": unknown native exception";
  }
}

}  // namespace crpo
