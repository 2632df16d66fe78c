/**
 * The README flow, end to end as child processes: `crpo synth` writes a synthetic DyBench (inline
 * specs plus PNG frame folders), `crpo eval` evaluates a served model on it, results.md holds Acc /
 * P-Acc per category; the same data read from the PNG folders gives the same result. The served models are the mock OpenAI server playing (a) a motion reader that looks
 * at the first and last JPEG frames it is sent and answers the moving direction, and (b) a
 * constant-answer model. P-Acc must separate them: high for (a), zero for (b).
 */
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';
import { LETTERS } from '../../lib/prompt';
import { startMockOpenAI, type MockReply, type MockRequest, type MockServer } from '../fixtures/openai-mock-server';

const ROOT = path.resolve(__dirname, '..', '..');
let dir: string;
let server: MockServer;
let mode: 'motion' | 'constant' = 'motion';

function crpo(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(
    process.execPath,
    ['-r', path.join(ROOT, 'scripts/ts-register.js'), path.join(ROOT, 'test/fixtures/eval-cli.js'), ...args],
    { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stdout = '',
    stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

/** Centroid of the pixels that differ from the frame's most common colour (the background). */
async function centroid(dataUrl: string): Promise<[number, number]> {
  const { data, info } = await sharp(Buffer.from(dataUrl.split(',')[1], 'base64'))
    .raw()
    .toBuffer({ resolveWithObject: true });
  const counts = new Map<number, number>();
  for (let i = 0; i < data.length; i += info.channels) {
    const key = ((data[i] >> 4) << 8) | ((data[i + 1] >> 4) << 4) | (data[i + 2] >> 4);
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  const bgKey = [...counts.entries()].sort((a, b) => b[1] - a[1])[0][0];
  const bg = [((bgKey >> 8) & 15) * 16 + 8, ((bgKey >> 4) & 15) * 16 + 8, (bgKey & 15) * 16 + 8];
  let sx = 0,
    sy = 0,
    n = 0;
  for (let y = 0; y < info.height; y++) {
    for (let x = 0; x < info.width; x++) {
      const i = (y * info.width + x) * info.channels;
      if (Math.abs(data[i] - bg[0]) + Math.abs(data[i + 1] - bg[1]) + Math.abs(data[i + 2] - bg[2]) > 90) {
        sx += x;
        sy += y;
        n++;
      }
    }
  }
  return n ? [sx / n, sy / n] : [NaN, NaN];
}

async function reply(req: MockRequest): Promise<MockReply> {
  const parts = req.body.messages![0].content as { type: string; text?: string; image_url?: { url: string } }[];
  const prompt = parts.at(-1)!.text!;
  const options = prompt
    .split('\n')
    .filter((l) => /^[A-Z]\. /.test(l))
    .map((l) => l.slice(3));
  if (mode === 'constant') return { content: '<answer>B</answer>' };
  const images = parts.filter((p) => p.type === 'image_url').map((p) => p.image_url!.url);
  if (!prompt.startsWith('In which direction')) return { content: 'A' }; // static questions: a bare letter
  const [x0, y0] = await centroid(images[0]);
  const [x1, y1] = await centroid(images[images.length - 1]);
  const dir = Math.abs(x1 - x0) >= Math.abs(y1 - y0) ? (x1 > x0 ? 'right' : 'left') : y1 > y0 ? 'down' : 'up';
  return {
    content: `The object starts at (${x0.toFixed(1)}, ${y0.toFixed(1)}) and ends at (${x1.toFixed(1)}, ${y1.toFixed(1)}), so it moves ${dir}.\n<answer>${LETTERS[options.indexOf(dir)]}</answer>`,
  };
}

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-eval-synth-'));
  server = await startMockOpenAI(reply);
});
afterAll(async () => {
  await server.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('crpo synth, then crpo eval (inline specs and PNG frame folders): P-Acc separates a motion reader from a constant answer', async () => {
  const synth = await crpo([
    'synth',
    '--out',
    'synth',
    '--split',
    'test',
    '--pairs',
    '8',
    '--seed',
    '4',
    '--categories',
    'moving_direction,static',
  ]);
  expect(synth.stderr).toBe('');
  expect(synth.code).toBe(0);
  // The same records with `video` pointing at the PNG frame folders crpo synth also wrote: the
  // frames then come from lib/video's folder decoder instead of the renderer.
  const lines = fs
    .readFileSync(path.join(dir, 'synth', 'test.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  expect(
    lines.every(
      (r) =>
        typeof r.meta?.frames_dir === 'string' && fs.statSync(path.join(dir, 'synth', r.meta.frames_dir)).isDirectory(),
    ),
  ).toBe(true);
  fs.writeFileSync(
    path.join(dir, 'synth', 'test-png.jsonl'),
    lines.map((r) => JSON.stringify({ ...r, video: r.meta.frames_dir })).join('\n') + '\n',
  );

  const run = async (
    out: string,
    data = 'synth/test.jsonl',
  ): Promise<{
    summary: { metrics: Record<string, { acc: number; p_acc: number; sensitivity: number | null; n_pairs: number }> };
    md: string;
    stdout: string;
  }> => {
    const r = await crpo([
      'eval',
      data,
      '--base-url',
      server.url,
      '--model',
      'mock-vl',
      '--out',
      out,
      '--bootstrap',
      '200',
      '--quiet',
    ]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    return {
      summary: JSON.parse(fs.readFileSync(path.join(dir, out, 'summary.json'), 'utf8')),
      md: fs.readFileSync(path.join(dir, out, 'results.md'), 'utf8'),
      stdout: r.stdout,
    };
  };

  mode = 'motion';
  const motion = await run('runs/motion');
  const md = motion.summary.metrics.moving_direction;
  expect(md.n_pairs).toBe(8);
  expect(md.p_acc).toBeGreaterThanOrEqual(0.875); // it reads the motion: both members right
  expect(md.sensitivity).toBeGreaterThanOrEqual(0.875);
  expect(motion.md).toMatch(/\| moving direction \| 8 \| 16 \| \d+\.\d \[\d+\.\d, \d+\.\d\] \| \d+\.\d \[/);
  expect(motion.md).toMatch(/\| static \| 8 \| 16 \|/);
  expect(motion.stdout).toContain(motion.md); // the table is printed too
  const fromPng = await run('runs/motion-png', 'synth/test-png.jsonl');
  expect(fromPng.summary.metrics).toEqual(motion.summary.metrics); // PNG folders decode to the rendered pixels

  mode = 'constant';
  const constant = await run('runs/constant');
  expect(constant.summary.metrics.moving_direction.p_acc).toBe(0);
  expect(constant.summary.metrics.moving_direction.sensitivity).toBe(0);
  expect(constant.summary.metrics.moving_direction.acc).toBeGreaterThan(0);
  expect(fs.readFileSync(path.join(dir, 'runs/constant/chart.png')).subarray(1, 4).toString()).toBe('PNG');
});
