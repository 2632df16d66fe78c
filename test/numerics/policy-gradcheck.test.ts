/**
 * Numerics of the native policy: finite-difference gradient checks of every module in float64
 * (native/torch/model grad_check), and the native section-6 loss against the plain-loop TS
 * reference (lib/algo/loss.ts referencePolicyLoss) on hand values and random ones, every aggregation.
 */
import { referencePolicyLoss, LOSS_AGGREGATIONS } from '../../lib/algo/loss';
import { nativePolicyLoss, policyGradCheck } from '../../lib/model';
import { itWithNativePolicy } from '../helpers/native-policy';

const maybe = itWithNativePolicy('policy numerics');

const MODULES = [
  'rmsnorm',
  'rotary',
  'attention',
  'swiglu',
  'decoder_layer',
  'language_model',
  'vision_encoder',
  'vision_encoder_clip',
  'vision_encoder_stem',
  'vision_encoder_stem_down',
  'projector',
  'policy_loss',
  'policy',
];

describe('policy gradient checks (float64, central differences)', () => {
  for (const m of MODULES) {
    maybe(`${m}: analytic gradients match finite differences`, async () => {
      const r = await policyGradCheck(m, 7);
      expect(r.checked).toBeGreaterThan(10);
      // Non-trivial gradients, and agreement to ~1e-6 relative.
      expect(r.maxAbsGrad).toBeGreaterThan(1e-2);
      expect(r.maxError).toBeLessThan(1e-6);
    });
  }
  maybe('an unknown module is refused with the list of known ones', async () => {
    await expect(policyGradCheck('nope', 0)).rejects.toThrow(/unknown module 'nope' \(known: rmsnorm/);
  });
});

describe('policy loss: native vs TS reference', () => {
  maybe('hand values, each aggregation', () => {
    // 2 sequences x 3 tokens; the second has 2 tokens.
    const logprobs = Float32Array.from([-1.0, -0.5, -2.0, -0.2, -1.5, 0]);
    const oldLogprobs = Float32Array.from([-1.2, -0.5, -1.0, -0.9, -1.4, 0]);
    const refLogprobs = Float32Array.from([-1.1, -0.4, -2.5, -0.2, -30, 0]);
    const advantages = Float32Array.from([1.5, -0.7]);
    const mask = Float32Array.from([1, 1, 1, 1, 1, 0]);
    // Token 0 of seq 0: ratio e^0.2 = 1.2214 > 1.2 with A > 0: clipped, -1.2*1.5 = -1.8.
    // Token 2 of seq 0: ratio e^-1 = 0.3679; A > 0: unclipped -0.5518.
    const hand = referencePolicyLoss(
      { rows: 2, width: 3, logprobs, oldLogprobs, refLogprobs, advantages, mask },
      { aggregation: 'token-mean', beta: 0 },
    );
    const r0 = Math.exp(0.2),
      r2 = Math.exp(-1),
      r3 = Math.exp(0.7),
      r4 = Math.exp(-0.1);
    const expectTok = [
      -1.2 * 1.5,
      -1 * 1.5,
      -r2 * 1.5,
      Math.max(-r3 * -0.7, -1.2 * -0.7),
      Math.max(-r4 * -0.7, -Math.max(r4, 0.8) * -0.7),
    ];
    expect(r0).toBeGreaterThan(1.2);
    expect(hand.pgLoss).toBeCloseTo(expectTok.reduce((a, b) => a + b, 0) / 5, 6); // inputs are float32-rounded
    expect(hand.clipFrac).toBeCloseTo(1 / 5, 12); // only token 0 (token 3: ratio 2.01 with A < 0 is not clipped)
    for (const aggregation of LOSS_AGGREGATIONS) {
      const o = { aggregation, beta: 0.04, epsLow: 0.2, epsHigh: 0.28, maxNewTokens: 4 };
      const ref = referencePolicyLoss({ rows: 2, width: 3, logprobs, oldLogprobs, refLogprobs, advantages, mask }, o);
      const nat = nativePolicyLoss({ rows: 2, width: 3, logprobs, oldLogprobs, refLogprobs, advantages, mask }, o);
      for (const k of ['loss', 'pgLoss', 'klLoss', 'meanKl', 'clipFrac', 'ratioMean', 'tokens'] as const)
        expect(nat[k]).toBeCloseTo(ref[k], 6);
      // The masked token never gets a gradient.
      expect(nat.grad[5]).toBe(0);
    }
    // The k3 log-ratio is clamped at 10: token 4 has ref - logp = -28.5 -> d = -10.
    const kl = referencePolicyLoss(
      { rows: 1, width: 1, logprobs: [-1.5], refLogprobs: [-30], advantages: [0], mask: [1] },
      { aggregation: 'token-mean' },
    );
    expect(kl.meanKl).toBeCloseTo(Math.exp(-10) + 10 - 1, 12);
  });

  maybe('random values, every aggregation, no old/ref (ratio 1, no KL)', () => {
    let s = 3;
    const rnd = (): number => (s = (s * 16807) % 2147483647) / 2147483647;
    const N = 7,
      C = 5;
    const logprobs = Float32Array.from({ length: N * C }, () => -3 * rnd());
    const oldLogprobs = Float32Array.from(logprobs, (v) => v + (rnd() - 0.5));
    const refLogprobs = Float32Array.from(logprobs, (v) => v + (rnd() - 0.5) * 4);
    const advantages = Float32Array.from({ length: N }, () => rnd() * 2 - 1);
    const mask = new Float32Array(N * C);
    for (let n = 0; n < N; n++) for (let t = 0; t < 1 + (n % C); t++) mask[n * C + t] = 1;
    for (const aggregation of LOSS_AGGREGATIONS) {
      for (const withOld of [true, false]) {
        const x = { rows: N, width: C, logprobs, advantages, mask, ...(withOld ? { oldLogprobs, refLogprobs } : {}) };
        const ref = referencePolicyLoss(x, { aggregation });
        const nat = nativePolicyLoss(x, { aggregation });
        expect(nat.loss).toBeCloseTo(ref.loss, 6);
        expect(nat.clipFrac).toBeCloseTo(ref.clipFrac, 6);
        if (!withOld) expect(nat.ratioMean).toBeCloseTo(1, 12);
      }
    }
  });
});
