/**
 * LRU cache (byte-bounded) and semaphore used by the video reader, plus frame sampling and
 * pixel-budget arithmetic.
 */
import { LruCache, Semaphore } from '../../lib/video/lru';
import { targetSize, uniformIndices } from '../../lib/video/sampling';

test('LRU evicts the least recently used entries to stay under the byte budget', () => {
  const c = new LruCache<string, Uint8Array>(10, (v) => v.length);
  c.set('a', new Uint8Array(4));
  c.set('b', new Uint8Array(4));
  expect(c.get('a')).toBeDefined(); // a is now the most recent
  c.set('c', new Uint8Array(4)); // 12 > 10: evict b
  expect(c.keys()).toEqual(['a', 'c']);
  expect(c.bytes).toBe(8);
  c.set('huge', new Uint8Array(11)); // never fits: not stored, nothing evicted
  expect(c.keys()).toEqual(['a', 'c']);
  c.set('a', new Uint8Array(2)); // replacing updates the byte count
  expect(c.bytes).toBe(6);
  expect(c.get('b')).toBeUndefined();
  expect([c.hits, c.misses]).toEqual([1, 1]);
});

test('semaphore never runs more than its limit, even when new callers arrive as a slot frees', async () => {
  const s = new Semaphore(2);
  let running = 0,
    peak = 0;
  const task = async (): Promise<void> => {
    running++;
    peak = Math.max(peak, running);
    await new Promise((r) => setTimeout(r, 2));
    running--;
  };
  const all: Promise<void>[] = [];
  for (let i = 0; i < 10; i++) {
    all.push(s.run(task));
    if (i % 3 === 0) await new Promise((r) => setTimeout(r, 1));
  }
  await Promise.all(all);
  expect(peak).toBe(2);
  expect(s.peak).toBe(2);
});

test('uniform indices and pixel budgets', () => {
  expect(uniformIndices(16, 4)).toEqual([2, 6, 10, 14]);
  expect(uniformIndices(5, 5)).toEqual([0, 1, 2, 3, 4]);
  expect(uniformIndices(1, 3)).toEqual([0, 0, 0]);
  expect(uniformIndices(3, 6)).toEqual([0, 0, 1, 1, 2, 2]);
  expect(() => uniformIndices(0, 2)).toThrow('Expected an integer >= 1 for total but received 0 of type number');
  expect(targetSize(640, 360, { maxPixels: 128 * 28 * 28 })).toEqual({ width: 422, height: 236 });
  expect(targetSize(640, 360, { maxPixels: 128 * 28 * 28, multiple: 28 })).toEqual({ width: 420, height: 224 });
  expect(targetSize(64, 64, { maxPixels: 10000 })).toEqual({ width: 64, height: 64 });
});
