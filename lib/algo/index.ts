/**
 * The trainer's algorithms, registered by name with one interface (crpo-method.md sections 5-7):
 * `grpo`, `grpo-2g` (GRPO with 2G rollouts, the compute-matched control), `t-grpo` (Video-R1),
 * `arrowrl` (Xue et al., arXiv 2506.03340), `crpo` and `crpo-no-dual` (counterfactual branch
 * scored, not trained). Each says how to roll out (which branches, how many samples, which
 * frames the second branch sees), computes rewards and advantages through a fused native kernel,
 * and says which sequences enter the loss.
 */
import { Registry } from '../registry';
import type { AdvantageNorm } from '../native';
import { crrAdvantagesSync, grpoAdvantagesSync } from '../reward';
import { arrowAdvantages, tgrpoAdvantages } from '../reward/baselines';

export {
  policyLoss,
  tokenLoss,
  referencePolicyLoss,
  DEFAULT_LOSS,
  LOSS_AGGREGATIONS,
  type LossAggregation,
  type LossSettings,
  type LossSequence,
  type LossResult,
  type LossParts,
  type PolicyLossOptions,
  type PolicyLossInputs,
} from './loss';

/** Which frames the second branch sees. */
export type SecondBranch = 'none' | 'counterfactual' | 'shuffled' | 'reversed';

export interface RolloutPlan {
  /** Samples per prompt on the original video. */
  origSamples: number;
  /** Samples per prompt on the second branch (0 when none). */
  secondSamples: number;
  second: SecondBranch;
  /** Second-branch sequences enter the loss. */
  trainSecond: boolean;
  /** Append "None of the above" to every question (section 3). */
  nullOption: boolean;
}

/** Settings every algorithm reads (a slice of the trainer config). */
export interface AlgoSettings {
  /** G */
  groupSize: number;
  /** G' (counterfactual / reversed samples); 0 = same as G. */
  cfGroupSize: number;
  nullOption: 'auto' | boolean;
  norm: AdvantageNorm;
  eps: number;
  weights: { accuracy: number; format: number; crr: number; behave: number };
  tgrpo: { bonus: number; mu: number };
  arrow: { wReverse: number };
}

/** One prompt group's parsed rollouts. Answers are option indices, -1 = invalid. */
export interface ScoredGroupInput {
  truth: number;
  numOptions: number;
  relation: 'change' | 'same';
  cfLabel?: number;
  origAnswers: number[];
  origFormat: number[];
  secondAnswers: number[];
  secondFormat: number[];
}

export interface Scores {
  /** (B, G) */
  origReward: Float32Array;
  origAdvantage: Float32Array;
  /** (B, G2), empty without a second branch */
  secondReward: Float32Array;
  secondAdvantage: Float32Array;
  /** (B,) 1 when every reward that enters the loss is equal in the group (no learning signal). */
  flat: Uint8Array;
  /** Mean of each reward component, for the metrics log (e.g. orig/correct, cf/behave, crr). */
  components: Record<string, number>;
}

export interface Algorithm {
  readonly name: string;
  readonly describe: string;
  plan(s: AlgoSettings): RolloutPlan;
  score(groups: readonly ScoredGroupInput[], s: AlgoSettings): Scores;
}

export const ALGORITHMS = new Registry<Algorithm>('algorithm');

const mean = (a: ArrayLike<number>): number => {
  if (a.length === 0) return 0;
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i];
  return s / a.length;
};

const std = (a: ArrayLike<number>): number => {
  if (a.length < 2) return 0;
  const m = mean(a);
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i] - m) * (a[i] - m);
  return Math.sqrt(s / (a.length - 1));
};

function pack(
  groups: readonly ScoredGroupInput[],
  key: 'origAnswers' | 'secondAnswers' | 'origFormat' | 'secondFormat',
  per: number,
  f32 = false,
): Int32Array | Float32Array {
  const out = f32 ? new Float32Array(groups.length * per) : new Int32Array(groups.length * per);
  groups.forEach((g, b) => {
    if (g[key].length !== per)
      throw new RangeError(`${key} of group ${b} has ${g[key].length} entries, expected ${per}`);
    g[key].forEach((v, i) => {
      out[b * per + i] = v;
    });
  });
  return out;
}

const resolveCf = (s: AlgoSettings): number => (s.cfGroupSize > 0 ? s.cfGroupSize : s.groupSize);
const nullFor = (s: AlgoSettings, crpoFamily: boolean): boolean =>
  s.nullOption === 'auto' ? crpoFamily : s.nullOption;

function grpoScore(groups: readonly ScoredGroupInput[], s: AlgoSettings, G: number): Scores {
  const out = grpoAdvantagesSync({
    groups: groups.length,
    groupSize: G,
    answers: pack(groups, 'origAnswers', G) as Int32Array,
    truth: Int32Array.from(groups, (g) => g.truth),
    numOptions: Int32Array.from(groups, (g) => g.numOptions),
    format: pack(groups, 'origFormat', G, true) as Float32Array,
    wAccuracy: s.weights.accuracy,
    wFormat: s.weights.format,
    norm: s.norm,
    eps: s.eps,
  });
  return {
    origReward: out.reward,
    origAdvantage: out.advantage,
    secondReward: new Float32Array(0),
    secondAdvantage: new Float32Array(0),
    flat: out.flat,
    components: {
      'orig/reward': mean(out.reward),
      'orig/reward_std': std(out.reward),
      'orig/correct': mean(out.correct),
      'orig/format': groups.length ? mean(pack(groups, 'origFormat', G, true)) : 0,
    },
  };
}

ALGORITHMS.register('grpo', {
  name: 'grpo',
  describe: 'GRPO: correctness + format on the original video only',
  plan: (s) => ({
    origSamples: s.groupSize,
    secondSamples: 0,
    second: 'none',
    trainSecond: false,
    nullOption: nullFor(s, false),
  }),
  score: (groups, s) => grpoScore(groups, s, s.groupSize),
});

ALGORITHMS.register('grpo-2g', {
  name: 'grpo-2g',
  describe: 'GRPO with 2G rollouts on the original video (compute-matched control)',
  plan: (s) => ({
    origSamples: 2 * s.groupSize,
    secondSamples: 0,
    second: 'none',
    trainSecond: false,
    nullOption: nullFor(s, false),
  }),
  score: (groups, s) => grpoScore(groups, s, 2 * s.groupSize),
});

ALGORITHMS.register('t-grpo', {
  name: 't-grpo',
  describe:
    'T-GRPO (Video-R1): G/2 extra rollouts on shuffled frames, scored only; +bonus to correct ordered rollouts when p >= mu*q',
  plan: (s) => ({
    origSamples: s.groupSize,
    secondSamples: Math.max(1, Math.floor(s.groupSize / 2)),
    second: 'shuffled',
    trainSecond: false,
    nullOption: nullFor(s, false),
  }),
  score: (groups, s) => {
    const G = s.groupSize,
      S = Math.max(1, Math.floor(G / 2));
    const out = tgrpoAdvantages({
      groups: groups.length,
      groupSize: G,
      shuffledSize: S,
      answers: pack(groups, 'origAnswers', G) as Int32Array,
      shuffledAnswers: pack(groups, 'secondAnswers', S) as Int32Array,
      truth: Int32Array.from(groups, (g) => g.truth),
      numOptions: Int32Array.from(groups, (g) => g.numOptions),
      format: pack(groups, 'origFormat', G, true) as Float32Array,
      wAccuracy: s.weights.accuracy,
      wFormat: s.weights.format,
      bonus: s.tgrpo.bonus,
      mu: s.tgrpo.mu,
      norm: s.norm,
      eps: s.eps,
    });
    return {
      origReward: out.reward,
      origAdvantage: out.advantage,
      secondReward: new Float32Array(groups.length * S),
      secondAdvantage: new Float32Array(groups.length * S),
      flat: out.flat,
      components: {
        'orig/reward': mean(out.reward),
        'orig/reward_std': std(out.reward),
        'orig/correct': mean(out.correct),
        'orig/format': mean(pack(groups, 'origFormat', G, true)),
        'shuffled/correct': mean(out.pShuffled),
        'shuffled/format': mean(pack(groups, 'secondFormat', S, true)),
        'tgrpo/bonus_on': mean(out.bonusOn),
      },
    };
  },
});

ALGORITHMS.register('arrowrl', {
  name: 'arrowrl',
  describe: "ArrowRL: G' rollouts on the reversed video, scored only; reward answers that differ from them",
  plan: (s) => ({
    origSamples: s.groupSize,
    secondSamples: resolveCf(s),
    second: 'reversed',
    trainSecond: false,
    nullOption: nullFor(s, false),
  }),
  score: (groups, s) => {
    const G = s.groupSize,
      H = resolveCf(s);
    const out = arrowAdvantages({
      groups: groups.length,
      groupSize: G,
      reverseSize: H,
      answers: pack(groups, 'origAnswers', G) as Int32Array,
      reverseAnswers: pack(groups, 'secondAnswers', H) as Int32Array,
      truth: Int32Array.from(groups, (g) => g.truth),
      numOptions: Int32Array.from(groups, (g) => g.numOptions),
      format: pack(groups, 'origFormat', G, true) as Float32Array,
      wAccuracy: s.weights.accuracy,
      wFormat: s.weights.format,
      wReverse: s.arrow.wReverse,
      norm: s.norm,
      eps: s.eps,
    });
    return {
      origReward: out.reward,
      origAdvantage: out.advantage,
      secondReward: new Float32Array(groups.length * H),
      secondAdvantage: new Float32Array(groups.length * H),
      flat: out.flat,
      components: {
        'orig/reward': mean(out.reward),
        'orig/reward_std': std(out.reward),
        'orig/correct': mean(out.correct),
        'orig/format': mean(pack(groups, 'origFormat', G, true)),
        'reversed/format': mean(pack(groups, 'secondFormat', H, true)),
        'arrow/differ': mean(out.differ),
      },
    };
  },
});

function crpoScore(groups: readonly ScoredGroupInput[], s: AlgoSettings, trainSecond: boolean): Scores {
  const G = s.groupSize,
    H = resolveCf(s);
  const origFormat = pack(groups, 'origFormat', G, true) as Float32Array,
    cfFormat = pack(groups, 'secondFormat', H, true) as Float32Array;
  const out = crrAdvantagesSync({
    groups: groups.length,
    origSize: G,
    cfSize: H,
    origAnswers: pack(groups, 'origAnswers', G) as Int32Array,
    cfAnswers: pack(groups, 'secondAnswers', H) as Int32Array,
    truth: Int32Array.from(groups, (g) => g.truth),
    relation: Int32Array.from(groups, (g) => (g.relation === 'change' ? 1 : 0)),
    cfLabel: Int32Array.from(groups, (g) => g.cfLabel ?? -1),
    numOptions: Int32Array.from(groups, (g) => g.numOptions),
    origFormat,
    cfFormat,
    weights: s.weights,
    norm: s.norm,
    eps: s.eps,
  });
  // A group carries no signal when every trained reward is equal: both branches flat (dual) or the original one.
  const flat = Uint8Array.from(out.origFlat, (f, b) => (trainSecond ? (f && out.cfFlat[b] ? 1 : 0) : f));
  // CRR terms per branch: correct_i * p_c (orig) and expected_j * p_o (cf).
  let crrO = 0,
    crrC = 0;
  const B = groups.length;
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < G; i++) crrO += out.correct[b * G + i] * out.pCf[b];
    for (let j = 0; j < H; j++) crrC += out.expected[b * H + j] * out.pOrig[b];
  }
  return {
    origReward: out.origReward,
    origAdvantage: out.origAdvantage,
    secondReward: out.cfReward,
    secondAdvantage: out.cfAdvantage,
    flat,
    components: {
      'orig/reward': mean(out.origReward),
      'orig/reward_std': std(out.origReward),
      'orig/correct': mean(out.correct),
      'orig/format': mean(origFormat),
      'orig/crr': B ? crrO / (B * G) : 0,
      'cf/reward': mean(out.cfReward),
      'cf/reward_std': std(out.cfReward),
      'cf/behave': mean(out.expected),
      'cf/format': mean(cfFormat),
      'cf/crr': B ? crrC / (B * H) : 0,
      crr: B ? mean(Float32Array.from(out.pOrig, (p, b) => p * out.pCf[b])) : 0,
    },
  };
}

ALGORITHMS.register('crpo', {
  name: 'crpo',
  describe: 'CRPO: dual-branch rollouts (original + counterfactual), CRR rewards, both branches trained',
  plan: (s) => ({
    origSamples: s.groupSize,
    secondSamples: resolveCf(s),
    second: 'counterfactual',
    trainSecond: true,
    nullOption: nullFor(s, true),
  }),
  score: (groups, s) => crpoScore(groups, s, true),
});

ALGORITHMS.register('crpo-no-dual', {
  name: 'crpo-no-dual',
  describe: 'CRPO without the dual-branch gradient: the counterfactual branch is scored, not trained',
  plan: (s) => ({
    origSamples: s.groupSize,
    secondSamples: resolveCf(s),
    second: 'counterfactual',
    trainSecond: false,
    nullOption: nullFor(s, true),
  }),
  score: (groups, s) => crpoScore(groups, s, false),
});

/** The algorithm registered under `name`; an unknown name throws and lists the known ones. */
export function getAlgorithm(name: string): Algorithm {
  return ALGORITHMS.get(name);
}
