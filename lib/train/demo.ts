/**
 * The main job of `crpo demo` (crpo-method.md sections 1-8 end to end, on one CPU): generate the
 * synthetic DyBench with the colour shortcut on, make a base model by a short supervised warm
 * start (it leans on the shortcut), post-train it with CRPO and, for comparison, with GRPO under
 * the same budget, and report Acc / P-Acc / sensitivity / invariance of the base and trained
 * policies on held-out pairs whose colour says nothing about the answer.
 */
import * as path from 'path';
import { resolveConfig, type TrainConfig } from './config';
import { sftBase } from './sft';
import { train, type ValidationResult } from './trainer';

export interface DemoOptions {
  out: string;
  /** RL steps per algorithm. */
  steps: number;
  /** Algorithms to post-train the base model with. */
  algos: string[];
  seed: number;
  log(message: string): void;
}

export interface DemoRow {
  model: string;
  val: ValidationResult;
  seconds: number;
}

/** The demo's training config: the synthetic DyBench, the built-in linear policy, sampling at temperature 2. */
export function demoConfig(o: { out: string; steps: number; seed: number; algo: string; init: string }): TrainConfig {
  return resolveConfig({
    overrides: {
      algo: o.algo, out: o.out, resume: 'never', steps: o.steps, seed: o.seed, lr: 0.02, temperature: 2, batchSize: 8, groupSize: 8,
      valEvery: Math.max(1, Math.floor(o.steps / 4)), saveEvery: Math.max(1, Math.floor(o.steps / 4)), dumpEvery: Math.max(1, Math.floor(o.steps / 8)),
      data: { train: 'synthetic', val: 'synthetic', pairs: 60, valPairs: 30, seed: 1, shortcutP: 0.95 },
      policy: { kind: 'linear', init: o.init },
    },
  });
}

export async function runDemo(o: DemoOptions): Promise<DemoRow[]> {
  const baseDir = path.join(o.out, 'base');
  const t0 = Date.now();
  o.log(`1/3 synthetic DyBench (4 categories x 60 train pairs, colour names the answer with p = 0.95; 4 x 30 held-out pairs without the shortcut)`);
  o.log(`2/3 base model: supervised warm start of the built-in linear policy -> ${baseDir}`);
  const cfg = demoConfig({ out: path.join(o.out, 'unused'), steps: o.steps, seed: o.seed, algo: 'crpo', init: '' });
  await sftBase(cfg, { steps: 30, batchSize: 16, lr: 0.05, nullOption: true, out: baseDir, log: (m) => o.log(`    ${m}`) });
  const rows: DemoRow[] = [];
  for (const [i, algo] of o.algos.entries()) {
    o.log(`3/3 post-training with ${algo} (${i + 1}/${o.algos.length}), ${o.steps} steps -> ${path.join(o.out, algo)}`);
    const t = Date.now();
    const r = await train(demoConfig({ out: path.join(o.out, algo), steps: o.steps, seed: o.seed, algo, init: baseDir }), { log: (m) => o.log(`    ${m}`) });
    if (rows.length === 0) rows.push({ model: 'base (SFT)', val: r.validation[0], seconds: (t - t0) / 1000 });
    rows.push({ model: `+ ${algo}`, val: r.validation[r.validation.length - 1], seconds: (Date.now() - t) / 1000 });
  }
  return rows;
}

export function formatDemoTable(rows: readonly DemoRow[]): string {
  const f = (v: number | null) => (v === null ? '   -  ' : (100 * v).toFixed(1).padStart(6));
  const lines = ['model          |    Acc |  P-Acc | dyn P-Acc | sensitivity | invariance', '---------------|--------|--------|-----------|-------------|-----------'];
  for (const r of rows) lines.push(`${r.model.padEnd(14)} | ${f(r.val.acc)} | ${f(r.val.p_acc)} |    ${f(r.val['dynamic/p_acc'])} |      ${f(r.val.sensitivity)} |     ${f(r.val.invariance)}`);
  return lines.join('\n');
}
