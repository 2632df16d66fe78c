/**
 * `crpo demo` (lib/train/demo.ts) with the linear policy, a few steps: one base row and one row
 * per algorithm holding every seed's final validation; the table prints mean ± sd over seeds.
 * The native preset's numbers are measured by running `crpo demo` (README); here the plumbing.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { DEMO_PRESETS, formatDemoTable, meanSd, runDemo } from '../../lib/train/demo';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-demo-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('runDemo', () => {
  test('linear policy, 2 algorithms x 2 seeds: a base row, one row per algorithm with a run per seed', async () => {
    const log: string[] = [];
    const rows = await runDemo({
      out: tmp,
      policy: 'linear',
      steps: 4,
      algos: ['crpo', 'grpo'],
      seeds: [0, 1],
      log: (m) => log.push(m),
    });
    expect(rows.map((r) => r.model)).toEqual(['base (SFT)', '+ crpo', '+ grpo']);
    expect(rows.map((r) => r.runs.length)).toEqual([1, 2, 2]);
    for (const r of rows.slice(1)) for (const v of r.runs) expect(v.step).toBe(4);
    for (const dir of ['crpo-seed0', 'crpo-seed1', 'grpo-seed0', 'grpo-seed1'])
      expect(fs.existsSync(path.join(tmp, dir, 'metrics.jsonl'))).toBe(true);
    const table = formatDemoTable(rows);
    const header = table
      .split('\n')[0]
      .split('|')
      .map((h) => h.trim());
    expect(header).toEqual([
      'model',
      'runs',
      'Acc',
      'P-Acc',
      'dyn P-Acc',
      'static Acc',
      'sensitivity',
      'invariance',
      'colour shortcut',
    ]);
    expect(table).toMatch(/\+ crpo\s+\|\s+2 \|\s+\d+\.\d ± \d+\.\d/);
    expect(log.some((l) => l.startsWith('3/3 post-training 4/4: grpo, seed 1, 4 steps'))).toBe(true);
  }, 120_000);

  test('presets: native is the default demo; its RL budget and base phases are stated', () => {
    expect(DEMO_PRESETS.native.seeds).toEqual([1, 2, 3]);
    expect(DEMO_PRESETS.native.capabilitySteps).toBeGreaterThan(0);
    expect(DEMO_PRESETS.native.shortcutSteps).toBeGreaterThan(0);
    expect(DEMO_PRESETS.native.baseRecipe).toBe('starting-point');
    expect(DEMO_PRESETS.linear.linearBaseSteps).toBeGreaterThan(0);
  });
});

describe('meanSd', () => {
  test('sample standard deviation; nulls and non-finite values left out; null when nothing is left', () => {
    expect(meanSd([1, 2, 3])).toEqual({ mean: 2, sd: 1, n: 3 });
    expect(meanSd([0.5, null, NaN])).toEqual({ mean: 0.5, sd: 0, n: 1 });
    expect(meanSd([null])).toBeNull();
  });
});
