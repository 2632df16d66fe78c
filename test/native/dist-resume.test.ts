/**
 * Resuming a multi-process Qwen run (lib/train's train() with the golden Qwen3-VL, LoRA, over Gloo
 * on 127.0.0.1; ranks are test/fixtures/dist-worker.ts processes): a checkpoint written by 4 ranks
 * is resumed by 1 and by 2 ranks (another split of the same global batch), and a 2-rank run whose
 * rank 1 is SIGKILLed (its whole process group) a step after a checkpoint is restarted and ends
 * bit for bit where the same run without the kill ends.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { distUnavailable, rankResult, runRanks } from '../helpers/dist-ranks';
import { skipIf } from '../helpers/skip';
import { GOLDEN_ROOT, goldenSkipReason } from '../numerics/golden-qwen-helpers';

const reason = distUnavailable() || goldenSkipReason('qwen3_vl');
const d = skipIf(reason).describe;

const QWEN_DROPOUT = () => ({ TEST_POLICY: 'qwen', TEST_INIT: path.join(GOLDEN_ROOT, 'qwen3_vl'), TEST_ADV: 'tokens' });

function metrics(dir: string): Record<string, any>[] {
  return fs
    .readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
}

/** OUT_<r> for every rank: one run folder, as on a shared file system (rank 0 writes, every rank reads checkpoints). */
function outs(dir: string, world: number): Record<string, string> {
  return Object.fromEntries(Array.from({ length: world }, (_, r) => [`OUT_${r}`, dir]));
}

d('resuming a multi-process Qwen run (trainer, golden Qwen3-VL, LoRA)', () => {
  let tmp: string;
  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-dist-resume-'));
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  // LoRA dropout off: its masks are drawn per train-step call, so with dropout a step's update
  // depends on how the batch is split (the SIGKILL test below keeps it on).
  it('a checkpoint saved by 4 ranks is resumed by 1 rank and by 2 ranks, which train step 3 alike', async () => {
    const QWEN = () => ({ ...QWEN_DROPOUT(), TEST_LORA_DROPOUT: '0' });
    const saved = path.join(tmp, 'w4');
    const four = await runRanks('trainer', 4, { ...QWEN(), ...outs(saved, 4), TEST_STEPS: '2' });
    expect(four.map((r) => [r.code, r.stderr.trim()])).toEqual(Array.from({ length: 4 }, () => [0, '']));
    const digests = four.map((r) => rankResult(r).digest);
    expect(new Set(digests).size).toBe(1);

    // The same checkpoint folder resumed at two other world sizes (copies, so both start from step 2).
    const results: Record<number, { digest: string[]; trained: number[][]; m: Record<string, any>[] }> = {};
    for (const world of [1, 2]) {
      const dir = path.join(tmp, `w4-to-${world}`);
      fs.cpSync(saved, dir, { recursive: true });
      const runs = await runRanks('trainer', world, {
        ...QWEN(),
        ...outs(dir, world),
        TEST_STEPS: '3',
        TEST_RESUME: 'auto',
      });
      expect(runs.map((r) => [r.code, r.stderr.trim()])).toEqual(Array.from({ length: world }, () => [0, '']));
      const res = runs.map(rankResult);
      for (const x of res) expect(x.resumedFrom).toMatch(/step-0*2$/);
      const m = metrics(dir);
      expect(m.map((l) => l.step)).toEqual([1, 2, 3]);
      // The sequences trained at step 3 (the only step of the resumed run), in global batch order.
      results[world] = { digest: res.map((x) => x.digest), trained: res.flatMap((x) => x.trained[0]), m };
    }
    // A rank that does not see the run folder (no shared file system) would start at step 0 while
    // rank 0 resumes at step 2: every rank refuses before the first step.
    const apart = path.join(tmp, 'w4-apart');
    fs.cpSync(saved, apart, { recursive: true });
    const mismatch = await runRanks('trainer', 2, {
      ...QWEN(),
      OUT_0: apart,
      OUT_1: path.join(tmp, 'elsewhere'),
      TEST_STEPS: '3',
      TEST_RESUME: 'auto',
    });
    expect(mismatch.map((r) => r.code)).toEqual([1, 1]);
    for (const r of mismatch) expect(r.stderr).toMatch(/ERR_CRPO_DIST_RESUME .*do not all start at the same step/);

    // 2 ranks: one replica; both resumed runs moved away from the 4-rank checkpoint.
    expect(results[2].digest[0]).toBe(results[2].digest[1]);
    expect(results[1].digest[0]).not.toBe(digests[0]);
    // Steps 1-2 are the 4-rank run's lines, kept as they were.
    expect(results[1].m.slice(0, 2)).toEqual(metrics(saved));
    expect(results[2].m.slice(0, 2)).toEqual(metrics(saved));
    // Step 3 samples the same sequences at 1 and 2 ranks (seeds of global positions) and makes the
    // same update: the gradient norm of the global batch agrees to float32 rounding.
    const sorted = (xs: number[][]) => xs.map((t) => t.join(',')).sort();
    expect(sorted(results[2].trained)).toEqual(sorted(results[1].trained));
    expect(results[1].trained.length).toBeGreaterThanOrEqual(8);
    const [g1, g2] = [results[1].m[2].grad_norm, results[2].m[2].grad_norm];
    expect(g1).toBeGreaterThan(0);
    expect(Math.abs(g1 - g2) / g1).toBeLessThan(1e-5);
    expect(Math.abs(results[1].m[2].loss - results[2].m[2].loss)).toBeLessThan(1e-5);
  }, 400000);

  it('2 ranks: SIGKILL of rank 1 after step 3, restart: ends bit for bit as the uninterrupted run', async () => {
    const QWEN = QWEN_DROPOUT; // LoRA dropout 0.05 (the default): seeded per step, so it resumes too
    const steps = { TEST_STEPS: '4', TEST_SAVE_EVERY: '2' };
    const whole = path.join(tmp, 'whole');
    const ref = await runRanks('trainer', 2, { ...QWEN(), ...outs(whole, 2), ...steps });
    expect(ref.map((r) => [r.code, r.stderr.trim()])).toEqual([
      [0, ''],
      [0, ''],
    ]);
    const refDigest = rankResult(ref[0]).digest;

    const cut = path.join(tmp, 'killed');
    // Rank 1 kills its process group after step 3: rank 0 has written the step-2 checkpoint
    // (step 3's all-reduce needed rank 0 past it) and not the step-4 one.
    const killed = await runRanks(
      'trainer',
      2,
      { ...QWEN(), ...outs(cut, 2), ...steps, TEST_KILL_AT: '3:1', TEST_HB_TIMEOUT: '4' },
      undefined,
      { detached: true },
    );
    expect(killed[1].signal).toBe('SIGKILL');
    expect(killed[0].code).toBe(1);
    expect(killed[0].stderr).toMatch(/rank 1 failed/);
    expect(fs.readdirSync(path.join(cut, 'checkpoints')).filter((n) => /^step-\d+$/.test(n))).toEqual([
      expect.stringMatching(/step-0*2$/),
    ]);

    const again = await runRanks('trainer', 2, { ...QWEN(), ...outs(cut, 2), ...steps, TEST_RESUME: 'auto' });
    expect(again.map((r) => [r.code, r.stderr.trim()])).toEqual([
      [0, ''],
      [0, ''],
    ]);
    const res = again.map(rankResult);
    expect(res[0].resumedFrom).toMatch(/step-0*2$/);
    expect(res[0].digest).toBe(res[1].digest);
    expect(res[0].digest).toBe(refDigest);
    // The log of the restarted run is the uninterrupted one, step for step (times aside).
    const strip = (m: Record<string, any>[]) =>
      m.map((l) => Object.fromEntries(Object.entries(l).filter(([k]) => !/seconds|_per_s$/.test(k))));
    expect(strip(metrics(cut))).toEqual(strip(metrics(whole)));
  }, 400000);
});
