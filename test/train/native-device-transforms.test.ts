/**
 * The native policy's second branch made on the device (lib/policy/native.ts, PolicyPrompt.transform;
 * native/torch/model encode_prompts_visual) against its slow twin, the frames transformed in JS
 * by the core addon (what the trainer gives a kind without device transforms): for CRPO's hflip,
 * reverse and swap, the rollouts, the reference log-probs and the train step (loss, statistics, the
 * weights after it) are bitwise equal. And a training step of the trainer packs its clips once:
 * every native call of the step reads the same buffer of B clips.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { transformFramesSync } from '../../lib/counterfactual';
import { PolicyModel, type PolicyInputs } from '../../lib/model';
import { createNativePolicy, type NativePolicy } from '../../lib/policy/native';
import { recordPrompt, type PolicyPrompt, type TrainSequence } from '../../lib/policy/policy';
import { train } from '../../lib/train/trainer';
import { itWithNativePolicy, tinyClips, tinyNativeTrainConfig } from '../helpers/native-policy';

const maybe = itWithNativePolicy('native device transforms');
const SHAPE: [number, number, number, 3] = [8, 32, 32, 3];
const CLIP = 8 * 32 * 32 * 3;
const RECORDS = [
  { question: 'In which direction does the object move?', options: ['left', 'right', 'up', 'down'] },
  { question: 'Which shape appears first?', options: ['circle', 'square'] },
  { question: 'What colour is the object?', options: ['red', 'green', 'blue'] },
];
const TEXTS = RECORDS.flatMap((r) => [
  recordPrompt(r, new Uint8Array(0), SHAPE, true).prompt,
  recordPrompt(r, new Uint8Array(0), SHAPE, false).prompt,
]);
const ROUTES = [
  { transform: 'hflip' as const },
  { transform: 'reverse' as const },
  { transform: 'swap' as const, swapAt: 3 },
];

/** One CRPO step's policy calls (trainer.ts steps 3, 5, 6) on the given second-branch prompts. */
async function step(p: NativePolicy, orig: PolicyPrompt[], second: PolicyPrompt[]) {
  const B = orig.length;
  const gen = { temperature: 1.3, maxNewTokens: 6, samples: 2 };
  const a = await p.generate(orig, { ...gen, seed: 1, promptSeeds: [5, 6, 7] });
  const b = await p.generate(second, { ...gen, seed: 2, promptSeeds: [8, 9, 10] });
  const seqs: TrainSequence[] = [];
  a.forEach((cs, k) =>
    cs.forEach((x, g) => seqs.push({ prompt: k, tokens: x.tokens, advantage: g ? 1 : -1, oldLogprobs: x.logprobs })),
  );
  b.forEach((cs, k) =>
    cs.forEach((x, g) =>
      seqs.push({ prompt: B + k, tokens: x.tokens, advantage: g ? -0.5 : 0.5, oldLogprobs: x.logprobs }),
    ),
  );
  const all = [...orig, ...second];
  const ref = await p.logprobs(all, seqs, { temperature: 1.3, reference: true });
  seqs.forEach((s, i) => {
    s.refLogprobs = ref[i];
  });
  const stats = await p.trainStep(all, seqs, {
    lr: 1e-2,
    maxGradNorm: 1,
    weightDecay: 0.1,
    temperature: 1.3,
    clipLow: 0.2,
    clipHigh: 0.28,
    beta: 0.04,
    aggregation: 'seq-mean-token-mean',
    maxNewTokens: 6,
  });
  return { a, b, ref, stats, digest: await p.weightsDigest() };
}

describe('native policy: counterfactual transforms on the device', () => {
  maybe('a CRPO step with device transforms equals the step with frames transformed in JS', async () => {
    const clips = tinyClips(3, 21);
    const frames = RECORDS.map((_, i) => clips.slice(i * CLIP, (i + 1) * CLIP));
    const orig = RECORDS.map((r, i) => recordPrompt(r, frames[i], SHAPE, true));
    const onDevice = RECORDS.map((r, i) => ({ ...recordPrompt(r, frames[i], SHAPE, true), ...ROUTES[i] }));
    const inJs = RECORDS.map((r, i) =>
      recordPrompt(
        r,
        transformFramesSync(frames[i], { shape: [1, ...SHAPE], ...ROUTES[i] }) as Uint8Array,
        SHAPE,
        true,
      ),
    );
    const run = async (second: PolicyPrompt[]) => {
      const p = await createNativePolicy({ seed: 4, preset: 'tiny', texts: TEXTS });
      try {
        await p.freezeReference();
        return await step(p, orig, second);
      } finally {
        p.dispose();
      }
    };
    const fast = await run(onDevice);
    const slow = await run(inJs);
    // the transforms change what the policy sees: the second branch differs from the original
    expect(fast.b.map((cs) => cs.map((x) => x.logprobs))).not.toEqual(fast.a.map((cs) => cs.map((x) => x.logprobs)));
    expect(fast.a).toEqual(slow.a);
    expect(fast.b).toEqual(slow.b);
    expect(fast.ref).toEqual(slow.ref);
    expect(fast.stats).toEqual(slow.stats);
    expect(fast.digest).toBe(slow.digest);
  });

  maybe('a training step packs its clips once: every native call reads the same buffer of B clips', async () => {
    const seen: PolicyInputs[] = [];
    const spies = (['generate', 'logprobs', 'trainStep'] as const).map((m) => {
      const orig = PolicyModel.prototype[m] as (this: PolicyModel, i: PolicyInputs, ...r: unknown[]) => unknown;
      return jest.spyOn(PolicyModel.prototype, m).mockImplementation(function (this: PolicyModel, i, ...r) {
        seen.push(i);
        return orig.call(this, i, ...r) as never;
      });
    });
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-device-transforms-'));
    try {
      await train(
        tinyNativeTrainConfig(out, {
          steps: 1,
          batchSize: 3,
          groupSize: 2,
          updateEpochs: 2,
          maxNewTokens: 4,
          seed: 2,
          data: { pairs: 4, valPairs: 0 },
        }),
        { log: () => undefined },
      );
      // 2 generates, the reference log-probs, 2 update epochs
      expect(seen).toHaveLength(5);
      expect(new Set(seen.map((i) => i.frames)).size).toBe(1);
      expect(seen.map((i) => i.numVideos)).toEqual([3, 3, 3, 3, 3]);
      // the second branch names the original clips with the route's transform
      expect(seen[1].prompts.every((q) => q.transform !== undefined && q.transform !== 'none')).toBe(true);
    } finally {
      spies.forEach((s) => s.mockRestore());
      fs.rmSync(out, { recursive: true, force: true });
    }
  });
});
