/**
 * Slow, obviously correct TypeScript reference of the policy loss of crpo-method.md section 6
 * (clipped surrogate with eps_low / eps_high, k3 KL to a frozen reference, three aggregations),
 * with its exact gradient with respect to each token's log-prob. Native train steps are tested
 * against it, and the built-in linear policy (lib/policy/linear.ts) trains through it.
 * Everything is float64. `referencePolicyLoss` is the same loss over the native step's layout
 * (rows x width with a 0/1 mask), the slow twin of the native `policy_loss`.
 *
 * Per token t of sequence k with advantage A_k:
 *   ratio = exp(logp - logp_old)
 *   clip  = -min(ratio*A, clamp(ratio, 1-eps_low, 1+eps_high)*A)
 *   kl    = exp(d) - d - 1,  d = clamp(logp_ref - logp, -10, 10)
 *   l     = clip + beta*kl
 */
import type { NativePolicyLossInputs, NativePolicyLossParts } from '../native';

export const LOSS_AGGREGATIONS = ['seq-mean-token-mean', 'token-mean', 'seq-mean-token-sum-norm'] as const;
export type LossAggregation = (typeof LOSS_AGGREGATIONS)[number];

export interface LossSettings {
  clipLow: number;
  clipHigh: number;
  /** KL coefficient; 0 disables the reference term. */
  beta: number;
  aggregation: LossAggregation;
  /** Divisor of 'seq-mean-token-sum-norm' (Dr.GRPO: max_new_tokens). */
  maxNewTokens: number;
}

export const DEFAULT_LOSS: LossSettings = {
  clipLow: 0.2,
  clipHigh: 0.2,
  beta: 0.04,
  aggregation: 'seq-mean-token-mean',
  maxNewTokens: 1,
};

/** One trained sequence: its completion tokens' log-probs now, at rollout time and under the reference. */
export interface LossSequence {
  advantage: number;
  logp: readonly number[];
  oldLogp: readonly number[];
  /** Required when beta > 0. */
  refLogp?: readonly number[];
}

export interface TokenLoss {
  /** exp(logp - oldLogp) */
  ratio: number;
  clip: number;
  kl: number;
  /** d l / d logp */
  grad: number;
  /** The clipped branch was taken (its gradient is 0). */
  clipped: boolean;
}

/** The loss of one token and its derivative with respect to logp. */
export function tokenLoss(
  logp: number,
  oldLogp: number,
  refLogp: number | undefined,
  advantage: number,
  s: LossSettings,
): TokenLoss {
  const ratio = Math.exp(logp - oldLogp);
  const clamped = Math.min(Math.max(ratio, 1 - s.clipLow), 1 + s.clipHigh);
  const unclippedLoss = -ratio * advantage,
    clippedLoss = -clamped * advantage;
  // max(-r*A, -clamp(r)*A): the clamped branch wins only when it is strictly larger; inside the
  // clip range both are equal and the gradient flows through ratio.
  const clipped = clippedLoss > unclippedLoss;
  const clip = clipped ? clippedLoss : unclippedLoss;
  let grad = clipped ? 0 : -ratio * advantage;
  let kl = 0;
  if (s.beta > 0) {
    if (refLogp === undefined) throw new Error('tokenLoss: refLogp is required when beta > 0');
    const raw = refLogp - logp;
    const d = Math.min(Math.max(raw, -10), 10);
    kl = Math.exp(d) - d - 1;
    // dkl/dlogp = (exp(d) - 1) * dd/dlogp, dd/dlogp = -1 inside the clamp, 0 outside.
    if (raw > -10 && raw < 10) grad += s.beta * -(Math.exp(d) - 1);
  }
  return { ratio, clip, kl, grad, clipped };
}

export interface LossResult {
  /** The aggregated loss L. */
  loss: number;
  /** Aggregated clip part (loss = pgLoss + beta*kl). */
  pgLoss: number;
  kl: number;
  /** Share of tokens whose clipped branch was taken. */
  clipFraction: number;
  tokens: number;
  /** dL/dlogp per sequence per token. */
  grads: number[][];
}

/** Aggregated loss and per-token gradients of a batch of sequences. */
export function policyLoss(seqs: readonly LossSequence[], s: LossSettings): LossResult {
  const totalTokens = seqs.reduce((a, q) => a + q.logp.length, 0);
  let loss = 0,
    pgLoss = 0,
    kl = 0,
    clippedCount = 0;
  const grads: number[][] = [];
  const nSeq = seqs.length;
  for (const q of seqs) {
    const T = q.logp.length;
    // Weight of each token of this sequence in the aggregate.
    const w =
      s.aggregation === 'token-mean'
        ? 1 / Math.max(1, totalTokens)
        : s.aggregation === 'seq-mean-token-mean'
          ? 1 / (Math.max(1, nSeq) * Math.max(1, T))
          : 1 / (Math.max(1, nSeq) * s.maxNewTokens);
    const g: number[] = [];
    for (let t = 0; t < T; t++) {
      const tl = tokenLoss(q.logp[t], q.oldLogp[t], q.refLogp?.[t], q.advantage, s);
      pgLoss += w * tl.clip;
      kl += w * tl.kl;
      loss += w * (tl.clip + s.beta * tl.kl);
      g.push(w * tl.grad);
      if (tl.clipped) clippedCount++;
    }
    grads.push(g);
  }
  return {
    loss,
    pgLoss,
    kl,
    clipFraction: totalTokens > 0 ? clippedCount / totalTokens : 0,
    tokens: totalTokens,
    grads,
  };
}

/** Options of the loss over the native layout (`nativePolicyLoss`, native/torch/model policy_loss). */
export interface PolicyLossOptions extends DeprecatedClipNames {
  /** eps_low of the clipped surrogate; default 0.2. */
  clipLow?: number;
  /** eps_high of the clipped surrogate; default 0.2. */
  clipHigh?: number;
  /** KL coefficient; default 0.04. */
  beta?: number;
  /** Default 'seq-mean-token-mean'. */
  aggregation?: LossAggregation;
  /** seq-mean-token-sum-norm divisor; default: the completion width. */
  maxNewTokens?: number;
}

/** The clip range's former names, still accepted by the native policy's options. */
export interface DeprecatedClipNames {
  /** @deprecated the name of clipLow before one name per concept; clipLow wins when both are given. */
  epsLow?: number;
  /** @deprecated the name of clipHigh before one name per concept; clipHigh wins when both are given. */
  epsHigh?: number;
}

/** `o` with epsLow / epsHigh (deprecated) turned into clipLow / clipHigh. */
export function withClipNames<T extends DeprecatedClipNames & { clipLow?: number; clipHigh?: number }>(
  o: T,
): Omit<T, 'epsLow' | 'epsHigh'> {
  const { epsLow, epsHigh, ...rest } = o;
  const clipLow = o.clipLow ?? epsLow,
    clipHigh = o.clipHigh ?? epsHigh;
  return {
    ...rest,
    ...(clipLow !== undefined ? { clipLow } : {}),
    ...(clipHigh !== undefined ? { clipHigh } : {}),
  };
}

/** The native loss's inputs (NativePolicyLossInputs) with any arrays of numbers. */
export type PolicyLossInputs = {
  [K in keyof NativePolicyLossInputs]: NativePolicyLossInputs[K] extends Float32Array | undefined
    ? ArrayLike<number>
    : NativePolicyLossInputs[K];
};

/** The aggregated parts of the loss over the native layout, as the native loss reports them. */
export type LossParts = NativePolicyLossParts;

/**
 * The loss over the native step's layout: (N, C) log-probs row-major, (N) advantages, an (N, C)
 * 0/1 mask; `oldLogprobs` absent: ratio 1; `refLogprobs` absent: no KL term. Per token this is
 * tokenLoss; the aggregation weights masked tokens as the native step does.
 */
export function referencePolicyLoss(x: PolicyLossInputs, o: PolicyLossOptions = {}): LossParts {
  const beta = o.beta ?? 0.04;
  const agg = o.aggregation ?? 'seq-mean-token-mean';
  // tokenLoss computes the KL term only when its beta is > 0; here beta weights the aggregate, and
  // the KL term is reported (meanKl, klLoss) whenever reference log-probs are given.
  const s: LossSettings = {
    clipLow: o.clipLow ?? o.epsLow ?? 0.2,
    clipHigh: o.clipHigh ?? o.epsHigh ?? 0.2,
    beta: x.refLogprobs ? 1 : 0,
    aggregation: agg,
    maxNewTokens: o.maxNewTokens && o.maxNewTokens > 0 ? o.maxNewTokens : x.width,
  };
  const { rows: N, width: C } = x;
  const clip = new Float64Array(N * C);
  const kl = new Float64Array(N * C);
  const ratio = new Float64Array(N * C);
  const clipped = new Float64Array(N * C);
  for (let n = 0; n < N; n++) {
    for (let t = 0; t < C; t++) {
      const i = n * C + t;
      const lp = x.logprobs[i];
      const tl = tokenLoss(lp, x.oldLogprobs ? x.oldLogprobs[i] : lp, x.refLogprobs?.[i], x.advantages[n], s);
      clip[i] = tl.clip;
      clipped[i] = tl.clipped ? 1 : 0;
      ratio[i] = tl.ratio;
      kl[i] = tl.kl;
    }
  }
  let tokens = 0;
  for (let i = 0; i < N * C; i++) tokens += x.mask[i];
  const tokenMean = (v: Float64Array): number => {
    let sum = 0;
    for (let i = 0; i < N * C; i++) sum += v[i] * x.mask[i];
    return sum / Math.max(tokens, 1);
  };
  const aggregate = (v: Float64Array): number => {
    if (agg === 'token-mean') return tokenMean(v);
    let total = 0;
    for (let n = 0; n < N; n++) {
      let sum = 0;
      let m = 0;
      for (let t = 0; t < C; t++) {
        sum += v[n * C + t] * x.mask[n * C + t];
        m += x.mask[n * C + t];
      }
      total += agg === 'seq-mean-token-sum-norm' ? sum / s.maxNewTokens : sum / Math.max(m, 1);
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
