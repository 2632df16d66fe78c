/**
 * The fresh-clip stream of `crpo sft` (lib/train/sft.ts streamIndex): a category listed more than
 * once is weighted, and its pairs still get consecutive indices of their own, so no clip repeats.
 */
import { SFT_DEFAULTS, sftBatch, staticPairIndex, streamIndex } from '../../lib/train/sft';
import { colourAnswer, synthesizePair } from '../../lib/synth';
import { DYNAMIC_CATEGORIES } from '../../lib/data/categories';
import type { Category } from '../../lib/data/schema';

describe('sft stream', () => {
  it('each category of a distinct list counts one pair per cycle (the stream before weighting)', () => {
    const cats: Category[] = ['reversible_dynamics', 'moving_direction', 'event_sequence', 'static'];
    expect(Array.from({ length: 12 }, (_, k) => streamIndex(cats, k))).toEqual([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]);
  });

  it('a category listed three times gets three new indices per cycle, never the same one twice', () => {
    const cats: Category[] = ['static', 'reversible_dynamics', 'static', 'moving_direction', 'static'];
    const seen = new Map<Category, number[]>();
    for (let k = 0; k < 50; k++) {
      const c = cats[k % cats.length];
      seen.set(c, [...(seen.get(c) ?? []), streamIndex(cats, k)]);
    }
    expect(seen.get('static')).toEqual(Array.from({ length: 30 }, (_, i) => i));
    expect(seen.get('reversible_dynamics')).toEqual(Array.from({ length: 10 }, (_, i) => i));
  });

  it('static clips ask the attributes of the given cycle, each from a fresh pair', () => {
    const cycle = ['shape', 'colour', 'shape', 'count'] as const;
    const asked: string[] = [];
    const indices = new Set<number>();
    for (let n = 0; n < 12; n++) {
      const i = staticPairIndex(cycle, n);
      indices.add(i);
      const [a] = synthesizePair({ split: 'train', pairs: 1, seed: 3, frames: 8, size: 32 }, 'static', i);
      asked.push((a.record.meta as { attribute: string }).attribute);
    }
    expect(asked).toEqual([...cycle, ...cycle, ...cycle]);
    expect(indices.size).toBe(12);
  });

  it("dynamicAnswers 'colour': dynamic clips answered by the option their colour names, static ones by the truth", () => {
    const synth = { frames: 8, size: 32 };
    const o = { ...SFT_DEFAULTS, members: 'original' as const, reading: 0, attributeQuestions: 0, batchSize: 24 };
    const truth = sftBatch(o, 3, null, synth);
    const byColour = sftBatch({ ...o, dynamicAnswers: 'colour' }, 3, null, synth);
    expect(byColour.map((it) => it.record.id)).toEqual(truth.map((it) => it.record.id));
    let moved = 0;
    byColour.forEach((it, i) => {
      const dynamic = DYNAMIC_CATEGORIES.includes(it.record.category);
      expect(it.record.answer).toBe(dynamic ? colourAnswer(truth[i].record) : truth[i].record.answer);
      expect(it.frames).toEqual(truth[i].frames); // the same clip: only the answer differs
      if (it.record.answer !== truth[i].record.answer) moved++;
    });
    // With colour independent of the motion, many dynamic answers change (the colour names another option).
    expect(moved).toBeGreaterThan(3);
  });
});
