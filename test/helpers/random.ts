/** Seeded PRNG for tests: the library's mulberry32 (lib/synth/rng.ts); reproducible random shapes and values. */
import { Rng } from '../../lib/synth/rng';

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
