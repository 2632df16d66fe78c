/**
 * Paired evaluation metrics (crpo-method.md sections 8-9): per-video Acc and pair accuracy P-Acc
 * (a pair counts only if every member is answered right, so a fixed-answer policy scores 0 on
 * dynamic pairs), per category; spatiotemporal sensitivity (dynamic pairs whose two predicted
 * answers differ) and invariance (static pairs whose predicted answers agree); the TimeBlind
 * Acc / Q-Acc / V-Acc / I-Acc over 2 videos x 2 questions; seeded bootstrap 95% intervals that
 * resample pairs; Pearson r between two metrics across runs.
 *
 * An invalid prediction (-1: unparseable, outside the shown options, or a failed request) is
 * wrong, never equal to anything and never a change. The null option ("None of the above",
 * index = number of options) is a valid prediction: wrong, but it counts as a change.
 */
import { DYNAMIC_CATEGORIES } from '../data/categories';
import { CATEGORIES, type Category } from '../data/schema';
import { CrpoError, invalidArg, outOfRange } from '../errors';
import { seededRandom } from '../random';

/** One answered video-question, the unit every metric here reads. */
export interface ScoredSample {
  id: string;
  pair_id: string;
  category: Category;
  /** Gold option index. */
  answer: number;
  /** Predicted option index; -1 when invalid. */
  prediction: number;
}

/** How a pair should behave under its transform. */
export type PairKind = 'dynamic' | 'static';

export interface GroupMetrics {
  n_samples: number;
  n_pairs: number;
  /** Per-video accuracy. */
  acc: number;
  /** Pair accuracy: every member right. */
  p_acc: number;
  /** Fraction of predictions that were invalid. */
  invalid_rate: number;
  n_dynamic_pairs: number;
  n_static_pairs: number;
  /** Dynamic pairs whose predictions are all valid and differ wherever the gold answers differ; null without dynamic pairs. */
  sensitivity: number | null;
  /** Static pairs whose members' predictions are all valid and equal; null without static pairs. */
  invariance: number | null;
}

/** Metric names that carry a bootstrap interval. */
export const INTERVAL_METRICS = ['acc', 'p_acc', 'sensitivity', 'invariance'] as const;
export type IntervalMetric = (typeof INTERVAL_METRICS)[number];

/** Group names: 'all', 'dynamic' (the three DyBench categories pooled: DyBench's headline), then each category present. */
export type GroupName = 'all' | 'dynamic' | Category;

export interface PairedMetrics {
  groups: Partial<Record<GroupName, GroupMetrics>>;
}

/** One pair, reduced to the counts every metric needs. */
interface PairStats {
  pair_id: string;
  category: Category;
  kind: PairKind;
  members: number;
  correct: number;
  /** 1 when every member is right. */
  allCorrect: number;
  invalid: number;
  /** 1 when all predictions are valid and members with different gold answers got different predictions. */
  changed: number;
  /** 1 when all predictions are valid and equal. */
  agreed: number;
}

function validateSample(s: ScoredSample, where: string): void {
  if (typeof s !== 'object' || s === null) throw invalidArg(where, 'a scored sample object', s, 'metrics');
  if (typeof s.id !== 'string' || s.id === '') throw invalidArg(`${where}.id`, 'a non-empty string', s.id, 'metrics');
  if (typeof s.pair_id !== 'string' || s.pair_id === '')
    throw invalidArg(`${where}.pair_id`, 'a non-empty string', s.pair_id, 'metrics');
  if (!(CATEGORIES as readonly string[]).includes(s.category))
    throw invalidArg(`${where}.category`, `one of ${CATEGORIES.join(', ')}`, s.category, 'metrics');
  if (!Number.isInteger(s.answer) || s.answer < 0)
    throw invalidArg(`${where}.answer`, 'a non-negative integer', s.answer, 'metrics');
  if (!Number.isInteger(s.prediction) || s.prediction < -1)
    throw invalidArg(`${where}.prediction`, 'an integer >= -1', s.prediction, 'metrics');
}

/**
 * Groups samples into pairs (by pair_id, in order of first appearance). A pair needs at least 2
 * members of one category. A pair is *dynamic* (its answer must change: sensitivity) when its gold
 * answers differ and *static* (its answer must stay: invariance) when they agree; for DyBench this
 * is exactly "dynamic category" vs `static`. A `static` pair whose gold answers differ is a data error.
 */
export function pairSamples(
  samples: readonly ScoredSample[],
): { pair_id: string; category: Category; kind: PairKind; members: ScoredSample[] }[] {
  if (!Array.isArray(samples)) throw invalidArg('samples', 'an array of scored samples', samples, 'pairSamples');
  const byPair = new Map<string, ScoredSample[]>();
  const ids = new Set<string>();
  samples.forEach((s, i) => {
    validateSample(s, `samples[${i}]`);
    if (ids.has(s.id))
      throw new CrpoError('ERR_CRPO_DUPLICATE', `samples[${i}].id: duplicate id '${s.id}'`, { op: 'pairSamples' });
    ids.add(s.id);
    const list = byPair.get(s.pair_id);
    if (list) list.push(s);
    else byPair.set(s.pair_id, [s]);
  });
  const out: { pair_id: string; category: Category; kind: PairKind; members: ScoredSample[] }[] = [];
  for (const [pair_id, members] of byPair) {
    if (members.length < 2) {
      throw new CrpoError(
        'ERR_CRPO_BAD_PAIR',
        `pair '${pair_id}' has ${members.length} member (id '${members[0].id}'); a pair needs at least 2`,
        { op: 'pairSamples' },
      );
    }
    const category = members[0].category;
    const other = members.find((m) => m.category !== category);
    if (other)
      throw new CrpoError(
        'ERR_CRPO_BAD_PAIR',
        `pair '${pair_id}' mixes categories '${category}' and '${other.category}' (id '${other.id}')`,
        { op: 'pairSamples' },
      );
    const goldSame = new Set(members.map((m) => m.answer)).size === 1;
    if (category === 'static' && !goldSame) {
      throw new CrpoError(
        'ERR_CRPO_BAD_PAIR',
        `static pair '${pair_id}' has differing gold answers [${members.map((m) => m.answer).join(', ')}]; they must agree`,
        { op: 'pairSamples' },
      );
    }
    const kind: PairKind = goldSame ? 'static' : 'dynamic';
    out.push({ pair_id, category, kind, members });
  }
  return out;
}

function statsOf(p: { pair_id: string; category: Category; kind: PairKind; members: ScoredSample[] }): PairStats {
  const preds = p.members.map((m) => m.prediction);
  const correct = p.members.filter((m) => m.prediction >= 0 && m.prediction === m.answer).length;
  const invalid = preds.filter((x) => x < 0).length;
  const allValid = invalid === 0;
  // changed: every two members whose gold answers differ were also predicted differently
  // (for the usual 2-member pair: the two predictions differ).
  let changed = allValid ? 1 : 0;
  for (let i = 0; i < p.members.length && changed; i++) {
    for (let j = i + 1; j < p.members.length; j++) {
      if (p.members[i].answer !== p.members[j].answer && preds[i] === preds[j]) {
        changed = 0;
        break;
      }
    }
  }
  return {
    pair_id: p.pair_id,
    category: p.category,
    kind: p.kind,
    members: p.members.length,
    correct,
    allCorrect: correct === p.members.length ? 1 : 0,
    invalid,
    changed,
    agreed: allValid && new Set(preds).size === 1 ? 1 : 0,
  };
}

/** Which groups a pair belongs to. */
function groupsOf(p: PairStats): GroupName[] {
  const g: GroupName[] = ['all'];
  if ((DYNAMIC_CATEGORIES as readonly string[]).includes(p.category)) g.push('dynamic');
  g.push(p.category);
  return g;
}

/** Sums over a list of pair indices (repeats allowed: the bootstrap passes resampled indices). */
function aggregate(stats: readonly PairStats[], idx: ArrayLike<number>): GroupMetrics {
  let samples = 0,
    correct = 0,
    allCorrect = 0,
    invalid = 0,
    dyn = 0,
    stat = 0,
    changed = 0,
    agreed = 0;
  for (let k = 0; k < idx.length; k++) {
    const p = stats[idx[k]];
    samples += p.members;
    correct += p.correct;
    allCorrect += p.allCorrect;
    invalid += p.invalid;
    if (p.kind === 'dynamic') {
      dyn++;
      changed += p.changed;
    } else {
      stat++;
      agreed += p.agreed;
    }
  }
  const n = idx.length;
  return {
    n_samples: samples,
    n_pairs: n,
    acc: samples ? correct / samples : 0,
    p_acc: n ? allCorrect / n : 0,
    invalid_rate: samples ? invalid / samples : 0,
    n_dynamic_pairs: dyn,
    n_static_pairs: stat,
    sensitivity: dyn ? changed / dyn : null,
    invariance: stat ? agreed / stat : null,
  };
}

interface Prepared {
  stats: PairStats[];
  /** Pair indices of each group, in group order: all, dynamic, then categories in CATEGORIES order. */
  groups: [GroupName, number[]][];
}

function prepare(samples: readonly ScoredSample[]): Prepared {
  const stats = pairSamples(samples).map(statsOf);
  const members = new Map<GroupName, number[]>();
  stats.forEach((p, i) => {
    for (const g of groupsOf(p)) {
      const list = members.get(g);
      if (list) list.push(i);
      else members.set(g, [i]);
    }
  });
  const order: GroupName[] = ['all', 'dynamic', ...CATEGORIES];
  return { stats, groups: order.filter((g) => members.has(g)).map((g) => [g, members.get(g)!]) };
}

/** Acc, P-Acc, invalid rate, sensitivity and invariance for 'all', 'dynamic' and each category present. */
export function computeMetrics(samples: readonly ScoredSample[]): PairedMetrics {
  const { stats, groups } = prepare(samples);
  const out: PairedMetrics = { groups: {} };
  for (const [g, idx] of groups) out.groups[g] = aggregate(stats, idx);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Bootstrap

// The bootstrap draws from the one seeded generator (lib/random.ts). Re-exported for lib/train/sft.ts,
// edited on another branch; new code imports it from lib/random.ts.
export { seededRandom };

/** A per-group seed, so a group's interval does not depend on which other groups exist. */
export function groupSeed(seed: number, group: string): number {
  let h = (seed ^ 0x9e3779b9) >>> 0;
  for (let i = 0; i < group.length; i++) h = Math.imul(h ^ group.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

export interface BootstrapOptions {
  /** Resamples per group (default 1000). */
  iterations?: number;
  /** Seed of the resampling (default 0). */
  seed?: number;
  /** Two-sided coverage (default 0.95). */
  level?: number;
}

export const BOOTSTRAP_DEFAULTS: Required<BootstrapOptions> = { iterations: 1000, seed: 0, level: 0.95 };

/** Percentile interval [lo, hi]; null when the metric is undefined for the group. */
export type Interval = [number, number] | null;

export type GroupIntervals = Record<IntervalMetric, Interval>;

function resolveBootstrap(o: BootstrapOptions): Required<BootstrapOptions> {
  const r = { ...BOOTSTRAP_DEFAULTS, ...o };
  if (!Number.isInteger(r.iterations) || r.iterations < 1)
    throw outOfRange('iterations', 'a positive integer', r.iterations, 'bootstrap');
  if (!Number.isInteger(r.seed)) throw invalidArg('seed', 'an integer', r.seed, 'bootstrap');
  if (!(r.level > 0 && r.level < 1)) throw outOfRange('level', 'a number in (0, 1)', r.level, 'bootstrap');
  return r;
}

/**
 * The bootstrap distribution of every interval metric, per group: `iterations` resamples of the
 * group's pairs with replacement (same pair count). Resampled metrics that are undefined (a
 * resample without static pairs has no invariance) are left out of that metric's distribution.
 */
export function bootstrapDistributions(
  samples: readonly ScoredSample[],
  o: BootstrapOptions = {},
): Partial<Record<GroupName, Record<IntervalMetric, number[]>>> {
  const { iterations, seed } = resolveBootstrap(o);
  const { stats, groups } = prepare(samples);
  const out: Partial<Record<GroupName, Record<IntervalMetric, number[]>>> = {};
  for (const [g, idx] of groups) {
    const rand = seededRandom(groupSeed(seed, g));
    const n = idx.length;
    const draw = new Int32Array(n); // (n,) resampled pair indices
    const dist: Record<IntervalMetric, number[]> = { acc: [], p_acc: [], sensitivity: [], invariance: [] };
    for (let b = 0; b < iterations; b++) {
      for (let k = 0; k < n; k++) draw[k] = idx[Math.floor(rand() * n)];
      const m = aggregate(stats, draw);
      for (const key of INTERVAL_METRICS) {
        const v = m[key];
        if (v !== null) dist[key].push(v);
      }
    }
    out[g] = dist;
  }
  return out;
}

/** Linear-interpolated quantile of an unsorted list (q in [0, 1]). */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) throw outOfRange('values', 'a non-empty list', values, 'quantile');
  const s = [...values].sort((a, b) => a - b);
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return s[lo] + (s[hi] - s[lo]) * (pos - lo);
}

/** Percentile bootstrap intervals (default 95%, 1000 resamples, seed 0) for every group and interval metric. */
export function bootstrapIntervals(
  samples: readonly ScoredSample[],
  o: BootstrapOptions = {},
): Partial<Record<GroupName, GroupIntervals>> {
  const r = resolveBootstrap(o);
  const dists = bootstrapDistributions(samples, r);
  const a = (1 - r.level) / 2;
  const out: Partial<Record<GroupName, GroupIntervals>> = {};
  for (const [g, dist] of Object.entries(dists) as [GroupName, Record<IntervalMetric, number[]>][]) {
    const iv = {} as GroupIntervals;
    for (const key of INTERVAL_METRICS)
      iv[key] = dist[key].length ? [quantile(dist[key], a), quantile(dist[key], 1 - a)] : null;
    out[g] = iv;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// TimeBlind

/** One answer of a TimeBlind instance (2 videos x 2 questions). */
export interface TimeBlindAnswer {
  instance: string;
  /** Which of the instance's two videos. */
  video: string;
  /** Which of the instance's two questions. */
  question: string;
  correct: boolean;
}

export interface TimeBlindMetrics {
  n_instances: number;
  /** Over all 4N answers. */
  acc: number;
  /** Questions answered right on both videos, over 2N. */
  q_acc: number;
  /** Videos answered right on both questions, over 2N. */
  v_acc: number;
  /** Instances with all four answers right, over N (the primary TimeBlind metric). */
  i_acc: number;
}

/** TimeBlind metrics; every instance must hold exactly 2 videos x 2 questions, one answer each. */
export function timeBlindMetrics(answers: readonly TimeBlindAnswer[]): TimeBlindMetrics {
  if (!Array.isArray(answers))
    throw invalidArg('answers', 'an array of TimeBlind answers', answers, 'timeBlindMetrics');
  const inst = new Map<string, Map<string, boolean>>(); // instance -> "video\0question" -> correct
  const videos = new Map<string, Set<string>>();
  const questions = new Map<string, Set<string>>();
  answers.forEach((a, i) => {
    for (const f of ['instance', 'video', 'question'] as const) {
      if (typeof a?.[f] !== 'string' || a[f] === '')
        throw invalidArg(`answers[${i}].${f}`, 'a non-empty string', a?.[f], 'timeBlindMetrics');
    }
    if (typeof a.correct !== 'boolean')
      throw invalidArg(`answers[${i}].correct`, 'a boolean', a.correct, 'timeBlindMetrics');
    const cells = inst.get(a.instance) ?? new Map<string, boolean>();
    inst.set(a.instance, cells);
    const key = `${a.video}\0${a.question}`;
    if (cells.has(key))
      throw new CrpoError(
        'ERR_CRPO_DUPLICATE',
        `TimeBlind instance '${a.instance}' answers video '${a.video}' x question '${a.question}' twice (answers[${i}])`,
        { op: 'timeBlindMetrics' },
      );
    cells.set(key, a.correct);
    (videos.get(a.instance) ?? videos.set(a.instance, new Set()).get(a.instance)!).add(a.video);
    (questions.get(a.instance) ?? questions.set(a.instance, new Set()).get(a.instance)!).add(a.question);
  });
  let all = 0,
    q = 0,
    v = 0,
    full = 0;
  for (const [id, cells] of inst) {
    const vs = [...videos.get(id)!];
    const qs = [...questions.get(id)!];
    if (vs.length !== 2 || qs.length !== 2 || cells.size !== 4) {
      throw new CrpoError(
        'ERR_CRPO_BAD_PAIR',
        `TimeBlind instance '${id}' has ${vs.length} video(s) x ${qs.length} question(s) with ${cells.size} answer(s); expected 2 x 2 = 4`,
        { op: 'timeBlindMetrics' },
      );
    }
    const c = (vid: string, qu: string): boolean => cells.get(`${vid}\0${qu}`)!;
    for (const x of cells.values()) all += x ? 1 : 0;
    for (const qu of qs) q += c(vs[0], qu) && c(vs[1], qu) ? 1 : 0;
    for (const vid of vs) v += c(vid, qs[0]) && c(vid, qs[1]) ? 1 : 0;
    full += [...cells.values()].every(Boolean) ? 1 : 0;
  }
  const n = inst.size;
  return {
    n_instances: n,
    acc: n ? all / (4 * n) : 0,
    q_acc: n ? q / (2 * n) : 0,
    v_acc: n ? v / (2 * n) : 0,
    i_acc: n ? full / n : 0,
  };
}

// ---------------------------------------------------------------------------------------------
// Correlation across runs

/** Pearson's r of two equally long series (at least 3 points, neither constant). */
export function pearson(xs: readonly number[], ys: readonly number[]): number {
  if (!Array.isArray(xs) || !Array.isArray(ys))
    throw invalidArg('xs, ys', 'two arrays of numbers', Array.isArray(xs) ? ys : xs, 'pearson');
  if (xs.length !== ys.length) throw outOfRange('ys.length', `the length of xs (${xs.length})`, ys.length, 'pearson');
  if (xs.length < 3) throw outOfRange('xs.length', 'at least 3 runs', xs.length, 'pearson');
  [...xs, ...ys].forEach((v) => {
    if (typeof v !== 'number' || !Number.isFinite(v)) throw invalidArg('xs, ys values', 'finite numbers', v, 'pearson');
  });
  const n = xs.length;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let sxy = 0,
    sxx = 0,
    syy = 0;
  for (let i = 0; i < n; i++) {
    sxy += (xs[i] - mx) * (ys[i] - my);
    sxx += (xs[i] - mx) ** 2;
    syy += (ys[i] - my) ** 2;
  }
  if (sxx === 0 || syy === 0)
    throw new CrpoError(
      'ERR_CRPO_DEGENERATE',
      `Pearson r is undefined: ${sxx === 0 ? 'the first' : 'the second'} metric is the same in every run`,
      { op: 'pearson' },
    );
  return sxy / Math.sqrt(sxx * syy);
}

/** Reads a metric such as 'dynamic.p_acc' or 'moving_direction.sensitivity' from a metrics object. */
export function metricAt(metrics: PairedMetrics, path: string): number {
  const [group, key, ...rest] = path.split('.');
  const g = metrics.groups[group as GroupName];
  const known = ['acc', 'p_acc', 'invalid_rate', 'sensitivity', 'invariance'];
  if (rest.length || !key || !known.includes(key))
    throw invalidArg('metric', `'<group>.<${known.join('|')}>'`, path, 'metricAt');
  if (!g)
    throw new CrpoError(
      'ERR_CRPO_UNKNOWN_NAME',
      `metric '${path}': group '${group}' is not in this run; present: ${Object.keys(metrics.groups).join(', ')}`,
      { op: 'metricAt' },
    );
  const v = g[key as keyof GroupMetrics];
  if (typeof v !== 'number')
    throw new CrpoError(
      'ERR_CRPO_DEGENERATE',
      `metric '${path}' is undefined for this run (no ${key === 'invariance' ? 'static' : 'dynamic'} pairs)`,
      { op: 'metricAt' },
    );
  return v;
}

/** Pearson r between two metrics (paths as in metricAt) across runs. */
export function correlateRuns(
  runs: readonly PairedMetrics[],
  x: string,
  y: string,
): { r: number; xs: number[]; ys: number[] } {
  const xs = runs.map((m) => metricAt(m, x));
  const ys = runs.map((m) => metricAt(m, y));
  return { r: pearson(xs, ys), xs, ys };
}
