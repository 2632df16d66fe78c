/**
 * `crpo demo`: the main job on its embedded default (lib/train/demo.ts). Prints the environment
 * report, makes a base model of the native tiny video-language policy that leans on a colour
 * shortcut, post-trains it with CRPO and GRPO under the same budget over 3 seeds, and prints Acc /
 * P-Acc / sensitivity / colour-shortcut answers on held-out pairs (mean ± sd). About 6 minutes on
 * 2 CPU cores; `--policy linear` runs the TypeScript toy policy in seconds.
 */
import type { Argv } from 'yargs';
import { CrpoError } from '../../errors';
import { doctorReport, formatDoctor } from '../doctor-report';
import { DEMO_PRESETS, formatDemoTable, runDemo, type DemoPolicy } from '../../train/demo';

export function builder(y: Argv): Argv {
  return y
    .option('out', { type: 'string', default: 'crpo-demo', describe: 'Output folder (base model, runs, logs, plots)' })
    .option('policy', {
      choices: ['native', 'linear'],
      default: 'native',
      describe: 'native: the libtorch video-language model; linear: the TypeScript toy (seconds)',
    })
    .option('steps', {
      type: 'number',
      default: 0,
      describe: `RL steps per run (0 = the policy's preset: native ${DEMO_PRESETS.native.steps}, linear ${DEMO_PRESETS.linear.steps})`,
    })
    .option('algos', {
      type: 'string',
      default: 'crpo,grpo',
      describe: 'Comma-separated algorithms to compare (lib/algo)',
    })
    .option('base-recipe', {
      choices: ['starting-point', 'capability'],
      describe:
        "Native: the base model's recipe (default starting-point: crpo sft, then dynamic answers by colour; capability: the base of the demo's earlier table, docs/model.md)",
    })
    .option('seeds', {
      type: 'string',
      default: '',
      describe: `Comma-separated seeds, one RL run per algorithm and seed (default: native ${DEMO_PRESETS.native.seeds.join(',')}; linear ${DEMO_PRESETS.linear.seeds.join(',')})`,
    })
    .check((a) => {
      const usage = (m: string) => new CrpoError('ERR_CRPO_USAGE', m, { userError: true });
      if (!Number.isInteger(a.steps) || (a.steps as number) < 0)
        throw usage(`--steps: expected an integer >= 0 but received ${a.steps}`);
      if (a.seeds && !/^\d+(,\d+)*$/.test(String(a.seeds)))
        throw usage(`--seeds: expected comma-separated integers such as 1,2,3 but received '${a.seeds}'`);
      return true;
    });
}

export async function handler(argv: {
  out: string;
  policy: DemoPolicy;
  steps: number;
  algos: string;
  seeds: string;
  'base-recipe'?: 'starting-point' | 'capability';
}): Promise<void> {
  process.stdout.write(formatDoctor(doctorReport()) + '\n\n');
  const t0 = Date.now();
  const seeds = argv.seeds ? argv.seeds.split(',').map(Number) : undefined;
  const algos = argv.algos
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const rows = await runDemo({
    out: argv.out,
    policy: argv.policy,
    steps: argv.steps,
    algos,
    seeds,
    ...(argv['base-recipe'] ? { baseRecipe: argv['base-recipe'] } : {}),
    log: (m) => process.stdout.write(m + '\n'),
  });
  const n = rows[rows.length - 1]?.runs.length ?? 0;
  process.stdout.write(
    `\nHeld-out synthetic DyBench (colour no longer names the answer), greedy answers, %${n > 1 ? `, mean ± sd over ${n} seeds` : ''}:\n${formatDemoTable(rows)}\n`,
  );
  process.stdout.write(
    `\nP-Acc counts a pair only when both the original and the counterfactual video are answered right; "colour shortcut" is the share of\n` +
      `dynamic videos whose object colour names a wrong option that are answered with that option.\n` +
      `Logs, checkpoints and plots: ${argv.out}/<algo>[-seed<N>]/  (total ${((Date.now() - t0) / 1000).toFixed(1)} s)\n`,
  );
}
