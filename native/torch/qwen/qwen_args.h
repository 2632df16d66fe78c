// Shared pieces of the Qwen JS bindings (qwen_binding.cpp, qwen_train_binding.cpp): the live
// model handles by id and the readers that turn JS arguments into validated C++ values (configs,
// inputs as CPU tensors copied on the JS thread) with the standard messages of common/napi_util.
#pragma once

#include <napi.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "torch/qwen/qwen_model.h"

namespace crpo {
namespace qwen_js {

// Live models: ids as JS holds them (a running worker keeps its own reference).
int64_t add_model(std::shared_ptr<qwen::Model> model);
void erase_model(int64_t id);
size_t live_models();
std::shared_ptr<qwen::Model> find_model(const Napi::Value& v, const std::string& op);

Napi::Object read_object(const Napi::Value& v, const std::string& op, const std::string& param);
int64_t get_int(const Napi::Object& o, const char* key, const std::string& op, int64_t dflt, bool required);
double get_num(const Napi::Object& o, const char* key, const std::string& op, double dflt);
bool get_bool(const Napi::Object& o, const char* key, bool dflt);
std::string get_str(const Napi::Object& o, const char* key, const std::string& op, const std::string& dflt);
std::vector<int64_t> get_ints(const Napi::Object& o, const char* key, const std::string& op);
std::vector<std::string> get_strs(const Napi::Object& o, const char* key, const std::string& op);
bool present(const Napi::Object& o, const char* key);

qwen::Config parse_config(const Napi::Object& o, const std::string& op);
at::ScalarType parse_dtype(const std::string& s, const std::string& op, const std::string& param);
at::Device parse_device(const std::string& s, const std::string& op);
// Copies a typed array into a new CPU tensor of `sizes` (checked element count; Int32 -> int64).
at::Tensor copy_array(const Napi::Value& v, const std::string& op, const std::string& param, std::vector<int64_t> sizes,
                      napi_typedarray_type type);
qwen::Inputs parse_inputs(const Napi::Value& v, const qwen::Config& cfg, const std::string& op);
// { data: Float32Array, shape } of a tensor (converted to fp32 on the CPU).
Napi::Object tensor_to_js(Napi::Env env, const at::Tensor& t);

}  // namespace qwen_js
}  // namespace crpo
