/**
 * Training commands run in a child process started with glibc malloc settings that keep freed
 * memory in the process: one arena, an mmap threshold of 32 MiB and a trim threshold of 1 GiB.
 * glibc reads them only at process start (the torch addon's own mallopt call at load time comes
 * after Node's threads already have arenas of their own, and gets part of the effect). With
 * glibc's defaults a training step maps and first-touches its activations again at every step:
 * measured with the native policy, `crpo reproduce --preset native --quick --methods crpo
 * --seeds 500` took 27.7 s with 1.08 M minor page faults, and 16.6 s with 0.14 M in a process
 * started with these settings, with identical results (docs/training.md, "Memory allocator").
 * CRPO_MALLOC=default, or any of the variables already set, keeps the process as it is. The
 * child ends when the parent is gone, even when the parent was killed with SIGKILL (followParent).
 */
import { spawn } from 'child_process';
import { Worker } from 'worker_threads';

/** The settings, as the environment variables glibc reads at start-up. */
export const TRAINING_MALLOC_ENV: Readonly<Record<string, string>> = {
  MALLOC_ARENA_MAX: '1',
  MALLOC_MMAP_THRESHOLD_: String(32 << 20),
  MALLOC_TRIM_THRESHOLD_: String(1 << 30),
};

/** Commands that train (or start processes that do). */
export const TRAINING_COMMANDS: ReadonlySet<string> = new Set(['train', 'sft', 'reproduce', 'demo', 'bench']);

/** Marks the child, so that it does not start another. */
const RELAUNCHED = 'CRPO_MALLOC_RELAUNCHED';
/** The parent's pid, which the child watches: the child ends when the parent is gone (even by kill -9). */
const PARENT_PID = 'CRPO_RELAUNCH_PARENT_PID';
/** How often the child looks for its parent, ms. */
const PARENT_POLL_MS = 500;

/** Whether `crpo <args>` should run in a child process with TRAINING_MALLOC_ENV. */
export function needsMallocRelaunch(
  args: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
  platform: string = process.platform,
): boolean {
  if (platform !== 'linux' || env.CRPO_MALLOC === 'default' || env[RELAUNCHED]) return false;
  if (Object.keys(TRAINING_MALLOC_ENV).some((k) => env[k] !== undefined)) return false;
  const command = args.find((a) => !a.startsWith('-'));
  if (command === undefined || !TRAINING_COMMANDS.has(command)) return false;
  return !args.includes('--help') && !args.includes('-h');
}

/** The child's environment: this one plus the malloc settings. */
export function relaunchEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  return { ...env, ...TRAINING_MALLOC_ENV, [RELAUNCHED]: '1', [PARENT_PID]: String(process.pid) };
}

/**
 * In the relaunched child: when the parent is gone (killed with SIGKILL, which it cannot pass on),
 * this process is reparented; it then sends itself SIGTERM, as a terminal's kill would, so the
 * trainer stops the way it stops on Ctrl-C, and SIGKILL 10 s later if it is still running. The
 * watch runs in a worker thread: a training step can keep the main thread busy for seconds, and
 * the worker's timers run regardless. The worker does not keep the process alive.
 */
export function followParent(env: NodeJS.ProcessEnv = process.env): boolean {
  const parent = Number(env[PARENT_PID]);
  if (!env[RELAUNCHED] || !Number.isInteger(parent) || parent <= 1) return false;
  const watcher = new Worker(PARENT_WATCH, { eval: true, workerData: { parent, pollMs: PARENT_POLL_MS } });
  watcher.unref();
  watcher.on('error', () => undefined); // a watcher that cannot run leaves the training as it is
  return true;
}

/** The watcher thread (plain JS, run with eval): polls the parent pid, then SIGTERM and a SIGKILL deadline. */
const PARENT_WATCH = `
const { workerData } = require('worker_threads');
const fs = require('fs');
const timer = setInterval(() => {
  if (process.ppid === workerData.parent) return;
  clearInterval(timer);
  try { fs.writeSync(2, 'crpo: the launching process (pid ' + workerData.parent + ') is gone; stopping\\n'); } catch (e) {}
  setTimeout(() => process.kill(process.pid, 'SIGKILL'), 10000);
  process.kill(process.pid, 'SIGTERM');
}, workerData.pollMs);
`;

/**
 * Runs `script <args>` again in a child with the malloc settings when the command trains (see
 * needsMallocRelaunch) and returns true; this process then mirrors the child: SIGINT, SIGTERM
 * and SIGHUP sent to it are passed on, and it exits with the child's code or signal. Returns
 * false (nothing started) otherwise.
 */
export function relaunchWithTrainingMalloc(script: string, args: readonly string[]): boolean {
  followParent();
  if (!needsMallocRelaunch(args)) return false;
  const child = spawn(process.execPath, [...process.execArgv, script, ...args], {
    stdio: 'inherit',
    env: relaunchEnv(),
  });
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  // A signal sent to this process alone is passed on; a terminal's Ctrl-C reaches the child
  // directly too, so it may arrive twice (the trainer's and the ranks' handlers act once).
  const pass = (sig: NodeJS.Signals) => {
    if (child.exitCode === null && child.signalCode === null) child.kill(sig);
  };
  for (const sig of signals) process.on(sig, pass);
  child.on('error', (err) => {
    process.stderr.write(
      `crpo: could not start the training process (${err.message}); CRPO_MALLOC=default runs it in this process\n`,
    );
    process.exit(2);
  });
  child.on('exit', (code, signal) => {
    for (const sig of signals) process.removeListener(sig, pass);
    if (signal) process.kill(process.pid, signal);
    else process.exit(code ?? 1);
  });
  return true;
}
