/**
 * The vision attribute head of the native policy (config visionAuxClasses, sftStep
 * visionAuxWeight; docs/model.md, "Levers, fifth round"): the loss of each label is the
 * cross-entropy over its own logit group, it trains the vision encoder and the head and nothing
 * else, the labels of the synthetic data name the gold answer, and wrong use is refused.
 */
import { PolicyModel, Tokenizer, type PolicyInputs } from '../../lib/model';
import {
  VISION_LABEL_CLASSES,
  VISION_LABEL_GROUPS,
  attributeItems,
  readingItem,
  visionLabel,
} from '../../lib/synth/auxiliary';
import { synthesizePair, SYNTH_QUESTIONS } from '../../lib/synth';
import { itWithNativePolicy, TINY_QUESTIONS, tinyClips } from '../helpers/native-policy';

const maybe = itWithNativePolicy('vision attribute head tests');
const tokenizer = Tokenizer.build(TINY_QUESTIONS);
const targets = ['<answer>A</answer>', '<answer>B</answer>', '<answer>C</answer>'];

const labelled = (): PolicyInputs => ({
  frames: tinyClips(2, 5),
  numVideos: 2,
  prompts: [
    { video: 0, text: TINY_QUESTIONS[0], visionLabel: { start: 0, size: 3, index: 2 } },
    { video: 1, text: TINY_QUESTIONS[1], transform: 'hflip', visionLabel: { start: 3, size: 4, index: 0 } },
    { video: 0, text: TINY_QUESTIONS[2] },
  ],
});

async function create(visionAuxClasses: number, seed = 3): Promise<PolicyModel> {
  return PolicyModel.create(tokenizer, { preset: 'tiny', seed, visionAuxClasses });
}

const logSoftmax = (x: number[], k: number): number => {
  const m = Math.max(...x);
  return x[k] - m - Math.log(x.reduce((s, v) => s + Math.exp(v - m), 0));
};

describe('vision attribute head (native policy)', () => {
  maybe('each label is scored over its own logit group only', async () => {
    const p = await create(8);
    try {
      // A zero head with a known bias: the logits are the bias whatever the clip, so the loss is
      // the mean over the two labelled prompts of -log_softmax(bias[group])[class].
      const bias = [0.3, -1.2, 2.0, 0.5, 0.1, -0.7, 1.4, 9.0];
      const weights = await p.getWeights();
      for (const t of weights) {
        if (t.name === 'vision_aux.weight') t.data.fill(0);
        if (t.name === 'vision_aux.bias') t.data.set(bias);
      }
      await p.setWeights(weights);
      const st = await p.sftStep(labelled(), targets, { lr: 0, visionAuxWeight: 1 });
      const expected = -(logSoftmax(bias.slice(0, 3), 2) + logSoftmax(bias.slice(3, 7), 0)) / 2;
      expect(st.visionAuxLoss).toBeCloseTo(expected, 5); // float32; the last logit (9.0) is in no group
      const off = await p.sftStep(labelled(), targets, { lr: 0, visionAuxWeight: 0 }).catch((e: Error) => e);
      expect(String(off)).toMatch(/a number > 0 when prompts carry a visionLabel.*options.visionAuxWeight/);
    } finally {
      p.dispose();
    }
  });

  maybe('trains the vision encoder and the head, and leaves the language model as the step without it', async () => {
    // No clipping: the language model's gradient is the same with and without the vision term,
    // so its AdamW update is too; the vision encoder's and the projector's inputs get more.
    const opts = { lr: 1e-2, maxGradNorm: 0, weightDecay: 0 };
    const plain = { ...labelled(), prompts: labelled().prompts.map(({ visionLabel: _v, ...q }) => q) };
    const [a, b] = [await create(8), await create(8)];
    try {
      await a.sftStep(labelled(), targets, { ...opts, visionAuxWeight: 1 });
      await b.sftStep(plain, targets, opts);
      const wa = await a.getWeights();
      const wb = await b.getWeights();
      const gap = (prefix: string): number => {
        let g = 0;
        wa.forEach((t, i) => {
          if (!t.name.startsWith(prefix)) return;
          t.data.forEach((v, k) => (g = Math.max(g, Math.abs(v - wb[i].data[k]))));
        });
        return g;
      };
      expect(gap('lm.')).toBe(0);
      expect(gap('projector.')).toBe(0);
      expect(gap('vision.')).toBeGreaterThan(1e-4);
      expect(gap('vision_aux.')).toBeGreaterThan(1e-4);
      // Repeated steps on one batch drive the vision loss down.
      const first = (await a.sftStep(labelled(), targets, { ...opts, lr: 3e-3, visionAuxWeight: 1 })).visionAuxLoss;
      let last = first;
      for (let i = 0; i < 20; i++)
        last = (await a.sftStep(labelled(), targets, { ...opts, lr: 3e-3, visionAuxWeight: 1 })).visionAuxLoss;
      expect(last).toBeLessThan(first * 0.5);
    } finally {
      a.dispose();
      b.dispose();
    }
  });

  maybe('refuses labels outside the head, a weight without a head, and reports no loss when off', async () => {
    const noHead = await create(0);
    const p = await create(8);
    try {
      await expect(noHead.sftStep(labelled(), targets, { lr: 1e-3, visionAuxWeight: 1 })).rejects.toThrow(
        /0 for a policy without a vision attribute head.*options.visionAuxWeight/,
      );
      const outside = labelled();
      (outside.prompts[1] as { visionLabel: object }).visionLabel = { start: 6, size: 4, index: 0 };
      await expect(p.sftStep(outside, targets, { lr: 1e-3, visionAuxWeight: 1 })).rejects.toThrow(
        /inside the vision attribute head's 8 logits.*prompts\[1\]\.visionLabel/,
      );
      const badClass = labelled();
      (badClass.prompts[0] as { visionLabel: object }).visionLabel = { start: 0, size: 3, index: 3 };
      await expect(p.sftStep(badClass, targets, { lr: 1e-3, visionAuxWeight: 1 })).rejects.toThrow(/index < size/);
      const st = await p.sftStep(
        { ...labelled(), prompts: labelled().prompts.map(({ visionLabel: _v, ...q }) => q) },
        targets,
        { lr: 1e-3 },
      );
      expect(st.visionAuxLoss).toBe(0);
      await expect(PolicyModel.create(tokenizer, { preset: 'tiny', visionAuxClasses: -1 })).rejects.toThrow(
        /config.visionAuxClasses/,
      );
    } finally {
      noHead.dispose();
      p.dispose();
    }
  });
});

describe('vision labels of the synthetic data (lib/synth/auxiliary.ts)', () => {
  test('every question kind labels its gold answer; reading questions carry no label', () => {
    expect(VISION_LABEL_CLASSES).toBe(VISION_LABEL_GROUPS.reduce((n, g) => n + g.answers.length, 0));
    const seen = new Set<string>();
    for (const category of ['static', 'moving_direction', 'reversible_dynamics', 'event_sequence'] as const) {
      for (let i = 0; i < 12; i++) {
        const pair = synthesizePair({ split: 'train', pairs: 1, seed: 4, frames: 8, size: 32 }, category, i);
        for (const it of pair.flatMap((x) => [x, ...attributeItems(x, `k${i}`)])) {
          const l = visionLabel(it.record);
          expect(l).toBeDefined();
          let start = 0;
          const group = VISION_LABEL_GROUPS.find((g) => {
            if (g.question === it.record.question) return true;
            start += g.answers.length;
            return false;
          })!;
          expect(l).toEqual({
            start,
            size: group.answers.length,
            index: group.answers.indexOf(it.record.options[it.record.answer]),
          });
          expect(l!.index).toBeGreaterThanOrEqual(0);
          seen.add(it.record.question);
        }
        expect(visionLabel(readingItem(pair[0], `r${i}`).record)).toBeUndefined();
      }
    }
    // Every kind of question the generator asks was labelled.
    for (const q of Object.values(SYNTH_QUESTIONS)) expect(seen).toContain(q.question);
  });
});
