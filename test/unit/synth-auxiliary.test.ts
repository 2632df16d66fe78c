/**
 * Auxiliary training questions (lib/synth/auxiliary.ts). Reading questions: the answer is the
 * option that shows the asked text, the draw is seeded by its key, and the words reach the
 * tokenizer. Attribute questions: the truth is the scene's colour / shape, asked only where the
 * objects agree, over the base clip's own frames.
 */
import { synthesize } from '../../lib/synth';
import {
  READING_QUESTION_PREFIX,
  attributeItems,
  readingItem,
  readingQuestion,
  readingVocabulary,
} from '../../lib/synth/auxiliary';
import { SYNTH_QUESTIONS } from '../../lib/synth';
import { packBatch } from '../../lib/train/sft';
import { Tokenizer } from '../../lib/model/tokenizer';
import { formatPrompt } from '../../lib/prompt';

const base = synthesize({ split: 'train', pairs: 3, seed: 5 });

describe('readingItem', () => {
  it('asks for one of its options and answers with that option', () => {
    const answers = new Set<number>();
    for (let k = 0; k < 200; k++) {
      const it = readingItem(base[k % base.length], `k${k}`);
      const asked = it.record.question.slice(READING_QUESTION_PREFIX.length + 1, -1);
      expect(it.record.question).toBe(readingQuestion(asked));
      expect(it.record.options[it.record.answer]).toBe(asked);
      expect(new Set(it.record.options).size).toBe(it.record.options.length);
      expect(it.frames).toBe(base[k % base.length].frames);
      expect(it.record.meta?.reading).toBe(true);
      answers.add(it.record.answer);
    }
    // Every position is used: the answer is not tied to a slot.
    expect([...answers].sort()).toEqual([0, 1, 2, 3]);
  });

  it('is fixed by its key and differs between keys', () => {
    const a = readingItem(base[0], 'x');
    expect(readingItem(base[0], 'x').record).toEqual(a.record);
    const differ = [...Array(20).keys()].some(
      (k) => JSON.stringify(readingItem(base[0], `y${k}`).record) !== JSON.stringify(a.record),
    );
    expect(differ).toBe(true);
  });

  it('draws on words the tokenizer built with readingVocabulary knows', () => {
    const tok = Tokenizer.build([
      ...base.map((it) => formatPrompt(it.record.question, it.record.options)),
      ...readingVocabulary(),
    ]);
    for (let k = 0; k < 50; k++) {
      const it = readingItem(base[k % base.length], `v${k}`);
      const ids = tok.encode(formatPrompt(it.record.question, it.record.options));
      expect(ids).not.toContain(1); // <unk>
    }
  });
});

describe('attributeItems', () => {
  const scene = (it: (typeof base)[number]) =>
    (it.record.video as unknown as { scene: { objects: { color: string; shape: string }[] } }).scene;

  it('asks the colour and shape of single-look clips, with the truth among four options', () => {
    let asked = 0;
    const items = [...base, ...synthesize({ split: 'train', pairs: 12, seed: 6, categories: ['static'] })];
    for (const it of items) {
      const objects = scene(it).objects;
      const uniform = objects.every((o) => o.color === objects[0].color && o.shape === objects[0].shape);
      const extra = attributeItems(it, it.record.id);
      if (!uniform) {
        expect(extra).toEqual([]);
        continue;
      }
      expect(extra.map((x) => x.record.question)).toEqual([
        SYNTH_QUESTIONS.colour.question,
        SYNTH_QUESTIONS.shape.question,
      ]);
      const [colour, shape] = extra;
      expect(colour.record.options[colour.record.answer]).toBe(objects[0].color);
      expect(shape.record.options[shape.record.answer]).toBe(objects[0].shape);
      for (const x of extra) {
        expect(x.record.options).toHaveLength(4);
        expect(new Set(x.record.options).size).toBe(4);
        expect(x.frames).toBe(it.frames);
      }
      asked++;
    }
    // The dynamic clips (one look each) are asked; the count clips with mixed objects are not.
    expect(asked).toBeGreaterThan(items.length / 2);
    expect(asked).toBeLessThan(items.length);
  });

  it('keeps each question with probability p, seeded by the key', () => {
    const kept = base.flatMap((it, i) => attributeItems(it, `p${i}`, 0.5)).length;
    const all = base.flatMap((it, i) => attributeItems(it, `p${i}`, 1)).length;
    expect(kept).toBeGreaterThan(0.2 * all);
    expect(kept).toBeLessThan(0.8 * all);
    expect(base.flatMap((it, i) => attributeItems(it, `p${i}`, 0.5)).length).toBe(kept);
    expect(base.flatMap((it) => attributeItems(it, 'z', 0))).toEqual([]);
  });
});

describe('packBatch with auxiliary questions', () => {
  it('sends each distinct clip once and points every prompt at its clip', () => {
    const [a, b] = base.filter((it) => attributeItems(it, 'x').length === 2);
    const items = [a, ...attributeItems(a, 'x'), b, ...attributeItems(b, 'x')];
    const clipBytes = a.frames.length;
    const packed = packBatch({ clipBytes } as unknown as Parameters<typeof packBatch>[0], items, true);
    expect(packed.numVideos).toBe(2);
    expect(packed.prompts.map((p) => p.video)).toEqual([0, 0, 0, 1, 1, 1]);
    expect(Buffer.from(packed.frames.subarray(clipBytes)).equals(Buffer.from(b.frames))).toBe(true);
    expect(packed.prompts[1].text).toContain(SYNTH_QUESTIONS.colour.question);
  });
});
