/**
 * Shared set-up of the policy benchmarks (bench/pytorch train-step and generate, and
 * `crpo bench rollout --vs-pytorch`): a tiny-preset native policy
 * through its public wrapper (lib/model/policy.ts) with deterministic inputs, and the
 * hand-over to the PyTorch-Python twin (bench/pytorch/policy_twin.py): the config as JSON, the
 * weights as safetensors by parameter name, the batch as raw little-endian binaries.
 */
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { setTorchThreads, torchAddon } from '../native';
import { writeSafetensors } from '../model/safetensors';
import {
  PolicyModel,
  type PolicyInputs,
  type PolicyModelPrompt,
  type RlCompletions,
  type TrainOptions,
} from '../model/policy';
import { withClipNames } from '../algo/loss';
import { Tokenizer } from '../model/tokenizer';

export const PYTHON = process.env.CRPO_PYTHON ?? '/usr/bin/python3';
/** The twin's script: bench/pytorch in a clone of the repository (the same place from lib/bench and dist/bench). */
export const TWIN_SCRIPT = path.resolve(__dirname, '..', '..', 'bench', 'pytorch', 'policy_twin.py');
/** Same intra-op thread count for both sides (CRPO_BENCH_THREADS, else every core). */
export const THREADS = Number(process.env.CRPO_BENCH_THREADS) || os.cpus().length;

/**
 * The threading environment of both processes (Node with the addon, Python with the twin), set
 * before either loads libtorch: torch's intra-op threads only (OpenBLAS single-threaded, so two
 * thread pools do not compete for the cores) and passive OpenMP waiting (spinning workers thrash
 * when other work shares the machine: measured here, a PyTorch step at 2 threads went from 0.6 s
 * to 3.8 s with spinning under a load average of 11).
 */
export const THREAD_ENV = { OMP_NUM_THREADS: String(THREADS), OPENBLAS_NUM_THREADS: '1', OMP_WAIT_POLICY: 'PASSIVE' };

/**
 * The allocator settings both processes ran with (the PyTorch twin inherits this process's
 * environment; scripts/run-bench.js starts every bench with the training settings of lib/cli/relaunch.ts).
 */
export function allocatorNote(): string {
  const vars = ['MALLOC_ARENA_MAX', 'MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_'].filter(
    (k) => process.env[k] !== undefined,
  );
  if (!vars.length)
    return "both on glibc's default malloc settings, under which both sides map and first-touch their activations again at every call (page faults; measured here, the twin's times moved 2-3x between sessions with unchanged code)";
  return `both with the glibc malloc settings crpo gives training processes (${vars.map((k) => `${k}=${process.env[k]}`).join(', ')}; lib/cli/relaunch.ts), which keep freed memory in the process`;
}

/** Gives this process the same threading environment; call before anything loads libtorch. */
export function applyThreadEnv(): void {
  Object.assign(process.env, THREAD_ENV);
}

/** A word-level vocabulary of about 512 pieces (the tiny preset's vocabulary is data-dependent). */
export function benchTokenizer(): Tokenizer {
  return Tokenizer.build([Array.from({ length: 440 }, (_, i) => `w${i}`).join(' ')]);
}

/** A fresh policy of the tiny preset (lib/model/config.ts: 8 frames of 32x32, 16 visual tokens, LM 2 x 96). */
export async function tinyPolicy(tokenizer = benchTokenizer()): Promise<PolicyModel> {
  setTorchThreads(THREADS);
  return PolicyModel.create(tokenizer, { preset: 'tiny', seed: 7 });
}

/** The torch addon is built with the native policy. */
export function hasPolicy(): boolean {
  try {
    return typeof (torchAddon() as unknown as { policyCreate?: unknown }).policyCreate === 'function';
  } catch {
    return false;
  }
}

export function pythonTorch(): string | null {
  const probe = spawnSync(PYTHON, ['-c', 'import torch, numpy'], { encoding: 'utf8' });
  return probe.status === 0
    ? null
    : `${PYTHON} cannot import torch and numpy (apt-get install python3-torch, or set CRPO_PYTHON)`;
}

/** A small deterministic generator (LCG) for inputs. */
export function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32;
}

/**
 * Q questions over Q videos; with `dual`, each question appears twice (original, then its
 * counterfactual: hflip or reverse), as one CRPO dual-branch batch. Prompts of 20-36 tokens.
 */
export function makeInputs(p: PolicyModel, questions: number, group: number, dual: boolean, seed = 11): PolicyInputs {
  const rand = lcg(seed);
  const frames = new Uint8Array(questions * p.clipBytes);
  for (let i = 0; i < frames.length; i++) frames[i] = Math.floor(rand() * 256);
  const prompts: PolicyModelPrompt[] = [];
  const V = p.tokenizer.size;
  for (let q = 0; q < questions; q++) {
    const len = 20 + Math.floor(rand() * 17);
    const ids = Array.from({ length: len }, () => 6 + Math.floor(rand() * (V - 6)));
    for (const transform of dual ? (['none', q % 2 ? 'reverse' : 'hflip'] as const) : (['none'] as const))
      prompts.push({ video: q, ids, transform });
  }
  return { frames, numVideos: questions, prompts, groupSize: group };
}

/** Writes config, weights and the batch exactly as the native call receives it, for the twin, into a fresh temporary folder. */
export async function handOver(
  p: PolicyModel,
  inputs: PolicyInputs,
  run: Record<string, unknown>,
  comp?: RlCompletions,
): Promise<string> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-policy-bench-'));
  // the twin reads the clip range as clipLow / clipHigh (a caller may still give the deprecated epsLow / epsHigh)
  const step = run.step && typeof run.step === 'object' ? { step: withClipNames(run.step as TrainOptions) } : {};
  fs.writeFileSync(
    path.join(dir, 'config.json'),
    JSON.stringify({ ...p.config, channels: 3, padId: 0, run: { ...run, ...step } }),
  );
  const w = await p.getWeights();
  writeSafetensors(
    path.join(dir, 'weights.safetensors'),
    w.map((t) => ({ name: t.name, dtype: 'F32' as const, shape: t.shape, data: t.data })),
  );
  const b = p.batch(inputs, 'bench');
  const ids: number[][] = [];
  let at = 0;
  for (const n of b.promptLengths) {
    ids.push(Array.from(b.promptIds.subarray(at, at + n)));
    at += n;
  }
  const bj: Record<string, unknown> = {
    numVideos: b.numVideos,
    video: Array.from(b.promptVideo),
    ops: b.promptTransform,
    ids,
    group: b.groupSize,
  };
  fs.writeFileSync(path.join(dir, 'frames.bin'), b.frames);
  if (comp) {
    bj.width = comp.width;
    const bin = (name: string, a: Int32Array | Float32Array) =>
      fs.writeFileSync(path.join(dir, name), Buffer.from(a.buffer, a.byteOffset, a.byteLength));
    bin('comp_ids.bin', comp.ids);
    bin('comp_lengths.bin', comp.lengths);
    if (comp.oldLogprobs && comp.refLogprobs) {
      bin('adv.bin', comp.advantages);
      bin('old.bin', comp.oldLogprobs);
      bin('ref.bin', comp.refLogprobs);
    }
  }
  fs.writeFileSync(path.join(dir, 'batch.json'), JSON.stringify(bj));
  return dir;
}

/**
 * The twin as a child process: it first runs its checks (outputs written into the hand-over
 * folder, one JSON line back), then serves timed iterations one at a time, so that the bench can
 * interleave them with native ones (machine load that drifts during the run hits both sides alike).
 */
export class TwinServer {
  private proc: ChildProcessWithoutNullStreams;
  private lines: string[] = [];
  private waiting: ((line: string) => void)[] = [];
  private stderr = '';
  private exited: number | null = null;

  constructor(dir: string, mode: 'train' | 'generate') {
    const env = { ...process.env, ...THREAD_ENV };
    this.proc = spawn(PYTHON, [TWIN_SCRIPT, dir, mode], { env });
    let buf = '';
    this.proc.stdout.setEncoding('utf8');
    this.proc.stdout.on('data', (chunk: string) => {
      buf += chunk;
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        const w = this.waiting.shift();
        if (w) w(line);
        else this.lines.push(line);
      }
    });
    this.proc.stderr.on('data', (c: Buffer) => {
      this.stderr += c.toString();
    });
    this.proc.on('exit', (code) => {
      this.exited = code ?? -1;
      for (const w of this.waiting.splice(0)) w('');
    });
  }

  private next(): Promise<Record<string, unknown>> {
    const parse = (line: string): Record<string, unknown> => {
      if (!line) throw new Error(`PyTorch twin exited (${this.exited}): ${this.stderr.slice(-4000)}`);
      return JSON.parse(line) as Record<string, unknown>;
    };
    const l = this.lines.shift();
    if (l !== undefined) return Promise.resolve(parse(l));
    if (this.exited !== null) return Promise.resolve(parse(''));
    return new Promise((resolve, reject) =>
      this.waiting.push((line) => {
        try {
          resolve(parse(line));
        } catch (e) {
          reject(e);
        }
      }),
    );
  }

  /** The check results (first line). */
  ready(): Promise<Record<string, unknown>> {
    return this.next();
  }

  async run(): Promise<number> {
    this.proc.stdin.write('run\n');
    return (await this.next()).ms as number;
  }

  async threads(n: number): Promise<void> {
    this.proc.stdin.write(`threads ${n}\n`);
    await this.next();
  }

  close(): void {
    if (this.exited === null) this.proc.stdin.end('quit\n');
  }
}

export interface PairedTiming {
  threads: number;
  pytorchMs: number;
  nativeMs: number;
  /** PyTorch median / native median. */
  speedup: number;
  /** Median over runs of (PyTorch time / native time) of back-to-back pairs (a check on load drift). */
  pairedSpeedup: number;
  /** Spread of the native times: (max - min) / median. */
  nativeSpread: number;
  pytorchSpread: number;
  runs: number;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Warm-up, then `runs` back-to-back pairs (PyTorch iteration, native iteration) at `threads`. */
export async function pairedTiming(
  twin: TwinServer,
  nativeRun: () => Promise<unknown>,
  threads: number,
  warmup: number,
  runs: number,
): Promise<PairedTiming> {
  setTorchThreads(threads);
  await twin.threads(threads);
  for (let i = 0; i < warmup; i++) {
    await twin.run();
    await nativeRun();
  }
  const py: number[] = [],
    nat: number[] = [],
    ratio: number[] = [];
  for (let i = 0; i < Math.max(5, runs); i++) {
    const p = await twin.run();
    const t0 = process.hrtime.bigint();
    await nativeRun();
    const n = Number(process.hrtime.bigint() - t0) / 1e6;
    py.push(p);
    nat.push(n);
    ratio.push(p / n);
  }
  const spread = (xs: number[]): number => (Math.max(...xs) - Math.min(...xs)) / median(xs);
  return {
    threads,
    pytorchMs: median(py),
    nativeMs: median(nat),
    speedup: median(py) / median(nat),
    pairedSpeedup: median(ratio),
    nativeSpread: spread(nat),
    pytorchSpread: spread(py),
    runs: py.length,
  };
}

/** Thread counts to compare at: 1 and every core (CRPO_BENCH_THREADS overrides the latter). */
export const THREAD_SETTINGS = [...new Set([1, THREADS])];

/** One-minute load average, reported with the timings (other work on the machine skews them). */
export function loadAverage(): number {
  return os.loadavg()[0];
}

export function readF32(file: string): Float32Array {
  const b = fs.readFileSync(file);
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

export function readI32(file: string): Int32Array {
  const b = fs.readFileSync(file);
  return new Int32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}
