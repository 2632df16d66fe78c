/**
 * `crpo train`: post-trains a policy with CRPO or one of the baselines (lib/algo) from one
 * YAML/JSON config plus CLI overrides (lib/train/config.ts), e.g.
 * `crpo train --config configs/crpo-synthetic.yaml --algo crpo --group-size 8 --set weights.crr=2`.
 */
import * as fs from 'fs';
import * as path from 'path';
import type { Argv } from 'yargs';
import { FLAG_FIELDS, TRAIN_DEFAULTS, readConfigFile, resolveConfig, setDotted, ConfigError } from '../../train/config';
import { train } from '../../train/trainer';
import { initDistributed, runRank } from '../../distributed';
import { launchIfRequested } from '../../distributed/launch';
import { detectModelFolder } from '../../hf/model-folder';
import { decodeUtf8 } from '../../data/jsonl';

export function builder(y: Argv): Argv {
  let b = y
    .option('config', {
      type: 'string',
      describe: 'YAML or JSON config file (fields of TrainConfig, docs/training.md)',
    })
    .option('set', {
      type: 'string',
      array: true,
      describe: 'Dotted override key=value, e.g. --set weights.crr=2 (repeatable)',
    })
    .option('data', { type: 'string', describe: "Training DyBench JSONL, or 'synthetic' (data.train)" })
    .option('val-data', { type: 'string', describe: "Validation DyBench JSONL, 'synthetic', or '' (data.val)" })
    .option('init', { type: 'string', describe: 'Checkpoint folder with the base weights (policy.init)' })
    .option('model', {
      type: 'string',
      describe:
        'Model folder: a crpo checkpoint (linear/native/qwen), a run folder, or a Hugging Face Qwen2.5-VL/Qwen3-VL folder; sets policy.kind and policy.init',
    })
    .option('nproc', {
      type: 'number',
      describe: 'Start N local worker processes (torchrun environment contract; docs/distributed.md)',
    })
    .option('policy', { type: 'string', describe: "Policy kind (policy.kind): 'linear', 'native' or 'qwen'" })
    .option('finetune', {
      type: 'string',
      describe: "qwen: 'lora' (adapters) or 'full' (every LM weight) (policy.finetune; default \"lora\")",
    });
  const types: Record<string, 'string' | 'number' | 'boolean'> = {
    algo: 'string',
    'lr-schedule': 'string',
    aggregation: 'string',
    norm: 'string',
    out: 'string',
    resume: 'string',
    'filter-zero-variance': 'boolean',
  };
  const docs: Record<string, string> = {
    algo: 'crpo | crpo-no-dual | grpo | grpo-2g | t-grpo | arrowrl',
    steps: 'RL steps',
    'batch-size': 'prompts per step',
    'group-size': 'G: rollouts per prompt on the original video',
    'cf-group-size': "G': rollouts on the counterfactual / reversed video (0 = G)",
    'update-epochs': 'mu: optimiser passes per rollout batch',
    lr: 'peak learning rate',
    'lr-schedule': 'constant | cosine',
    'warmup-steps': 'linear warm-up steps',
    beta: 'k3 KL coefficient (0 = no reference)',
    aggregation: 'seq-mean-token-mean | token-mean | seq-mean-token-sum-norm',
    temperature: 'sampling temperature',
    norm: 'advantage normalisation: per-branch | joint | none',
    seed: 'seed of data order and sampling',
    out: 'run folder',
    resume: "'auto' (newest checkpoint in --out), 'never', or a checkpoint folder",
    'val-every': 'validate every N steps',
    'save-every': 'checkpoint every N steps',
    'keep-last': 'checkpoints kept',
    'dump-every': "dump every N-th step's rollouts (0 = never)",
    'filter-zero-variance': 'drop groups whose rewards are all equal',
    zero: '1: shard the AdamW state over the processes (ZeRO-1; qwen, several processes)',
  };
  // The defaults are shown, not set: a flag given overrides the config file, one not given leaves it.
  for (const flag of Object.keys(FLAG_FIELDS)) {
    const field = FLAG_FIELDS[flag];
    b = b.option(flag, {
      type: types[flag] ?? 'number',
      describe: `${docs[flag] ?? ''} (${field}; default ` + `${JSON.stringify(TRAIN_DEFAULTS[field])})`,
    });
  }
  return b
    .example(
      'crpo train --algo crpo --steps 200 --out runs/crpo',
      'CRPO on the synthetic DyBench with the built-in policy',
    )
    .example(
      'crpo train --model /models/Qwen3-VL-2B-Instruct --data train.jsonl',
      'the policy kind (here qwen) and init from what the folder holds',
    )
    .example(
      'crpo train --config configs/crpo-synthetic.yaml --resume auto',
      'continue a killed run from its newest checkpoint',
    );
}

/** Turns parsed CLI flags into a nested partial config (only flags actually given). */
export function overridesFromArgv(argv: Record<string, unknown>): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  for (const [flag, field] of Object.entries(FLAG_FIELDS)) if (argv[flag] !== undefined) o[field] = argv[flag];
  const data: Record<string, unknown> = {};
  if (argv.data !== undefined) data.train = argv.data;
  if (argv['val-data'] !== undefined) data.val = argv['val-data'];
  if (Object.keys(data).length) o.data = data;
  const policy: Record<string, unknown> = {};
  if (argv.init !== undefined) {
    // A run folder names its newest checkpoint, as `crpo serve` and `--model` read it.
    const init = String(argv.init);
    policy.init =
      init !== '' && fs.existsSync(path.join(init, 'checkpoints')) ? detectModelFolder(init, '--init').init : init;
  }
  if (argv.policy !== undefined) policy.kind = argv.policy;
  if (argv.finetune !== undefined) policy.finetune = argv.finetune;
  if (argv.model !== undefined) {
    // --model <folder> = --policy <kind found there> --init <folder>
    if (argv.init !== undefined || argv.policy !== undefined)
      throw new ConfigError('--model names the policy kind and init itself; drop --policy/--init');
    const m = detectModelFolder(String(argv.model));
    policy.kind = m.kind;
    policy.init = m.init;
  }
  if (Object.keys(policy).length) o.policy = policy;
  for (const pair of (argv.set as string[] | undefined) ?? []) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new ConfigError(`--set ${pair}: expected key=value`);
    setDotted(o, pair.slice(0, eq), pair.slice(eq + 1));
  }
  for (const [k, v] of Object.entries(o))
    if (typeof v === 'number' && Number.isNaN(v)) throw new ConfigError(`--${k}: expected a number`);
  return o;
}

/** Input paths of a config file (data.train, data.val, policy.init) that a relative path may name. */
const CONFIG_INPUTS: readonly (readonly [string, string])[] = [
  ['data', 'train'],
  ['data', 'val'],
  ['policy', 'init'],
];

/**
 * The config file's input paths, resolved: a relative path names a file next to the config when
 * one is there, else one under the working directory (older configs were written that way); when
 * neither exists the error names both places. An empty config file is an error, not the defaults.
 * Returns overrides holding the resolved paths (only for fields the command line does not set).
 */
export function configFilePaths(file: string, cli: Record<string, unknown>): Record<string, unknown> {
  if (fs.existsSync(file) && fs.statSync(file).isDirectory()) {
    throw new ConfigError(
      `--config ${file}: is a folder; name the YAML or JSON config file (e.g. configs/crpo-synthetic.yaml)`,
    );
  }
  // A non-UTF-8 byte is named with its line (the YAML reader would turn it into U+FFFD).
  if (fs.existsSync(file)) decodeUtf8(fs.readFileSync(file), file, 'config file');
  const raw = readConfigFile(file);
  if (Object.keys(raw).length === 0) {
    throw new ConfigError(
      `--config ${file}: the file is empty; give at least one field (docs/training.md), or drop ` +
        `--config to train with the defaults`,
    );
  }
  const out: Record<string, Record<string, unknown>> = {};
  const dir = path.dirname(path.resolve(file));
  for (const [group, key] of CONFIG_INPUTS) {
    const v = (raw[group] as Record<string, unknown> | undefined)?.[key];
    if (typeof v !== 'string' || v === '' || v === 'synthetic' || path.isAbsolute(v)) continue;
    if ((cli[group] as Record<string, unknown> | undefined)?.[key] !== undefined) continue;
    const nextToConfig = path.resolve(dir, v);
    if (fs.existsSync(nextToConfig)) (out[group] ??= {})[key] = nextToConfig;
    else if (!fs.existsSync(v))
      throw new ConfigError(
        `${file}: ${group}.${key}: '${v}' not found, neither next to ` +
          `the config (${nextToConfig}) nor under the working directory (${path.resolve(v)})`,
      );
  }
  return out;
}

function mergePlain(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const o: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b)) {
    const isObj = (x: unknown): x is Record<string, unknown> =>
      typeof x === 'object' && x !== null && !Array.isArray(x);
    o[k] = isObj(v) && isObj(o[k]) ? mergePlain(o[k] as Record<string, unknown>, v) : v;
  }
  return o;
}

export async function handler(argv: Record<string, unknown>): Promise<void> {
  if (await launchIfRequested(argv.nproc)) return; // --nproc N: N workers run this command (lib/distributed/launch.ts)
  const file = argv.config as string | undefined;
  const cli = overridesFromArgv(argv);
  const overrides = file ? mergePlain(configFilePaths(file, cli), cli) : cli;
  const config = resolveConfig({ file, overrides });
  if (fs.existsSync(config.out) && !fs.statSync(config.out).isDirectory()) {
    throw new ConfigError(
      `--out ${config.out}: is a file; --out names the run folder (config.yaml, metrics.jsonl, checkpoints/)`,
    );
  }
  // Multi-process (torchrun, srun, --nproc): c10d group; the native and linear policies all-reduce
  // gradients, the trainer refuses kinds that do not (Policy.syncsGradients).
  const dist = await initDistributed();
  if (dist.isMain) {
    const ranks = dist.worldSize > 1 ? `, ${dist.worldSize} ranks` : '';
    process.stderr.write(
      `crpo train: ${config.algo}, ${config.steps} steps, G=${config.groupSize}, batch ${config.batchSize}${ranks}, policy ${config.policy.kind}${config.policy.init ? ` from ${config.policy.init}` : ''}${config.policy.kind === 'qwen' && config.policy.finetune === 'full' ? ', full fine-tuning' : ''}${config.zero === 1 ? ', zero 1' : ''} -> ${config.out}\n`,
    );
  }
  const r = await runRank(dist, () => train(config, { dist }));
  if (!dist.isMain) return; // rank 0 writes the run folder and reports it
  const first = r.validation[0],
    last = r.validation[r.validation.length - 1];
  if (first && last) {
    const f = (v: number | null) => (v === null ? '-' : v.toFixed(3));
    process.stdout.write(
      `validation  step ${first.step}: Acc ${f(first.acc)} P-Acc ${f(first.p_acc)} sensitivity ${f(first.sensitivity)}  ->  step ${last.step}: Acc ${f(last.acc)} P-Acc ${f(last.p_acc)} sensitivity ${f(last.sensitivity)}\n`,
    );
  }
  if (r.skippedSteps)
    process.stdout.write(`${r.skippedSteps} step(s) skipped (non-finite loss or gradient); see metrics.jsonl\n`);
  process.stdout.write(
    `run folder: ${r.runDir} (config.yaml, metrics.jsonl, val.jsonl, rollouts.jsonl, checkpoints/${r.plots.length ? ', training.png, validation.png' : ''})\n`,
  );
}
