/**
 * DyBench JSONL loader: every broken input is reported as file:line:field with what was
 * expected; strict mode lists every bad line, lenient mode skips and counts.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { DataError, loadRecords, loadRecordsSync, parseRecords } from '../../lib/data/loader';
import { synthesizeRecords } from '../../lib/synth';

const rec = (id: string, pair: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  id,
  pair_id: pair,
  video: `videos/${id}.mp4`,
  question: 'Which way does the car move?',
  options: ['left', 'right', 'up', 'down'],
  answer: 0,
  category: 'moving_direction',
  transform: 'none',
  source: 'test',
  ...extra,
});
const jsonl = (rows: unknown[]): string =>
  rows.map((r) => (typeof r === 'string' ? r : JSON.stringify(r))).join('\n') + '\n';

describe('loadRecords', () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-data-'));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('loads a good file and resolves relative video paths against its folder', async () => {
    const f = path.join(dir, 'good.jsonl');
    fs.writeFileSync(
      f,
      jsonl([
        rec('a', 'p1'),
        rec('b', 'p1', { transform: 'hflip', answer: 1 }),
        '',
        rec('c', 'p2', { video: '/abs/c.mp4' }),
        rec('d', 'p2', { transform: 'reverse', video: '/abs/d.mp4', answer: 1 }),
      ]),
    );
    const r = await loadRecords(f);
    expect(r.records.map((x) => x.id)).toEqual(['a', 'b', 'c', 'd']);
    expect(r.lines).toEqual([1, 2, 4, 5]);
    expect(r.records[0].video).toBe(path.join(dir, 'videos/a.mp4'));
    expect(r.records[2].video).toBe('/abs/c.mp4');
    expect((await loadRecords(f, { videoRoot: '/data/v' })).records[0].video).toBe('/data/v/videos/a.mp4');
    expect(r.skipped).toBe(0);
  });

  test('CRLF line ends and a UTF-8 byte-order mark are accepted', async () => {
    const f = path.join(dir, 'crlf.jsonl');
    fs.writeFileSync(
      f,
      '\ufeff' +
        [rec('a', 'p1'), rec('b', 'p1', { transform: 'hflip', answer: 1 })].map((r) => JSON.stringify(r)).join('\r\n') +
        '\r\n',
    );
    expect((await loadRecords(f)).records.map((r) => r.id)).toEqual(['a', 'b']);
    expect(loadRecordsSync(f).records).toHaveLength(2);
  });

  test('a missing file is one clear error', async () => {
    await expect(loadRecords(path.join(dir, 'nope.jsonl'))).rejects.toThrow(
      `DyBench JSONL file not found: ${path.join(dir, 'nope.jsonl')}`,
    );
    expect(() => loadRecordsSync(dir)).toThrow(/is a directory, expected a file/);
  });

  const broken = (): string =>
    jsonl([
      rec('a', 'p1'), // 1 ok
      rec('b', 'p1', { transform: 'hflip', answer: 1 }), // 2 ok
      rec('c', 'p2', { options: ['left', 'right', 'up'] }), // 3 wrong option count
      rec('d', 'p2', { transform: 'reverse', answer: 4 }), // 4 answer not among options
      rec('a', 'p3', { transform: 'reverse' }), // 5 duplicate id
      rec('e', 'p3', { transform: 'hflip' }), // 6 partner of a duplicate
      rec('f', 'p4'), // 7 pair with one member
      '{"id": "g", oops}', // 8 invalid JSON
      rec('h', 'p5', { category: 'motion', answer: '1', extra: true }), // 9 several field errors
      rec('i', 'p5', {
        transform: 'hflip',
        video: {
          kind: 'synthetic',
          scene: { version: 1, background: 'gray', objects: [{ shape: 'blob' }] },
          frames: 8,
          height: 32,
          width: 32,
        },
      }), // 10 bad scene
    ]);

  test('strict mode lists every bad line with file:line:field and what was expected', () => {
    const f = path.join(dir, 'broken.jsonl');
    fs.writeFileSync(f, broken());
    let err: DataError | undefined;
    try {
      loadRecordsSync(f);
    } catch (e) {
      err = e as DataError;
    }
    expect(err?.code).toBe('ERR_CRPO_BAD_DATA');
    const msg = err!.message;
    expect(msg).toContain(`${f}:3:options: expected 4 options for category moving_direction, received 3`);
    expect(msg).toContain(`${f}:4:answer: expected an index of one of the 4 options (0-3), received 4`);
    expect(msg).toContain(`${f}:5:id: expected a unique id, 'a' is already used on line 1`);
    expect(msg).toContain(
      `${f}:6:pair_id: pair 'p3' loses its partner on line 5 (bad record); a pair needs both members`,
    );
    expect(msg).toContain(
      `${f}:7:pair_id: expected a partner record with pair_id 'p4', found none (a pair with one member)`,
    );
    expect(msg).toMatch(new RegExp(`${f.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}:8: invalid JSON`));
    expect(msg).toContain(`${f}:9:category: Invalid option: expected one of`);
    expect(msg).toContain(`${f}:9:answer: Invalid input: expected number, received string`);
    expect(msg).toContain(`${f}:9:extra: unknown field (extra)`);
    expect(msg).toContain(`${f}:10:video.scene.objects.0.shape: Invalid option`);
    expect(msg).toContain(`${f}:10:video.scene.objects.0.color`);
    expect(msg.split('\n')[0]).toBe(`${f}: 8 bad lines:`);
    const lines = new Set(err!.issues.map((i) => i.line));
    expect([...lines].sort((a, b) => a - b)).toEqual([3, 4, 5, 6, 7, 8, 9, 10]);
  });

  test('lenient mode keeps the good pairs, skips the rest and reports the count', () => {
    const r = parseRecords(broken(), 'broken.jsonl', { mode: 'lenient' });
    expect(r.records.map((x) => x.id)).toEqual(['a', 'b']);
    expect(r.skipped).toBe(8);
    expect(new Set(r.issues.map((i) => i.line)).size).toBe(8);
  });

  test('a pair left alone by a bad partner is skipped in lenient mode too', () => {
    const r = parseRecords(jsonl([rec('a', 'p1'), rec('b', 'p1', { answer: 9, transform: 'hflip' })]), 'x.jsonl', {
      mode: 'lenient',
    });
    expect(r.records).toEqual([]);
    expect(r.skipped).toBe(2);
    expect(r.issues.map((i) => `${i.line}:${i.field}`)).toEqual(['1:pair_id', '2:answer']);
  });

  test('TimeBlind instances have four members; a pair with three is an error', () => {
    const tb = (id: string, v: number, q: number): Record<string, unknown> =>
      rec(id, 'inst1', { category: 'other', options: ['yes', 'no'], meta: { instance: { video: v, question: q } } });
    expect(
      parseRecords(jsonl([tb('a', 0, 0), tb('b', 0, 1), tb('c', 1, 0), tb('d', 1, 1)]), 'tb.jsonl').records,
    ).toHaveLength(4);
    expect(() => parseRecords(jsonl([tb('a', 0, 0), tb('b', 0, 1), tb('c', 1, 0)]), 'tb.jsonl')).toThrow(
      "tb.jsonl:1:pair_id: expected 4 records with pair_id 'inst1' (TimeBlind instance), found 3 (lines 1, 2, 3)",
    );
    expect(() =>
      parseRecords(
        jsonl([rec('a', 'p'), rec('b', 'p', { transform: 'hflip' }), rec('c', 'p', { transform: 'reverse' })]),
        'x.jsonl',
      ),
    ).toThrow("x.jsonl:1:pair_id: expected 2 records with pair_id 'p', found 3");
    expect(() => parseRecords(jsonl([tb('a', 0, 0), tb('b', 0, 1), tb('c', 1, 0), tb('d', 0, 1)]), 'tb.jsonl')).toThrow(
      "tb.jsonl:1:meta.instance: expected the four records of instance 'inst1' to cover video 0/1 x question 0/1 once each (lines 1, 2, 3, 4)",
    );
    expect(() => parseRecords(jsonl([tb('a', 0, 0), tb('b', 0, 1), tb('c', 1, 0), tb('d', 2, 1)]), 'tb.jsonl')).toThrow(
      'tb.jsonl:4:meta.instance: expected {"video": 0|1, "question": 0|1} (a TimeBlind instance cell), received {"video":2,"question":1}',
    );
  });

  test('checkFiles reports missing videos; other checks: non-object lines, duplicate options, option-count override', () => {
    fs.mkdirSync(path.join(dir, 'videos'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'videos', 'a.mp4'), 'x');
    const f = path.join(dir, 'files.jsonl');
    fs.writeFileSync(f, jsonl([rec('a', 'p1'), rec('b', 'p1', { transform: 'hflip', answer: 1 })]));
    expect(() => loadRecordsSync(f, { checkFiles: true })).toThrow(
      `${f}:2:video: expected an existing video file or frames directory, not found: ${path.join(dir, 'videos/b.mp4')}`,
    );
    expect(() => parseRecords('[1,2]\n', 'y.jsonl')).toThrow(
      'y.jsonl:1: expected a JSON object (one record per line), received an array of length 2',
    );
    expect(() =>
      parseRecords(
        jsonl([rec('a', 'p', { options: ['left', 'Left', 'up', 'down'] }), rec('b', 'p', { transform: 'hflip' })]),
        'z.jsonl',
      ),
    ).toThrow("z.jsonl:1:options.1: expected distinct options, 'Left' repeats option 0");
    const three = [
      rec('a', 'p', { options: ['l', 'r', 'u'] }),
      rec('b', 'p', { options: ['l', 'r', 'u'], transform: 'hflip' }),
    ];
    expect(parseRecords(jsonl(three), 'o.jsonl', { optionCounts: { moving_direction: 3 } }).records).toHaveLength(2);
    expect(parseRecords(jsonl([rec('a', 'p')]), 'o.jsonl', { requirePairs: false }).records).toHaveLength(1);
  });

  test('synthetic records round-trip through JSONL and load strictly', () => {
    const recs = synthesizeRecords({ split: 'test', pairs: 3, seed: 2 });
    const r = parseRecords(jsonl(recs), 'synth.jsonl');
    expect(r.records).toEqual(recs);
  });
});
