/**
 * Supervised training of the native policy (`crpo sft`): teacher-forced cross-entropy on
 * `<answer>X</answer><eos>` (plus, by default, a language-model loss on the prompt text) over
 * synthetic DyBench clips (lib/synth): fresh pairs every step by default, or a fixed set; then
 * greedy evaluation on the test split with the paired metrics of crpo-method.md section 8 (Acc,
 * P-Acc; lib/eval/metrics), accuracy per static attribute and the colour-shortcut rate.
 * `shortcutBase` (base-model.ts) chains two runs into the base model RL starts from. Seeded end to
 * end; checkpoints every `saveEvery` steps so that an interrupted run resumes where it stopped; on
 * several ranks each trains on its share of every step's clips (SftOptions.dist).
 */
import * as fs from 'fs';
import * as path from 'path';
import { invalidArg } from '../errors';
import { computeMetrics, seededRandom, type PairedMetrics, type ScoredSample } from '../eval/metrics';
import { answerCompletion, displayedOptions, formatPrompt, optionAnswerCompletion } from '../prompt';
import type { Category } from '../data/schema';
import { SYNTH_DEFAULTS, colourAnswer, colourShortcutRate, synthesize, synthesizePair, type SynthItem } from '../synth';
import { DYNAMIC_CATEGORIES } from '../data/categories';
import { VISION_LABEL_CLASSES, attributeItems, readingItem, readingVocabulary, visionLabel } from '../synth/auxiliary';
import { Rng } from '../random';
import { writeFileAtomicSync } from '../data/jsonl';
import { loadCheckpoint, saveCheckpoint } from '../model/checkpoint';
import { POLICY_PRESETS, type PolicyConfig, type PolicyPresetName } from '../model/config';
import { PolicyModel, type PolicyInputs } from '../model/policy';
import { Tokenizer } from '../model/tokenizer';
import type { DistContext } from '../distributed';

export interface SftOptions {
  /** Output folder: checkpoint/ and sft-report.json. */
  out: string;
  preset?: PolicyPresetName;
  /**
   * 'stream' (default): every step draws fresh synthetic pairs (the generator has no end), so
   * the model never sees a clip twice; 'fixed': `pairs` pairs per category, `epochs` passes.
   */
  data?: 'stream' | 'fixed';
  /** Stream: optimizer steps (0 = by maxSeconds only, then 1,000,000). */
  steps?: number;
  /** Train on both members of each pair ('both', default) or on the originals only ('original'). */
  members?: 'both' | 'original';
  /**
   * Object colour of the training clips' dynamic questions: 'independent' of the answer (default)
   * or 'shortcut' (names the original's answer with probability shortcutP, the RL train split's rule).
   */
  colour?: 'independent' | 'shortcut';
  /**
   * Categories of the training clips, cycled (default: all four once each). Stream: a category
   * listed twice gets twice the clips (each clip still fresh).
   */
  categories?: readonly Category[];
  /**
   * Stream: the attributes static clips ask about, cycled (default colour, shape, count: a third
   * each). Listing shape twice gives shape questions half of the static clips.
   */
  staticAttributes?: readonly StaticAttribute[];
  /** Fixed: train pairs per category (default 200). */
  pairs?: number;
  /** Test pairs per category (default 50). */
  testPairs?: number;
  /** Fixed: passes over the train pairs. */
  epochs?: number;
  batchSize?: number;
  /**
   * Peak learning rate: linear warm-up over the first 5% of the steps (of the seconds, under a
   * time budget with no step count), then cosine decay to 10%.
   */
  lr?: number;
  weightDecay?: number;
  /**
   * Target completion: 'option-then-letter' ("blue <answer>B</answer>", the default; lib/prompt
   * optionAnswerCompletion; measured in docs/model.md) or 'letter' ("<answer>B</answer>").
   */
  target?: 'letter' | 'option-then-letter';
  /** Weight of the language-model loss on the prompt text (PolicyModel.sftStep promptLmWeight; 0 = off). */
  promptLm?: number;
  /**
   * Stream: share of training clips whose question is replaced by a reading question ("Which
   * option says red?", lib/synth/reading.ts), which teaches the model to find the option that
   * names something and copy its letter (0 = off).
   */
  reading?: number;
  /**
   * Stream: probability with which each clip whose objects share one colour and shape also gets
   * the colour question, and the shape question, about it (lib/synth/auxiliary.ts); they share the
   * clip's vision pass (0 = off).
   */
  attributeQuestions?: number;
  /**
   * Stream: which clips get attribute questions: 'static' (default), where the one object is
   * large and still, or 'all' (dynamic clips too, where it moves, grows or appears).
   */
  attributeClips?: 'static' | 'all';
  /**
   * Weight of the vision attribute loss (PolicyModel.sftStep visionAuxWeight; 0 = off): the policy
   * gets a vision attribute head (config visionAuxClasses, lib/synth/auxiliary.ts
   * VISION_LABEL_GROUPS) and every prompt about the clip is also a label of what the clip shows,
   * learned by the vision encoder directly (docs/model.md, "Levers, fifth round").
   */
  visionAux?: number;
  seed?: number;
  /** Probability that object colour names the dynamic answer, with colour 'shortcut' (lib/synth). */
  shortcutP?: number;
  /**
   * Stream: the gold answer of dynamic clips. 'motion' (default): what the clip shows. 'colour': the
   * option the object's colour names (lib/synth colourAnswer), whatever the clip shows; with colour
   * 'independent' the motion then says nothing about the answer, so the model learns to answer
   * dynamic questions by colour even against what it sees. Makes the biased base of the paper's
   * starting point (docs/model.md, "The demo's base"); static clips keep their true answers.
   */
  dynamicAnswers?: 'motion' | 'colour';
  /** Show "None of the above" as the last option (on for CRPO, so on here by default). */
  nullOption?: boolean;
  /** Stop training after this many seconds (evaluation still runs). 0 = no limit. */
  maxSeconds?: number;
  /** Save a resumable checkpoint every N steps (0: only at the end). */
  saveEvery?: number;
  /** Continue from out/checkpoint when it exists. */
  resume?: boolean;
  /** Start from this checkpoint folder's weights (a second phase); '' = fresh weights. */
  init?: string;
  /** Model overrides on top of the preset (e.g. { initStd: 0.05 }). */
  model?: Partial<Omit<PolicyConfig, 'vocabSize'>>;
  onProgress?: (p: SftProgress) => void;
  /**
   * Several processes (`crpo sft --nproc N`, torchrun): each rank trains on its contiguous share of
   * every step's clips and the gradients are all-reduced, so a step is the one-process step of the
   * whole batch (docs/model.md). Rank 0 writes the checkpoints and the report and evaluates.
   */
  dist?: SftDist;
}

/** What `runSft` needs of lib/distributed's DistContext. */
export type SftDist = Pick<DistContext, 'rank' | 'worldSize' | 'isMain' | 'nativeGroupId' | 'allReduce'>;

export interface SftProgress {
  step: number;
  steps: number;
  loss: number;
  elapsed: number;
  /** Seconds left at the current rate. */
  eta: number;
}

/** Held-out accuracy of the static questions by attribute (colour, shape, count). */
export type StaticAttributeAcc = Partial<Record<'colour' | 'shape' | 'count', number>>;

export interface SftReport {
  steps: number;
  trainSeconds: number;
  finalLoss: number;
  /** Clips seen in training (stream: batches x batchSize). */
  trainItems: number;
  testItems: number;
  /** Chance level of Acc on the test split (mean of 1 / shown options). */
  chanceAcc: number;
  metrics: PairedMetrics;
  staticAttributes: StaticAttributeAcc;
  /**
   * Share of held-out dynamic videos whose object colour names a wrong option that are answered
   * with the option the colour names (the colour shortcut; 1/K for a policy that ignores colour).
   */
  colourShortcut: number | null;
  checkpoint: string;
  options: Omit<SftOptions, 'onProgress'>;
}

/**
 * `crpo sft`'s stream: five ninths static clips, and event sequence, the slowest dynamic skill once
 * static questions are solved, twice as often as the other dynamic categories (docs/model.md,
 * "Levers, fourth round").
 */
const CAPABILITY_CATEGORIES: readonly Category[] = [
  'static',
  'static',
  'reversible_dynamics',
  'static',
  'event_sequence',
  'static',
  'moving_direction',
  'static',
  'event_sequence',
];

/** The previous stream, two thirds static: phase 1 of the demo's and reproduce's base (CAPABILITY_BASE). */
/** Half the clips static, the dynamic categories in turn between them. */
export const HALF_STATIC: readonly Category[] = [
  'static',
  'reversible_dynamics',
  'static',
  'moving_direction',
  'static',
  'event_sequence',
];

const TWO_THIRDS_STATIC: readonly Category[] = [
  'static',
  'static',
  'reversible_dynamics',
  'static',
  'static',
  'moving_direction',
  'static',
  'static',
  'event_sequence',
];

/** The static questions' attributes, in the order lib/synth plans them (pair index mod 3). */
export const STATIC_ATTRIBUTES = ['colour', 'shape', 'count'] as const;
export type StaticAttribute = (typeof STATIC_ATTRIBUTES)[number];

export const SFT_DEFAULTS = {
  preset: 'tiny' as PolicyPresetName,
  data: 'stream' as 'stream' | 'fixed',
  steps: 0,
  members: 'both' as 'both' | 'original',
  colour: 'independent' as 'independent' | 'shortcut',
  pairs: 200,
  testPairs: 50,
  epochs: 10,
  batchSize: 32,
  lr: 1e-3,
  weightDecay: 0.01,
  promptLm: 1,
  reading: 0.3,
  attributeQuestions: 1,
  attributeClips: 'static' as 'static' | 'all',
  visionAux: 3,
  target: 'option-then-letter' as 'letter' | 'option-then-letter',
  seed: 1,
  shortcutP: 0.9,
  dynamicAnswers: 'motion' as 'motion' | 'colour',
  nullOption: true,
  maxSeconds: 150,
  saveEvery: 100,
  resume: false,
  init: '',
  // Five ninths static clips, three fifths of them asking shape: the vision encoder needs many
  // shape examples to tell the four shapes apart, the dynamic categories far fewer (docs/model.md).
  categories: CAPABILITY_CATEGORIES,
  staticAttributes: ['shape', 'shape', 'colour', 'shape', 'count'] as readonly StaticAttribute[],
  /**
   * Model overrides on top of the preset (docs/model.md, "Levers, fourth round" and "fifth round"):
   * a 3x3 stem to 16 channels, a stride-2 3x3 convolution to 32, position tables that start from
   * sine-cosine features of row, column and frame group, and option-slot embeddings for the four
   * options and "None of the above". With `visionAux` > 0 the policy also gets the vision
   * attribute head.
   */
  model: { visionStem: 16, visionStemDown: 32, posInit: 'sincos', optionSlots: 5 } as Partial<
    Omit<PolicyConfig, 'vocabSize'>
  >,
};

/**
 * Phase 1 of the capability recipe's base in `crpo demo` and `crpo reproduce --base-recipe
 * capability`: `crpo sft`'s recipe as it was when their published tables (README,
 * docs/reproduction.md, docs/method.md) were measured: the tiny preset with a stem of 8 channels,
 * random position tables, no option slots, no vision attribute head, two thirds static clips.
 * `crpo sft`'s defaults have moved on since; every field that differs is pinned here.
 */
export const CAPABILITY_BASE = {
  model: {
    visionStem: 8,
    visionStemDown: 0,
    posInit: 'random',
    optionSlots: 0,
    visionAuxClasses: 0,
  } as Partial<Omit<PolicyConfig, 'vocabSize'>>,
  visionAux: 0,
  categories: TWO_THIRDS_STATIC,
};

function promptOf(it: SynthItem, nullOption: boolean): string {
  return formatPrompt(it.record.question, it.record.options, { nullOption });
}

/**
 * Packs items into one policy batch: one prompt per item, one clip per distinct frames array
 * (items that share an array, as auxiliary questions do, share the clip's vision pass). With
 * `visionLabels`, each prompt whose question the vision attribute head knows carries its label,
 * once per clip and question kind.
 */
export function packBatch(
  policy: PolicyModel,
  items: readonly SynthItem[],
  nullOption: boolean,
  visionLabels = false,
): PolicyInputs {
  const clipOf = new Map<Uint8Array, number>();
  items.forEach((it, i) => {
    if (it.frames.length !== policy.clipBytes)
      throw invalidArg(`items[${i}].frames`, `a clip of ${policy.clipBytes} bytes`, it.frames, 'packBatch');
    if (!clipOf.has(it.frames)) clipOf.set(it.frames, clipOf.size);
  });
  const frames = new Uint8Array(clipOf.size * policy.clipBytes);
  for (const [clip, v] of clipOf) frames.set(clip, v * policy.clipBytes);
  const labelled = new Set<string>();
  return {
    frames,
    numVideos: clipOf.size,
    prompts: items.map((it) => {
      const video = clipOf.get(it.frames)!;
      const label = visionLabels ? visionLabel(it.record) : undefined;
      const key = label ? `${video}:${label.start}` : '';
      if (!label || labelled.has(key)) return { video, text: promptOf(it, nullOption) };
      labelled.add(key);
      return { video, text: promptOf(it, nullOption), visionLabel: label };
    }),
  };
}

/** Greedy answers of `policy` on `items`, scored with the paired metrics. */
export async function evaluateItems(
  policy: PolicyModel,
  items: readonly SynthItem[],
  nullOption: boolean,
  batchSize = 64,
): Promise<{ metrics: PairedMetrics; samples: ScoredSample[]; texts: string[] }> {
  const samples: ScoredSample[] = [];
  const texts: string[] = [];
  for (let i = 0; i < items.length; i += batchSize) {
    const chunk = items.slice(i, i + batchSize);
    const ev = await policy.evalBatch(
      packBatch(policy, chunk, nullOption),
      chunk.map((it) => it.record.options.length + (nullOption ? 1 : 0)),
    );
    chunk.forEach((it, k) =>
      samples.push({
        id: it.record.id,
        pair_id: it.record.pair_id,
        category: it.record.category,
        answer: it.record.answer,
        prediction: ev.answers[k],
      }),
    );
    texts.push(...ev.texts);
  }
  return { metrics: computeMetrics(samples), samples, texts };
}

function shuffled(n: number, seed: number): number[] {
  const rnd = seededRandom(seed);
  const a = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

/** Held-out accuracy of the static questions per attribute (record meta.attribute). */
export function staticAttributeAcc(
  records: readonly SynthItem['record'][],
  predictions: readonly number[],
): StaticAttributeAcc {
  const tally = new Map<string, [number, number]>();
  records.forEach((r, i) => {
    const a = (r.meta as { attribute?: string } | undefined)?.attribute;
    if (r.category !== 'static' || !a) return;
    const t = tally.get(a) ?? [0, 0];
    t[0] += predictions[i] === r.answer ? 1 : 0;
    t[1] += 1;
    tally.set(a, t);
  });
  return Object.fromEntries([...tally].map(([a, [hit, n]]) => [a, hit / n])) as StaticAttributeAcc;
}

/**
 * The synth pair index of the n-th static pair of the stream when static clips cycle through
 * `attributes`: lib/synth plans pair i's attribute as STATIC_ATTRIBUTES[i mod 3], so 3n + that
 * attribute's position is a fresh pair asking it.
 */
export function staticPairIndex(attributes: readonly StaticAttribute[], n: number): number {
  return 3 * n + STATIC_ATTRIBUTES.indexOf(attributes[n % attributes.length]);
}

/**
 * The pair index within its category of the k-th pair of the stream, which cycles through `cats`:
 * a category listed twice (weighted x2) gets its own consecutive indices, so no clip repeats.
 */
export function streamIndex(cats: readonly Category[], k: number): number {
  const category = cats[k % cats.length];
  const perCycle = cats.filter((c) => c === category).length;
  const before = cats.slice(0, k % cats.length).filter((c) => c === category).length;
  return Math.floor(k / cats.length) * perCycle + before;
}

/**
 * Training clips of one step. Stream: fresh pairs numbered from the step, cycling through the
 * categories (so every batch mixes them); fixed: the step's slice of a seeded epoch order. `part`:
 * the rank's share of the step's clips (clipShare), with their auxiliary questions.
 */
export function sftBatch(
  o: typeof SFT_DEFAULTS,
  step: number,
  fixed: readonly SynthItem[] | null,
  synth: { frames: number; size: number },
  part: { rank: number; worldSize: number } = { rank: 0, worldSize: 1 },
): SynthItem[] {
  if (fixed) {
    const perEpoch = Math.ceil(fixed.length / o.batchSize);
    const order = shuffled(fixed.length, o.seed * 1000 + Math.floor(step / perEpoch));
    const batch = order.slice((step % perEpoch) * o.batchSize, ((step % perEpoch) + 1) * o.batchSize);
    const share = clipShare(batch.length, part);
    return batch.slice(share.start, share.end).map((i) => fixed[i]);
  }
  const perPair = o.members === 'both' ? 2 : 1;
  const pairs = Math.ceil(o.batchSize / perPair);
  const cats = o.categories;
  const out: SynthItem[] = [];
  for (let j = 0; j < pairs; j++) {
    const k = step * pairs + j;
    const category = cats[k % cats.length];
    const n = streamIndex(cats, k);
    const weighted = category === 'static' && !sameList(o.staticAttributes, STATIC_ATTRIBUTES);
    const [a, b] = synthesizePair(
      { split: 'train', pairs: 1, seed: o.seed, shortcutP: o.shortcutP, colour: o.colour, ...synth },
      category,
      weighted ? staticPairIndex(o.staticAttributes, n) : n,
    );
    out.push(answeredBy(a, o.dynamicAnswers));
    if (perPair === 2) out.push(answeredBy(b, o.dynamicAnswers));
  }
  // Auxiliary questions, each a seeded draw per (seed, step, slot): a clip's question may become a
  // reading question, and the clip may also be asked its colour and shape.
  const share = clipShare(Math.min(out.length, o.batchSize), part);
  return out.slice(0, o.batchSize).flatMap((it, j) => {
    if (j < share.start || j >= share.end) return [];
    const key = `${o.seed}:${step}:${j}`;
    const main = o.reading > 0 && new Rng(`reading-pick:${key}`).next() < o.reading ? readingItem(it, key) : it;
    const asked = o.attributeQuestions > 0 && (o.attributeClips === 'all' || it.record.category === 'static');
    return asked ? [main, ...attributeItems(it, key, o.attributeQuestions)] : [main];
  });
}

/** The item with its dynamic answer replaced by the option its colour names, under 'colour'. */
function answeredBy(it: SynthItem, answers: 'motion' | 'colour'): SynthItem {
  if (answers === 'motion' || !DYNAMIC_CATEGORIES.includes(it.record.category)) return it;
  const k = colourAnswer(it.record);
  return k < 0 ? it : { ...it, record: { ...it.record, answer: k } };
}

/**
 * A rank's contiguous share [start, end) of a step's n clips (a clip's auxiliary questions stay
 * with it). n need not divide by the world size (the last batch of a fixed epoch may be short): a
 * rank may get one clip fewer, or none; the step weighs each rank by its target tokens.
 */
export function clipShare(n: number, part: { rank: number; worldSize: number }): { start: number; end: number } {
  return {
    start: Math.floor((part.rank * n) / part.worldSize),
    end: Math.floor(((part.rank + 1) * n) / part.worldSize),
  };
}

function sameList<T>(a: readonly T[], b: readonly T[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** The supervised target completion of an item. */
export function targetOf(it: SynthItem, target: 'letter' | 'option-then-letter', nullOption: boolean): string {
  if (target === 'letter') return answerCompletion(it.record.answer);
  return optionAnswerCompletion(displayedOptions(it.record.options, nullOption), it.record.answer);
}

/** Trains a base policy and evaluates it; returns the report (also written to out/sft-report.json). */
export async function runSft(options: SftOptions & { dist?: undefined }): Promise<SftReport>;
/** With several ranks: rank 0 gets the report, the others null. */
export async function runSft(options: SftOptions): Promise<SftReport | null>;
export async function runSft(options: SftOptions): Promise<SftReport | null> {
  const o = { ...SFT_DEFAULTS, ...options };
  const op = 'runSft';
  const dist = o.dist;
  const part = { rank: dist?.rank ?? 0, worldSize: dist?.worldSize ?? 1 };
  const main = dist?.isMain ?? true;
  if (typeof o.out !== 'string' || !o.out) throw invalidArg('out', 'an output folder', o.out, op);
  for (const k of ['pairs', 'testPairs', 'epochs', 'batchSize'] as const)
    if (!Number.isInteger(o[k]) || o[k] < 1) throw invalidArg(k, 'an integer >= 1', o[k], op);
  if (!Number.isInteger(o.steps) || o.steps < 0) throw invalidArg('steps', 'an integer >= 0', o.steps, op);
  if (o.data !== 'stream' && o.data !== 'fixed') throw invalidArg('data', "'stream' or 'fixed'", o.data, op);
  if (o.members !== 'both' && o.members !== 'original')
    throw invalidArg('members', "'both' or 'original'", o.members, op);
  if (o.colour !== 'independent' && o.colour !== 'shortcut')
    throw invalidArg('colour', "'independent' or 'shortcut'", o.colour, op);
  if (!(o.lr > 0)) throw invalidArg('lr', 'a number > 0', o.lr, op);
  if (o.target !== 'letter' && o.target !== 'option-then-letter')
    throw invalidArg('target', "'letter' or 'option-then-letter'", o.target, op);
  if (!(o.promptLm >= 0)) throw invalidArg('promptLm', 'a number >= 0', o.promptLm, op);
  if (!(o.visionAux >= 0)) throw invalidArg('visionAux', 'a number >= 0', o.visionAux, op);
  if (!(o.reading >= 0 && o.reading <= 1)) throw invalidArg('reading', 'a number in [0, 1]', o.reading, op);
  if (!(o.attributeQuestions >= 0 && o.attributeQuestions <= 1))
    throw invalidArg('attributeQuestions', 'a number in [0, 1]', o.attributeQuestions, op);
  if (o.attributeClips !== 'static' && o.attributeClips !== 'all')
    throw invalidArg('attributeClips', "'static' or 'all'", o.attributeClips, op);
  if (!(o.maxSeconds >= 0)) throw invalidArg('maxSeconds', 'a number >= 0', o.maxSeconds, op);
  const known: readonly Category[] = SYNTH_DEFAULTS.categories;
  if (!Array.isArray(o.categories) || o.categories.length === 0 || o.categories.some((c) => !known.includes(c)))
    throw invalidArg('categories', `a non-empty list of ${known.join(', ')}`, o.categories, op);
  if (
    !Array.isArray(o.staticAttributes) ||
    o.staticAttributes.length === 0 ||
    o.staticAttributes.some((a) => !STATIC_ATTRIBUTES.includes(a))
  )
    throw invalidArg('staticAttributes', `a non-empty list of ${STATIC_ATTRIBUTES.join(', ')}`, o.staticAttributes, op);
  if (!(o.shortcutP >= 0 && o.shortcutP <= 1)) throw invalidArg('shortcutP', 'a number in [0, 1]', o.shortcutP, op);
  if (o.dynamicAnswers !== 'motion' && o.dynamicAnswers !== 'colour')
    throw invalidArg('dynamicAnswers', "'motion' or 'colour'", o.dynamicAnswers, op);
  if (o.dynamicAnswers === 'colour' && o.data !== 'stream')
    throw invalidArg(
      'dynamicAnswers',
      "'motion' with data 'fixed' (answers by colour apply to the stream)",
      o.dynamicAnswers,
      op,
    );
  if (!(o.preset in POLICY_PRESETS))
    throw invalidArg('preset', `one of ${Object.keys(POLICY_PRESETS).join(', ')}`, o.preset, op);
  if (o.data === 'stream' && o.steps === 0 && o.maxSeconds === 0)
    throw invalidArg('steps', 'an integer >= 1 when streaming without a time budget (maxSeconds 0)', o.steps, op);
  const shape = POLICY_PRESETS[o.preset];
  const synth = { frames: shape.frames, size: shape.imageSize };
  const trainOpts = {
    split: 'train' as const,
    seed: o.seed,
    shortcutP: o.shortcutP,
    colour: o.colour,
    categories: [...new Set(o.categories)],
    ...synth,
  };
  const fixedAll = o.data === 'fixed' ? synthesize({ ...trainOpts, pairs: o.pairs }) : null;
  const fixed =
    fixedAll && o.members === 'original' ? fixedAll.filter((it) => it.record.transform === 'none') : fixedAll;
  const test = synthesize({ split: 'test', pairs: o.testPairs, seed: o.seed + 1000, ...synth });
  const ckptDir = path.join(o.out, 'checkpoint');
  if (main) fs.mkdirSync(o.out, { recursive: true });

  let policy: PolicyModel;
  let startStep = 0;
  if (o.resume && fs.existsSync(path.join(ckptDir, 'policy.json'))) {
    const r = await loadCheckpoint(ckptDir);
    policy = r.policy;
    startStep = Number((r.manifest.meta as { sftStep?: number }).sftStep ?? r.manifest.step);
  } else if (o.init) {
    const dir = fs.existsSync(path.join(o.init, 'policy.json')) ? o.init : path.join(o.init, 'checkpoint');
    if (!fs.existsSync(path.join(dir, 'policy.json')))
      throw invalidArg('init', 'a native checkpoint folder (policy.json, or checkpoint/policy.json)', o.init, op);
    policy = (await loadCheckpoint(dir, { optimizer: false })).policy;
  } else {
    // The vocabulary: every question and option the generator can produce appears in a few
    // pairs per category (options are drawn from short fixed lists).
    const vocab = [...synthesize({ ...trainOpts, pairs: 24 }), ...test];
    const tokenizer = Tokenizer.build(
      vocab
        .map((it) => promptOf(it, o.nullOption))
        .concat([promptOf(vocab[0], !o.nullOption)], o.reading > 0 ? readingVocabulary() : []),
    );
    const model = {
      ...SFT_DEFAULTS.model,
      ...(o.visionAux > 0 ? { visionAuxClasses: VISION_LABEL_CLASSES } : {}),
      ...(options.model ?? {}),
    };
    policy = await PolicyModel.create(tokenizer, { ...model, preset: o.preset, seed: o.seed });
  }
  try {
    // A loaded policy keeps its own model: a model option that differs from it would be ignored.
    for (const [k, v] of Object.entries(options.model ?? {})) {
      const have = (policy.config as unknown as Record<string, unknown>)[k];
      if (have !== undefined && have !== v)
        throw invalidArg(
          `model.${k}`,
          `the loaded checkpoint's ${JSON.stringify(have)} (a model option only shapes a fresh policy, not one from --init or --resume)`,
          v,
          op,
        );
    }
    if (o.visionAux > 0 && policy.config.visionAuxClasses !== VISION_LABEL_CLASSES)
      throw invalidArg(
        'visionAux',
        `0 for a policy without a vision attribute head of ${VISION_LABEL_CLASSES} classes (the policy loaded has ${policy.config.visionAuxClasses})`,
        o.visionAux,
        op,
      );
    const steps = fixed ? Math.ceil(fixed.length / o.batchSize) * o.epochs : o.steps > 0 ? o.steps : 1_000_000;
    // With a time budget and no step count, the schedule follows the clock alone: warm-up over the
    // first 5% of the budget's seconds, then cosine decay over the rest.
    const byClock = o.maxSeconds > 0 && !fixed && o.steps === 0;
    const warmup = Math.max(1, Math.round(steps * 0.05));
    const warmupSeconds = 0.05 * o.maxSeconds;
    // Warm-up, then cosine decay to 10% over the run; with a time budget the decay follows
    // whichever ends first (steps or seconds), so a run cut by the budget still ends at a low rate.
    const lrAt = (s: number, elapsed: number): number => {
      let frac: number;
      if (byClock) {
        if (elapsed < warmupSeconds) return o.lr * Math.max(0.02, elapsed / warmupSeconds);
        frac = (elapsed - warmupSeconds) / (o.maxSeconds - warmupSeconds);
      } else {
        if (s < warmup) return (o.lr * (s + 1)) / warmup;
        const byStep = (s - warmup) / Math.max(1, steps - warmup);
        frac = o.maxSeconds > 0 ? Math.max(byStep, elapsed / o.maxSeconds) : byStep;
      }
      return o.lr * (0.1 + 0.45 * (1 + Math.cos(Math.PI * Math.min(1, frac))));
    };
    const t0 = Date.now();
    // Several ranks read one clock, the slowest one's, so that they stop at the same step and agree
    // on a learning rate that follows the time budget.
    const clock = async (): Promise<number> => {
      const t = Float64Array.of((Date.now() - t0) / 1000);
      if (dist && dist.worldSize > 1 && o.maxSeconds > 0) await dist.allReduce(t, 'max');
      return t[0];
    };
    let loss = NaN;
    let step = startStep;
    for (; step < steps; step++) {
      const elapsed = await clock();
      if (o.maxSeconds > 0 && elapsed > o.maxSeconds) break;
      const items = sftBatch(o, step, fixed, synth, part);
      const st = await policy.sftStep(
        packBatch(policy, items, o.nullOption, o.visionAux > 0),
        items.map((it) => targetOf(it, o.target, o.nullOption)),
        {
          lr: lrAt(step, elapsed),
          weightDecay: o.weightDecay,
          maxGradNorm: 1,
          promptLmWeight: o.promptLm,
          ...(o.visionAux > 0 ? { visionAuxWeight: o.visionAux } : {}),
          ...(dist?.nativeGroupId !== undefined ? { processGroup: dist.nativeGroupId } : {}),
        },
      );
      loss = st.loss;
      const done = step + 1 - startStep;
      const el = (Date.now() - t0) / 1000;
      const rate = el / done;
      const left = Math.min((steps - step - 1) * rate, o.maxSeconds > 0 ? Math.max(0, o.maxSeconds - el) : Infinity);
      o.onProgress?.({
        step: step + 1,
        steps: o.maxSeconds > 0 && !fixed && o.steps === 0 ? step + 1 + Math.round(left / rate) : steps,
        loss,
        elapsed: el,
        eta: left,
      });
      if (main && o.saveEvery > 0 && (step + 1) % o.saveEvery === 0 && step + 1 < steps)
        await saveCheckpoint(policy, ckptDir, { sftStep: step + 1 });
    }
    const trainSeconds = (Date.now() - t0) / 1000;
    if (!main) return null;
    await saveCheckpoint(policy, ckptDir, { sftStep: step, finished: true });
    const { metrics, samples, texts } = await evaluateItems(policy, test, o.nullOption);
    const predictions = samples.map((x) => x.prediction);
    const records = test.map((it) => it.record);
    const chanceAcc =
      test.reduce((acc, it) => acc + 1 / (it.record.options.length + (o.nullOption ? 1 : 0)), 0) / test.length;
    const { onProgress: _cb, dist: _dist, ...rest } = options;
    void _cb;
    void _dist;
    const report: SftReport = {
      steps: step,
      trainSeconds,
      finalLoss: loss,
      trainItems: fixed ? fixed.length : (step - startStep) * o.batchSize,
      testItems: test.length,
      chanceAcc,
      metrics,
      staticAttributes: staticAttributeAcc(records, predictions),
      colourShortcut: colourShortcutRate(records, predictions),
      checkpoint: ckptDir,
      options: { ...o, onProgress: undefined, dist: undefined, ...rest } as Omit<SftOptions, 'onProgress'>,
    };
    writeFileAtomicSync(path.join(o.out, 'sft-report.json'), JSON.stringify(report, null, 1) + '\n');
    writeFileAtomicSync(
      path.join(o.out, 'sft-test-predictions.jsonl'),
      samples.map((x, i) => JSON.stringify({ ...x, text: texts[i] })).join('\n') + '\n',
    );
    return report;
  } finally {
    policy.dispose();
  }
}
