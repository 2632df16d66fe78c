/**
 * Data parallel on the Qwen policy (lib/policy/qwen.ts over native/torch/qwen, golden Qwen3-VL):
 * real rank processes over Gloo on 127.0.0.1 (test/fixtures/dist-worker.ts). W ranks x Q/W prompts
 * against 1 process x Q prompts (the reference runs inside every rank): the same rollouts (seeded by
 * global position), the same losses and weights after 3 steps, for LoRA (2 and 4 ranks) and for
 * full LM training (2 ranks); a step where only rank 0 has sequences; the gradient all-reduce
 * overlapped with backward against its after-backward twin; ZeRO-1 sharded AdamW state against plain
 * DDP and resumed on 1 process. The 2-rank jobs run one after the other in one world (scenario
 * `multi`). The trainer on 2 ranks with this policy (one replica, rank 0 writes, 1 process resumes)
 * is tested in dist-resume.test.ts.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { distUnavailable, rankResult, rankResults, runMany, runRanks, type RankRun } from '../helpers/dist-ranks';
import { skipIf } from '../helpers/skip';
import { goldenSkipReason } from '../numerics/golden-qwen-helpers';

const reason = distUnavailable() || goldenSkipReason('qwen3_vl');
const d = skipIf(reason).describe;

/** The checks every rank's result of the qwen-dp scenario passes. */
function expectSameAsOneProcess(out: Record<string, any>[], world: number): void {
  const Q = 4,
    G = 2;
  // rows sampled per step: Q/W prompts x G for 3 steps, then all on rank 0 and none elsewhere
  out.forEach((o, r) => {
    const even = (Q / world) * G;
    expect(o.rows).toEqual([even, even, even, r === 0 ? Q * G : 0]);
  });
  for (const o of out) {
    expect(o.sameTokens).toBe(true);
    expect(o.params).toBeGreaterThan(0);
    // The steps really moved the weights (lr 1e-3: ~3e-3 after 3 AdamW steps).
    expect(o.after3.moved).toBeGreaterThan(1e-3);
    // The global-batch loss of each of the 4 steps and the weights after 3 and 4 steps.
    expect(o.lossGap).toBeLessThan(1e-5);
    expect(o.after3.gap).toBeLessThan(1e-5);
    expect(o.after4.gap).toBeLessThan(1e-5);
    expect(o.normGap).toBeLessThan(1e-4);
    expect(o.spread).toBe(0); // every rank holds the same replica, bit for bit
  }
}

/** The 2-rank jobs of this file, run one after the other in one world (two processes started once). */
const TWO_RANK_RUNS: Record<string, Record<string, string>> = {
  lora: {},
  // The slow twin of the overlapped all-reduce: the same 2-rank run with the all-reduce after
  // backward. Micro-batches of 2 sequences (only the last one's backward reduces; earlier ones
  // accumulate into .grad()) and gradient checkpointing (layer weights' gradients come out of the
  // recomputation), 4 KiB buckets so that several start during backward.
  twin: {
    TEST_QWEN_STEP_OPTS: JSON.stringify({ gradBucketMb: 1 / 256 }),
    TEST_QWEN_TWIN: JSON.stringify({ overlapGrads: false }),
    TEST_QWEN_MICRO: '2',
    TEST_QWEN_CKPT: '1',
  },
  // ZeRO-1: every LM weight trained, in float64 (in float32, AdamW lifts the rounding of near-zero
  // gradient entries of full training to ~1.5e-4 of a 3e-3 move, 1.3e-3 of the update's L2 norm,
  // measured; LoRA stays at 1e-7), the AdamW moments sharded over 2 ranks, against plain DDP (its
  // twin, which is also checked against 1 process); its state saved after step 2 (moments gathered
  // on save) for a resume by 1 process.
  zero: {
    TEST_QWEN_TRAIN: 'lm',
    TEST_QWEN_DTYPE: 'float64',
    TEST_QWEN_STEP_OPTS: JSON.stringify({ zero: 1 }),
    TEST_QWEN_TWIN: JSON.stringify({ zero: 0 }),
  },
};

/** The ranks other than 0 wait in a broadcast while rank 0 alone runs the 1-process reference. */
const LONG_WAIT = { TEST_TIMEOUT: '600' };

let tmp = '';
let twoRanks: Promise<{ runs: RankRun[]; results: Record<string, any>[] }> | undefined;

/** The 2-rank world, started by the first test that needs it. */
function twoRankWorld(): Promise<{ runs: RankRun[]; results: Record<string, any>[] }> {
  twoRanks ??= (async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-dist-qwen-'));
    const names = Object.keys(TWO_RANK_RUNS);
    const env = (n: string) =>
      n === 'zero' ? { ...TWO_RANK_RUNS[n], TEST_QWEN_SAVE: path.join(tmp, 'z') } : TWO_RANK_RUNS[n];
    const runs = await runMany(
      2,
      names.map((n) => ({ scenario: 'qwen-dp', env: env(n) })),
      LONG_WAIT,
    );
    const results = runs.map((r) => {
      const rs = rankResults(r);
      return Object.fromEntries(names.map((n, i) => [n, rs[i]]));
    });
    return { runs, results };
  })();
  return twoRanks;
}

afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

d('the Qwen policy on several processes (data parallel over c10d / Gloo)', () => {
  it('the 2-rank jobs exit 0', async () => {
    const { runs } = await twoRankWorld();
    expect(runs.map((r) => [r.code, r.stderr.trim()])).toEqual([
      [0, ''],
      [0, ''],
    ]);
  }, 600000);

  it('2 ranks x 2 prompts end where 1 process x 4 prompts ends (LoRA)', async () => {
    const out = (await twoRankWorld()).results.map((r) => r.lora);
    expect(out[0].mode).toBe('lora');
    expectSameAsOneProcess(out, 2);
  }, 600000);

  it('4 ranks x 1 prompt end where 1 process x 4 prompts ends (LoRA)', async () => {
    const runs = await runRanks('qwen-dp', 4, LONG_WAIT);
    expect(runs.map((r) => r.code)).toEqual([0, 0, 0, 0]);
    expectSameAsOneProcess(runs.map(rankResult), 4);
  }, 300000);

  it('gradients reduced during backward equal the all-reduce after it, bit for bit (LoRA, micro-batches)', async () => {
    const out = (await twoRankWorld()).results.map((r) => r.twin);
    expectSameAsOneProcess(out, 2);
    for (const o of out) {
      expect(o.twin.after3.gap).toBe(0);
      expect(o.twin.after4.gap).toBe(0);
      expect(o.twin.lossGap).toBe(0);
      expect(o.twin.normGap).toBe(0);
      expect(o.overlapRounds).toBe(4); // one reducer round per step on this rank
      const [buckets, early] = o.buckets;
      expect(buckets).toBeGreaterThan(4);
      expect(early).toBeGreaterThan(0); // some buckets start while backward runs (not rank 1's step 4)
    }
  }, 600000);

  it('2 ranks x 2 prompts end where 1 process x 4 prompts ends (full LM weights, float64), with and without zero 1', async () => {
    const out = (await twoRankWorld()).results.map((r) => r.zero);
    expect(out[0].mode).toBe('lm');
    expectSameAsOneProcess(out, 2); // zero 1
    // plain DDP (the twin) against 1 process, as expectSameAsOneProcess checks the first run
    for (const o of out) {
      expect(o.twin.vsRef.lossGap).toBeLessThan(1e-5);
      expect(o.twin.vsRef.after3.gap).toBeLessThan(1e-5);
      expect(o.twin.vsRef.after4.gap).toBeLessThan(1e-5);
      expect(o.twin.vsRef.normGap).toBeLessThan(1e-4);
    }
  }, 600000);

  it('zero 1 (sharded AdamW) ends where plain DDP ends, holds half the moments, resumes on 1 rank', async () => {
    const out = (await twoRankWorld()).results.map((r) => r.zero);
    for (const o of out) {
      expect(o.twin.after3.gap).toBeLessThan(1e-5);
      expect(o.twin.after4.gap).toBeLessThan(1e-5);
      expect(o.twin.lossGap).toBeLessThan(1e-5);
    }
    // Plain DDP: both moments of every weight on every rank (float64); sharded: the two halves.
    const full = out[0].twin.optimizerBytes;
    expect(full).toBeGreaterThan(0);
    expect(out[1].twin.optimizerBytes).toBe(full);
    expect(out[0].optimizerBytes + out[1].optimizerBytes).toBe(full);
    expect(Math.abs(out[0].optimizerBytes - out[1].optimizerBytes)).toBeLessThanOrEqual(2 * 8);

    const [single] = await runRanks('qwen-dp', 1, {
      TEST_QWEN_TRAIN: 'lm',
      TEST_QWEN_DTYPE: 'float64',
      TEST_QWEN_RESUME: path.join(tmp, 'z-rank0'),
    });
    expect([single.code, single.stderr.trim()]).toEqual([0, '']);
    const r = rankResult(single);
    expect(r.skipped).toBe(false);
    expect(r.moved).toBeGreaterThan(1e-4);
    expect(r.gap).toBeLessThan(1e-5);
    expect(r.optimizerBytes).toBe(full);
  }, 600000);
});
