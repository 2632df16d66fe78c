/**
 * The trainer's data helpers (lib/train/data.ts): where a record's counterfactual route comes from,
 * the seeded per-epoch order (every item once per epoch, the same for the same seed), the shard of
 * a batch per rank, and the example configs in configs/ resolving.
 */
import * as fs from 'fs';
import * as path from 'path';
import { batchIndices, routeOf, shardBatch } from '../../lib/train/data';
import { resolveConfig } from '../../lib/train/config';
import { synthesizePairRecords } from '../../lib/synth';
import type { DyBenchRecord } from '../../lib/data/schema';

const base: DyBenchRecord = {
  id: 'r1',
  pair_id: 'p1',
  video: 'x.mp4',
  question: 'Is the door opening or closing?',
  options: ['opening', 'closing'],
  answer: 0,
  category: 'reversible_dynamics',
  transform: 'none',
  source: 't',
};

describe('routeOf', () => {
  it('prefers the record route, then the generator metadata, then the rules router', () => {
    expect(routeOf({ ...base, route: { transform: 'hflip', relation: 'same' } }, 'f')).toEqual({
      transform: 'hflip',
      relation: 'same',
    });
    const [orig] = synthesizePairRecords({ split: 'train', pairs: 1, seed: 1 }, 'event_sequence', 0);
    expect(routeOf(orig, 'f')).toMatchObject({ transform: 'swap', relation: 'change', swapAt: 4 });
    expect(routeOf(base, 'f')).toEqual({ transform: 'reverse', relation: 'change' });
  });
});

describe('batchIndices', () => {
  it('visits every item once per epoch, in a seeded order', () => {
    const n = 10,
      b = 4;
    const steps = Array.from({ length: 5 }, (_, s) => batchIndices(n, b, 3, s)).flat(); // 2 epochs
    expect([...steps.slice(0, 10)].sort((x, y) => x - y)).toEqual([...Array(10).keys()]);
    expect([...steps.slice(10, 20)].sort((x, y) => x - y)).toEqual([...Array(10).keys()]);
    expect(steps.slice(0, 10)).not.toEqual(steps.slice(10, 20));
    expect(batchIndices(n, b, 3, 2)).toEqual(steps.slice(8, 12));
    expect(batchIndices(n, b, 4, 0)).not.toEqual(steps.slice(0, 4));
  });
});

describe('shardBatch', () => {
  it('splits whole groups into contiguous blocks across ranks', () => {
    const batch = ['a', 'b', 'c', 'd', 'e'];
    expect(shardBatch(batch, { rank: 0, worldSize: 2 })).toEqual(['a', 'b', 'c']);
    expect(shardBatch(batch, { rank: 1, worldSize: 2 })).toEqual(['d', 'e']);
    expect([0, 1, 2].flatMap((rank) => shardBatch(batch, { rank, worldSize: 3 }))).toEqual(batch);
  });
});

describe('configs/', () => {
  const dir = path.resolve(__dirname, '../../configs');
  it.each(fs.readdirSync(dir).filter((f) => f.endsWith('.yaml')))('%s resolves', (f) => {
    expect(() => resolveConfig({ file: path.join(dir, f), checkData: false })).not.toThrow();
  });
});
