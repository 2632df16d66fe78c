/**
 * The typed interface of the whole native surface: the functions each addon exports and the
 * plain objects that cross the boundary, with their shapes and dtypes. Only types: lib/native.ts
 * loads the addons and re-exports everything here, so library modules import these from
 * '../native'. `any` stops at these declarations (docs/architecture.md, "boundary").
 */
export type FrameLayout = 'BTHWC' | 'BTCHW';
export type VideoTransformName = 'hflip' | 'reverse' | 'hflip+reverse' | 'swap';
export type FrameArray = Uint8Array | Float32Array;

export interface NativeVideoTransformOptions {
  /** Five dimensions in the order of `layout`: [B,T,H,W,C] or [B,T,C,H,W]. */
  shape: number[];
  layout: FrameLayout;
  transform: VideoTransformName;
  /** First frame of the second segment, for 'swap'. */
  swapAt?: number;
  /** Caller-provided output, same type and length as the input. */
  output?: FrameArray;
  /** Torch addon only: 'cpu' (default) or 'cuda[:N]'. */
  device?: string;
}

export type AdvantageNorm = 'per-branch' | 'joint' | 'none';

export interface NativeCrrInputs {
  groups: number;
  origSize: number;
  cfSize: number;
  origAnswers: Int32Array; // (B, G)
  cfAnswers: Int32Array; // (B, G')
  truth: Int32Array; // (B,)
  relation: Int32Array; // (B,) 0 = same, 1 = change
  cfLabel?: Int32Array; // (B,) -1 = unknown
  numOptions: Int32Array; // (B,)
  origFormat?: Float32Array; // (B, G)
  cfFormat?: Float32Array; // (B, G')
  weights?: { accuracy?: number; format?: number; crr?: number; behave?: number };
  norm?: AdvantageNorm;
  eps?: number;
  device?: string;
  /**
   * Caller-provided outputs, reused across calls (no allocation): the four reward/advantage
   * arrays are required, the rest optional (not computed into when absent). Returned as given.
   */
  out?: CrrOutputBuffers;
}

/** Output arrays a caller owns (see NativeCrrInputs.out); lengths (B, G), (B, G') and (B,). */
export type CrrOutputBuffers = Pick<NativeCrrOutputs, 'origReward' | 'cfReward' | 'origAdvantage' | 'cfAdvantage'> &
  Partial<NativeCrrOutputs>;

export interface NativeCrrOutputs {
  origReward: Float32Array;
  cfReward: Float32Array;
  origAdvantage: Float32Array;
  cfAdvantage: Float32Array;
  correct: Float32Array;
  expected: Float32Array;
  pOrig: Float32Array;
  pCf: Float32Array;
  origFlat: Uint8Array;
  cfFlat: Uint8Array;
}

export interface NativeGrpoInputs {
  groups: number;
  groupSize: number;
  answers: Int32Array;
  truth: Int32Array;
  numOptions: Int32Array;
  format?: Float32Array;
  wAccuracy?: number;
  wFormat?: number;
  norm?: AdvantageNorm;
  eps?: number;
}

export interface NativeGrpoOutputs {
  reward: Float32Array;
  advantage: Float32Array;
  correct: Float32Array;
  flat: Uint8Array;
}

/** Functions both addons export. */
export interface OpsAddon {
  kind: 'core' | 'torch';
  videoTransform(input: FrameArray, options: NativeVideoTransformOptions): Promise<FrameArray>;
  videoTransformSync(input: FrameArray, options: NativeVideoTransformOptions): FrameArray;
  crrAdvantages(inputs: NativeCrrInputs): Promise<NativeCrrOutputs>;
  crrAdvantagesSync(inputs: NativeCrrInputs): NativeCrrOutputs;
  grpoAdvantagesSync(inputs: NativeGrpoInputs): NativeGrpoOutputs;
}

export interface CoreAddon extends OpsAddon {
  kind: 'core';
  grpoAdvantages(inputs: NativeGrpoInputs): Promise<NativeGrpoOutputs>;
  tgrpoAdvantagesSync(inputs: NativeTgrpoInputs): NativeTgrpoOutputs;
  arrowAdvantagesSync(inputs: NativeArrowInputs): NativeArrowOutputs;
}

/** T-GRPO rewards (native/kernels/cpu/baseline_rewards_kernel.h). */
export interface NativeTgrpoInputs {
  groups: number;
  groupSize: number;
  shuffledSize: number;
  answers: Int32Array; // (B, G)
  shuffledAnswers: Int32Array; // (B, S)
  truth: Int32Array;
  numOptions: Int32Array;
  format?: Float32Array;
  wAccuracy?: number;
  wFormat?: number;
  bonus?: number;
  mu?: number;
  norm?: AdvantageNorm;
  eps?: number;
}

export interface NativeTgrpoOutputs {
  reward: Float32Array;
  advantage: Float32Array;
  correct: Float32Array;
  pOrdered: Float32Array;
  pShuffled: Float32Array;
  bonusOn: Uint8Array;
  flat: Uint8Array;
}

/** ArrowRL rewards (native/kernels/cpu/baseline_rewards_kernel.h). */
export interface NativeArrowInputs {
  groups: number;
  groupSize: number;
  reverseSize: number;
  answers: Int32Array; // (B, G)
  reverseAnswers: Int32Array; // (B, G')
  truth: Int32Array;
  numOptions: Int32Array;
  format?: Float32Array;
  wAccuracy?: number;
  wFormat?: number;
  wReverse?: number;
  norm?: AdvantageNorm;
  eps?: number;
}

export interface NativeArrowOutputs {
  reward: Float32Array;
  advantage: Float32Array;
  correct: Float32Array;
  differ: Float32Array;
  flat: Uint8Array;
}

export interface TorchInfo {
  torchVersion: string;
  cudaAvailable: boolean;
  cudaDeviceCount: number;
  cudaKernelsBuilt: boolean;
  intraOpThreads: number;
  interOpThreads: number;
  parallelInfo: string;
  buildConfig: string;
  /** The malloc settings the addon applied when it loaded (native/torch/malloc_tuning.cpp). */
  malloc?: string;
}

/** c10d process groups (native/torch/dist; typed wrapper in lib/distributed/process-group.ts). */
export interface NativeDistInitOptions {
  masterAddr: string;
  masterPort: number;
  rank: number;
  worldSize: number;
  localRank: number;
  backend: 'gloo' | 'nccl';
  timeoutSeconds: number;
  bucketMb: number;
  heartbeatIntervalSeconds: number;
  heartbeatTimeoutSeconds: number;
  agentStore: boolean;
  restartCount: number;
}

export interface NativePeerFailure {
  rank: number | null;
  message: string;
}

export interface DistNativeApi {
  distInit(options: NativeDistInitOptions): Promise<number>;
  distAllReduce(
    group: number,
    arrays: Array<Float32Array | Float64Array>,
    op: 'sum' | 'mean' | 'max' | 'min',
    bucketMb?: number,
  ): Promise<void>;
  distBroadcast(group: number, arrays: Array<Float32Array | Float64Array>, root: number): Promise<void>;
  distBarrier(group: number): Promise<void>;
  distAbort(group: number, message: string): void;
  distFailure(group: number): NativePeerFailure | null;
  distInfo(group: number): {
    rank: number;
    worldSize: number;
    localRank: number;
    backend: string;
    device: string;
    commSeconds: number;
    commBytes: number;
    commCalls: number;
    overlapWaitSeconds: number;
    overlapRounds: number;
    overlapBuckets: number;
    overlapEarlyBuckets: number;
  };
  distShutdown(group: number): Promise<void>;
  distLiveGroups(): number;
  distBackends(): string[];
  distExitNow(code: number): never;
  /** Test twin: GradReducer (overlapped with backward) vs allreduce_mean after backward on a small MLP. */
  distReducerCheck(
    group: number,
    bucketMb: number,
  ): Promise<{ maxDiff: number; startedDuringBackward: number; buckets: number }>;
}

/**
 * Live and peak bytes of CPU tensors, counted on libtorch's allocator once installed
 * (native/torch/tensor_bytes.cpp).
 */
export interface TensorBytesStats {
  installed: boolean;
  liveBytes: number;
  peakBytes: number;
  allocations: number;
}

/**
 * The test-only addon (crpo_torch_checks.node, native/torch/model/checks/): the native policy's
 * finite-difference gradient checks and fast-path-vs-twin checks, kept out of the production addon.
 */
export interface TorchChecksAddon {
  kind: 'torch-checks';
  policyGradCheck(module: string, seed: number): Promise<{ maxError: number; maxAbsGrad: number; checked: number }>;
}

export interface TorchAddon extends OpsAddon, QwenNativeApi, DistNativeApi, PolicyNativeApi {
  kind: 'torch';
  info(): TorchInfo;
  setNumThreads(threads: number): void;
  tensorBytes(o?: { install?: boolean; resetPeak?: boolean }): TensorBytesStats;
}

/** A tensor returned by the addon: fp32 values and their shape. */
export interface NativeTensor {
  data: Float32Array;
  shape: number[];
}

/** Qwen2.5-VL / Qwen3-VL model calls (native/torch/qwen; typed wrappers in lib/hf/model.ts). */
export interface NativeQwenInputs {
  batch: number;
  seqLen: number;
  inputIds: Int32Array; // (B, L)
  attentionMask?: Int32Array; // (B, L)
  positionIds: Int32Array; // (3, B, L)
  pixelValues?: Float32Array; // (N, C*tp*p*p)
  imageGridThw?: Int32Array; // (n, 3)
  pixelValuesVideos?: Float32Array;
  videoGridThw?: Int32Array;
  /** The vision inputs belong to every row (one group): encoded once, scattered into each row. */
  shareVision?: boolean;
  /** Image / video i fills repeats[i] consecutive placeholder runs (encoded once). */
  imageRepeats?: number[];
  videoRepeats?: number[];
  /** (rows, prefix length) per group of consecutive rows sharing their prefix (shared-prefix path). */
  prefixGroups?: Int32Array;
}

export interface NativeQwenLoadSpec {
  config: Record<string, unknown>;
  dtype: 'float32' | 'bfloat16' | 'float16' | 'float64';
  device: string;
  tensors: Array<{ name: string; file: string; offset: number; nbytes: number; dtype: string; shape: number[] }>;
}

export interface NativeQwenForwardResult {
  logits: NativeTensor;
  tokenLogprobs: NativeTensor;
  lossMeanCe: number;
  objective: number;
  capture: Record<string, NativeTensor>;
  grads: Record<string, NativeTensor>;
}

export interface NativeQwenSampleOptions {
  maxNewTokens: number;
  eosTokenId?: number;
  useCache?: boolean;
  /** 0 = greedy. */
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
  keepLogits?: boolean;
}

export interface NativeQwenTrainBatch {
  /** (B, L): 1 on the tokens whose log-probs are trained. */
  completionMask: Int32Array;
  /** (B,) per-sequence advantages (objective 'grpo'). */
  advantages?: Float32Array;
  /** (B, L-1) behaviour / reference log-probs of token t+1. */
  oldLogprobs?: Float32Array;
  refLogprobs?: Float32Array;
  objective?: 'grpo' | 'sft';
  lr?: number;
  weightDecay?: number;
  maxGradNorm?: number;
  clipLow?: number;
  clipHigh?: number;
  klBeta?: number;
  /** 'token-mean' (default), 'seq-mean-token-mean' or 'seq-mean-token-sum-norm' (lib/algo/loss.ts). */
  aggregation?: string;
  /** Divisor of 'seq-mean-token-sum-norm'. */
  maxNewTokens?: number;
  /** Log-probs of logits / temperature. */
  temperature?: number;
  /** Micro-batching: the whole batch's completion tokens / sequences (aggregation normalisers). */
  normTokens?: number;
  normSequences?: number;
  /** false: only add this micro-batch's gradients; true (default): then clip and step. */
  apply?: boolean;
  /** Seeds the global generators first (reproducible LoRA dropout masks). */
  seed?: number;
  /**
   * Data parallel: the native id of a live process group (lib/distributed ProcessGroup.nativeId); the
   * step that applies averages the ranks' gradients, weighted by each rank's loss denominator
   * (tokens for token-mean, else sequences: normTokens / normSequences), before clipping and AdamW.
   */
  processGroup?: number;
  /** With processGroup: all-reduce gradient buckets during backward (default) or after it (false: the slow twin). */
  overlapGrads?: boolean;
  /** Bucket size of the overlapped gradient all-reduce, MiB (default 25, DDP's). */
  gradBucketMb?: number;
  /** 1: ZeRO-1 over processGroup: each rank keeps and updates the AdamW moments of 1/N of the trainable weights. */
  zero?: 0 | 1;
}

export interface NativeQwenTrainStats {
  loss: number;
  pgLoss: number;
  kl: number;
  clipFraction: number;
  /** Before clipping. */
  gradNorm: number;
  tokens: number;
  entropy: number;
  /** Non-finite loss or gradient: no update applied. */
  skipped: boolean;
}

export interface QwenNativeApi {
  qwenLoad(spec: NativeQwenLoadSpec): Promise<number>;
  qwenDispose(model: number): void;
  qwenLiveModels(): number;
  qwenForward(
    model: number,
    inputs: NativeQwenInputs,
    options?: { capture?: boolean; grads?: string[]; lora?: boolean; temperature?: number },
  ): Promise<NativeQwenForwardResult>;
  /** Folds the adapters into the base weights, on the JS thread (synchronous). */
  qwenMergeLoraSync(model: number): void;
  /** Accumulated gradients (train steps with apply: false) of the named weights. */
  qwenGrads(model: number, names: string[]): Record<string, NativeTensor>;
  qwenGenerate(
    model: number,
    inputs: NativeQwenInputs,
    options: NativeQwenSampleOptions,
  ): Promise<{ tokens: number[][]; logprobs: number[][]; stepLogits: NativeTensor[] }>;
  qwenTrainStep(model: number, inputs: NativeQwenInputs, batch: NativeQwenTrainBatch): Promise<NativeQwenTrainStats>;
  /** The applying step of a rank with no sequences (weight 0 in processGroup's all-reduce). */
  qwenSyncStep(
    model: number,
    batch: Omit<NativeQwenTrainBatch, 'completionMask' | 'processGroup'> & { processGroup: number },
  ): Promise<NativeQwenTrainStats>;
  qwenSetTrainable(model: number, mode: 'lora' | 'lm' | 'all'): string[];
  qwenSetCheckpointing(model: number, enabled: boolean): void;
  qwenAddLora(
    model: number,
    lora: { rank: number; alpha?: number; dropout?: number; targetModules: string[]; vision?: boolean; seed?: number },
  ): string[];
  qwenSetLoraEnabled(model: number, enabled: boolean): void;
  qwenParamNames(model: number, lora?: boolean): string[];
  /** One weight, read on the JS thread (synchronous); `merged` computes W + scale * B A there. */
  qwenGetParamSync(model: number, name: string, options?: { merged?: boolean }): NativeTensor;
  qwenSetParam(model: number, name: string, value: Float32Array): void;
  /** Collective with zero 1 (every rank calls it; '' writes nothing): the gathered, world-size-independent state. */
  qwenSaveOptimizer(model: number, path: string): Promise<void>;
  /** Bytes of AdamW moments this rank holds (its shard with zero 1). */
  qwenOptimizerStateBytes(model: number): number;
  qwenLoadOptimizer(model: number, path: string): Promise<void>;
}

/** The native video-language policy (native/torch/model; typed wrappers in lib/model/policy.ts). */
export interface NativePolicyBatch {
  frames: Uint8Array; // (V, T, H, W, 3)
  numVideos: number;
  promptVideo: Int32Array; // (P)
  promptTransform?: string[]; // (P) 'none' | 'hflip' | 'reverse' | 'hflip+reverse' | 'swap'
  promptSwapAt?: Int32Array; // (P) 'swap' prompts: first frame of the second segment
  promptIds: Int32Array; // concatenated prompt token ids
  promptLengths: Int32Array; // (P)
  /** Option slot of each prompt token (0 = none), aligned with promptIds; only with config.optionSlots > 0. */
  promptSlots?: Int32Array;
  /** (start, size, class) of each prompt's vision attribute label (size 0: none); sftStep only. */
  promptAuxLabels?: Int32Array;
  groupSize: number; // G: rows are prompt-major, row = p * G + g
}

export interface NativePolicyCompletions {
  ids: Int32Array; // (N, C)
  lengths: Int32Array; // (N)
  width: number; // C
  advantages?: Float32Array; // (N)
  oldLogprobs?: Float32Array; // (N, C)
  refLogprobs?: Float32Array; // (N, C)
}

export interface NativePolicyStepStats {
  loss: number;
  pgLoss: number;
  klLoss: number;
  meanKl: number;
  clipFrac: number;
  ratioMean: number;
  entropy: number;
  tokens: number;
  /** The supervised step's vision attribute loss (0 when off). */
  visionAuxLoss: number;
  gradNorm: number;
  skipped: boolean;
  skipReason: string;
  step: number;
}

export interface NativePolicyTensor {
  name: string;
  shape: number[];
  data: Float32Array;
}

/** The aggregated parts of section 6's loss over the native layout. */
export interface NativePolicyLossParts {
  loss: number;
  pgLoss: number;
  klLoss: number;
  /** Token mean of the KL term, whatever the aggregation. */
  meanKl: number;
  /** Token mean of the clipped indicator. */
  clipFrac: number;
  /** Token mean of the ratio. */
  ratioMean: number;
  tokens: number;
}

/** Section 6's loss, its parts, and d loss / d logprobs (rows x width). */
export interface NativePolicyLossResult extends NativePolicyLossParts {
  grad: Float32Array;
}

/** Log-probs (rows x width, row-major) and what section 6's loss needs besides them. */
export interface NativePolicyLossInputs {
  logprobs: Float32Array;
  oldLogprobs?: Float32Array;
  refLogprobs?: Float32Array;
  advantages: Float32Array;
  mask: Float32Array;
  rows: number;
  width: number;
}

export interface PolicyNativeApi {
  policyCreate(config: Record<string, unknown>): Promise<number>;
  policyClone(policy: number, options?: { frozen?: boolean }): Promise<number>;
  policyDispose(policy: number): boolean;
  policyLiveModels(): number;
  policyInfo(policy: number): {
    parameters: number;
    step: number;
    frozen: boolean;
    visualTokens: number;
    names: string[];
    shapes: number[][];
  };
  policyGenerate(
    policy: number,
    batch: NativePolicyBatch,
    options: {
      maxNewTokens?: number;
      temperature?: number;
      topP?: number;
      topK?: number;
      greedy?: boolean;
      useCache?: boolean;
      stop?: Int32Array;
      promptSeeds?: Uint32Array;
    },
  ): Promise<{ tokens: Int32Array; logprobs: Float32Array; lengths: Int32Array; width: number }>;
  policyLogprobs(
    policy: number,
    batch: NativePolicyBatch,
    completions: NativePolicyCompletions,
    options?: { temperature?: number; entropy?: boolean; fullSequence?: boolean },
  ): Promise<{ logprobs: Float32Array; entropy?: Float32Array }>;
  policyTrainStep(
    policy: number,
    batch: NativePolicyBatch,
    completions: NativePolicyCompletions,
    options: Record<string, unknown>,
  ): Promise<NativePolicyStepStats>;
  policyGetState(
    policy: number,
    which: 'weights' | 'optimizer',
  ): Promise<{ tensors: NativePolicyTensor[]; step: number }>;
  policySetState(
    policy: number,
    which: 'weights' | 'optimizer',
    tensors: NativePolicyTensor[],
    step?: number,
  ): Promise<void>;
  policyGetRngState(policy: number): Uint8Array;
  policySetRngState(policy: number, state: Uint8Array): void;
  policyLoss(inputs: NativePolicyLossInputs, options: Record<string, unknown>): NativePolicyLossResult;
}

export type AddonName = 'core' | 'torch';
