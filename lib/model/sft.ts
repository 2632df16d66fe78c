/**
 * Supervised warm start of the native policy (issue: "crpo sft"): teacher-forced cross-entropy on
 * `<answer>X</answer><eos>` over the synthetic DyBench train split (lib/synth), then greedy
 * evaluation on the test split with the paired metrics of crpo-method.md section 8 (Acc, P-Acc;
 * lib/eval/metrics). The train split's shortcut knob ties object colour to the answer, so the base
 * model learns to lean on that static cue, as real base models do. Seeded end to end; checkpoints
 * every `saveEvery` steps so that an interrupted run resumes where it stopped.
 */
import * as fs from 'fs';
import * as path from 'path';
import { invalidArg } from '../errors';
import { computeMetrics, seededRandom, type PairedMetrics, type ScoredSample } from '../eval/metrics';
import { answerCompletion, formatPrompt } from '../prompt';
import { synthesize, type SynthItem } from '../synth';
import { writeFileAtomicSync } from '../data/jsonl';
import { loadCheckpoint, saveCheckpoint } from './checkpoint';
import { POLICY_PRESETS, type PolicyConfig, type PolicyPresetName } from './config';
import { Policy, type PolicyInputs } from './policy';
import { Tokenizer } from './tokenizer';

export interface SftOptions {
  /** Output folder: checkpoint/ and sft-report.json. */
  out: string;
  preset?: PolicyPresetName;
  /** Train pairs per category (default 200). */
  pairs?: number;
  /** Test pairs per category (default 50). */
  testPairs?: number;
  epochs?: number;
  batchSize?: number;
  /** Peak learning rate (linear warm-up over 5% of the steps, cosine decay to 10%). */
  lr?: number;
  weightDecay?: number;
  seed?: number;
  /** Train split: probability that object colour names the dynamic answer (lib/synth). */
  shortcutP?: number;
  /** Show "None of the above" as the last option (on for CRPO, so on here by default). */
  nullOption?: boolean;
  /** Stop training after this many seconds (evaluation still runs). 0 = no limit. */
  maxSeconds?: number;
  /** Save a resumable checkpoint every N steps (0: only at the end). */
  saveEvery?: number;
  /** Continue from out/checkpoint when it exists. */
  resume?: boolean;
  /** Model overrides on top of the preset (e.g. { initStd: 0.05 }). */
  model?: Partial<Omit<PolicyConfig, 'vocabSize'>>;
  onProgress?: (p: SftProgress) => void;
}

export interface SftProgress {
  step: number;
  steps: number;
  loss: number;
  elapsed: number;
  /** Seconds left at the current rate. */
  eta: number;
}

export interface SftReport {
  steps: number;
  trainSeconds: number;
  finalLoss: number;
  trainItems: number;
  testItems: number;
  /** Chance level of Acc on the test split (mean of 1 / shown options). */
  chanceAcc: number;
  metrics: PairedMetrics;
  checkpoint: string;
  options: Omit<SftOptions, 'onProgress'>;
}

export const SFT_DEFAULTS = {
  preset: 'tiny' as PolicyPresetName,
  pairs: 200,
  testPairs: 50,
  epochs: 10,
  batchSize: 16,
  lr: 3e-3,
  weightDecay: 0.01,
  seed: 1,
  shortcutP: 0.9,
  nullOption: true,
  maxSeconds: 150,
  saveEvery: 100,
  resume: false,
};

function promptOf(it: SynthItem, nullOption: boolean): string {
  return formatPrompt(it.record.question, it.record.options, { nullOption });
}

/** Packs items [from, to) into one policy batch (one clip per prompt). */
export function packBatch(policy: Policy, items: readonly SynthItem[], nullOption: boolean): PolicyInputs {
  const frames = new Uint8Array(items.length * policy.clipBytes);
  items.forEach((it, i) => {
    if (it.frames.length !== policy.clipBytes) throw invalidArg(`items[${i}].frames`, `a clip of ${policy.clipBytes} bytes`, it.frames, 'packBatch');
    frames.set(it.frames, i * policy.clipBytes);
  });
  return { frames, numVideos: items.length, prompts: items.map((it, i) => ({ video: i, text: promptOf(it, nullOption) })) };
}

/** Greedy answers of `policy` on `items`, scored with the paired metrics. */
export async function evaluateItems(policy: Policy, items: readonly SynthItem[], nullOption: boolean, batchSize = 64): Promise<{ metrics: PairedMetrics; samples: ScoredSample[] }> {
  const samples: ScoredSample[] = [];
  for (let i = 0; i < items.length; i += batchSize) {
    const chunk = items.slice(i, i + batchSize);
    const ev = await policy.evalBatch(packBatch(policy, chunk, nullOption), chunk.map((it) => it.record.options.length + (nullOption ? 1 : 0)));
    chunk.forEach((it, k) => samples.push({ id: it.record.id, pair_id: it.record.pair_id, category: it.record.category, answer: it.record.answer, prediction: ev.answers[k] }));
  }
  return { metrics: computeMetrics(samples), samples };
}

function shuffled(n: number, seed: number): number[] {
  const rnd = seededRandom(seed);
  const a = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

/** Trains a base policy and evaluates it; returns the report (also written to out/sft-report.json). */
export async function runSft(options: SftOptions): Promise<SftReport> {
  const o = { ...SFT_DEFAULTS, ...options };
  if (typeof o.out !== 'string' || !o.out) throw invalidArg('out', 'an output folder', o.out, 'runSft');
  for (const k of ['pairs', 'testPairs', 'epochs', 'batchSize'] as const) if (!Number.isInteger(o[k]) || o[k] < 1) throw invalidArg(k, 'an integer >= 1', o[k], 'runSft');
  if (!(o.lr > 0)) throw invalidArg('lr', 'a number > 0', o.lr, 'runSft');
  if (!(o.shortcutP >= 0 && o.shortcutP <= 1)) throw invalidArg('shortcutP', 'a number in [0, 1]', o.shortcutP, 'runSft');
  if (!(o.preset in POLICY_PRESETS)) throw invalidArg('preset', `one of ${Object.keys(POLICY_PRESETS).join(', ')}`, o.preset, 'runSft');
  const shape = POLICY_PRESETS[o.preset];
  const synth = { frames: shape.frames, size: shape.imageSize };
  const train = synthesize({ split: 'train', pairs: o.pairs, seed: o.seed, shortcutP: o.shortcutP, ...synth });
  const test = synthesize({ split: 'test', pairs: o.testPairs, seed: o.seed + 1000, ...synth });
  const ckptDir = path.join(o.out, 'checkpoint');
  fs.mkdirSync(o.out, { recursive: true });

  let policy: Policy;
  let startStep = 0;
  if (o.resume && fs.existsSync(path.join(ckptDir, 'policy.json'))) {
    const r = await loadCheckpoint(ckptDir);
    policy = r.policy;
    startStep = Number((r.manifest.meta as { sftStep?: number }).sftStep ?? r.manifest.step);
  } else {
    const tokenizer = Tokenizer.build([...train, ...test].map((it) => promptOf(it, o.nullOption)).concat([promptOf(train[0], !o.nullOption)]));
    policy = await Policy.create(tokenizer, { ...(o.model ?? {}), preset: o.preset, seed: o.seed });
  }
  try {
    const perEpoch = Math.ceil(train.length / o.batchSize);
    const steps = perEpoch * o.epochs;
    const warmup = Math.max(1, Math.round(steps * 0.05));
    // Warm-up, then cosine decay to 10% over the run; with a time budget the decay follows
    // whichever ends first (steps or seconds), so a run cut by the budget still ends at a low rate.
    const lrAt = (s: number, elapsed: number): number => {
      if (s < warmup) return (o.lr * (s + 1)) / warmup;
      const byStep = (s - warmup) / Math.max(1, steps - warmup);
      const frac = Math.min(1, o.maxSeconds > 0 ? Math.max(byStep, elapsed / o.maxSeconds) : byStep);
      return o.lr * (0.1 + 0.45 * (1 + Math.cos(Math.PI * frac)));
    };
    const t0 = Date.now();
    let loss = NaN;
    let step = startStep;
    for (; step < steps; step++) {
      const elapsed = (Date.now() - t0) / 1000;
      if (o.maxSeconds > 0 && elapsed > o.maxSeconds) break;
      const epoch = Math.floor(step / perEpoch);
      const order = shuffled(train.length, o.seed * 1000 + epoch);
      const idx = order.slice((step % perEpoch) * o.batchSize, (step % perEpoch + 1) * o.batchSize);
      const items = idx.map((i) => train[i]);
      const st = await policy.sftStep(packBatch(policy, items, o.nullOption), items.map((it) => answerCompletion(it.record.answer)), { lr: lrAt(step, elapsed), weightDecay: o.weightDecay, maxGradNorm: 1 });
      loss = st.loss;
      const done = step + 1 - startStep;
      const el = (Date.now() - t0) / 1000;
      const rate = el / done;
      const left = Math.min((steps - step - 1) * rate, o.maxSeconds > 0 ? Math.max(0, o.maxSeconds - el) : Infinity);
      o.onProgress?.({ step: step + 1, steps, loss, elapsed: el, eta: left });
      if (o.saveEvery > 0 && (step + 1) % o.saveEvery === 0 && step + 1 < steps) await saveCheckpoint(policy, ckptDir, { sftStep: step + 1 });
    }
    const trainSeconds = (Date.now() - t0) / 1000;
    await saveCheckpoint(policy, ckptDir, { sftStep: step, finished: true });
    const { metrics, samples } = await evaluateItems(policy, test, o.nullOption);
    const chanceAcc = test.reduce((s, it) => s + 1 / (it.record.options.length + (o.nullOption ? 1 : 0)), 0) / test.length;
    const { onProgress: _cb, ...rest } = options;
    void _cb;
    const report: SftReport = { steps: step, trainSeconds, finalLoss: loss, trainItems: train.length, testItems: test.length, chanceAcc, metrics, checkpoint: ckptDir, options: { ...o, onProgress: undefined, ...rest } as Omit<SftOptions, 'onProgress'> };
    writeFileAtomicSync(path.join(o.out, 'sft-report.json'), JSON.stringify(report, null, 1) + '\n');
    writeFileAtomicSync(path.join(o.out, 'sft-test-predictions.jsonl'), samples.map((s) => JSON.stringify(s)).join('\n') + '\n');
    return report;
  } finally {
    policy.dispose();
  }
}
