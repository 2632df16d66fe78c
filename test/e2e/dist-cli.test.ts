/**
 * `crpo dist check --nproc 2` as a user runs it: the local launcher starts two workers with the
 * torchrun environment contract, they join a Gloo group on 127.0.0.1 and check all-reduce,
 * broadcast and barrier against values each can compute alone.
 */
import { spawnSync, type SpawnSyncReturns } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { distUnavailable } from '../helpers/dist-ranks';
import { skipIf } from '../helpers/skip';

const root = path.resolve(__dirname, '../..');

// Skipped, with the reason in the test name, when the torch addon lacks process groups.
const skipReason = distUnavailable();
const d = skipIf(skipReason).describe;

/** `crpo <args>` as a user runs it outside any launch: no torchrun or Slurm variables inherited. */
function crpo(args: string[], timeout = 100000): SpawnSyncReturns<string> {
  const env = { ...process.env };
  for (const k of ['RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT', 'SLURM_PROCID', 'SLURM_NTASKS'])
    delete env[k];
  return spawnSync(
    process.execPath,
    ['-r', path.join(root, 'scripts/ts-register.js'), path.join(root, 'test/fixtures/eval-cli.js'), ...args],
    { cwd: root, env, encoding: 'utf8', timeout },
  );
}

d('crpo dist check', () => {
  it('--nproc 2: both ranks check out, exit 0', () => {
    const r = crpo(['dist', 'check', '--nproc', '2', '--size', '10000', '--iters', '2']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const lines = r.stdout.trim().split('\n').sort();
    expect(lines).toHaveLength(2);
    lines.forEach((l, rank) =>
      expect(l).toMatch(
        new RegExp(
          `^rank ${rank}/2 \\(local ${rank}, gloo on cpu, crpo, master 127\\.0\\.0\\.1:\\d+, joined in \\d+ ms\\): all-reduce sum/mean/max, broadcast, barrier: ok; all-reduce of 0\\.0 MiB: median`,
        ),
      ),
    );
  }, 110000);

  it('crpo train --nproc 2: rank 0 alone reports the run (one header, one summary)', () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-dist-train-cli-'));
    try {
      const r = crpo([
        'train',
        '--nproc',
        '2',
        '--steps',
        '2',
        '--set',
        'data.pairs=4',
        '--set',
        'data.valPairs=4',
        '--out',
        out,
      ]);
      expect(r.status).toBe(0);
      expect(r.stderr.split('\n').filter((l) => l.startsWith('crpo train: '))).toEqual([
        expect.stringMatching(/, 2 ranks, policy linear -> /),
      ]);
      expect(r.stdout.split('\n').filter((l) => l.startsWith('run folder: '))).toHaveLength(1);
      expect(r.stdout.split('\n').filter((l) => l.startsWith('validation '))).toHaveLength(1);
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  }, 110000);

  it('crpo sft --nproc 2: rank 0 alone reports, the time budget stops both ranks at one step', () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-dist-sft-cli-'));
    try {
      const r = crpo([
        'sft',
        '--nproc',
        '2',
        '--max-seconds',
        '4',
        '--batch-size',
        '8',
        '--test-pairs',
        '2',
        '--quiet',
        '--out',
        out,
      ]);
      expect(r.status).toBe(0);
      expect(r.stderr.split('\n').filter((l) => l.startsWith('crpo sft: '))).toEqual([
        'crpo sft: 2 ranks, 8 clips per step in all',
      ]);
      const trained = r.stdout.split('\n').filter((l) => l.startsWith('trained '));
      expect(trained).toHaveLength(1);
      const report = JSON.parse(fs.readFileSync(path.join(out, 'sft-report.json'), 'utf8'));
      expect(report.steps).toBeGreaterThan(0);
      expect(report.trainItems).toBe(report.steps * 8);
      expect(report.options.dist).toBeUndefined();
      expect(fs.existsSync(path.join(out, 'checkpoint', 'policy.json'))).toBe(true);
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  }, 110000);

  it('an unknown action is a one-line usage error', () => {
    const r = crpo(['dist', 'frob']);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/crpo: Invalid values:\n\s+Argument: action, Given: "frob", Choices: "check"/);
  });
});
