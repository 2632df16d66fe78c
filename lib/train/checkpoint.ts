/**
 * Run checkpoints for resume: `<out>/checkpoints/step-NNNNNN/` holds the policy's full state
 * (weights, optimiser, frozen reference) and `state.json` (step, data cursor, seed). A checkpoint
 * is written into a temporary folder, every file fsynced, then renamed into place, so a kill at
 * any moment leaves either the previous set or the new one; the newest `keepLast` are kept.
 */
import * as fs from 'fs';
import * as path from 'path';
import { CrpoError } from '../errors';
import type { Policy } from '../rollout/policy';

export interface TrainState {
  /** Steps completed. */
  step: number;
  /** Prompts consumed (data cursor = step * batchSize for the seeded epoch order). */
  cursor: number;
  seed: number;
  algo: string;
  /** sha256 of the weights at save time. */
  digest: string;
}

const NAME = /^step-(\d{6,})$/;

function fsyncPath(p: string): void {
  try {
    const fd = fs.openSync(p, 'r');
    try { fs.fsyncSync(fd); } finally { fs.closeSync(fd); }
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

export function readState(dir: string): TrainState {
  const file = path.join(dir, 'state.json');
  if (!fs.existsSync(file)) throw new CrpoError('ERR_CRPO_CHECKPOINT', `${dir}: not a training checkpoint (no state.json)`);
  return JSON.parse(fs.readFileSync(file, 'utf8')) as TrainState;
}

/** Saves policy + state atomically as step-NNNNNN and prunes to the newest `keepLast`. */
export async function saveCheckpoint(out: string, policy: Policy, state: TrainState, keepLast: number): Promise<string> {
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
    if (fs.existsSync(root)) for (const name of fs.readdirSync(root)) if (name.includes('.tmp-')) fs.rmSync(path.join(root, name), { recursive: true, force: true });
    const all = listCheckpoints(out);
    return all.length ? all[all.length - 1].dir : undefined;
  }
  if (!fs.existsSync(path.join(resume, 'state.json'))) throw new CrpoError('ERR_CRPO_CHECKPOINT', `--resume ${resume}: not a training checkpoint folder (no state.json)`);
  return resume;
}
