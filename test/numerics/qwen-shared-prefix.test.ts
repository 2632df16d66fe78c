/**
 * Shared-prefix scoring and training of the Qwen models (native/torch/qwen/qwen_prefix.cpp)
 * against its slow twin, the per-row path (every row whole, as transformers runs it), on the
 * golden Qwen2.5-VL and Qwen3-VL configs: two prompts (the video case and the image + video case)
 * with 3 and 2 completions of different lengths (one empty), right-padded, in one batch. Log-probs,
 * the GRPO loss (clipping, k3 KL) and every gradient of a train step (LoRA with checkpointing, and
 * full training of LM + vision without) agree within 1e-5 relative; bad groupings are refused.
 * Generation: the G identical rows of a prompt prefill once (qwen_model.cpp generate), against a
 * prefill per row and a single-row call.
 */
import * as path from 'path';
import { QwenVLModel, type QwenInputs } from '../../lib/hf/model';
import { QwenPolicy } from '../../lib/policy/qwen';
import type { PolicyPrompt } from '../../lib/policy/policy';
import { GOLDEN_ROOT, caseInputs, goldenSkipReason, readCase } from './golden-qwen-helpers';
import { skipIf } from '../helpers/skip';

const LORA = {
  rank: 4,
  alpha: 8,
  targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
  seed: 1,
};

/** Deterministic pseudo-random numbers in [0, 1). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 4294967296) % 1;
}

interface Batch {
  inputs: QwenInputs;
  /** Per row: prefix length and completion length. */
  prefix: number[];
  completion: number[];
  L: number;
}

/** Prompt A (video) x 3 completions and prompt B (image + video) x 2, one of them empty. */
function batch(model: string): Batch {
  const a = caseInputs(readCase(model, 'video'));
  const b = caseInputs(readCase(model, 'image_video'));
  const r = rng(17);
  // completion tokens: ordinary ids of the 320-token golden vocabulary (300-303 are vision tokens)
  const tok = () => 3 + Math.floor(r() * 290);
  const lens = [5, 3, 7, 4, 0];
  const prompts = [a.inputIds[0], a.inputIds[0], a.inputIds[0], b.inputIds[0], b.inputIds[0]];
  const rows = prompts.map((p, i) => [...p, ...Array.from({ length: lens[i] }, tok)]);
  const L = Math.max(...rows.map((x) => x.length));
  const cat = (xs: Float32Array[]) => {
    const out = new Float32Array(xs.reduce((n, x) => n + x.length, 0));
    let off = 0;
    for (const x of xs) {
      out.set(x, off);
      off += x.length;
    }
    return out;
  };
  const inputs: QwenInputs = {
    inputIds: rows.map((x) => [...x, ...Array(L - x.length).fill(0)]),
    attentionMask: rows.map((x) => [...x.map(() => 1), ...Array(L - x.length).fill(0)]),
    pixelValues: b.pixelValues,
    imageGridThw: b.imageGridThw,
    imageRepeats: [2],
    pixelValuesVideos: cat([a.pixelValuesVideos!, b.pixelValuesVideos!]),
    videoGridThw: [...a.videoGridThw!, ...b.videoGridThw!],
    videoRepeats: [3, 2],
    secondPerGridTs: a.secondPerGridTs && b.secondPerGridTs ? [...a.secondPerGridTs, ...b.secondPerGridTs] : undefined,
  };
  return { inputs, prefix: prompts.map((p) => p.length), completion: lens, L };
}

function shared(bt: Batch): QwenInputs {
  return {
    ...bt.inputs,
    prefixGroups: [
      { rows: 3, prefixLength: bt.prefix[0] },
      { rows: 2, prefixLength: bt.prefix[3] },
    ],
  };
}

/** max |a - b| / max(1e-8, max |b|) over one tensor: the relative difference the tests bound. */
function relDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0,
    s = 0;
  for (let i = 0; i < b.length; i++) {
    d = Math.max(d, Math.abs(a[i] - b[i]));
    s = Math.max(s, Math.abs(b[i]));
  }
  return d / Math.max(s, 1e-8);
}

function randomizeLoraB(m: QwenVLModel, names: string[], seed: number): void {
  const r = rng(seed);
  for (const n of names.filter((x) => x.endsWith('lora_B'))) {
    const t = m.getParam(n);
    m.setParam(
      n,
      Float32Array.from(t.data, () => (r() - 0.5) * 0.1),
    );
  }
}

for (const model of ['qwen2_5_vl', 'qwen3_vl'] as const) {
  skipIf(goldenSkipReason(model)).describe(`${model}: shared prefix equals the per-row path`, () => {
    const dir = path.join(GOLDEN_ROOT, model);
    const bt = batch(model);
    const B = bt.completion.length;
    const W = bt.L - 1;
    // completion targets in the (B, L-1) layout: column prefix - 1 + j predicts completion token j
    const cols = (b: number) => Array.from({ length: bt.completion[b] }, (_, j) => b * W + bt.prefix[b] - 1 + j);

    test('log-probs of every completion token, at temperature 1 and 0.7, LoRA on and off', async () => {
      const m = await QwenVLModel.load(dir);
      try {
        randomizeLoraB(m, m.addLora(LORA), 3);
        for (const o of [{}, { temperature: 0.7 }, { lora: false }]) {
          const slow = await m.forward(bt.inputs, o);
          const fast = await m.forward(shared(bt), o);
          const idx = Array.from({ length: B }, (_, b) => cols(b)).flat();
          expect(idx.length).toBe(19);
          const s = idx.map((i) => slow.tokenLogprobs.data[i]);
          const f = idx.map((i) => fast.tokenLogprobs.data[i]);
          expect(relDiff(f, s)).toBeLessThan(1e-5);
          // nothing else is scored: prefix targets and padding are NaN, and no logits come back
          const scored = new Set(idx);
          const rest = Array.from(fast.tokenLogprobs.data).filter((_, i) => !scored.has(i));
          expect(rest.length).toBe(B * W - idx.length);
          expect(rest.every((x) => Number.isNaN(x))).toBe(true);
          expect(fast.logits.data.length).toBe(0);
          expect(fast.tokenLogprobs.shape).toEqual([B, W]);
        }
      } finally {
        m.dispose();
      }
    });

    for (const mode of ['lora', 'all'] as const) {
      const what = mode === 'lora' ? 'LoRA, gradient checkpointing' : 'full (LM + vision), no checkpointing';
      test(`GRPO train step (${what}): loss, statistics and every gradient within 1e-5 relative`, async () => {
        const m = await QwenVLModel.load(dir);
        try {
          if (mode === 'lora') {
            randomizeLoraB(m, m.addLora(LORA), 5);
            m.setGradientCheckpointing(true);
          }
          const names = m.setTrainable(mode);
          const ref = await m.forward(bt.inputs, { lora: false });
          const r = rng(9);
          const completionMask = new Int32Array(B * bt.L);
          const oldLogprobs = new Float32Array(B * W);
          const refLogprobs = new Float32Array(B * W);
          for (let b = 0; b < B; b++)
            for (const [j, c] of cols(b).entries()) {
              completionMask[b * bt.L + bt.prefix[b] + j] = 1;
              // behaviour log-probs off the current ones, so some ratios clip
              oldLogprobs[c] = ref.tokenLogprobs.data[c] + (r() - 0.5) * 0.6;
              refLogprobs[c] = ref.tokenLogprobs.data[c] + (r() - 0.5) * 0.2;
            }
          const step = {
            completionMask,
            advantages: Float32Array.of(1, -0.5, 0.25, 1.5, 0.75), // mostly positive: a loss far from 0
            oldLogprobs,
            refLogprobs,
            klBeta: 0.05,
            aggregation: 'seq-mean-token-mean',
            temperature: 0.9,
            apply: false,
          };
          const slow = await m.trainStep(bt.inputs, step);
          const gSlow = m.gradients(names);
          m.setTrainable(mode); // a fresh accumulation: the next step starts from zero gradients
          const fast = await m.trainStep(shared(bt), step);
          const gFast = m.gradients(names);
          expect(fast.tokens).toBe(19);
          expect(slow.tokens).toBe(19);
          expect(slow.clipFraction).toBeGreaterThan(0);
          for (const k of ['loss', 'pgLoss', 'kl', 'entropy'] as const)
            expect(Math.abs(fast[k] - slow[k])).toBeLessThanOrEqual(1e-5 * Math.abs(slow[k]));
          expect(fast.clipFraction).toBe(slow.clipFraction);
          const bad: string[] = [];
          let nonzero = 0;
          let worst = 0;
          for (const n of names) {
            const d = relDiff(gFast[n].data, gSlow[n].data);
            worst = Math.max(worst, d);
            if (gSlow[n].data.some((x) => x !== 0)) nonzero++;
            if (!(d <= 1e-5)) bad.push(`${n}: relative difference ${d.toExponential(2)}`);
          }
          console.log(
            `${model} ${mode}: ${names.length} gradients, worst relative difference ${worst.toExponential(2)}`,
          );
          expect(bad).toEqual([]);
          // the comparison has teeth: most gradients are non-zero (vision ones too in full training)
          expect(nonzero).toBeGreaterThan(names.length * 0.8);
          if (mode === 'all') expect(names.some((n) => n.includes('visual'))).toBe(true);
        } finally {
          m.dispose();
        }
      });
    }

    test('generation: the G rows of a prompt prefill once; tokens and log-probs as a prefill per row', async () => {
      const m = await QwenVLModel.load(dir);
      try {
        const one = caseInputs(readCase(model, 'image_video'));
        const rep = <T>(x: T[]) => [x[0], x[0], x[0]];
        const rows = { ...one, inputIds: rep(one.inputIds), attentionMask: rep(one.attentionMask!) };
        const shared = { ...rows, shareVision: true }; // identical rows, vision shared: one prefill
        const perRow = { ...rows, imageRepeats: [3], videoRepeats: [3] }; // a prefill per row (its twin)
        const greedy = { maxNewTokens: 5, eosTokenId: -1 };
        const g1 = await m.generate(one, greedy);
        const g3 = await m.generate(shared, greedy);
        for (let b = 0; b < 3; b++) {
          expect(g3.tokens[b]).toEqual(g1.tokens[0]);
          expect(relDiff(g3.logprobs[b], g1.logprobs[0])).toBeLessThan(1e-5);
        }
        const sampled = { maxNewTokens: 6, eosTokenId: -1, temperature: 1, seed: 5 };
        const a = await m.generate(shared, sampled);
        const b = await m.generate(perRow, sampled);
        expect(a.tokens).toEqual(b.tokens);
        expect(relDiff(a.logprobs.flat(), b.logprobs.flat())).toBeLessThan(1e-5);
        expect(new Set(a.tokens.map((t) => t.join(','))).size).toBeGreaterThan(1); // rows sample apart
      } finally {
        m.dispose();
      }
    });

    test('refused: rows that do not share the prefix, completions marking prefix tokens, bad groups', async () => {
      const m = await QwenVLModel.load(dir);
      try {
        const wrong: QwenInputs = {
          ...shared(bt),
          prefixGroups: [
            { rows: 2, prefixLength: bt.prefix[0] },
            { rows: 3, prefixLength: bt.prefix[3] },
          ],
        };
        await expect(m.forward(wrong)).rejects.toMatchObject({ code: 'ERR_CRPO_TORCH' });
        await expect(m.forward(wrong)).rejects.toThrow(
          /does not share the first|is repeated|fewer than its group's prefix/,
        );
        const mask = new Int32Array(B * bt.L);
        mask[5] = 1; // a prompt token
        await expect(m.trainStep(shared(bt), { completionMask: mask, objective: 'sft', apply: false })).rejects.toThrow(
          /may mark only completion tokens/,
        );
        expect(() => m.prepare({ ...bt.inputs, prefixGroups: [{ rows: 4, prefixLength: bt.prefix[0] }] })).toThrow(
          /Expected 5 \(the batch's rows\) for the rows of inputs.prefixGroups but received 4/,
        );
        expect(() => m.prepare({ ...bt.inputs, prefixGroups: [{ rows: 5, prefixLength: 0 }] })).toThrow(
          /inputs.prefixGroups\[0\].prefixLength/,
        );
      } finally {
        m.dispose();
      }
    });
  });
}

skipIf(goldenSkipReason('qwen3_vl')).describe('qwen policy: sharedPrefix on (default) and off agree', () => {
  test('log-probs, reference log-probs, a GRPO step and the log-probs after it', async () => {
    const frames = (seed: number) => Uint8Array.from({ length: 4 * 64 * 64 * 3 }, (_, i) => (i * (seed + 3)) % 251);
    const prompts: PolicyPrompt[] = [1, 2].map((s) => ({
      frames: frames(s),
      frameShape: [4, 64, 64, 3],
      question: 'Is it moving?',
      options: ['yes', 'no'],
      prompt: 'Is it moving?\nA. yes\nB. no\nAnswer with the option letter inside <answer></answer>.',
    }));
    const opts = {
      model: path.join(GOLDEN_ROOT, 'qwen3_vl'),
      minPixels: 4096,
      maxPixels: 4 * 64 * 64,
      lora: { rank: 4, alpha: 8, targetModules: ['q_proj', 'v_proj', 'down_proj'], seed: 1 },
    };
    const fast = await QwenPolicy.create(opts);
    const slow = await QwenPolicy.create({ ...opts, sharedPrefix: false });
    try {
      const gen = await fast.generate(prompts, { samples: 4, temperature: 1, maxNewTokens: 6, seed: 3 });
      const seqs = gen.flatMap((g, i) => g.map((c) => ({ prompt: i, tokens: c.tokens })));
      const diff = (a: number[][], b: number[][]) => relDiff(a.flat(), b.flat());
      const lp = await slow.logprobs(prompts, seqs, { temperature: 1 });
      expect(diff(await fast.logprobs(prompts, seqs, { temperature: 1 }), lp)).toBeLessThan(1e-5);
      expect(
        diff(
          gen.flat().map((c) => c.logprobs),
          lp,
        ),
      ).toBeLessThan(1e-4);
      const ref = await slow.logprobs(prompts, seqs, { temperature: 1, reference: true });
      expect(diff(await fast.logprobs(prompts, seqs, { temperature: 1, reference: true }), ref)).toBeLessThan(1e-5);
      const train = seqs.map((s, k) => ({ ...s, advantage: k % 3 ? 1 : -1, oldLogprobs: lp[k], refLogprobs: ref[k] }));
      const o = {
        lr: 1e-2,
        maxGradNorm: 1,
        weightDecay: 0,
        temperature: 1,
        clipLow: 0.2,
        clipHigh: 0.28,
        beta: 0.04,
        aggregation: 'seq-mean-token-mean' as const,
        maxNewTokens: 6,
      };
      const a = await fast.trainStep(prompts, train, o);
      const b = await slow.trainStep(prompts, train, o);
      expect(a.tokens).toBe(b.tokens);
      expect(Math.abs(a.loss - b.loss)).toBeLessThanOrEqual(1e-5 * Math.abs(b.loss));
      expect(Math.abs(a.gradNorm - b.gradNorm)).toBeLessThanOrEqual(1e-5 * b.gradNorm);
      const after = await slow.logprobs(prompts, seqs, { temperature: 1 });
      expect(diff(after, lp)).toBeGreaterThan(1e-4); // the step changed the policy
      expect(diff(await fast.logprobs(prompts, seqs, { temperature: 1 }), after)).toBeLessThan(1e-5);
    } finally {
      fast.dispose();
      slow.dispose();
    }
  });
});
