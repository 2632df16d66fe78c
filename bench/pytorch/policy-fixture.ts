/**
 * Shared set-up of the policy benchmarks (train-step, generate): the native policy's raw surface
 * (native/torch/model/policy_binding.cpp), a tiny-preset policy with deterministic inputs, and the
 * hand-over to the PyTorch-Python twin (bench/pytorch/policy_twin.py): the config as JSON, the
 * weights as safetensors by parameter name, the batch as raw little-endian binaries.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { callAsync, setTorchThreads, torchAddon, torchQueue } from '../../lib/native';
import { writeSafetensors } from '../../lib/model/safetensors';

export const PYTHON = process.env.CRPO_PYTHON ?? '/usr/bin/python3';
/** Same intra-op thread count for both sides (CRPO_BENCH_THREADS, else every core). */
export const THREADS = Number(process.env.CRPO_BENCH_THREADS) || os.cpus().length;

/** The tiny preset as the native header declares its defaults (frames 8 x 32 x 32, 16 visual tokens). */
export const TINY = {
  vocabSize: 512, frames: 8, imageSize: 32, channels: 3, patchSize: 8, temporalPatch: 2, mergeSize: 2,
  visionDim: 64, visionLayers: 2, visionHeads: 4, visionMlp: 128,
  lmDim: 96, lmLayers: 2, lmHeads: 4, lmKvHeads: 2, lmMlp: 256, maxSeqLen: 256,
  ropeTheta: 10000, normEps: 1e-6, initStd: 0.02, padId: 0, seed: 7,
};
export type PolicyConfigJs = typeof TINY;

export interface NamedTensorJs { name: string; shape: number[]; data: Float32Array }
export interface BatchJs {
  frames: Uint8Array; numVideos: number; promptVideo: Int32Array; promptTransform: string[];
  promptIds: Int32Array; promptLengths: Int32Array; groupSize: number;
}
export interface CompletionsJs {
  ids: Int32Array; lengths: Int32Array; width: number;
  advantages?: Float32Array; oldLogprobs?: Float32Array; refLogprobs?: Float32Array;
}

/** The policy functions of the torch addon (until a typed wrapper is exported from lib/native.ts). */
interface PolicyRaw {
  policyCreate(c: PolicyConfigJs): Promise<number>;
  policyClone(id: number, o: { frozen: boolean }): Promise<number>;
  policyDispose(id: number): boolean;
  policyInfo(id: number): { parameters: number; names: string[]; shapes: number[][] };
  policyGenerate(id: number, b: BatchJs, o: Record<string, unknown>): Promise<{ tokens: Int32Array; logprobs: Float32Array; lengths: Int32Array }>;
  policyLogprobs(id: number, b: BatchJs, c: CompletionsJs, o?: Record<string, unknown>): Promise<{ logprobs: Float32Array }>;
  policyTrainStep(id: number, b: BatchJs, c: CompletionsJs, o: Record<string, unknown>): Promise<{ loss: number; gradNorm: number; entropy: number; skipped: boolean }>;
  policyGetState(id: number, which: 'weights' | 'optimizer'): Promise<{ tensors: NamedTensorJs[]; step: number }>;
}

export function hasPolicy(): boolean {
  try {
    return typeof (torchAddon() as unknown as Partial<PolicyRaw>).policyCreate === 'function';
  } catch {
    return false;
  }
}

export function policyRaw(): PolicyRaw {
  setTorchThreads(THREADS);
  return torchAddon() as unknown as PolicyRaw;
}

/** Runs one native call on the torch queue with realm-safe errors. */
export function native<R>(fn: () => Promise<R>): Promise<R> {
  return torchQueue.run(() => callAsync(fn));
}

export function pythonTorch(): string | null {
  const probe = spawnSync(PYTHON, ['-c', 'import torch, numpy'], { encoding: 'utf8' });
  return probe.status === 0 ? null : `${PYTHON} cannot import torch and numpy (apt-get install python3-torch, or set CRPO_PYTHON)`;
}

/** A small deterministic generator (LCG) for inputs. */
export function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32);
}

/**
 * Q questions over Q videos; with `dual`, each question appears twice (original, then its
 * counterfactual: hflip or reverse), as one CRPO dual-branch batch. Prompts of 20-36 text tokens.
 */
export function makeBatch(cfg: PolicyConfigJs, questions: number, group: number, dual: boolean, seed = 11): BatchJs {
  const rand = lcg(seed);
  const frameBytes = cfg.frames * cfg.imageSize * cfg.imageSize * cfg.channels;
  const frames = new Uint8Array(questions * frameBytes);
  for (let i = 0; i < frames.length; i++) frames[i] = Math.floor(rand() * 256);
  const video: number[] = [], ops: string[] = [], lengths: number[] = [], ids: number[] = [];
  for (let q = 0; q < questions; q++) {
    const len = 20 + Math.floor(rand() * 17);
    const toks = Array.from({ length: len }, () => 1 + Math.floor(rand() * (cfg.vocabSize - 1)));
    for (const op of dual ? ['none', q % 2 ? 'reverse' : 'hflip'] : ['none']) {
      video.push(q);
      ops.push(op);
      lengths.push(len);
      ids.push(...toks);
    }
  }
  return {
    frames, numVideos: questions, promptVideo: Int32Array.from(video), promptTransform: ops,
    promptIds: Int32Array.from(ids), promptLengths: Int32Array.from(lengths), groupSize: group,
  };
}

/** Writes config, weights and batch for the twin into a fresh temporary folder. */
export async function handOver(raw: PolicyRaw, id: number, cfg: PolicyConfigJs, b: BatchJs, run: Record<string, unknown>, comp?: CompletionsJs): Promise<string> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-policy-bench-'));
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...cfg, run }));
  const w = await native(() => raw.policyGetState(id, 'weights'));
  writeSafetensors(path.join(dir, 'weights.safetensors'), w.tensors.map((t) => ({ name: t.name, dtype: 'F32' as const, shape: t.shape, data: t.data })));
  const ids: number[][] = [];
  let at = 0;
  for (const n of b.promptLengths) {
    ids.push(Array.from(b.promptIds.subarray(at, at + n)));
    at += n;
  }
  const bj: Record<string, unknown> = { numVideos: b.numVideos, video: Array.from(b.promptVideo), ops: b.promptTransform, ids, group: b.groupSize };
  fs.writeFileSync(path.join(dir, 'frames.bin'), b.frames);
  if (comp) {
    bj.width = comp.width;
    const bin = (name: string, a: Int32Array | Float32Array) => fs.writeFileSync(path.join(dir, name), Buffer.from(a.buffer, a.byteOffset, a.byteLength));
    bin('comp_ids.bin', comp.ids);
    bin('comp_lengths.bin', comp.lengths);
    if (comp.advantages && comp.oldLogprobs && comp.refLogprobs) {
      bin('adv.bin', comp.advantages);
      bin('old.bin', comp.oldLogprobs);
      bin('ref.bin', comp.refLogprobs);
    }
  }
  fs.writeFileSync(path.join(dir, 'batch.json'), JSON.stringify(bj));
  return dir;
}

/** Runs the twin in `mode` on a hand-over folder; returns its JSON line. */
export function runTwin(dir: string, mode: 'train' | 'generate' | 'logprobs'): Record<string, unknown> {
  const env = { ...process.env, OMP_NUM_THREADS: String(THREADS), OPENBLAS_NUM_THREADS: String(THREADS) };
  const py = spawnSync(PYTHON, [path.join(__dirname, 'policy_twin.py'), dir, mode], { encoding: 'utf8', env, maxBuffer: 64 << 20 });
  if (py.status !== 0) throw new Error(`PyTorch twin (${mode}) failed: ${py.stderr}`);
  return JSON.parse(py.stdout.trim().split('\n').pop()!) as Record<string, unknown>;
}

export function readF32(file: string): Float32Array {
  const b = fs.readFileSync(file);
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

export function readI32(file: string): Int32Array {
  const b = fs.readFileSync(file);
  return new Int32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}
