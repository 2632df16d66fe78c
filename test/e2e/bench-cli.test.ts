/**
 * `crpo bench rollout | ops` as a user runs them: the phase table's shape (Markdown and --json),
 * the Qwen path on a golden folder, and the refusals, each one line with exit code 1. Timings
 * are not asserted (the machine is shared); only that every phase was measured and adds up.
 */
import { spawnSync } from 'child_process';
import * as path from 'path';
import { hasAddon } from '../../lib/native';
import { GOLDEN_ROOT, goldenSkipReason } from '../numerics/golden-qwen-helpers';
import { pythonTorch } from '../../lib/bench/pytorch-twin';
import { distUnavailable } from '../helpers/dist-ranks';
import { skipIf } from '../helpers/skip';
import { twinUnavailable } from '../../lib/bench/vs-pytorch';

const root = path.resolve(__dirname, '../..');
const register = path.join(root, 'scripts/ts-register.js');

function crpo(args: string[], env: Record<string, string> = {}) {
  // The CLI from its sources (test/fixtures/eval-cli.js): a script, so that --nproc can start it again as ranks.
  return spawnSync(process.execPath, ['-r', register, path.join(root, 'test/fixtures/eval-cli.js'), ...args], {
    cwd: root,
    env: { ...process.env, OMP_NUM_THREADS: '1', ...env },
    encoding: 'utf8',
  });
}

/** A small run; `steps` differs between tests (a flag given twice is not what yargs makes of it). */
const small = (steps = 2) => [
  '--batch',
  '2',
  '--group-size',
  '2',
  '--max-new-tokens',
  '4',
  '--steps',
  String(steps),
  '--warmup',
  '0',
];
const SMALL = small();
const STEP_PHASES = ['decode', 'counterfactual', 'rolloutOrig', 'rolloutCf', 'rewards', 'reference', 'train'];
const torchReason = hasAddon('torch') ? undefined : 'the torch addon is not built (npm run build:torch)';

skipIf(torchReason).describe(`crpo bench rollout`, () => {
  it('--json: every phase of the step measured, step phases sum to the step, tokens and peak RSS', () => {
    const r = crpo(['bench', 'rollout', ...SMALL, '--json']);
    expect(r.stderr).toMatch(/\[bench\] step 2\/2: \d+ ms/);
    expect(r.status).toBe(0);
    const j = JSON.parse(r.stdout);
    const cfg = { policy: 'native', batch: 2, groupSize: 2, cfGroupSize: 0, maxNewTokens: 4, steps: 2 };
    expect(j.config).toMatchObject(cfg);
    const names = j.phases.map((p: { name: string }) => p.name);
    expect(names).toEqual([
      'decode',
      'counterfactual',
      'rolloutOrig',
      'rolloutCf',
      'prefill',
      'decodeTokens',
      'rewards',
      'reference',
      'train',
      'forward',
      'backward',
    ]);
    for (const p of j.phases) {
      expect(p.runs).toBe(2);
      expect(p.minMs).toBeLessThanOrEqual(p.medianMs);
      expect(p.medianMs).toBeLessThanOrEqual(p.maxMs);
    }
    const share = j.phases
      .filter((p: { name: string }) => STEP_PHASES.includes(p.name))
      .reduce((a: number, p: { share: number }) => a + p.share, 0);
    expect(share).toBeGreaterThan(0.8); // medians of per-step sums vs sums of medians: close, not equal
    expect(share).toBeLessThan(1.25);
    expect(j.sequences).toBe(8); // 2 prompts x (G 2 + G' 2)
    expect(j.generatedTokens).toBeGreaterThanOrEqual(8);
    expect(j.generatedTokens).toBeLessThanOrEqual(32);
    // A high-water mark: the step may stay under what loading the addon and the data reached.
    expect(j.baseRssMiB).toBeGreaterThan(0);
    expect(j.peakRssMiB).toBeGreaterThanOrEqual(j.baseRssMiB);
    expect(j.bottleneck).toMatch(/^Bottleneck: .+, \d+% of the step/);
  });

  it('Markdown table on stdout, progress on stderr', () => {
    const r = crpo(['bench', 'rollout', ...small(1)]);
    expect(r.status).toBe(0);
    const lines = r.stdout.split('\n');
    expect(lines[0]).toMatch(/^crpo bench rollout: native tiny preset/);
    expect(lines).toContain('| phase | median ms | min-max ms | share of step | tokens/s |');
    expect(lines.filter((l) => l.startsWith('| ')).length).toBe(2 + 11 + 1); // header, rule, 11 phases, step
    expect(r.stdout).toMatch(/^Bottleneck: /m);
    expect(r.stdout).toMatch(/^Peak RSS: \d+ MiB/m);
    expect(r.stdout).not.toMatch(/\[bench\]/);
    expect(r.stderr).toMatch(/\[bench\] creating the native policy on cpu/);
  });

  it('refusals: one line (and the usage hint for flag errors), exit code 1', () => {
    const cases: [string[], RegExp][] = [
      [
        ['--device', 'cuda:0'],
        /^crpo: --device cuda:0: this libtorch \(.+\) has no CUDA device available .*use --device cpu/,
      ],
      [['--gpus', '8'], /^crpo: --gpus is a flag of `crpo bench plan`, not of `crpo bench rollout`/],
      [['--policy', 'qwen'], /^crpo: --policy qwen needs --model <folder>/],
      [['--batch', 'x'], /^crpo: --batch: expected a number/],
    ];
    for (const [args, message] of cases) {
      const r = crpo(['bench', 'rollout', ...args]);
      expect({ args, status: r.status }).toEqual({ args, status: 1 });
      expect(
        r.stderr
          .trim()
          .split('\n')
          .filter((l) => !/^Run `crpo <command> --help` for usage\.$/.test(l)),
      ).toHaveLength(1);
      expect(r.stderr).toMatch(message);
    }
    const u = crpo(['bench', 'frobnicate']);
    expect(u.status).toBe(1);
    expect(u.stderr).toMatch(/Invalid values:[\s\S]*frobnicate/);
  });
});

const goldenReason = goldenSkipReason('qwen2_5_vl');
skipIf(goldenReason).describe(`crpo bench rollout --policy qwen`, () => {
  it('times a LoRA CRPO step of the golden Qwen2.5-VL folder', () => {
    const model = path.join(GOLDEN_ROOT, 'qwen2_5_vl');
    const r = crpo(['bench', 'rollout', '--policy', 'qwen', '--model', model, ...small(1), '--lora', '4', '--json']);
    expect(r.status).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j.policy.kind).toBe('qwen');
    expect(j.policy.description).toMatch(/^qwen2_5_vl from .*LoRA r = 4/);
    expect(j.policy.trainableParameters).toBeGreaterThan(0);
    expect(j.policy.trainableParameters).toBeLessThan(j.policy.parameters);
    expect(j.phases.map((p: { name: string }) => p.name)).toEqual(expect.arrayContaining(STEP_PHASES));
  });
});

skipIf(torchReason).describe(`crpo bench ops`, () => {
  it('--json: every transform of both addons against memcpy, the CRR kernels checked equal to the reference', () => {
    const r = crpo(['bench', 'ops', '--runs', '5', '--json']);
    expect(r.status).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j.device).toBe('cpu');
    expect(j.ops.map((o: { op: string; addon: string }) => `${o.op}/${o.addon}`)).toEqual(
      ['hflip', 'reverse', 'hflip+reverse', 'swap']
        .flatMap((t) => [`${t}/core`])
        .concat(['hflip', 'reverse', 'hflip+reverse', 'swap'].map((t) => `${t}/torch`)),
    );
    expect(j.crr.results.map((c: { impl: string }) => c.impl)).toEqual([
      'TS reference (lib/reward/reference.ts)',
      'fused kernel (core addon)',
      'fused kernel (torch addon)',
    ]);
    for (const c of j.crr.results) expect(c.maxAbsDiff).toBeLessThanOrEqual(1e-5);
    const cuda = crpo(['bench', 'ops', '--device', 'cuda']);
    expect(cuda.status).toBe(1);
    expect(cuda.stderr).toMatch(/^crpo: --device cuda: this build has no CUDA/);
  });
});

skipIf(torchReason).describe(`crpo bench rollout --vs-pytorch`, () => {
  it('without a Python that imports torch it says so, and the phase table still comes out', () => {
    const r = crpo(['bench', 'rollout', ...small(1), '--vs-pytorch'], {
      CRPO_PYTHON: '/nonexistent/python3',
    });
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^\| phase \|/m);
    expect(r.stdout).toMatch(
      /^--vs-pytorch: not run: \/nonexistent\/python3 cannot import torch and numpy .*-c "import torch"` must work$/m,
    );
  });

  const why = pythonTorch();
  skipIf(why).it(`paired with the PyTorch twin after the equality checks`, () => {
    const r = crpo(['bench', 'rollout', ...small(1), '--vs-pytorch', '--json']);
    expect(r.status).toBe(0);
    const v = JSON.parse(r.stdout).vsPytorch;
    expect(v.available).toBe(true);
    // 2 prompts x 2 branches x G 2 = 8 rows of 4 greedy tokens, all equal
    expect(v.check.greedyTokens).toBe(32);
    expect(v.check.greedyTokensEqual).toBe(32);
    expect(v.check.lossRel).toBeLessThanOrEqual(1e-4);
    for (const t of [v.generate, v.trainStep]) {
      expect(t.runs).toBe(5);
      expect(t.nativeMs).toBeGreaterThan(0);
      expect(t.pytorchMs).toBeGreaterThan(0);
    }
  });

  it('refused for the qwen policy with the reason', () => {
    expect(twinUnavailable({ policy: 'qwen', device: 'cpu' })).toBe(
      'the PyTorch twin is of the native tiny policy; --vs-pytorch compares only with --policy native',
    );
  });
});

const distReason = distUnavailable();
const nprocTitle = `crpo bench rollout --nproc 2`;
skipIf(distReason).describe(nprocTitle, () => {
  it('two ranks: the batch split, the gradient all-reduce timed, the slowest rank per phase', () => {
    const args = ['--batch', '4', '--group-size', '2', '--max-new-tokens', '4', '--steps', '1', '--warmup', '0'];
    const r = crpo(['bench', 'rollout', ...args, '--nproc', '2', '--json']);
    expect(r.status).toBe(0);
    const j = JSON.parse(r.stdout); // rank 0 prints; rank 1 one line on stderr
    expect(r.stderr).toMatch(/^rank 1\/2: step median \d+\.\d ms, peak RSS \d+ MiB$/m);
    expect(j.world).toBe(2);
    expect(j.prompts).toBe(2);
    const ar = j.phases.find((p: { name: string }) => p.name === 'allReduce');
    expect(ar.runs).toBe(1);
    for (const p of j.phases) expect(p.slowestRankMs).toBeGreaterThanOrEqual(p.medianMs);
  });
});

describe('crpo bench plan', () => {
  it('prints the terms, the peak and the verdict; --json has the same numbers', () => {
    const args = ['bench', 'plan', '--model', 'Qwen3-VL-8B', '--gpus', '8', '--gpu-mem', '80', '--batch', '2'];
    const r = crpo(args);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^crpo bench plan: Qwen3-VL-8B \(qwen\), 8\.77 B parameters/);
    expect(r.stdout).toMatch(/^\| KV cache of the rollouts \(one prompt group of max\(G, G'\) = 8 sequences/m);
    expect(r.stdout).toMatch(/^Verdict: fits in 80 GB/m);
    const j = JSON.parse(crpo([...args, '--json']).stdout);
    expect(j.fits).toBe(true);
    expect(r.stdout).toContain(`**${(j.peakBytes / 2 ** 30).toFixed(2)}**`);
    const bad = crpo(['bench', 'plan', '--model', 'Qwen3-VL-8B', '--steps', '3']);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/^crpo: --steps is a flag of `crpo bench rollout`, not of `crpo bench plan`$/m);
  });
});
