/**
 * Each registered algorithm (lib/algo) on crafted groups: its rollout plan (branches, sample
 * counts, which sequences are trained) and its rewards, computed by hand from
 * crpo-method.md sections 5 and 7.
 */
import { ALGORITHMS, getAlgorithm, type AlgoSettings, type ScoredGroupInput } from '../../lib/algo';

const S: AlgoSettings = {
  groupSize: 4,
  cfGroupSize: 0,
  nullOption: 'auto',
  norm: 'per-branch',
  eps: 1e-6,
  weights: { accuracy: 1, format: 1, crr: 1, behave: 1 },
  tgrpo: { bonus: 0.3, mu: 0.8 },
  arrow: { wReverse: 0.5 },
};

const f32 = (xs: number[]): number[] => xs.map(Math.fround);

describe('algorithm registry', () => {
  it('lists the six algorithms and rejects an unknown one with the known names', () => {
    expect(ALGORITHMS.names()).toEqual(['arrowrl', 'crpo', 'crpo-no-dual', 'grpo', 'grpo-2g', 't-grpo']);
    expect(() => getAlgorithm('ppo')).toThrow(
      "Unknown algorithm 'ppo'; known: arrowrl, crpo, crpo-no-dual, grpo, grpo-2g, t-grpo",
    );
  });

  it('plans the branches of each algorithm', () => {
    const p = (n: string) => getAlgorithm(n).plan(S);
    expect(p('grpo')).toEqual({
      origSamples: 4,
      secondSamples: 0,
      second: 'none',
      trainSecond: false,
      nullOption: false,
    });
    expect(p('grpo-2g')).toMatchObject({ origSamples: 8, secondSamples: 0 });
    expect(p('t-grpo')).toEqual({
      origSamples: 4,
      secondSamples: 2,
      second: 'shuffled',
      trainSecond: false,
      nullOption: false,
    });
    expect(p('arrowrl')).toMatchObject({ secondSamples: 4, second: 'reversed', trainSecond: false });
    expect(p('crpo')).toEqual({
      origSamples: 4,
      secondSamples: 4,
      second: 'counterfactual',
      trainSecond: true,
      nullOption: true,
    });
    expect(p('crpo-no-dual')).toMatchObject({ second: 'counterfactual', trainSecond: false, nullOption: true });
    expect(getAlgorithm('crpo').plan({ ...S, cfGroupSize: 2, nullOption: false })).toMatchObject({
      secondSamples: 2,
      nullOption: false,
    });
  });
});

describe('rewards on crafted groups', () => {
  // truth 0, 3 options + null option (k = 4), relation change.
  const group: ScoredGroupInput = {
    truth: 0,
    numOptions: 4,
    relation: 'change',
    origAnswers: [0, 0, 1, -1],
    origFormat: [1, 1, 1, 0],
    secondAnswers: [1, 3, 0, -1],
    secondFormat: [1, 1, 1, 0],
  };

  it('grpo: correctness + format', () => {
    const s = getAlgorithm('grpo').score([group], S);
    expect(Array.from(s.origReward)).toEqual([2, 2, 1, 0]);
    expect(s.secondReward.length).toBe(0);
    expect(s.components['orig/correct']).toBe(0.5);
  });

  it('crpo: R_correct + R_format + R_CRR on both branches', () => {
    // correct = [1,1,0,0], p_o = 0.5; expected (change, y'=unknown): c != 0 and valid -> [1,1,0,0] (null option 3 counts), p_c = 0.5
    // r = correct + f + correct*p_c = [2.5, 2.5, 1, 0]; s = expected + g + expected*p_o = [2.5, 2.5, 1, 0]
    const s = getAlgorithm('crpo').score([group], S);
    expect(Array.from(s.origReward)).toEqual([2.5, 2.5, 1, 0]);
    expect(Array.from(s.secondReward)).toEqual([2.5, 2.5, 1, 0]);
    expect(s.components.crr).toBe(0.25);
    expect(s.components['cf/behave']).toBe(0.5);
    expect(s.components['orig/crr']).toBeCloseTo(0.25, 12); // mean of correct_i * p_c = 0.5*0.5
    const mean = 1.5,
      sd = Math.sqrt((1 + 1 + 0.25 + 2.25) / 3);
    expect(s.origAdvantage[0]).toBeCloseTo(1 / (sd + 1e-6), 5);
    expect(s.origAdvantage[3]).toBeCloseTo((0 - mean) / (sd + 1e-6), 5);
  });

  it('crpo on a static (same) group rewards keeping the answer', () => {
    const s = getAlgorithm('crpo').score([{ ...group, relation: 'same' }], S);
    // expected = [c == 0] = [0,0,1,0], p_c = 0.25; s = [0+1, 0+1, 1+1+0.5, 0]
    expect(Array.from(s.secondReward)).toEqual([1, 1, 2.5, 0]);
    expect(Array.from(s.origReward)).toEqual([2.25, 2.25, 1, 0]);
  });

  it('crpo-no-dual scores the counterfactual branch like crpo; flat only looks at the trained branch', () => {
    const flatOrig: ScoredGroupInput = { ...group, origAnswers: [0, 0, 0, 0], origFormat: [1, 1, 1, 1] };
    const dual = getAlgorithm('crpo').score([flatOrig], S);
    const noDual = getAlgorithm('crpo-no-dual').score([flatOrig], S);
    expect(Array.from(noDual.secondReward)).toEqual(Array.from(dual.secondReward));
    expect(noDual.flat[0]).toBe(1);
    expect(dual.flat[0]).toBe(0);
  });

  it('t-grpo: bonus when the ordered group is at least mu times as accurate as the shuffled one', () => {
    const s = getAlgorithm('t-grpo').score([{ ...group, secondAnswers: [0, 1], secondFormat: [1, 1] }], S);
    // p = 0.5, q = 0.5 -> bonus 0.3 on the correct ones
    expect(Array.from(s.origReward)).toEqual(f32([2.3, 2.3, 1, 0]));
    expect(s.components['tgrpo/bonus_on']).toBe(1);
  });

  it('arrowrl: + w_rev * share of valid reversed answers that differ', () => {
    const s = getAlgorithm('arrowrl').score([group], S);
    // reversed [1,3,0,-1]: for a=0: differ {1,3} = 2/4 -> +0.25; a=1: {3,0} -> +0.25; invalid -> 0
    expect(Array.from(s.origReward)).toEqual([2.25, 2.25, 1.25, 0]);
  });

  it('grpo-2g scores 2G rollouts', () => {
    const g8: ScoredGroupInput = {
      ...group,
      origAnswers: [0, 0, 1, -1, 0, 2, 2, 2],
      origFormat: [1, 1, 1, 0, 1, 1, 1, 1],
      secondAnswers: [],
      secondFormat: [],
    };
    expect(getAlgorithm('grpo-2g').score([g8], S).origReward.length).toBe(8);
  });
});
