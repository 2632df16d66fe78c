/**
 * The CLI's training-process relaunch (lib/cli/relaunch.ts): which commands run in a child started
 * with the glibc malloc variables, and, through a probe script, that the child gets them and the
 * parent ends as the child did (exit code, or the same signal), and the child ends when the parent
 * is killed with SIGKILL.
 */
import { spawn, spawnSync } from 'child_process';
import * as path from 'path';
import { TRAINING_MALLOC_ENV, needsMallocRelaunch, relaunchEnv } from '../../lib/cli/relaunch';

const root = path.resolve(__dirname, '../..');
const probe = path.join(root, 'test/fixtures/relaunch-probe.ts');
const clean = Object.fromEntries(
  Object.entries(process.env).filter(
    ([k]) => !k.startsWith('MALLOC_') && k !== 'CRPO_MALLOC' && k !== 'CRPO_MALLOC_RELAUNCHED',
  ),
);

function runProbe(args: string[], env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(process.execPath, ['-r', path.join(root, 'scripts/ts-register.js'), probe, ...args], {
    cwd: root,
    env: { ...clean, ...env },
    encoding: 'utf8',
    timeout: 60_000,
  });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  return { status: r.status, signal: r.signal, out: line ? JSON.parse(line) : null, stderr: r.stderr };
}

describe('training-process relaunch', () => {
  test('training commands relaunch; other commands, --help, CRPO_MALLOC=default, a set variable or the child itself do not', () => {
    for (const cmd of ['train', 'sft', 'reproduce', 'demo'])
      expect(needsMallocRelaunch([cmd, '--steps', '2'], clean, 'linux')).toBe(true);
    expect(needsMallocRelaunch(['--verbose', 'train'], clean, 'linux')).toBe(true);
    for (const cmd of ['doctor', 'eval', 'serve', 'synth', 'route', 'dybench', 'dist'])
      expect(needsMallocRelaunch([cmd], clean, 'linux')).toBe(false);
    expect(needsMallocRelaunch([], clean, 'linux')).toBe(false);
    expect(needsMallocRelaunch(['train', '--help'], clean, 'linux')).toBe(false);
    expect(needsMallocRelaunch(['train'], { ...clean, CRPO_MALLOC: 'default' }, 'linux')).toBe(false);
    expect(needsMallocRelaunch(['train'], { ...clean, MALLOC_ARENA_MAX: '4' }, 'linux')).toBe(false);
    expect(needsMallocRelaunch(['train'], relaunchEnv(clean), 'linux')).toBe(false);
    expect(needsMallocRelaunch(['train'], clean, 'darwin')).toBe(false);
    expect(relaunchEnv(clean)).toMatchObject(TRAINING_MALLOC_ENV);
  });

  test('the child runs with the malloc variables and the parent exits with its code', () => {
    const r = runProbe(['train', '3']);
    expect(r.status).toBe(3);
    expect(r.out).toEqual({ pid: expect.any(Number), relaunched: '1', arenaMax: '1', trim: String(1 << 30) });
    const direct = runProbe(['doctor', '0']);
    expect(direct.status).toBe(0);
    expect(direct.out.relaunched).toBeNull();
    expect(direct.out.arenaMax).toBeNull();
    const off = runProbe(['train', '0'], { CRPO_MALLOC: 'default' });
    expect(off.out.relaunched).toBeNull();
  }, 90_000);

  test('a child ended by a signal ends the parent with the same signal', () => {
    const r = runProbe(['train', 'SIGTERM']);
    expect(r.out.relaunched).toBe('1');
    expect(r.status).toBeNull();
    expect(r.signal).toBe('SIGTERM');
  }, 90_000);

  test('the child ends when its parent is killed with SIGKILL, even while its main thread is busy', async () => {
    const parent = spawn(process.execPath, ['-r', path.join(root, 'scripts/ts-register.js'), probe, 'train', 'busy'], {
      cwd: root,
      env: clean,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '',
      err = '';
    parent.stderr.on('data', (d) => {
      err += String(d);
    });
    const childPid = await new Promise<number>((resolve, reject) => {
      parent.stdout.on('data', (d) => {
        out += String(d);
        const line = out.split('\n').find((l) => l.startsWith('{'));
        if (line) resolve((JSON.parse(line) as { pid: number }).pid);
      });
      parent.on('exit', () => reject(new Error(`probe ended before its child reported: ${err}`)));
    });
    expect(childPid).not.toBe(parent.pid);
    parent.kill('SIGKILL');
    const alive = (pid: number) => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    // The child polls its parent every 500 ms; it is given up to 20 s to end.
    for (let i = 0; i < 200 && alive(childPid); i++) await new Promise((r) => setTimeout(r, 100));
    const stillAlive = alive(childPid);
    if (stillAlive) process.kill(childPid, 'SIGKILL');
    expect(stillAlive).toBe(false);
    expect(err).toMatch(/the launching process \(pid \d+\) is gone; stopping/);
  }, 60_000);
});
