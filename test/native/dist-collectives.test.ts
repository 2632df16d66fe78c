/**
 * c10d process groups on CPU with Gloo over loopback: two real child processes (one per rank) run
 * test/fixtures/dist-worker.ts; all-reduce (per-tensor, small buckets, one bucket), mean/max/min,
 * broadcast and the trainer helpers are checked against values computed here in plain TS; then data
 * parallel training of the native and linear policies and the trainer on 2 ranks. Every 2-rank job
 * of this file runs in one world (two processes started once, scenario `multi`), then the 1-process
 * runs they are compared with or resumed by in another; each test checks its part.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { distUnavailable, rankResults, runMany, type RankRun } from '../helpers/dist-ranks';
import { overridesFromArgv } from '../../lib/cli/commands/train';
import { TRAIN_DEFAULTS, resolveConfig } from '../../lib/train/config';
import { train } from '../../lib/train/trainer';
import { skipIf } from '../helpers/skip';
import { nativePolicyMissing } from '../helpers/native-policy';
import { seededFloats } from '../helpers/random';

// Skipped, with the reason in the test name, when the torch addon lacks process groups.
const skipReason = distUnavailable();
const d = skipIf(skipReason).describe;
// The native-policy scenarios also need the policy in the addon.
const withPolicy = skipIf(skipReason || nativePolicyMissing()).describe;

const seeded = seededFloats;
const policyBuilt = !skipReason && !nativePolicyMissing();

interface Worlds {
  tmp: string;
  /** The 2-rank world: per rank, the result of each run by name. */
  two: RankRun[];
  twoResults: Record<string, any>[];
  /** The 1-process world (run after the 2-rank one: it resumes a 2-rank run). */
  one: RankRun;
  oneResults: Record<string, any>;
}
let worlds: Promise<Worlds> | undefined;

/** Starts both worlds once (the first test that needs them); later calls share the same promise. */
function sharedWorlds(): Promise<Worlds> {
  worlds ??= (async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-dist-collectives-'));
    const at = (...p: string[]) => path.join(tmp, ...p);
    const twoRuns: [string, { scenario: string; env?: Record<string, string> }][] = [
      ['collectives', { scenario: 'collectives' }],
      ['linear-dp', { scenario: 'linear-dp' }],
      [
        'trainer-linear',
        {
          scenario: 'trainer',
          env: { OUT_0: at('lin0'), OUT_1: at('lin1'), TEST_POLICY: 'linear', TEST_STEPS: '3' },
        },
      ],
    ];
    const oneRuns: [string, { scenario: string; env?: Record<string, string> }][] = [];
    if (policyBuilt) {
      twoRuns.push(
        ['policy-dp', { scenario: 'policy-dp' }],
        ['sft-dp', { scenario: 'sft-dp' }],
        ['native-uneven', { scenario: 'native-uneven' }],
        ['trainer-native', { scenario: 'trainer', env: { OUT_0: at('rank0'), OUT_1: at('rank1') } }],
        [
          'trainer-uneven',
          {
            scenario: 'trainer',
            env: { TEST_BATCH: '3', TEST_ADV: 'tokens', OUT_0: at('two'), OUT_1: at('two-rank1') },
          },
        ],
      );
      oneRuns.push(
        // the 2-rank native run resumed by one process (a copy: the test checks the original too)
        [
          'trainer-resume',
          { scenario: 'trainer', env: { OUT_0: at('resumed'), TEST_STEPS: '3', TEST_RESUME: 'auto' } },
        ],
        ['trainer-uneven', { scenario: 'trainer', env: { TEST_BATCH: '3', TEST_ADV: 'tokens', OUT_0: at('one') } }],
      );
    }
    const byName = (names: string[], results: any[]) => Object.fromEntries(names.map((n, i) => [n, results[i]]));
    const two = await runMany(
      2,
      twoRuns.map(([, r]) => r),
    );
    const twoResults = two.map((r) =>
      byName(
        twoRuns.map(([n]) => n),
        rankResults(r),
      ),
    );
    let one: RankRun = { rank: 0, code: 0, signal: null, stdout: '', stderr: '', ms: 0 };
    let oneResults: Record<string, any> = {};
    if (oneRuns.length) {
      fs.cpSync(at('rank0'), at('resumed'), { recursive: true });
      [one] = await runMany(
        1,
        oneRuns.map(([, r]) => r),
      );
      oneResults = byName(
        oneRuns.map(([n]) => n),
        rankResults(one),
      );
    }
    return { tmp, two, twoResults, one, oneResults };
  })();
  return worlds;
}

afterAll(async () => {
  if (worlds)
    fs.rmSync((await worlds.catch(() => ({ tmp: '' }))).tmp || '/nonexistent', { recursive: true, force: true });
});

d('c10d collectives over Gloo (2 ranks on 127.0.0.1)', () => {
  let runs: RankRun[];
  let results: Record<string, any>[];

  beforeAll(async () => {
    const w = await sharedWorlds();
    runs = w.two;
    results = w.twoResults.map((r) => r.collectives);
  }, 600000);

  it('every rank exits 0', () => {
    expect(runs.map((r) => [r.code, r.stderr.trim()])).toEqual([
      [0, ''],
      [0, ''],
    ]);
  });

  it('the single process exits 0', async () => {
    const { one } = await sharedWorlds();
    expect([one.code, one.stderr.trim()]).toEqual([0, '']);
  });

  it('all-reduce sum equals the fp32 sum computed in TS, for every bucketing', () => {
    const sizes = [1, 7, 1000, 65536, 3];
    const want = sizes.map((n, i) => {
      const a = seeded(n, i);
      const b = seeded(n, 1000 + i);
      const s = a.map((v, k) => Math.fround(v + b[k]));
      return Array.from(s.subarray(0, 5)).concat([s.reduce((acc, v) => acc + v, 0)]);
    });
    for (const r of results) {
      for (const label of ['perTensor', 'tiny', 'default']) {
        const got = r[`sum_${label}`] as number[][];
        got.forEach((row, i) => {
          // the first elements are exact (one fp32 add); the row total is accumulated in fp32 by JS
          expect(row.slice(0, -1)).toEqual(want[i].slice(0, -1));
          expect(Math.abs(row[row.length - 1] - want[i][want[i].length - 1])).toBeLessThan(1e-3);
        });
      }
    }
  });

  it('mean, max, min and broadcast', () => {
    const a = seeded(100, 7);
    const b = seeded(100, 8);
    for (const r of results) {
      expect(r.mean[0]).toEqual(Array.from(a.subarray(0, 4)).map((v, k) => Math.fround(Math.fround(v + b[k]) / 2)));
      expect(r.mean[1][0]).toBeCloseTo(1.0, 12);
      expect(r.mean[1][1]).toBeCloseTo(1.5e-12, 20);
      expect(r.max).toEqual([1, 0, 3]);
      expect(r.min).toEqual([0, -1, 3]);
      expect(r.broadcast).toEqual([
        [1, 1, 1, 1, 1],
        [-1, -1, -1],
      ]);
    }
  });

  it('gradient buckets all-reduced during backward equal one all-reduce after it, exactly', () => {
    for (const r of results) {
      // 1 KiB buckets: 5 buckets, 4 start while backward runs (the 5th holds a parameter without gradient)
      expect(r.reducer[0]).toEqual({ maxDiff: 0, startedDuringBackward: 4, buckets: 5 });
      // one 25 MiB bucket: nothing can start before the last gradient
      expect(r.reducer[1]).toEqual({ maxDiff: 0, startedDuringBackward: 0, buckets: 1 });
    }
  });

  it('trainer helpers: weighted metric means, sums, max; rank 0 weights everywhere; shards', () => {
    for (const r of results) {
      // acc: (0.5*1 + 1*2) / 3; tokens: 10 + 20; peak: max(0, 3)
      expect(r.metrics.acc).toBeCloseTo(2.5 / 3, 12);
      expect(r.metrics.tokens).toBe(30);
      expect(r.metrics.peak).toBe(3);
      expect(r.params.a).toEqual(Array.from(seeded(3, 60)));
      expect(r.params.b).toEqual(Array.from(seeded(10, 50).subarray(0, 3)));
      expect(r.spread).toBe(0);
    }
    expect(results[0].shard).toEqual(['p0', 'p1', 'p2']);
    expect(results[1].shard).toEqual(['p3', 'p4', 'p5']);
  });
});

withPolicy('data-parallel training with the native policy (2 ranks x b prompts vs 1 process x 2b)', () => {
  it('ends with the same weights within 1e-5 after 3 AdamW steps; overlapped = after-backward, bitwise', async () => {
    const out = (await sharedWorlds()).twoResults.map((r) => r['policy-dp']);
    expect(out[0].skipped).toBeUndefined(); // the parent checked that the policy is built
    for (const o of out) {
      expect(o.moved).toBeGreaterThan(1e-4); // the steps really changed the weights
      expect(o.gap).toBeLessThan(1e-5);
      expect(o.spread).toBe(0);
      // Gradients all-reduced in 8 KiB buckets during backward (one GradReducer round per step)
      // against the slow twin, one all-reduce after backward: the same bits (2 ranks: a + b = b + a).
      expect(o.overlapRounds).toBe(3);
      expect(o.twinGap).toBe(0);
      const [buckets, early] = o.buckets;
      expect(buckets).toBeGreaterThan(3 * 10);
      expect(early).toBeGreaterThan(buckets / 2); // most buckets start while backward runs
    }
  }, 600000);
});

withPolicy("crpo sft on 2 ranks (lib/train/sft.ts: each rank its share of every step's clips)", () => {
  it('takes the step of the whole batch: float64 weights equal to the last float32 place after 3 steps', async () => {
    const out = (await sharedWorlds()).twoResults.map((r) => r['sft-dp']);
    for (const o of out) {
      // 7 clips split 3 + 4, with attribute and reading questions, the prompt language-model
      // loss and the vision attribute loss: the target-token weighting and the rescaling of the
      // prompt-token and labelled-prompt means together give the one-process step. Weights are read back as float32 (|w| < 2: 1 ulp <= 1.2e-7).
      expect(o.stepMoved).toBeGreaterThan(0.1);
      expect(o.stepGap).toBeLessThan(2.5e-7);
      expect(o.tensors).toBeGreaterThan(50);
    }
    // The command's loop: the same number of steps and clips; float32 weights within AdamW's
    // amplification of rounding (measured 2-6e-5 after 3 steps at lr 1e-3, where they moved ~3e-3).
    const [main, other] = out;
    expect(main.runSteps).toEqual([3, 3]);
    expect(main.runTrainItems).toEqual([21, 21]);
    expect(main.runGap).toBeLessThan(2e-4);
    expect(main.reportWritten).toBe(true);
    expect(other.report).toBeNull(); // rank 1 reports nothing and writes nothing
    expect(other.wrote).toBe(false);
  }, 600000);
});

d('data parallel on the linear policy (lib/policy/linear.ts)', () => {
  it('2 ranks x 3 prompts with the float64 gradient all-reduce end where 1 process x 6 prompts ends', async () => {
    const out = (await sharedWorlds()).twoResults.map((r) => r['linear-dp']);
    for (const o of out) {
      expect(o.moved).toBeGreaterThan(1e-3); // 4 AdamW steps really moved the weights
      // float64: only the summation order of the gradient differs (mean of rank means vs one
      // mean); AdamW's division by sqrt(v) lifts that rounding to ~3e-10 on the weights here (measured).
      expect(o.gap).toBeLessThan(1e-8);
      expect(o.normGap).toBeLessThan(1e-8); // ~1e-9 measured (norms are O(1))
      expect(o.spread).toBe(0);
    }
  }, 600000);
});

d('the trainer on 2 ranks with the linear policy', () => {
  it('keeps both replicas identical (bitwise), trains, writes only on rank 0', async () => {
    const { tmp, twoResults } = await sharedWorlds();
    const out = twoResults.map((r) => r['trainer-linear']);
    expect(out[0].digest).toBe(out[1].digest);
    const metrics = fs
      .readFileSync(path.join(tmp, 'lin0', 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(metrics).toHaveLength(3);
    for (const m of metrics) expect(m.grad_norm).toBeGreaterThan(0);
    expect(fs.existsSync(path.join(tmp, 'lin1', 'metrics.jsonl'))).toBe(false);
  }, 600000);
});

withPolicy('the trainer on 2 ranks (lib/train train() with the native policy)', () => {
  it('keeps both replicas identical, trains, writes only on rank 0; one process resumes the run', async () => {
    const { tmp, twoResults, oneResults } = await sharedWorlds();
    const out = twoResults.map((r) => r['trainer-native']);
    expect(out[0].digest).toBe(out[1].digest);
    const metrics = fs
      .readFileSync(path.join(tmp, 'rank0', 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(metrics).toHaveLength(2);
    for (const m of metrics) expect(m.grad_norm).toBeGreaterThan(0);
    expect(fs.existsSync(path.join(tmp, 'rank0', 'checkpoints'))).toBe(true);
    expect(fs.existsSync(path.join(tmp, 'rank1', 'metrics.jsonl'))).toBe(false);
    expect(fs.existsSync(path.join(tmp, 'rank1', 'checkpoints'))).toBe(false);

    // The same run resumed by one process (another world size, same global batch; a copy of the
    // run folder): it continues from the 2-rank checkpoint at step 2 and trains step 3.
    const resumed = oneResults['trainer-resume'];
    expect(resumed.resumedFrom).toMatch(/step-0*2$/);
    expect(resumed.digest).not.toBe(out[0].digest);
    const after = fs
      .readFileSync(path.join(tmp, 'resumed', 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(after.map((m) => m.step)).toEqual([1, 2, 3]);
  }, 600000);
});

withPolicy(
  'the native rollout policy on uneven shards (lib/policy/native.ts, per-prompt seeds, weighted gradient average)',
  () => {
    it('2 ranks sample the rollouts of 1 process and end at its weights: 3 + 2 prompts, then 5 + 0', async () => {
      const out = (await sharedWorlds()).twoResults.map((r) => r['native-uneven']);
      expect(out[0].skipped).toBeUndefined(); // the parent checked that the policy is built
      for (const agg of ['seq-mean-token-mean', 'token-mean']) {
        // rank 0 holds 3 then 5 prompts, rank 1 holds 2 then none: 3 samples each
        expect(out.map((o) => o[agg].rows)).toEqual([24, 6]);
        for (const o of out) {
          const r = o[agg];
          expect(r.sameTokens).toBe(true);
          // Same tokens; log-probs from differently padded batches and, at step 2, from weights that
          // differ by the rounding of step 1 (~4e-5 measured).
          expect(r.lpGap).toBeLessThan(2e-4);
          expect(r.moved).toBeGreaterThan(1e-3); // the two AdamW steps (lr 1e-3) really moved the weights
          // The averaged gradient: its norm equals the 1-process one to float32 rounding (~2e-7 and
          // ~2e-6 relative measured); a 1:1 average of the 3- and 2-prompt ranks would be far off.
          expect(r.normGap).toBeLessThan(1e-5);
          // Weights: AdamW's first steps move each weight by ~lr * sign(gradient), so an entry whose
          // gradient is near zero takes the sign of its rounding noise: up to ~6e-5 = 0.06 lr (measured),
          // 2-3e-4 of the update's L2 norm.
          expect(r.gap).toBeLessThan(2e-4);
          expect(r.updateGap).toBeLessThan(2e-3);
          expect(r.spread).toBe(0);
        }
      }
    }, 600000);
  },
);

withPolicy('the trainer with the native policy: 2 ranks on an uneven batch (2 + 1 prompts) vs 1 process', () => {
  it('trains on the same rollouts and ends at the same weights (up to rounding amplified by AdamW)', async () => {
    const { parseSafetensors } = await import('../../lib/model/safetensors');
    const w = await sharedWorlds();
    const tmp = w.tmp;
    const two = w.twoResults.map((r) => r['trainer-uneven']);
    const one = w.oneResults['trainer-uneven'];
    expect(two[0].digest).toBe(two[1].digest);
    // The sequences trained on at each step: rank 0's then rank 1's are the single process's, token for token.
    expect(one.trained).toHaveLength(2);
    one.trained.forEach((seqs: number[][], step: number) => {
      expect(two[0].trained[step].length).toBeGreaterThan(two[1].trained[step].length); // 2 prompts vs 1
      expect([...two[0].trained[step], ...two[1].trained[step]]).toEqual(seqs);
    });
    const weightsOf = (dir: string, which: 'policy' | 'reference') => {
      const file = path.join(dir, 'checkpoints', 'step-000002', which, 'model.safetensors');
      return parseSafetensors(fs.readFileSync(file), file).tensors;
    };
    const a = weightsOf(path.join(tmp, 'two'), 'policy'),
      b = weightsOf(path.join(tmp, 'one'), 'policy');
    const init = weightsOf(path.join(tmp, 'one'), 'reference'); // the reference is the initial policy
    expect([...a.keys()]).toEqual([...b.keys()]);
    let gap = 0,
      moved = 0,
      diff2 = 0,
      upd2 = 0;
    for (const [name, t] of a) {
      const u = b.get(name)!.data as Float32Array,
        w0 = init.get(name)!.data as Float32Array;
      (t.data as Float32Array).forEach((v, k) => {
        gap = Math.max(gap, Math.abs(v - u[k]));
        moved = Math.max(moved, Math.abs(u[k] - w0[k]));
        diff2 += (v - u[k]) ** 2;
        upd2 += (u[k] - w0[k]) ** 2;
      });
    }
    const metrics = (dir: string) =>
      fs
        .readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
    const [m2, m1] = [metrics(path.join(tmp, 'two')), metrics(path.join(tmp, 'one'))];
    expect(moved).toBeGreaterThan(1e-2);
    // As above, entries with a near-zero gradient take the sign of their rounding noise in AdamW:
    // max gap 2.7e-3 against a largest move of 4e-2, 2.7e-4 of the update's L2 norm (measured).
    expect(gap).toBeLessThan(0.15 * moved);
    expect(Math.sqrt(diff2 / upd2)).toBeLessThan(2e-3);
    expect(m2).toHaveLength(2);
    m1.forEach((m, i) => {
      // step 1: the same weights, the gradient averaged over 2 + 1 prompts (2.7e-7 relative
      // measured); step 2: after one step of rounding differences (7e-6).
      expect(Math.abs(m2[i].grad_norm - m.grad_norm) / m.grad_norm).toBeLessThan(i === 0 ? 1e-5 : 1e-4);
      expect(Math.abs(m2[i].loss - m.loss)).toBeLessThan(1e-5); // the ranks' losses, weighted by prompts
    });
  }, 600000);
});

describe('zero 1 is refused where it would change nothing (lib/train/trainer.ts requireZeroSupport)', () => {
  const quiet = { log: () => undefined };
  const cfg = (kind: string, out: string, zero: 0 | 1 = 1) =>
    resolveConfig({
      overrides: {
        policy: { kind, init: '', preset: 'tiny' },
        data: { pairs: 4, valPairs: 0, val: '' },
        steps: 1,
        batchSize: 2,
        groupSize: 2,
        progress: false,
        plots: false,
        resume: 'never',
        zero,
        out,
      } as never,
    });
  // A 2-rank context whose all-reduce doubles (as if the other rank held the same values).
  const twoRanks = { rank: 0, worldSize: 2, allReduceSum: async (v: number[]) => v.map((x) => 2 * x) };
  let tmp: string;
  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-zero-refusal-'));
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('on one process: nothing to shard', async () => {
    const out = path.join(tmp, 'one');
    await expect(train(cfg('linear', out), quiet)).rejects.toMatchObject({
      code: 'ERR_CRPO_CONFIG',
      message:
        '--zero 1 (zero): shards the AdamW state over the processes, but this run has 1 process, so there is ' +
        'nothing to shard; run on several processes (--nproc N, torchrun, srun) or use --zero 0',
    });
    expect(fs.existsSync(path.join(out, 'config.yaml'))).toBe(false); // refused before any work
  });

  it('on 2 ranks, for the linear kind (no sharded optimizer), before any step', async () => {
    const out = path.join(tmp, 'linear');
    await expect(train(cfg('linear', out), { ...quiet, dist: twoRanks })).rejects.toMatchObject({
      code: 'ERR_CRPO_CONFIG',
      message:
        "--zero 1 (zero): policy kind 'linear' has no sharded optimizer state (only 'qwen' has), " +
        'so every rank would keep the whole AdamW state anyway; use --zero 0',
    });
    expect(fs.existsSync(path.join(out, 'metrics.jsonl'))).toBe(false);
  });

  skipIf(policyBuilt ? null : skipReason || nativePolicyMissing()).it('on 2 ranks, for the native kind', async () => {
    const out = path.join(tmp, 'native');
    await expect(train(cfg('native', out), { ...quiet, dist: twoRanks })).rejects.toMatchObject({
      code: 'ERR_CRPO_CONFIG',
      message: expect.stringContaining("policy kind 'native' has no sharded optimizer state"),
    });
  });

  it('zero 0 trains the same kind on one process; the config accepts only 0 and 1; the CLI flags map onto the fields', async () => {
    expect((await train(cfg('linear', path.join(tmp, 'plain'), 0), quiet)).steps).toBe(1);
    expect(() => resolveConfig({ overrides: { zero: 2 } as never })).toThrow(
      'config: zero: expected one of 0, 1 but received 2',
    );
    expect(() => resolveConfig({ overrides: { policy: { finetune: 'half' } } as never })).toThrow(
      'config: policy.finetune: expected one of "lora", "full" but received "half"',
    );
    const o = overridesFromArgv({ zero: 1, finetune: 'full', policy: 'qwen' });
    expect(o).toEqual({ zero: 1, policy: { kind: 'qwen', finetune: 'full' } });
    expect(resolveConfig({ overrides: o, checkData: false })).toMatchObject({
      zero: 1,
      policy: { kind: 'qwen', finetune: 'full' },
    });
    expect(TRAIN_DEFAULTS.zero).toBe(0);
    expect(TRAIN_DEFAULTS.policy.finetune).toBe('lora');
  });
});
