/**
 * `crpo synth` end to end through the CLI entry point: JSONL + PNG frames that load strictly and
 * read back as the inline spec renders them, `--no-frames`, and a rerun that skips finished folders.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { main } from '../../lib/cli/main';
import { loadRecords } from '../../lib/data/loader';
import type { SyntheticVideoSpec } from '../../lib/data/schema';
import { renderSynthetic } from '../../lib/synth';
import { VideoReader } from '../../lib/video';

describe('crpo synth', () => {
  let dir: string;
  let out: string[];
  const write = jest.spyOn(process.stdout, 'write');
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-synth-'));
  });
  beforeEach(() => {
    out = [];
    write.mockImplementation((s: string | Uint8Array) => (out.push(String(s)), true));
  });
  afterEach(() => write.mockReset());
  afterAll(() => {
    write.mockRestore();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('writes both splits with PNG frames that read back as the spec renders', async () => {
    process.exitCode = undefined;
    await main(['synth', '--out', dir, '--split', 'both', '--pairs', '2', '--seed', '1']);
    expect(process.exitCode).toBeUndefined();
    expect(out.join('')).toContain(
      `train: 8 pairs, 16 records -> ${path.join(dir, 'train.jsonl')}, frame folders: 16 written, 0 already present`,
    );
    const train = await loadRecords(path.join(dir, 'train.jsonl'));
    const test = await loadRecords(path.join(dir, 'test.jsonl'));
    expect(train.records).toHaveLength(16);
    expect(test.records).toHaveLength(16);
    const reader = new VideoReader({ cacheBytes: 0 });
    for (const r of train.records.slice(0, 6)) {
      const spec = r.video as SyntheticVideoSpec;
      const v = await reader.read(path.join(dir, (r.meta as { frames_dir: string }).frames_dir));
      expect(Buffer.compare(Buffer.from(v.data), Buffer.from(renderSynthetic(spec)))).toBe(0);
    }
    expect(JSON.parse(fs.readFileSync(path.join(dir, 'train.config.json'), 'utf8'))).toMatchObject({
      split: 'train',
      pairs: 2,
      seed: 1,
      writeFrames: true,
    });
    // Contact sheet: 2 pairs x 4 categories as rows, 8 + 8 frames at 3x with 2 px padding and a 12 px gap.
    const sharp = (await import('sharp')).default;
    expect(await sharp(path.join(dir, 'train-sheet.png')).metadata()).toMatchObject({
      width: 2 + 16 * (96 + 2) + 12,
      height: 2 + 8 * (96 + 2),
    });
    const legend = fs.readFileSync(path.join(dir, 'train-sheet.txt'), 'utf8').trim().split('\n');
    expect(legend).toHaveLength(9);
    expect(legend[1]).toMatch(/^1\. synth-train-reversible_dynamics-00000: .* \| reverse: /);
  });

  test('a rerun skips finished frame folders and writes the same JSONL', async () => {
    const before = fs.readFileSync(path.join(dir, 'train.jsonl'), 'utf8');
    await main(['synth', '--out', dir, '--split', 'train', '--pairs', '2', '--seed', '1']);
    expect(out.join('')).toContain('frame folders: 0 written, 16 already present');
    expect(fs.readFileSync(path.join(dir, 'train.jsonl'), 'utf8')).toBe(before);
  });

  test('--no-frames writes JSONL with inline specs only', async () => {
    const d = path.join(dir, 'inline');
    await main([
      'synth',
      '--out',
      d,
      '--split',
      'test',
      '--pairs',
      '3',
      '--seed',
      '2',
      '--no-frames',
      '--categories',
      'moving_direction,static',
    ]);
    expect(fs.readdirSync(d).sort()).toEqual(['test.config.json', 'test.jsonl']);
    const recs = (await loadRecords(path.join(d, 'test.jsonl'))).records;
    expect(recs).toHaveLength(12);
    expect(recs.every((r) => typeof r.video === 'object' && r.video.kind === 'synthetic')).toBe(true);
  });

  test('a bad category is one line and exit code 1', async () => {
    const err = jest.spyOn(process.stderr, 'write').mockImplementation(() => true);
    process.exitCode = undefined;
    await main(['synth', '--out', path.join(dir, 'x'), '--categories', 'motion', '--no-frames']);
    expect(process.exitCode).toBe(1);
    expect(String(err.mock.calls[0][0])).toMatch(
      /^crpo: Expected a comma-separated list of .* for --categories but received 'motion' of type string\n$/,
    );
    err.mockRestore();
    process.exitCode = undefined;
  });
});
