/**
 * `crpo demo`: the main job on its embedded default (lib/train/demo.ts). Prints the environment
 * report, then generates the synthetic DyBench with the shortcut knob on, makes a base model,
 * post-trains it with CRPO (and GRPO for comparison), and prints Acc / P-Acc / sensitivity of
 * the base and trained policies on held-out pairs. Runs in well under a minute on 2 CPU cores.
 */
import type { Argv } from 'yargs';
import { doctorReport, formatDoctor } from '../../doctor';
import { formatDemoTable, runDemo } from '../../train/demo';

export function builder(y: Argv): Argv {
  return y
    .option('out', { type: 'string', default: 'crpo-demo', describe: 'Output folder (base model, runs, logs, plots)' })
    .option('steps', { type: 'number', default: 400, describe: 'RL steps per algorithm' })
    .option('algos', { type: 'string', default: 'crpo,grpo', describe: 'Comma-separated algorithms to compare (lib/algo)' })
    .option('seed', { type: 'number', default: 0, describe: 'Seed of data order and sampling' });
}

export async function handler(argv: { out: string; steps: number; algos: string; seed: number }): Promise<void> {
  process.stdout.write(formatDoctor(doctorReport()) + '\n\n');
  const t0 = Date.now();
  const rows = await runDemo({ out: argv.out, steps: argv.steps, algos: argv.algos.split(',').map((s) => s.trim()).filter(Boolean), seed: argv.seed, log: (m) => process.stdout.write(m + '\n') });
  process.stdout.write(`\nHeld-out synthetic DyBench (colour no longer names the answer), greedy answers, % :\n${formatDemoTable(rows)}\n`);
  process.stdout.write(`\nP-Acc counts a pair only when both the original and the counterfactual video are answered right.\nLogs, checkpoints and plots: ${argv.out}/<algo>/  (total ${((Date.now() - t0) / 1000).toFixed(1)} s)\n`);
}
