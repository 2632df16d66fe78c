/**
 * `crpo reproduce` (lib/reproduce, lib/cli/commands/reproduce.ts): argument validation with the
 * standard messages, the seed spread, and a small end-to-end run on the synthetic DyBench
 * (two methods x three seeds, a few steps) that writes the table, summary and PNG and, when run
 * again, reuses every finished run instead of training it again.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import {
  REPRODUCE_DEFAULTS,
  REPRODUCE_NATIVE,
  REPRODUCE_NATIVE_QUICK,
  baseFingerprint,
  presetConfig,
  reproduce,
  runReproduceJob,
  spread,
  validateReproduceConfig,
  parseMethod,
} from '../../lib/reproduce';
import { configFromArgs, type ReproduceArgs } from '../../lib/cli/commands/reproduce';

const args = (over: Partial<ReproduceArgs> = {}): ReproduceArgs => ({
  out: 'x',
  quick: false,
  methods: 'grpo,crpo',
  seeds: '1,2,3',
  'batch-size': 8,
  'group-size': 8,
  lr: 0.02,
  policy: 'linear',
  'shortcut-p': 0.95,
  'data-seed': 1,
  'base-steps': 30,
  force: false,
  ...over,
});

describe('crpo reproduce arguments', () => {
  test('flags map onto the config; --quick lowers steps and split sizes', () => {
    const c = configFromArgs(args({ quick: true }));
    expect(c.methods).toEqual(['grpo', 'crpo']);
    expect(c.seeds).toEqual([1, 2, 3]);
    expect(c.steps).toBeLessThan(REPRODUCE_DEFAULTS.steps);
    expect(configFromArgs(args({ steps: 7 })).steps).toBe(7);
    expect(configFromArgs(args({ seeds: undefined })).seeds).toEqual(REPRODUCE_DEFAULTS.seeds);
    expect(REPRODUCE_DEFAULTS.seeds.length).toBeGreaterThanOrEqual(3);
  });

  test('presets: --preset native and --policy native take the native settings; explicit flags win; --quick shortens them', () => {
    const n = configFromArgs(
      args({
        policy: 'native',
        'batch-size': undefined,
        'group-size': undefined,
        lr: undefined,
        'base-steps': undefined,
      }),
    );
    expect(n).toMatchObject({
      policy: 'native',
      steps: REPRODUCE_NATIVE.steps,
      lr: REPRODUCE_NATIVE.lr,
      baseSteps: REPRODUCE_NATIVE.baseSteps,
      baseLr: REPRODUCE_NATIVE.baseLr,
      baseBatchSize: REPRODUCE_NATIVE.baseBatchSize,
      baseShortcutSteps: REPRODUCE_NATIVE.baseShortcutSteps,
      basePromptLm: REPRODUCE_NATIVE.basePromptLm,
      baseRecipe: 'capability',
      temperature: 1.5,
      nullOption: true,
      trainPairs: 100,
      seeds: [1, 2, 3],
    });
    expect(configFromArgs(args({ preset: 'native', policy: undefined, lr: undefined, quick: true }))).toMatchObject({
      policy: 'native',
      steps: REPRODUCE_NATIVE_QUICK.steps,
      evalPairs: REPRODUCE_NATIVE_QUICK.evalPairs,
    });
    expect(configFromArgs(args({ preset: 'native', policy: undefined, lr: 0.001, steps: 5 }))).toMatchObject({
      policy: 'native',
      lr: 0.001,
      steps: 5,
    });
    // The linear defaults are unchanged when no preset is named.
    expect(
      configFromArgs(args({ policy: undefined, lr: undefined, 'batch-size': undefined, 'base-steps': undefined })),
    ).toMatchObject({
      policy: 'linear',
      lr: REPRODUCE_DEFAULTS.lr,
      batchSize: REPRODUCE_DEFAULTS.batchSize,
      baseSteps: REPRODUCE_DEFAULTS.baseSteps,
      frames: 8,
      size: 32,
    });
    expect(() => configFromArgs(args({ preset: 'huge' }))).toThrow(
      "Expected one of linear, native for preset but received 'huge'",
    );
    expect(presetConfig('native', true).policy).toBe('native');
  });

  test('the base model fingerprint covers the warm start and data, not the RL settings', () => {
    const c = presetConfig('native', false);
    expect(baseFingerprint({ ...c, lr: 0.01, steps: 3, groupSize: 4, curveEvery: 1 })).toBe(baseFingerprint(c));
    expect(baseFingerprint({ ...c, baseLr: c.baseLr * 2 })).not.toBe(baseFingerprint(c));
    expect(baseFingerprint({ ...c, baseShortcutSteps: c.baseShortcutSteps + 1 })).not.toBe(baseFingerprint(c));
    expect(baseFingerprint({ ...c, basePromptLm: 0 })).not.toBe(baseFingerprint(c));
    expect(baseFingerprint({ ...c, baseRecipe: 'letter' })).not.toBe(baseFingerprint(c));
    expect(baseFingerprint({ ...c, temperature: 1 })).toBe(baseFingerprint(c));
    expect(baseFingerprint({ ...c, size: 16 })).not.toBe(baseFingerprint(c));
    // baseBatchSize 0 means batchSize: the same warm start either way.
    expect(baseFingerprint({ ...c, baseBatchSize: 0, batchSize: 16 })).toBe(
      baseFingerprint({ ...c, baseBatchSize: 16, batchSize: 16 }),
    );
  });

  test('method settings: crpo@norm=joint@crr=0 names the algorithm, the normalisation and the CRR weight', () => {
    expect(parseMethod('crpo')).toEqual({ algo: 'crpo' });
    expect(parseMethod('crpo@norm=joint@crr=0')).toEqual({ algo: 'crpo', norm: 'joint', crr: 0 });
    expect(parseMethod('grpo@norm=none')).toEqual({ algo: 'grpo', norm: 'none' });
    expect(() => parseMethod('crpo@norm=batch')).toThrow(/norm=per-branch\|joint\|none/);
    expect(() => parseMethod('crpo@crr=')).toThrow(/crr=<number>/);
    expect(() => parseMethod('crpo@lr=1')).toThrow(/crpo@lr=1/);
    expect(() => parseMethod('ppo@crr=1')).toThrow(/Expected one of .*crpo/);
    expect(() => validateReproduceConfig({ ...REPRODUCE_DEFAULTS, methods: ['crpo', 'crpo@crr=0'] })).not.toThrow();
  });

  test('bad values are refused with one message naming the field', () => {
    expect(() => configFromArgs(args({ seeds: '1,x' }))).toThrow(
      "Expected a comma-separated list of integers >= 0 for --seeds but received '1,x'",
    );
    const bad = (over: object) => () => validateReproduceConfig({ ...REPRODUCE_DEFAULTS, ...over });
    expect(bad({ methods: ['grpo', 'ppo'] })).toThrow(/^Expected one of .*crpo.* for methods but received 'ppo'/);
    expect(bad({ methods: ['grpo', 'grpo'] })).toThrow(
      "Expected a list without repeats for methods but received 'grpo,grpo'",
    );
    expect(bad({ seeds: [1, 1, 2] })).toThrow("Expected distinct seeds for seeds but received '1,1,2'");
    expect(bad({ steps: 0 })).toThrow('Expected an integer >= 1 for steps but received 0');
    expect(bad({ groupSize: 2.5 })).toThrow('Expected an integer for groupSize but received 2.5');
    expect(bad({ shortcutP: 1.5 })).toThrow('Expected a number in [0, 1] for shortcutP but received 1.5');
    expect(bad({ frames: 1 })).toThrow('Expected an integer >= 2 for frames but received 1');
    expect(bad({ policy: 'nope' })).toThrow(/^Expected one of .*linear.* for policy but received 'nope'/);
    expect(bad({ temperature: 0 })).toThrow('Expected a number in (0, 10] for temperature but received 0');
    expect(bad({ baseRecipe: 'words' })).toThrow(
      "Expected 'capability', 'letter' or 'starting-point' for baseRecipe but received 'words'",
    );
    try {
      bad({ steps: -1 })();
    } catch (e) {
      expect((e as { code: string }).code).toBe('ERR_CRPO_OUT_OF_RANGE');
    }
  });

  test('spread: mean and sample standard deviation over seeds', () => {
    expect(spread([0.5, 0.7, 0.9])).toEqual({
      mean: expect.closeTo(0.7, 12),
      sd: expect.closeTo(0.2, 12),
      min: 0.5,
      max: 0.9,
      n: 3,
    });
    expect(spread([0.4])).toEqual({ mean: 0.4, sd: 0, min: 0.4, max: 0.4, n: 1 });
    expect(spread([NaN])).toBeNull();
  });
});

describe('crpo reproduce end to end (small)', () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-reproduce-'));
  afterAll(() => fs.rmSync(out, { recursive: true, force: true }));
  const config = {
    out,
    methods: ['grpo', 'crpo'],
    seeds: [1, 2, 3],
    steps: 6,
    trainPairs: 6,
    evalPairs: 6,
    baseSteps: 4,
    curveEvery: 3,
  };

  test('trains every method x seed from one base model, writes the table, summary and plot; a rerun reuses the runs', async () => {
    const lines: string[] = [];
    const r = await reproduce(config, { log: (m) => lines.push(m) });
    expect(r.runs).toHaveLength(6);
    expect(r.summaries.map((s) => s.method)).toEqual(['base', 'grpo', 'crpo']);
    expect(r.table.split('\n')[0]).toBe(
      '| method | Acc | P-Acc | P-Acc RD | P-Acc MD | P-Acc ES | Sensitivity | Invariance | Static Acc | Colour-shortcut answers (lower is better) | Null-option answers |',
    );
    expect(r.table).toMatch(/\| \+ CRPO \| \d+\.\d ± \d+\.\d \|/);
    for (const s of r.summaries.slice(1)) {
      expect(s.seeds).toEqual([1, 2, 3]);
      expect(s.columns.p_acc!.n).toBe(3);
      // Curves: correctness at every step, held-out CRR at step 0 and at every checkpoint.
      expect(s.curve.filter((p) => p.correct !== null).map((p) => p.step)).toEqual([1, 2, 3, 4, 5, 6]);
      expect(s.curve.filter((p) => p.crr !== null).map((p) => p.step)).toEqual([0, 3, 6]);
    }
    const png = fs.readFileSync(r.plotPath);
    expect(png.subarray(1, 4).toString()).toBe('PNG');
    expect(fs.readFileSync(r.reportPath, 'utf8')).toContain(r.table);
    const again: string[] = [];
    const r2 = await reproduce(config, { log: (m) => again.push(m) });
    expect(again.filter((l) => l.includes('done earlier'))).toHaveLength(6);
    expect(r2.table).toBe(r.table);
    // Other RL settings, same warm start: the base model is reused, not trained again.
    const third: string[] = [];
    const r3 = await reproduce({ ...config, methods: ['grpo'], seeds: [1], lr: 0.01 }, { log: (m) => third.push(m) });
    expect(third.filter((l) => l.startsWith('base model: reused'))).toHaveLength(1);
    expect(third.filter((l) => l.includes('done earlier'))).toHaveLength(0);
    // ...and the run of other settings trains from the base model, not from the earlier run's checkpoint.
    expect(third.filter((l) => l.includes('resuming'))).toEqual([]);
    expect(r3.runs[0].curve.filter((p) => p.correct !== null)).toHaveLength(6);
    expect(r3.table.split('\n')[2]).toBe(r.table.split('\n')[2]); // the base model's row
  }, 90_000);
});

describe('crpo reproduce with runs in child processes (jobs)', () => {
  const out1 = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-reproduce-j1-'));
  const out2 = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-reproduce-j2-'));
  afterAll(() => [out1, out2].forEach((d) => fs.rmSync(d, { recursive: true, force: true })));
  const config = {
    methods: ['grpo', 'crpo'],
    seeds: [1, 2],
    steps: 4,
    trainPairs: 6,
    evalPairs: 6,
    baseSteps: 4,
    curveEvery: 2,
  };

  test('2 processes give the table of 1 process; a rerun reuses their results', async () => {
    const one = await reproduce({ ...config, out: out1 }, { log: () => undefined, jobs: 1 });
    const lines: string[] = [];
    const two = await reproduce({ ...config, out: out2 }, { log: (m) => lines.push(m), jobs: 2 });
    expect(lines.filter((l) => /^training 4 runs in 2 processes \(\d+ thread\(s\) each\)$/.test(l))).toHaveLength(1);
    expect(lines.filter((l) => /^(grpo|crpo) seed [12]: [\d.]+ s; held-out/.test(l))).toHaveLength(4); // the children's lines, passed on
    expect(two.table).toBe(one.table);
    expect(two.runs.map((r) => [r.method, r.seed, r.curve])).toEqual(one.runs.map((r) => [r.method, r.seed, r.curve]));
    const again: string[] = [];
    await reproduce({ ...config, out: out2 }, { log: (m) => again.push(m), jobs: 2 });
    expect(again.filter((l) => l.includes('done earlier'))).toHaveLength(4);
    expect(again.some((l) => l.startsWith('training '))).toBe(false);
    await expect(reproduce({ ...config, out: out2 }, { jobs: 0 })).rejects.toThrow(/jobs/);
  }, 180_000);

  test('a worker without the settings or the base model of its parent says which is missing', async () => {
    const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-reproduce-worker-'));
    try {
      await expect(runReproduceJob(empty, 'grpo', 1, false)).rejects.toThrow(
        /reproduce-config\.json: missing or not JSON/,
      );
      fs.copyFileSync(path.join(out1, 'reproduce-config.json'), path.join(empty, 'reproduce-config.json'));
      await expect(runReproduceJob(empty, 'grpo', 1, false)).rejects.toThrow(/no base model of these settings/);
    } finally {
      fs.rmSync(empty, { recursive: true, force: true });
    }
  });
});
