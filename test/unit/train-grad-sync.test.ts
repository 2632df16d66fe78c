/**
 * The trainer refuses, on more than one process, a policy kind whose train step does not average
 * gradients over the ranks (Policy.syncsGradients, lib/train/trainer.ts requireGradientSync):
 * otherwise every rank trains its own replica and rank 0 saves a model trained on 1/N of the data.
 * The kinds that do synchronise (linear, native, qwen) declare it, and
 * `crpo train --policy qwen --init <golden folder> --nproc 2` trains (issue 19).
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { hasAddon } from '../../lib/native';
import { POLICY_KINDS, type Policy } from '../../lib/policy/policy';
import { createLinearPolicy } from '../../lib/policy/linear';
import { resolveConfig } from '../../lib/train/config';
import { requireGradientSync, train } from '../../lib/train/trainer';
import { GOLDEN_ROOT, goldenSkipReason } from '../numerics/golden-qwen-helpers';
import { skipIf } from '../helpers/skip';

const ROOT = path.resolve(__dirname, '..', '..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-grad-sync-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A linear policy that does not declare gradient synchronisation, under its own kind name. */
let disposed = 0;
POLICY_KINDS.register('test-unsynced', async (o) => {
  const inner = await createLinearPolicy({ init: o.init, resumeFrom: o.resumeFrom });
  return new Proxy(inner as Policy, {
    get(target, key, receiver) {
      if (key === 'kind') return 'test-unsynced';
      if (key === 'syncsGradients') return undefined;
      if (key === 'dispose')
        return () => {
          disposed++;
          target.dispose();
        };
      const v = Reflect.get(target, key, receiver) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
});

const config = (out: string) =>
  resolveConfig({
    overrides: {
      policy: { kind: 'test-unsynced' },
      data: { pairs: 4, valPairs: 0, val: '' },
      steps: 1,
      batchSize: 2,
      groupSize: 2,
      progress: false,
      plots: false,
      resume: 'never',
      out,
    },
  });
const twoRanks = { rank: 0, worldSize: 2, allReduceSum: async (v: number[]) => v.map((x) => 2 * x) };
const REFUSAL = 'does not synchronise gradients across processes, so 2 processes would train 2 diverging replicas';
const FIX = 'run it on one process (no --nproc, torchrun or srun with more than one task)';
const MESSAGE = `policy kind 'test-unsynced' ${REFUSAL}; ${FIX}`;

describe('policies without gradient synchronisation on several processes', () => {
  test('train() on 2 ranks refuses the kind before any step, naming it and the world size', async () => {
    const out = path.join(tmp, 'two');
    disposed = 0;
    const run = train(config(out), { dist: twoRanks, log: () => undefined });
    await expect(run).rejects.toMatchObject({ code: 'ERR_CRPO_DIST_NO_GRAD_SYNC', message: MESSAGE });
    expect(disposed).toBe(1);
    expect(fs.existsSync(path.join(out, 'metrics.jsonl'))).toBe(false);
  });

  test('the same kind trains on one process', async () => {
    const r = await train(config(path.join(tmp, 'one')), { log: () => undefined });
    expect(r.steps).toBe(1);
  });

  test('linear and native declare that they synchronise; requireGradientSync lets them through', async () => {
    const linear = await createLinearPolicy({});
    expect(linear.syncsGradients).toBe(true);
    expect(() => requireGradientSync(linear, 4)).not.toThrow();
    if (!hasAddon('torch')) {
      process.stdout.write('native policy part skipped: the torch addon is not built (npm run build:torch)\n');
      return;
    }
    const texts = ['Is the ball moving? A. yes B. no'];
    const native = await POLICY_KINDS.get('native')({ seed: 0, preset: 'tiny', texts });
    try {
      expect(native.syncsGradients).toBe(true);
      expect(() => requireGradientSync(native, 2)).not.toThrow();
    } finally {
      native.dispose();
    }
  });

  test('a kind without the declaration passes on one process and is refused on two', async () => {
    const p = await POLICY_KINDS.get('test-unsynced')({ seed: 0 });
    disposed = 0;
    expect(() => requireGradientSync(p, 1)).not.toThrow();
    expect(disposed).toBe(0);
    expect(() => requireGradientSync(p, 2)).toThrow(MESSAGE);
    expect(disposed).toBe(1);
  });

  const reason = goldenSkipReason('qwen3_vl');
  const title = `crpo train --policy qwen --nproc 2 trains, rank 0 writing the run folder`;
  skipIf(reason).it(
    title,
    () => {
      const env = { ...process.env };
      const launcherVars = ['RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT', 'SLURM_PROCID'];
      launcherVars.push('SLURM_NTASKS');
      for (const k of launcherVars) delete env[k];
      const out = path.join(tmp, 'qwen');
      const cli = ['-r', path.join(ROOT, 'scripts/ts-register.js'), path.join(ROOT, 'test/fixtures/eval-cli.js')];
      const args = [
        'train',
        '--policy',
        'qwen',
        '--init',
        path.join(GOLDEN_ROOT, 'qwen3_vl'),
        '--nproc',
        '2',
        '--steps',
        '1',
        '--data',
        'synthetic',
        '--val-data',
        '',
        '--set',
        'data.frames=4',
        '--set',
        'data.size=64',
        '--set',
        'data.pairs=4',
        '--set',
        'batchSize=2',
        '--set',
        'groupSize=2',
        '--out',
        out,
      ];
      const r = spawnSync(process.execPath, [...cli, ...args], { cwd: ROOT, env, encoding: 'utf8', timeout: 100000 });
      expect([r.status, r.stderr]).toEqual([0, expect.not.stringContaining(REFUSAL)]);
      const lines = fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n');
      expect(lines).toHaveLength(1);
      expect(JSON.parse(lines[0])).toMatchObject({ step: 1, sequences: expect.any(Number) });
    },
    110000,
  );
});
