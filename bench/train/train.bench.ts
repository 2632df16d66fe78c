/**
 * Trainer step benchmark (crpo-method.md sections 4-6): the time split of one full RL step,
 * rollout (generation on the original and, for CRPO, the counterfactual branch) / reward (answer
 * parsing + the fused kernels) / update (reference log-probs + the section-6 train step), for the
 * native `tiny` policy (when the torch addon carries it) and the built-in linear policy. Reference
 * measured in the same run: the single-branch GRPO step with the same G, so the cost of the second
 * branch reads as a ratio. B = 8 prompts x G = 8 per branch; median over the timed steps after
 * warm-up steps, from the trainer's own per-step metrics (the loop under test, not a copy).
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { hasAddon, torchAddon } from '../../lib/native';
import { resolveConfig } from '../../lib/train/config';
import { sftBase } from '../../lib/train/base-model';
import { train } from '../../lib/train/trainer';
import { describeMachine, fmt, machine, table, writeResults } from '../harness';

const WARMUP = 3,
  TIMED = 10,
  B = 8,
  G = 8;

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};

interface Split {
  rollout: number;
  reward: number;
  update: number;
  step: number;
  sequences: number;
  samplesPerS: number;
}

async function measure(tmp: string, kind: 'native' | 'linear', algo: 'crpo' | 'grpo', init: string): Promise<Split> {
  const out = path.join(tmp, `${kind}-${algo}`);
  const c = resolveConfig({
    overrides: {
      algo,
      out,
      resume: 'never',
      steps: WARMUP + TIMED,
      batchSize: B,
      groupSize: G,
      valEvery: 0,
      saveEvery: 1000,
      dumpEvery: 0,
      plots: false,
      progress: false,
      maxNewTokens: kind === 'native' ? 6 : 2,
      temperature: kind === 'native' ? 1 : 2,
      lr: kind === 'native' ? 1e-4 : 0.02,
      data: { pairs: 20, valPairs: 0, val: '' },
      policy: { kind, init },
    },
  });
  await train(c, { log: () => undefined });
  const lines = fs
    .readFileSync(path.join(out, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, number>)
    .slice(WARMUP);
  const m = (k: string) => median(lines.map((l) => l[k]));
  return {
    rollout: m('rollout_seconds') * 1000,
    reward: m('reward_seconds') * 1000,
    update: m('update_seconds') * 1000,
    step: m('step_seconds') * 1000,
    sequences: lines[0].sequences,
    samplesPerS: m('samples_per_s'),
  };
}

async function main(): Promise<void> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-bench-train-'));
  const kinds: ('native' | 'linear')[] = ['linear'];
  const nativeAvailable =
    hasAddon('torch') && typeof (torchAddon() as unknown as { policyCreate?: unknown }).policyCreate === 'function';
  if (nativeAvailable) kinds.unshift('native');
  const results: Record<string, Split> = {};
  for (const kind of kinds) {
    const base = path.join(tmp, `${kind}-base`);
    await sftBase(
      resolveConfig({
        overrides: { out: tmp, data: { pairs: 20, valPairs: 0, val: '' }, policy: { kind, init: '', preset: 'tiny' } },
      }),
      { steps: 5, batchSize: 8, lr: kind === 'native' ? 1e-3 : 0.05, nullOption: true, out: base },
    );
    for (const algo of ['crpo', 'grpo'] as const) results[`${kind}/${algo}`] = await measure(tmp, kind, algo, base);
  }
  fs.rmSync(tmp, { recursive: true, force: true });
  const m = machine();
  const rows = Object.entries(results).map(([k, r]) => {
    const [kind, algo] = k.split('/');
    const ref = results[`${kind}/grpo`];
    return [
      kind === 'native' ? 'native tiny' : 'linear (TS)',
      algo === 'crpo' ? 'CRPO (dual branch)' : 'GRPO (reference)',
      r.sequences,
      fmt(r.rollout, 1),
      fmt(r.reward, 2),
      fmt(r.update, 1),
      fmt(r.step, 1),
      fmt(r.samplesPerS, 0),
      fmt(r.step / ref.step, 2),
    ];
  });
  const md = [
    '### Trainer step time split (`bench/train`)',
    '',
    `Machine: ${describeMachine(m)}. One RL step of \`train()\` = B ${B} prompts x G ${G} rollouts per branch (CRPO: original + counterfactual, both trained); median of ${TIMED} steps after ${WARMUP} warm-up steps, read from the run's metrics.jsonl. ${nativeAvailable ? '' : 'The torch addon with the native policy was not available in this run: linear policy only. '}Reference in the same run: single-branch GRPO with the same B and G.`,
    '',
    table(
      [
        'policy',
        'algorithm',
        'trained sequences',
        'rollout ms',
        'reward ms',
        'update ms',
        'step ms',
        'samples/s',
        'x GRPO step',
      ],
      rows,
    ),
    '',
    'rollout = generation on every branch; reward = answer parsing + the fused reward/advantage kernel; update = reference log-probs + the train step (mu = 1). The reward share is what the fused kernel keeps small.',
  ].join('\n');
  writeResults('train', { machine: m, B, G, warmup: WARMUP, timed: TIMED, results }, md);
}

main().catch((err) => {
  process.stderr.write(String(err?.stack ?? err) + '\n');
  process.exit(1);
});
