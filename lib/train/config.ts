/**
 * The trainer's one typed config (style rule 10): every default in TRAIN_DEFAULTS with a doc
 * comment per field, read from a YAML or JSON file, then overridden by CLI flags
 * (`--group-size 8` -> groupSize) and dotted `--set weights.crr=2` pairs. Validation rejects
 * unknown keys, an unknown algorithm, G < 2, a negative learning rate and missing data with one
 * message each; the resolved config is saved in the run folder. Hyper-parameters follow
 * crpo-method.md sections 3-7.
 */
import * as fs from 'fs';
import * as path from 'path';
import YAML from 'yaml';
import { z } from 'zod';
import { CrpoError } from '../errors';
import { ALGORITHMS } from '../algo';
import { LOSS_AGGREGATIONS } from '../algo/loss';

export interface TrainConfig {
  /** Algorithm name: grpo | grpo-2g | t-grpo | arrowrl | crpo | crpo-no-dual (lib/algo). */
  algo: string;
  data: {
    /** Training records: a DyBench JSONL path, or 'synthetic' to generate the synthetic DyBench train split. Only original members (transform 'none') are trained on. */
    train: string;
    /** Held-out validation records: a DyBench JSONL path, 'synthetic' (the synthetic test split), or '' for none. */
    val: string;
    /** Synthetic data: pairs per category for the train split. */
    pairs: number;
    /** Synthetic data: pairs per category for the validation split. */
    valPairs: number;
    /** Synthetic data: generator seed. */
    seed: number;
    /** Frames per clip (synthetic clips and decoded videos). */
    frames: number;
    /** Synthetic frame size (height = width, pixels). */
    size: number;
    /** Synthetic train split: probability that the object colour names the answer (the static shortcut). */
    shortcutP: number;
  };
  policy: {
    /** Policy kind: 'linear' (built-in TS policy) or a kind registered by the native model. */
    kind: string;
    /** Checkpoint folder with the initial (base) weights; '' = fresh weights. */
    init: string;
    /** Native policy size preset for fresh weights: tiny | small (lib/model). */
    preset: string;
    /**
     * What the qwen kind trains: 'lora' (adapters on the LM's attention projections) or 'full' (every
     * LM weight, vision tower frozen; the frozen reference is a second copy of the initial weights).
     * The linear and native kinds have no adapters and train every weight at either value.
     */
    finetune: 'lora' | 'full';
  };
  /**
   * ZeRO stage of the optimizer on several processes: 0 = every rank holds the whole AdamW state
   * (plain data parallel); 1 = each of the W ranks keeps and updates 1/W of it (docs/distributed.md,
   * "Sharded optimizer state"). Only for policy kinds with a sharded optimizer (qwen), and only on
   * more than one process; checkpoints are the same at either value and at any world size.
   */
  zero: 0 | 1;
  /** RL steps (one batch of prompts each). */
  steps: number;
  /** Prompts per step. */
  batchSize: number;
  /** G: rollouts per prompt on the original video. */
  groupSize: number;
  /** G': rollouts per prompt on the counterfactual / reversed video; 0 = same as G. */
  cfGroupSize: number;
  /** mu: optimiser passes over each rollout batch (PPO epochs). */
  updateEpochs: number;
  /** Peak learning rate. */
  lr: number;
  /** 'constant' or 'cosine' (decay to minLrRatio*lr after warm-up). */
  lrSchedule: 'constant' | 'cosine';
  /** Linear warm-up steps from 0 to lr. */
  warmupSteps: number;
  /** Cosine schedule floor, as a fraction of lr. */
  minLrRatio: number;
  /** AdamW weight decay. */
  weightDecay: number;
  /** Gradient-norm clipping threshold (0 = off). */
  maxGradNorm: number;
  /** eps_low of the clipped surrogate. */
  clipLow: number;
  /** eps_high of the clipped surrogate. */
  clipHigh: number;
  /** beta: k3 KL coefficient to the frozen reference (0 = no reference). */
  beta: number;
  /** Loss aggregation: seq-mean-token-mean | token-mean | seq-mean-token-sum-norm. */
  aggregation: (typeof LOSS_AGGREGATIONS)[number];
  /**
   * Largest completion length (and the divisor of seq-mean-token-sum-norm); 0 = by policy kind
   * (COMPLETION_TOKENS_BY_KIND: long enough for the kind's answer and its end token; the native
   * policy writes the option's text before `<answer>X</answer>`, up to 6 words on DyBench).
   */
  maxNewTokens: number;
  /** Sampling temperature of the rollouts (log-probs use the same temperature). */
  temperature: number;
  /** Advantage normalisation: per-branch | joint | none (section 5). */
  norm: 'per-branch' | 'joint' | 'none';
  /** eps of the advantage normalisation. */
  advEps: number;
  /** Reward weights (section 5). */
  weights: { accuracy: number; format: number; crr: number; behave: number };
  /** T-GRPO bonus and condition factor mu (p >= mu*q). */
  tgrpo: { bonus: number; mu: number };
  /** ArrowRL reverse-reward weight. */
  arrow: { wReverse: number };
  /** Append "None of the above": 'auto' = on for crpo / crpo-no-dual, off for the baselines. */
  nullOption: 'auto' | boolean;
  /** Drop groups whose trained rewards are all equal (zero advantage) from the update. */
  filterZeroVariance: boolean;
  /** Seed of data order and sampling. */
  seed: number;
  /** Run folder (config, metrics, dumps, checkpoints, plots). */
  out: string;
  /** Validate before training and every N steps (0 = only before and at the end). */
  valEvery: number;
  /** Checkpoint every N steps (and always at the end). */
  saveEvery: number;
  /** Checkpoints kept (oldest deleted first). */
  keepLast: number;
  /** Dump every N-th step's rollouts to rollouts.jsonl (0 = never). */
  dumpEvery: number;
  /** 'auto' = continue from the newest checkpoint in `out` if any; 'never'; or a checkpoint folder. */
  resume: string;
  /** Write PNG plots of the curves at the end. */
  plots: boolean;
  /** Show a progress bar on stderr. */
  progress: boolean;
}

/**
 * Completion length by policy kind when maxNewTokens is 0: linear 2 (style + option token);
 * native 6 (`<answer>`, letter, `</answer>`, end, and room for two stray tokens); qwen 32 (a
 * subword tokenizer spells the tags in several pieces). A kind not listed gets 32.
 */
export const COMPLETION_TOKENS_BY_KIND: Readonly<Record<string, number>> = { linear: 2, native: 12, qwen: 32 };

export const TRAIN_DEFAULTS: TrainConfig = {
  algo: 'crpo',
  data: {
    train: 'synthetic',
    val: 'synthetic',
    pairs: 60,
    valPairs: 30,
    seed: 1,
    frames: 8,
    size: 32,
    shortcutP: 0.95,
  },
  policy: { kind: 'linear', init: '', preset: 'tiny', finetune: 'lora' },
  zero: 0,
  steps: 40,
  batchSize: 8,
  groupSize: 8,
  cfGroupSize: 0,
  updateEpochs: 1,
  lr: 0.02,
  lrSchedule: 'constant',
  warmupSteps: 0,
  minLrRatio: 0.1,
  weightDecay: 0,
  maxGradNorm: 1,
  clipLow: 0.2,
  clipHigh: 0.2,
  beta: 0.04,
  aggregation: 'seq-mean-token-mean',
  maxNewTokens: 0,
  temperature: 1,
  norm: 'per-branch',
  advEps: 1e-6,
  weights: { accuracy: 1, format: 1, crr: 1, behave: 1 },
  tgrpo: { bonus: 0.3, mu: 0.8 },
  arrow: { wReverse: 0.5 },
  nullOption: 'auto',
  filterZeroVariance: false,
  seed: 0,
  out: 'runs/crpo',
  valEvery: 10,
  saveEvery: 10,
  keepLast: 3,
  dumpEvery: 10,
  resume: 'auto',
  plots: true,
  progress: true,
};

const num = z.number().refine(Number.isFinite, 'a finite number');
const int = z.number().int();
const nonneg = num.refine((v) => v >= 0, 'a number >= 0');

const Schema = z
  .object({
    algo: z.string(),
    data: z
      .object({
        train: z.string(),
        val: z.string(),
        pairs: int.min(1),
        valPairs: int.min(0),
        seed: int,
        frames: int.min(2),
        size: int.min(8),
        shortcutP: num.min(0).max(1),
      })
      .strict(),
    policy: z
      .object({
        kind: z.string().min(1),
        init: z.string(),
        preset: z.string().min(1),
        finetune: z.enum(['lora', 'full']),
      })
      .strict(),
    zero: z.literal([0, 1]),
    steps: int.min(0),
    batchSize: int.min(1),
    groupSize: int.min(2, 'an integer >= 2 (G < 2 gives every group zero advantage)'),
    cfGroupSize: int.min(0),
    updateEpochs: int.min(1),
    lr: nonneg,
    lrSchedule: z.enum(['constant', 'cosine']),
    warmupSteps: int.min(0),
    minLrRatio: num.min(0).max(1),
    weightDecay: nonneg,
    maxGradNorm: nonneg,
    clipLow: num.min(0).max(1),
    clipHigh: nonneg,
    beta: nonneg,
    aggregation: z.enum(LOSS_AGGREGATIONS),
    maxNewTokens: int.min(0),
    temperature: num.gt(0),
    norm: z.enum(['per-branch', 'joint', 'none']),
    advEps: nonneg,
    weights: z.object({ accuracy: num, format: num, crr: num, behave: num }).strict(),
    tgrpo: z.object({ bonus: num, mu: nonneg }).strict(),
    arrow: z.object({ wReverse: num }).strict(),
    nullOption: z.union([z.literal('auto'), z.boolean()]),
    filterZeroVariance: z.boolean(),
    seed: int,
    out: z.string().min(1),
    valEvery: int.min(0),
    saveEvery: int.min(1),
    keepLast: int.min(1),
    dumpEvery: int.min(0),
    resume: z.string().min(1),
    plots: z.boolean(),
    progress: z.boolean(),
  })
  .strict();

export class ConfigError extends CrpoError {
  constructor(message: string) {
    super('ERR_CRPO_CONFIG', message, { userError: true });
  }
}

type Plain = Record<string, unknown>;
const isObj = (v: unknown): v is Plain => typeof v === 'object' && v !== null && !Array.isArray(v);

function merge(base: Plain, over: Plain): Plain {
  const out: Plain = { ...base };
  for (const [k, v] of Object.entries(over)) out[k] = isObj(v) && isObj(base[k]) ? merge(base[k] as Plain, v) : v;
  return out;
}

/** Parses a YAML or JSON config file (YAML is a superset of JSON). */
export function readConfigFile(file: string): Plain {
  if (!fs.existsSync(file)) throw new ConfigError(`config file not found: ${file}`);
  let v: unknown;
  try {
    v = YAML.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new ConfigError(`${file}: not valid YAML/JSON (${(err as Error).message.split('\n')[0]})`);
  }
  if (v === null || v === undefined) return {};
  if (!isObj(v)) throw new ConfigError(`${file}: expected a mapping of config fields at the top level`);
  return v;
}

/** Sets `a.b.c = value` in a plain object, parsing the value as YAML (numbers, booleans, strings). */
export function setDotted(target: Plain, key: string, raw: string): void {
  const parts = key.split('.');
  let cur = target;
  for (const p of parts.slice(0, -1)) {
    if (!isObj(cur[p])) cur[p] = {};
    cur = cur[p] as Plain;
  }
  let value: unknown = raw;
  try {
    value = YAML.parse(raw);
  } catch {
    /* keep the raw string */
  }
  cur[parts[parts.length - 1]] = value;
}

/** What a failed field was expected to be, in words. */
function expectation(issue: z.core.$ZodIssue): string {
  const i = issue as unknown as {
    code: string;
    expected?: string;
    values?: unknown[];
    minimum?: number | bigint;
    maximum?: number | bigint;
    inclusive?: boolean;
    message: string;
  };
  switch (i.code) {
    case 'invalid_type':
      return `a ${i.expected}`;
    case 'invalid_value':
      return `one of ${(i.values ?? []).map((v) => JSON.stringify(v)).join(', ')}`;
    case 'too_small':
      return /^Too small/.test(i.message) ? `a number ${i.inclusive ? '>=' : '>'} ${i.minimum}` : i.message;
    case 'too_big':
      return /^Too big/.test(i.message) ? `a number ${i.inclusive ? '<=' : '<'} ${i.maximum}` : i.message;
    default:
      return i.message;
  }
}

/**
 * Resolves defaults + file + overrides into a validated TrainConfig. `overrides` is a (possibly
 * nested) partial config; `checkData` also requires the data files to exist.
 */
export function resolveConfig(o: { file?: string; overrides?: Plain; checkData?: boolean } = {}): TrainConfig {
  let merged: Plain = TRAIN_DEFAULTS as unknown as Plain;
  const source = o.file ? o.file : 'config';
  if (o.file) merged = merge(merged, readConfigFile(o.file));
  if (o.overrides) merged = merge(merged, o.overrides);
  const r = Schema.safeParse(merged);
  if (!r.success) {
    const issue = r.error.issues[0];
    const where = issue.path.join('.');
    const value = issue.path.reduce<unknown>((v, k) => (isObj(v) ? v[k as string] : undefined), merged);
    if (issue.code === 'unrecognized_keys') {
      const keys = (issue as unknown as { keys: string[] }).keys.map((k) => `'${where ? where + '.' : ''}${k}'`);
      throw new ConfigError(
        `${source}: unknown config key${keys.length > 1 ? 's' : ''} ${keys.join(', ')}; see docs/training.md for the fields`,
      );
    }
    throw new ConfigError(`${source}: ${where}: expected ${expectation(issue)} but received ${JSON.stringify(value)}`);
  }
  const c = r.data as TrainConfig;
  if (c.maxNewTokens === 0) c.maxNewTokens = COMPLETION_TOKENS_BY_KIND[c.policy.kind] ?? 32;
  if (!ALGORITHMS.has(c.algo))
    throw new ConfigError(`${source}: algo: unknown algorithm '${c.algo}'; known: ${ALGORITHMS.names().join(', ')}`);
  if (o.checkData !== false) {
    for (const [k, v] of [
      ['data.train', c.data.train],
      ['data.val', c.data.val],
    ] as const) {
      if (v === 'synthetic' || (k === 'data.val' && v === '')) continue;
      if (v === '')
        throw new ConfigError(`${source}: ${k}: no training data given (a DyBench JSONL path or 'synthetic')`);
      if (!fs.existsSync(v)) throw new ConfigError(`${source}: ${k}: data file not found: ${v}`);
    }
    if (c.policy.init && !fs.existsSync(c.policy.init))
      throw new ConfigError(`${source}: policy.init: checkpoint folder not found: ${c.policy.init}`);
  }
  return c;
}

/** Writes the resolved config into the run folder (atomically). */
export function saveResolvedConfig(c: TrainConfig, dir: string): string {
  const file = path.join(dir, 'config.yaml');
  fs.mkdirSync(dir, { recursive: true });
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, YAML.stringify(c));
  fs.renameSync(tmp, file);
  return file;
}

/** The CLI flags that map onto top-level config fields (kebab-case -> camelCase). */
export const FLAG_FIELDS: Record<string, keyof TrainConfig> = {
  algo: 'algo',
  steps: 'steps',
  'batch-size': 'batchSize',
  'group-size': 'groupSize',
  'cf-group-size': 'cfGroupSize',
  'update-epochs': 'updateEpochs',
  lr: 'lr',
  'lr-schedule': 'lrSchedule',
  'warmup-steps': 'warmupSteps',
  beta: 'beta',
  aggregation: 'aggregation',
  temperature: 'temperature',
  norm: 'norm',
  seed: 'seed',
  out: 'out',
  resume: 'resume',
  'val-every': 'valEvery',
  'save-every': 'saveEvery',
  'keep-last': 'keepLast',
  'dump-every': 'dumpEvery',
  'filter-zero-variance': 'filterZeroVariance',
  zero: 'zero',
};

/** Learning rate at `step` (0-based): linear warm-up, then constant or cosine to minLrRatio*lr. */
export function learningRate(
  c: Pick<TrainConfig, 'lr' | 'lrSchedule' | 'warmupSteps' | 'minLrRatio' | 'steps'>,
  step: number,
): number {
  if (c.warmupSteps > 0 && step < c.warmupSteps) return (c.lr * (step + 1)) / c.warmupSteps;
  if (c.lrSchedule === 'constant') return c.lr;
  const span = Math.max(1, c.steps - c.warmupSteps);
  const progress = Math.min(1, (step - c.warmupSteps) / span);
  const floor = c.minLrRatio * c.lr;
  return floor + 0.5 * (c.lr - floor) * (1 + Math.cos(Math.PI * progress));
}
