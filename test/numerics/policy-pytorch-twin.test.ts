/**
 * The PyTorch-Python twin of the native policy (bench/pytorch/policy_twin.py), which the
 * train-step and generation benchmarks time against, is the same model: with the same weights
 * and batch it gives the same section-6 loss, the same gradient of every parameter (read back
 * from AdamW's first moment after one unclipped step) and the same greedy tokens. Skipped, with
 * the reason, when Debian's python3-torch or the native policy is absent.
 */
import * as fs from 'fs';
import * as path from 'path';
import type { RlCompletions } from '../../lib/model/policy';
import {
  TwinServer,
  handOver,
  hasPolicy,
  lcg,
  makeInputs,
  pythonTorch,
  readF32,
  readI32,
  tinyPolicy,
} from '../../bench/pytorch/policy-fixture';
import { skipIf } from '../helpers/skip';

const why = pythonTorch() ?? (hasPolicy() ? null : 'the torch addon has no native policy');
const maybe = skipIf(why).it;

maybe(
  'same loss, gradients and greedy tokens as the native policy',
  async () => {
    const policy = await tinyPolicy();
    const G = 2,
      W = 5;
    const inputs = makeInputs(policy, 2, G, true, 3);
    const N = inputs.prompts.length * G;
    const rand = lcg(9);
    const V = policy.tokenizer.size;
    const ids = Int32Array.from({ length: N * W }, () => 6 + Math.floor(rand() * (V - 6)));
    const lengths = Int32Array.from({ length: N }, () => 2 + Math.floor(rand() * (W - 1)));
    const cur = (await policy.logprobs(inputs, { ids, lengths, width: W })).logprobs;
    const comp: RlCompletions = {
      ids,
      lengths,
      width: W,
      advantages: Float32Array.from({ length: N }, () => rand() - 0.5),
      oldLogprobs: Float32Array.from(cur, (x) => x + (rand() - 0.5) * 0.2),
      refLogprobs: Float32Array.from(cur, (x) => x + (rand() - 0.5) * 0.2),
    };
    const step = {
      temperature: 1,
      epsLow: 0.2,
      epsHigh: 0.2,
      beta: 0.04,
      lr: 1e-3,
      beta1: 0.9,
      beta2: 0.999,
      adamEps: 1e-8,
      weightDecay: 0,
      maxGradNorm: 0,
    };
    const dir = await handOver(policy, inputs, { threads: 1, step }, comp);
    try {
      const twin = new TwinServer(dir, 'train');
      const py = (await twin.ready()) as {
        check: { loss: number; gradNorm: number };
        gradNames: string[];
        gradShapes: number[][];
      };
      twin.close();
      const st = await policy.trainStep(inputs, comp, step);
      expect(Math.abs(st.loss - py.check.loss)).toBeLessThan(1e-5 * Math.max(1, Math.abs(py.check.loss)));
      expect(st.gradNorm).toBeCloseTo(py.check.gradNorm, 4);
      const m1 = new Map(
        (await policy.getOptimizerState()).tensors
          .filter((t) => t.name.endsWith('.exp_avg'))
          .map((t) => [t.name.replace(/\.exp_avg$/, ''), t.data]),
      );
      const grads = readF32(path.join(dir, 'py_grads.bin'));
      let at = 0,
        worst = 0;
      py.gradNames.forEach((name, k) => {
        const n = py.gradShapes[k].reduce((a, s) => a * s, 1);
        const m = m1.get(name)!;
        expect(m.length).toBe(n);
        for (let i = 0; i < n; i++) worst = Math.max(worst, Math.abs(m[i] / (1 - step.beta1) - grads[at + i]));
        at += n;
      });
      expect(at).toBe(grads.length);
      expect(worst).toBeLessThan(1e-6);

      const gen = await tinyPolicy(policy.tokenizer);
      await gen.setWeights(await policy.getWeights());
      const gdir = await handOver(gen, { ...inputs, groupSize: 1 }, { threads: 1, maxNewTokens: 6, temperature: 1 });
      const twin2 = new TwinServer(gdir, 'generate');
      await twin2.ready();
      twin2.close();
      const native = await gen.generate({ ...inputs, groupSize: 1 }, { maxNewTokens: 6, greedy: true, stop: [] });
      expect(Array.from(native.ids)).toEqual(Array.from(readI32(path.join(gdir, 'py_greedy_tokens.bin'))));
      gen.dispose();
      fs.rmSync(gdir, { recursive: true, force: true });
    } finally {
      policy.dispose();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  },
  120_000,
);
