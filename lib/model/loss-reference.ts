/**
 * Plain-loop TypeScript reference of the policy loss of crpo-method.md section 6, the slow twin
 * of the native loss (native/torch/model policy_loss):
 *   ratio = exp(logp - logp_old); clip = -min(ratio*A, clamp(ratio, 1-eps_low, 1+eps_high)*A)
 *   d = clamp(logp_ref - logp, -10, 10); kl = exp(d) - d - 1; L = clip + beta*kl
 * aggregated as seq-mean-token-mean | token-mean | seq-mean-token-sum-norm (divide by max_new_tokens).
 */
import { LOSS_AGGREGATIONS, type LossAggregation } from '../algo/loss';

// One list of aggregations, the trainer's (lib/algo/loss.ts).
export { LOSS_AGGREGATIONS, type LossAggregation };

export interface LossOptions {
  epsLow?: number;
  epsHigh?: number;
  beta?: number;
  aggregation?: LossAggregation;
  /** seq-mean-token-sum-norm divisor; default: the completion width. */
  maxNewTokens?: number;
}

export interface LossInputs {
  rows: number;
  width: number;
  logprobs: ArrayLike<number>; // (N, C)
  oldLogprobs?: ArrayLike<number>; // (N, C); default: logprobs (ratio 1)
  refLogprobs?: ArrayLike<number>; // (N, C); default: no KL term
  advantages: ArrayLike<number>; // (N)
  mask: ArrayLike<number>; // (N, C) in {0, 1}
}

export interface LossParts {
  loss: number;
  pgLoss: number;
  klLoss: number;
  meanKl: number;
  clipFrac: number;
  ratioMean: number;
  tokens: number;
}

export function referencePolicyLoss(x: LossInputs, o: LossOptions = {}): LossParts {
  const epsLow = o.epsLow ?? 0.2;
  const epsHigh = o.epsHigh ?? 0.2;
  const beta = o.beta ?? 0.04;
  const agg = o.aggregation ?? 'seq-mean-token-mean';
  const { rows: N, width: C } = x;
  const clip = new Float64Array(N * C);
  const kl = new Float64Array(N * C);
  const ratio = new Float64Array(N * C);
  const clipped = new Float64Array(N * C);
  for (let n = 0; n < N; n++) {
    const A = x.advantages[n];
    for (let t = 0; t < C; t++) {
      const i = n * C + t;
      const lp = x.logprobs[i];
      const old = x.oldLogprobs ? x.oldLogprobs[i] : lp;
      const r = Math.exp(lp - old);
      const l1 = -r * A;
      const l2 = -Math.min(Math.max(r, 1 - epsLow), 1 + epsHigh) * A;
      clip[i] = Math.max(l1, l2);
      clipped[i] = l2 > l1 ? 1 : 0;
      ratio[i] = r;
      if (x.refLogprobs) {
        const d = Math.min(Math.max(x.refLogprobs[i] - lp, -10), 10);
        kl[i] = Math.exp(d) - d - 1;
      }
    }
  }
  let tokens = 0;
  for (let i = 0; i < N * C; i++) tokens += x.mask[i];
  const tokenMean = (v: Float64Array): number => {
    let s = 0;
    for (let i = 0; i < N * C; i++) s += v[i] * x.mask[i];
    return s / Math.max(tokens, 1);
  };
  const aggregate = (v: Float64Array): number => {
    if (agg === 'token-mean') return tokenMean(v);
    let total = 0;
    for (let n = 0; n < N; n++) {
      let s = 0;
      let m = 0;
      for (let t = 0; t < C; t++) {
        s += v[n * C + t] * x.mask[n * C + t];
        m += x.mask[n * C + t];
      }
      total +=
        agg === 'seq-mean-token-sum-norm'
          ? s / (o.maxNewTokens && o.maxNewTokens > 0 ? o.maxNewTokens : C)
          : s / Math.max(m, 1);
    }
    return total / N;
  };
  const pgLoss = aggregate(clip);
  const klLoss = aggregate(kl);
  return {
    loss: pgLoss + beta * klLoss,
    pgLoss,
    klLoss,
    meanKl: tokenMean(kl),
    clipFrac: tokenMean(clipped),
    ratioMean: tokenMean(ratio),
    tokens,
  };
}
