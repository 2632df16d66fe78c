/**
 * The native video-language policy (docs/model.md): config and presets, word-level tokenizer,
 * the PolicyModel handle (generate / logprobs / trainStep / sftStep / evalBatch), checkpoints, the
 * strict safetensors reader/writer and the TypeScript reference of the section-6 loss.
 */
export { POLICY_PRESETS, resolvePolicyConfig, visualTokens, type PolicyConfig, type PolicyPresetName } from './config';
export {
  Tokenizer,
  pieces,
  SPECIAL_TOKENS,
  PAD_ID,
  UNK_ID,
  BOS_ID,
  EOS_ID,
  ANSWER_OPEN_ID,
  ANSWER_CLOSE_ID,
  type TokenizerJson,
} from './tokenizer';
export {
  PolicyModel,
  POLICY_TRANSFORMS,
  policyGradCheck,
  nativePolicyLoss,
  livePolicies,
  type PolicyTransform,
  type PolicyModelPrompt,
  type VisionLabel,
  type SftStepOptions,
  type PolicyInputs,
  type Completions,
  type PolicyModelGenerateOptions,
  type GenerateResult,
  type TrainOptions,
  type RlCompletions,
  type StepStats,
  type PolicyModelEvalResult,
  type PolicyInfo,
} from './policy';
export {
  saveCheckpoint,
  loadCheckpoint,
  readManifest,
  recoverInterruptedSave,
  CHECKPOINT_FORMAT,
  type CheckpointManifest,
  type CheckpointLoadOptions,
} from './checkpoint';
export {
  SafetensorsFile,
  readSafetensorsHeader,
  parseSafetensorsHeader,
  parseSafetensors,
  serializeSafetensors,
  writeSafetensors,
  toFloat32,
  float32ToBf16,
  safetensorsError,
  SAFE_DTYPE_BYTES,
  type SafeDtype,
  type SafeHeader,
  type SafeTensorEntry,
  type SafeTensor,
  type TensorToWrite,
} from './safetensors';
