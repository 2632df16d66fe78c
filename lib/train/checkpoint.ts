/**
 * Run checkpoints for resume: `<out>/checkpoints/step-NNNNNN/` holds the policy's full state
 * (weights, optimiser, frozen reference) and `state.json` (step, data cursor, seed). A checkpoint
 * is written into a temporary folder, every file fsynced, then renamed into place, so a kill at
 * any moment leaves either the previous set or the new one; the newest `keepLast` are kept.
 * Also here: what a resume checks (state.json field by field, the weights digest, finite weights),
 * the run folder's lock (one trainer per --out), and what a checkpoint says about the prompts it
 * was trained with (the null option), which `crpo serve` puts in its model card.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { CrpoError } from '../errors';
import type { Policy } from '../policy/policy';

export interface TrainState {
  /** Steps completed. */
  step: number;
  /** Prompts consumed (data cursor = step * batchSize for the seeded epoch order). */
  cursor: number;
  seed: number;
  algo: string;
  /** sha256 of the weights at save time. */
  digest: string;
  /** Whether the prompts showed the null option ("None of the above"); absent in older checkpoints. */
  nullOption?: boolean;
}

const NAME = /^step-(\d{6,})$/;

function fsyncPath(p: string): void {
  try {
    const fd = fs.openSync(p, 'r');
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    /* some filesystems refuse to fsync a directory */
  }
}

export function checkpointDir(out: string): string {
  return path.join(out, 'checkpoints');
}

/** Complete checkpoints of a run, oldest first (temporary folders of a checkpoint being written are ignored). */
export function listCheckpoints(out: string): { step: number; dir: string }[] {
  const root = checkpointDir(out);
  if (!fs.existsSync(root)) return [];
  const list: { step: number; dir: string }[] = [];
  for (const name of fs.readdirSync(root)) {
    const full = path.join(root, name);
    const m = NAME.exec(name);
    if (m && fs.existsSync(path.join(full, 'state.json'))) list.push({ step: Number(m[1]), dir: full });
  }
  return list.sort((a, b) => a.step - b.step);
}

/** The state.json of a checkpoint, checked field by field; a damaged file is named with the fix. */
export function readState(dir: string): TrainState {
  const file = path.join(dir, 'state.json');
  if (!fs.existsSync(file))
    throw new CrpoError('ERR_CRPO_CHECKPOINT', `${dir}: not a training checkpoint (no state.json)`);
  const fix = `resume from an earlier checkpoint with --resume <folder>, or start over with --resume never`;
  let v: Partial<TrainState>;
  try {
    v = JSON.parse(fs.readFileSync(file, 'utf8')) as Partial<TrainState>;
  } catch (err) {
    throw new CrpoError(
      'ERR_CRPO_CHECKPOINT',
      `${file}: not valid JSON (${(err as Error).message}); the checkpoint ` + `is damaged: ${fix}`,
    );
  }
  const bad = (field: string, want: string): CrpoError =>
    new CrpoError(
      'ERR_CRPO_CHECKPOINT',
      `${file}: field '${field}' must be ${want}, got ` +
        `${JSON.stringify((v as Record<string, unknown>)?.[field])}; the checkpoint is damaged: ${fix}`,
    );
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw new CrpoError('ERR_CRPO_CHECKPOINT', `${file}: expected a JSON object; the checkpoint is damaged: ${fix}`);
  }
  for (const k of ['step', 'cursor'] as const)
    if (!Number.isInteger(v[k]) || (v[k] as number) < 0) throw bad(k, 'an integer >= 0');
  if (!Number.isInteger(v.seed)) throw bad('seed', 'an integer');
  if (typeof v.algo !== 'string' || v.algo === '') throw bad('algo', 'an algorithm name');
  if (typeof v.digest !== 'string') throw bad('digest', 'a hex digest string');
  if (v.nullOption !== undefined && typeof v.nullOption !== 'boolean') throw bad('nullOption', 'true or false');
  return v as TrainState;
}

/**
 * Refuses a resumed policy whose weights are not the ones state.json recorded (a flipped bit, a
 * file copied from another run): the digest saved with the checkpoint must match the loaded one.
 */
export function checkResumeDigest(dir: string, state: TrainState, loaded: string): void {
  if (state.digest === '' || loaded === '' || state.digest === loaded) return;
  throw new CrpoError(
    'ERR_CRPO_CHECKPOINT',
    `${path.join(dir, 'state.json')}: the weights in ${dir} do not match the digest saved with them (saved ` +
      `${state.digest.slice(0, 12)}..., loaded ${loaded.slice(0, 12)}...); ` +
      'the checkpoint is damaged: resume from an earlier checkpoint with --resume <folder>, or start over with ' +
      '--resume never',
  );
}

function readJson(file: string): unknown {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch {
    return undefined;
  }
}

/** The lock file of a run folder: which process writes into it. */
export const LOCK_FILE = '.lock';

interface LockInfo {
  pid: number;
  host: string;
  started: string;
  command: string;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Takes the lock of run folder `out` (creates `<out>/.lock` exclusively, holding pid, host, start
 * time and command) so that two trainers never write into one folder. A lock whose process is
 * gone (same host) is taken over. Returns the release function (also run at process exit), which
 * also removes the folder when this call created it and it is still empty.
 */
export function lockRunFolder(out: string): () => void {
  // A folder this run created and left empty (it failed before writing anything) is removed again.
  const created = !fs.existsSync(out);
  fs.mkdirSync(out, { recursive: true });
  const file = path.join(out, LOCK_FILE);
  const me: LockInfo = {
    pid: process.pid,
    host: os.hostname(),
    started: new Date().toISOString(),
    command: ['crpo', ...process.argv.slice(2)].join(' '),
  };
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fd = fs.openSync(file, 'wx');
      fs.writeFileSync(fd, JSON.stringify(me) + '\n');
      fs.closeSync(fd);
      let released = false;
      const release = (): void => {
        if (released) return;
        released = true;
        process.removeListener('exit', release);
        try {
          const cur = readJson(file) as LockInfo | undefined;
          if (!cur || cur.pid === process.pid) fs.rmSync(file, { force: true });
          if (created && fs.readdirSync(out).length === 0) fs.rmdirSync(out);
        } catch {
          /* the folder may be gone */
        }
      };
      process.on('exit', release);
      return release;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const held = readJson(file) as Partial<LockInfo> | undefined;
    const stale = held && Number.isInteger(held.pid) && held.host === me.host && !alive(held.pid as number);
    if (held && !stale && held.pid !== process.pid) {
      throw new CrpoError(
        'ERR_CRPO_RUN_LOCKED',
        `run folder ${out} is in use by pid ${held.pid} on ${held.host} (started ${held.started}: ${held.command}); ` +
          `wait for it to finish, stop it, or use another --out (if that process is gone, delete ${file})`,
      );
    }
    // A stale lock (its process is gone), an unreadable one (a crash mid-write) or our own: replace it.
    fs.rmSync(file, { force: true });
  }
  throw new CrpoError(
    'ERR_CRPO_RUN_LOCKED',
    `run folder ${out}: could not take the lock ${file}; another process ` + `keeps creating it`,
  );
}

/** Saves policy + state atomically as step-NNNNNN and prunes to the newest `keepLast`. */
export async function saveCheckpoint(
  out: string,
  policy: Policy,
  state: TrainState,
  keepLast: number,
): Promise<string> {
  const root = checkpointDir(out);
  fs.mkdirSync(root, { recursive: true });
  const final = path.join(root, `step-${String(state.step).padStart(6, '0')}`);
  const tmp = `${final}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  await policy.save(tmp);
  const fd = fs.openSync(path.join(tmp, 'state.json'), 'w');
  fs.writeFileSync(fd, JSON.stringify(state, null, 2) + '\n');
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  fsyncPath(tmp);
  fs.rmSync(final, { recursive: true, force: true });
  fs.renameSync(tmp, final);
  fsyncPath(root);
  const all = listCheckpoints(out);
  for (const c of all.slice(0, Math.max(0, all.length - keepLast))) fs.rmSync(c.dir, { recursive: true, force: true });
  return final;
}

/** The checkpoint to resume from: 'never' -> none, 'auto' -> newest in the run, else the given folder. */
export function resumeTarget(out: string, resume: string): string | undefined {
  if (resume === 'never') return undefined;
  if (resume === 'auto') {
    // Temporary folders left by a process killed while writing a checkpoint.
    const root = checkpointDir(out);
    if (fs.existsSync(root))
      for (const name of fs.readdirSync(root))
        if (name.includes('.tmp-')) fs.rmSync(path.join(root, name), { recursive: true, force: true });
    const all = listCheckpoints(out);
    return all.length ? all[all.length - 1].dir : undefined;
  }
  if (!fs.existsSync(path.join(resume, 'state.json')))
    throw new CrpoError('ERR_CRPO_CHECKPOINT', `--resume ${resume}: not a training checkpoint folder (no state.json)`);
  return resume;
}
