/**
 * `crpo train --nproc N`: starts N local worker processes with torchrun's environment contract
 * (MASTER_ADDR, MASTER_PORT, RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, GROUP_RANK), so a
 * worker cannot tell it from `torchrun --no-python --nproc-per-node N crpo ...`. Like torchrun's
 * local agent: when one worker fails the others are stopped and the launcher exits non-zero naming
 * the failed rank; SIGINT/SIGTERM are passed on to every worker.
 */
import { spawn, type ChildProcess } from 'child_process';
import * as net from 'net';
import * as os from 'os';
import { outOfRange } from '../errors';

export interface LaunchOptions {
  /** Number of worker processes (ranks) on this machine. */
  nproc: number;
  /** Arguments after the executable; default: this process's script and arguments. */
  args?: string[];
  /** Executable; default: this node binary, with this process's execArgv before `args`. */
  command?: string;
  execArgv?: string[];
  /** Extra environment for every worker (on top of process.env). */
  env?: Record<string, string | undefined>;
  masterAddr?: string;
  /** Default: a free port on masterAddr. */
  masterPort?: number;
  /** After the first failure, how long the other workers get to stop by themselves (default 3 s). */
  graceSeconds?: number;
  /** After SIGTERM, how long before SIGKILL (default 10 s). */
  killAfterSeconds?: number;
  /** Workers' stdout/stderr: 'inherit' (default) or 'ignore'. */
  stdio?: 'inherit' | 'ignore';
  /** Where the launcher's own lines go (default stderr). */
  log?: (line: string) => void;
}

export interface RankExit {
  rank: number;
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface LaunchResult {
  /** 0 when every rank exited 0; else the first failed rank's code (128+n for a signal). */
  exitCode: number;
  /** The first rank that failed, if any. */
  failedRank: number | null;
  ranks: RankExit[];
}

/** A TCP port that was free on `host` a moment ago (the usual race applies, as with torchrun). */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

const SIGNUM: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGSEGV: 11, SIGTERM: 15, SIGABRT: 6 };

function exitCodeOf(e: RankExit): number {
  if (e.code !== null) return e.code;
  return 128 + (e.signal ? (SIGNUM[e.signal] ?? 1) : 1);
}

function describeExit(e: RankExit): string {
  return e.signal ? `was killed by ${e.signal}` : `exited with code ${e.code}`;
}

/** The environment worker `rank` of `nproc` gets (exported for tests and docs). */
export function workerEnv(
  rank: number,
  nproc: number,
  masterAddr: string,
  masterPort: number,
  base: Record<string, string | undefined> = process.env,
): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(base)) if (v !== undefined) env[k] = v;
  Object.assign(env, {
    MASTER_ADDR: masterAddr,
    MASTER_PORT: String(masterPort),
    RANK: String(rank),
    LOCAL_RANK: String(rank),
    WORLD_SIZE: String(nproc),
    LOCAL_WORLD_SIZE: String(nproc),
    GROUP_RANK: '0',
    ROLE_RANK: String(rank),
    CRPO_LAUNCHER: '1',
  });
  Object.assign(env, coreShareEnv(nproc, base));
  // A launcher that is itself the malloc-relaunched child (lib/cli/relaunch.ts) passes on the pid
  // its own parent watch follows; the workers' parent is this launcher, so they follow it instead
  // (else every worker sees a "gone" parent at once and stops).
  if (env[RELAUNCH_PARENT_PID] !== undefined) env[RELAUNCH_PARENT_PID] = String(process.pid);
  return env;
}

/** The parent-pid variable of lib/cli/relaunch.ts followParent (lib/distributed cannot import lib/cli). */
const RELAUNCH_PARENT_PID = 'CRPO_RELAUNCH_PARENT_PID';

/**
 * The thread variables of one of `processes` processes sharing this machine's cores, as torchrun
 * sets OMP_NUM_THREADS; a variable already set in `base` is left to it.
 */
export function coreShareEnv(
  processes: number,
  base: Record<string, string | undefined> = process.env,
): Record<string, string> {
  const threads = String(Math.max(1, Math.floor(os.cpus().length / processes)));
  const env: Record<string, string> = {};
  for (const k of ['CRPO_NUM_THREADS', 'OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS']) if (!base[k]) env[k] = threads;
  return env;
}

/** Starts `nproc` workers and resolves when all have exited. */
export async function launchLocal(options: LaunchOptions): Promise<LaunchResult> {
  const { nproc } = options;
  if (!Number.isInteger(nproc) || nproc < 1 || nproc > 1024)
    throw outOfRange('nproc', 'an integer in [1, 1024]', nproc, 'launchLocal');
  const log = options.log ?? ((line: string) => process.stderr.write(line + '\n'));
  const masterAddr = options.masterAddr ?? '127.0.0.1';
  const masterPort = options.masterPort ?? (await freePort(masterAddr));
  const command = options.command ?? process.execPath;
  const args = options.command
    ? (options.args ?? [])
    : [...(options.execArgv ?? process.execArgv), ...(options.args ?? process.argv.slice(1))];
  const grace = (options.graceSeconds ?? 3) * 1000;
  const killAfter = (options.killAfterSeconds ?? 10) * 1000;

  const children: ChildProcess[] = [];
  const exits: (RankExit | undefined)[] = new Array(nproc).fill(undefined);
  let firstFailure: RankExit | null = null;
  let stopping = false;
  const timers: NodeJS.Timeout[] = [];

  const signalAll = (sig: NodeJS.Signals) => {
    children.forEach((c, r) => {
      if (!exits[r] && c.pid) {
        try {
          c.kill(sig);
        } catch {
          /* already gone */
        }
      }
    });
  };
  const stopAll = (why: string, delayMs: number) => {
    if (stopping) return;
    stopping = true;
    log(`crpo launch: ${why}`);
    timers.push(setTimeout(() => signalAll('SIGTERM'), delayMs));
    timers.push(setTimeout(() => signalAll('SIGKILL'), delayMs + killAfter));
  };

  const onSignal = (sig: NodeJS.Signals) => {
    // Terminal Ctrl-C already reached every worker; a signal sent to the launcher alone is passed on.
    signalAll(sig);
    stopAll(`received ${sig}; stopping ${nproc} workers`, killAfter);
  };
  const handlers: Array<[NodeJS.Signals, () => void]> = (['SIGINT', 'SIGTERM', 'SIGHUP'] as NodeJS.Signals[]).map(
    (s) => [s, () => onSignal(s)],
  );
  for (const [s, h] of handlers) process.on(s, h);

  try {
    await new Promise<void>((resolve, reject) => {
      let left = nproc;
      for (let rank = 0; rank < nproc; rank++) {
        const child = spawn(command, args, {
          stdio: options.stdio ?? 'inherit',
          env: workerEnv(rank, nproc, masterAddr, masterPort, { ...process.env, ...options.env }),
        });
        children.push(child);
        child.once('error', (err) => reject(err));
        child.once('exit', (code, signal) => {
          const e: RankExit = { rank, code, signal };
          exits[rank] = e;
          if ((code !== 0 || signal) && !firstFailure && !stopping) {
            firstFailure = e;
            stopAll(`rank ${rank} ${describeExit(e)}; stopping the other ranks`, grace);
          } else if ((code !== 0 || signal) && !firstFailure) {
            firstFailure = e;
          }
          if (--left === 0) resolve();
        });
      }
    });
  } finally {
    for (const t of timers) clearTimeout(t);
    for (const [s, h] of handlers) process.removeListener(s, h);
  }
  const ranks = exits as RankExit[];
  const failed = firstFailure as RankExit | null;
  return { exitCode: failed ? exitCodeOf(failed) || 1 : 0, failedRank: failed ? failed.rank : null, ranks };
}

/**
 * The one-line hook of a command with an `--nproc` option: when nproc > 1 and this process is not
 * already a worker (RANK unset), runs the same command line as nproc workers, sets the exit code,
 * and returns true (the command then returns); otherwise returns false and the command runs here.
 *   if (await launchIfRequested(argv.nproc)) return;
 */
export async function launchIfRequested(nproc: unknown, options: Omit<LaunchOptions, 'nproc'> = {}): Promise<boolean> {
  if (nproc === undefined || nproc === null) return false;
  if (typeof nproc !== 'number' || !Number.isInteger(nproc) || nproc < 1)
    throw outOfRange('--nproc', 'an integer >= 1', nproc, 'launch');
  if (nproc === 1 || process.env.RANK !== undefined) return false;
  const r = await launchLocal({ ...options, nproc });
  if (r.exitCode !== 0) {
    (options.log ?? ((l: string) => process.stderr.write(l + '\n')))(
      `crpo launch: failed: rank ${r.failedRank} ${describeExit(r.ranks[r.failedRank!])} (exit codes: ${r.ranks.map((e) => exitCodeOf(e)).join(', ')})`,
    );
  }
  process.exitCode = r.exitCode;
  return true;
}
