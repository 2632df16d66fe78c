/**
 * `crpo reproduce`: the paper's main comparison at small scale (lib/reproduce; crpo-method.md
 * sections 7-10): GRPO, GRPO with 2G rollouts, T-GRPO, ArrowRL, CRPO and CRPO without the
 * dual-branch gradient from one base model on the synthetic DyBench with the shortcut on, over
 * seeds; prints the main table and writes report.md, summary.json and curves.png into --out.
 */
import type { Argv } from 'yargs';
import { invalidArg } from '../../errors';
import { REPRODUCE_DEFAULTS, REPRODUCE_QUICK, reproduce, type ReproduceConfig } from '../../reproduce';

export function builder(y: Argv): Argv {
  const d = REPRODUCE_DEFAULTS;
  return y
    .option('out', { type: 'string', default: d.out, describe: 'Output folder (runs, base model, report.md, summary.json, curves.png)' })
    .option('quick', { type: 'boolean', default: false, describe: `Fewer steps and smaller splits (${REPRODUCE_QUICK.steps} steps; <= 5 min on 2 cores)` })
    .option('methods', { type: 'string', default: d.methods.join(','), describe: 'Comma-separated algorithms, in table order' })
    .option('seeds', { type: 'string', describe: `Comma-separated seeds, >= 3 for a spread (default ${d.seeds.join(',')}; --quick ${REPRODUCE_QUICK.seeds!.join(',')})` })
    .option('steps', { type: 'number', describe: `RL steps per run, equal for every method (default ${d.steps}; --quick ${REPRODUCE_QUICK.steps})` })
    .option('batch-size', { type: 'number', default: d.batchSize, describe: 'Prompts per step' })
    .option('group-size', { type: 'number', default: d.groupSize, describe: 'G: rollouts per prompt' })
    .option('lr', { type: 'number', default: d.lr, describe: 'Learning rate of the RL runs' })
    .option('policy', { type: 'string', default: d.policy, describe: "Policy kind ('linear', or a registered native kind)" })
    .option('max-new-tokens', { type: 'number', default: d.maxNewTokens, describe: 'Largest completion length (0: 2 for the linear policy, 6 otherwise)' })
    .option('train-pairs', { type: 'number', describe: `Synthetic train pairs per category (default ${d.trainPairs})` })
    .option('eval-pairs', { type: 'number', describe: `Held-out pairs per category (default ${d.evalPairs})` })
    .option('shortcut-p', { type: 'number', default: d.shortcutP, describe: 'Train split: probability that object colour names the dynamic answer' })
    .option('data-seed', { type: 'number', default: d.dataSeed, describe: 'Seed of the synthetic splits' })
    .option('base-steps', { type: 'number', default: d.baseSteps, describe: 'Supervised warm-up steps of the base model' })
    .option('base-lr', { type: 'number', default: d.baseLr, describe: 'Learning rate of the warm-up' })
    .option('curve-every', { type: 'number', describe: `Checkpoint and held-out CRR every N steps (default ${d.curveEvery})` })
    .option('force', { type: 'boolean', default: false, describe: 'Rerun runs whose results exist' })
    .example('crpo reproduce --quick --out runs/repro-quick', 'the six methods x 3 seeds in a few minutes')
    .example('crpo reproduce --methods grpo,crpo --seeds 1,2,3,4,5', 'GRPO vs CRPO over five seeds');
}

export interface ReproduceArgs {
  out: string;
  quick: boolean;
  methods: string;
  seeds?: string;
  steps?: number;
  'batch-size': number;
  'group-size': number;
  lr: number;
  policy: string;
  'max-new-tokens'?: number;
  'train-pairs'?: number;
  'eval-pairs'?: number;
  'shortcut-p': number;
  'data-seed': number;
  'base-steps': number;
  'base-lr'?: number;
  'curve-every'?: number;
  force: boolean;
}

/** Maps CLI flags onto a ReproduceConfig (validation of values happens in the library). */
export function configFromArgs(a: ReproduceArgs): ReproduceConfig {
  const list = (s: string): string[] => s.split(',').map((x) => x.trim()).filter(Boolean);
  const base = a.quick ? { ...REPRODUCE_DEFAULTS, ...REPRODUCE_QUICK } : REPRODUCE_DEFAULTS;
  const seeds = a.seeds === undefined ? base.seeds : list(a.seeds).map((s) => {
    if (!/^\d+$/.test(s)) throw invalidArg('--seeds', 'a comma-separated list of integers >= 0', a.seeds, 'crpo reproduce');
    return Number(s);
  });
  return {
    ...base,
    out: a.out,
    methods: list(a.methods),
    seeds,
    steps: a.steps ?? base.steps,
    batchSize: a['batch-size'],
    groupSize: a['group-size'],
    lr: a.lr,
    policy: a.policy,
    maxNewTokens: a['max-new-tokens'] ?? base.maxNewTokens,
    trainPairs: a['train-pairs'] ?? base.trainPairs,
    evalPairs: a['eval-pairs'] ?? base.evalPairs,
    shortcutP: a['shortcut-p'],
    dataSeed: a['data-seed'],
    baseSteps: a['base-steps'],
    baseLr: a['base-lr'] ?? base.baseLr,
    curveEvery: a['curve-every'] ?? base.curveEvery,
    force: a.force,
  };
}

export async function handler(argv: ReproduceArgs): Promise<void> {
  const r = await reproduce(configFromArgs(argv), { log: (m) => process.stderr.write(m + '\n') });
  process.stdout.write(`${r.table}\n\nreport: ${r.reportPath}\nplot: ${r.plotPath}\nsummary: ${r.summaryPath}\n(${(r.wallMs / 60000).toFixed(1)} min)\n`);
}
