/**
 * crpo: Counterfactual Relational Policy Optimization for video LLMs. Public API.
 */
export * from './errors';
export { Registry } from './registry';
export {
  addonStatus, hasAddon, ops, torchInfo, setTorchThreads, liveHandleCount, NativeHandle, torchQueue,
  type AddonName, type AddonStatus, type FrameArray, type FrameLayout, type VideoTransformName, type AdvantageNorm,
  type NativeCrrInputs, type NativeCrrOutputs, type CrrOutputBuffers, type NativeGrpoInputs, type NativeGrpoOutputs, type TorchInfo,
} from './native';
export { transformFrames, transformFramesSync, referenceTransform, VIDEO_TRANSFORMS, FRAME_LAYOUTS, type TransformOptions } from './counterfactual';
export {
  crrAdvantages, crrAdvantagesAsync, crrAdvantagesInto, allocCrrOutputs, grpoAdvantages, packCrrGroups, referenceCrr, referenceGrpo, normaliseGroup, ADVANTAGE_NORMS,
  type CrrGroup, type BranchRollout, type CrrSettings,
} from './reward';
export { doctorReport, formatDoctor, type DoctorReport } from './doctor';
export { synthesize, synthesizeStream, synthesizeRecords, renderSynthetic, SYNTH_DEFAULTS, type SynthOptions, type SynthItem } from './synth';
export {
  loadRecords, loadRecordsSync, parseRecords, checkRecord, formatIssue, DataError, CATEGORY_OPTION_COUNTS, CATEGORY_TRANSFORMS, mapDirection,
  writeFileAtomic, writeFileAtomicSync, writeJsonlAtomic, writeJsonlAtomicSync, appendJsonlSync, JsonlAppender, repairJsonlTail, parseJsonl,
  DyBenchRecord, CATEGORIES, RECORD_TRANSFORMS, SyntheticVideoSpec, VideoRef, type Category, type RecordTransform, type LoadOptions, type LoadResult, type RecordIssue,
} from './data';
export { VideoReader, readVideo, probeVideo, encodeMp4, writeFrameDir, uniformIndices, targetSize, type DecodedVideo, type ReadOptions, type ReaderOptions } from './video';
export { runEval, computeMetrics, bootstrapIntervals, timeBlindMetrics, pearson, createModel, setCheckpointFactory, MODEL_KINDS, type AnswerModel, type AnswerRequest, type AnswerResponse, type EvalConfig, type EvalSummary } from './eval';
export { buildDyBench, planBuild, importDyBench, importTimeBlind, type BuildOptions, type BuildResult, type ImportDyBenchOptions, type ImportTimeBlindOptions, type ImportResult } from './dybench';
export { routeRecord, routeRecords, routeFile, resolveRouterConfig, routerBackends, POLICY_TABLE, ROUTE_TYPES, ROUTE_TRANSFORMS, type Route, type RouteType, type RouteTransform, type RouterConfig, type RouteStats } from './router';
export {
  Policy, Tokenizer, POLICY_PRESETS, POLICY_TRANSFORMS, resolvePolicyConfig, saveCheckpoint, loadCheckpoint, readManifest, CHECKPOINT_FORMAT,
  referencePolicyLoss, nativePolicyLoss, policyGradCheck, livePolicies, LOSS_AGGREGATIONS, SPECIAL_TOKENS, EOS_ID, PAD_ID,
  SafetensorsFile, readSafetensorsHeader, parseSafetensors, writeSafetensors, serializeSafetensors, toFloat32, float32ToBf16,
  type PolicyConfig, type PolicyPresetName, type PolicyTransform, type PolicyPrompt, type PolicyInputs, type GenerateOptions, type GenerateResult,
  type TrainOptions, type RlCompletions, type EvalResult, type CheckpointManifest, type LossAggregation, type LossParts,
  type Completions as PolicyCompletions, type StepStats as PolicyStepStats, type LossOptions as PolicyLossOptions, type LoadOptions as CheckpointLoadOptions,
  type SafeDtype, type SafeHeader, type SafeTensorEntry, type TensorToWrite,
} from './model';
export { ALGORITHMS, getAlgorithm, policyLoss, tokenLoss, DEFAULT_LOSS, type Algorithm, type AlgoSettings, type RolloutPlan, type Scores, type ScoredGroupInput, type SecondBranch, type LossSettings, type LossSequence, type LossResult } from './algo';
export { tgrpoAdvantages, arrowAdvantages, referenceTgrpo, referenceArrow } from './reward/baselines';
export {
  train, validate, resolveConfig as resolveTrainConfig, saveResolvedConfig, learningRate, TRAIN_DEFAULTS, sftBase, runDemo, shardBatch, SINGLE_PROCESS, listCheckpoints,
  type TrainConfig, type TrainHooks, type TrainResult, type ValidationResult, type DistContext,
} from './train';
export { POLICY_KINDS, LinearPolicy, NativePolicy, type Policy as TrainablePolicy, type PolicyPrompt as TrainPrompt, type Completion, type TrainSequence, type TrainStepStats, type PolicyFactory } from './rollout';
export { startServer, loadCheckpointPolicy, SERVE_DEFAULTS, type ServeOptions, type RunningServer } from './serve';
export {
  QwenVLModel, resolveWeights, type QwenInputs, type QwenForwardOptions, type QwenForwardResult, type QwenLoadOptions, type LoraOptions, type QwenDtype,
} from './hf/model';
export { QwenPolicy, DEFAULT_QWEN_LORA, type QwenPolicyOptions } from './hf/qwen-policy';
export {
  parseQwenConfig, readQwenConfig, resolveQwenFields, QWEN_CONFIG_DEFAULTS, expectedWeights, canonicalKey,
  SUPPORTED_ARCHS, type QwenVLConfig, type QwenArch,
} from './hf/config';
export { chatTemplateFor, compileChatTemplate, findChatTemplate, type ChatTemplate } from './hf/chat-template';
export { resolveTorchThreads, type ThreadSetting, type ThreadSource } from './threads';
export { ropeIndex, type RopeIndex, type RopeIndexInputs } from './hf/rope-index';
export {
  processFrames, patchify, smartResize, smartResizeVideo, sampleFrameIndices, frameTimestamps, renderChat, expandPlaceholders, roundHalfEven, type ChatMessage, type ChatPart,
} from './hf/processor';
export { loadTokenizer, qwen3Tokenizer, byteTokenizer, tokenizerFor, type HfTokenizer } from './hf/tokenizer';
export { estimateBudget, PUBLISHED_CONFIGS, DEFAULT_SCENARIO, type BudgetEstimate, type BudgetScenario } from './hf/budget';
export * as dist from './dist';
export { initDistributed, runRank, ProcessGroup, parseDistEnv, launchLocal, type DistContext as DistributedContext, type DistEnv } from './dist';
export { createCheckpointModel } from './serve/checkpoint-model';
export { reproduce, validateReproduceConfig, REPRODUCE_DEFAULTS, REPRODUCE_QUICK, REPRODUCE_METHODS, REPRODUCE_NATIVE, REPRODUCE_NATIVE_QUICK, REPRODUCE_PRESETS, presetConfig as reproducePresetConfig, mainTable as reproduceTable, curvesSvg as reproduceCurvesSvg, type ReproduceConfig, type ReproduceResult, type RunResult as ReproduceRunResult, type MethodSummary } from './reproduce';
export { TimeBlindInstance } from './data';
export { detectModelFolder, type ModelFolder } from './hf/model-folder';
