/**
 * Paired metrics (lib/eval/metrics.ts): hand-computed cases, the constant-answer predictor on
 * the synthetic DyBench, naive twins of the aggregated metrics and of the bootstrap, TimeBlind
 * and Pearson r.
 */
import { DYNAMIC_CATEGORIES } from '../../lib/data/categories';
import type { Category } from '../../lib/data/schema';
import {
  bootstrapDistributions,
  bootstrapIntervals,
  computeMetrics,
  correlateRuns,
  groupSeed,
  pearson,
  quantile,
  seededRandom,
  timeBlindMetrics,
  type ScoredSample,
  type TimeBlindAnswer,
} from '../../lib/eval/metrics';
import { synthesizeRecords } from '../../lib/synth';

const S = (id: string, pair_id: string, category: Category, answer: number, prediction: number): ScoredSample => ({
  id,
  pair_id,
  category,
  answer,
  prediction,
});

/** Naive reference: straight from the definitions, one group at a time. */
function naiveGroup(samples: ScoredSample[]): {
  acc: number;
  p_acc: number;
  sensitivity: number | null;
  invariance: number | null;
  n_pairs: number;
} {
  const right = (s: ScoredSample): boolean => s.prediction !== -1 && s.prediction === s.answer;
  const pairIds = [...new Set(samples.map((s) => s.pair_id))];
  let pairsRight = 0,
    dyn = 0,
    changed = 0,
    stat = 0,
    agreed = 0;
  for (const pid of pairIds) {
    const m = samples.filter((s) => s.pair_id === pid);
    if (m.every(right)) pairsRight++;
    const goldSame = m.every((x) => x.answer === m[0].answer);
    const allValid = m.every((x) => x.prediction !== -1);
    if (goldSame) {
      stat++;
      if (allValid && m.every((x) => x.prediction === m[0].prediction)) agreed++;
    } else {
      dyn++;
      let ok = allValid;
      for (const a of m)
        for (const b of m) if (a !== b && a.answer !== b.answer && a.prediction === b.prediction) ok = false;
      if (ok) changed++;
    }
  }
  return {
    acc: samples.filter(right).length / samples.length,
    p_acc: pairsRight / pairIds.length,
    sensitivity: dyn ? changed / dyn : null,
    invariance: stat ? agreed / stat : null,
    n_pairs: pairIds.length,
  };
}

function naiveGroups(samples: ScoredSample[]): Record<string, ScoredSample[]> {
  const out: Record<string, ScoredSample[]> = { all: samples };
  const dyn = samples.filter((s) => DYNAMIC_CATEGORIES.includes(s.category));
  if (dyn.length) out.dynamic = dyn;
  for (const c of new Set(samples.map((s) => s.category))) out[c] = samples.filter((s) => s.category === c);
  return out;
}

/** Random predictions over synthetic records (seeded), with some invalid answers. */
function randomRun(seed: number, pairs = 6): ScoredSample[] {
  const rand = seededRandom(seed);
  return synthesizeRecords({ split: 'test', pairs, seed: 3 }).map((r) => {
    const k = r.options.length;
    const u = rand();
    const prediction = u < 0.1 ? -1 : u < 0.55 ? r.answer : Math.floor(rand() * (k + 1)); // k = the null option
    return S(r.id, r.pair_id, r.category, r.answer, prediction);
  });
}

describe('computeMetrics', () => {
  test('hand-computed case', () => {
    const samples = [
      // moving_direction: pair m1 both right; pair m2 one right, same prediction twice (no change)
      S('m1a', 'm1', 'moving_direction', 0, 0),
      S('m1b', 'm1', 'moving_direction', 1, 1),
      S('m2a', 'm2', 'moving_direction', 2, 2),
      S('m2b', 'm2', 'moving_direction', 3, 2),
      // event_sequence: pair e1 both wrong but changed; pair e2 one invalid
      S('e1a', 'e1', 'event_sequence', 0, 1),
      S('e1b', 'e1', 'event_sequence', 1, 0),
      S('e2a', 'e2', 'event_sequence', 0, 0),
      S('e2b', 'e2', 'event_sequence', 1, -1),
      // static: s1 both right (agree); s2 one right, disagree
      S('s1a', 's1', 'static', 2, 2),
      S('s1b', 's1', 'static', 2, 2),
      S('s2a', 's2', 'static', 1, 1),
      S('s2b', 's2', 'static', 1, 0),
    ];
    const g = computeMetrics(samples).groups;
    expect(Object.keys(g)).toEqual(['all', 'dynamic', 'moving_direction', 'event_sequence', 'static']);
    expect(g.moving_direction).toMatchObject({
      n_samples: 4,
      n_pairs: 2,
      acc: 3 / 4,
      p_acc: 1 / 2,
      sensitivity: 1 / 2,
      invariance: null,
      invalid_rate: 0,
    });
    expect(g.event_sequence).toMatchObject({
      n_samples: 4,
      n_pairs: 2,
      acc: 1 / 4,
      p_acc: 0,
      sensitivity: 1 / 2,
      invalid_rate: 1 / 4,
    });
    expect(g.static).toMatchObject({ n_pairs: 2, acc: 3 / 4, p_acc: 1 / 2, sensitivity: null, invariance: 1 / 2 });
    expect(g.dynamic).toMatchObject({
      n_samples: 8,
      n_pairs: 4,
      acc: 4 / 8,
      p_acc: 1 / 4,
      sensitivity: 2 / 4,
      n_dynamic_pairs: 4,
      n_static_pairs: 0,
    });
    expect(g.all).toMatchObject({
      n_samples: 12,
      n_pairs: 6,
      acc: 7 / 12,
      p_acc: 2 / 6,
      sensitivity: 2 / 4,
      invariance: 1 / 2,
    });
  });

  test('the null option is a valid change; an invalid answer is never a change', () => {
    const g = computeMetrics([
      S('a', 'p', 'reversible_dynamics', 0, 0),
      S('b', 'p', 'reversible_dynamics', 1, 3), // 3 = null option of 3 options
      S('c', 'q', 'reversible_dynamics', 0, 0),
      S('d', 'q', 'reversible_dynamics', 1, -1),
    ]).groups.reversible_dynamics!;
    expect(g.sensitivity).toBe(1 / 2);
    expect(g.p_acc).toBe(0);
  });

  test('a constant-answer predictor gets P-Acc 0 and sensitivity 0 on dynamic pairs (synthetic DyBench)', () => {
    // Every pair of a dynamic category is a dynamic pair (its gold answer changes under the
    // transform), in both splits and for any seed, so a constant answer scores P-Acc 0 there.
    for (const [split, seed] of [
      ['test', 11],
      ['train', 3],
      ['test', 12345],
    ] as const) {
      const records = synthesizeRecords({ split, pairs: 40, seed });
      const dynamic = records.filter((r) => (DYNAMIC_CATEGORIES as readonly string[]).includes(r.category));
      expect(new Set(dynamic.map((r) => r.category))).toEqual(new Set(DYNAMIC_CATEGORIES));
      for (const constant of [0, 1, 2, 3]) {
        const g = computeMetrics(dynamic.map((r) => S(r.id, r.pair_id, r.category, r.answer, constant))).groups;
        for (const c of DYNAMIC_CATEGORIES) {
          expect(g[c]!.n_pairs).toBe(40);
          expect(g[c]!.n_dynamic_pairs).toBe(40);
          expect(g[c]!.p_acc).toBe(0);
        }
      }
    }
    const records = synthesizeRecords({ split: 'test', pairs: 20, seed: 11 });
    const dynamic = records.filter((r) => r.category !== 'static');
    for (const constant of [0, 1, 2]) {
      const g = computeMetrics(dynamic.map((r) => S(r.id, r.pair_id, r.category, r.answer, constant))).groups;
      for (const c of [...DYNAMIC_CATEGORIES, 'dynamic', 'all'] as const) {
        expect(g[c]!.n_pairs).toBeGreaterThan(0);
        expect(g[c]!.n_dynamic_pairs).toBe(g[c]!.n_pairs);
        expect(g[c]!.p_acc).toBe(0);
        expect(g[c]!.sensitivity).toBe(0);
      }
      expect(g.dynamic!.acc).toBeGreaterThan(0); // per-video accuracy is not zero: only P-Acc exposes it
      const all = computeMetrics(records.map((r) => S(r.id, r.pair_id, r.category, r.answer, constant))).groups;
      expect(all.static!.invariance).toBe(1);
      expect(all.dynamic!.sensitivity).toBe(0);
    }
  });

  test('matches the naive definitions on random runs', () => {
    for (const seed of [1, 2, 3, 4]) {
      const samples = randomRun(seed);
      const g = computeMetrics(samples).groups;
      for (const [name, subset] of Object.entries(naiveGroups(samples))) {
        const want = naiveGroup(subset);
        const got = g[name as keyof typeof g]!;
        expect({
          acc: got.acc,
          p_acc: got.p_acc,
          sensitivity: got.sensitivity,
          invariance: got.invariance,
          n_pairs: got.n_pairs,
        }).toEqual(want);
      }
    }
  });

  test('bad input names the pair or field', () => {
    expect(() => computeMetrics([S('a', 'p', 'static', 0, 0)])).toThrow(
      "pair 'p' has 1 member (id 'a'); a pair needs at least 2",
    );
    expect(() => computeMetrics([S('a', 'p', 'static', 0, 0), S('b', 'p', 'event_sequence', 1, 0)])).toThrow(
      "pair 'p' mixes categories 'static' and 'event_sequence' (id 'b')",
    );
    expect(() => computeMetrics([S('a', 'p', 'static', 0, 0), S('a', 'p', 'static', 0, 0)])).toThrow(
      "samples[1].id: duplicate id 'a'",
    );
    expect(() => computeMetrics([S('a', 'p', 'static', 0, 0), S('b', 'p', 'static', 1, 0)])).toThrow(
      "static pair 'p' has differing gold answers [0, 1]; they must agree",
    );
    expect(() => computeMetrics([S('a', 'p', 'static', 0, 0), S('b', 'p', 'static', 0, -2)])).toThrow(
      'Expected an integer >= -1 for samples[1].prediction but received -2 of type number',
    );
  });
});

describe('bootstrap', () => {
  test('distributions match a naive twin that rebuilds each resample and recomputes from the definitions', () => {
    const samples = randomRun(7, 5);
    const iterations = 60;
    const seed = 42;
    const fast = bootstrapDistributions(samples, { iterations, seed });
    for (const [group, subset] of Object.entries(naiveGroups(samples))) {
      const pairIds = [...new Set(subset.map((s) => s.pair_id))];
      const rand = seededRandom(groupSeed(seed, group));
      const want: Record<string, number[]> = { acc: [], p_acc: [], sensitivity: [], invariance: [] };
      for (let b = 0; b < iterations; b++) {
        const resample: ScoredSample[] = [];
        for (let k = 0; k < pairIds.length; k++) {
          const pid = pairIds[Math.floor(rand() * pairIds.length)];
          for (const s of subset.filter((x) => x.pair_id === pid))
            resample.push({ ...s, id: `${s.id}#${k}`, pair_id: `${pid}#${k}` });
        }
        const m = naiveGroup(resample);
        for (const key of ['acc', 'p_acc', 'sensitivity', 'invariance'] as const)
          if (m[key] !== null) want[key].push(m[key]!);
      }
      const got = fast[group as keyof typeof fast]!;
      for (const key of ['acc', 'p_acc', 'sensitivity', 'invariance'] as const) {
        expect(got[key]).toHaveLength(want[key].length);
        got[key].forEach((v, i) => expect(v).toBeCloseTo(want[key][i], 12));
      }
    }
  });

  test('intervals are seeded, contain the point estimate, and narrow with more pairs', () => {
    const small = randomRun(5, 4);
    const a = bootstrapIntervals(small, { seed: 3, iterations: 400 });
    const b = bootstrapIntervals(small, { seed: 3, iterations: 400 });
    expect(a).toEqual(b);
    const c = bootstrapIntervals(small, { seed: 4, iterations: 400 });
    expect(c).not.toEqual(a);
    const m = computeMetrics(small).groups;
    for (const key of ['acc', 'p_acc'] as const) {
      const [lo, hi] = a.all![key]!;
      expect(lo).toBeLessThanOrEqual(m.all![key]);
      expect(hi).toBeGreaterThanOrEqual(m.all![key]);
    }
    const big = randomRun(5, 40);
    const d = bootstrapIntervals(big, { seed: 3, iterations: 400 });
    const width = (iv: [number, number] | null): number => iv![1] - iv![0];
    expect(width(d.all!.acc)).toBeLessThan(width(a.all!.acc));
    expect(a.static!.sensitivity).toBeNull(); // undefined metric: no interval
  });

  test('quantile interpolates linearly', () => {
    expect(quantile([4, 1, 3, 2], 0)).toBe(1);
    expect(quantile([4, 1, 3, 2], 1)).toBe(4);
    expect(quantile([4, 1, 3, 2], 0.5)).toBe(2.5);
    expect(quantile([0, 10], 0.025)).toBeCloseTo(0.25, 12);
  });
});

describe('TimeBlind', () => {
  const inst = (id: string, c: [boolean, boolean, boolean, boolean]): TimeBlindAnswer[] => [
    { instance: id, video: 'v1', question: 'q1', correct: c[0] },
    { instance: id, video: 'v1', question: 'q2', correct: c[1] },
    { instance: id, video: 'v2', question: 'q1', correct: c[2] },
    { instance: id, video: 'v2', question: 'q2', correct: c[3] },
  ];
  test('hand-computed Acc / Q-Acc / V-Acc / I-Acc', () => {
    const m = timeBlindMetrics([
      ...inst('a', [true, true, true, true]), // q: 2, v: 2, i: 1
      ...inst('b', [true, false, true, false]), // q1 right on both videos: q 1; v 0; i 0
      ...inst('c', [true, true, false, false]), // v1 right on both questions: q 0; v 1
    ]);
    expect(m).toEqual({ n_instances: 3, acc: 8 / 12, q_acc: 3 / 6, v_acc: 3 / 6, i_acc: 1 / 3 });
  });
  test('an incomplete instance is named', () => {
    expect(() => timeBlindMetrics(inst('a', [true, true, true, true]).slice(0, 3))).toThrow(
      "TimeBlind instance 'a' has 2 video(s) x 2 question(s) with 3 answer(s); expected 2 x 2 = 4",
    );
    expect(() =>
      timeBlindMetrics([...inst('a', [true, true, true, true]), inst('a', [true, true, true, true])[0]]),
    ).toThrow(/answers video 'v1' x question 'q1' twice \(answers\[4\]\)/);
  });
});

describe('Pearson r', () => {
  test('hand-computed values', () => {
    // xs = 1,2,3 (mean 2), ys = 2,4,7 (mean 13/3): sxy = 5, sxx = 2, syy = 2*(7/3)^2/... computed below
    const ys = [2, 4, 7];
    const my = 13 / 3;
    const syy = ys.reduce((a, y) => a + (y - my) ** 2, 0);
    expect(pearson([1, 2, 3], ys)).toBeCloseTo(5 / Math.sqrt(2 * syy), 12);
    expect(pearson([1, 2, 3, 4], [10, 20, 30, 40])).toBeCloseTo(1, 12);
    expect(pearson([1, 2, 3, 4], [4, 3, 2, 1])).toBeCloseTo(-1, 12);
  });
  test('degenerate input is refused', () => {
    expect(() => pearson([1, 2], [1, 2])).toThrow(
      'Expected at least 3 runs for xs.length but received 2 of type number',
    );
    expect(() => pearson([1, 1, 1], [1, 2, 3])).toThrow(
      'Pearson r is undefined: the first metric is the same in every run',
    );
    expect(() => pearson([1, 2, 3], [1, 2])).toThrow(
      'Expected the length of xs (3) for ys.length but received 2 of type number',
    );
  });
  test('across runs, by metric path', () => {
    const runs = [1, 2, 3, 4].map((s) => computeMetrics(randomRun(s)));
    const { r, xs, ys } = correlateRuns(runs, 'dynamic.acc', 'dynamic.sensitivity');
    expect(xs).toHaveLength(4);
    expect(r).toBeCloseTo(pearson(xs, ys), 12);
    expect(() => correlateRuns(runs, 'dynamic.nope', 'all.acc')).toThrow(
      /Expected '<group>.<acc\|p_acc\|invalid_rate\|sensitivity\|invariance>'/,
    );
    expect(() => correlateRuns(runs, 'other.acc', 'all.acc')).toThrow(
      "metric 'other.acc': group 'other' is not in this run",
    );
  });
});
