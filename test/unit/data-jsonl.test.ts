/**
 * JSONL helpers: atomic writes leave the old file or the new one, appends are whole lines, and a
 * torn last line (a crash mid-write) is cut when the file is reopened for appending.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import {
  JsonlAppender,
  appendJsonlSync,
  parseJsonl,
  repairJsonlTail,
  writeFileAtomic,
  writeFileAtomicSync,
  writeJsonlAtomic,
} from '../../lib/data/jsonl';

describe('jsonl helpers', () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-jsonl-'));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('atomic writes replace the file and leave no temp files', async () => {
    const f = path.join(dir, 'sub', 'a.jsonl');
    await writeJsonlAtomic(f, [{ a: 1 }, { b: 2 }]);
    expect(fs.readFileSync(f, 'utf8')).toBe('{"a":1}\n{"b":2}\n');
    writeFileAtomicSync(f, 'x\n');
    await writeFileAtomic(f, 'y\n');
    expect(fs.readFileSync(f, 'utf8')).toBe('y\n');
    expect(fs.readdirSync(path.dirname(f))).toEqual(['a.jsonl']);
  });

  test('a failed atomic write leaves the target as it was and no temp file', async () => {
    const target = path.join(dir, 'adir');
    fs.mkdirSync(target);
    fs.writeFileSync(path.join(target, 'x'), 'x');
    await expect(writeFileAtomic(target, 'new')).rejects.toThrow(); // cannot rename a file over a non-empty directory
    expect(fs.readFileSync(path.join(target, 'x'), 'utf8')).toBe('x');
    expect(fs.readdirSync(dir).filter((n) => n.includes('.tmp-'))).toEqual([]);
  });

  test('appends are durable whole lines; a torn tail is cut on reopen', async () => {
    const f = path.join(dir, 'log.jsonl');
    appendJsonlSync(f, { id: 1 });
    fs.appendFileSync(f, '{"id": 2, "trunc'); // a crash in the middle of a write
    expect(repairJsonlTail(path.join(dir, 'missing.jsonl'))).toBe(0);
    const app = await JsonlAppender.open(f);
    expect(app.repairedBytes).toBe('{"id": 2, "trunc'.length);
    await Promise.all([app.append({ id: 2 }), app.append([{ id: 3 }, { id: 4 }])]);
    await app.close();
    await expect(app.append({ id: 5 })).rejects.toThrow(/is closed/);
    const { values, errors } = parseJsonl(fs.readFileSync(f, 'utf8'), f);
    expect(errors).toEqual([]);
    expect(values.map((v) => (v.value as { id: number }).id)).toEqual([1, 2, 3, 4]);
  });

  test('a file with no newline at all is emptied by the repair', () => {
    const f = path.join(dir, 'torn.jsonl');
    fs.writeFileSync(f, '{"a":');
    expect(repairJsonlTail(f)).toBe(5);
    expect(fs.readFileSync(f, 'utf8')).toBe('');
    appendJsonlSync(f, [{ a: 1 }]);
    expect(fs.readFileSync(f, 'utf8')).toBe('{"a":1}\n');
  });
});
