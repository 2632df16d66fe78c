/**
 * The native section-6 policy loss of the torch policy (native/torch/model, `nativePolicyLoss`,
 * the loss its trainStep minimises) against the trainer's TS reference (lib/algo/loss.ts) on
 * random batches: loss, clip and KL parts, clip fraction and d loss / d logprobs, for every
 * aggregation (1e-6 relative; the native loss runs in float64).
 */
import { hasAddon, torchAddon } from '../../lib/native';
import { policyLoss, LOSS_AGGREGATIONS, type LossSequence } from '../../lib/algo';
import { rng } from '../helpers/random';
import { skipIf } from '../helpers/skip';

const available =
  hasAddon('torch') && typeof (torchAddon() as unknown as { policyLoss?: unknown }).policyLoss === 'function';

skipIf(!available && 'the torch addon with the native policy (policyLoss) is not built').describe(
  'native policy loss vs the TS reference',
  () => {
    // Loaded lazily: lib/model needs the torch addon's policy functions.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { nativePolicyLoss } = require('../../lib/model/policy') as typeof import('../../lib/model/policy');

    it.each(
      LOSS_AGGREGATIONS.flatMap(
        (a) =>
          [
            [a, 1],
            [a, 2],
          ] as const,
      ),
    )('%s (seed %i)', (aggregation, seed) => {
      const r = rng(seed * 101 + aggregation.length);
      const N = 12,
        C = 6,
        beta = 0.04,
        maxNewTokens = 8;
      const lengths = Array.from({ length: N }, () => 1 + Math.floor(r() * C));
      const lp = new Float32Array(N * C),
        old = new Float32Array(N * C),
        ref = new Float32Array(N * C),
        mask = new Float32Array(N * C);
      const adv = Float32Array.from({ length: N }, () => (r() - 0.5) * 3);
      const seqs: LossSequence[] = [];
      for (let n = 0; n < N; n++) {
        const s: LossSequence = { advantage: adv[n], logp: [], oldLogp: [], refLogp: [] };
        for (let t = 0; t < lengths[n]; t++) {
          const i = n * C + t;
          lp[i] = -3 * r();
          old[i] = lp[i] + (r() - 0.5) * 0.8;
          ref[i] = lp[i] + (r() - 0.5) * 2;
          mask[i] = 1;
          (s.logp as number[]).push(lp[i]);
          (s.oldLogp as number[]).push(old[i]);
          (s.refLogp as number[]).push(ref[i]);
        }
        seqs.push(s);
      }
      const want = policyLoss(seqs, { clipLow: 0.2, clipHigh: 0.28, beta, aggregation, maxNewTokens });
      const got = nativePolicyLoss(
        { logprobs: lp, oldLogprobs: old, refLogprobs: ref, advantages: adv, mask, rows: N, width: C },
        { epsLow: 0.2, epsHigh: 0.28, beta, aggregation, maxNewTokens },
      );
      const rel = (a: number, b: number) => Math.abs(a - b) / Math.max(1, Math.abs(b));
      expect(rel(got.loss, want.loss)).toBeLessThan(1e-6);
      expect(rel(got.pgLoss, want.pgLoss)).toBeLessThan(1e-6);
      expect(rel(got.clipFrac, want.clipFraction)).toBeLessThan(1e-6);
      let worst = 0,
        at = '';
      for (let n = 0; n < N; n++)
        for (let t = 0; t < C; t++) {
          const g = t < lengths[n] ? want.grads[n][t] : 0;
          const d = rel(got.grad[n * C + t], g);
          if (d > worst) {
            worst = d;
            at = `[${n},${t}] native ${got.grad[n * C + t]} vs ${g}`;
          }
        }
      if (worst > 1e-6) throw new Error(`d loss / d logprobs differs by ${worst} (relative) at ${at}`);
    });
  },
);
