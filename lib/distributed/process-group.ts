/**
 * A c10d process group as a JS handle (PyTorch's torch.distributed process groups, run by the torch
 * addon: Gloo on CPU, NCCL in CUDA builds). Collectives act in place on Float32Array/Float64Array
 * (metrics, tests, weights copied through JS); the model's train step uses the same group natively
 * through `nativeId`. Every collective goes through the torch queue, so each rank issues its
 * collectives in the order its JS code calls them (c10d requires the same order on every rank).
 *
 * A failed peer (announced, or silent past the heartbeat timeout) is reported by the native
 * heartbeat; with `onPeerFailure: 'exit'` (the default) this process then prints one line naming
 * the failed rank and exits 1, so no rank waits forever.
 */
import { CrpoError, invalidArg, outOfRange } from '../errors';
import * as fs from 'fs';
import * as os from 'os';
import {
  callSync,
  NativeHandle,
  setTorchThreads,
  torchAddon,
  torchCall,
  type NativeDistInitOptions,
  type NativePeerFailure,
} from '../native';
import { resolveTorchThreads } from '../threads';
import { parseDistEnv, type DistEnv } from './env';

export type DistBackend = 'gloo' | 'nccl';
export type ReduceOp = 'sum' | 'mean' | 'max' | 'min';
export type CollectiveArray = Float32Array | Float64Array;

export interface PeerFailure {
  /** The failed rank, or null when only the store host is known to be gone. */
  rank: number | null;
  message: string;
}

export interface ProcessGroupOptions {
  /** 'auto' (default): nccl when the addon has it and CUDA is available, else gloo. */
  backend?: DistBackend | 'auto';
  /** Collective and rendezvous timeout in seconds (default 300: model loading can be slow). */
  timeoutSeconds?: number;
  /** Gradient bucket size in MiB for all-reduce (default 25, as DDP). 0 = one collective per tensor. */
  bucketMb?: number;
  /** Heartbeat period in seconds (default 1). */
  heartbeatIntervalSeconds?: number;
  /** A rank silent this long is declared failed (default 30). */
  heartbeatTimeoutSeconds?: number;
  /** Launch environment; parsed from process.env when absent. */
  env?: DistEnv;
  /**
   * What to do when the heartbeat reports a failed peer: 'exit' (default) prints one line naming
   * the failed rank and exits 1; 'none' only makes pending and later collectives reject; a function
   * is called once with the failure.
   */
  onPeerFailure?: 'exit' | 'none' | ((failure: PeerFailure) => void);
}

export const PROCESS_GROUP_DEFAULTS = {
  backend: 'auto' as DistBackend | 'auto',
  timeoutSeconds: 300,
  bucketMb: 25,
  heartbeatIntervalSeconds: 1,
  heartbeatTimeoutSeconds: 30,
};

function positive(name: string, v: unknown, allowZero = false): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw invalidArg(name, 'a finite number', v, 'ProcessGroup');
  if (allowZero ? v < 0 : v <= 0)
    throw outOfRange(name, allowZero ? 'a number >= 0' : 'a number > 0', v, 'ProcessGroup');
  return v;
}

function asArrays(data: CollectiveArray | CollectiveArray[], name: string): CollectiveArray[] {
  const list = Array.isArray(data) ? data : [data];
  list.forEach((a, i) => {
    const tag = Object.prototype.toString.call(a);
    if (tag !== '[object Float32Array]' && tag !== '[object Float64Array]') {
      throw invalidArg(
        Array.isArray(data) ? `${name}[${i}]` : name,
        'a Float32Array or Float64Array',
        a,
        'ProcessGroup',
      );
    }
  });
  return list;
}

/** Writes one line to stderr synchronously and ends the process without running native destructors. */
export function exitAfterPeerFailure(line: string, code = 1): never {
  try {
    fs.writeSync(2, line.endsWith('\n') ? line : line + '\n');
  } catch {
    /* nothing more to say */
  }
  callSync(() => torchAddon().distExitNow(code));
  process.exit(code);
}

/** Live groups by native id, so code that is handed only the id (a policy's train step) can reach the group. */
const LIVE_GROUPS = new Map<number, ProcessGroup>();

export class ProcessGroup extends NativeHandle {
  /** The id native functions (the train step) take to find this group. */
  readonly nativeId: number;
  readonly rank: number;
  readonly worldSize: number;
  readonly localRank: number;
  readonly backend: DistBackend;
  /** 'cpu' for gloo, 'cuda:<localRank % devices>' for nccl. */
  readonly device: string;
  readonly env: DistEnv;
  private watchdog?: NodeJS.Timeout;
  private closing?: Promise<void>;
  private reported = false;

  private constructor(id: number, env: DistEnv, onPeerFailure: ProcessGroupOptions['onPeerFailure']) {
    super();
    this.nativeId = id;
    this.env = env;
    LIVE_GROUPS.set(id, this);
    const info = callSync(() => torchAddon().distInfo(id));
    this.rank = info.rank;
    this.worldSize = info.worldSize;
    this.localRank = info.localRank;
    this.backend = info.backend as DistBackend;
    this.device = info.device;
    const policy = onPeerFailure ?? 'exit';
    if (policy !== 'none') {
      this.watchdog = setInterval(() => {
        if (this.disposed || this.reported) return;
        const f = this.failure();
        // A failure this rank announced itself is being handled by the code that announced it.
        if (!f || f.rank === this.rank) return;
        this.reported = true;
        if (typeof policy === 'function') policy(f);
        else
          exitAfterPeerFailure(`crpo: rank ${this.rank} of ${this.worldSize}: stopping because ${describeFailure(f)}`);
      }, 200);
      this.watchdog.unref();
    }
  }

  /**
   * Joins the process group described by the environment (torchrun, Slurm or crpo's launcher):
   * a TCPStore rendezvous at MASTER_ADDR:MASTER_PORT, then a Gloo or NCCL group. Resolves when
   * every rank has joined; rejects with ERR_CRPO_DIST_RENDEZVOUS after the timeout.
   */
  static async init(options: ProcessGroupOptions = {}): Promise<ProcessGroup> {
    const env = options.env ?? parseDistEnv();
    const timeoutSeconds = positive('timeoutSeconds', options.timeoutSeconds ?? PROCESS_GROUP_DEFAULTS.timeoutSeconds);
    const bucketMb = positive('bucketMb', options.bucketMb ?? PROCESS_GROUP_DEFAULTS.bucketMb, true);
    const hbi = positive(
      'heartbeatIntervalSeconds',
      options.heartbeatIntervalSeconds ?? PROCESS_GROUP_DEFAULTS.heartbeatIntervalSeconds,
    );
    const hbt = positive(
      'heartbeatTimeoutSeconds',
      options.heartbeatTimeoutSeconds ?? PROCESS_GROUP_DEFAULTS.heartbeatTimeoutSeconds,
    );
    if (hbt <= hbi)
      throw outOfRange('heartbeatTimeoutSeconds', `a number > heartbeatIntervalSeconds (${hbi})`, hbt, 'ProcessGroup');
    const requested = options.backend ?? PROCESS_GROUP_DEFAULTS.backend;
    if (!['auto', 'gloo', 'nccl'].includes(requested))
      throw outOfRange('backend', "'auto', 'gloo' or 'nccl'", requested, 'ProcessGroup');
    const addon = torchAddon();
    // Ranks on one machine share its cores: without this, spinning intra-op threads of several ranks
    // starve each other and Gloo's network threads. OMP_NUM_THREADS (torchrun sets it) or
    // CRPO_NUM_THREADS win when set (lib/threads.ts).
    if (resolveTorchThreads().source === 'cores' && env.localWorldSize > 1) {
      setTorchThreads(Math.max(1, Math.floor(os.cpus().length / env.localWorldSize)));
    }
    let backend: DistBackend = requested === 'auto' ? 'gloo' : requested;
    if (requested === 'auto' && addon.distBackends().includes('nccl') && addon.info().cudaAvailable) backend = 'nccl';
    const native: NativeDistInitOptions = {
      masterAddr: env.masterAddr,
      masterPort: env.masterPort,
      rank: env.rank,
      worldSize: env.worldSize,
      localRank: env.localRank,
      backend,
      timeoutSeconds,
      bucketMb,
      heartbeatIntervalSeconds: hbi,
      heartbeatTimeoutSeconds: hbt,
      agentStore: env.agentStore,
      restartCount: env.restartCount,
    };
    const id = await torchCall(() => addon.distInit(native));
    return new ProcessGroup(id, env, options.onPeerFailure);
  }

  /** Reduces in place across ranks: every rank ends with the sum (or mean) of all ranks' arrays. */
  allReduce(
    data: CollectiveArray | CollectiveArray[],
    op: ReduceOp = 'sum',
    options: { bucketMb?: number } = {},
  ): Promise<void> {
    this.assertLive('ProcessGroup.allReduce');
    const arrays = asArrays(data, 'data');
    if (!['sum', 'mean', 'max', 'min'].includes(op))
      throw outOfRange('op', "'sum', 'mean', 'max' or 'min'", op, 'ProcessGroup.allReduce');
    const bucket = options.bucketMb === undefined ? undefined : positive('bucketMb', options.bucketMb, true);
    return torchCall(() => torchAddon().distAllReduce(this.nativeId, arrays, op, bucket));
  }

  /** Copies root's arrays into every rank's arrays (same lengths and types on every rank). */
  broadcast(data: CollectiveArray | CollectiveArray[], root = 0): Promise<void> {
    this.assertLive('ProcessGroup.broadcast');
    const arrays = asArrays(data, 'data');
    if (!Number.isInteger(root) || root < 0 || root >= this.worldSize) {
      throw outOfRange('root', `an integer in [0, ${this.worldSize - 1}]`, root, 'ProcessGroup.broadcast');
    }
    return torchCall(() => torchAddon().distBroadcast(this.nativeId, arrays, root));
  }

  barrier(): Promise<void> {
    this.assertLive('ProcessGroup.barrier');
    return torchCall(() => torchAddon().distBarrier(this.nativeId));
  }

  /** Tells every rank that this one is failing, with why (they stop naming this rank). */
  abort(message: string): void {
    if (this.disposed) return;
    callSync(() => torchAddon().distAbort(this.nativeId, `${message}`.slice(0, 2000)));
  }

  /** The failure the heartbeat has seen, if any. */
  failure(): PeerFailure | null {
    if (this.disposed) return null;
    const f: NativePeerFailure | null = callSync(() => torchAddon().distFailure(this.nativeId));
    return f ? { rank: f.rank, message: f.message } : null;
  }

  /**
   * Totals since the group formed: seconds inside all-reduce/broadcast calls (copies, transfer and
   * waiting for the slowest rank), bytes reduced, and calls (also those made by the native train step).
   */
  commStats(): {
    seconds: number;
    bytes: number;
    calls: number;
    overlapWaitSeconds: number;
    overlapRounds: number;
    overlapBuckets: number;
    overlapEarlyBuckets: number;
  } {
    this.assertLive('ProcessGroup.commStats');
    const i = callSync(() => torchAddon().distInfo(this.nativeId));
    return {
      seconds: i.commSeconds,
      bytes: i.commBytes,
      calls: i.commCalls,
      // gradient all-reduces overlapped with backward (GradReducer rounds of the native train
      // steps) and the time they still waited after backward: the part not hidden behind it
      overlapWaitSeconds: i.overlapWaitSeconds,
      overlapRounds: i.overlapRounds,
      // buckets of those rounds, and how many of them started while backward was still running
      overlapBuckets: i.overlapBuckets,
      overlapEarlyBuckets: i.overlapEarlyBuckets,
    };
  }

  /** Orderly end (waits for every rank to finish, up to the timeout), then disposes. */
  async close(): Promise<void> {
    this.dispose();
    await this.closing;
  }

  protected release(): void {
    if (this.watchdog) clearInterval(this.watchdog);
    const id = this.nativeId;
    LIVE_GROUPS.delete(id);
    this.closing = torchCall(() => torchAddon().distShutdown(id)).catch(() => undefined);
  }
}

/**
 * The live group with native id `id` (the `processGroup` a policy's train step receives, see
 * lib/policy/policy.ts); an error naming the id when there is none in this process.
 */
export function processGroupById(id: number): ProcessGroup {
  const g = LIVE_GROUPS.get(id);
  if (!g)
    throw new CrpoError(
      'ERR_CRPO_DISPOSED',
      `process group ${id} is not live in this process (disposed, or never joined here)`,
      { op: 'processGroupById' },
    );
  return g;
}

export function describeFailure(f: PeerFailure): string {
  return f.rank === null ? f.message : `rank ${f.rank} failed: ${f.message}`;
}

/** Live native process groups (leak tests). */
export function liveProcessGroups(): number {
  return callSync(() => torchAddon().distLiveGroups());
}

/** Backends this addon was built with ('gloo', plus 'nccl' in CUDA builds). */
export function availableBackends(): DistBackend[] {
  return callSync(() => torchAddon().distBackends()) as DistBackend[];
}

export function notDistributed(what: string): CrpoError {
  return new CrpoError(
    'ERR_CRPO_DIST_ENV',
    `${what} needs a distributed launch (RANK/WORLD_SIZE or Slurm variables); none were found`,
    { op: 'dist' },
  );
}
