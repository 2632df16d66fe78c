/**
 * `crpo bench plan`: memory per device of a CRPO run, from formulas (docs/real-models.md, "Memory
 * plan of a CRPO run"), before launching it: weights, the frozen reference, gradients + optimizer
 * state (LoRA or full; sharded over the devices with --sharded-optim), the update's activations
 * with and without gradient checkpointing plus logits, the vision tower, and the KV cache of the
 * rollouts of both branches; the peak is weights + reference + state + the larger of the rollout
 * phase and the update phase, and it fits when that is below the device memory.
 * Two model families: Hugging Face Qwen2.5-VL / Qwen3-VL (a folder's config.json or a published
 * name; activation, logits, vision and KV terms from lib/hf/budget.ts) and the native policy
 * (lib/model presets; every term below, from what native/torch/model keeps in each phase; the
 * weight read-back after a step is a phase of its own). The native parameter count is tested exact;
 * the native peak is checked against the tensor bytes counted on libtorch's CPU allocator during
 * `crpo bench rollout`'s steps, within 15% for two configurations (test/e2e/bench-plan-memory.test.ts;
 * measured 0.3-3.5% apart, docs/real-models.md).
 */
import * as fs from 'fs';
import * as path from 'path';
import { CrpoError, invalidArg, outOfRange } from '../errors';
import { estimateBudget, PUBLISHED_CONFIGS, sharedPrefixUpdate } from '../hf/budget';
import { expectedWeights, readQwenConfig, type QwenVLConfig } from '../hf/config';
import { POLICY_PRESETS, visualTokens, type PolicyConfig } from '../model/config';

const GiB = 2 ** 30;
const OP = 'bench plan';

export type PlanDtype = 'bfloat16' | 'float16' | 'float32';
const DTYPE_BYTES: Record<PlanDtype, number> = { bfloat16: 2, float16: 2, float32: 4 };

/** A native policy shape: everything of PolicyConfig but seed/dtype/device. */
export type NativeShape = Omit<PolicyConfig, 'seed' | 'dtype' | 'device'>;

export interface PlanOptions {
  /**
   * A Hugging Face folder, a published name (Qwen2.5-VL-7B, Qwen3-VL-4B, Qwen3-VL-8B),
   * 'native-tiny' / 'native-small', or a native shape.
   */
  model: string | { native: NativeShape };
  gpus: number;
  /** Memory per device in GB (10^9 bytes); 0 = do not judge the fit. */
  gpuMemGB: number;
  /** LoRA rank on q/k/v/o (qwen; 0 = full fine-tuning). The native policy always trains every weight. */
  lora: number;
  /** ZeRO-2: gradients and optimizer state split over the devices. */
  shardedOptim: boolean;
  /** Prompts per device per step (B). */
  batch: number;
  groupSize: number;
  /** 0 = G. */
  cfGroupSize: number;
  frames: number;
  /** Pixels per frame after resizing (qwen); the native policy uses its own imageSize. */
  pixels: number;
  promptTokens: number;
  maxNewTokens: number;
  /** Sequences per forward/backward (qwen microBatch); the native train step runs all of a rank's sequences at once. */
  microBatch: number;
  dtype: PlanDtype;
  checkpointing: boolean;
  /**
   * Qwen: the update runs each prompt's (vision + prompt) prefix once for its rows in a
   * micro-batch and scores only the completions (the qwen policy's default, `sharedPrefix`);
   * false: every sequence whole (the per-row path).
   */
  sharedPrefix: boolean;
}

export const PLAN_DEFAULTS: Omit<PlanOptions, 'model' | 'gpus' | 'gpuMemGB'> = {
  lora: 16,
  shardedOptim: false,
  batch: 2,
  groupSize: 8,
  cfGroupSize: 0,
  frames: 16,
  pixels: 128 * 28 * 28,
  promptTokens: 120,
  maxNewTokens: 256,
  microBatch: 1,
  dtype: 'bfloat16',
  checkpointing: true,
  sharedPrefix: true,
};

/** One line of the plan, bytes per device. */
export interface PlanTerm {
  name: string;
  label: string;
  bytes: number;
  /**
   * 'resident' for the whole run; 'rollout' / 'update' / 'readback' (the native policy's weight
   * read-back after a step) only during that phase; 'info' is printed but not in the peak.
   */
  phase: 'resident' | 'rollout' | 'update' | 'readback' | 'info';
  /** Host memory outside libtorch's tensors (JS arrays); the other terms are tensor bytes. */
  host?: boolean;
  formula: string;
}

export interface PlanResult {
  model: string;
  family: 'qwen' | 'native';
  params: number;
  trainableParams: number;
  seqLen: number;
  options: Omit<PlanOptions, 'model'>;
  terms: PlanTerm[];
  residentBytes: number;
  rolloutBytes: number;
  updateBytes: number;
  readbackBytes: number;
  /** resident + max(rollout, update, readback). */
  peakBytes: number;
  /** The same over the tensor terms only (no host terms): what libtorch's allocator holds at the peak. */
  tensorPeakBytes: number;
  /** Undefined when no --gpu-mem was given. */
  fits?: boolean;
  /** Largest term, for the one-line advice. */
  advice: string;
}

// ---------------------------------------------------------------------------------------------
// Native policy: parameter count and per-phase bytes (fp32 on CPU; bf16 weights on CUDA)
// ---------------------------------------------------------------------------------------------

/** Values the tubelet patch embedding reads: pixels, stem channels, or the half-resolution map's. */
function patchInputs(c: Pick<NativeShape, 'visionStem' | 'visionStemDown' | 'patchSize' | 'temporalPatch'>): number {
  const down = c.visionStemDown > 0;
  const cell = down ? c.patchSize / 2 : c.patchSize;
  const perCell = down ? c.visionStemDown : c.visionStem > 0 ? c.visionStem : 3;
  return c.temporalPatch * cell * cell * perCell;
}

/** Parameters of the native policy (native/torch/model): vision ViT, projector, decoder LM. */
export function nativeParams(c: Omit<NativeShape, 'maxSeqLen' | 'ropeTheta' | 'normEps' | 'initStd'>): number {
  const Dv = c.visionDim,
    Dl = c.lmDim,
    g = c.imageSize / c.patchSize,
    m2 = c.mergeSize * c.mergeSize;
  const hd = Dl / c.lmHeads;
  const vision =
    g * g * Dv +
    (c.frames / c.temporalPatch) * Dv + // spatial + temporal positions
    Dv * patchInputs(c) +
    Dv + // tubelet patch embedding
    (c.visionStem > 0 ? c.visionStem * 3 * 9 + c.visionStem : 0) + // 3x3 convolutional stem
    (c.visionStemDown > 0 ? c.visionStemDown * c.visionStem * 9 + c.visionStemDown : 0) + // its stride-2 convolution
    // qkv, proj, fc1, fc2 + biases + 2 LayerNorms per block
    c.visionLayers * (4 * Dv * Dv + 2 * Dv * c.visionMlp + 9 * Dv + c.visionMlp) +
    2 * Dv; // final LayerNorm
  const projector = 2 * Dv + m2 * Dv * m2 * Dv + m2 * Dv + Dl * m2 * Dv + Dl;
  const lm =
    2 * c.vocabSize * Dl + // embedding + head
    c.lmLayers * (2 * Dl + 2 * Dl * Dl + 2 * c.lmKvHeads * hd * Dl + 3 * c.lmMlp * Dl) + // norms, wq/wo, wk/wv, SwiGLU
    Dl;
  return vision + projector + lm;
}

function nativePlan(s: NativeShape, o: PlanOptions, name: string): PlanResult {
  const b = DTYPE_BYTES[o.dtype];
  const P = nativeParams(s);
  const G = o.groupSize,
    H = o.cfGroupSize || o.groupSize;
  const vis = visualTokens(s);
  const Lp = vis + o.promptTokens,
    C = o.maxNewTokens,
    Lk = Lp + C;
  const Dl = s.lmDim,
    hd = Dl / s.lmHeads,
    kd = s.lmKvHeads * hd;
  // The update: NativePolicy gives every sequence its own prompt row (the native step's prefix sharing
  // needs G rows per prompt), so the train step runs N rows: a prefix pass over Lp tokens that fills
  // each layer's keys/values, then a completion pass over C tokens against Lk = Lp + C keys
  // (native/torch/model policy_model.cpp, completion_hidden). All of it is kept for the backward: the
  // native policy has no gradient checkpointing.
  const N = o.batch * (G + H);
  const T = N * C; // completion tokens scored (at most; every completion at maxNewTokens)
  // Per token per LM layer, what autograd keeps: the layer input, RMSNorm's normalised input and
  // output (x2 norms), q and its rotated copy, k before rotation, the attention output, the
  // residual sum; SwiGLU's gate, silu(gate), up and their product.
  const perTok = (9 * Dl + kd + 4 * s.lmMlp) * b;
  // Attention probabilities: softmax's fp32 output (+ its cast to the weight dtype below fp32), and
  // the bool mask masked_fill keeps, one per layer.
  const perScore = 4 + (b < 4 ? b : 0) + 1;
  const prefixLayer = N * (Lp * perTok + Lp * 2 * kd * b + s.lmHeads * Lp * Lp * perScore); // with its K/V cache
  const completionLayer = N * (C * perTok + Lk * 2 * kd * b + s.lmHeads * C * Lk * perScore); // K/V of Lk keys
  const completionOther =
    N * C * (2 * Dl + hd) * b + // final RMSNorm (input, normalised), rotary cos/sin tables
    T * Dl * b + // the head's input (completion positions)
    T * s.vocabSize * 4; // log-softmax over the vocabulary (fp32)
  const lmOther = N * Lp * (2 * Dl + hd) * b + completionOther;
  const lmLayer = prefixLayer + completionLayer;
  // Vision tower, trained: 2B clips (each question's original and counterfactual clip), per tubelet
  // token per block: input, qkv, attention output, residual, both LayerNorm outputs (4 + 3 + 1) Dv,
  // both MLP activations; the attention probabilities over the clip (or one frame group).
  const clips = 2 * o.batch;
  const perGroup = (s.imageSize / s.patchSize) ** 2;
  const tubelets = (s.frames / s.temporalPatch) * perGroup;
  const keys = s.visionClipAttention ? tubelets : perGroup;
  const patchIn = patchInputs(s);
  const stemAct =
    (s.visionStem > 0 ? clips * s.frames * s.imageSize * s.imageSize * (3 + 2 * s.visionStem) * b : 0) +
    (s.visionStemDown > 0 ? (clips * s.frames * s.imageSize * s.imageSize * 2 * s.visionStemDown * b) / 4 : 0);
  const visAct =
    clips * tubelets * (s.visionLayers * ((8 * s.visionDim + 2 * s.visionMlp) * b + s.visionHeads * keys * perScore)) +
    clips * tubelets * (patchIn + 6 * s.visionDim) * b + // patch input, final LayerNorm and projector
    stemAct; // the stem's input, convolution output and GELU output per pixel
  const activations = s.lmLayers * lmLayer + lmOther + visAct;
  // Gradients are allocated during the backward, while activations are released. The completion
  // pass was recorded last, so autograd runs it first: at its start every activation is alive with
  // the gradients of the head and the last layer; at its end the gradients of every LM layer exist
  // and the completion pass's activations are gone. Whichever moment is larger is the peak.
  const layerParams = 2 * Dl + 2 * Dl * Dl + 2 * kd * Dl + 3 * s.lmMlp * Dl;
  const gradsFirst = (layerParams + s.vocabSize * Dl + Dl) * b;
  const gradsAtPeak = Math.max(gradsFirst, P * b - (s.lmLayers * completionLayer + completionOther));
  // The largest short-lived tensors on top of what is kept: the entropy's exp(log p) and its product
  // with log p at the end of the forward (2 x T x vocab fp32), or in the backward the gradients of a
  // layer's attention scores and probabilities (2 x N x heads x queries x keys, fp32).
  const transient = Math.max(2 * T * s.vocabSize * 4, 2 * N * s.lmHeads * Math.max(Lp * Lp, C * Lk) * 4);
  const kv = o.batch * Math.max(G, H) * (Lp + C) * s.lmLayers * 2 * kd * b; // one branch's generate call at a time
  const terms: PlanTerm[] = [
    { name: 'weights', label: 'weights', bytes: P * b, phase: 'resident', formula: 'P x dtype bytes' },
    {
      name: 'reference',
      label: 'frozen reference copy',
      bytes: P * b,
      phase: 'resident',
      formula: 'P x dtype bytes (a second copy: freezeReference)',
    },
    {
      name: 'optimizer',
      label: 'AdamW moments (fp32)',
      bytes: (P * 8) / (o.shardedOptim ? o.gpus : 1),
      phase: 'resident',
      formula: `P x 8 B${o.shardedOptim ? ' / devices' : ''}`,
    },
    {
      name: 'gradients',
      label: 'gradients alive at the peak (allocated during the backward, freed after the step)',
      bytes: gradsAtPeak,
      phase: 'update',
      formula: "max(head + last layer's, P - completion-pass activations) x dtype bytes",
    },
    {
      name: 'gradientsAll',
      label: 'all gradients (at the end of the backward)',
      bytes: P * b,
      phase: 'info',
      formula: 'P x dtype bytes',
    },
    {
      name: 'activations',
      label: 'activations (all kept: no checkpointing in the native policy)',
      bytes: activations,
      phase: 'update',
      formula:
        'layers x N x (prefix Lp + completion C tokens x per-token tensors + K/V + heads x queries x keys) + ' +
        'log-softmax T x vocab + vision tubelets',
    },
    {
      name: 'transient',
      label: "largest short-lived tensors (entropy, or a layer's score gradients)",
      bytes: transient,
      phase: 'update',
      formula: 'max(2 x T x vocab x 4 B, 2 x N x heads x max(Lp^2, C x Lk) x 4 B)',
    },
    // NativePolicy.refreshDigest reads every weight back when the digest is asked for (a checkpoint,
    // the end of the run, a resume check), when the step's tensors are gone: the addon's fp32 copy and
    // the JS arrays it is copied into, both alive while the copy runs.
    {
      name: 'digest',
      label: 'weights read back for the digest at a checkpoint (fp32 tensor copy)',
      bytes: P * 4,
      phase: 'readback',
      formula: 'P x 4 B (NativePolicy.refreshDigest)',
    },
    {
      name: 'digestHost',
      label: 'the same weights in JS arrays (host memory)',
      bytes: P * 4,
      phase: 'readback',
      host: true,
      formula: 'P x 4 B',
    },
    {
      name: 'digestPrevious',
      label: "the previous digest's JS arrays, until V8 collects them",
      bytes: P * 4,
      phase: 'info',
      host: true,
      formula: 'up to P x 4 B more',
    },
    {
      name: 'kvCache',
      label: `KV cache of the rollouts (B x max(G, G') = ${o.batch * Math.max(G, H)} rows per branch call)`,
      bytes: kv,
      phase: 'rollout',
      formula: 'rows x (Lp + C) x layers x 2 x kv_dim x bytes',
    },
  ];
  return finish(name, 'native', P, P, Lk, { ...o, checkpointing: false }, terms);
}

// ---------------------------------------------------------------------------------------------
// Qwen-VL (GPU): weights, LoRA or full state, checkpointed activations per micro-batch, KV
// ---------------------------------------------------------------------------------------------

/** LoRA parameters on q/k/v/o of every LM layer (QwenPolicy's default targets): r x (in + out) each. */
export function qwenLoraParams(cfg: QwenVLConfig, rank: number): number {
  const t = cfg.text,
    H = t.hiddenSize,
    qd = t.numHeads * t.headDim,
    kd = t.numKvHeads * t.headDim;
  return t.numLayers * rank * (H + qd + 2 * (H + kd) + (qd + H));
}

function qwenPlan(cfg: QwenVLConfig, o: PlanOptions, name: string): PlanResult {
  const b = DTYPE_BYTES[o.dtype];
  const G = o.groupSize,
    H = o.cfGroupSize || o.groupSize;
  const scenario = {
    frames: o.frames,
    framePixels: o.pixels,
    promptTokens: o.promptTokens,
    completionTokens: o.maxNewTokens,
    sequences: Math.max(G, H),
    loraRank: o.lora || 16,
    bytes: b,
  };
  const e = estimateBudget(cfg, scenario);
  let P = 0;
  for (const shape of expectedWeights(cfg).values()) P += shape.reduce((a, x) => a * x, 1);
  const lora = o.lora > 0;
  const T = lora ? qwenLoraParams(cfg, o.lora) : P;
  const shard = o.shardedOptim ? o.gpus : 1;
  // The update's tensors per micro-batch of m sequences: per row (every sequence whole), or with the
  // shared prefix as the policy runs it: m sequences of ceil(m / max(G, G')) prompts, each prefix once.
  const m = o.microBatch;
  let act: number, kept: number, logits: number;
  if (o.sharedPrefix) {
    const groups = Math.ceil(m / Math.max(G, H));
    const u = sharedPrefixUpdate(cfg, scenario, m / groups);
    act = groups * (o.checkpointing ? u.checkpointed : u.activations);
    kept = groups * u.activations;
    logits = groups * u.logits;
  } else {
    act = (o.checkpointing ? e.activationsPerSeqCheckpointedGiB : e.activationsPerSeqGiB) * GiB * m;
    kept = e.activationsPerSeqGiB * GiB * m;
    logits = e.logitsPerSeqGiB * GiB * m;
  }
  const kvAll = (e.kvCacheGroupGiB * GiB * o.batch * (G + H)) / Math.max(G, H);
  const terms: PlanTerm[] = [
    { name: 'weights', label: 'weights', bytes: P * b, phase: 'resident', formula: 'P x dtype bytes' },
    {
      name: 'reference',
      label: lora ? 'frozen reference (the base with LoRA off: no copy)' : 'frozen reference copy',
      bytes: lora ? 0 : P * b,
      phase: 'resident',
      formula: lora ? '0' : 'P x dtype bytes',
    },
    {
      name: 'gradients',
      label: lora ? 'LoRA gradients (fp32)' : 'gradients (fp32)',
      bytes: (T * 4) / shard,
      phase: 'resident',
      formula: `trainable x 4 B${shard > 1 ? ' / devices' : ''}`,
    },
    {
      name: 'optimizer',
      label: lora ? 'LoRA weights + AdamW moments (fp32)' : 'fp32 master weights + AdamW moments',
      bytes: (T * 12) / shard,
      phase: 'resident',
      formula: `trainable x 12 B${shard > 1 ? ' / devices' : ''}`,
    },
    {
      name: 'activations',
      label:
        `activations, ${o.microBatch} sequence(s) per micro-batch ` +
        `(${o.checkpointing ? 'checkpointed' : 'all kept'}${o.sharedPrefix ? ', shared prefix' : ', per row'})`,
      bytes: act,
      phase: 'update',
      formula: o.sharedPrefix
        ? 'lib/hf/budget.ts sharedPrefixUpdate: prefix once + micro-batch x completion'
        : 'lib/hf/budget.ts activationsPerSeq(Checkpointed) x micro-batch',
    },
    {
      name: 'activationsKept',
      label: 'activations without checkpointing (for comparison)',
      bytes: kept,
      phase: 'info',
      formula: 'all layers kept',
    },
    {
      name: 'logits',
      label: `logits + log-softmax + gradient (fp32${o.sharedPrefix ? ', completion tokens only' : ''})`,
      bytes: logits,
      phase: 'update',
      formula: o.sharedPrefix ? 'completion x vocab x 4 B x 3 x micro-batch' : 'L x vocab x 4 B x 3 x micro-batch',
    },
    {
      name: 'vision',
      label: 'vision tower forward (no grad, once per prompt)',
      bytes: e.visionPeakGiB * GiB,
      phase: 'update',
      formula: 'largest block activations + one frame of attention',
    },
    {
      name: 'kvCache',
      label: `KV cache of the rollouts (one prompt group of max(G, G') = ${Math.max(G, H)} sequences at a time)`,
      bytes: e.kvCacheGroupGiB * GiB,
      phase: 'rollout',
      formula: "max(G, G') x L x layers x 2 x kv_dim x bytes",
    },
    {
      name: 'visionRollout',
      label: 'vision tower forward during rollouts',
      bytes: e.visionPeakGiB * GiB,
      phase: 'rollout',
      formula: 'as above',
    },
    {
      name: 'kvCacheAll',
      label: `KV cache if all B x (G + G') = ${o.batch * (G + H)} rollouts decode at once (batched engines)`,
      bytes: kvAll,
      phase: 'info',
      formula: "B x (G + G') x L x layers x 2 x kv_dim x bytes",
    },
  ];
  return finish(name, 'qwen', P, T, e.seqLen, o, terms);
}

function finish(
  model: string,
  family: 'qwen' | 'native',
  params: number,
  trainable: number,
  seqLen: number,
  o: PlanOptions,
  terms: PlanTerm[],
): PlanResult {
  const sum = (ph: PlanTerm['phase'], tensorsOnly = false) =>
    terms.filter((t) => t.phase === ph && !(tensorsOnly && t.host)).reduce((a, t) => a + t.bytes, 0);
  const resident = sum('resident'),
    rollout = sum('rollout'),
    update = sum('update'),
    readback = sum('readback');
  const peak = resident + Math.max(rollout, update, readback);
  const tensorPeak = sum('resident', true) + Math.max(sum('rollout', true), sum('update', true), sum('readback', true));
  const { model: _m, ...options } = o;
  void _m;
  const fits = o.gpuMemGB > 0 ? peak <= o.gpuMemGB * 1e9 : undefined;
  const top = terms.filter((t) => t.phase !== 'info').sort((a, b) => b.bytes - a.bytes)[0];
  let advice = `Largest term: ${top.label} (${(top.bytes / GiB).toFixed(2)} GiB).`;
  if (fits === false) {
    const fixes: string[] = [];
    if (!o.checkpointing && family === 'qwen') fixes.push('turn gradient checkpointing on');
    if (o.lora === 0 && family === 'qwen') fixes.push('train LoRA adapters (--lora 16)');
    if (!o.shardedOptim && o.gpus > 1) fixes.push('shard gradients and optimizer state (--sharded-optim)');
    if (o.microBatch > 1) fixes.push('lower --micro-batch');
    fixes.push('lower --pixels / --frames or --max-new-tokens');
    advice += ` Does not fit: ${fixes.join('; ')}.`;
  }
  return {
    model,
    family,
    params,
    trainableParams: trainable,
    seqLen,
    options,
    terms,
    residentBytes: resident,
    rolloutBytes: rollout,
    updateBytes: update,
    readbackBytes: readback,
    peakBytes: peak,
    tensorPeakBytes: tensorPeak,
    fits,
    advice,
  };
}

// ---------------------------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------------------------

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v);

function resolveModel(m: PlanOptions['model']): { qwen?: QwenVLConfig; native?: NativeShape; name: string } {
  if (typeof m === 'object' && m && 'native' in m) return { native: m.native, name: 'native (custom shape)' };
  if (typeof m !== 'string' || !m)
    throw invalidArg('--model', 'a Hugging Face Qwen-VL folder, a published name or native-tiny / native-small', m, OP);
  const pub = Object.keys(PUBLISHED_CONFIGS).find((k) => k.toLowerCase() === m.toLowerCase().replace(/-instruct$/, ''));
  if (pub) return { qwen: PUBLISHED_CONFIGS[pub], name: pub };
  const preset = /^native-(tiny|small)$/i.exec(m);
  if (preset) {
    const p = preset[1].toLowerCase() as 'tiny' | 'small';
    return { native: { ...POLICY_PRESETS[p], vocabSize: 512 }, name: `native-${p}` };
  }
  const file = path.join(m, 'config.json');
  if (fs.existsSync(file)) return { qwen: readQwenConfig(file), name: m };
  throw new CrpoError(
    'ERR_CRPO_MODEL_LOAD',
    `--model ${m}: neither a folder with config.json nor a known name ` +
      `(${[...Object.keys(PUBLISHED_CONFIGS), 'native-tiny', 'native-small'].join(', ')})`,
  );
}

/** The plan with defaults filled in; every option checked with a message naming its flag. */
export function planMemory(
  options: Partial<PlanOptions> & { model: PlanOptions['model']; gpus?: number; gpuMemGB?: number },
): PlanResult {
  const o: PlanOptions = {
    ...PLAN_DEFAULTS,
    gpus: 1,
    gpuMemGB: 0,
    ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)),
  } as PlanOptions;
  const ints: [keyof PlanOptions, string, number][] = [
    ['gpus', '--gpus', 1],
    ['lora', '--lora', 0],
    ['batch', '--batch', 1],
    ['groupSize', '--group-size', 1],
    ['cfGroupSize', '--cf-group-size', 0],
    ['frames', '--frames', 1],
    ['pixels', '--pixels', 1],
    ['promptTokens', '--prompt-tokens', 1],
    ['maxNewTokens', '--max-new-tokens', 1],
    ['microBatch', '--micro-batch', 1],
  ];
  for (const [k, flag, min] of ints) {
    if (!isInt(o[k])) throw invalidArg(flag, 'an integer', o[k], OP);
    if ((o[k] as number) < min) throw outOfRange(flag, `an integer >= ${min}`, o[k], OP);
  }
  if (typeof o.gpuMemGB !== 'number' || !(o.gpuMemGB >= 0) || !Number.isFinite(o.gpuMemGB))
    throw invalidArg('--gpu-mem', 'a number of GB >= 0', o.gpuMemGB, OP);
  if (!(o.dtype in DTYPE_BYTES))
    throw invalidArg('--dtype', `one of ${Object.keys(DTYPE_BYTES).join(', ')}`, o.dtype, OP);
  const m = resolveModel(o.model);
  return m.qwen ? qwenPlan(m.qwen, o, m.name) : nativePlan(m.native!, { ...o, lora: 0 }, m.name);
}

/** `crpo bench plan` flags -> options (`--size HxW` gives the pixels per frame). */
export function planOptionsFromFlags(argv: Record<string, unknown>): Parameters<typeof planMemory>[0] {
  if (argv.model === undefined)
    throw new CrpoError(
      'ERR_CRPO_INVALID_ARG',
      '`crpo bench plan` needs --model <folder | Qwen2.5-VL-7B | Qwen3-VL-4B | Qwen3-VL-8B | native-tiny | ' +
        'native-small>',
    );
  let pixels = argv.pixels as number | undefined;
  if (argv.size !== undefined) {
    const mm = /^(\d+)x(\d+)$/i.exec(String(argv.size));
    if (!mm) throw invalidArg('--size', "HxW in pixels (e.g. '448x448')", argv.size, OP);
    if (pixels !== undefined)
      throw new CrpoError('ERR_CRPO_INVALID_ARG', '--size and --pixels both give the pixels per frame; give one');
    pixels = Number(mm[1]) * Number(mm[2]);
  }
  return {
    model: String(argv.model),
    gpus: argv.gpus as number | undefined,
    gpuMemGB: argv['gpu-mem'] as number | undefined,
    lora: argv.lora as number | undefined,
    shardedOptim: argv['sharded-optim'] as boolean | undefined,
    batch: argv.batch as number | undefined,
    groupSize: argv['group-size'] as number | undefined,
    cfGroupSize: argv['cf-group-size'] as number | undefined,
    frames: argv.frames as number | undefined,
    pixels,
    promptTokens: argv['prompt-tokens'] as number | undefined,
    maxNewTokens: argv['max-new-tokens'] as number | undefined,
    microBatch: argv['micro-batch'] as number | undefined,
    dtype: argv.dtype as PlanDtype | undefined,
    checkpointing: argv.checkpointing as boolean | undefined,
    sharedPrefix: argv['shared-prefix'] as boolean | undefined,
  };
}

const gib = (b: number): string => (b / GiB).toFixed(2);

export function formatPlan(r: PlanResult): string {
  const o = r.options;
  const G = o.groupSize,
    H = o.cfGroupSize || o.groupSize;
  const rows = r.terms.map((t) => [
    t.label,
    t.phase === 'info' ? '(not in the peak)' : t.phase,
    gib(t.bytes),
    t.formula,
  ]);
  const verdict =
    r.fits === undefined
      ? 'no --gpu-mem given: fit not judged'
      : `${r.fits ? 'fits' : 'does NOT fit'} in ${o.gpuMemGB} GB (${gib(o.gpuMemGB * 1e9)} GiB) per device ` +
        `(${((r.peakBytes / (o.gpuMemGB * 1e9)) * 100).toFixed(0)}% of it)`;
  return [
    `crpo bench plan: ${r.model} (${r.family}), ${(r.params / 1e9).toFixed(r.params < 1e8 ? 4 : 2)} B parameters, ` +
      `${(r.trainableParams / 1e6).toFixed(r.trainableParams < 1e6 ? 3 : 1)} M trained` +
      `${r.family === 'qwen' ? (o.lora ? ` (LoRA r = ${o.lora} on q/k/v/o)` : ' (full fine-tuning)') : ''}; ` +
      `${o.gpus} device(s)${o.shardedOptim ? ', optimizer state sharded' : ''}; ${o.dtype}.`,
    `Per device: B = ${o.batch} prompts, G = ${G}, G' = ${H}, ` +
      `${r.family === 'qwen' ? `${o.frames} frames of ${o.pixels} pixels, ` : ''}${o.promptTokens} prompt + ` +
      `${o.maxNewTokens} completion tokens (L = ${r.seqLen})` +
      `${r.family === 'qwen' ? `, micro-batch ${o.microBatch}` : ''}, gradient checkpointing ` +
      `${r.family === 'native' ? 'off (the native policy keeps every layer)' : o.checkpointing ? 'on' : 'off'}.`,
    '',
    '| term | when | GiB | formula |',
    '| --- | --- | --- | --- |',
    ...rows.map((x) => `| ${x.join(' | ')} |`),
    r.family === 'native'
      ? `| **peak = resident + max(rollout, update, readback)** | | **${gib(r.peakBytes)}** | ` +
        `${gib(r.residentBytes)} + max(${gib(r.rolloutBytes)}, ${gib(r.updateBytes)}, ${gib(r.readbackBytes)}) |`
      : `| **peak = resident + max(rollout, update)** | | **${gib(r.peakBytes)}** | ${gib(r.residentBytes)} + ` +
        `max(${gib(r.rolloutBytes)}, ${gib(r.updateBytes)}) |`,
    '',
    `Verdict: ${verdict}. ${r.advice}`,
    'Not counted: the CUDA context and allocator fragmentation (keep ~10% free), and the runtime itself on the CPU ' +
      '(Node + libtorch, ~230 MiB).',
  ].join('\n');
}
