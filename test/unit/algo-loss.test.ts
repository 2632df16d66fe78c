/**
 * The section-6 policy loss reference (lib/algo/loss.ts) against hand-computed values: the clip
 * branches, the k3 KL and its clamp, the three aggregations, and the analytic gradient against
 * central finite differences.
 */
import { policyLoss, tokenLoss, type LossSettings, type LossSequence } from '../../lib/algo';

const S: LossSettings = {
  clipLow: 0.2,
  clipHigh: 0.2,
  beta: 0.04,
  aggregation: 'seq-mean-token-mean',
  maxNewTokens: 4,
};

describe('tokenLoss', () => {
  it('takes the clipped branch above 1+eps_high for a positive advantage (no gradient)', () => {
    // ratio = e^0.2 = 1.2214 > 1.2: loss = -min(1.2214, 1.2) = -1.2
    const t = tokenLoss(-1, -1.2, -1.1, 1, { ...S, beta: 0 });
    expect(t.clip).toBeCloseTo(-1.2, 12);
    expect(t.clipped).toBe(true);
    expect(t.grad).toBe(0);
  });

  it('keeps the unclipped branch below 1-eps_low for a positive advantage', () => {
    // ratio = e^-0.5 = 0.60653; -min(0.60653*1, 0.8*1) = -0.60653, grad = -ratio*A
    const t = tokenLoss(-1.5, -1, undefined, 1, { ...S, beta: 0 });
    expect(t.clip).toBeCloseTo(-Math.exp(-0.5), 12);
    expect(t.clipped).toBe(false);
    expect(t.grad).toBeCloseTo(-Math.exp(-0.5), 12);
  });

  it('clips below 1-eps_low for a negative advantage', () => {
    // A = -2, ratio 0.60653: -min(-1.21306, -1.6) = 1.6 (clipped), grad 0
    const t = tokenLoss(-1.5, -1, undefined, -2, { ...S, beta: 0 });
    expect(t.clip).toBeCloseTo(1.6, 12);
    expect(t.clipped).toBe(true);
    expect(t.grad).toBe(0);
  });

  it('k3 KL: exp(d) - d - 1 with d = ref - logp, clamped to [-10, 10]', () => {
    const t = tokenLoss(-1, -1, -1.1, 0, S); // d = -0.1
    expect(t.kl).toBeCloseTo(Math.exp(-0.1) + 0.1 - 1, 14);
    expect(t.kl).toBeCloseTo(0.00483742, 8);
    expect(t.grad).toBeCloseTo(0.04 * -(Math.exp(-0.1) - 1), 14);
    const far = tokenLoss(-30, -30, -1, 0, S); // d = 29 -> 10
    expect(far.kl).toBeCloseTo(Math.exp(10) - 11, 6);
    expect(Math.abs(far.grad)).toBe(0); // clamped: no KL gradient, A = 0: no clip gradient
  });
});

describe('policyLoss aggregations', () => {
  // Two sequences, ratio 1 everywhere, no KL: per-token loss = -A.
  const seqs: LossSequence[] = [
    { advantage: 1, logp: [-1, -2], oldLogp: [-1, -2] },
    { advantage: -0.5, logp: [-1, -1, -1], oldLogp: [-1, -1, -1] },
  ];
  it('seq-mean-token-mean = mean over sequences of each sequence mean', () => {
    expect(policyLoss(seqs, { ...S, beta: 0 }).loss).toBeCloseTo((-1 + 0.5) / 2, 14);
  });
  it('token-mean = mean over all tokens', () => {
    expect(policyLoss(seqs, { ...S, beta: 0, aggregation: 'token-mean' }).loss).toBeCloseTo((-1 * 2 + 0.5 * 3) / 5, 14);
  });
  it('seq-mean-token-sum-norm = sum per sequence / max_new_tokens, mean over sequences', () => {
    expect(policyLoss(seqs, { ...S, beta: 0, aggregation: 'seq-mean-token-sum-norm' }).loss).toBeCloseTo(
      (-2 / 4 + 1.5 / 4) / 2,
      14,
    );
  });
  it('reports the clip fraction and the KL part', () => {
    const r = policyLoss([{ advantage: 1, logp: [-1, -1], oldLogp: [-1.2, -1], refLogp: [-1.1, -1] }], S);
    expect(r.clipFraction).toBe(0.5);
    expect(r.kl).toBeCloseTo((Math.exp(-0.1) + 0.1 - 1) / 2, 14);
    expect(r.loss).toBeCloseTo(r.pgLoss + 0.04 * r.kl, 14);
    expect(r.pgLoss).toBeCloseTo((-1.2 + -1) / 2, 12);
  });

  it.each(['seq-mean-token-mean', 'token-mean', 'seq-mean-token-sum-norm'] as const)(
    'gradient matches finite differences (%s)',
    (aggregation) => {
      const s = { ...S, aggregation };
      const batch: LossSequence[] = [
        { advantage: 0.7, logp: [-0.9, -1.3, -0.2], oldLogp: [-1, -1.25, -0.3], refLogp: [-1.1, -1.2, -0.1] },
        { advantage: -1.3, logp: [-2.0, -0.5], oldLogp: [-1.9, -0.45], refLogp: [-1.5, -0.7] },
      ];
      const r = policyLoss(batch, s);
      const h = 1e-6;
      batch.forEach((q, k) =>
        q.logp.forEach((_, t) => {
          const plus = batch.map((x, i) => (i === k ? { ...x, logp: x.logp.map((v, j) => (j === t ? v + h : v)) } : x));
          const minus = batch.map((x, i) =>
            i === k ? { ...x, logp: x.logp.map((v, j) => (j === t ? v - h : v)) } : x,
          );
          const fd = (policyLoss(plus, s).loss - policyLoss(minus, s).loss) / (2 * h);
          expect(r.grads[k][t]).toBeCloseTo(fd, 6);
        }),
      );
    },
  );
});
