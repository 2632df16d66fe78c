/**
 * The built-in linear policy (lib/policy/linear.ts): its analytic gradient of the
 * section-6 loss against central finite differences over the weights it touches; sampled log-probs
 * equal the scored ones; the answer format of its completions; save/load round trip bit-exact.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { LinearPolicy, createLinearPolicy } from '../../lib/policy/linear';
import type { PolicyPrompt, TrainSequence } from '../../lib/policy/policy';
import { displayedOptions, formatPrompt, parseAnswer } from '../../lib/prompt';
import { synthesize } from '../../lib/synth';

const items = synthesize({ split: 'train', pairs: 2, seed: 4 }).filter((x) => x.record.transform === 'none');
const prompts: PolicyPrompt[] = items.map((x) => ({
  frames: x.frames,
  frameShape: [8, 32, 32, 3],
  question: x.record.question,
  options: displayedOptions(x.record.options, true),
  prompt: formatPrompt(x.record.question, x.record.options, { nullOption: true }),
}));
const opts = {
  lr: 0.01,
  maxGradNorm: 0,
  weightDecay: 0,
  temperature: 1.5,
  clipLow: 0.2,
  clipHigh: 0.2,
  beta: 0.04,
  aggregation: 'seq-mean-token-mean' as const,
  maxNewTokens: 2,
};

async function trainedPolicy(): Promise<LinearPolicy> {
  const p = new LinearPolicy();
  for (let s = 0; s < 5; s++)
    await p.sftStep(
      prompts,
      items.map((x) => x.record.answer),
      { lr: 0.05, maxGradNorm: 1 },
    );
  await p.freezeReference();
  for (let s = 0; s < 3; s++) await p.sftStep(prompts.slice(0, 3), [0, 1, 0], { lr: 0.05, maxGradNorm: 1 });
  return p;
}

describe('linear policy', () => {
  it('its gradient equals finite differences of the loss', async () => {
    const p = await trainedPolicy();
    const samples = await p.generate(prompts, { samples: 3, temperature: 1.5, maxNewTokens: 2, seed: 9 });
    const seqs: TrainSequence[] = [];
    samples.forEach((cs, i) =>
      cs.forEach((c, j) =>
        seqs.push({
          prompt: i,
          tokens: c.tokens,
          advantage: ((i + j) % 3) - 1,
          oldLogprobs: c.logprobs.map((v, t) => v + 0.05 * (t + 1) * (j - 1)),
        }),
      ),
    );
    const ref = await p.logprobs(prompts, seqs, { temperature: 1.5, reference: true });
    seqs.forEach((s, i) => {
      s.refLogprobs = ref[i];
    });
    const { grad } = p.lossAndGradient(prompts, seqs, opts);
    const touched = [...grad.keys()].filter((i) => grad[i] !== 0);
    expect(touched.length).toBeGreaterThan(10);
    const w = p.weights,
      h = 1e-6;
    let worst = 0;
    for (const i of [...touched.slice(0, 40), w.length - 3, w.length - 2, w.length - 1]) {
      const keep = w[i];
      w[i] = keep + h;
      const up = p.lossAndGradient(prompts, seqs, opts).r.loss;
      w[i] = keep - h;
      const down = p.lossAndGradient(prompts, seqs, opts).r.loss;
      w[i] = keep;
      worst = Math.max(worst, Math.abs((up - down) / (2 * h) - grad[i]));
    }
    expect(worst).toBeLessThan(1e-6);
  });

  it('samples valid completions whose log-probs equal the scored ones', async () => {
    const p = await trainedPolicy();
    const out = await p.generate(prompts, { samples: 4, temperature: 1, maxNewTokens: 2, seed: 1 });
    const seqs = out.flatMap((cs, i) => cs.map((c) => ({ prompt: i, tokens: c.tokens })));
    const scored = await p.logprobs(prompts, seqs, { temperature: 1 });
    expect(scored).toEqual(out.flat().map((c) => c.logprobs));
    for (const [i, cs] of out.entries())
      for (const c of cs) {
        const a = parseAnswer(c.text, prompts[i].options.length);
        expect(c.tokens.length === 1 ? a.index : a.index >= 0).toBe(c.tokens.length === 1 ? -1 : true);
      }
    expect(await p.generate(prompts, { samples: 4, temperature: 1, maxNewTokens: 2, seed: 1 })).toEqual(out);
  });

  it('with promptSeeds, a prompt samples the same completions alone as in a batch; seed alone keeps one stream', async () => {
    const p = await trainedPolicy();
    const gen = { samples: 5, temperature: 3, maxNewTokens: 2 };
    const seeds = prompts.map((_, i) => 1000 + 7 * i);
    const batch = await p.generate(prompts, { ...gen, seed: 1, promptSeeds: seeds });
    expect(new Set(batch.flat().map((c) => c.text)).size).toBeGreaterThan(2); // hot sampling: not all alike
    for (let k = 0; k < prompts.length; k++) {
      expect(await p.generate([prompts[k]], { ...gen, seed: 2, promptSeeds: [seeds[k]] })).toEqual([batch[k]]);
    }
    const reversed = await p.generate([...prompts].reverse(), { ...gen, seed: 3, promptSeeds: [...seeds].reverse() });
    expect(reversed.reverse()).toEqual(batch);
    // Without promptSeeds one stream runs through the prompts: prompt k's samples depend on those before it.
    const shared = await p.generate(prompts, { ...gen, seed: 5 });
    expect(shared).toEqual(await p.generate(prompts, { ...gen, seed: 5 }));
    expect((await p.generate(prompts.slice(1), { ...gen, seed: 5 }))[0]).not.toEqual(shared[1]);
    await expect(p.generate(prompts, { ...gen, seed: 0, promptSeeds: [1] })).rejects.toMatchObject({
      code: 'ERR_CRPO_INVALID_ARG',
      message: `Expected an array of ${prompts.length} seeds (one per prompt) for promptSeeds but received an array of length 1`,
    });
    await expect(p.generate(prompts.slice(0, 1), { ...gen, seed: 0, promptSeeds: [2 ** 32] })).rejects.toMatchObject({
      code: 'ERR_CRPO_OUT_OF_RANGE',
      message: 'Expected an integer in [0, 2^32) for promptSeeds[0] but received 4294967296 of type number',
    });
  });

  it('a train step on no sequences changes nothing', async () => {
    const p = await trainedPolicy();
    const digest = p.weightsDigest();
    const st = await p.trainStep(prompts, [], opts);
    expect(st).toMatchObject({ skipped: false, tokens: 0, gradNorm: 0, loss: 0 });
    expect(p.weightsDigest()).toBe(digest);
  });

  it('saves and loads its full state bit-exactly', async () => {
    const p = await trainedPolicy();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-linear-'));
    try {
      await p.save(dir);
      const q = await createLinearPolicy({ resumeFrom: dir });
      expect(q.weightsDigest()).toBe(p.weightsDigest());
      // Same optimiser state: one more identical step keeps them identical.
      await p.sftStep(prompts, [0, 0, 0, 0, 0, 0, 0, 0].slice(0, prompts.length), { lr: 0.05, maxGradNorm: 1 });
      await q.sftStep(prompts, [0, 0, 0, 0, 0, 0, 0, 0].slice(0, prompts.length), { lr: 0.05, maxGradNorm: 1 });
      expect(q.weightsDigest()).toBe(p.weightsDigest());
      expect(() => new LinearPolicy().load(path.join(dir, 'missing'), true)).toThrow(
        /no policy weights in this checkpoint folder/,
      );
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
