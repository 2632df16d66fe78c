/**
 * The one seeded generator (mulberry32, lib/random.ts) behind the eval bootstrap (seededRandom,
 * re-exported by lib/eval/metrics.ts), the eval client's retry jitter and the tests' rng helper:
 * each gives exactly the stream of the textbook mulberry32 written out here (the slow twin), so
 * results seeded before these shared one implementation are unchanged.
 */
import { Rng, seededRandom } from '../../lib/random';
import { rng } from '../helpers/random';

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const draw = (f: () => number, n = 64): number[] => Array.from({ length: n }, () => f());

describe('seeded random streams', () => {
  it.each([0, 1, 42, 0x7fffffff, 0xffffffff, -1, 2 ** 33 + 5])(
    'seed %p: seededRandom, Rng and the test rng equal mulberry32',
    (seed) => {
      const want = draw(mulberry32(seed));
      expect(draw(seededRandom(seed))).toEqual(want);
      const r = new Rng(seed >>> 0);
      expect(draw(() => r.next())).toEqual(want);
      expect(draw(rng(seed))).toEqual(want);
    },
  );

  it('the retry jitter stream (seed xor salt) is mulberry32 of the salted seed', () => {
    for (const seed of [0, 7, 123456789])
      expect(draw(seededRandom(((seed >>> 0) ^ 0x5bd1e995) >>> 0))).toEqual(
        draw(mulberry32((seed >>> 0) ^ 0x5bd1e995)),
      );
  });
});
