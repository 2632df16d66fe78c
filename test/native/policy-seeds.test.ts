/**
 * Per-prompt sampling seeds of the native policy (lib/model PolicyModelGenerateOptions.promptSeeds, lib/policy
 * GenerateOptions.promptSeeds; native/torch/model sample_uniform): seeded sampling still follows
 * the exact next-token distribution (chi-square), a prompt samples the same completions alone as
 * inside a larger or reordered batch and whatever the policy's generator state, the rollout
 * policy's `seed` alone fixes its samples, bad seeds are refused, and an empty train step (a
 * rank with no sequences) runs alone without changing anything.
 */
import { displayedOptions, formatPrompt } from '../../lib/prompt';
import { PolicyModel, Tokenizer, type PolicyInputs } from '../../lib/model';
import { createNativePolicy } from '../../lib/policy/native';
import type { PolicyPrompt } from '../../lib/policy/policy';
import { synthesize } from '../../lib/synth';
import { itWithNativePolicy, TINY_QUESTIONS, tinyClips } from '../helpers/native-policy';
import { chiSquare } from '../helpers/random';

const maybe = itWithNativePolicy('policy seed tests');

const QUESTIONS = TINY_QUESTIONS;
const tokenizer = Tokenizer.build(QUESTIONS);

const frames = tinyClips;

// Three prompts over two clips (one padded shorter than the others, one with a transform).
const PROMPTS = [
  { video: 0, text: QUESTIONS[0] },
  { video: 1, text: QUESTIONS[1], transform: 'hflip' as const },
  { video: 0, text: QUESTIONS[2], transform: 'reverse' as const },
];
const SEEDS = [11, 4000000000, 7];
const G = 3;

/** Rows [k*G, (k+1)*G) of a generation: tokens and log-probs of prompt k's samples. */
function block(g: { ids: Int32Array; logprobs: Float32Array; lengths: Int32Array; width: number }, k: number) {
  const rows = Array.from({ length: G }, (_, j) => k * G + j);
  return {
    tokens: rows.map((r) => Array.from(g.ids.subarray(r * g.width, r * g.width + g.lengths[r]))),
    logprobs: rows.map((r) => Array.from(g.logprobs.subarray(r * g.width, r * g.width + g.lengths[r]))),
  };
}

describe('native policy sampling with per-prompt seeds (lib/model)', () => {
  maybe('seeded first tokens follow the exact next-token distribution (chi-square over the vocabulary)', async () => {
    const p = await PolicyModel.create(tokenizer, { seed: 9 });
    try {
      // One prompt, n rows: row g draws from the stream (seed, g, token), so the rows are n independent samples.
      const n = 4000,
        V = tokenizer.size;
      const one: PolicyInputs = {
        frames: frames(1, 7),
        numVideos: 1,
        prompts: [{ video: 0, text: QUESTIONS[0] }],
        groupSize: n,
      };
      const s = await p.generate(one, { temperature: 3, maxNewTokens: 1, promptSeeds: [123456789] });
      const counts = new Array(V).fill(0);
      for (let i = 0; i < n; i++) counts[s.ids[i * s.width]]++;
      const lp = await p.logprobs(
        { ...one, groupSize: V },
        { ids: Int32Array.from({ length: V }, (_, v) => v), lengths: new Int32Array(V).fill(1), width: 1 },
        { temperature: 3 },
      );
      const prob = Array.from(lp.logprobs, Math.exp);
      const { chi2, df, bins, uniformChi2 } = chiSquare(counts, prob, n);
      expect(bins).toBeGreaterThan(5);
      expect(chi2).toBeLessThan(df + 6 * Math.sqrt(2 * df));
      expect(uniformChi2).toBeGreaterThan(df + 6 * Math.sqrt(2 * df));
    } finally {
      p.dispose();
    }
  });

  maybe(
    'a prompt samples the same completions alone, in a batch, in another order, whatever the generator state',
    async () => {
      const p = await PolicyModel.create(tokenizer, { seed: 4 });
      try {
        const opts = { temperature: 1.5, maxNewTokens: 6 };
        const clips = frames(2, 5);
        const all: PolicyInputs = { frames: clips, numVideos: 2, prompts: PROMPTS, groupSize: G };
        const batched = await p.generate(all, { ...opts, promptSeeds: SEEDS });
        // The samples are not all alike (the test would pass trivially otherwise).
        expect(new Set(block(batched, 0).tokens.map((t) => t.join(','))).size).toBeGreaterThan(1);
        for (let k = 0; k < PROMPTS.length; k++) {
          const clip = PROMPTS[k].video;
          const one: PolicyInputs = {
            frames: clips.subarray(clip * p.clipBytes, (clip + 1) * p.clipBytes),
            numVideos: 1,
            prompts: [{ ...PROMPTS[k], video: 0 }],
            groupSize: G,
          };
          await p.generate(one, opts); // advances the policy's own generator: seeded sampling does not read it
          const alone = block(await p.generate(one, { ...opts, promptSeeds: [SEEDS[k]] }), 0);
          const inBatch = block(batched, k);
          expect(alone.tokens).toEqual(inBatch.tokens);
          // Log-probs of the same tokens from differently padded batches: equal up to float rounding.
          alone.logprobs.flat().forEach((v, i) => expect(Math.abs(v - inBatch.logprobs.flat()[i])).toBeLessThan(1e-4));
        }
        const order = [2, 0, 1];
        const reordered = await p.generate(
          { ...all, prompts: order.map((k) => PROMPTS[k]) },
          { ...opts, promptSeeds: order.map((k) => SEEDS[k]) },
        );
        order.forEach((k, i) => expect(block(reordered, i).tokens).toEqual(block(batched, k).tokens));
        // Another seed, other samples.
        const other = await p.generate(all, { ...opts, promptSeeds: [12, 4000000001, 8] });
        expect(Array.from(other.ids)).not.toEqual(Array.from(batched.ids));
      } finally {
        p.dispose();
      }
    },
  );

  maybe('bad seeds are refused with the parameter named', async () => {
    const p = await PolicyModel.create(tokenizer, { seed: 4 });
    try {
      const all: PolicyInputs = { frames: frames(2, 5), numVideos: 2, prompts: PROMPTS, groupSize: 2 };
      await expect(p.generate(all, { promptSeeds: [1, 2] })).rejects.toMatchObject({
        code: 'ERR_CRPO_INVALID_ARG',
        message:
          'Expected an array of 3 seeds (one per prompt) for options.promptSeeds but received an array of length 2',
      });
      await expect(p.generate(all, { promptSeeds: [1, 2 ** 32, 3] })).rejects.toMatchObject({
        code: 'ERR_CRPO_OUT_OF_RANGE',
        message: expect.stringMatching(/options\.promptSeeds\[1\]/),
      });
      await expect(p.generate(all, { promptSeeds: [1, -1, 0.5] })).rejects.toMatchObject({
        code: 'ERR_CRPO_OUT_OF_RANGE',
      });
      // the deprecated name is still accepted, and named in its errors
      await expect(p.generate(all, { seeds: [1, 2] })).rejects.toMatchObject({
        message: expect.stringMatching(/for options\.seeds but/),
      });
      const opts = { temperature: 1.5, maxNewTokens: 4 };
      const viaOld = await p.generate({ ...all, groupSize: 1 }, { ...opts, seeds: [4, 5, 6] });
      const viaNew = await p.generate({ ...all, groupSize: 1 }, { ...opts, promptSeeds: [4, 5, 6] });
      expect(Array.from(viaOld.ids)).toEqual(Array.from(viaNew.ids));
    } finally {
      p.dispose();
    }
  });

  maybe('an empty train step (no prompts, no rows) runs alone and changes nothing', async () => {
    const p = await PolicyModel.create(tokenizer, { seed: 4 });
    try {
      const w0 = await p.getWeights();
      const st = await p.trainStep(
        { frames: new Uint8Array(0), numVideos: 0, prompts: [], groupSize: 1 },
        { ids: new Int32Array(0), lengths: new Int32Array(0), width: 1, advantages: new Float32Array(0) },
        { lr: 1e-2, weightDecay: 0.1 },
      );
      expect(st).toMatchObject({ skipped: false, tokens: 0, loss: 0, gradNorm: 0, step: 0 });
      const w1 = await p.getWeights();
      expect(w1.every((t, i) => Buffer.compare(Buffer.from(t.data.buffer), Buffer.from(w0[i].data.buffer)) === 0)).toBe(
        true,
      );
      // Generation still needs prompts.
      await expect(
        p.generate({ frames: new Uint8Array(0), numVideos: 0, prompts: [], groupSize: 1 }),
      ).rejects.toMatchObject({ code: 'ERR_CRPO_INVALID_ARG' });
    } finally {
      p.dispose();
    }
  });
});

describe('the native rollout policy (lib/policy/native.ts) and its seeds', () => {
  const items = synthesize({ split: 'train', pairs: 3, seed: 4 }).slice(0, 4);
  const prompts: PolicyPrompt[] = items.map((x) => ({
    frames: x.frames,
    frameShape: [8, 32, 32, 3],
    question: x.record.question,
    options: displayedOptions(x.record.options, true),
    prompt: formatPrompt(x.record.question, x.record.options, { nullOption: true }),
  }));
  const texts = items.map((x) => formatPrompt(x.record.question, x.record.options, { nullOption: true }));
  const gen = { samples: 3, temperature: 2, maxNewTokens: 6 };

  maybe(
    'seed alone fixes the samples; promptSeeds make each prompt independent of its batch; an empty train step is a no-op',
    async () => {
      const p = await createNativePolicy({ seed: 7, preset: 'tiny', texts, frames: 8, size: 32 });
      try {
        const a = await p.generate(prompts, { ...gen, seed: 5 });
        const b = await p.generate(prompts, { ...gen, seed: 5 });
        const c = await p.generate(prompts, { ...gen, seed: 6 });
        const toks = (x: typeof a) => x.map((cs) => cs.map((y) => y.tokens));
        expect(toks(b)).toEqual(toks(a));
        expect(toks(c)).not.toEqual(toks(a));
        const seeds = [101, 202, 303, 404];
        const batch = await p.generate(prompts, { ...gen, seed: 0, promptSeeds: seeds });
        for (let k = 0; k < prompts.length; k++) {
          const alone = await p.generate([prompts[k]], { ...gen, seed: 99, promptSeeds: [seeds[k]] });
          expect(alone[0].map((y) => y.tokens)).toEqual(batch[k].map((y) => y.tokens));
          expect(alone[0].map((y) => y.text)).toEqual(batch[k].map((y) => y.text));
        }
        expect(await p.generate([], { ...gen, seed: 0 })).toEqual([]);
        await expect(p.generate(prompts, { ...gen, seed: 0, promptSeeds: [1] })).rejects.toMatchObject({
          code: 'ERR_CRPO_INVALID_ARG',
          message: 'Expected an array of 4 seeds (one per prompt) for promptSeeds but received an array of length 1',
        });
        await expect(p.generate(prompts, { ...gen, seed: 0, promptSeeds: [1, 2, 3, 1.5] })).rejects.toMatchObject({
          code: 'ERR_CRPO_OUT_OF_RANGE',
          message: 'Expected an integer in [0, 2^32) for promptSeeds[3] but received 1.5 of type number',
        });
        const digest = await p.weightsDigest();
        const st = await p.trainStep(prompts, [], {
          lr: 1e-2,
          maxGradNorm: 1,
          weightDecay: 0.1,
          temperature: 1,
          clipLow: 0.2,
          clipHigh: 0.2,
          beta: 0.04,
          aggregation: 'token-mean',
          maxNewTokens: 6,
        });
        expect(st).toMatchObject({ skipped: false, tokens: 0, gradNorm: 0 });
        expect(await p.weightsDigest()).toBe(digest);
        expect(await p.logprobs(prompts, [], { temperature: 1 })).toEqual([]);
      } finally {
        p.dispose();
      }
    },
  );
});
