/**
 * The one seeded pseudo-random generator of the library: a string key is hashed with FNV-1a into
 * a 32-bit state that drives mulberry32. Used by the synthetic DyBench (each pair draws from its
 * own stream, keyed by (seed, split, category, index), so a pair does not change when more pairs
 * are asked for), the trainer's epoch order and sampling seeds, the policies, the eval bootstrap
 * and the eval client's retry jitter. Depends on nothing.
 */

/** FNV-1a 32-bit hash of a string. */
export function hash32(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

export class Rng {
  private state: number;

  constructor(key: string | number) {
    this.state = typeof key === 'number' ? key >>> 0 : hash32(key);
  }

  /** Uniform in [0, 1) (mulberry32). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Uniform in [lo, hi). */
  uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next();
  }

  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }

  /** A shuffled copy (Fisher-Yates). */
  shuffle<T>(items: readonly T[]): T[] {
    const out = [...items];
    for (let i = out.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      [out[i], out[j]] = [out[j], out[i]];
    }
    return out;
  }
}

/** mulberry32 (Rng) as a function of a numeric seed; uniform floats in [0, 1). */
export function seededRandom(seed: number): () => number {
  const r = new Rng(seed >>> 0);
  return () => r.next();
}
