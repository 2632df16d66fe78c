/**
 * The fused T-GRPO and ArrowRL reward kernels (crpo-method.md section 7): native kernel and the
 * float64 TS reference agree on random inputs (1e-6 relative); hand-computed groups cover the
 * bonus condition, invalid answers and the reverse-difference term.
 */
import type { NativeArrowInputs, NativeTgrpoInputs } from '../../lib/native';
import { arrowAdvantages, referenceArrow, referenceTgrpo, tgrpoAdvantages } from '../../lib/reward/baselines';
import { rng, randInt } from '../helpers/random';

function expectClose(
  got: Record<string, ArrayLike<number>>,
  want: Record<string, ArrayLike<number>>,
  label: string,
): void {
  for (const key of Object.keys(want)) {
    const a = got[key],
      b = want[key];
    expect(a.length).toBe(b.length);
    let max = 0,
      at = -1;
    for (let i = 0; i < a.length; i++) {
      const d = Math.abs(a[i] - b[i]) / Math.max(1, Math.abs(b[i]));
      if (d > max) {
        max = d;
        at = i;
      }
    }
    if (max > 1e-6) throw new Error(`${label}: ${key} differs by ${max} (relative) at ${at}: ${a[at]} vs ${b[at]}`);
  }
}

function randomAnswers(r: () => number, n: number, per: number, k: Int32Array): Int32Array {
  return Int32Array.from({ length: n * per }, (_, i) => {
    const b = Math.floor(i / per);
    return r() < 0.1 ? -1 : r() < 0.05 ? k[b] + 2 : randInt(r, 0, k[b] - 1);
  });
}

describe('baseline reward kernels vs the TS reference', () => {
  it.each([1, 2, 3, 4])('T-GRPO agrees on random groups (seed %i)', (seed) => {
    const r = rng(seed * 17);
    const B = 150,
      G = 2 + (seed % 7),
      S = 1 + (seed % 4);
    const numOptions = Int32Array.from({ length: B }, () => randInt(r, 2, 5));
    const inp: NativeTgrpoInputs = {
      groups: B,
      groupSize: G,
      shuffledSize: S,
      answers: randomAnswers(r, B, G, numOptions),
      shuffledAnswers: randomAnswers(r, B, S, numOptions),
      truth: Int32Array.from({ length: B }, (_, b) => randInt(r, 0, numOptions[b] - 1)),
      numOptions,
      format: Float32Array.from({ length: B * G }, () => (r() < 0.8 ? 1 : 0)),
      wAccuracy: 0.5 + r(),
      wFormat: r(),
      bonus: r(),
      mu: 0.5 + r() * 0.5,
      norm: (['per-branch', 'joint', 'none'] as const)[seed % 3],
    };
    expectClose(tgrpoAdvantages(inp) as never, referenceTgrpo(inp) as never, `tgrpo seed ${seed}`);
  });

  it.each([1, 2, 3, 4])('ArrowRL agrees on random groups (seed %i)', (seed) => {
    const r = rng(seed * 31);
    const B = 150,
      G = 2 + (seed % 7),
      H = 1 + (seed % 5);
    const numOptions = Int32Array.from({ length: B }, () => randInt(r, 2, 5));
    const inp: NativeArrowInputs = {
      groups: B,
      groupSize: G,
      reverseSize: H,
      answers: randomAnswers(r, B, G, numOptions),
      reverseAnswers: randomAnswers(r, B, H, numOptions),
      truth: Int32Array.from({ length: B }, (_, b) => randInt(r, 0, numOptions[b] - 1)),
      numOptions,
      format: Float32Array.from({ length: B * G }, () => (r() < 0.8 ? 1 : 0)),
      wAccuracy: 0.5 + r(),
      wFormat: r(),
      wReverse: r(),
      norm: (['per-branch', 'joint', 'none'] as const)[seed % 3],
    };
    expectClose(arrowAdvantages(inp) as never, referenceArrow(inp) as never, `arrow seed ${seed}`);
  });
});

describe('baseline rewards on hand-computed groups', () => {
  it('T-GRPO adds the bonus to correct ordered rollouts only when p >= mu*q', () => {
    // y = 1; ordered answers [1, 1, 0, -1]: p = 0.5; shuffled [1, 1]: q = 1 -> 0.5 < 0.8: no bonus.
    const base = {
      groups: 1,
      groupSize: 4,
      shuffledSize: 2,
      answers: Int32Array.from([1, 1, 0, -1]),
      truth: Int32Array.from([1]),
      numOptions: Int32Array.from([3]),
      format: Float32Array.from([1, 0, 1, 0]),
    };
    const off = tgrpoAdvantages({ ...base, shuffledAnswers: Int32Array.from([1, 1]) });
    expect(Array.from(off.reward)).toEqual([2, 1, 1, 0]);
    expect(off.bonusOn[0]).toBe(0);
    expect(off.pOrdered[0]).toBe(0.5);
    expect(off.pShuffled[0]).toBe(1);
    // shuffled [1, 0]: q = 0.5 -> 0.5 >= 0.4: +0.3 to the two correct ones.
    const on = tgrpoAdvantages({ ...base, shuffledAnswers: Int32Array.from([1, 0]) });
    expect(Array.from(on.reward)).toEqual([2.3, 1.3, 1, 0].map(Math.fround));
    expect(on.bonusOn[0]).toBe(1);
    // Advantages: rewards [2.3, 1.3, 1, 0], mean 1.15, sample sd = sqrt((1.3225+0.0225+0.0225+1.3225)/3)
    const sd = Math.sqrt((1.15 ** 2 + 0.15 ** 2 + 0.15 ** 2 + 1.15 ** 2) / 3);
    expect(on.advantage[0]).toBeCloseTo(1.15 / (sd + 1e-6), 5);
    // mu = 1.0 (the Video-R1 discussion): 0.5 >= 0.5 still gets the bonus; shuffled all right -> none.
    expect(tgrpoAdvantages({ ...base, shuffledAnswers: Int32Array.from([1, 0]), mu: 1 }).bonusOn[0]).toBe(1);
  });

  it('ArrowRL rewards answers that differ from the valid reversed answers', () => {
    // y = 0, 4 options. forward [0, 0, 2, 9(invalid)], reversed [1, 0, -1, 2].
    const out = arrowAdvantages({
      groups: 1,
      groupSize: 4,
      reverseSize: 4,
      answers: Int32Array.from([0, 0, 2, 9]),
      reverseAnswers: Int32Array.from([1, 0, -1, 2]),
      truth: Int32Array.from([0]),
      numOptions: Int32Array.from([4]),
      format: Float32Array.from([1, 1, 1, 0]),
    });
    // a=0: valid reversed {1,0,2}: differ from 0 in {1,2} -> 2/4 = 0.5; a=2: differ in {1,0} -> 0.5; invalid a -> 0.
    expect(Array.from(out.differ)).toEqual([0.5, 0.5, 0.5, 0]);
    expect(Array.from(out.reward)).toEqual([1 + 1 + 0.25, 2.25, 1.25, 0]);
    expect(Array.from(out.correct)).toEqual([1, 1, 0, 0]);
  });

  it('an all-equal group gets zero advantages and is flagged', () => {
    const out = arrowAdvantages({
      groups: 1,
      groupSize: 3,
      reverseSize: 1,
      answers: Int32Array.from([1, 1, 1]),
      reverseAnswers: Int32Array.from([1]),
      truth: Int32Array.from([1]),
      numOptions: Int32Array.from([2]),
    });
    expect(Array.from(out.advantage)).toEqual([0, 0, 0]);
    expect(out.flat[0]).toBe(1);
  });

  it('rejects bad sizes with one clear message', () => {
    expect(() => tgrpoAdvantages({ groups: 1, groupSize: 2, shuffledSize: 0 } as NativeTgrpoInputs)).toThrow(
      /shuffledSize/,
    );
    expect(() =>
      arrowAdvantages({
        groups: 1,
        groupSize: 2,
        reverseSize: 1,
        answers: new Int32Array(1),
      } as unknown as NativeArrowInputs),
    ).toThrow(/answers/);
  });
});
