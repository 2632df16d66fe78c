/**
 * The fresh-clip stream of `crpo sft` (lib/model/sft.ts streamIndex): a category listed more than
 * once is weighted, and its pairs still get consecutive indices of their own, so no clip repeats.
 */
import { streamIndex } from '../../lib/model/sft';
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
});
