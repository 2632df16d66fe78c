/**
 * The main job of `crpo demo` (crpo-method.md sections 1-8 end to end, on one CPU): make a base
 * model that reads the video but answers dynamic questions by a static cue, post-train it with
 * CRPO and, for comparison, with GRPO under the same budget over several seeds, and report Acc /
 * P-Acc / sensitivity / colour-shortcut answers of the base and trained policies on held-out
 * pairs whose colour says nothing about the answer.
 *
 * Policies: 'native' (default), the libtorch tiny video-language model (docs/model.md), whose base
 * is made in two supervised phases (lib/model runSft): fresh clips of every category with colour
 * independent of the answer (it learns to see and to read the options), then originals whose
 * object colour names the dynamic answer (it learns to lean on colour, as pretrained video LLMs
 * lean on static cues). 'linear', the TypeScript toy policy (seconds; for tests).
 */
import * as path from 'path';
import { ALGORITHMS } from '../algo';
import { invalidArg, outOfRange } from '../errors';
import { resolveConfig, type TrainConfig } from './config';
import { sftBase } from './base-model';
import { train, type ValidationResult } from './trainer';

export type DemoPolicy = 'native' | 'linear';

export interface DemoOptions {
  out: string;
  /** Policy kind (default 'native'). */
  policy?: DemoPolicy;
  /** RL steps per run (0 or absent: the policy's preset). */
  steps?: number;
  /** Algorithms to post-train the base model with. */
  algos: string[];
  /** One RL run per algorithm and seed (default: the preset's seeds). */
  seeds?: number[];
  /**
   * Native: the base model's recipe (default the preset's, 'starting-point'). 'capability' makes the
   * base of the demo's earlier table (150 phase-2 steps at lr 5e-4, NATIVE_CAPABILITY_BASE).
   */
  baseRecipe?: 'starting-point' | 'capability';
  log(message: string): void;
}

/** The native demo's earlier base: `CAPABILITY_BASE`'s recipe with its phase-2 budget. */
export const NATIVE_CAPABILITY_BASE = { baseRecipe: 'capability', shortcutSteps: 150, shortcutLr: 5e-4 } as const;

/** Settings of one policy kind's demo. */
export interface DemoPreset {
  seeds: number[];
  /** RL: steps, prompts per step, G, learning rate, sampling temperature. */
  steps: number;
  batchSize: number;
  groupSize: number;
  lr: number;
  temperature: number;
  /** RL train split: pairs per category and the shortcut probability; held-out pairs per category. */
  trainPairs: number;
  shortcutP: number;
  valPairs: number;
  /** Base model (native): capability phase, then shortcut phase, in optimizer steps of `baseBatch` clips. */
  capabilitySteps: number;
  shortcutSteps: number;
  baseBatch: number;
  baseLr: number;
  /** Base model (native): lib/train shortcutBase's recipe, and its phase-2 learning rate. */
  baseRecipe: 'capability' | 'starting-point';
  shortcutLr: number;
  /** Base model (native): prompt language-model loss weight. */
  basePromptLm: number;
  /** Base model (linear): supervised steps. */
  linearBaseSteps: number;
}

export const DEMO_PRESETS: Record<DemoPolicy, DemoPreset> = {
  native: {
    seeds: [1, 2, 3],
    steps: 60,
    batchSize: 8,
    groupSize: 8,
    lr: 1e-4,
    // The base is sure of itself (entropy ~0.06 nats per token at temperature 1, half the groups
    // without reward variance); 1.5 lets a group disagree (docs/model.md, "The demo's base").
    temperature: 1.5,
    trainPairs: 100,
    shortcutP: 0.95,
    valPairs: 30,
    capabilitySteps: 800,
    shortcutSteps: 100,
    baseBatch: 32,
    baseLr: 1e-3,
    baseRecipe: 'starting-point',
    shortcutLr: 2.5e-4,
    basePromptLm: 1,
    linearBaseSteps: 0,
  },
  linear: {
    seeds: [0],
    steps: 400,
    batchSize: 8,
    groupSize: 8,
    lr: 0.02,
    temperature: 2,
    trainPairs: 60,
    shortcutP: 0.95,
    valPairs: 30,
    capabilitySteps: 0,
    shortcutSteps: 0,
    baseBatch: 16,
    baseLr: 0.05,
    baseRecipe: 'capability',
    shortcutLr: 0,
    basePromptLm: 0,
    linearBaseSteps: 30,
  },
};

export interface DemoRow {
  model: string;
  /** Final held-out validation of each seed's run (the base: one entry). */
  runs: ValidationResult[];
  seconds: number;
}

/** The demo's training config for one RL run. */
export function demoConfig(o: {
  out: string;
  policy: DemoPolicy;
  steps: number;
  seed: number;
  algo: string;
  init: string;
}): TrainConfig {
  const p = DEMO_PRESETS[o.policy];
  return resolveConfig({
    overrides: {
      algo: o.algo,
      out: o.out,
      resume: 'never',
      steps: o.steps,
      seed: o.seed,
      lr: p.lr,
      temperature: p.temperature,
      batchSize: p.batchSize,
      groupSize: p.groupSize,
      // The same prompt for every algorithm (null option shown), so that only the algorithm differs.
      nullOption: o.policy === 'native' ? true : 'auto',
      // 0: the policy kind's completion length (COMPLETION_TOKENS_BY_KIND); the native base writes
      // the option's text, then `<answer> X </answer>`.
      maxNewTokens: 0,
      valEvery: Math.max(1, Math.floor(o.steps / 4)),
      saveEvery: o.steps,
      keepLast: 1,
      dumpEvery: Math.max(1, Math.floor(o.steps / 8)),
      progress: false,
      data: {
        train: 'synthetic',
        val: 'synthetic',
        pairs: p.trainPairs,
        valPairs: p.valPairs,
        seed: 1,
        shortcutP: p.shortcutP,
      },
      policy: { kind: o.policy, init: o.init },
    },
  });
}

export async function runDemo(o: DemoOptions): Promise<DemoRow[]> {
  const policy: DemoPolicy = o.policy ?? 'native';
  // Checked before the base model is made (minutes), not when the first RL run starts.
  if (!(policy in DEMO_PRESETS))
    throw invalidArg('policy', `one of ${Object.keys(DEMO_PRESETS).join(', ')}`, policy, 'crpo demo');
  if (!Array.isArray(o.algos) || o.algos.length === 0)
    throw invalidArg('algos', 'a non-empty list of algorithm names', o.algos, 'crpo demo');
  for (const a of o.algos)
    if (!ALGORITHMS.has(a)) throw outOfRange('algos', `one of ${ALGORITHMS.names().join(', ')}`, a, 'crpo demo');
  if (new Set(o.algos).size !== o.algos.length)
    throw invalidArg('algos', 'a list without repeats', o.algos.join(','), 'crpo demo');
  if (o.baseRecipe !== undefined && o.baseRecipe !== 'starting-point' && o.baseRecipe !== 'capability')
    throw invalidArg('baseRecipe', "'starting-point' or 'capability'", o.baseRecipe, 'crpo demo');
  if (o.baseRecipe !== undefined && policy !== 'native')
    throw invalidArg(
      'baseRecipe',
      'no base recipe with the linear policy (it has one warm start)',
      o.baseRecipe,
      'crpo demo',
    );
  const p = {
    ...DEMO_PRESETS[policy],
    ...(o.baseRecipe === 'capability' ? NATIVE_CAPABILITY_BASE : {}),
  };
  const steps = o.steps && o.steps > 0 ? o.steps : p.steps;
  const seeds = o.seeds && o.seeds.length ? o.seeds : p.seeds;
  const baseDir = path.join(o.out, 'base');
  const t0 = Date.now();
  o.log(
    `1/3 synthetic DyBench: RL train split 4 categories x ${p.trainPairs} pairs, colour names the dynamic answer with p = ${p.shortcutP}; held-out 4 x ${p.valPairs} pairs, colour independent of the answer`,
  );
  if (policy === 'native') {
    o.log(
      `2/3 base model (native tiny video-language policy): ${p.capabilitySteps} + ${p.shortcutSteps} supervised steps of ${p.baseBatch} clips -> ${baseDir}`,
    );
    const { shortcutBase } = await import('./base-model');
    const r = await shortcutBase(baseDir, {
      capabilitySteps: p.capabilitySteps,
      shortcutSteps: p.shortcutSteps,
      batchSize: p.baseBatch,
      lr: p.baseLr,
      shortcutLr: p.shortcutLr,
      promptLm: p.basePromptLm,
      seed: 1,
      recipe: p.baseRecipe,
      log: (m) => o.log(`    ${m}`),
    });
    const m = r.base.metrics.groups;
    o.log(
      `    base on its own test clips: static Acc ${pct(m.static?.acc)}, dynamic Acc ${pct(m.dynamic?.acc)}, colour-shortcut answers ${pct(r.base.colourShortcut)}`,
    );
  } else {
    o.log(`2/3 base model: supervised warm start of the built-in linear policy -> ${baseDir}`);
    const cfg = demoConfig({ out: path.join(o.out, 'unused'), policy, steps, seed: seeds[0], algo: 'crpo', init: '' });
    await sftBase(cfg, {
      steps: p.linearBaseSteps,
      batchSize: p.baseBatch,
      lr: p.baseLr,
      nullOption: true,
      out: baseDir,
      log: (m) => o.log(`    ${m}`),
    });
  }
  const baseSeconds = (Date.now() - t0) / 1000;
  const rows: DemoRow[] = [];
  const total = o.algos.length * seeds.length;
  let k = 0;
  for (const algo of o.algos) {
    const t = Date.now();
    const runs: ValidationResult[] = [];
    for (const seed of seeds) {
      k++;
      const runDir = path.join(o.out, seeds.length > 1 ? `${algo}-seed${seed}` : algo);
      o.log(`3/3 post-training ${k}/${total}: ${algo}, seed ${seed}, ${steps} steps -> ${runDir}`);
      const r = await train(demoConfig({ out: runDir, policy, steps, seed, algo, init: baseDir }), {
        log: (m) => o.log(`    ${m}`),
      });
      const first = r.validation[0],
        final = r.validation[r.validation.length - 1];
      if (rows.length === 0) rows.push({ model: 'base (SFT)', runs: [first], seconds: baseSeconds });
      o.log(
        `    held-out: Acc ${pct(final.acc)}  P-Acc ${pct(final.p_acc)}  dynamic P-Acc ${pct(final['dynamic/p_acc'])} (base ${pct(first['dynamic/p_acc'])})`,
      );
      runs.push(final);
    }
    rows.push({ model: `+ ${algo}`, runs, seconds: (Date.now() - t) / 1000 });
  }
  return rows;
}

const pct = (v: number | null | undefined): string => (v === null || v === undefined ? '-' : (100 * v).toFixed(1));

/** Mean and sample standard deviation of the non-null values (null when none). */
export function meanSd(values: readonly (number | null)[]): { mean: number; sd: number; n: number } | null {
  const xs = values.filter((v): v is number => v !== null && Number.isFinite(v));
  if (xs.length === 0) return null;
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const sd = xs.length > 1 ? Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (xs.length - 1)) : 0;
  return { mean, sd, n: xs.length };
}

const COLUMNS: [string, (v: ValidationResult) => number | null][] = [
  ['Acc', (v) => v.acc],
  ['P-Acc', (v) => v.p_acc],
  ['dyn P-Acc', (v) => v['dynamic/p_acc']],
  ['static Acc', (v) => v['static/acc'] ?? null],
  ['sensitivity', (v) => v.sensitivity],
  ['invariance', (v) => v.invariance],
  ['colour shortcut', (v) => v['dynamic/colour_shortcut'] ?? null],
];

/** The held-out table, % (mean ± sd over the seeds when there are several). */
export function formatDemoTable(rows: readonly DemoRow[]): string {
  const cell = (xs: (number | null)[]): string => {
    const m = meanSd(xs);
    if (!m) return '-';
    return m.n > 1 ? `${(100 * m.mean).toFixed(1)} ± ${(100 * m.sd).toFixed(1)}` : (100 * m.mean).toFixed(1);
  };
  const header = ['model', 'runs', ...COLUMNS.map(([n]) => n)];
  const body = rows.map((r) => [r.model, String(r.runs.length), ...COLUMNS.map(([, f]) => cell(r.runs.map(f)))]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]): string =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join(' | ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('-|-'), ...body.map(line)].join('\n');
}
