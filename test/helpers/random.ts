/** Seeded PRNG for tests: the library's mulberry32 (lib/random.ts); reproducible random shapes and values. */
import { Rng } from '../../lib/random';

export function rng(seed: number): () => number {
  const r = new Rng(seed >>> 0);
  return () => r.next();
}

export function randInt(r: () => number, lo: number, hi: number): number {
  return lo + Math.floor(r() * (hi - lo + 1));
}

/**
 * n floats in [-0.5, 0.5) from a 32-bit LCG (Numerical Recipes constants): the inputs the dist
 * tests and their worker processes (test/fixtures/dist-worker.ts) both compute, bit for bit.
 */
export function seededFloats(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 32 - 0.5;
  }
  return out;
}

/**
 * Pearson's chi-square of `counts` (n draws) against probabilities `prob`, expected counts below 5
 * pooled into one bin; df = bins - 1. `uniformChi2` is the statistic a sampler uniform over the
 * entries would score against the same probabilities (a test's bound should reject it).
 */
export function chiSquare(
  counts: readonly number[],
  prob: readonly number[],
  n: number,
): { chi2: number; df: number; bins: number; uniformChi2: number } {
  let chi2 = 0,
    bins = 0,
    restE = 0,
    restO = 0;
  prob.forEach((q, v) => {
    const e = q * n;
    if (e < 5) {
      restE += e;
      restO += counts[v];
      return;
    }
    chi2 += (counts[v] - e) ** 2 / e;
    bins++;
  });
  if (restE > 0) {
    chi2 += (restO - restE) ** 2 / Math.max(restE, 1e-9);
    bins++;
  }
  const V = prob.length;
  const uniformChi2 = prob.reduce((a, q) => a + (n / V - q * n) ** 2 / Math.max(q * n, 1e-9), 0);
  return { chi2, df: bins - 1, bins, uniformChi2 };
}
