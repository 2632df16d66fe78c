/**
 * The trainer's Policy interface over the golden Qwen3-VL model (lib/policy/qwen.ts):
 * seeded sampling, scoring log-probs equal to the sampler's, reference = policy before training,
 * a section-6 train step, freezing the reference by folding LoRA into the base, SFT, and a
 * checkpoint that resumes to identical log-probs and digest; the 'qwen' policy kind is registered.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { QwenPolicy } from '../../lib/policy/qwen';
import { POLICY_KINDS, type PolicyPrompt } from '../../lib/policy/policy';
import { GOLDEN_ROOT, goldenSkipReason } from './golden-qwen-helpers';
import { skipIf } from '../helpers/skip';

const MODEL = 'qwen3_vl';
const reason = goldenSkipReason(MODEL);
const DIR = path.join(GOLDEN_ROOT, MODEL);

function prompt(seed: number, T = 4, H = 64, W = 64): PolicyPrompt {
  const frames = Uint8Array.from({ length: T * H * W * 3 }, (_, i) => (i * (seed + 3) + seed * 17) % 251);
  return {
    frames,
    frameShape: [T, H, W, 3],
    question: 'Is it moving?',
    options: ['yes', 'no'],
    prompt: 'Is it moving?\nA. yes\nB. no\nAnswer with the option letter inside <answer></answer>.',
  };
}

const maxDiff = (a: number[][], b: number[][]) =>
  Math.max(...a.map((r, i) => Math.max(...r.map((x, j) => Math.abs(x - b[i][j])))));

const reason25 = goldenSkipReason('qwen2_5_vl');
skipIf(reason25).describe('Qwen2.5-VL policy: images and videos in one batch', () => {
  test('a batch mixing an image prompt and a video prompt scores each row as alone', async () => {
    const p = await QwenPolicy.create({
      model: path.join(GOLDEN_ROOT, 'qwen2_5_vl'),
      minPixels: 56 * 56,
      maxPixels: 56 * 56,
      lora: { rank: 2, targetModules: ['q_proj'] },
    });
    try {
      const prompts = [prompt(1, 1, 56, 56), prompt(2, 4, 56, 56)];
      const gen = await p.generate(prompts, { samples: 2, temperature: 1, maxNewTokens: 3, seed: 5 });
      const seqs = gen.flatMap((g, i) => g.map((c) => ({ prompt: i, tokens: c.tokens })));
      const both = await p.logprobs(prompts, seqs, { temperature: 1 });
      const alone = [
        ...(await p.logprobs([prompts[0]], seqs.slice(0, 2), { temperature: 1 })),
        ...(await p.logprobs(
          [prompts[1]],
          seqs.slice(2).map((q) => ({ ...q, prompt: 0 })),
          { temperature: 1 },
        )),
      ];
      expect(maxDiff(both, alone)).toBeLessThan(1e-5);
      expect(
        maxDiff(
          both,
          gen.flat().map((c) => c.logprobs),
        ),
      ).toBeLessThan(1e-4);
    } finally {
      p.dispose();
    }
  });
});

skipIf(reason).describe('Qwen policy (trainer interface)', () => {
  test("kind 'qwen' is registered and needs a model folder", async () => {
    expect(POLICY_KINDS.has('qwen')).toBe(true);
    await expect(POLICY_KINDS.get('qwen')({ seed: 0 })).rejects.toMatchObject({
      code: 'ERR_CRPO_MODEL_LOAD',
      message: expect.stringMatching(/needs a model/),
    });
  });

  test('sample, score, train, freeze, SFT, checkpoint and resume', async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-qwen-policy-'));
    const opts = {
      model: DIR,
      minPixels: 4096,
      maxPixels: 4 * 64 * 64,
      lora: { rank: 4, alpha: 8, targetModules: ['q_proj', 'v_proj'], seed: 1 },
    };
    const p = await QwenPolicy.create(opts);
    try {
      const prompts = [prompt(1), prompt(2)];
      const gen = { samples: 3, temperature: 1, maxNewTokens: 5, seed: 7 };
      const a = await p.generate(prompts, gen);
      const b = await p.generate(prompts, gen);
      expect(a.map((g) => g.map((c) => c.tokens))).toEqual(b.map((g) => g.map((c) => c.tokens)));
      // per-prompt seeds (the trainer keys them by global batch position): a prompt samples the
      // same tokens alone as in a batch, whatever its position
      const seeded = await p.generate([prompts[0], prompts[1]], { ...gen, promptSeeds: [11, 22] });
      const alone = await p.generate([prompts[1]], { ...gen, promptSeeds: [22] });
      expect(alone[0].map((c) => c.tokens)).toEqual(seeded[1].map((c) => c.tokens));
      expect(a).toHaveLength(2);
      expect(a[0]).toHaveLength(3);
      const seqs = a.flatMap((g, i) => g.map((c) => ({ prompt: i, tokens: c.tokens })));
      const lp = await p.logprobs(prompts, seqs, { temperature: 1 });
      expect(
        maxDiff(
          lp,
          a.flat().map((c) => c.logprobs),
        ),
      ).toBeLessThan(1e-4);
      // rows are grouped by prompt inside (one vision encoding per prompt): results keep the caller's order
      const perm = [4, 0, 3, 1, 5, 2];
      const shuffled = await p.logprobs(
        prompts,
        perm.map((k) => seqs[k]),
        { temperature: 1 },
      );
      expect(
        maxDiff(
          shuffled,
          perm.map((k) => lp[k]),
        ),
      ).toBeLessThan(1e-5);
      const ref0 = await p.logprobs(prompts, seqs, { temperature: 1, reference: true });
      expect(maxDiff(ref0, lp)).toBe(0);
      const d0 = p.weightsDigest();
      const train = seqs.map((s, k) => ({ ...s, advantage: k % 2 ? 1 : -1, oldLogprobs: lp[k], refLogprobs: ref0[k] }));
      const st = await p.trainStep(prompts, train, {
        lr: 1e-2,
        maxGradNorm: 1,
        weightDecay: 0,
        temperature: 1,
        clipLow: 0.2,
        clipHigh: 0.28,
        beta: 0.04,
        aggregation: 'seq-mean-token-mean',
        maxNewTokens: 5,
      });
      expect(st.skipped).toBe(false);
      expect(st.tokens).toBe(seqs.reduce((n, s) => n + s.tokens.length, 0));
      expect(st.entropy).toBeGreaterThan(0);
      expect(p.weightsDigest()).not.toBe(d0);
      const lp1 = await p.logprobs(prompts, seqs, { temperature: 1 });
      expect(maxDiff(lp1, lp)).toBeGreaterThan(1e-5);
      await p.freezeReference();
      const ref1 = await p.logprobs(prompts, seqs, { temperature: 1, reference: true });
      expect(maxDiff(ref1, lp1)).toBeLessThan(1e-4);
      const sft = await p.sftStep(prompts, [0, 1], { lr: 1e-2, maxGradNorm: 1 });
      expect(Number.isFinite(sft.loss) && sft.loss > 0).toBe(true);

      // micro-batches of 2 sequences accumulate to the same step as the whole batch at once
      const m2 = await QwenPolicy.create({ ...opts, microBatch: 2 });
      const m6 = await QwenPolicy.create({ ...opts, microBatch: 0 });
      const stepOpts = {
        lr: 1e-2,
        maxGradNorm: 1,
        weightDecay: 0,
        temperature: 1,
        clipLow: 0.2,
        clipHigh: 0.28,
        beta: 0.04,
        aggregation: 'token-mean' as const,
        maxNewTokens: 5,
      };
      const s2 = await m2.trainStep(prompts, train, stepOpts);
      const s6 = await m6.trainStep(prompts, train, stepOpts);
      expect(Math.abs(s2.loss - s6.loss)).toBeLessThan(1e-6);
      expect(Math.abs(s2.gradNorm - s6.gradNorm)).toBeLessThan(1e-5 * s6.gradNorm);
      expect(
        maxDiff(
          await m2.logprobs(prompts, seqs, { temperature: 1 }),
          await m6.logprobs(prompts, seqs, { temperature: 1 }),
        ),
      ).toBeLessThan(1e-5);
      m2.dispose();
      m6.dispose();

      const ck = path.join(tmp, 'step-1');
      await p.save(ck);
      const r = await QwenPolicy.create({ ...opts, resumeFrom: ck });
      expect(r.weightsDigest()).toBe(p.weightsDigest());
      expect(await r.logprobs(prompts, seqs, { temperature: 1 })).toEqual(
        await p.logprobs(prompts, seqs, { temperature: 1 }),
      );
      expect(await r.logprobs(prompts, seqs, { temperature: 1, reference: true })).toEqual(
        await p.logprobs(prompts, seqs, { temperature: 1, reference: true }),
      );
      r.dispose();
    } finally {
      p.dispose();
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});
