/**
 * Synthetic DyBench: determinism, pair members differing only by the transform (checked against
 * the naive reference transform), answers under each transform, and the shortcut knob statistics.
 */
import { referenceTransform } from '../../lib/counterfactual';
import { DyBenchRecord, type SyntheticVideoSpec } from '../../lib/data/schema';
import { CATEGORY_OPTION_COUNTS } from '../../lib/data/categories';
import {
  OBJECT_COLOURS,
  colourShortcutRate,
  renderScene,
  renderSynthetic,
  shortcutColour,
  synthesize,
  synthesizePair,
  synthesizeRecords,
  type Scene,
} from '../../lib/synth';

const sameBytes = (a: Uint8Array, b: Uint8Array): boolean =>
  a.length === b.length &&
  Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.length), Buffer.from(b.buffer, b.byteOffset, b.length)) === 0;

describe('synthesize', () => {
  const items = synthesize({ split: 'train', pairs: 6, seed: 3 });

  test('is deterministic for a seed and differs across seeds and splits', () => {
    const again = synthesize({ split: 'train', pairs: 6, seed: 3 });
    expect(again.map((i) => i.record)).toEqual(items.map((i) => i.record));
    again.forEach((it, k) => expect(sameBytes(it.frames, items[k].frames)).toBe(true));
    const other = synthesize({ split: 'train', pairs: 6, seed: 4 });
    expect(other.filter((it, k) => sameBytes(it.frames, items[k].frames)).length).toBeLessThan(items.length / 4);
    const test = synthesizeRecords({ split: 'test', pairs: 6, seed: 3 });
    expect(test.map((r) => JSON.stringify(r.video))).not.toEqual(items.map((i) => JSON.stringify(i.record.video)));
  });

  test('asking for more pairs keeps the earlier ones', () => {
    const more = synthesizeRecords({ split: 'train', pairs: 8, seed: 3, categories: ['moving_direction'] });
    const fewer = items.filter((i) => i.record.category === 'moving_direction').map((i) => i.record);
    expect(more.slice(0, fewer.length)).toEqual(fewer);
  });

  test('records are valid, paired, with the category option counts and shapes [T,H,W,3]', () => {
    expect(items.length).toBe(4 * 6 * 2);
    for (const it of items) {
      expect(DyBenchRecord.safeParse(it.record).success).toBe(true);
      expect(it.frames.length).toBe(8 * 32 * 32 * 3);
      const k = CATEGORY_OPTION_COUNTS[it.record.category];
      if (k !== undefined) expect(it.record.options.length).toBe(k);
    }
    const ids = new Set(items.map((i) => i.record.id));
    expect(ids.size).toBe(items.length);
    for (let k = 0; k < items.length; k += 2) {
      expect(items[k].record.pair_id).toBe(items[k + 1].record.pair_id);
      expect(items[k].record.transform).toBe('none');
      expect(items[k + 1].record.transform).not.toBe('none');
    }
  });

  test('pair members differ only by the transform (naive reference), and renderSynthetic reproduces both', () => {
    for (let k = 0; k < items.length; k += 2) {
      const a = items[k],
        b = items[k + 1];
      const spec = b.record.video as SyntheticVideoSpec;
      const expected = referenceTransform(
        a.frames,
        [1, 8, 32, 32, 3],
        'BTHWC',
        spec.transform as 'hflip',
        spec.swap_at ?? 0,
      ) as Uint8Array;
      expect(sameBytes(b.frames, expected)).toBe(true);
      expect(sameBytes(renderSynthetic(a.record.video as SyntheticVideoSpec), a.frames)).toBe(true);
      expect(sameBytes(renderSynthetic(spec), b.frames)).toBe(true);
      // A JSON round trip (what a JSONL file holds) reproduces the frames too.
      expect(sameBytes(renderSynthetic(JSON.parse(JSON.stringify(spec))), b.frames)).toBe(true);
    }
  });

  test('dynamic answers change under the transform; static answers stay', () => {
    for (let k = 0; k < items.length; k += 2) {
      const a = items[k].record,
        b = items[k + 1].record;
      const cf = (a.meta as { counterfactual: { answer: number; transform: string } }).counterfactual;
      expect(cf.answer).toBe(b.answer);
      expect(cf.transform).toBe(b.transform);
      if (a.category === 'static') expect(b.answer).toBe(a.answer);
      else expect(b.answer).not.toBe(a.answer);
      if (a.category === 'moving_direction') {
        const dir = a.options[a.answer];
        if (dir === 'up' || dir === 'down') expect(b.transform).not.toBe('hflip');
        if (dir === 'left' || dir === 'right') expect(b.transform).not.toBe('hflip+reverse');
      }
      if (a.category === 'event_sequence') expect(b.transform).toBe('swap');
      if (a.category === 'reversible_dynamics') expect(b.transform).toBe('reverse');
      if (a.category === 'static') expect(['hflip', 'reverse']).toContain(b.transform);
    }
  });

  test('moving direction pixels agree with the answer: the centroid moves that way', () => {
    const moving = synthesize({ split: 'test', pairs: 12, seed: 9, categories: ['moving_direction'] });
    for (const it of moving) {
      const centroid = (t: number): [number, number] => {
        let sx = 0,
          sy = 0,
          n = 0;
        for (let y = 0; y < 32; y++)
          for (let x = 0; x < 32; x++) {
            const p = ((t * 32 + y) * 32 + x) * 3;
            if (it.frames[p] !== 60 || it.frames[p + 1] !== 60 || it.frames[p + 2] !== 60) {
              sx += x;
              sy += y;
              n++;
            }
          }
        return [sx / n, sy / n];
      };
      const [x0, y0] = centroid(0),
        [x1, y1] = centroid(7);
      const seen = Math.abs(x1 - x0) > Math.abs(y1 - y0) ? (x1 > x0 ? 'right' : 'left') : y1 > y0 ? 'down' : 'up';
      expect(seen).toBe(it.record.options[it.record.answer]);
      expect(Math.max(Math.abs(x1 - x0), Math.abs(y1 - y0))).toBeGreaterThan(10); // strong motion at 32 px
    }
  });

  test('event sequence pixels agree with the answer: the first half shows the event named first', () => {
    const events = synthesize({ split: 'test', pairs: 16, seed: 4, categories: ['event_sequence'] });
    const stats = (f: Uint8Array, t: number): { n: number; x: number; y: number } => {
      let n = 0,
        sx = 0,
        sy = 0;
      for (let y = 0; y < 32; y++)
        for (let x = 0; x < 32; x++) {
          const p = ((t * 32 + y) * 32 + x) * 3;
          if (f[p] !== 60 || f[p + 1] !== 60 || f[p + 2] !== 60) {
            n++;
            sx += x;
            sy += y;
          }
        }
      return { n, x: sx / n, y: sy / n };
    };
    for (const it of events) {
      const first = it.record.options[it.record.answer].replace('The object ', '');
      const a = stats(it.frames, 0),
        b = stats(it.frames, 3);
      if (first === 'grows') expect(b.n).toBeGreaterThan(3 * a.n);
      if (first === 'shrinks') expect(a.n).toBeGreaterThan(3 * b.n);
      if (first === 'moves sideways') expect(Math.abs(b.x - a.x)).toBeGreaterThan(10);
      if (first === 'moves up or down') expect(Math.abs(b.y - a.y)).toBeGreaterThan(10);
    }
  });

  test('shortcut knob: colour names the original answer with p on train, ~1/K on test', () => {
    const stats = (split: 'train' | 'test', p?: number): { match: number; colourReaderPAcc: number } => {
      const recs = synthesizeRecords({
        split,
        pairs: 300,
        seed: 11,
        shortcutP: p,
        categories: ['reversible_dynamics', 'moving_direction', 'event_sequence'],
      });
      let match = 0,
        originals = 0,
        pairsRight = 0,
        pairs = 0;
      for (let k = 0; k < recs.length; k += 2) {
        const a = recs[k],
          b = recs[k + 1];
        const colour = ((a.video as SyntheticVideoSpec).scene as unknown as Scene).objects[0].color;
        const guess = [0, 1, 2, 3].find((i) => shortcutColour(i) === colour);
        originals++;
        if (guess === a.answer) match++;
        pairs++;
        if (guess === a.answer && guess === b.answer) pairsRight++; // same colour -> same guess on both members
      }
      return { match: match / originals, colourReaderPAcc: pairsRight / pairs };
    };
    const train = stats('train');
    expect(train.match).toBeGreaterThan(0.86);
    expect(train.match).toBeLessThan(0.94);
    expect(stats('train', 0.5).match).toBeLessThan(0.56);
    const test = stats('test');
    // Answer classes: 2 (grows/shrinks), 4, 2 -> chance (1/2 + 1/4 + 1/2) / 3 = 0.42.
    expect(test.match).toBeGreaterThan(0.34);
    expect(test.match).toBeLessThan(0.5);
    // Only 'unchanged' size pairs keep their answer: a colour-reader's P-Acc is near zero.
    expect(test.colourReaderPAcc).toBeLessThan(0.08);
  });

  test('rejects bad options with the standard message', () => {
    expect(() => synthesize({ split: 'val' as 'train', pairs: 1, seed: 1 })).toThrow(
      "Expected 'train' or 'test' for split but received 'val' of type string",
    );
    expect(() => synthesize({ split: 'train', pairs: -1, seed: 1 })).toThrow(
      'Expected an integer >= 0 for pairs but received -1 of type number',
    );
    expect(() => synthesize({ split: 'train', pairs: 1, seed: 1, shortcutP: 2 })).toThrow(
      'Expected a number in [0, 1] for shortcutP but received 2 of type number',
    );
    expect(() => synthesize({ split: 'train', pairs: 1, seed: 1, categories: ['other'] })).toThrow(
      /for categories\[\] but received 'other'/,
    );
  });

  test('renderSynthetic rejects a bad scene naming the field', () => {
    const spec = {
      kind: 'synthetic',
      frames: 2,
      height: 8,
      width: 8,
      transform: 'none',
      scene: {
        version: 1,
        background: 'gray',
        objects: [
          { shape: 'hexagon', color: 'red', from: { x: 0.5, y: 0.5, size: 0.5 }, to: { x: 0.5, y: 0.5, size: 0.5 } },
        ],
      },
    } as SyntheticVideoSpec;
    expect(() => renderSynthetic(spec)).toThrow(/video\.scene\.objects\.0\.shape/);
  });

  test('renderScene draws a square where the keyframe says', () => {
    const s: Scene = {
      version: 1,
      background: 'gray',
      objects: [
        { shape: 'square', color: 'red', from: { x: 0.25, y: 0.25, size: 0.5 }, to: { x: 0.25, y: 0.25, size: 0.5 } },
      ],
    };
    const f = renderScene(s, 1, 8, 8);
    const px = (y: number, x: number): number[] => Array.from(f.slice((y * 8 + x) * 3, (y * 8 + x) * 3 + 3));
    expect(px(0, 0)).toEqual([230, 40, 40]);
    expect(px(3, 3)).toEqual([230, 40, 40]);
    expect(px(4, 4)).toEqual([60, 60, 60]);
  });
});

describe('synthesizePair and the colour rule', () => {
  test('pair i of a category is the same records and pixels as in the whole set, for any index', () => {
    const o = { split: 'train' as const, pairs: 3, seed: 5 };
    const all = synthesize({ ...o, categories: ['moving_direction'] });
    const [a, b] = synthesizePair(o, 'moving_direction', 2);
    expect(a.record).toEqual(all[4].record);
    expect(b.record).toEqual(all[5].record);
    expect(Buffer.from(b.frames).equals(Buffer.from(all[5].frames))).toBe(true);
    const [far] = synthesizePair(o, 'moving_direction', 123456);
    expect(far.record.pair_id).toBe('synth-train-moving_direction-123456');
  });

  test("colour 'independent' on the train split breaks the shortcut; an unknown rule is refused", () => {
    const match = (colour: 'shortcut' | 'independent'): number => {
      const recs = synthesizeRecords({ split: 'train', pairs: 300, seed: 2, colour, categories: ['moving_direction'] });
      const originals = recs.filter((r) => r.transform === 'none');
      const hits = originals.filter(
        (r) =>
          ((r.video as SyntheticVideoSpec).scene as unknown as Scene).objects[0].color === shortcutColour(r.answer),
      );
      return hits.length / originals.length;
    };
    expect(match('shortcut')).toBeGreaterThan(0.85);
    expect(match('independent')).toBeGreaterThan(0.17);
    expect(match('independent')).toBeLessThan(0.33); // 4 directions: ~1/4
    expect(() => synthesizeRecords({ split: 'train', pairs: 1, seed: 1, colour: 'red' as never })).toThrow(/colour/);
  });

  test('colourShortcutRate counts dynamic answers that follow a colour naming a wrong option', () => {
    const recs = synthesizeRecords({ split: 'test', pairs: 40, seed: 3 });
    const colourOf = (r: DyBenchRecord): number =>
      (OBJECT_COLOURS as readonly string[]).indexOf(
        ((r.video as SyntheticVideoSpec).scene as unknown as Scene).objects[0].color,
      );
    expect(
      colourShortcutRate(
        recs,
        recs.map((r) => r.answer),
      ),
    ).toBe(0); // the truth never follows a wrong colour
    const followColour = recs.map((r) => (r.category === 'static' ? r.answer : colourOf(r)));
    expect(colourShortcutRate(recs, followColour)).toBe(1);
  });
});
