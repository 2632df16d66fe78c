/**
 * Data-parallel helpers the trainer calls (the DDP recipe of PyTorch, on c10d process groups):
 * one context per process that is a real process group when launched by torchrun, Slurm or
 * `crpo train --nproc N` and a no-op single process otherwise; prompt-group sharding that keeps
 * both CRPO branches of a prompt (original and counterfactual rollouts, crpo-method.md section 4)
 * on one rank; metric reduction; rank-0-only writing; initial-weight broadcast; and failure
 * handling (a failing rank tells the others, signals stop every rank cleanly).
 */
import { CrpoError, invalidArg, outOfRange } from '../errors';
import { parseDistEnv, type DistEnv } from './env';
import {
  describeFailure,
  exitAfterPeerFailure,
  ProcessGroup,
  type CollectiveArray,
  type ProcessGroupOptions,
  type ReduceOp,
} from './process-group';

export * from './env';
export * from './process-group';
export { launchLocal, type LaunchOptions, type LaunchResult } from './launch';

/** What a training process knows about its place in the job. */
export interface DistContext {
  readonly rank: number;
  readonly worldSize: number;
  readonly localRank: number;
  /** rank === 0: the rank that writes logs and checkpoints. */
  readonly isMain: boolean;
  readonly env: DistEnv;
  /** The c10d group, or null in a single process. */
  readonly group: ProcessGroup | null;
  /** Id for native calls that take a group (the train step's gradient all-reduce); undefined alone. */
  readonly nativeGroupId: number | undefined;
  allReduce(data: CollectiveArray | CollectiveArray[], op?: ReduceOp): Promise<void>;
  broadcast(data: CollectiveArray | CollectiveArray[], root?: number): Promise<void>;
  barrier(): Promise<void>;
  /** Sum of per-rank values, in float64 (the trainer's metric reduction, lib/train). */
  allReduceSum(values: number[]): Promise<number[]>;
  /** Tells the other ranks this one is failing (no-op alone). */
  abort(message: string): void;
  /** Orderly end: waits for every rank, then frees the group. */
  close(): Promise<void>;
}

class SingleProcess implements DistContext {
  readonly rank = 0;
  readonly worldSize = 1;
  readonly localRank = 0;
  readonly isMain = true;
  readonly group = null;
  readonly nativeGroupId = undefined;
  constructor(readonly env: DistEnv) {}
  // With one rank, sum, mean, max and min of one value are that value.
  async allReduce(): Promise<void> {}
  async broadcast(): Promise<void> {}
  async barrier(): Promise<void> {}
  async allReduceSum(values: number[]): Promise<number[]> {
    return [...values];
  }
  abort(): void {}
  async close(): Promise<void> {}
}

class GroupContext implements DistContext {
  readonly isMain: boolean;
  constructor(readonly group: ProcessGroup) {
    this.isMain = group.rank === 0;
  }
  get rank(): number {
    return this.group.rank;
  }
  get worldSize(): number {
    return this.group.worldSize;
  }
  get localRank(): number {
    return this.group.localRank;
  }
  get env(): DistEnv {
    return this.group.env;
  }
  get nativeGroupId(): number {
    return this.group.nativeId;
  }
  allReduce(data: CollectiveArray | CollectiveArray[], op: ReduceOp = 'sum'): Promise<void> {
    return this.group.allReduce(data, op);
  }
  broadcast(data: CollectiveArray | CollectiveArray[], root = 0): Promise<void> {
    return this.group.broadcast(data, root);
  }
  barrier(): Promise<void> {
    return this.group.barrier();
  }
  async allReduceSum(values: number[]): Promise<number[]> {
    const a = Float64Array.from(values);
    if (a.length) await this.group.allReduce(a, 'sum');
    return Array.from(a);
  }
  abort(message: string): void {
    this.group.abort(message);
  }
  close(): Promise<void> {
    return this.group.close();
  }
}

export interface InitDistributedOptions extends ProcessGroupOptions {
  /**
   * Stop on SIGINT/SIGTERM: tell the other ranks, print one line, exit 130/143 (default true
   * when there is more than one rank). Ctrl-C in a terminal reaches every local rank at once.
   */
  handleSignals?: boolean;
}

/**
 * The context of this process: joins the c10d group when the environment describes a
 * multi-process launch (see env.ts), otherwise a single process with no-op collectives.
 */
export async function initDistributed(options: InitDistributedOptions = {}): Promise<DistContext> {
  const env = options.env ?? parseDistEnv();
  if (env.worldSize === 1) return new SingleProcess(env);
  const group = await ProcessGroup.init({ ...options, env });
  const ctx = new GroupContext(group);
  if (options.handleSignals ?? true) installSignalHandlers(ctx);
  return ctx;
}

const SIGNAL_CODES: Record<string, number> = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 };

/** SIGINT/SIGTERM/SIGHUP: announce to the other ranks, print one line, exit 128+signal. */
export function installSignalHandlers(ctx: DistContext): void {
  let stopping = false;
  for (const sig of Object.keys(SIGNAL_CODES) as NodeJS.Signals[]) {
    process.on(sig, () => {
      // Ctrl-C reaches a worker twice under crpo's launcher (terminal and launcher): once is enough.
      if (stopping) return;
      stopping = true;
      const why = `stopped by ${sig}`;
      try {
        ctx.abort(why);
      } catch {
        /* the group may already be gone */
      }
      exitAfterPeerFailure(`crpo: rank ${ctx.rank} of ${ctx.worldSize}: ${why}`, SIGNAL_CODES[sig]);
    });
  }
}

/**
 * Runs `body` as one rank of a job: on an error, the other ranks are told (they stop with a message
 * naming this rank) and the error is rethrown; on success the group is closed in order.
 */
export async function runRank<T>(ctx: DistContext, body: (ctx: DistContext) => Promise<T>): Promise<T> {
  let result: T;
  try {
    result = await body(ctx);
  } catch (err) {
    ctx.abort(`${(err as Error)?.message ?? String(err)}`);
    throw err;
  }
  await ctx.close();
  return result;
}

// ---------------------------------------------------------------------------------------------
// Sharding
// ---------------------------------------------------------------------------------------------

/**
 * This rank's contiguous block [rank*n/W, (rank+1)*n/W) of n items. n must divide by W: the global
 * batch is what the user sets, and every rank must do the same number of steps.
 */
export function shardRange(n: number, rank: number, worldSize: number): { start: number; end: number } {
  if (!Number.isInteger(worldSize) || worldSize < 1)
    throw outOfRange('worldSize', 'an integer >= 1', worldSize, 'shardRange');
  if (!Number.isInteger(rank) || rank < 0 || rank >= worldSize)
    throw outOfRange('rank', `an integer in [0, ${worldSize - 1}]`, rank, 'shardRange');
  if (!Number.isInteger(n) || n < 0 || n % worldSize !== 0) {
    throw outOfRange('global batch (prompts per step)', `a multiple of the world size ${worldSize}`, n, 'shardRange');
  }
  const per = n / worldSize;
  return { start: rank * per, end: (rank + 1) * per };
}

/**
 * The prompt groups of one global batch that this rank rolls out and trains on. Items are whole
 * prompt groups: a prompt's G original and G' counterfactual rollouts are generated, rewarded and
 * normalised together on the rank that owns the prompt, so group advantages need no communication.
 * Taking contiguous blocks of the same global order keeps data order independent of the world size,
 * which is what lets a run resume with a different number of ranks at the same global batch.
 */
export function shardPromptGroups<T>(globalBatch: readonly T[], ctx: { rank: number; worldSize: number }): T[] {
  if (!Array.isArray(globalBatch))
    throw invalidArg('globalBatch', 'an array of prompt groups', globalBatch, 'shardPromptGroups');
  const { start, end } = shardRange(globalBatch.length, ctx.rank, ctx.worldSize);
  return globalBatch.slice(start, end);
}

/**
 * A sampling seed that depends on the prompt's place in the global batch and not on the rank, so
 * that W ranks x b prompts draw the same rollouts as 1 rank x W*b prompts.
 */
export function promptSeed(seed: number, step: number, globalIndex: number): number {
  // splitmix-style mixing of three integers into a 31-bit seed.
  let h = (seed ^ 0x9e3779b9) >>> 0;
  for (const v of [step, globalIndex]) {
    h = Math.imul(h ^ (v >>> 0), 0x85ebca6b) >>> 0;
    h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
    h = (h ^ (h >>> 16)) >>> 0;
  }
  return h & 0x7fffffff;
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

export type MetricReduce = 'mean' | 'sum' | 'max' | 'min';

export interface ReduceMetricsOptions {
  /** Weight of this rank's means (e.g. its number of sequences); default 1 for every rank. */
  weight?: number;
  /** How each metric combines across ranks; default 'mean' (weighted by `weight`). */
  reduce?: Record<string, MetricReduce>;
}

function keyHash(keys: string[]): number {
  let h = 2166136261;
  for (const ch of keys.join('\u0000')) h = Math.imul(h ^ ch.charCodeAt(0), 16777619) >>> 0;
  return h;
}

/**
 * Combines per-rank step metrics into the global ones (every rank gets the result). Every rank
 * must pass the same metric names; a mismatch is an error naming them. Float64 throughout.
 */
export async function reduceMetrics(
  ctx: DistContext,
  metrics: Record<string, number>,
  options: ReduceMetricsOptions = {},
): Promise<Record<string, number>> {
  const keys = Object.keys(metrics).sort();
  for (const k of keys) {
    if (typeof metrics[k] !== 'number') throw invalidArg(`metrics.${k}`, 'a number', metrics[k], 'reduceMetrics');
  }
  const weight = options.weight ?? 1;
  if (typeof weight !== 'number' || !Number.isFinite(weight) || weight < 0)
    throw outOfRange('weight', 'a finite number >= 0', weight, 'reduceMetrics');
  const how = (k: string): MetricReduce => options.reduce?.[k] ?? 'mean';
  for (const k of keys) {
    if (!['mean', 'sum', 'max', 'min'].includes(how(k)))
      throw outOfRange(`reduce.${k}`, "'mean', 'sum', 'max' or 'min'", how(k), 'reduceMetrics');
  }
  if (ctx.worldSize === 1) return Object.fromEntries(keys.map((k) => [k, metrics[k]]));
  // Same names on every rank: max and min of the name hash agree only then.
  const h = new Float64Array([keyHash(keys), keyHash(keys)]);
  const hmin = new Float64Array([h[1]]);
  await ctx.allReduce(h.subarray(0, 1), 'max');
  await ctx.allReduce(hmin, 'min');
  if (h[0] !== hmin[0]) {
    throw new CrpoError(
      'ERR_CRPO_DIST_MISMATCH',
      `reduceMetrics: rank ${ctx.rank} has metrics [${keys.join(', ')}] but another rank has different names; every rank must log the same metrics`,
      { op: 'reduceMetrics', userError: false },
    );
  }
  const sums = keys.filter((k) => how(k) === 'mean' || how(k) === 'sum');
  const maxes = keys.filter((k) => how(k) === 'max');
  const mins = keys.filter((k) => how(k) === 'min');
  // [weighted values of means, raw sums, total weight]
  const s = new Float64Array(sums.length + 1);
  sums.forEach((k, i) => (s[i] = how(k) === 'mean' ? metrics[k] * weight : metrics[k]));
  s[sums.length] = weight;
  const mx = new Float64Array(maxes.map((k) => metrics[k]));
  const mn = new Float64Array(mins.map((k) => metrics[k]));
  await ctx.allReduce(s, 'sum');
  if (mx.length) await ctx.allReduce(mx, 'max');
  if (mn.length) await ctx.allReduce(mn, 'min');
  const out: Record<string, number> = {};
  const total = s[sums.length];
  sums.forEach((k, i) => (out[k] = how(k) === 'mean' ? (total > 0 ? s[i] / total : NaN) : s[i]));
  maxes.forEach((k, i) => (out[k] = mx[i]));
  mins.forEach((k, i) => (out[k] = mn[i]));
  return Object.fromEntries(keys.map((k) => [k, out[k]]));
}

// ---------------------------------------------------------------------------------------------
// Initial weights
// ---------------------------------------------------------------------------------------------

/** What weight broadcast needs from a model handle (the policy's parameter accessors). */
export interface ParamAccess {
  paramNames(): string[];
  getParam(name: string): Float32Array;
  setParam(name: string, value: Float32Array): void;
}

/**
 * Makes every rank's parameters equal to rank 0's (DDP's initial broadcast). Names and sizes are
 * checked first, so a rank with a different model fails with a message instead of a hang.
 * Copies through JS: meant for trainable parameters (LoRA adapters) and small models; base
 * weights loaded from the same checkpoint are already identical.
 */
export async function broadcastParams(ctx: DistContext, model: ParamAccess, names?: string[]): Promise<number> {
  if (ctx.worldSize === 1) return 0;
  const list = [...(names ?? model.paramNames())].sort();
  const values = list.map((n) => model.getParam(n));
  const layout = `${list.join(',')}|${values.map((v) => v.length).join(',')}`;
  const h = new Float64Array([keyHash([layout])]);
  const hmin = new Float64Array([h[0]]);
  await ctx.allReduce(h, 'max');
  await ctx.allReduce(hmin, 'min');
  if (h[0] !== hmin[0]) {
    throw new CrpoError(
      'ERR_CRPO_DIST_MISMATCH',
      `broadcastParams: rank ${ctx.rank}'s parameters (${list.length} tensors) differ in names or sizes from another rank's`,
      { op: 'broadcastParams', userError: false },
    );
  }
  await ctx.broadcast(values, 0);
  if (!ctx.isMain) list.forEach((n, i) => model.setParam(n, values[i]));
  return values.reduce((s, v) => s + v.length, 0);
}

/**
 * The largest difference of a value across ranks (0 when all agree): checks that replicas stay in
 * sync, e.g. on a parameter checksum after each step.
 */
export async function spreadAcrossRanks(ctx: DistContext, value: number): Promise<number> {
  const mx = new Float64Array([value]);
  const mn = new Float64Array([value]);
  await ctx.allReduce(mx, 'max');
  await ctx.allReduce(mn, 'min');
  return mx[0] - mn[0];
}

export { describeFailure };
