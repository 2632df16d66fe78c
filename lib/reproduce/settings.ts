/**
 * The settings of `crpo reproduce` (lib/reproduce/index.ts): the config with a doc comment per
 * field, its defaults, the named presets (linear, native; each with a `--quick` variant), the
 * check of every field, and the method names with their `@key=value` settings.
 */
import { ALGORITHMS } from '../algo';
import { invalidArg, outOfRange } from '../errors';
import { POLICY_KINDS } from '../policy/policy';
import { COMPLETION_TOKENS_BY_KIND } from '../train/config';

export const REPRODUCE_METHODS = ['grpo', 'grpo-2g', 't-grpo', 'arrowrl', 'crpo', 'crpo-no-dual'] as const;

export interface ReproduceConfig {
  /** Output folder (runs, base model, summary.json, report.md, curves.png). */
  out: string;
  /** Methods to train, in table order (registered algorithm names). */
  methods: string[];
  /** Seeds (>= 3 for a spread). */
  seeds: number[];
  /** RL steps per run, equal for every method. */
  steps: number;
  /** Prompts per step. */
  batchSize: number;
  /** G. */
  groupSize: number;
  /** Learning rate of the RL runs. */
  lr: number;
  /** Sampling temperature of the RL rollouts. */
  temperature: number;
  /** Policy kind (lib/policy POLICY_KINDS): 'linear' or a registered native kind. */
  policy: string;
  /** Largest completion length; 0 = by policy kind (2 for 'linear': style + option token; 6 otherwise: `<answer> X </answer>` + end). */
  maxNewTokens: number;
  /** Synthetic train split: pairs per category. */
  trainPairs: number;
  /** Held-out evaluation split: pairs per category. */
  evalPairs: number;
  /** Train split: probability that object colour names the dynamic answer (the shortcut knob). */
  shortcutP: number;
  /** Data seed (train split; the held-out split uses dataSeed + 2000). */
  dataSeed: number;
  /** Frames per synthetic clip (train and held-out splits; the native policy is built for this many). */
  frames: number;
  /** Synthetic frame size in pixels (height = width). */
  size: number;
  /**
   * Supervised warm-up steps of the base model: linear policy, on the shortcut train split; native
   * policy, phase 1 of lib/train shortcutBase (fresh clips, colour independent of the answer).
   */
  baseSteps: number;
  /**
   * Show "None of the above" in the prompts: 'auto' = CRPO's methods only (the trainer's rule), or
   * for every method (true), so that only the algorithm differs between them.
   */
  nullOption: 'auto' | boolean;
  /** Native policy: phase 2 steps of shortcutBase (fresh originals, colour names the dynamic answer). */
  baseShortcutSteps: number;
  /** Native policy: weight of the prompt language-model loss in the base model's training. */
  basePromptLm: number;
  /**
   * Native policy: the training stream of the base model (lib/train shortcutBase `recipe`):
   * 'capability' (lib/train CAPABILITY_BASE, `crpo sft`'s recipe of the third round; the tables of
   * docs/reproduction.md and docs/method.md were measured with it), 'letter' (the letter alone, no
   * stem) or 'starting-point' (`crpo sft`'s defaults, then dynamic answers by colour: `crpo demo`'s
   * base).
   */
  baseRecipe: 'capability' | 'letter' | 'starting-point';
  /** Learning rate of the warm-up. */
  baseLr: number;
  /** Prompts per warm-up step (0 = batchSize). */
  baseBatchSize: number;
  /** A checkpoint is saved (and held-out CRR measured) every N steps. */
  curveEvery: number;
  /** Samples per member for held-out CRR. */
  crrSamples: number;
  /** Rerun runs whose results exist. */
  force: boolean;
}

export const REPRODUCE_DEFAULTS: ReproduceConfig = {
  out: 'runs/reproduce',
  methods: [...REPRODUCE_METHODS],
  seeds: [1, 2, 3, 4, 5],
  steps: 500,
  batchSize: 8,
  groupSize: 8,
  lr: 0.02,
  temperature: 1,
  policy: 'linear',
  maxNewTokens: 0,
  trainPairs: 100,
  evalPairs: 100,
  shortcutP: 0.95,
  dataSeed: 1,
  frames: 8,
  size: 32,
  baseSteps: 30,
  baseShortcutSteps: 0,
  basePromptLm: 0,
  baseRecipe: 'capability',
  nullOption: 'auto',
  baseLr: 0.05,
  baseBatchSize: 0,
  curveEvery: 25,
  crrSamples: 8,
  force: false,
};

/** `--quick`: the same comparison, fewer steps and smaller splits (<= 5 min on 2 cores). */
export const REPRODUCE_QUICK: Partial<ReproduceConfig> = {
  seeds: [1, 2, 3],
  steps: 150,
  trainPairs: 60,
  evalPairs: 50,
  curveEvery: 15,
};

/**
 * `--preset native` (also the default of `--policy native`): the libtorch tiny video-language
 * policy. The base model is `crpo demo --base-recipe capability`'s: lib/train shortcutBase with CAPABILITY_BASE (`crpo sft`'s third-round recipe), 800
 * steps of 32 fresh clips (both members, colour independent of the answer), then 150 steps on
 * fresh originals whose colour names the dynamic answer (docs/model.md, "The demo's base"). RL at
 * lr 1e-4 for 60 steps, sampling at temperature 1.5 (at 1 this base's groups rarely disagree),
 * every method with the null option shown, so that only the algorithm differs. Measured:
 * docs/reproduction.md.
 */
export const REPRODUCE_NATIVE: Partial<ReproduceConfig> = {
  policy: 'native',
  seeds: [1, 2, 3],
  steps: 60,
  batchSize: 8,
  groupSize: 8,
  lr: 1e-4,
  temperature: 1.5,
  // 0: by policy kind (12 for native: the option's text, then `<answer> X </answer>`).
  maxNewTokens: 0,
  nullOption: true,
  trainPairs: 100,
  evalPairs: 50,
  frames: 8,
  size: 32,
  baseSteps: 800,
  baseShortcutSteps: 150,
  baseLr: 1e-3,
  baseBatchSize: 32,
  basePromptLm: 1,
  baseRecipe: 'capability',
  curveEvery: 15,
};

/** `--preset native --quick`: a base of half the steps, 30 RL steps, 25 held-out pairs per category. */
export const REPRODUCE_NATIVE_QUICK: Partial<ReproduceConfig> = {
  ...REPRODUCE_NATIVE,
  steps: 30,
  evalPairs: 25,
  curveEvery: 10,
  baseSteps: 400,
  baseShortcutSteps: 75,
};

/** Named presets: settings over REPRODUCE_DEFAULTS, without and with `--quick`. */
export const REPRODUCE_PRESETS: Record<string, { full: Partial<ReproduceConfig>; quick: Partial<ReproduceConfig> }> = {
  linear: { full: {}, quick: REPRODUCE_QUICK },
  native: { full: REPRODUCE_NATIVE, quick: REPRODUCE_NATIVE_QUICK },
};

/** The defaults of a preset (an unknown name throws and lists the known ones). */
export function presetConfig(name: string, quick: boolean): ReproduceConfig {
  const p = REPRODUCE_PRESETS[name];
  if (!p) throw outOfRange('preset', `one of ${Object.keys(REPRODUCE_PRESETS).join(', ')}`, name, 'crpo reproduce');
  return { ...REPRODUCE_DEFAULTS, ...(quick ? p.quick : p.full) };
}

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v);

/** Checks every field; throws one standard message naming the field. */
export function validateReproduceConfig(c: ReproduceConfig): ReproduceConfig {
  const op = 'crpo reproduce';
  if (typeof c.out !== 'string' || c.out === '') throw invalidArg('out', 'a non-empty folder path', c.out, op);
  if (!Array.isArray(c.methods) || c.methods.length === 0)
    throw invalidArg('methods', 'a non-empty list of algorithm names', c.methods, op);
  for (const m of c.methods) parseMethod(m, op);
  if (new Set(c.methods).size !== c.methods.length)
    throw invalidArg('methods', 'a list without repeats', c.methods.join(','), op);
  if (!Array.isArray(c.seeds) || c.seeds.length === 0 || !c.seeds.every((s) => isInt(s) && s >= 0))
    throw invalidArg('seeds', 'a non-empty list of integers >= 0', c.seeds, op);
  if (new Set(c.seeds).size !== c.seeds.length) throw invalidArg('seeds', 'distinct seeds', c.seeds.join(','), op);
  const ints: [keyof ReproduceConfig, number][] = [
    ['steps', 1],
    ['batchSize', 1],
    ['groupSize', 2],
    ['trainPairs', 1],
    ['evalPairs', 1],
    ['baseSteps', 0],
    ['baseShortcutSteps', 0],
    ['curveEvery', 1],
    ['crrSamples', 1],
    ['dataSeed', 0],
    ['maxNewTokens', 0],
    ['frames', 2],
    ['size', 8],
    ['baseBatchSize', 0],
  ];
  for (const [k, min] of ints) {
    const v = c[k];
    if (!isInt(v)) throw invalidArg(k, 'an integer', v, op);
    if ((v as number) < min) throw outOfRange(k, `an integer >= ${min}`, v, op);
  }
  if (typeof c.temperature !== 'number' || !(c.temperature > 0 && c.temperature <= 10))
    throw outOfRange('temperature', 'a number in (0, 10]', c.temperature, op);
  if (c.baseRecipe !== 'capability' && c.baseRecipe !== 'letter' && c.baseRecipe !== 'starting-point')
    throw outOfRange('baseRecipe', "'capability', 'letter' or 'starting-point'", c.baseRecipe, op);
  for (const k of ['lr', 'baseLr', 'basePromptLm'] as const) {
    if (typeof c[k] !== 'number' || !Number.isFinite(c[k])) throw invalidArg(k, 'a finite number', c[k], op);
    if (c[k] < 0) throw outOfRange(k, 'a number >= 0', c[k], op);
  }
  if (c.nullOption !== 'auto' && typeof c.nullOption !== 'boolean')
    throw invalidArg('nullOption', "'auto', true or false", c.nullOption, op);
  if (typeof c.shortcutP !== 'number' || !(c.shortcutP >= 0 && c.shortcutP <= 1))
    throw outOfRange('shortcutP', 'a number in [0, 1]', c.shortcutP, op);
  if (!POLICY_KINDS.has(c.policy))
    throw outOfRange('policy', `one of ${POLICY_KINDS.names().join(', ')}`, c.policy, op);
  return c;
}

/** Settings a method spec may change: `crpo@norm=joint@crr=0` (the CRR study, docs/method.md). */
export interface MethodSpec {
  algo: string;
  norm?: 'per-branch' | 'joint' | 'none';
  /** Weight of the CRR term (weights.crr). */
  crr?: number;
}

/**
 * A method name: a registered algorithm, optionally followed by `@key=value` settings with keys
 * `norm` (per-branch | joint | none) and `crr` (the CRR weight). Unknown names and keys are refused.
 */
export function parseMethod(spec: string, op = 'crpo reproduce'): MethodSpec {
  if (typeof spec !== 'string' || !spec) throw invalidArg('methods[]', 'an algorithm name', spec, op);
  const [algo, ...settings] = spec.split('@');
  if (!ALGORITHMS.has(algo))
    throw outOfRange('methods', `one of ${ALGORITHMS.names().join(', ')} (optionally @norm=...@crr=...)`, spec, op);
  const out: MethodSpec = { algo };
  for (const kv of settings) {
    const [k, v] = kv.split('=', 2);
    if (k === 'norm' && (v === 'per-branch' || v === 'joint' || v === 'none')) out.norm = v;
    else if (k === 'crr' && v !== undefined && v !== '' && Number.isFinite(Number(v))) out.crr = Number(v);
    else throw invalidArg('methods', "settings 'norm=per-branch|joint|none' or 'crr=<number>' after '@'", spec, op);
  }
  return out;
}

/** Completion length: as configured, else by policy kind. */
export function newTokens(c: Pick<ReproduceConfig, 'maxNewTokens' | 'policy'>): number {
  return c.maxNewTokens > 0 ? c.maxNewTokens : (COMPLETION_TOKENS_BY_KIND[c.policy] ?? 32);
}
