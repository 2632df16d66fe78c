/**
 * Synthetic DyBench (crpo-method.md section 8; docs/data-format.md): procedurally rendered small
 * videos for the three DyBench categories (reversible dynamics 3-way, moving direction 4-way, event
 * sequence 2-way) plus static questions (colour, shape, count). Every item is a counterfactual
 * pair: the partner is the original clip passed through the video transform, so the members
 * differ only by the transform. A shortcut knob ties object colour to the dynamic answer of the
 * original member in the train split (probability `shortcutP`); the test split draws colour
 * independently of the answer, so a colour-reader fails there.
 */
import { invalidArg, outOfRange } from '../errors';
import { transformFramesSync } from '../counterfactual';
import { CATEGORIES, DyBenchRecord, SyntheticVideoSpec, type Category, type RecordTransform } from '../data/schema';
import { DYNAMIC_CATEGORIES, mapDirection } from '../data/categories';
import { Rng } from './rng';
import {
  OBJECT_COLOURS,
  SHAPES,
  SCENE_VERSION,
  type ColourName,
  type Scene,
  type SceneObject,
  type Shape,
} from '../data/scene';
import { renderScene } from '../video/synthetic';

// The scene format lives in lib/data/scene.ts, the rasteriser in lib/video/synthetic.ts.
export {
  parseScene,
  PALETTE,
  SHAPES,
  OBJECT_COLOURS,
  SCENE_VERSION,
  type Scene,
  type SceneObject,
} from '../data/scene';
export { renderScene, renderSynthetic } from '../video/synthetic';
export { Rng, hash32 } from './rng';

export interface SynthOptions {
  split: 'train' | 'test';
  /** Pairs per category. */
  pairs: number;
  seed: number;
  /** Frames per clip (default 8). */
  frames?: number;
  /** Height = width in pixels (default 32). */
  size?: number;
  /** Train split: probability that the object colour names the dynamic answer (default 0.9). */
  shortcutP?: number;
  /**
   * How object colour relates to the dynamic answer: 'shortcut' (colour names the original's
   * answer with probability shortcutP; the train split's default) or 'independent' (drawn
   * independently of the answer; the test split's rule, also usable for training data).
   */
  colour?: 'shortcut' | 'independent';
  /** Default: reversible_dynamics, moving_direction, event_sequence, static. */
  categories?: Category[];
}

export interface SynthItem {
  record: DyBenchRecord;
  /** uint8 [T,H,W,3]. */
  frames: Uint8Array;
}

export const SYNTH_DEFAULTS = {
  frames: 8,
  size: 32,
  shortcutP: 0.9,
  categories: ['reversible_dynamics', 'moving_direction', 'event_sequence', 'static'] as Category[],
};

export const SYNTH_QUESTIONS = {
  reversible_dynamics: {
    question: 'How does the size of the object change during the video?',
    options: ['It grows', 'It shrinks', 'It stays the same size'],
  },
  moving_direction: { question: 'In which direction does the object move?', options: ['left', 'right', 'up', 'down'] },
  event_sequence: { question: 'Which happens first?' },
  colour: { question: 'What colour is the object?' },
  shape: { question: 'What shape is the object?' },
  count: { question: 'How many objects are there?', options: ['1', '2', '3', '4'] },
} as const;

/** The option the object's colour names under the train split's shortcut (-1 when none). */
export function colourAnswer(record: DyBenchRecord): number {
  const v = record.video as { scene?: { objects?: { color?: string }[] } };
  const colour = v.scene?.objects?.[0]?.color;
  const k = colour ? OBJECT_COLOURS.indexOf(colour as (typeof OBJECT_COLOURS)[number]) : -1;
  return k >= 0 && k < record.options.length ? k : -1;
}

/**
 * Share of dynamic predictions that follow the colour where the colour names a wrong option
 * (null when no such item). A policy that reads the video scores ~0; one that reads colour ~1.
 */
export function colourShortcutRate(records: readonly DyBenchRecord[], predictions: readonly number[]): number | null {
  let n = 0,
    hit = 0;
  records.forEach((r, i) => {
    if (!DYNAMIC_CATEGORIES.includes(r.category)) return;
    const k = colourAnswer(r);
    if (k < 0 || k === r.answer) return;
    n++;
    if (predictions[i] === k) hit++;
  });
  return n ? hit / n : null;
}

/** The colour that names answer index k under the shortcut (dynamic categories). */
export function shortcutColour(answerIndex: number): ColourName {
  return OBJECT_COLOURS[answerIndex];
}

type ColourRule = 'shortcut' | 'independent';

interface PairPlan {
  scene: Scene;
  question: string;
  options: string[];
  answer: number;
  transform: Exclude<RecordTransform, 'none'>;
  partnerAnswer: number;
  /** 'swap' only: first frame of the second segment. */
  swapAt?: number;
  meta: Record<string, unknown>;
}

const clamp = (v: number, lo: number, hi: number): number => Math.min(hi, Math.max(lo, v));

/** Colour for a dynamic item whose original answer is `answer` among `k` options. */
function dynamicColour(
  rng: Rng,
  rule: ColourRule,
  answer: number,
  k: number,
  p: number,
): { colour: ColourName; matches: boolean } {
  let index: number;
  if (rule === 'shortcut') {
    if (rng.next() < p) index = answer;
    else {
      index = rng.int(k - 1);
      if (index >= answer) index++;
    }
  } else {
    index = rng.int(k); // independent of the answer
  }
  return { colour: shortcutColour(index), matches: index === answer };
}

/** Keyframes rounded to 4 decimals: short JSONL lines, and the pixels come from the rounded values. */
function scene(objects: SceneObject[]): Scene {
  const r4 = (v: number): number => Math.round(v * 1e4) / 1e4;
  const key = (k: SceneObject['from']): SceneObject['from'] => ({ x: r4(k.x), y: r4(k.y), size: r4(k.size) });
  return {
    version: SCENE_VERSION,
    background: 'gray',
    objects: objects.map((o) => ({ ...o, from: key(o.from), to: key(o.to) })),
  };
}

function planReversible(rng: Rng, split: ColourRule, p: number): PairPlan {
  const { question, options } = SYNTH_QUESTIONS.reversible_dynamics;
  // 0 grows, 1 shrinks. "It stays the same size" is shown but never the gold answer: a clip whose
  // size does not change is the same clip reversed, and a dynamic pair's answer must change.
  const answer = rng.int(2);
  const { colour, matches } = dynamicColour(rng, split, answer, 2, p);
  const small = rng.uniform(0.12, 0.2),
    big = rng.uniform(0.5, 0.62);
  const x = rng.uniform(big / 2 + 0.02, 1 - big / 2 - 0.02);
  const y = rng.uniform(big / 2 + 0.02, 1 - big / 2 - 0.02);
  const [s0, s1] = answer === 0 ? [small, big] : [big, small];
  const shape = rng.pick(SHAPES);
  return {
    scene: scene([{ shape, color: colour, from: { x, y, size: s0 }, to: { x, y, size: s1 } }]),
    question,
    options: [...options],
    answer,
    transform: 'reverse',
    partnerAnswer: 1 - answer, // grows <-> shrinks
    meta: { shortcut_match: matches },
  };
}

function planMoving(rng: Rng, split: ColourRule, p: number): PairPlan {
  const { question, options } = SYNTH_QUESTIONS.moving_direction;
  const answer = rng.int(4);
  const dir = options[answer];
  const { colour, matches } = dynamicColour(rng, split, answer, 4, p);
  const size = rng.uniform(0.28, 0.36);
  const lo = size / 2 + 0.02,
    hi = 1 - size / 2 - 0.02;
  const travel = rng.uniform(0.42, Math.min(0.58, hi - lo));
  const start = rng.uniform(lo, hi - travel); // lower end of the path
  const across = rng.uniform(lo, hi);
  const sign = dir === 'right' || dir === 'down' ? 1 : -1;
  const a0 = sign > 0 ? start : start + travel,
    a1 = sign > 0 ? start + travel : start;
  const horizontal = dir === 'left' || dir === 'right';
  const from = horizontal ? { x: a0, y: across, size } : { x: across, y: a0, size };
  const to = horizontal ? { x: a1, y: across, size } : { x: across, y: a1, size };
  // hflip changes left/right only; reverse changes every direction; hflip+reverse changes up/down only.
  const transform = horizontal
    ? rng.pick(['hflip', 'reverse'] as const)
    : rng.pick(['reverse', 'hflip+reverse'] as const);
  const partnerAnswer = options.indexOf(mapDirection(dir, transform) as (typeof options)[number]);
  return {
    scene: scene([{ shape: rng.pick(SHAPES), color: colour, from, to }]),
    question,
    options: [...options],
    answer,
    transform,
    partnerAnswer,
    meta: { shortcut_match: matches },
  };
}

/** Event kinds of the event-sequence clips: one object doing one thing per segment. */
export const SYNTH_EVENTS = ['moves sideways', 'moves up or down', 'grows', 'shrinks'] as const;
export type SynthEvent = (typeof SYNTH_EVENTS)[number];

function eventObject(
  rng: Rng,
  event: SynthEvent,
  shape: Shape,
  colour: ColourName,
  visible: [number, number],
): SceneObject {
  if (event === 'grows' || event === 'shrinks') {
    const small = rng.uniform(0.14, 0.2),
      big = rng.uniform(0.52, 0.62);
    const lo = big / 2 + 0.02,
      hi = 1 - big / 2 - 0.02;
    const x = rng.uniform(lo, hi),
      y = rng.uniform(lo, hi);
    const [s0, s1] = event === 'grows' ? [small, big] : [big, small];
    return { shape, color: colour, from: { x, y, size: s0 }, to: { x, y, size: s1 }, visible };
  }
  // A strong translation, either way along the axis.
  const size = rng.uniform(0.3, 0.36);
  const lo = size / 2 + 0.02,
    hi = 1 - size / 2 - 0.02;
  const travel = rng.uniform(0.4, Math.min(0.55, hi - lo));
  const start = rng.uniform(lo, hi - travel);
  const [a0, a1] = rng.next() < 0.5 ? [start, start + travel] : [start + travel, start];
  const across = rng.uniform(lo, hi);
  return event === 'moves sideways'
    ? { shape, color: colour, from: { x: a0, y: across, size }, to: { x: a1, y: across, size }, visible }
    : { shape, color: colour, from: { x: across, y: a0, size }, to: { x: across, y: a1, size }, visible };
}

function planEvent(rng: Rng, split: ColourRule, p: number, T: number): PairPlan {
  // Two different events, one per half of the clip, done by the same object (same shape and colour).
  const [first, second] = rng.shuffle(SYNTH_EVENTS).slice(0, 2) as SynthEvent[];
  const options = rng.shuffle([first, second]);
  const answer = options.indexOf(first);
  const { colour, matches } = dynamicColour(rng, split, answer, 2, p);
  const shape = rng.pick(SHAPES);
  // Segment boundary: frames t < T/2 show the first event; the swap moves the second segment first.
  const swapAt = Math.ceil(T / 2);
  return {
    scene: scene([eventObject(rng, first, shape, colour, [0, 0.5]), eventObject(rng, second, shape, colour, [0.5, 1])]),
    question: SYNTH_QUESTIONS.event_sequence.question,
    options: options.map((e) => `The object ${e}`),
    answer,
    transform: 'swap',
    partnerAnswer: 1 - answer,
    swapAt,
    meta: { shortcut_match: matches },
  };
}

function drifting(
  shape: Shape,
  colour: ColourName,
  x: number,
  y: number,
  size: number,
  dx: number,
  dy: number,
): SceneObject {
  return { shape, color: colour, from: { x, y, size }, to: { x: x + dx, y: y + dy, size } };
}

function planStatic(rng: Rng, index: number): PairPlan {
  const attribute = (['colour', 'shape', 'count'] as const)[index % 3];
  const transform = rng.pick(['hflip', 'reverse'] as const);
  // A gentle drift so that the transform really changes the clip while the answer stays.
  const dx = rng.uniform(-0.12, 0.12),
    dy = rng.uniform(-0.12, 0.12);
  if (attribute === 'count') {
    const n = 1 + rng.int(4);
    const cells = rng
      .shuffle([
        [0.27, 0.27],
        [0.73, 0.27],
        [0.27, 0.73],
        [0.73, 0.73],
      ])
      .slice(0, n);
    const objects = cells.map(([cx, cy]) => {
      const size = rng.uniform(0.2, 0.26);
      const ddx = clamp(dx, -0.06, 0.06),
        ddy = clamp(dy, -0.06, 0.06);
      return drifting(rng.pick(SHAPES), rng.pick(OBJECT_COLOURS), cx - ddx / 2, cy - ddy / 2, size, ddx, ddy);
    });
    const { question, options } = SYNTH_QUESTIONS.count;
    return {
      scene: scene(objects),
      question,
      options: [...options],
      answer: n - 1,
      transform,
      partnerAnswer: n - 1,
      meta: { attribute },
    };
  }
  const size = rng.uniform(0.36, 0.5);
  const lo = size / 2 + 0.03 + 0.12,
    hi = 1 - size / 2 - 0.03 - 0.12;
  const x = rng.uniform(lo, hi),
    y = rng.uniform(lo, hi);
  const colour = rng.pick(OBJECT_COLOURS);
  const shape = rng.pick(SHAPES);
  const objects = [drifting(shape, colour, x, y, size, dx, dy)];
  if (attribute === 'colour') {
    const others = rng.shuffle(OBJECT_COLOURS.filter((c) => c !== colour)).slice(0, 3);
    const options = rng.shuffle([colour, ...others]);
    return {
      scene: scene(objects),
      question: SYNTH_QUESTIONS.colour.question,
      options,
      answer: options.indexOf(colour),
      transform,
      partnerAnswer: options.indexOf(colour),
      meta: { attribute },
    };
  }
  const options = rng.shuffle(SHAPES);
  return {
    scene: scene(objects),
    question: SYNTH_QUESTIONS.shape.question,
    options,
    answer: options.indexOf(shape),
    transform,
    partnerAnswer: options.indexOf(shape),
    meta: { attribute },
  };
}

function checkOptions(o: SynthOptions, op: string): Required<SynthOptions> {
  if (
    o !== null &&
    typeof o === 'object' &&
    o.colour !== undefined &&
    o.colour !== 'shortcut' &&
    o.colour !== 'independent'
  ) {
    throw invalidArg('colour', "'shortcut' or 'independent'", o.colour, op);
  }
  if (typeof o !== 'object' || o === null) throw invalidArg('options', 'an object', o, op);
  if (o.split !== 'train' && o.split !== 'test') throw invalidArg('split', "'train' or 'test'", o.split, op);
  if (!Number.isInteger(o.pairs) || o.pairs < 0) throw outOfRange('pairs', 'an integer >= 0', o.pairs, op);
  if (!Number.isInteger(o.seed)) throw invalidArg('seed', 'an integer', o.seed, op);
  const frames = o.frames ?? SYNTH_DEFAULTS.frames;
  if (!Number.isInteger(frames) || frames < 2 || frames > 1024)
    throw outOfRange('frames', 'an integer in [2, 1024]', frames, op);
  const size = o.size ?? SYNTH_DEFAULTS.size;
  if (!Number.isInteger(size) || size < 8 || size > 1024) throw outOfRange('size', 'an integer in [8, 1024]', size, op);
  const shortcutP = o.shortcutP ?? SYNTH_DEFAULTS.shortcutP;
  if (typeof shortcutP !== 'number' || !(shortcutP >= 0 && shortcutP <= 1))
    throw outOfRange('shortcutP', 'a number in [0, 1]', shortcutP, op);
  const categories = o.categories ?? SYNTH_DEFAULTS.categories;
  if (!Array.isArray(categories) || categories.length === 0)
    throw invalidArg('categories', 'a non-empty array of categories', categories, op);
  for (const c of categories) {
    if (!CATEGORIES.includes(c) || c === 'other')
      throw invalidArg('categories[]', `one of ${CATEGORIES.filter((x) => x !== 'other').join(', ')}`, c, op);
  }
  const colour = o.colour ?? (o.split === 'train' ? 'shortcut' : 'independent');
  return {
    split: o.split,
    pairs: o.pairs,
    seed: o.seed,
    frames,
    size,
    shortcutP,
    colour,
    categories: [...new Set(categories)],
  };
}

/** The two records of pair `index` of `category` (no pixels). */
export function synthesizePairRecords(
  o: SynthOptions,
  category: Category,
  index: number,
): [DyBenchRecord, DyBenchRecord] {
  const c = checkOptions({ ...o, categories: [category] }, 'synthesizePairRecords');
  const rng = new Rng(`crpo-synth|${c.seed}|${c.split}|${category}|${index}`);
  const plan =
    category === 'reversible_dynamics'
      ? planReversible(rng, c.colour, c.shortcutP)
      : category === 'moving_direction'
        ? planMoving(rng, c.colour, c.shortcutP)
        : category === 'event_sequence'
          ? planEvent(rng, c.colour, c.shortcutP, c.frames)
          : planStatic(rng, index);
  const pairId = `synth-${c.split}-${category}-${String(index).padStart(5, '0')}`;
  const base: SyntheticVideoSpec = {
    kind: 'synthetic',
    scene: plan.scene as unknown as Record<string, unknown>,
    frames: c.frames,
    height: c.size,
    width: c.size,
    transform: 'none',
  };
  const partnerVideo: SyntheticVideoSpec = {
    ...base,
    transform: plan.transform,
    ...(plan.swapAt !== undefined ? { swap_at: plan.swapAt } : {}),
  };
  const common = {
    pair_id: pairId,
    question: plan.question,
    options: plan.options,
    category,
    source: 'crpo-synth',
    split: c.split,
  };
  const meta = { seed: c.seed, ...plan.meta };
  const original: DyBenchRecord = {
    id: `${pairId}-a`,
    ...common,
    video: base,
    answer: plan.answer,
    transform: 'none',
    meta: {
      ...meta,
      counterfactual: {
        transform: plan.transform,
        answer: plan.partnerAnswer,
        relation: plan.partnerAnswer === plan.answer ? 'same' : 'change',
        ...(plan.swapAt !== undefined ? { swap_at: plan.swapAt } : {}),
      },
    },
  };
  const partner: DyBenchRecord = {
    id: `${pairId}-b`,
    ...common,
    video: partnerVideo,
    answer: plan.partnerAnswer,
    transform: plan.transform,
    meta,
  };
  return [original, partner];
}

/** All records (no pixels), in order: per category, per pair, original then partner. */
export function synthesizeRecords(options: SynthOptions): DyBenchRecord[] {
  const c = checkOptions(options, 'synthesizeRecords');
  const out: DyBenchRecord[] = [];
  for (const category of c.categories)
    for (let i = 0; i < c.pairs; i++) out.push(...synthesizePairRecords(c, category, i));
  return out;
}

/**
 * Pair `index` of `category` with pixels: the original, then its partner (the original's pixels
 * passed through the transform). Any index works, so a trainer can draw fresh pairs without end.
 */
export function synthesizePair(o: SynthOptions, category: Category, index: number): [SynthItem, SynthItem] {
  const [a, b] = synthesizePairRecords(o, category, index);
  const va = a.video as SyntheticVideoSpec,
    vb = b.video as SyntheticVideoSpec;
  const original = renderScene(va.scene as unknown as Scene, va.frames, va.height, va.width);
  const shape = [1, va.frames, va.height, va.width, 3];
  const transform = vb.transform as Exclude<RecordTransform, 'none'>;
  const partner = transformFramesSync(original, { shape, transform, swapAt: vb.swap_at }) as Uint8Array;
  return [
    { record: a, frames: original },
    { record: b, frames: partner },
  ];
}

/** Records plus pixels, per category, per pair: original then partner. */
export function* synthesizeStream(options: SynthOptions): Generator<SynthItem> {
  const c = checkOptions(options, 'synthesize');
  for (const category of c.categories) {
    for (let i = 0; i < c.pairs; i++) yield* synthesizePair(c, category, i);
  }
}

/** Deterministic for a seed: the same options give the same records and pixels. */
export function synthesize(options: SynthOptions): SynthItem[] {
  return [...synthesizeStream(options)];
}
