// Argument parsing shared by the core and torch addons for the two foundation ops: the
// counterfactual video transform and the fused CRR / GRPO group advantages. Parsing happens
// on the JS thread; the resulting plain structs can be handed to a background worker.
#pragma once

#include <napi.h>

#include <memory>
#include <string>
#include <vector>

#include "../kernels/cpu/baseline_rewards_kernel.h"
#include "../kernels/cpu/crr_kernel.h"
#include "../kernels/cpu/video_transform_kernel.h"
#include "napi_util.h"

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

// The typed arrays of a CRR / GRPO inputs object that an async call reads (for `keep`).
std::vector<Napi::Value> crr_input_arrays(const Napi::Object& inputs);
std::vector<Napi::Value> grpo_input_arrays(const Napi::Object& inputs);

}  // namespace crpo
