/**
 * `crpo bench rollout | ops | plan`: where a CRPO step's time and memory go on this machine.
 *   rollout  real CRPO steps of the native tiny policy or a Qwen-VL folder, timed by phase (lib/bench/rollout.ts)
 *   ops      counterfactual ops vs memcpy, the CRR kernel vs its TS reference (lib/bench/ops.ts)
 *   plan     memory per device of a run from formulas, and whether it fits (lib/bench/plan.ts)
 * Progress goes to stderr, the Markdown table to stdout (`--json`: the result as JSON instead).
 */
import type { Argv } from 'yargs';
import { CrpoError } from '../../errors';

const ACTIONS = ['rollout', 'ops', 'plan'] as const;
type Action = (typeof ACTIONS)[number];

/** Flags that belong to one action only (a flag of another action is refused, not ignored). */
const ACTION_FLAGS: Record<Action, readonly string[]> = {
  rollout: [
    'policy',
    'model',
    'device',
    'dtype',
    'batch',
    'group-size',
    'cf-group-size',
    'frames',
    'size',
    'max-new-tokens',
    'lora',
    'steps',
    'warmup',
    'seed',
    'nproc',
    'vs-pytorch',
  ],
  ops: ['device', 'runs'],
  plan: [
    'model',
    'gpus',
    'gpu-mem',
    'lora',
    'sharded-optim',
    'batch',
    'group-size',
    'cf-group-size',
    'frames',
    'size',
    'pixels',
    'prompt-tokens',
    'max-new-tokens',
    'micro-batch',
    'dtype',
    'checkpointing',
    'shared-prefix',
  ],
};

export function builder(y: Argv): Argv {
  return y
    .usage(
      'crpo bench rollout [--policy native|qwen] [--model <folder>] [--device cpu|cuda:N] [--batch B] [--group-size ' +
        'G] ...\n' +
        'crpo bench ops [--device cpu|cuda:N]\n' +
        'crpo bench plan --model <folder|Qwen2.5-VL-7B|Qwen3-VL-8B|...> --gpus N --gpu-mem GB [--lora r] ' +
        '[--sharded-optim] ...',
    )
    .positional('action', { type: 'string', choices: ACTIONS as unknown as string[], describe: 'What to measure' })
    .option('json', {
      type: 'boolean',
      default: false,
      describe: 'Print the result as JSON on stdout instead of the table',
    })
    .option('policy', { type: 'string', describe: "rollout: 'native' (tiny native policy, default) or 'qwen'" })
    .option('model', {
      type: 'string',
      describe: 'rollout: Hugging Face Qwen-VL folder (--policy qwen); plan: a folder or a published model name',
    })
    .option('device', { type: 'string', describe: "'cpu' (default) or 'cuda[:N]'" })
    .option('dtype', {
      type: 'string',
      describe: 'rollout: float32 | bfloat16 | float16; plan: bfloat16 (default) | float32 | float16',
    })
    .option('batch', { type: 'number', describe: 'Prompts per step B (rollout default 8; plan: per device)' })
    .option('group-size', { type: 'number', describe: 'G: rollouts per prompt on the original video (default 8)' })
    .option('cf-group-size', {
      type: 'number',
      describe: "G': rollouts per prompt on the counterfactual video (0 = G)",
    })
    .option('frames', { type: 'number', describe: 'Frames per clip (rollout default 8; plan default 16)' })
    .option('size', {
      type: 'string',
      describe: "Frame size HxW in pixels (rollout default '32x32'; plan: pixels per frame)",
    })
    .option('max-new-tokens', { type: 'number', describe: 'Longest completion (rollout default 16; plan default 256)' })
    .option('lora', { type: 'number', describe: 'LoRA rank (qwen; plan: 0 = full fine-tuning, default 16)' })
    .option('steps', { type: 'number', describe: 'rollout: timed steps (default 5)' })
    .option('warmup', { type: 'number', describe: 'rollout: warm-up steps (default 2)' })
    .option('seed', { type: 'number', describe: 'rollout: data and sampling seed (default 0)' })
    .option('nproc', { type: 'number', describe: 'rollout: start N local ranks (torchrun environment contract)' })
    .option('vs-pytorch', {
      type: 'boolean',
      describe: "rollout: also run the project's PyTorch twin of the tiny policy (bench/pytorch), paired",
    })
    .option('runs', { type: 'number', describe: 'ops: timed runs per op (default 9)' })
    .option('gpus', { type: 'number', describe: 'plan: devices (data parallel)' })
    .option('gpu-mem', { type: 'number', describe: 'plan: memory per device, GB (10^9 bytes, as GPUs are sold)' })
    .option('sharded-optim', {
      type: 'boolean',
      describe: 'plan: optimizer state and gradients sharded over the devices (ZeRO-2)',
    })
    .option('pixels', { type: 'number', describe: 'plan: pixels per frame after resizing (default 128*28*28)' })
    .option('prompt-tokens', { type: 'number', describe: 'plan: text tokens of a prompt (default 120)' })
    .option('micro-batch', { type: 'number', describe: 'plan: sequences per forward/backward (default 1)' })
    .option('checkpointing', { type: 'boolean', describe: 'plan: gradient checkpointing (default true)' })
    .option('shared-prefix', { type: 'boolean', describe: 'plan: qwen update with the shared prefix (default true)' })
    .example('crpo bench rollout', 'phase table of the native tiny policy, defaults, under a minute on 2 cores')
    .example(
      'crpo bench rollout --policy qwen --model /models/Qwen3-VL-8B-Instruct --device cuda:0 --dtype bfloat16',
      'the same on a Qwen folder',
    )
    .example(
      'crpo bench plan --model Qwen3-VL-8B --gpus 8 --gpu-mem 80 --batch 2 --group-size 8',
      'memory per device before a run',
    );
}

function checkFlags(action: Action, argv: Record<string, unknown>): void {
  for (const [other, flags] of Object.entries(ACTION_FLAGS)) {
    if (other === action) continue;
    for (const f of flags) {
      if (ACTION_FLAGS[action].includes(f) || argv[f] === undefined) continue;
      throw new CrpoError(
        'ERR_CRPO_INVALID_ARG',
        `--${f} is a flag of \`crpo bench ${other}\`, not of \`crpo bench ${action}\``,
      );
    }
  }
}

const num = (argv: Record<string, unknown>, k: string): number | undefined => {
  const v = argv[k];
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || Number.isNaN(v))
    throw new CrpoError('ERR_CRPO_INVALID_ARG', `--${k}: expected a number but received ${String(v)}`);
  return v;
};

const progress = (m: string): void => void process.stderr.write(m + '\n');

async function rollout(argv: Record<string, unknown>): Promise<void> {
  const { launchIfRequested } = await import('../../distributed/launch');
  if (await launchIfRequested(argv.nproc)) return;
  const { benchRollout, formatRolloutBench, parseSize } = await import('../../bench/rollout');
  const size = argv.size !== undefined ? parseSize(argv.size) : {};
  const options = {
    policy: argv.policy as 'native' | 'qwen' | undefined,
    model: argv.model as string | undefined,
    device: argv.device as string | undefined,
    dtype: argv.dtype as 'float32' | undefined,
    batch: num(argv, 'batch'),
    groupSize: num(argv, 'group-size'),
    cfGroupSize: num(argv, 'cf-group-size'),
    frames: num(argv, 'frames'),
    maxNewTokens: num(argv, 'max-new-tokens'),
    lora: num(argv, 'lora'),
    steps: num(argv, 'steps'),
    warmup: num(argv, 'warmup'),
    seed: num(argv, 'seed'),
    ...size,
  };
  const { resolveRolloutBenchConfig } = await import('../../bench/rollout');
  const config = resolveRolloutBenchConfig(options); // refuse bad flags before joining a process group
  const { initDistributed, runRank } = await import('../../distributed');
  const dist = await initDistributed();
  const r = await runRank(dist, (ctx) => benchRollout(config, { log: ctx.isMain ? progress : undefined, dist: ctx }));
  if (!dist.isMain) {
    process.stderr.write(
      `rank ${r.rank}/${r.world}: step median ${r.step.medianMs.toFixed(1)} ms, peak RSS ${r.peakRssMiB.toFixed(0)} ` +
        `MiB\n`,
    );
    return;
  }
  if (!argv['vs-pytorch']) {
    process.stdout.write(argv.json ? JSON.stringify(r, null, 2) + '\n' : formatRolloutBench(r) + '\n');
    return;
  }
  const { benchVsPytorch, formatVsPytorch } = await import('../../bench/vs-pytorch');
  const v = await benchVsPytorch(config, { log: progress });
  process.stdout.write(
    argv.json
      ? JSON.stringify({ ...r, vsPytorch: v }, null, 2) + '\n'
      : `${formatRolloutBench(r)}\n\n${formatVsPytorch(v)}\n`,
  );
}

export async function handler(argv: Record<string, unknown>): Promise<void> {
  const action = argv.action as Action;
  if (!ACTIONS.includes(action))
    throw new CrpoError(
      'ERR_CRPO_INVALID_ARG',
      `Unknown bench action '${String(action)}' (known: ${ACTIONS.join(', ')})`,
    );
  checkFlags(action, argv);
  if (action === 'rollout') return rollout(argv);
  if (action === 'ops') {
    const { benchOps, formatOpsBench } = await import('../../bench/ops');
    const r = await benchOps({ device: argv.device as string | undefined, runs: num(argv, 'runs') }, { log: progress });
    process.stdout.write(argv.json ? JSON.stringify(r, null, 2) + '\n' : formatOpsBench(r) + '\n');
    return;
  }
  const { planMemory, formatPlan, planOptionsFromFlags } = await import('../../bench/plan');
  const r = planMemory(planOptionsFromFlags(argv));
  process.stdout.write(argv.json ? JSON.stringify(r, null, 2) + '\n' : formatPlan(r) + '\n');
}
