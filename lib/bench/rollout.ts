/**
 * `crpo bench rollout`: real CRPO steps (crpo-method.md sections 2-6, the loop of
 * lib/train/trainer.ts) of the native tiny policy or a Hugging Face Qwen-VL folder, timed phase by
 * phase on this machine: frame decode, counterfactual transform, rollouts on both branches (with
 * the vision-encode + prefill part and the decode part split out, tokens/s), answer parsing + the
 * fused CRR reward/advantage kernel, reference log-probs, and the train step (its forward part
 * split out), plus the gradient all-reduce when several ranks run. Warm-up steps, then the median
 * and spread of each phase over the timed steps, peak RSS, and the phase that dominates.
 * Data: synthetic DyBench pairs (lib/synth), decoded through the evaluator's frame loader.
 */
import { getAlgorithm, type AlgoSettings, type ScoredGroupInput } from '../algo';
import { CrpoError, invalidArg, outOfRange } from '../errors';
import { defaultFrameLoader } from '../eval/frames';
import { displayedOptions, formatPrompt, parseAnswer } from '../prompt';
import type { Completion, Policy, PolicyPrompt } from '../policy/policy';
import { synthesizeRecords } from '../synth';
import { hash32 } from '../synth/rng';
import { TRAIN_DEFAULTS } from '../train/config';
import { counterfactualFrames, routeOf, shardBatch, type TrainItem } from '../train/data';
import { dataTexts, updateSequences } from '../train/trainer';
import { torchInfo } from '../native';
import type { DistContext } from '../distributed';
import {
  fixed,
  machineInfo,
  markdownTable,
  msSince,
  peakRssMiB,
  summarize,
  type MachineInfo,
  type SampleStats,
} from './stats';

export type BenchPolicyKind = 'native' | 'qwen';
export const BENCH_POLICY_KINDS: readonly BenchPolicyKind[] = ['native', 'qwen'];
export type BenchDtype = 'float32' | 'bfloat16' | 'float16';
export const BENCH_DTYPES: readonly BenchDtype[] = ['float32', 'bfloat16', 'float16'];

/** What `crpo bench rollout` runs; every CLI flag maps onto one field. */
export interface RolloutBenchConfig {
  /** 'native' (the tiny native policy, fresh weights) or 'qwen' (a Hugging Face Qwen2.5-VL / Qwen3-VL folder). */
  policy: BenchPolicyKind;
  /** The model folder (qwen only). */
  model: string;
  /** 'cpu' or 'cuda[:N]' (CUDA needs a CUDA build of libtorch). */
  device: string;
  /** Weights and activations; native policy: float32 (bfloat16 on CUDA); qwen: float32, bfloat16, float16 (CUDA). */
  dtype: BenchDtype;
  /** Prompts per step (B), over all ranks. */
  batch: number;
  /** Rollouts per prompt on the original video (G). */
  groupSize: number;
  /** Rollouts per prompt on the counterfactual video (G'); 0 = G. */
  cfGroupSize: number;
  /** Frames per clip (T). */
  frames: number;
  /** Frame height and width in pixels (the synthetic clips are square). */
  height: number;
  width: number;
  /** Longest completion in tokens. */
  maxNewTokens: number;
  /** LoRA rank of the qwen policy (0 = the policy's default, r = 16); the native policy trains every weight. */
  lora: number;
  /** Timed steps (after the warm-up). */
  steps: number;
  /** Untimed warm-up steps (allocator, thread pools, lazy initialisation). */
  warmup: number;
  seed: number;
}

export const ROLLOUT_BENCH_DEFAULTS: RolloutBenchConfig = {
  policy: 'native',
  model: '',
  device: 'cpu',
  dtype: 'float32',
  batch: 8,
  groupSize: 8,
  cfGroupSize: 0,
  frames: 8,
  height: 32,
  width: 32,
  maxNewTokens: 16,
  lora: 0,
  steps: 5,
  warmup: 2,
  seed: 0,
};

/** The phases of one step, in order. `kind`: part of the step, part of another phase timed apart, or a difference. */
export type PhaseKind = 'step' | 'probe' | 'derived';

export interface PhaseResult extends SampleStats {
  name: string;
  label: string;
  kind: PhaseKind;
  /** Share of the median step time (step phases add up to about 1). */
  share: number;
  /** Tokens per second, for the generation phases. */
  tokensPerS?: number;
  /** Multi-rank runs: the slowest rank's median. */
  slowestRankMs?: number;
}

export interface RolloutBenchResult {
  config: RolloutBenchConfig;
  machine: MachineInfo;
  torch: { version: string; threads: number; cuda: boolean };
  policy: {
    kind: BenchPolicyKind;
    parameters: number;
    trainableParameters: number;
    description: string;
    config?: import('../model').PolicyConfig;
    promptTokens?: number;
  };
  world: number;
  rank: number;
  /** Prompts this rank ran per step. */
  prompts: number;
  /** Sequences generated per step on this rank (both branches). */
  sequences: number;
  /** Median generated tokens per step on this rank. */
  generatedTokens: number;
  phases: PhaseResult[];
  step: SampleStats;
  /** Peak resident set size of the process, MiB, and before the policy was created. */
  peakRssMiB: number;
  baseRssMiB: number;
  /** One line: the phase with the largest share of the step. */
  bottleneck: string;
  notes: string[];
}

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v);
const OP = 'bench rollout';

/** `--size HxW` (or one number for a square). */
export function parseSize(v: unknown): { height: number; width: number } {
  const s = typeof v === 'number' ? String(v) : v;
  const m = typeof s === 'string' ? /^(\d+)(?:x(\d+))?$/i.exec(s.trim()) : null;
  if (!m) throw invalidArg('--size', "HxW in pixels (e.g. '32x32')", v, OP);
  const height = Number(m[1]),
    width = Number(m[2] ?? m[1]);
  if (height < 8 || width < 8) throw outOfRange('--size', 'at least 8x8 pixels', v, OP);
  return { height, width };
}

/** Sizes of the qwen policy on CPU where none are given: at the general ones a step takes minutes there. */
export const QWEN_CPU_ROLLOUT_DEFAULTS: Partial<RolloutBenchConfig> = {
  batch: 2,
  groupSize: 2,
  maxNewTokens: 8,
  steps: 2,
  warmup: 1,
};

/** The config with defaults, checked; errors name the CLI flag and the fix. */
export function resolveRolloutBenchConfig(o: Partial<RolloutBenchConfig> = {}): RolloutBenchConfig {
  const qwenOnCpu = o.policy === 'qwen' && (o.device === undefined || o.device === 'cpu');
  const c: RolloutBenchConfig = {
    ...ROLLOUT_BENCH_DEFAULTS,
    ...(qwenOnCpu ? QWEN_CPU_ROLLOUT_DEFAULTS : {}),
    ...Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)),
  };
  if (!BENCH_POLICY_KINDS.includes(c.policy))
    throw invalidArg('--policy', `one of ${BENCH_POLICY_KINDS.join(', ')}`, c.policy, OP);
  const ints: [keyof RolloutBenchConfig, number][] = [
    ['batch', 1],
    ['groupSize', 1],
    ['cfGroupSize', 0],
    ['frames', 2],
    ['maxNewTokens', 1],
    ['lora', 0],
    ['steps', 1],
    ['warmup', 0],
    ['seed', 0],
  ];
  for (const [k, min] of ints) {
    const flag = `--${k.replace(/[A-Z]/g, (x) => `-${x.toLowerCase()}`)}`;
    if (!isInt(c[k])) throw invalidArg(flag, 'an integer', c[k], OP);
    if ((c[k] as number) < min) throw outOfRange(flag, `an integer >= ${min}`, c[k], OP);
  }
  if (!isInt(c.height) || !isInt(c.width) || c.height < 8 || c.width < 8)
    throw outOfRange('--size', 'at least 8x8 pixels', `${c.height}x${c.width}`, OP);
  if (c.height !== c.width)
    throw new CrpoError(
      'ERR_CRPO_INVALID_ARG',
      `--size ${c.height}x${c.width}: the benchmark's synthetic clips are square; use HxH (e.g. --size ` +
        `${c.height}x${c.height})`,
    );
  if (typeof c.device !== 'string' || !/^(cpu|cuda(:\d+)?)$/.test(c.device))
    throw invalidArg('--device', "'cpu' or 'cuda[:N]'", c.device, OP);
  if (!BENCH_DTYPES.includes(c.dtype)) throw invalidArg('--dtype', `one of ${BENCH_DTYPES.join(', ')}`, c.dtype, OP);
  const cuda = c.device.startsWith('cuda');
  if (c.policy === 'native') {
    if (c.model)
      throw new CrpoError(
        'ERR_CRPO_INVALID_ARG',
        `--model ${c.model}: the native policy is created fresh from its tiny preset; --model is for --policy qwen`,
      );
    if (c.lora)
      throw new CrpoError(
        'ERR_CRPO_INVALID_ARG',
        `--lora ${c.lora}: the native policy trains every weight (no LoRA); --lora is for --policy qwen`,
      );
    if (c.dtype === 'float16')
      throw new CrpoError(
        'ERR_CRPO_DTYPE',
        '--dtype float16: the native policy runs float32 (or bfloat16 on CUDA); use --dtype float32',
      );
    if (c.dtype === 'bfloat16' && !cuda)
      throw new CrpoError(
        'ERR_CRPO_DTYPE',
        `--dtype bfloat16: the native policy runs bfloat16 only on CUDA; use --dtype float32 on ${c.device}`,
      );
    if (c.height % 16)
      throw outOfRange(
        '--size',
        'a multiple of 16 for the native policy (patch 8 x merge 2)',
        `${c.height}x${c.width}`,
        OP,
      );
  } else {
    if (!c.model)
      throw new CrpoError(
        'ERR_CRPO_MODEL_LOAD',
        '--policy qwen needs --model <folder> (a Hugging Face Qwen2.5-VL / Qwen3-VL folder)',
      );
    if (c.dtype === 'float16' && !cuda)
      throw new CrpoError(
        'ERR_CRPO_DTYPE',
        `--dtype float16 needs a CUDA device (libtorch has no fp16 matmul on CPU); use --dtype bfloat16 or float32 ` +
          `on ${c.device}`,
      );
  }
  if (c.frames % 2) throw outOfRange('--frames', 'an even number (temporal patches of 2 frames)', c.frames, OP);
  return c;
}

/** Refuses a CUDA device when this libtorch build has none. */
function checkDevice(device: string): { version: string; threads: number; cuda: boolean } {
  const info = torchInfo();
  if (device.startsWith('cuda')) {
    if (!info.cudaAvailable) {
      throw new CrpoError(
        'ERR_CRPO_DEVICE',
        `--device ${device}: this libtorch (${info.torchVersion}) has no CUDA device available (CPU-only build or ` +
          `no GPU visible); use --device cpu, or install a CUDA build of libtorch and rebuild (npm run build:torch)`,
      );
    }
    const n = Number(device.split(':')[1] ?? 0);
    if (n >= info.cudaDeviceCount)
      throw new CrpoError(
        'ERR_CRPO_DEVICE',
        `--device ${device}: only ${info.cudaDeviceCount} CUDA device(s) visible ` +
          `(cuda:0..cuda:${info.cudaDeviceCount - 1})`,
      );
  }
  return { version: info.torchVersion, threads: info.intraOpThreads, cuda: info.cudaAvailable };
}

interface CreatedPolicy {
  policy: Policy;
  /** The native policy's resolved config (native only). */
  config?: import('../model').PolicyConfig;
  /** Longest prompt in tokens (native only; the qwen prompts also hold the vision placeholders). */
  promptTokens?: number;
  parameters: number;
  trainableParameters: number;
  description: string;
}

async function createBenchPolicy(
  c: RolloutBenchConfig,
  texts: readonly string[],
  shapeOverride?: Partial<import('../model').PolicyConfig>,
): Promise<CreatedPolicy> {
  /* eslint-disable @typescript-eslint/no-require-imports */
  if (c.policy === 'native') {
    const m = require('../model') as typeof import('../model');
    const { NativePolicy } = require('../policy/native') as typeof import('../policy/native');
    const tok = m.Tokenizer.build(texts);
    const promptTokens = Math.max(...texts.map((t) => tok.encode(t, { bos: true }).length));
    const nativeShape = shapeOverride ?? {};
    const shape = { frames: c.frames, imageSize: c.height };
    const visual = m.visualTokens({ ...m.POLICY_PRESETS.tiny, ...shape, ...nativeShape });
    // Room for the visual tokens, the longest prompt and the completion (the preset's 160 is for 8 x 32x32 clips).
    const maxSeqLen = Math.max(m.POLICY_PRESETS.tiny.maxSeqLen, visual + promptTokens + c.maxNewTokens + 8);
    const p = await m.PolicyModel.create(tok, {
      preset: 'tiny',
      seed: c.seed,
      ...shape,
      maxSeqLen,
      ...nativeShape,
      device: c.device,
      dtype: c.dtype as 'float32' | 'bfloat16',
    });
    const n = p.info().parameters;
    const policy = new NativePolicy(p, undefined);
    await policy.refreshDigest();
    return {
      policy,
      parameters: n,
      trainableParameters: n,
      config: p.config,
      promptTokens,
      description:
        `native tiny preset, ${c.frames} frames of ${c.height}x${c.width} (${visual} visual tokens), ` +
        `${(n / 1e6).toFixed(2)} M parameters, all trained`,
    };
  }
  const { QwenPolicy, DEFAULT_QWEN_LORA } = require('../policy/qwen') as typeof import('../policy/qwen');
  const { expectedWeights } = require('../hf/config') as typeof import('../hf/config');
  const lora = c.lora ? { ...DEFAULT_QWEN_LORA, rank: c.lora, alpha: 2 * c.lora } : DEFAULT_QWEN_LORA;
  const policy = await QwenPolicy.create({ model: c.model, dtype: c.dtype, device: c.device, lora });
  // Base weights counted from the architecture's weight list (reading them back would copy every tensor).
  let total = 0,
    trainable = 0;
  for (const shape of expectedWeights(policy.model.config).values()) total += shape.reduce((a, b) => a * b, 1);
  for (const n of policy.model.paramNames(true)) trainable += policy.model.getParam(n).shape.reduce((a, b) => a * b, 1);
  return {
    policy,
    parameters: total,
    trainableParameters: trainable,
    description:
      `${policy.model.config.arch} from ${c.model}, ${c.dtype}, LoRA r = ${lora.rank} on ` +
      `${lora.targetModules?.join('/') ?? 'q/k/v/o'}, gradient checkpointing`,
  };
}

/** The prompt the trainer builds for a record (lib/train/trainer.ts promptFor). */
function promptOf(it: TrainItem, frames: Uint8Array, nullOption: boolean): PolicyPrompt {
  return {
    frames,
    frameShape: it.shape,
    question: it.record.question,
    options: displayedOptions(it.record.options, nullOption),
    prompt: formatPrompt(it.record.question, it.record.options, { nullOption }),
  };
}

const PHASES: { name: string; label: string; kind: PhaseKind }[] = [
  { name: 'decode', label: 'frame decode (B clips)', kind: 'step' },
  { name: 'counterfactual', label: 'counterfactual transform (B clips)', kind: 'step' },
  { name: 'rolloutOrig', label: 'rollouts, original branch (B x G)', kind: 'step' },
  { name: 'rolloutCf', label: "rollouts, counterfactual branch (B x G')", kind: 'step' },
  {
    name: 'prefill',
    label: '  of which vision encode + prefill (1-token generate, both branches, timed apart)',
    kind: 'probe',
  },
  { name: 'decodeTokens', label: '  of which decode (rollouts - prefill)', kind: 'derived' },
  { name: 'rewards', label: 'answer parsing + CRR rewards/advantages (fused kernel)', kind: 'step' },
  { name: 'reference', label: 'reference log-probs (frozen reference)', kind: 'step' },
  { name: 'train', label: 'train step (forward, loss, backward, clip, AdamW)', kind: 'step' },
  { name: 'forward', label: '  of which forward (policy log-probs, timed apart)', kind: 'probe' },
  { name: 'backward', label: '  of which loss + backward + optimizer (train step - forward)', kind: 'derived' },
  { name: 'allReduce', label: 'gradient all-reduce (gradient-sized buffer, timed apart)', kind: 'probe' },
];

export interface RolloutBenchHooks {
  /** Progress lines (default: none). */
  log?(message: string): void;
  /** Several ranks (lib/distributed); one process when absent. */
  dist?: DistContext;
  /** Native policy: fields of its config other than the tiny preset's (tests of the memory plan). */
  nativeShape?: Partial<import('../model').PolicyConfig>;
  /**
   * Called around the parts of the run whose memory `crpo bench plan` predicts (a MemoryRecorder,
   * lib/bench/memory.ts): 'create' (the policy and its frozen reference), then per step 'rollouts'
   * (frames and both branches' generation), 'reference' (rewards and the reference log-probs),
   * 'forward' (the policy log-probs timed apart) and 'train' (the train step and its weight digest).
   */
  memory?: { begin(phase: string): void; end(phase: string): void };
}

/** Runs warm-up + timed CRPO steps and returns every phase's statistics. */
export async function benchRollout(
  options: Partial<RolloutBenchConfig> = {},
  hooks: RolloutBenchHooks = {},
): Promise<RolloutBenchResult> {
  const c = resolveRolloutBenchConfig(options);
  const torch = checkDevice(c.device);
  const say = hooks.log ?? (() => undefined);
  const dist = hooks.dist;
  const world = dist?.worldSize ?? 1,
    rank = dist?.rank ?? 0;
  if (c.batch < world) throw outOfRange('--batch', `at least one prompt per rank (>= ${world})`, c.batch, OP);

  // ---- data: B original members of synthetic pairs, their routes, a frame loader ------------
  const pairs = Math.ceil(c.batch / 4);
  const records = synthesizeRecords({ split: 'train', pairs, seed: c.seed + 1, frames: c.frames, size: c.height });
  const originals = records.filter((r) => r.transform === 'none').slice(0, c.batch);
  const shape: [number, number, number, 3] = [c.frames, c.height, c.width, 3];
  const items: TrainItem[] = shardBatch(originals, { rank, worldSize: world }).map((record) => ({
    record,
    frames: new Uint8Array(0),
    shape,
    route: routeOf(record, 'synthetic bench data', c.seed),
  }));
  const loader = defaultFrameLoader({ frames: c.frames, maxPixels: c.height * c.width });

  // ---- algorithm + policy ------------------------------------------------------------------
  const algo = getAlgorithm('crpo');
  const settings: AlgoSettings = {
    groupSize: c.groupSize,
    cfGroupSize: c.cfGroupSize,
    nullOption: TRAIN_DEFAULTS.nullOption,
    norm: TRAIN_DEFAULTS.norm,
    eps: TRAIN_DEFAULTS.advEps,
    weights: TRAIN_DEFAULTS.weights,
    tgrpo: TRAIN_DEFAULTS.tgrpo,
    arrow: TRAIN_DEFAULTS.arrow,
  };
  const plan = algo.plan(settings);
  const G = plan.origSamples,
    H = plan.secondSamples;
  const texts = dataTexts(originals);
  const baseRss = peakRssMiB();
  const mem = hooks.memory;
  say(`[bench] creating the ${c.policy} policy${c.model ? ` from ${c.model}` : ''} on ${c.device}`);
  mem?.begin('create');
  const created = await createBenchPolicy(c, texts, hooks.nativeShape);
  const policy = created.policy;
  const notes: string[] = [];
  if (c.policy === 'qwen' && c.device === 'cpu')
    notes.push(
      'on CPU the qwen policy defaults to B = 2, G = 2, 8 new tokens, 2 steps after 1 warm-up (flags set them)',
    );
  const samples: Record<string, number[]> = Object.fromEntries(PHASES.map((p) => [p.name, []]));
  const stepTimes: number[] = [];
  const tokenCounts: number[] = [];
  const clamped = new Set<string>();
  const gradBuffer = world > 1 ? new Float32Array(created.trainableParameters) : undefined;
  try {
    await policy.freezeReference();
    mem?.end('create');
    const total = c.warmup + c.steps;
    for (let step = 0; step < total; step++) {
      const timed = step >= c.warmup;
      const t: Record<string, number> = {};
      mem?.begin('rollouts');
      // 1. frame decode (the evaluator's loader: files through ffmpeg/sharp, synthetic specs rendered)
      let t0 = process.hrtime.bigint();
      const decoded = await Promise.all(items.map((it) => loader(it.record)));
      t.decode = msSince(t0);
      decoded.forEach((d, i) => {
        items[i].frames = d.frames;
        items[i].cfFrames = undefined;
      });
      // 2. counterfactual frames (the trainer's counterfactualFrames: the core addon's transform)
      t0 = process.hrtime.bigint();
      const cfFrames = items.map((it) => counterfactualFrames(it));
      t.counterfactual = msSince(t0);
      const orig = items.map((it) => promptOf(it, it.frames, plan.nullOption));
      const second = items.map((it, b) => promptOf(it, cfFrames[b], plan.nullOption));
      // 3. rollouts on both branches, per-prompt seeds as the trainer derives them
      const gen = { temperature: TRAIN_DEFAULTS.temperature, maxNewTokens: c.maxNewTokens };
      const seedsOf = (branch: string) => items.map((_, j) => hash32(`${c.seed}|${step}|${branch}|${rank}|${j}`));
      // The 1-token probe gets copies of the prompts: the qwen policy caches each prompt's processed
      // frames by object, so probe and rollouts both pay the vision preprocessing, as a trainer step does.
      t0 = process.hrtime.bigint();
      await policy.generate(
        orig.map((p) => ({ ...p })),
        { ...gen, maxNewTokens: 1, samples: G, seed: 1, promptSeeds: seedsOf('orig') },
      );
      await policy.generate(
        second.map((p) => ({ ...p })),
        { ...gen, maxNewTokens: 1, samples: H, seed: 2, promptSeeds: seedsOf('second') },
      );
      t.prefill = msSince(t0);
      t0 = process.hrtime.bigint();
      const outO: Completion[][] = await policy.generate(orig, {
        ...gen,
        samples: G,
        seed: 1,
        promptSeeds: seedsOf('orig'),
      });
      t.rolloutOrig = msSince(t0);
      t0 = process.hrtime.bigint();
      const outS: Completion[][] = await policy.generate(second, {
        ...gen,
        samples: H,
        seed: 2,
        promptSeeds: seedsOf('second'),
      });
      t.rolloutCf = msSince(t0);
      // A difference of two timings: at tiny sizes (prefill-bound) noise can make it negative; then 0 and a note.
      t.decodeTokens = t.rolloutOrig + t.rolloutCf - t.prefill;
      if (t.decodeTokens < 0) {
        t.decodeTokens = 0;
        clamped.add('decode');
      }
      const tokens = [...outO, ...outS].reduce((a, cs) => a + cs.reduce((b, x) => b + x.tokens.length, 0), 0);
      mem?.end('rollouts');
      mem?.begin('reference');
      // 4. rewards and advantages
      t0 = process.hrtime.bigint();
      const groups: ScoredGroupInput[] = items.map((it, b) => {
        const k = orig[b].options.length;
        const po = outO[b].map((x) => parseAnswer(x.text, k)),
          ps = outS[b].map((x) => parseAnswer(x.text, k));
        return {
          truth: it.record.answer,
          numOptions: k,
          relation: it.route.relation,
          origAnswers: po.map((p) => p.index),
          origFormat: po.map((p) => (p.formatOk ? 1 : 0)),
          secondAnswers: ps.map((p) => p.index),
          secondFormat: ps.map((p) => (p.formatOk ? 1 : 0)),
        };
      });
      const scores = algo.score(groups, settings);
      const seqs = updateSequences(outO, outS, scores, { G, H, trainSecond: plan.trainSecond });
      t.rewards = msSince(t0);
      const all = [...orig, ...second];
      // 5. reference log-probs, then the update
      t0 = process.hrtime.bigint();
      const ref = await policy.logprobs(all, seqs, { temperature: TRAIN_DEFAULTS.temperature, reference: true });
      seqs.forEach((s, i) => {
        s.refLogprobs = ref[i];
      });
      t.reference = msSince(t0);
      mem?.end('reference');
      mem?.begin('forward');
      t0 = process.hrtime.bigint();
      await policy.logprobs(all, seqs, { temperature: TRAIN_DEFAULTS.temperature });
      t.forward = msSince(t0);
      mem?.end('forward');
      mem?.begin('train');
      t0 = process.hrtime.bigint();
      const st = await policy.trainStep(all, seqs, {
        processGroup: dist?.nativeGroupId,
        lr: 1e-6,
        maxGradNorm: TRAIN_DEFAULTS.maxGradNorm,
        weightDecay: TRAIN_DEFAULTS.weightDecay,
        temperature: TRAIN_DEFAULTS.temperature,
        clipLow: TRAIN_DEFAULTS.clipLow,
        clipHigh: TRAIN_DEFAULTS.clipHigh,
        beta: TRAIN_DEFAULTS.beta,
        aggregation: TRAIN_DEFAULTS.aggregation,
        maxNewTokens: c.maxNewTokens,
      });
      t.train = msSince(t0);
      mem?.end('train');
      t.backward = t.train - t.forward;
      if (t.backward < 0) {
        t.backward = 0;
        clamped.add('backward');
      }
      if (st.skipped && step === 0)
        notes.push(
          `a step was skipped by the policy (non-finite loss or gradient: loss ${st.loss}); its time is still counted`,
        );
      // 6. the gradient all-reduce of a data-parallel step, on a buffer of the trainable parameters' size
      if (gradBuffer && dist) {
        t0 = process.hrtime.bigint();
        await dist.allReduce(gradBuffer, 'mean');
        t.allReduce = msSince(t0);
      }
      const stepMs = PHASES.filter((p) => p.kind === 'step').reduce((a, p) => a + t[p.name], 0);
      say(
        `[bench] ${timed ? `step ${step - c.warmup + 1}/${c.steps}` : `warm-up ${step + 1}/${c.warmup}`}: ` +
          `${stepMs.toFixed(0)} ms (rollouts ${(t.rolloutOrig + t.rolloutCf).toFixed(0)} ms, train step ` +
          `${t.train.toFixed(0)} ms), ${tokens} tokens`,
      );
      if (!timed) continue;
      for (const p of PHASES) if (t[p.name] !== undefined) samples[p.name].push(t[p.name]);
      stepTimes.push(stepMs);
      tokenCounts.push(tokens);
    }
  } finally {
    policy.dispose();
  }

  const step = summarize(stepTimes);
  const genTokens = summarize(tokenCounts).medianMs;
  const sequences = items.length * (G + H);
  const phases: PhaseResult[] = PHASES.filter((p) => samples[p.name].length > 0).map((p) => {
    const s = summarize(samples[p.name]);
    const r: PhaseResult = { ...p, ...s, share: s.medianMs / step.medianMs };
    if (p.name === 'rolloutOrig' || p.name === 'rolloutCf') {
      const k = p.name === 'rolloutOrig' ? G : H;
      r.tokensPerS = (genTokens * (k / (G + H))) / (s.medianMs / 1000);
    }
    // the 1-token generate made the first token of every row; decode made the rest
    if (p.name === 'decodeTokens' && s.medianMs > 0)
      r.tokensPerS = Math.max(0, genTokens - sequences) / (s.medianMs / 1000);
    return r;
  });
  if (dist && world > 1) {
    const med = new Float64Array(phases.map((p) => p.medianMs));
    await dist.allReduce(med, 'max');
    phases.forEach((p, i) => {
      p.slowestRankMs = med[i];
    });
  }
  for (const what of clamped) {
    notes.push(
      what === 'decode'
        ? 'in some steps the rollouts took less than the 1-token generate timed apart (decode below the timing ' +
            'noise: prefill-bound at this size); decode counted as 0 there'
        : 'in some steps the train step took less than the forward timed apart (timing noise); loss + backward + ' +
            'optimizer counted as 0 there',
    );
  }
  if (world === 1) notes.push('one process: no gradient all-reduce (run under torchrun or with --nproc N for it)');
  if (c.device.startsWith('cuda'))
    notes.push(
      'CUDA max allocated memory is not reported: the addon exposes no CUDA allocator statistics; peak RSS is host ' +
        'memory',
    );
  const top = phases.filter((p) => p.kind === 'step').sort((a, b) => b.medianMs - a.medianMs)[0];
  const sub =
    top &&
    (top.name === 'train' ? ['forward', 'backward'] : top.name.startsWith('rollout') ? ['prefill', 'decodeTokens'] : [])
      .map((n) => phases.find((p) => p.name === n))
      .filter((p): p is PhaseResult => !!p)
      .sort((a, b) => b.medianMs - a.medianMs)[0];
  const bottleneck = top
    ? `Bottleneck: ${top.label.replace(/ \(.*$/, '')}, ${(top.share * 100).toFixed(0)}% of the step (median ` +
      `${fixed(top.medianMs, 1)} of ${fixed(step.medianMs, 1)} ms)` +
      (sub
        ? `; within it, ${sub.label.replace(/^\s*of which /, '').replace(/ \(.*$/, '')} takes ` +
          `${fixed(sub.medianMs, 1)} ms`
        : '') +
      '.'
    : 'Bottleneck: no timed step';
  return {
    config: c,
    machine: machineInfo(),
    torch,
    policy: {
      kind: c.policy,
      parameters: created.parameters,
      trainableParameters: created.trainableParameters,
      description: created.description,
      config: created.config,
      promptTokens: created.promptTokens,
    },
    world,
    rank,
    prompts: items.length,
    sequences,
    generatedTokens: genTokens,
    phases,
    step,
    peakRssMiB: peakRssMiB(),
    baseRssMiB: baseRss,
    bottleneck,
    notes,
  };
}

/** The phase table and the lines around it, as `crpo bench rollout` prints them. */
export function formatRolloutBench(r: RolloutBenchResult): string {
  const c = r.config;
  const multi = r.world > 1;
  const rows = r.phases.map((p) => [
    p.label,
    fixed(p.medianMs, p.medianMs < 10 ? 2 : 1),
    `${fixed(p.minMs, 1)}-${fixed(p.maxMs, 1)}`,
    p.kind === 'probe' && p.name === 'allReduce' ? '-' : `${fixed(p.share * 100, 1)}%`,
    p.tokensPerS !== undefined ? fixed(p.tokensPerS, 0) : '-',
    ...(multi ? [fixed(p.slowestRankMs ?? NaN, 1)] : []),
  ]);
  rows.push([
    '**step (sum of the phases above without "of which")**',
    fixed(r.step.medianMs, 1),
    `${fixed(r.step.minMs, 1)}-${fixed(r.step.maxMs, 1)}`,
    '100%',
    fixed(r.generatedTokens / (r.step.medianMs / 1000), 0),
    ...(multi ? ['-'] : []),
  ]);
  const header = [
    'phase',
    'median ms',
    'min-max ms',
    'share of step',
    'tokens/s',
    ...(multi ? ['slowest rank ms'] : []),
  ];
  const cf = c.cfGroupSize || c.groupSize;
  return [
    `crpo bench rollout: ${r.policy.description}; ${c.device}, ${c.dtype}, libtorch ${r.torch.version}, ` +
      `${r.torch.threads} intra-op threads.`,
    `B = ${c.batch} prompts${multi ? ` over ${r.world} ranks (rank ${r.rank}: ${r.prompts})` : ''}, G = ` +
      `${c.groupSize}, G' = ${cf} (${r.sequences} sequences per step${multi ? ' on this rank' : ''}), up to ` +
      `${c.maxNewTokens} new tokens (median ${fixed(r.generatedTokens, 0)} generated per step); ` +
      `median of ${r.step.runs} steps after ${c.warmup} warm-up.`,
    '',
    markdownTable(header, rows),
    '',
    r.bottleneck,
    `Peak RSS: ${fixed(r.peakRssMiB, 0)} MiB (${fixed(r.baseRssMiB, 0)} MiB before the policy was created).`,
    ...r.notes.map((n) => `Note: ${n}.`),
    `Machine: ${r.machine.cpu}, ${r.machine.cores} cores, load average ${fixed(r.machine.loadAverage1m, 1)} (other ` +
      `work on the machine slows every phase).`,
  ].join('\n');
}
