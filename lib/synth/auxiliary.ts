/**
 * Auxiliary training questions for the native model's capability warm start (lib/train/sft.ts).
 *
 * - Reading questions: "Which option says red?" over a shuffled option list, answered from the
 *   text alone. A pretrained LLM can find the option that names something and copy its letter;
 *   the tiny model learns it from these (`reading`), then uses the same skill to answer a video
 *   question by the option that names what it saw. The clip carries no information about them.
 * - Attribute questions: the colour and shape questions of the static category asked about any
 *   clip whose objects share one colour and shape, dynamic ones included (`attributeQuestions`).
 *   They share the clip, so the vision encoder runs once for several supervised answers.
 */
import { outOfRange } from '../errors';
import { OBJECT_COLOURS, SHAPES, type SceneObject } from '../data/scene';
import { Rng } from '../random';
import { SYNTH_EVENTS, SYNTH_QUESTIONS, type SynthItem } from './index';

export const READING_QUESTION_PREFIX = 'Which option says';

/** The question that asks for the option showing `text`. */
export function readingQuestion(text: string): string {
  return `${READING_QUESTION_PREFIX} ${text}?`;
}

/** Option lists the reading questions draw from, besides the base item's own. */
const WORD_LISTS: readonly (readonly string[])[] = [OBJECT_COLOURS, SHAPES];

/**
 * A reading question built on `base`: its options are the base item's own (shuffled) or, with
 * probability 1/2, four words of the colour or shape list; the answer is a uniformly drawn one of
 * them. `key` seeds the draw, so the same key gives the same question.
 */
export function readingItem(base: SynthItem, key: string): SynthItem {
  const rng = new Rng(`reading:${key}`);
  const own = base.record.options;
  if (own.length < 2) throw outOfRange('base.record.options', 'at least 2 options', own.length, 'readingItem');
  const options = rng.next() < 0.5 ? rng.shuffle(own) : rng.shuffle(rng.pick(WORD_LISTS)).slice(0, 4);
  const answer = rng.int(options.length);
  return {
    frames: base.frames,
    record: {
      ...base.record,
      id: `${base.record.id}-read`,
      question: readingQuestion(options[answer]),
      options,
      answer,
      meta: { ...(base.record.meta ?? {}), reading: true },
    },
  };
}

/** Prompts that put every reading question's words into a tokenizer's vocabulary. */
export function readingVocabulary(): string[] {
  return WORD_LISTS.flat().map((w) => readingQuestion(w));
}

/**
 * The colour and shape questions about `base`'s clip, each kept with probability `p` (seeded by
 * `key`): four options with the truth among them, shuffled, as the static category draws them.
 * None when the clip's objects differ in colour or shape (count clips) or the clip has no scene.
 * The items share `base.frames` (the same array), so a batch can encode the clip once.
 */
export function attributeItems(base: SynthItem, key: string, p = 1): SynthItem[] {
  const objects = (base.record.video as { scene?: { objects?: SceneObject[] } }).scene?.objects;
  if (!objects || objects.length === 0) return [];
  const { color, shape } = objects[0];
  if (objects.some((ob) => ob.color !== color || ob.shape !== shape)) return [];
  const rng = new Rng(`attribute:${key}`);
  const out: SynthItem[] = [];
  const asks = [
    ['colour', color, OBJECT_COLOURS],
    ['shape', shape, SHAPES],
  ] as const;
  for (const [attribute, truth, pool] of asks) {
    if (rng.next() >= p) continue;
    const others = rng.shuffle((pool as readonly string[]).filter((w) => w !== truth)).slice(0, 3);
    const options = rng.shuffle([truth, ...others]);
    out.push({
      frames: base.frames,
      record: {
        ...base.record,
        id: `${base.record.id}-${attribute}`,
        question: SYNTH_QUESTIONS[attribute].question,
        options,
        answer: options.indexOf(truth),
        meta: { ...(base.record.meta ?? {}), attribute, auxiliary: true },
      },
    });
  }
  return out;
}

/**
 * The logit groups of the native policy's vision attribute head (config `visionAuxClasses`), one
 * per question kind of the synthetic data; a group's classes are the answers its kind can have.
 * `crpo sft --vision-aux` labels each prompt with the group of its question and the class of its
 * gold answer (visionLabel), so the head learns to tell them from the video alone.
 */
export const VISION_LABEL_GROUPS: readonly { question: string; answers: readonly string[] }[] = [
  { question: SYNTH_QUESTIONS.colour.question, answers: OBJECT_COLOURS },
  { question: SYNTH_QUESTIONS.shape.question, answers: SHAPES },
  { question: SYNTH_QUESTIONS.count.question, answers: SYNTH_QUESTIONS.count.options },
  { question: SYNTH_QUESTIONS.moving_direction.question, answers: SYNTH_QUESTIONS.moving_direction.options },
  { question: SYNTH_QUESTIONS.reversible_dynamics.question, answers: SYNTH_QUESTIONS.reversible_dynamics.options },
  { question: SYNTH_QUESTIONS.event_sequence.question, answers: SYNTH_EVENTS.map((e) => `The object ${e}`) },
];

/** Logits of the vision attribute head that VISION_LABEL_GROUPS need. */
export const VISION_LABEL_CLASSES = VISION_LABEL_GROUPS.reduce((n, g) => n + g.answers.length, 0);

/**
 * The vision attribute label of an item (group of its question, class of its gold answer), or
 * undefined for a question the groups do not know (a reading question: the clip does not answer it).
 */
export function visionLabel(record: SynthItem['record']): { start: number; size: number; index: number } | undefined {
  let start = 0;
  for (const g of VISION_LABEL_GROUPS) {
    if (g.question === record.question) {
      const index = g.answers.indexOf(record.options[record.answer]);
      return index >= 0 ? { start, size: g.answers.length, index } : undefined;
    }
    start += g.answers.length;
  }
  return undefined;
}
