// Shared pieces of the Qwen JS bindings (qwen_binding.cpp, qwen_train_binding.cpp): the live
// model handles by id and the readers that turn JS arguments into validated C++ values (configs,
// inputs as CPU tensors copied on the JS thread) over common/napi_util's args:: (undefined / null
// = absent, any other wrong type throws, naming the option).
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

// The integer range of config fields and options without a narrower one (args:: readers).
constexpr int64_t kAnyIntMin = INT64_MIN / 2, kAnyIntMax = INT64_MAX / 2;

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
