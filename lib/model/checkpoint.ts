/**
 * Policy checkpoints: a folder with `model.safetensors` (weights, F32), `optimizer.safetensors`
 * (AdamW moments, F32) and `policy.json` (format, config, tokenizer, sampling-RNG state, optimizer
 * step, byte sizes of the two tensor files, caller metadata). The folder is written complete under
 * a temporary name (every file fsynced) and renamed into place, so a crash leaves either the old
 * checkpoint or the new one. Loading checks the manifest, then every tensor name, dtype and
 * shape against the model the config builds, before any weight is copied. Resuming from a
 * checkpoint continues bit for bit (weights, moments, step and RNG state are all restored).
 */
import * as fs from 'fs';
import * as path from 'path';
import { CrpoError, invalidArg } from '../errors';
import { writeFileAtomicSync } from '../data/jsonl';
import type { NativePolicyTensor } from '../native';
import { resolvePolicyConfig, type PolicyConfig } from './config';
import { PolicyModel } from './policy';
import { SafetensorsFile, writeSafetensors } from './safetensors';
import { Tokenizer } from './tokenizer';

export const CHECKPOINT_FORMAT = 'crpo-policy-v1';
export const WEIGHTS_FILE = 'model.safetensors';
export const OPTIMIZER_FILE = 'optimizer.safetensors';
export const MANIFEST_FILE = 'policy.json';

export interface CheckpointManifest {
  format: typeof CHECKPOINT_FORMAT;
  config: PolicyConfig;
  tokenizer: ReturnType<Tokenizer['toJSON']>;
  /** Optimizer steps taken. */
  step: number;
  /** Sampling generator state, base64. */
  rng: string;
  files: {
    weights: { name: string; bytes: number; tensors: number };
    optimizer: { name: string; bytes: number; tensors: number } | null;
  };
  /** Caller metadata (e.g. the trainer's data position). */
  meta: Record<string, unknown>;
}

function ckptError(dir: string, what: string): CrpoError {
  return new CrpoError('ERR_CRPO_CHECKPOINT', `${dir}: ${what}`, { userError: true });
}

function fsyncDir(dir: string): void {
  try {
    const fd = fs.openSync(dir, 'r');
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    // Some file systems refuse to fsync folders; the rename is still atomic.
  }
}

function toWrite(tensors: NativePolicyTensor[]) {
  return tensors.map((t) => ({ name: t.name, dtype: 'F32' as const, shape: t.shape, data: t.data }));
}

/** Saves `policy` (weights, optimizer state unless frozen, RNG, step) into folder `dir`. */
export async function saveCheckpoint(
  policy: PolicyModel,
  dir: string,
  meta: Record<string, unknown> = {},
): Promise<CheckpointManifest> {
  if (!(policy instanceof PolicyModel)) throw invalidArg('policy', 'a PolicyModel', policy, 'saveCheckpoint');
  if (typeof dir !== 'string' || dir.length === 0) throw invalidArg('dir', 'a folder path', dir, 'saveCheckpoint');
  // Checkpoints hold float32 weights: a float64 policy (made for the gradient checks) would come
  // back rounded, so it is refused rather than saved lossily.
  if (policy.config.dtype === 'float64')
    throw invalidArg(
      'policy',
      "a float32 or bfloat16 policy (checkpoints store float32 weights; a 'float64' policy, made for gradient checks, would be rounded)",
      'float64',
      'saveCheckpoint',
    );
  const abs = path.resolve(dir);
  const weights = await policy.getWeights();
  const opt = policy.frozen ? null : await policy.getOptimizerState();
  const step = opt ? opt.step : policy.step;
  const rng = Buffer.from(policy.getRngState()).toString('base64');
  fs.mkdirSync(path.dirname(abs), { recursive: true });
  const tmp = `${abs}.tmp-${process.pid}-${Date.now()}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp);
  try {
    writeSafetensors(path.join(tmp, WEIGHTS_FILE), toWrite(weights), { format: 'pt', producer: CHECKPOINT_FORMAT });
    if (opt)
      writeSafetensors(path.join(tmp, OPTIMIZER_FILE), toWrite(opt.tensors), {
        format: 'pt',
        producer: CHECKPOINT_FORMAT,
      });
    const manifest: CheckpointManifest = {
      format: CHECKPOINT_FORMAT,
      config: policy.config,
      tokenizer: policy.tokenizer.toJSON(),
      step,
      rng,
      files: {
        weights: { name: WEIGHTS_FILE, bytes: fs.statSync(path.join(tmp, WEIGHTS_FILE)).size, tensors: weights.length },
        optimizer: opt
          ? {
              name: OPTIMIZER_FILE,
              bytes: fs.statSync(path.join(tmp, OPTIMIZER_FILE)).size,
              tensors: opt.tensors.length,
            }
          : null,
      },
      meta,
    };
    writeFileAtomicSync(path.join(tmp, MANIFEST_FILE), JSON.stringify(manifest, null, 1) + '\n');
    fsyncDir(tmp);
    // Swap: the old folder moves aside, the new one takes its name, the old one is removed.
    const old = `${abs}.old-${process.pid}-${Date.now()}`;
    const hadOld = fs.existsSync(abs);
    if (hadOld) fs.renameSync(abs, old);
    fs.renameSync(tmp, abs);
    fsyncDir(path.dirname(abs));
    if (hadOld) fs.rmSync(old, { recursive: true, force: true });
    return manifest;
  } catch (err) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
}

/**
 * A save interrupted between its two renames leaves `<dir>.old-*` (complete) and no `<dir>`:
 * puts the newest complete one back. Returns true when it restored one.
 */
export function recoverInterruptedSave(dir: string): boolean {
  const abs = path.resolve(dir);
  if (fs.existsSync(abs)) return false;
  const parent = path.dirname(abs);
  if (!fs.existsSync(parent)) return false;
  const prefix = `${path.basename(abs)}.old-`;
  const candidates = fs
    .readdirSync(parent)
    .filter((f) => f.startsWith(prefix) && fs.existsSync(path.join(parent, f, MANIFEST_FILE)))
    .sort((a, b) => fs.statSync(path.join(parent, b)).mtimeMs - fs.statSync(path.join(parent, a)).mtimeMs);
  if (candidates.length === 0) return false;
  fs.renameSync(path.join(parent, candidates[0]), abs);
  fsyncDir(parent);
  return true;
}

/** Reads and checks `policy.json` of a checkpoint folder. */
export function readManifest(dir: string): CheckpointManifest {
  recoverInterruptedSave(dir);
  const file = path.join(dir, MANIFEST_FILE);
  if (!fs.existsSync(file)) throw ckptError(dir, `no ${MANIFEST_FILE} (not a policy checkpoint)`);
  let m: CheckpointManifest;
  try {
    m = JSON.parse(fs.readFileSync(file, 'utf8')) as CheckpointManifest;
  } catch (e) {
    throw ckptError(dir, `${MANIFEST_FILE} is not valid JSON (${(e as Error).message})`);
  }
  if (!m || typeof m !== 'object' || m.format !== CHECKPOINT_FORMAT)
    throw ckptError(
      dir,
      `${MANIFEST_FILE}: format is ${JSON.stringify((m as { format?: unknown })?.format)}, expected '${CHECKPOINT_FORMAT}'`,
    );
  if (!Number.isSafeInteger(m.step) || m.step < 0)
    throw ckptError(dir, `${MANIFEST_FILE}: step ${JSON.stringify(m.step)} is not an integer >= 0`);
  if (typeof m.rng !== 'string') throw ckptError(dir, `${MANIFEST_FILE}: rng is not a base64 string`);
  if (!m.files || !m.files.weights || typeof m.files.weights.bytes !== 'number')
    throw ckptError(dir, `${MANIFEST_FILE}: files.weights is missing`);
  return m;
}

function readTensors(
  dir: string,
  entry: { name: string; bytes: number; tensors: number },
  expected: { names: string[]; shapes: number[][] },
): NativePolicyTensor[] {
  const file = path.join(dir, entry.name);
  if (!fs.existsSync(file)) throw ckptError(dir, `missing ${entry.name}`);
  const size = fs.statSync(file).size;
  if (size !== entry.bytes)
    throw ckptError(
      dir,
      `${entry.name} has ${size} bytes but the manifest says ${entry.bytes} (incomplete or replaced file)`,
    );
  const f = SafetensorsFile.open(file);
  try {
    const names = f.names();
    const want = new Set(expected.names);
    for (const n of names) if (!want.has(n)) throw ckptError(dir, `${entry.name}: unexpected tensor '${n}'`);
    return expected.names.map((n, i) => {
      if (!f.header.tensors.has(n)) throw ckptError(dir, `${entry.name}: missing tensor '${n}'`);
      const e = f.entry(n);
      if (e.dtype !== 'F32') throw ckptError(dir, `${entry.name}: tensor '${n}' is ${e.dtype}, expected F32`);
      const shape = expected.shapes[i];
      if (e.shape.length !== shape.length || e.shape.some((s, k) => s !== shape[k]))
        throw ckptError(dir, `${entry.name}: tensor '${n}' has shape [${e.shape}], expected [${shape}]`);
      return { name: n, shape: e.shape, data: f.read(n).data as Float32Array };
    });
  } finally {
    f.close();
  }
}

export interface CheckpointLoadOptions {
  /** Restore the optimizer state (default true when present). */
  optimizer?: boolean;
  /** Override the device (e.g. load a CUDA checkpoint on the CPU). */
  device?: string;
  /** Load as a frozen reference copy (no optimizer). */
  frozen?: boolean;
}

/** Builds the policy a checkpoint describes and restores its weights, optimizer, step and RNG. */
export async function loadCheckpoint(
  dir: string,
  options: CheckpointLoadOptions = {},
): Promise<{ policy: PolicyModel; manifest: CheckpointManifest }> {
  if (typeof dir !== 'string' || dir.length === 0) throw invalidArg('dir', 'a folder path', dir, 'loadCheckpoint');
  const m = readManifest(dir);
  const tokenizer = Tokenizer.fromJSON(m.tokenizer);
  let config: PolicyConfig;
  try {
    // A checkpoint written before option-slot embeddings, the vision stem or the vision attribute head existed has none (a
    // preset's default could add weights it lacks); the init-only fields do not matter once trained.
    const saved = (m.config ?? {}) as Partial<PolicyConfig>;
    const legacy = {
      ...(saved.optionSlots === undefined ? { optionSlots: 0 } : {}),
      ...(saved.visionStem === undefined ? { visionStem: 0 } : {}),
      ...(saved.visionStemDown === undefined ? { visionStemDown: 0 } : {}),
      ...(saved.posInit === undefined ? { posInit: 'random' as const } : {}),
      ...(saved.visionAuxClasses === undefined ? { visionAuxClasses: 0 } : {}),
    };
    config = resolvePolicyConfig(
      { ...legacy, ...m.config, ...(options.device ? { device: options.device } : {}) },
      `${dir}/${MANIFEST_FILE} config`,
    );
  } catch (e) {
    throw ckptError(dir, (e as Error).message);
  }
  if (config.vocabSize !== tokenizer.size)
    throw ckptError(
      dir,
      `config.vocabSize ${config.vocabSize} does not match the tokenizer's ${tokenizer.size} entries`,
    );
  const live = await PolicyModel.create(tokenizer, config);
  try {
    const info = live.info();
    const weights = readTensors(dir, m.files.weights, { names: info.names, shapes: info.shapes });
    await live.setWeights(weights);
    const wantOpt = (options.optimizer ?? true) && !options.frozen;
    if (wantOpt && m.files.optimizer) {
      const names: string[] = [];
      const shapes: number[][] = [];
      info.names.forEach((n, i) => {
        names.push(`${n}.exp_avg`, `${n}.exp_avg_sq`);
        shapes.push(info.shapes[i], info.shapes[i]);
      });
      await live.setOptimizerState(readTensors(dir, m.files.optimizer, { names, shapes }), m.step);
    } else if (m.step > 0) {
      await live.setOptimizerState((await live.getOptimizerState()).tensors, m.step);
    }
    try {
      live.setRngState(new Uint8Array(Buffer.from(m.rng, 'base64')));
    } catch (e) {
      throw ckptError(dir, `rng state rejected (${(e as Error).message})`);
    }
    if (options.frozen) {
      const ref = await live.cloneFrozen();
      live.dispose();
      return { policy: ref, manifest: m };
    }
    return { policy: live, manifest: m };
  } catch (err) {
    live.dispose();
    throw err;
  }
}
