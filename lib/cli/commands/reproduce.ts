/**
 * `crpo reproduce`: the paper's main comparison at small scale (lib/reproduce; crpo-method.md
 * sections 7-10): GRPO, GRPO with 2G rollouts, T-GRPO, ArrowRL, CRPO and CRPO without the
 * dual-branch gradient from one base model on the synthetic DyBench with the shortcut on, over
 * seeds; prints the main table and writes report.md, summary.json and curves.png into --out.
 */
import type { Argv } from 'yargs';
import { invalidArg } from '../../errors';
import {
  REPRODUCE_DEFAULTS,
  REPRODUCE_NATIVE,
  REPRODUCE_NATIVE_QUICK,
  REPRODUCE_PRESETS,
  REPRODUCE_QUICK,
  presetConfig,
  reproduce,
  type ReproduceConfig,
} from '../../reproduce';

export function builder(y: Argv): Argv {
  const d = REPRODUCE_DEFAULTS,
    n = REPRODUCE_NATIVE,
    nq = REPRODUCE_NATIVE_QUICK;
  // Options without a yargs default take the preset's value (linear, or native with --preset native / --policy native).
  const both = (k: keyof ReproduceConfig): string => `default ${String(d[k])}; native preset ${String(n[k])}`;
  return y
    .option('out', {
      type: 'string',
      default: d.out,
      describe: 'Output folder (runs, base model, report.md, summary.json, curves.png)',
    })
    .option('preset', {
      type: 'string',
      describe: `Named settings: ${Object.keys(REPRODUCE_PRESETS).join(', ')} (default: native with --policy native, else linear)`,
    })
    .option('quick', {
      type: 'boolean',
      default: false,
      describe: `Fewer steps and smaller splits (linear: ${REPRODUCE_QUICK.steps} steps, <= 5 min on 2 cores; native: ${nq.steps} steps)`,
    })
    .option('methods', {
      type: 'string',
      default: d.methods.join(','),
      describe: 'Comma-separated algorithms, in table order',
    })
    .option('seeds', {
      type: 'string',
      describe: `Comma-separated seeds, >= 3 for a spread (default ${d.seeds.join(',')}; --quick and native ${REPRODUCE_QUICK.seeds!.join(',')})`,
    })
    .option('steps', {
      type: 'number',
      describe: `RL steps per run, equal for every method (default ${d.steps}; --quick ${REPRODUCE_QUICK.steps}; native ${n.steps}, --quick ${nq.steps})`,
    })
    .option('batch-size', { type: 'number', describe: `Prompts per step (default ${d.batchSize})` })
    .option('group-size', { type: 'number', describe: `G: rollouts per prompt (default ${d.groupSize})` })
    .option('lr', { type: 'number', describe: `Learning rate of the RL runs (${both('lr')})` })
    .option('temperature', {
      type: 'number',
      describe: `Sampling temperature of the RL rollouts (${both('temperature')})`,
    })
    .option('policy', {
      type: 'string',
      describe: `Policy kind ('linear', or a registered native kind; default ${d.policy})`,
    })
    .option('max-new-tokens', {
      type: 'number',
      describe: 'Largest completion length (0: by policy kind, 2 for linear, 6 for native)',
    })
    .option('train-pairs', { type: 'number', describe: `Synthetic train pairs per category (${both('trainPairs')})` })
    .option('eval-pairs', { type: 'number', describe: `Held-out pairs per category (${both('evalPairs')})` })
    .option('frames', { type: 'number', describe: `Frames per synthetic clip (default ${d.frames})` })
    .option('size', { type: 'number', describe: `Synthetic frame size in pixels (default ${d.size})` })
    .option('shortcut-p', {
      type: 'number',
      default: d.shortcutP,
      describe: 'Train split: probability that object colour names the dynamic answer',
    })
    .option('data-seed', { type: 'number', default: d.dataSeed, describe: 'Seed of the synthetic splits' })
    .option('base-steps', {
      type: 'number',
      describe: `Supervised warm-up steps of the base model (${both('baseSteps')})`,
    })
    .option('base-lr', { type: 'number', describe: `Learning rate of the warm-up (${both('baseLr')})` })
    .option('base-recipe', {
      choices: ['capability', 'letter', 'starting-point'],
      describe: `Native base model's training stream: crpo sft's third-round recipe (CAPABILITY_BASE), the letter alone, or crpo sft's defaults then dynamic answers by colour (crpo demo's base) (default ${String(n.baseRecipe)})`,
    })
    .option('base-batch-size', {
      type: 'number',
      describe: `Prompts per warm-up step (0 = --batch-size; native preset ${n.baseBatchSize})`,
    })
    .option('curve-every', {
      type: 'number',
      describe: `Checkpoint and held-out CRR every N steps (${both('curveEvery')})`,
    })
    .option('force', { type: 'boolean', default: false, describe: 'Rerun runs whose results exist' })
    .option('jobs', {
      type: 'number',
      describe:
        'Runs trained at once, each in its own process with its share of the cores (default: 1 for the linear policy, else the cores, at most 8)',
    })
    .example('crpo reproduce --quick --out runs/repro-quick', 'the six methods x 3 seeds in a few minutes')
    .example(
      'crpo reproduce --preset native --quick --out runs/repro-native-quick',
      'the native tiny video-language policy, six methods x 3 seeds',
    )
    .example('crpo reproduce --methods grpo,crpo --seeds 1,2,3,4,5', 'GRPO vs CRPO over five seeds');
}

export interface ReproduceArgs {
  out: string;
  preset?: string;
  quick: boolean;
  methods: string;
  seeds?: string;
  steps?: number;
  'batch-size'?: number;
  'group-size'?: number;
  lr?: number;
  temperature?: number;
  policy?: string;
  'max-new-tokens'?: number;
  'train-pairs'?: number;
  'eval-pairs'?: number;
  frames?: number;
  size?: number;
  'shortcut-p': number;
  'data-seed': number;
  'base-steps'?: number;
  'base-lr'?: number;
  'base-recipe'?: 'capability' | 'letter' | 'starting-point';
  'base-batch-size'?: number;
  'curve-every'?: number;
  force: boolean;
  jobs?: number;
}

/** Maps CLI flags onto a ReproduceConfig over the preset's defaults (validation of values happens in the library). */
export function configFromArgs(a: ReproduceArgs): ReproduceConfig {
  const list = (s: string): string[] =>
    s
      .split(',')
      .map((x) => x.trim())
      .filter(Boolean);
  const preset =
    a.preset ??
    (a.policy !== undefined && a.policy !== 'linear' && a.policy in REPRODUCE_PRESETS ? a.policy : 'linear');
  const base = presetConfig(preset, a.quick);
  const seeds =
    a.seeds === undefined
      ? base.seeds
      : list(a.seeds).map((s) => {
          if (!/^\d+$/.test(s))
            throw invalidArg('--seeds', 'a comma-separated list of integers >= 0', a.seeds, 'crpo reproduce');
          return Number(s);
        });
  return {
    ...base,
    out: a.out,
    methods: list(a.methods),
    seeds,
    steps: a.steps ?? base.steps,
    batchSize: a['batch-size'] ?? base.batchSize,
    groupSize: a['group-size'] ?? base.groupSize,
    lr: a.lr ?? base.lr,
    temperature: a.temperature ?? base.temperature,
    policy: a.policy ?? base.policy,
    maxNewTokens: a['max-new-tokens'] ?? base.maxNewTokens,
    trainPairs: a['train-pairs'] ?? base.trainPairs,
    evalPairs: a['eval-pairs'] ?? base.evalPairs,
    frames: a.frames ?? base.frames,
    size: a.size ?? base.size,
    shortcutP: a['shortcut-p'],
    dataSeed: a['data-seed'],
    baseSteps: a['base-steps'] ?? base.baseSteps,
    baseLr: a['base-lr'] ?? base.baseLr,
    baseRecipe: a['base-recipe'] ?? base.baseRecipe,
    baseBatchSize: a['base-batch-size'] ?? base.baseBatchSize,
    curveEvery: a['curve-every'] ?? base.curveEvery,
    force: a.force,
  };
}

export async function handler(argv: ReproduceArgs): Promise<void> {
  const r = await reproduce(configFromArgs(argv), { log: (m) => process.stderr.write(m + '\n'), jobs: argv.jobs });
  process.stdout.write(
    `${r.table}\n\nreport: ${r.reportPath}\nplot: ${r.plotPath}\nsummary: ${r.summaryPath}\n(${(r.wallMs / 60000).toFixed(1)} min)\n`,
  );
}
