/**
 * The trainer end to end (lib/train): a run killed with SIGKILL at arbitrary moments and resumed
 * with `--resume auto` ends with weights, optimiser state and logs bitwise equal to an
 * uninterrupted run of the same seed; a non-finite step is skipped, logged, and never reaches a
 * checkpoint; a short CRPO run from a supervised base raises the reward and the held-out P-Acc;
 * every algorithm runs through the same loop.
 */
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { resolveConfig, type TrainConfig } from '../../lib/train/config';
import { sftBase } from '../../lib/train/base-model';
import { train } from '../../lib/train/trainer';
import { listCheckpoints } from '../../lib/train/checkpoint';

const ROOT = path.resolve(__dirname, '..', '..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-train-e2e-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const quiet = { log: () => undefined };
const small = (over: Record<string, unknown>): TrainConfig =>
  resolveConfig({
    overrides: {
      data: { pairs: 12, valPairs: 4 },
      batchSize: 4,
      groupSize: 4,
      progress: false,
      plots: false,
      resume: 'never',
      ...over,
    },
  });

/** metrics.jsonl without the wall-clock fields. */
function metricsWithoutTimes(dir: string): Record<string, unknown>[] {
  return fs
    .readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => {
      const v = JSON.parse(l) as Record<string, unknown>;
      for (const k of Object.keys(v)) if (/seconds|_per_s$/.test(k)) delete v[k];
      return v;
    });
}

const finalWeights = (out: string): Buffer => {
  const all = listCheckpoints(out);
  return fs.readFileSync(path.join(all[all.length - 1].dir, 'policy.safetensors'));
};

function runCli(
  args: string[],
  killWhen?: (out: string) => boolean,
  out?: string,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(
      process.execPath,
      [
        '-r',
        path.join(ROOT, 'scripts/ts-register.js'),
        '-e',
        `require(${JSON.stringify(path.join(ROOT, 'lib/cli/main.ts'))}).main(${JSON.stringify(args)})`,
      ],
      { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    let timer: NodeJS.Timeout | undefined;
    if (killWhen && out) {
      timer = setInterval(() => {
        if (killWhen(out)) {
          clearInterval(timer);
          child.kill('SIGKILL');
        }
      }, 5);
    }
    child.on('exit', (code, signal) => {
      if (timer) clearInterval(timer);
      resolve({ code, signal, stderr });
    });
  });
}

describe('resume', () => {
  it('a run killed with SIGKILL twice and resumed equals an uninterrupted run, bitwise', async () => {
    const common = {
      algo: 'crpo',
      steps: 60,
      saveEvery: 10,
      keepLast: 2,
      valEvery: 20,
      dumpEvery: 15,
      seed: 5,
      temperature: 2,
    };
    const ref = small({ ...common, out: path.join(tmp, 'uninterrupted') });
    await train(ref, quiet);

    const out = path.join(tmp, 'killed');
    const args = [
      'train',
      '--algo',
      'crpo',
      '--steps',
      '60',
      '--save-every',
      '10',
      '--keep-last',
      '2',
      '--val-every',
      '20',
      '--dump-every',
      '15',
      '--seed',
      '5',
      '--temperature',
      '2',
      '--batch-size',
      '4',
      '--group-size',
      '4',
      '--set',
      'data.pairs=12',
      '--set',
      'data.valPairs=4',
      '--set',
      'progress=false',
      '--set',
      'plots=false',
      '--out',
      out,
      '--resume',
      'auto',
    ];
    const stepOf = (o: string) => {
      const l = listCheckpoints(o);
      return l.length ? l[l.length - 1].step : 0;
    };
    // First kill as soon as the first checkpoint exists, the second between later checkpoints.
    const first = await runCli(args, (o) => stepOf(o) >= 10, out);
    const second = await runCli(
      args,
      (o) =>
        stepOf(o) >= 30 &&
        fs.existsSync(path.join(o, 'metrics.jsonl')) &&
        fs.readFileSync(path.join(o, 'metrics.jsonl'), 'utf8').split('\n').length > 36,
      out,
    );
    const last = await runCli(args);
    expect([first.signal, first.code, first.stderr.slice(-300)]).toEqual(['SIGKILL', null, expect.any(String)]);
    expect(second.signal === 'SIGKILL' || second.code === 0).toBe(true);
    expect(last.code).toBe(0);
    expect(last.stderr).toMatch(/resuming from .*step-0000\d0/);
    expect(finalWeights(out).equals(finalWeights(ref.out))).toBe(true);
    expect(metricsWithoutTimes(out)).toEqual(metricsWithoutTimes(ref.out));
    expect(fs.readFileSync(path.join(out, 'val.jsonl'), 'utf8')).toBe(
      fs.readFileSync(path.join(ref.out, 'val.jsonl'), 'utf8'),
    );
    expect(fs.readFileSync(path.join(out, 'rollouts.jsonl'), 'utf8')).toBe(
      fs.readFileSync(path.join(ref.out, 'rollouts.jsonl'), 'utf8'),
    );
    expect(listCheckpoints(out).map((c) => c.step)).toEqual([50, 60]);
  });
});

describe('non-finite steps', () => {
  it('are skipped, logged, and never reach a checkpoint', async () => {
    const c = small({ steps: 4, saveEvery: 1, keepLast: 10, out: path.join(tmp, 'nan') });
    const messages: string[] = [];
    const r = await train(c, {
      log: (m) => messages.push(m),
      beforeUpdate: (seqs, step) => {
        if (step === 2) seqs[0].advantage = NaN;
      },
    });
    expect(r.skippedSteps).toBe(1);
    expect(messages.some((m) => /step 3: non-finite loss or gradient .* update skipped/.test(m))).toBe(true);
    const lines = metricsWithoutTimes(c.out);
    expect(lines.map((l) => l.skipped)).toEqual([false, false, true, false]);
    expect(lines[2].loss).toBe('NaN');
    const state = (s: number) =>
      JSON.parse(fs.readFileSync(path.join(c.out, 'checkpoints', `step-00000${s}`, 'state.json'), 'utf8')).digest;
    expect(state(3)).toBe(state(2)); // the skipped step changed nothing
    expect(state(4)).not.toBe(state(3));
    const w = fs.readFileSync(path.join(c.out, 'checkpoints', 'step-000004', 'policy.safetensors'));
    const header = Number(w.readBigUInt64LE(0));
    const values = new Float64Array(w.buffer.slice(w.byteOffset + 8 + header, w.byteOffset + w.length));
    expect(values.every(Number.isFinite)).toBe(true);
  });
});

describe('learning', () => {
  it('a short CRPO run from a supervised base raises the reward and the held-out P-Acc', async () => {
    const base = path.join(tmp, 'base');
    const overrides = {
      algo: 'crpo',
      steps: 120,
      lr: 0.02,
      temperature: 2,
      valEvery: 0,
      progress: false,
      plots: true,
      resume: 'never',
      out: path.join(tmp, 'learn'),
      data: { valPairs: 20 },
    };
    await sftBase(resolveConfig({ overrides }), { steps: 30, batchSize: 16, lr: 0.05, nullOption: true, out: base });
    const c = resolveConfig({ overrides: { ...overrides, policy: { kind: 'linear', init: base } } });
    const r = await train(c, quiet);
    const m = metricsWithoutTimes(c.out);
    const avg = (xs: Record<string, unknown>[]) =>
      xs.reduce((a, l) => a + Number(l['orig/reward']) + Number(l['cf/reward']), 0) / xs.length;
    expect(avg(m.slice(-30))).toBeGreaterThan(avg(m.slice(0, 30)) + 0.3);
    const [v0, v1] = [r.validation[0], r.validation[r.validation.length - 1]];
    expect(v1.p_acc).toBeGreaterThan(v0.p_acc + 0.05);
    expect(v1.sensitivity!).toBeGreaterThan(v0.sensitivity!);
    expect(r.plots.map((p) => path.basename(p))).toEqual(['training.png', 'validation.png']);
    expect(fs.readFileSync(r.plots[0]).subarray(1, 4).toString()).toBe('PNG');
  });
});

describe('every algorithm runs through the same loop', () => {
  it.each(['grpo', 'grpo-2g', 't-grpo', 'arrowrl', 'crpo-no-dual', 'crpo'])('%s', async (algo) => {
    const c = small({
      algo,
      steps: 3,
      out: path.join(tmp, `algo-${algo}`),
      data: { pairs: 4, valPairs: 2 },
      filterZeroVariance: algo === 'crpo',
    });
    await train(c, quiet);
    const m = metricsWithoutTimes(c.out);
    expect(m).toHaveLength(3);
    const trained = algo === 'crpo' ? undefined : algo === 'grpo-2g' ? 4 * 8 : 4 * 4;
    if (trained !== undefined) expect(m[0].sequences).toBe(trained);
    expect(typeof m[0]['orig/correct']).toBe('number');
    expect(fs.existsSync(path.join(c.out, 'config.yaml'))).toBe(true);
  });
});
