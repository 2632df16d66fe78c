/**
 * The native policy end to end on the tiny preset: KV-cached generation equals uncached
 * generation token for token (greedy), the sampler's log-probs equal logprobs(), a seed fixes
 * init and sampling, transforms change the visual input, train/SFT steps move the loss, save/load
 * round trips are bit-exact and resume continues bit for bit, bad checkpoints and bad arguments
 * are refused with clear errors, and every handle is released (live counters back to zero).
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { liveHandleCount, torchAddon } from '../../lib/native';
import {
  PolicyModel,
  Tokenizer,
  livePolicies,
  loadCheckpoint,
  saveCheckpoint,
  writeSafetensors,
  readSafetensorsHeader,
  type PolicyInputs,
} from '../../lib/model';
import { itWithNativePolicy, TINY_QUESTIONS, tinyClips } from '../helpers/native-policy';
import { chiSquare } from '../helpers/random';

const maybe = itWithNativePolicy('policy tests');

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-policy-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const QUESTIONS = TINY_QUESTIONS;
const tokenizer = Tokenizer.build(QUESTIONS);

const frames = tinyClips;

const inputs = (groupSize = 1): PolicyInputs => ({
  frames: frames(2, 5),
  numVideos: 2,
  prompts: [
    { video: 0, text: QUESTIONS[0] },
    { video: 1, text: QUESTIONS[1], transform: 'hflip' },
    { video: 0, text: QUESTIONS[2], transform: 'reverse' },
  ],
  groupSize,
});

describe('tokenizer', () => {
  test('round trip of prompts and answers; unknown words map to <unk>', () => {
    expect(tokenizer.decode(tokenizer.encode('<answer>B</answer>'))).toBe('<answer>B</answer>');
    expect(tokenizer.decode(tokenizer.encode(QUESTIONS[1]))).toBe(QUESTIONS[1].replace(/\n/g, ' '));
    expect(tokenizer.encode('zebra left')).toEqual([1, tokenizer.id('left')]);
    expect(Tokenizer.fromJSON(JSON.parse(JSON.stringify(tokenizer.toJSON()))).vocab).toEqual(tokenizer.vocab);
    expect(() => Tokenizer.fromJSON({ type: 'word-level', version: 1, vocab: ['x'] })).toThrow(
      /vocab\[0\] must be '<pad>'/,
    );
  });
});

describe('native policy (tiny preset)', () => {
  const startHandles = liveHandleCount();

  maybe('KV-cached greedy generation equals uncached generation; sampler log-probs equal logprobs()', async () => {
    const p = await PolicyModel.create(tokenizer, { preset: 'tiny', seed: 3 });
    try {
      const a = await p.generate(inputs(2), { greedy: true, maxNewTokens: 6 });
      const b = await p.generate(inputs(2), { greedy: true, maxNewTokens: 6, useCache: false });
      expect(Array.from(a.ids)).toEqual(Array.from(b.ids));
      expect(Array.from(a.lengths)).toEqual(Array.from(b.lengths));
      for (let i = 0; i < a.logprobs.length; i++) expect(Math.abs(a.logprobs[i] - b.logprobs[i])).toBeLessThan(1e-4);
      // Sampled (temperature 0.7, top-k, top-p), then scored by logprobs() at the same temperature.
      const s = await p.generate(inputs(4), { temperature: 0.7, topK: 20, topP: 0.95, maxNewTokens: 6 });
      expect(s.lengths.length).toBe(12);
      const lp = await p.logprobs(inputs(4), s, { temperature: 0.7, entropy: true });
      let maxDiff = 0;
      for (let i = 0; i < lp.logprobs.length; i++)
        maxDiff = Math.max(maxDiff, Math.abs(lp.logprobs[i] - s.logprobs[i]));
      expect(maxDiff).toBeLessThan(1e-4);
      expect(lp.entropy!.some((v) => v > 0)).toBe(true);
      // A frozen reference copy scores identically until the policy moves.
      const ref = await p.cloneFrozen();
      const lr = await ref.logprobs(inputs(4), s, { temperature: 0.7 });
      expect(Array.from(lr.logprobs)).toEqual(Array.from(lp.logprobs));
      await expect(ref.trainStep(inputs(4), { ...s, advantages: new Float32Array(12) })).rejects.toMatchObject({
        code: 'ERR_CRPO_FROZEN',
      });
      ref.dispose();
    } finally {
      p.dispose();
    }
  });

  maybe(
    'the shared-prefix forward equals its twin that runs every row whole (log-probs, loss, gradient, update)',
    async () => {
      const a = await PolicyModel.create(tokenizer, { seed: 6 });
      const b = await PolicyModel.create(tokenizer, { seed: 6 });
      try {
        const all = inputs(4);
        const g = await a.generate(all, { temperature: 1.3, maxNewTokens: 6 });
        const shared = await a.logprobs(all, g, { entropy: true });
        const whole = await a.logprobs(all, g, { entropy: true, fullSequence: true });
        for (let i = 0; i < shared.logprobs.length; i++) {
          expect(Math.abs(shared.logprobs[i] - whole.logprobs[i])).toBeLessThan(1e-5);
          expect(Math.abs(shared.entropy![i] - whole.entropy![i])).toBeLessThan(1e-5);
        }
        const n = g.lengths.length;
        const comp = {
          ...g,
          oldLogprobs: shared.logprobs.map((x) => x + 0.05),
          refLogprobs: shared.logprobs.map((x) => x - 0.05),
          advantages: Float32Array.from({ length: n }, (_, i) => (i % 3) - 1),
        };
        const opts = { lr: 1e-2, maxGradNorm: 0 };
        const sa = await a.trainStep(all, comp, opts);
        const sb = await b.trainStep(all, comp, { ...opts, fullSequence: true });
        expect(Math.abs(sa.loss - sb.loss)).toBeLessThan(1e-6 * Math.max(1, Math.abs(sb.loss)));
        expect(Math.abs(sa.gradNorm - sb.gradNorm)).toBeLessThan(1e-5 * sb.gradNorm);
        expect(sa.gradNorm).toBeGreaterThan(0);
        // Same gradient, so the same first moments and the same updated weights, tensor by tensor.
        const [ma, mb] = [(await a.getOptimizerState()).tensors, (await b.getOptimizerState()).tensors];
        expect(ma.map((t) => t.name)).toEqual(mb.map((t) => t.name));
        ma.forEach((t, k) => {
          let d2 = 0,
            r2 = 0;
          for (let i = 0; i < t.data.length; i++) {
            d2 += (t.data[i] - mb[k].data[i]) ** 2;
            r2 += mb[k].data[i] ** 2;
          }
          if (Math.sqrt(d2) > 1e-4 * Math.sqrt(r2) + 1e-12)
            throw new Error(`${t.name}: relative L2 difference ${Math.sqrt(d2 / r2)}`);
        });
      } finally {
        a.dispose();
        b.dispose();
      }
    },
  );

  maybe('sampled first tokens follow the exact next-token distribution (chi-square over the vocabulary)', async () => {
    const p = await PolicyModel.create(tokenizer, { seed: 9 });
    try {
      const n = 4000,
        V = tokenizer.size;
      const one: PolicyInputs = {
        frames: frames(1, 7),
        numVideos: 1,
        prompts: [{ video: 0, text: QUESTIONS[0] }],
        groupSize: n,
      };
      const s = await p.generate(one, { temperature: 3, maxNewTokens: 1 });
      const counts = new Array(V).fill(0);
      for (let i = 0; i < n; i++) counts[s.ids[i * s.width]]++;
      // Exact probabilities: the log-prob of every vocabulary entry as a one-token completion.
      const all: PolicyInputs = { ...one, groupSize: V };
      const lp = await p.logprobs(
        all,
        { ids: Int32Array.from({ length: V }, (_, v) => v), lengths: new Int32Array(V).fill(1), width: 1 },
        { temperature: 3 },
      );
      const prob = Array.from(lp.logprobs, Math.exp);
      expect(Math.abs(prob.reduce((a, x) => a + x, 0) - 1)).toBeLessThan(1e-4);
      // Pearson's chi-square (df = bins - 1, mean df, sd sqrt(2 df)): 6 sd above the mean fails (p far below 1e-6).
      const { chi2, df, bins, uniformChi2 } = chiSquare(counts, prob, n);
      expect(bins).toBeGreaterThan(5);
      expect(chi2).toBeLessThan(df + 6 * Math.sqrt(2 * df));
      // A sampler that ignored the distribution (uniform over the vocabulary) fails the same bound.
      expect(uniformChi2).toBeGreaterThan(df + 6 * Math.sqrt(2 * df));
    } finally {
      p.dispose();
    }
  });

  maybe('a batch (padded prompts, shared clips, mixed transforms) scores like each prompt alone', async () => {
    const p = await PolicyModel.create(tokenizer, { seed: 4 });
    try {
      const all = inputs(2);
      const g = await p.generate(all, { temperature: 1.2, maxNewTokens: 5 });
      const batched = (await p.logprobs(all, g)).logprobs;
      for (let k = 0; k < all.prompts.length; k++) {
        // Prompt k alone, its own clip only, its 2 rows of completions.
        const clip = all.prompts[k].video;
        const one: PolicyInputs = {
          frames: all.frames.subarray(clip * p.clipBytes, (clip + 1) * p.clipBytes),
          numVideos: 1,
          prompts: [{ ...all.prompts[k], video: 0 }],
          groupSize: 2,
        };
        const rows = {
          ids: g.ids.slice(k * 2 * g.width, (k + 1) * 2 * g.width),
          lengths: g.lengths.slice(k * 2, k * 2 + 2),
          width: g.width,
        };
        const alone = (await p.logprobs(one, rows)).logprobs;
        for (let i = 0; i < alone.length; i++)
          expect(Math.abs(alone[i] - batched[k * 2 * g.width + i])).toBeLessThan(1e-4);
      }
    } finally {
      p.dispose();
    }
  });

  maybe('a seed fixes init and sampling; the transform changes what the model sees', async () => {
    const a = await PolicyModel.create(tokenizer, { seed: 11 });
    const b = await PolicyModel.create(tokenizer, { seed: 11 });
    const c = await PolicyModel.create(tokenizer, { seed: 12 });
    try {
      const ga = await a.generate(inputs(3), { temperature: 1.5, maxNewTokens: 6 });
      const gb = await b.generate(inputs(3), { temperature: 1.5, maxNewTokens: 6 });
      const gc = await c.generate(inputs(3), { temperature: 1.5, maxNewTokens: 6 });
      expect(Array.from(ga.ids)).toEqual(Array.from(gb.ids));
      expect(Array.from(ga.logprobs)).toEqual(Array.from(gb.logprobs));
      expect(Array.from(ga.ids)).not.toEqual(Array.from(gc.ids));
      // RNG state: restore and replay.
      const state = a.getRngState();
      const r1 = await a.generate(inputs(3), { temperature: 1.5, maxNewTokens: 6 });
      a.setRngState(state);
      const r2 = await a.generate(inputs(3), { temperature: 1.5, maxNewTokens: 6 });
      expect(Array.from(r1.ids)).toEqual(Array.from(r2.ids));
      // Same prompt, hflip vs none: different visual tokens -> different log-probs.
      const one = (transform: 'none' | 'hflip' | 'reverse'): PolicyInputs => ({
        frames: frames(1, 9),
        numVideos: 1,
        prompts: [{ video: 0, text: QUESTIONS[0], transform }],
      });
      const comp = a.encodeTargets(['<answer>A</answer>']);
      const l0 = (await a.logprobs(one('none'), comp)).logprobs;
      const l1 = (await a.logprobs(one('hflip'), comp)).logprobs;
      const l2 = (await a.logprobs(one('reverse'), comp)).logprobs;
      expect(Array.from(l0)).not.toEqual(Array.from(l1));
      expect(Array.from(l0)).not.toEqual(Array.from(l2));
    } finally {
      a.dispose();
      b.dispose();
      c.dispose();
    }
  });

  maybe('SFT and RL steps lower their losses; a non-finite loss skips the update', async () => {
    const p = await PolicyModel.create(tokenizer, { seed: 1 });
    try {
      const x = inputs(1);
      const targets = ['<answer>A</answer>', '<answer>B</answer>', '<answer>C</answer>'];
      const first = await p.sftStep(x, targets, { lr: 3e-3 });
      let last = first;
      for (let i = 0; i < 15; i++) last = await p.sftStep(x, targets, { lr: 3e-3 });
      expect(last.loss).toBeLessThan(first.loss * 0.5);
      expect(last.step).toBe(16);
      const ev = await p.evalBatch(x, [5, 2, 3]);
      expect(ev.answers).toEqual([0, 1, 2]);
      expect(ev.formatOk).toEqual([true, true, true]);
      // RL with ratio 1: a small step raises the advantage-weighted log-likelihood sum_k A_k log p(y_k).
      // Rows 0 and 4 come from different prompts (row = p * G + g), sampled hot so they are not certain.
      const g = await p.generate(inputs(2), { temperature: 3, maxNewTokens: 6 });
      const before = await p.logprobs(inputs(2), g);
      const adv = Float32Array.from([1, 0, 0, 0, -1, 0]);
      const st = await p.trainStep(
        inputs(2),
        { ...g, advantages: adv, oldLogprobs: before.logprobs, refLogprobs: before.logprobs },
        { lr: 1e-3, beta: 0.04 },
      );
      expect(st.skipped).toBe(false);
      expect(st.ratioMean).toBeCloseTo(1, 4);
      expect(st.gradNorm).toBeGreaterThan(0);
      const after = await p.logprobs(inputs(2), g);
      const sum = (a: Float32Array, r: number): number =>
        a.subarray(r * g.width, (r + 1) * g.width).reduce((s, v) => s + v, 0);
      const objective = (a: Float32Array): number => sum(a, 0) - sum(a, 4);
      expect(objective(after.logprobs)).toBeGreaterThan(objective(before.logprobs));
      const w0 = await p.getWeights();
      const bad = await p.trainStep(
        inputs(2),
        { ...g, advantages: Float32Array.from([NaN, 0, 0, 0, 0, 0]) },
        { lr: 1e-3 },
      );
      expect(bad.skipped).toBe(true);
      expect(bad.skipReason).toMatch(/non-finite/);
      expect(bad.step).toBe(st.step);
      const w1 = await p.getWeights();
      expect(w1.every((t, i) => Buffer.compare(Buffer.from(t.data.buffer), Buffer.from(w0[i].data.buffer)) === 0)).toBe(
        true,
      );
    } finally {
      p.dispose();
    }
  });

  maybe('save/load is bit-exact and resume continues bit for bit', async () => {
    const p = await PolicyModel.create(tokenizer, { seed: 21 });
    const dir = path.join(tmp, 'ckpt');
    try {
      const targets = ['<answer>A</answer>', '<answer>B</answer>', '<answer>C</answer>'];
      for (let i = 0; i < 2; i++) await p.sftStep(inputs(1), targets, { lr: 1e-3 });
      await p.generate(inputs(2), { maxNewTokens: 3 }); // advances the RNG
      await saveCheckpoint(p, dir, { note: 'test' });
      await saveCheckpoint(p, dir); // overwrite in place
      expect(
        fs
          .readdirSync(tmp)
          .filter((f) => f.startsWith('ckpt'))
          .sort(),
      ).toEqual(['ckpt']);
      const { policy: q, manifest } = await loadCheckpoint(dir);
      try {
        expect(manifest.step).toBe(2);
        const [wp, wq] = [await p.getWeights(), await q.getWeights()];
        expect(wq.map((t) => t.name)).toEqual(wp.map((t) => t.name));
        expect(
          wq.every((t, i) => Buffer.compare(Buffer.from(t.data.buffer), Buffer.from(wp[i].data.buffer)) === 0),
        ).toBe(true);
        // Continue both: the same samples and the same weights after a further step.
        const gp = await p.generate(inputs(2), { maxNewTokens: 5 });
        const gq = await q.generate(inputs(2), { maxNewTokens: 5 });
        expect(Array.from(gq.ids)).toEqual(Array.from(gp.ids));
        const sp = await p.sftStep(inputs(1), targets, { lr: 1e-3 });
        const sq = await q.sftStep(inputs(1), targets, { lr: 1e-3 });
        expect(sq.loss).toBe(sp.loss);
        expect(sq.step).toBe(3);
        const [vp, vq] = [await p.getWeights(), await q.getWeights()];
        expect(
          vq.every((t, i) => Buffer.compare(Buffer.from(t.data.buffer), Buffer.from(vp[i].data.buffer)) === 0),
        ).toBe(true);
      } finally {
        q.dispose();
      }
      // A save interrupted between its renames (old folder moved aside, new one not yet in place).
      const aside = `${dir}.old-123-456`;
      fs.renameSync(dir, aside);
      const { policy: back } = await loadCheckpoint(dir);
      expect(fs.existsSync(aside)).toBe(false);
      back.dispose();
      // A frozen load has no optimizer.
      const { policy: r } = await loadCheckpoint(dir, { frozen: true });
      expect(r.frozen).toBe(true);
      r.dispose();
      // A float64 policy is refused, not rounded to float32 on the way to disk.
      const wide = await PolicyModel.create(tokenizer, { seed: 21, dtype: 'float64' });
      try {
        await expect(saveCheckpoint(wide, path.join(tmp, 'wide'))).rejects.toThrow(/would be rounded.*policy/);
        expect(fs.existsSync(path.join(tmp, 'wide'))).toBe(false);
      } finally {
        wide.dispose();
      }
    } finally {
      p.dispose();
    }
  });

  maybe('bad checkpoints are rejected with clear errors', async () => {
    const src = path.join(tmp, 'ckpt');
    const copy = (name: string): string => {
      const d = path.join(tmp, name);
      fs.cpSync(src, d, { recursive: true });
      return d;
    };
    await expect(loadCheckpoint(path.join(tmp, 'missing'))).rejects.toMatchObject({
      code: 'ERR_CRPO_CHECKPOINT',
      message: expect.stringMatching(/no policy.json/),
    });
    const trunc = copy('trunc');
    const wf = path.join(trunc, 'model.safetensors');
    fs.truncateSync(wf, fs.statSync(wf).size - 10);
    await expect(loadCheckpoint(trunc)).rejects.toMatchObject({
      message: expect.stringMatching(/model.safetensors has \d+ bytes but the manifest says/),
    });
    // A tensor with the wrong shape (manifest sizes fixed up so that the shape check is what fails).
    const shape = copy('shape');
    const h = readSafetensorsHeader(path.join(shape, 'model.safetensors'));
    const tensors = [...h.tensors.values()].map((e) => ({
      name: e.name,
      dtype: 'F32' as const,
      shape: e.name === 'lm.head.weight' ? [e.shape[1], e.shape[0]] : e.shape,
      data: new Float32Array(e.nbytes / 4),
    }));
    writeSafetensors(path.join(shape, 'model.safetensors'), tensors);
    const man = JSON.parse(fs.readFileSync(path.join(shape, 'policy.json'), 'utf8'));
    man.files.weights.bytes = fs.statSync(path.join(shape, 'model.safetensors')).size;
    fs.writeFileSync(path.join(shape, 'policy.json'), JSON.stringify(man));
    await expect(loadCheckpoint(shape)).rejects.toMatchObject({
      message: expect.stringMatching(/tensor 'lm.head.weight' has shape \[96,\d+\], expected \[\d+,96\]/),
    });
    // Renamed tensor.
    writeSafetensors(
      path.join(shape, 'model.safetensors'),
      tensors.map((t) =>
        t.name === 'lm.norm.weight'
          ? { ...t, name: 'lm.norm.w' }
          : { ...t, shape: t.name === 'lm.head.weight' ? [t.shape[1], t.shape[0]] : t.shape },
      ),
    );
    man.files.weights.bytes = fs.statSync(path.join(shape, 'model.safetensors')).size;
    fs.writeFileSync(path.join(shape, 'policy.json'), JSON.stringify(man));
    await expect(loadCheckpoint(shape)).rejects.toMatchObject({
      message: expect.stringMatching(/unexpected tensor 'lm.norm.w'/),
    });
    const cfg = copy('cfg');
    const m2 = JSON.parse(fs.readFileSync(path.join(cfg, 'policy.json'), 'utf8'));
    m2.config.lmHeads = 5;
    fs.writeFileSync(path.join(cfg, 'policy.json'), JSON.stringify(m2));
    await expect(loadCheckpoint(cfg)).rejects.toMatchObject({
      code: 'ERR_CRPO_CHECKPOINT',
      message: expect.stringMatching(/config.lmDim/),
    });
    fs.writeFileSync(path.join(cfg, 'policy.json'), '{"format": "other"}');
    await expect(loadCheckpoint(cfg)).rejects.toMatchObject({ message: expect.stringMatching(/format is "other"/) });
    expect(livePolicies()).toBe(0);
  });

  maybe('bad arguments are refused at the TS boundary and in native code, never a crash', async () => {
    const p = await PolicyModel.create(tokenizer, { seed: 2 });
    try {
      const x = inputs(1);
      await expect(p.generate({ ...x, frames: new Uint8Array(10) })).rejects.toThrow(
        /Expected a Uint8Array of length 49152 \(\[2, 8, 32, 32, 3\]\) for inputs.frames/,
      );
      await expect(p.generate({ ...x, prompts: [{ video: 5, text: 'x' }] })).rejects.toThrow(
        /inputs.prompts\[0\].video/,
      );
      await expect(
        p.generate({ ...x, prompts: [{ video: 0, text: 'x', transform: 'mirror' as never }] }),
      ).rejects.toThrow(/inputs.prompts\[0\].transform/);
      await expect(p.generate({ ...x, prompts: [{ video: 0, text: 'x', transform: 'swap' }] })).rejects.toThrow(
        /Expected an integer in \[1, 7\] for a 'swap' prompt for inputs.prompts\[0\].swapAt/,
      );
      await expect(p.generate(x, { topP: 2 })).rejects.toThrow(/options.topP/);
      await expect(p.generate(x, { maxNewTokens: 500 })).rejects.toMatchObject({
        code: 'ERR_CRPO_OUT_OF_RANGE',
        message: expect.stringMatching(/exceeds maxSeqLen 160/),
      });
      await expect(
        p.trainStep(x, {
          ids: new Int32Array(3),
          lengths: new Int32Array(3),
          width: 1,
          advantages: new Float32Array(2),
        }),
      ).rejects.toThrow(/completions.advantages/);
      await expect(
        p.trainStep(
          x,
          { ids: new Int32Array(3), lengths: new Int32Array(3), width: 1, advantages: new Float32Array(3) },
          { aggregation: 'x' as never },
        ),
      ).rejects.toThrow(/options.aggregation/);
      // Native checks behind the TS ones.
      const a = torchAddon();
      const b = p.batch(x, 'test');
      // Argument errors throw synchronously, work errors reject: accept either.
      const fails = (f: () => unknown): Promise<unknown> => (async () => f())();
      await expect(
        fails(() => a.policyGenerate(p.id, { ...b, promptIds: Int32Array.from(b.promptIds, () => 9999) }, {})),
      ).rejects.toThrow(/promptIds\[0\]/);
      await expect(fails(() => a.policyGenerate(p.id, { ...b, frames: new Uint8Array(3) }, {}))).rejects.toThrow(
        /frames/,
      );
      await expect(fails(() => a.policyGenerate(123456, b, {}))).rejects.toThrow(/does not exist/);
      await expect(
        fails(() => a.policyGenerate(p.id, { ...b, promptTransform: ['x', 'none', 'none'] }, {})),
      ).rejects.toThrow(/promptTransform\[0\]/);
      // Option objects are read by one rule (native/common/napi_util, args::): undefined and null are
      // absent (the default), a value of the wrong type is refused with the key's name.
      await expect(fails(() => a.policyGenerate(p.id, b, { greedy: 'yes' } as never))).rejects.toThrow(
        /expected a boolean for greedy/,
      );
      await expect(fails(() => a.policyGenerate(p.id, b, { maxNewTokens: 1.5 }))).rejects.toThrow(/maxNewTokens/);
      await expect(fails(() => a.policyGenerate(p.id, b, 'x' as never))).rejects.toThrow(/options/);
      const plain = await a.policyGenerate(p.id, b, { greedy: true, maxNewTokens: 3 });
      const nulls = await a.policyGenerate(p.id, b, {
        greedy: true,
        maxNewTokens: 3,
        temperature: null,
        topK: null,
        stop: null,
      } as never);
      expect(Array.from(nulls.tokens)).toEqual(Array.from(plain.tokens));
      expect(Array.from(nulls.logprobs)).toEqual(Array.from(plain.logprobs));
      await expect(fails(() => a.policyCreate({ vocabSize: 50, lmHeads: 5, lmKvHeads: 5 }))).rejects.toThrow(
        /lmDim must be a multiple of lmHeads/,
      );
      await expect(fails(() => a.policyCreate({ vocabSize: 50, posInit: 'grid' } as never))).rejects.toThrow(
        /posInit must be 'random' or 'sincos', got 'grid'/,
      );
      await expect(fails(() => a.policyCreate({ vocabSize: 50, visionStemDown: 8 }))).rejects.toThrow(
        /visionStemDown needs the stem/,
      );
      await expect(
        fails(() => a.policyCreate({ vocabSize: 50, visionStem: 4, visionStemDown: 8, patchSize: 5, imageSize: 40 })),
      ).rejects.toThrow(/visionStemDown needs an even patchSize/);
      await expect(fails(() => a.policyCreate({ vocabSize: 50, dtype: 'bfloat16' }))).rejects.toThrow(
        /needs a CUDA device/,
      );
      await expect(
        fails(() => a.policySetState(p.id, 'weights', [{ name: 'x', shape: [1], data: new Float32Array(1) }])),
      ).rejects.toThrow(/missing tensor/);
      await expect(
        fails(() =>
          a.policyTrainStep(
            p.id,
            b,
            { ids: new Int32Array(3), lengths: Int32Array.of(1, 1, 5), width: 1, advantages: new Float32Array(3) },
            {},
          ),
        ),
      ).rejects.toThrow(/completions.lengths\[2\]/);
      await expect(
        fails(() =>
          a.policyTrainStep(
            p.id,
            b,
            { ids: new Int32Array(3), lengths: Int32Array.of(1, 1, 1), width: 1, advantages: new Float32Array(3) },
            { gradBucketMb: -1 },
          ),
        ),
      ).rejects.toMatchObject({
        code: 'ERR_CRPO_OUT_OF_RANGE',
        message: 'policyTrainStep: expected a number >= 0 (MiB) for gradBucketMb but received -1.000000',
      });
      expect(() => a.policySetRngState(p.id, new Uint8Array(3))).toThrow(/RNG state/);
      await expect(PolicyModel.create(tokenizer, { preset: 'huge' as never })).rejects.toThrow(/config.preset/);
    } finally {
      p.dispose();
    }
    await expect(p.generate(inputs(1))).rejects.toMatchObject({ code: 'ERR_CRPO_DISPOSED' });
  });

  maybe('every handle is released', () => {
    expect(livePolicies()).toBe(0);
    expect(liveHandleCount()).toBe(startHandles);
  });
});
