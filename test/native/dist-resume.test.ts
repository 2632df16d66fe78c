/**
 * Resuming a multi-process Qwen run (lib/train's train() with the golden Qwen3-VL over Gloo on
 * 127.0.0.1; ranks are test/fixtures/dist-worker.ts processes): a checkpoint written by 4 ranks
 * (full fine-tuning, AdamW state sharded with zero 1) is resumed by 1 and by 2 ranks without zero
 * (another split of the same global batch); LoRA with zero 1 on 2 ranks trains as 1 rank without
 * it, rank 0 alone writes, and its checkpoint resumes on 1 rank; and a 2-rank run whose rank 1 is
 * SIGKILLed (its whole process group) a step after a checkpoint is restarted and ends bit for bit
 * where the same run without the kill ends.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { distUnavailable, rankResult, runRanks } from '../helpers/dist-ranks';
import { skipIf } from '../helpers/skip';
import { readSafetensors, writeSafetensors } from '../../lib/hf/safetensors';
import { QwenPolicy } from '../../lib/policy/qwen';
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

/** The checkpoint folder of a step. */
function checkpoint(dir: string, step: number): string {
  return path.join(dir, 'checkpoints', `step-${String(step).padStart(6, '0')}`);
}

/** The LoRA adapters in a step's checkpoint, by PEFT key. */
function adapters(dir: string, step: number): Map<string, Float32Array> {
  const t = readSafetensors(path.join(checkpoint(dir, step), 'adapter_model.safetensors'));
  return new Map([...t].map(([k, v]) => [k, Float32Array.from(v.data as Float32Array)]));
}

/** Largest absolute difference between two sets of tensors with the same keys. */
function maxGap(a: Map<string, Float32Array>, b: Map<string, Float32Array>): number {
  expect([...a.keys()].sort()).toEqual([...b.keys()].sort());
  let gap = 0;
  for (const [k, v] of a) {
    const w = b.get(k)!;
    for (let i = 0; i < v.length; i++) gap = Math.max(gap, Math.abs(v[i] - w[i]));
  }
  return gap;
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

  // Full fine-tuning (every LM weight, a frozen reference copy); the 4 ranks shard the AdamW state
  // (zero 1, saved collectively), the resumed runs do not: the checkpoint is the same either way.
  it('a checkpoint saved by 4 ranks (full fine-tuning, zero 1) is resumed by 1 rank and by 2 ranks without zero, which train step 3 alike', async () => {
    const QWEN = () => ({ ...QWEN_DROPOUT(), TEST_FINETUNE: 'full' });
    const saved = path.join(tmp, 'w4');
    const four = await runRanks('trainer', 4, { ...QWEN(), ...outs(saved, 4), TEST_STEPS: '2', TEST_ZERO: '1' });
    expect(four.map((r) => [r.code, r.stderr.trim()])).toEqual(Array.from({ length: 4 }, () => [0, '']));
    const digests = four.map((r) => rankResult(r).digest);
    expect(new Set(digests).size).toBe(1);

    // The same checkpoint folder resumed at two other world sizes (copies, so both start from step 2),
    // and the refusal below: three independent jobs, started together.
    const results: Record<number, { digest: string[]; trained: number[][]; m: Record<string, any>[] }> = {};
    const dirOf = (world: number) => path.join(tmp, `w4-to-${world}`);
    const apart = path.join(tmp, 'w4-apart');
    for (const dir of [dirOf(1), dirOf(2), apart]) fs.cpSync(saved, dir, { recursive: true });
    const resume = (world: number) =>
      runRanks('trainer', world, { ...QWEN(), ...outs(dirOf(world), world), TEST_STEPS: '3', TEST_RESUME: 'auto' });
    // A rank that does not see the run folder (no shared file system) would start at step 0 while
    // rank 0 resumes at step 2: every rank refuses before the first step.
    const [resumed1, resumed2, mismatch] = await Promise.all([
      resume(1),
      resume(2),
      runRanks('trainer', 2, {
        ...QWEN(),
        OUT_0: apart,
        OUT_1: path.join(tmp, 'elsewhere'),
        TEST_STEPS: '3',
        TEST_RESUME: 'auto',
      }),
    ]);
    for (const [world, runs] of [
      [1, resumed1],
      [2, resumed2],
    ] as const) {
      const dir = dirOf(world);
      expect(runs.map((r) => [r.code, r.stderr.trim()])).toEqual(Array.from({ length: world }, () => [0, '']));
      const res = runs.map(rankResult);
      for (const x of res) expect(x.resumedFrom).toMatch(/step-0*2$/);
      const m = metrics(dir);
      expect(m.map((l) => l.step)).toEqual([1, 2, 3]);
      // The sequences trained at step 3 (the only step of the resumed run), in global batch order.
      results[world] = { digest: res.map((x) => x.digest), trained: res.flatMap((x) => x.trained[0]), m };
    }
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

  // ZeRO-1 through the trainer (config zero: 1; LoRA, dropout off): 2 sharded ranks against 1 rank
  // without it, and the checkpoint the 2 sharded ranks save collectively, resumed by 1 rank.
  it('zero 1 on 2 ranks trains as 1 rank without it; its checkpoint of step 2 resumes on 1 rank and on 2 ranks without zero', async () => {
    // lr 1e-3 (not the trainer's 0.02): AdamW's first steps move an entry by ~lr times the sign of its
    // gradient, so near-zero gradient entries lift float32 rounding to ~lr (8.6e-5 measured at 0.02)
    const QWEN = () => ({
      ...QWEN_DROPOUT(),
      TEST_LORA_DROPOUT: '0',
      TEST_STEPS: '3',
      TEST_SAVE_EVERY: '2',
      TEST_LR: '1e-3',
    });
    const z2 = path.join(tmp, 'zero2');
    const one = path.join(tmp, 'one');
    const [sharded, [single]] = await Promise.all([
      // rank 1 gets a folder of its own, which must stay empty: rank 0 alone writes
      runRanks('trainer', 2, { ...QWEN(), OUT_0: z2, OUT_1: `${z2}-rank1`, TEST_ZERO: '1' }),
      runRanks('trainer', 1, { ...QWEN(), ...outs(one, 1) }),
    ]);
    expect([...sharded, single].map((r) => [r.code, r.stderr.trim()])).toEqual([
      [0, ''],
      [0, ''],
      [0, ''],
    ]);
    expect(rankResult(sharded[0]).digest).toBe(rankResult(sharded[1]).digest); // one replica
    expect(fs.existsSync(path.join(`${z2}-rank1`, 'metrics.jsonl'))).toBe(false);
    expect(fs.existsSync(path.join(`${z2}-rank1`, 'checkpoints'))).toBe(false);
    // The same sequences at every step, the same losses and gradient norms, the same adapters after 3 steps.
    expect(rankResult(sharded[0]).trained.length).toBe(3);
    const sorted = (xs: number[][]) => xs.map((t) => t.join(',')).sort();
    const z2Trained = sharded.map(rankResult);
    for (let s = 0; s < 3; s++)
      expect(sorted([...z2Trained[0].trained[s], ...z2Trained[1].trained[s]])).toEqual(
        sorted(rankResult(single).trained[s]),
      );
    const [mz, m1] = [metrics(z2), metrics(one)];
    expect(mz.map((l) => l.step)).toEqual([1, 2, 3]);
    for (let s = 0; s < 3; s++) {
      expect(Math.abs(mz[s].loss - m1[s].loss)).toBeLessThan(1e-5);
      expect(m1[s].grad_norm).toBeGreaterThan(0);
      expect(Math.abs(mz[s].grad_norm - m1[s].grad_norm) / m1[s].grad_norm).toBeLessThan(1e-5);
    }
    const wz = adapters(z2, 3);
    const w1 = adapters(one, 3);
    process.stdout.write(
      `zero 1 trainer, 2 ranks vs 1 rank: adapters after 2 / 3 steps ${maxGap(adapters(z2, 2), adapters(one, 2))} / ` +
        `${maxGap(wz, w1)} (step 3 moved them by ${maxGap(wz, adapters(z2, 2))}); losses ` +
        `${mz.map((l, i) => Math.abs(l.loss - m1[i].loss)).join(' ')}\n`,
    );
    expect(maxGap(wz, adapters(z2, 2))).toBeGreaterThan(1e-4); // step 3 moved the adapters
    expect(maxGap(wz, w1)).toBeLessThan(1e-5);
    expect(maxGap(adapters(z2, 2), adapters(one, 2))).toBeLessThan(1e-5);

    // 1 rank without zero resumes the sharded run's step-2 checkpoint (the moments gathered on
    // save) and trains step 3 as the 2 sharded ranks did (the reduction order of the gradient differs).
    // The same checkpoint resumed by 1 rank and by 2 ranks, both without zero (copies, started together).
    const dirOf = (world: number) => path.join(tmp, `zero2-to-${world}`);
    for (const world of [1, 2]) {
      fs.cpSync(z2, dirOf(world), { recursive: true });
      fs.rmSync(checkpoint(dirOf(world), 3), { recursive: true });
    }
    const resume = (world: number) =>
      runRanks('trainer', world, { ...QWEN(), ...outs(dirOf(world), world), TEST_RESUME: 'auto' });
    const [r1, r2] = await Promise.all([resume(1), resume(2)]);
    expect([...r1, ...r2].map((r) => [r.code, r.stderr.trim()])).toEqual([
      [0, ''],
      [0, ''],
      [0, ''],
    ]);
    const gaps: Record<number, { loss: number; norm: number; adapters: number }> = {};
    for (const [world, runs] of [
      [1, r1],
      [2, r2],
    ] as const) {
      for (const r of runs) expect(rankResult(r).resumedFrom).toMatch(/step-0*2$/);
      const mr = metrics(dirOf(world));
      expect(mr.slice(0, 2)).toEqual(mz.slice(0, 2)); // steps 1-2 kept as written
      gaps[world] = {
        loss: Math.abs(mr[2].loss - mz[2].loss),
        norm: Math.abs(mr[2].grad_norm - mz[2].grad_norm) / mz[2].grad_norm,
        adapters: maxGap(adapters(dirOf(world), 3), wz),
      };
    }
    expect(rankResult(r2[0]).digest).toBe(rankResult(r2[1]).digest);
    process.stdout.write(
      `zero 1 trainer: 2 ranks vs 1 rank after 3 steps: adapters ${maxGap(wz, w1)}; step 3 resumed from the ` +
        `sharded step-2 checkpoint vs the sharded run's own: ${JSON.stringify(gaps)}\n`,
    );
    // 1 rank: the whole batch's gradient in one backward, where the 2 ranks sum two halves (another
    // reduction order): float32 rounding (4.5e-8 on the loss, 3e-8 on the adapters, measured).
    expect(gaps[1].loss).toBeLessThan(1e-6);
    expect(gaps[1].norm).toBeLessThan(1e-6);
    expect(gaps[1].adapters).toBeLessThan(1e-6);
    // 2 ranks without zero: the same all-reduce, and AdamW's arithmetic on whole tensors instead of
    // slices: bit for bit the sharded run's step 3 (the whole weights digest).
    expect(gaps[2]).toEqual({ loss: 0, norm: 0, adapters: 0 });
    expect(rankResult(r2[0]).digest).toBe(rankResult(sharded[0]).digest);
  }, 400000);

  it('a run of full fine-tuning resumed with --finetune lora (or the reverse) is refused, naming the flag', async () => {
    // policy.safetensors of a checkpoint (metadata only), as QwenPolicy.save writes it
    const ck = path.join(tmp, 'full-ck');
    fs.mkdirSync(ck, { recursive: true });
    const base = path.join(GOLDEN_ROOT, 'qwen3_vl');
    for (const [finetune, asked] of [
      ['full', 'lora'],
      ['lora', 'full'],
    ] as const) {
      writeSafetensors(path.join(ck, 'policy.safetensors'), [], () => new Float32Array(0), {
        kind: 'qwen',
        base,
        ...(finetune === 'full' ? { finetune } : {}),
      });
      const what = finetune === 'full' ? 'every LM weight' : 'LoRA adapters';
      await expect(QwenPolicy.create({ model: base, resumeFrom: ck, finetune: asked })).rejects.toMatchObject({
        code: 'ERR_CRPO_CHECKPOINT',
        message: `${ck}: the run trained ${what} (policy.finetune '${finetune}'); resume it with --finetune ${finetune}, not '${asked}'`,
      });
    }
  });

  it('2 ranks: SIGKILL of rank 1 after step 3, restart: ends bit for bit as the uninterrupted run', async () => {
    const QWEN = QWEN_DROPOUT; // LoRA dropout 0.05 (the default): seeded per step, so it resumes too
    const steps = { TEST_STEPS: '4', TEST_SAVE_EVERY: '2' };
    const whole = path.join(tmp, 'whole');
    const cut = path.join(tmp, 'killed');
    // The uninterrupted run and the killed one are independent: started together.
    // Rank 1 kills its process group after step 3: rank 0 has written the step-2 checkpoint
    // (step 3's all-reduce needed rank 0 past it) and not the step-4 one.
    const [ref, killed] = await Promise.all([
      runRanks('trainer', 2, { ...QWEN(), ...outs(whole, 2), ...steps }),
      runRanks(
        'trainer',
        2,
        { ...QWEN(), ...outs(cut, 2), ...steps, TEST_KILL_AT: '3:1', TEST_HB_TIMEOUT: '4' },
        undefined,
        { detached: true },
      ),
    ]);
    expect(ref.map((r) => [r.code, r.stderr.trim()])).toEqual([
      [0, ''],
      [0, ''],
    ]);
    const refDigest = rankResult(ref[0]).digest;

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
