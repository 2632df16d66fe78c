/**
 * Policies the trainer drives (lib/policy/policy.ts): the registry of kinds, the built-in
 * `linear` policy and the `native` libtorch policy adapter.
 */
export {
  POLICY_KINDS,
  type Policy,
  type PolicyPrompt,
  type Completion,
  type GenerateOptions,
  type TrainSequence,
  type TrainStepOptions,
  type TrainStepStats,
  type PolicyFactory,
  type PolicyFactoryOptions,
} from './policy';
export { LinearPolicy, createLinearPolicy } from './linear';
export { NativePolicy, createNativePolicy, isNativeCheckpoint } from './native';
export { clipDescriptors } from './video-features';
// Registers the `qwen` policy kind (Qwen2.5-VL / Qwen3-VL folders, lib/hf) with POLICY_KINDS.
import './qwen';
