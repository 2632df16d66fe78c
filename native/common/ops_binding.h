// Argument parsing shared by the core and torch addons for the two foundation ops: the
// counterfactual video transform and the fused CRR / GRPO group advantages. Parsing happens
// on the JS thread; the resulting plain structs can be handed to a background worker.
#pragma once

#include <napi.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "../kernels/cpu/baseline_rewards_kernel.h"
#include "../kernels/cpu/crr_kernel.h"
#include "../kernels/cpu/video_transform_kernel.h"
#include "napi_util.h"
#include "promise_worker.h"

namespace crpo {

// videoTransform(input, { shape, layout, transform, swapAt?, output? })
struct VideoTransformCall {
  VideoShape shape;
  VideoTransform transform = VideoTransform::HFlip;
  int64_t swap_at = 0;
  ByteView input;
  ByteView output;
  Napi::Value output_value;  // the typed array returned to JS
  bool is_float = false;
};
VideoTransformCall parse_video_transform(const Napi::CallbackInfo& info, const std::string& op);

// crrAdvantages({ groups, origSize, cfSize, origAnswers, cfAnswers, truth, relation, cfLabel?,
//                 numOptions, origFormat?, cfFormat?, weights?, norm?, eps? })
struct CrrCall {
  CrrInputs in;
  CrrOutputs out;
  Napi::Value
      result;  // { origReward, cfReward, origAdvantage, cfAdvantage, correct, expected, pOrig, pCf, origFlat, cfFlat }
};
CrrCall parse_crr(const Napi::CallbackInfo& info, const std::string& op);

// grpoAdvantages({ groups, groupSize, answers, truth, numOptions, format?, wAccuracy?, wFormat?, norm?, eps? })
struct GrpoCall {
  GrpoInputs in;
  GrpoOutputs out;
  Napi::Value result;  // { reward, advantage, correct, flat }
};
GrpoCall parse_grpo(const Napi::CallbackInfo& info, const std::string& op);

// tgrpoAdvantages({ groups, groupSize, shuffledSize, answers, shuffledAnswers, truth, numOptions,
//                   format?, wAccuracy?, wFormat?, bonus?, mu?, norm?, eps? })
struct TgrpoCall {
  TgrpoInputs in;
  TgrpoOutputs out;
  Napi::Value result;  // { reward, advantage, correct, pOrdered, pShuffled, bonusOn, flat }
};
TgrpoCall parse_tgrpo(const Napi::CallbackInfo& info, const std::string& op);

// arrowAdvantages({ groups, groupSize, reverseSize, answers, reverseAnswers, truth, numOptions,
//                   format?, wAccuracy?, wFormat?, wReverse?, norm?, eps? })
struct ArrowCall {
  ArrowInputs in;
  ArrowOutputs out;
  Napi::Value result;  // { reward, advantage, correct, differ, flat }
};
ArrowCall parse_arrow(const Napi::CallbackInfo& info, const std::string& op);

// ---- The JS functions of the foundation ops, shared by the core and torch addons ---------------
// Each parses its arguments on the JS thread, has `plan` build the work (the core addon: the CPU
// kernel; the torch addon: the kernel on options.device), and runs it at once (`queue` null: the
// ...Sync function) or on a worker (`queue`: queue_promise, or the torch addon's queue_torch),
// resolving with the call's result arrays.
using QueueFn = Napi::Promise (*)(Napi::Env, const std::string&, std::function<void()>,
                                  std::function<Napi::Value(Napi::Env)>, std::vector<Napi::Value>);
template <typename Call>
using PlanFn = std::function<void()> (*)(const Napi::CallbackInfo&, const std::string& op, const Call&);

Napi::Value video_transform_js(const Napi::CallbackInfo& info, const std::string& op, PlanFn<VideoTransformCall> plan,
                               QueueFn queue);
Napi::Value crr_advantages_js(const Napi::CallbackInfo& info, const std::string& op, PlanFn<CrrCall> plan,
                              QueueFn queue);
// GRPO runs on the CPU kernel in both addons.
Napi::Value grpo_advantages_js(const Napi::CallbackInfo& info, const std::string& op, QueueFn queue);

// The CPU plans (the core addon's, and the torch addon's for device 'cpu' where it has no other).
std::function<void()> cpu_video_transform(const Napi::CallbackInfo& info, const std::string& op,
                                          const VideoTransformCall& c);
std::function<void()> cpu_crr(const Napi::CallbackInfo& info, const std::string& op, const CrrCall& c);

// The typed arrays of a CRR / GRPO inputs object that an async call reads (for `keep`).
std::vector<Napi::Value> crr_input_arrays(const Napi::Object& inputs);
std::vector<Napi::Value> grpo_input_arrays(const Napi::Object& inputs);

}  // namespace crpo
