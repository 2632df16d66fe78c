/**
 * The only file that loads a `.node` binary. The typed interface of the whole native surface
 * (`any` stops there) is declared in lib/native-types.ts and re-exported here; this file finds
 * each addon, explains a missing one in one message with the exact fix, serialises torch work on
 * one queue (`torchCall`), and re-wraps results and errors in the caller's realm (jest's vm
 * contexts; see native-notes.md).
 *
 * Two addons share one set of kernel sources (native/kernels/cpu):
 *   core  - libtorch-free, built by node-gyp on every install (data, routing, rewards, eval)
 *   torch - libtorch, built by cmake-js when libtorch is found (training, CUDA)
 * and one test-only addon beside torch, crpo_torch_checks.node (the native policy's checks).
 */
import * as fs from 'fs';
import * as path from 'path';
import { CrpoError, fromNative } from './errors';
import type {
  AddonName,
  CoreAddon,
  FrameArray,
  NativeCrrInputs,
  NativeCrrOutputs,
  NativeGrpoInputs,
  NativeGrpoOutputs,
  NativeVideoTransformOptions,
  OpsAddon,
  TorchAddon,
  TorchChecksAddon,
  TorchInfo,
} from './native-types';
import { resolveTorchThreads } from './threads';

export type * from './native-types';

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

const ROOT = path.resolve(__dirname, '..');

const ADDON_FILES: Record<AddonName, { file: string; dirs: string[]; env: string }> = {
  core: { file: 'crpo_core.node', dirs: ['build/Release', 'build/Debug'], env: 'CRPO_CORE_ADDON' },
  torch: {
    file: 'crpo_torch.node',
    dirs: ['build-torch/Release', 'build-torch/Debug', 'build-torch'],
    env: 'CRPO_TORCH_ADDON',
  },
};

export interface AddonStatus {
  name: AddonName;
  loaded: boolean;
  path?: string;
  /** Why it could not be loaded, with the fix. */
  error?: string;
}

const loaded = new Map<AddonName, { addon: unknown; path: string }>();
const failures = new Map<AddonName, string>();
/** Errors of the environment that keep an addon from loading (a malformed OMP_NUM_THREADS), rethrown as they are. */
const setupErrors = new Map<AddonName, CrpoError>();

function candidatePaths(name: AddonName): string[] {
  const spec = ADDON_FILES[name];
  const list: string[] = [];
  const override = process.env[spec.env];
  if (override) list.push(path.resolve(override));
  for (const d of spec.dirs) list.push(path.join(ROOT, d, spec.file));
  return list;
}

function fixFor(name: AddonName, reason: string): string {
  if (name === 'core') {
    return `crpo core addon not available (${reason}). Fix: install a C++ compiler (apt-get install g++ make python3) and run 'npm run build:core' in ${ROOT}`;
  }
  if (/libtorch|libc10|libtorch_cpu/.test(reason)) {
    return `crpo torch addon cannot load libtorch (${reason}). Fix: apt-get install libtorch-dev, or set LIBTORCH=/path/to/libtorch and run 'npm run build:torch'`;
  }
  return `crpo torch addon not available (${reason}). Fix: apt-get install libtorch-dev, or set LIBTORCH=/path/to/libtorch (e.g. a CUDA build), then run 'npm run build:torch' in ${ROOT}`;
}

function tryLoad(name: AddonName): { addon: unknown; path: string } | undefined {
  const hit = loaded.get(name);
  if (hit) return hit;
  if (failures.has(name)) return undefined;
  const tried: string[] = [];
  for (const p of candidatePaths(name)) {
    if (!fs.existsSync(p)) {
      tried.push(p);
      continue;
    }
    // OMP_NUM_THREADS, then CRPO_NUM_THREADS, then all the cores (libtorch's own default is half
    // of them, per OS thread). A malformed variable keeps the addon unloaded with its own error.
    let threads: number | undefined;
    if (name === 'torch') {
      try {
        threads = resolveTorchThreads().threads;
      } catch (err) {
        setupErrors.set(name, err as CrpoError);
        failures.set(name, (err as Error).message);
        return undefined;
      }
    }
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const addon = require(p) as unknown;
      if (threads !== undefined) (addon as TorchAddon).setNumThreads(threads);
      const entry = { addon, path: p };
      loaded.set(name, entry);
      return entry;
    } catch (err) {
      failures.set(name, fixFor(name, `${p}: ${(err as Error).message.split('\n')[0]}`));
      return undefined;
    }
  }
  failures.set(name, fixFor(name, `not built; looked in ${tried.join(', ')}`));
  return undefined;
}

/** Which addons load, from where, or why not. Never throws. */
export function addonStatus(): AddonStatus[] {
  return (['core', 'torch'] as AddonName[]).map((name) => {
    const hit = tryLoad(name);
    return hit ? { name, loaded: true, path: hit.path } : { name, loaded: false, error: failures.get(name) };
  });
}

export function hasAddon(name: AddonName): boolean {
  return tryLoad(name) !== undefined;
}

function raw<T>(name: AddonName): T {
  const hit = tryLoad(name);
  const setup = setupErrors.get(name);
  if (!hit && setup) throw new CrpoError(setup.code, setup.message);
  if (!hit) throw new CrpoError('ERR_CRPO_ADDON_MISSING', failures.get(name) ?? `crpo ${name} addon not available`);
  return hit.addon as T;
}

// ---------------------------------------------------------------------------------------------
// Realm-safe wrappers
// ---------------------------------------------------------------------------------------------

type AnyTyped = Uint8Array | Float32Array | Int32Array;

/** A view of the same memory built with this realm's constructors. */
export function rewrap<T extends AnyTyped>(x: T): T {
  if (x instanceof Uint8Array || x instanceof Float32Array || x instanceof Int32Array) return x;
  const tag = Object.prototype.toString.call(x);
  const v = x as unknown as { buffer: ArrayBuffer; byteOffset: number; length: number };
  if (tag === '[object Uint8Array]') return new Uint8Array(v.buffer, v.byteOffset, v.length) as T;
  if (tag === '[object Float32Array]') return new Float32Array(v.buffer, v.byteOffset, v.length) as T;
  if (tag === '[object Int32Array]') return new Int32Array(v.buffer, v.byteOffset, v.length) as T;
  return x;
}

function rewrapObject<T extends object>(o: T): T {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) out[k] = ArrayBuffer.isView(v) ? rewrap(v as AnyTyped) : v;
  return out as T;
}

/** Calls a synchronous native function; errors come back in this realm. */
export function callSync<R>(fn: () => R): R {
  try {
    return fn();
  } catch (err) {
    throw fromNative(err, new Error().stack);
  }
}

/** Awaits a native promise; errors come back in this realm with the caller's stack. */
export function callAsync<R>(fn: () => Promise<R>): Promise<R> {
  return awaitNative(fn, new Error().stack);
}

async function awaitNative<R>(fn: () => Promise<R>, stack: string | undefined): Promise<R> {
  let p: Promise<R>;
  try {
    p = fn();
  } catch (err) {
    throw fromNative(err, stack);
  }
  try {
    return await p;
  } catch (err) {
    throw fromNative(err, stack);
  }
}

/**
 * One serial queue for all torch work: several libtorch calls at once would each start an
 * OpenMP team and oversubscribe the cores (native-notes.md).
 */
class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();
  private pending = 0;

  run<R>(job: () => Promise<R>): Promise<R> {
    this.pending++;
    const next = this.tail.then(job, job);
    this.tail = next.then(
      () => undefined,
      () => undefined,
    );
    return next.finally(() => {
      this.pending--;
    });
  }

  get size(): number {
    return this.pending;
  }
}

export const torchQueue = new SerialQueue();

/**
 * One asynchronous torch call: queued behind the other torch work (torchQueue), its errors
 * re-created in this realm with the stack of the code that called torchCall (captured here,
 * before the queue: inside the job only the queue's own frames would remain).
 */
export function torchCall<R>(fn: () => Promise<R>): Promise<R> {
  const stack = new Error().stack;
  return torchQueue.run(() => awaitNative(fn, stack));
}

/** Typed, realm-safe facade over one addon's op functions. */
export interface Ops {
  readonly kind: AddonName;
  videoTransform(input: FrameArray, options: NativeVideoTransformOptions): Promise<FrameArray>;
  videoTransformSync(input: FrameArray, options: NativeVideoTransformOptions): FrameArray;
  crrAdvantages(inputs: NativeCrrInputs): Promise<NativeCrrOutputs>;
  crrAdvantagesSync(inputs: NativeCrrInputs): NativeCrrOutputs;
  grpoAdvantagesSync(inputs: NativeGrpoInputs): NativeGrpoOutputs;
}

function makeOps(name: AddonName): Ops {
  const a = raw<OpsAddon>(name);
  // Torch work waits its turn on the torch queue; the core addon's workers run at once.
  const call = name === 'torch' ? torchCall : callAsync;
  return {
    kind: name,
    videoTransform: (input, options) =>
      call(() => a.videoTransform(input, options)).then((out) => (options.output ? options.output : rewrap(out))),
    videoTransformSync: (input, options) => {
      const out = callSync(() => a.videoTransformSync(input, options));
      return options.output ? options.output : rewrap(out);
    },
    crrAdvantages: (inputs) =>
      call(() => a.crrAdvantages(inputs)).then((r) =>
        inputs.out ? (inputs.out as NativeCrrOutputs) : rewrapObject(r),
      ),
    crrAdvantagesSync: (inputs) => {
      const r = callSync(() => a.crrAdvantagesSync(inputs));
      return inputs.out ? (inputs.out as NativeCrrOutputs) : rewrapObject(r);
    },
    grpoAdvantagesSync: (inputs) => rewrapObject(callSync(() => a.grpoAdvantagesSync(inputs))),
  };
}

const opsCache = new Map<AddonName, Ops>();

/** The op functions of one addon; throws ERR_CRPO_ADDON_MISSING with the fix when absent. */
export function ops(name: AddonName = 'core'): Ops {
  let o = opsCache.get(name);
  if (!o) {
    o = makeOps(name);
    opsCache.set(name, o);
  }
  return o;
}

/** The torch addon's raw surface, for library modules that wrap model and training calls. */
export function torchAddon(): TorchAddon {
  return raw<TorchAddon>('torch');
}

let checksAddon: TorchChecksAddon | undefined;

/**
 * The test-only addon crpo_torch_checks.node, built beside crpo_torch.node (CMakeLists.txt) and
 * linked against it: the torch addon is loaded first, so that both share one copy of the model code.
 */
export function torchChecksAddon(): TorchChecksAddon {
  if (checksAddon) return checksAddon;
  raw<TorchAddon>('torch');
  const file = path.join(path.dirname(loaded.get('torch')!.path), 'crpo_torch_checks.node');
  if (!fs.existsSync(file))
    throw new CrpoError(
      'ERR_CRPO_ADDON_MISSING',
      `crpo torch checks addon not built (looked for ${file}, beside the torch addon). Fix: run 'npm run build:torch' in ${ROOT}`,
    );
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    checksAddon = require(file) as TorchChecksAddon;
  } catch (err) {
    throw new CrpoError(
      'ERR_CRPO_ADDON_MISSING',
      `crpo torch checks addon cannot load (${file}: ${(err as Error).message.split('\n')[0]}). Fix: run 'npm run build:torch' in ${ROOT}`,
    );
  }
  return checksAddon;
}

/** The core addon's raw surface (baseline reward kernels; lib/reward/baselines.ts wraps it). */
export function coreAddon(): CoreAddon {
  return raw<CoreAddon>('core');
}

/** libtorch run information (version, CUDA, threads, build config). */
export function torchInfo(): TorchInfo {
  return callSync(() => torchAddon().info());
}

/** Sets libtorch's intra-op thread count for every torch worker thread. */
export function setTorchThreads(threads: number): void {
  callSync(() => torchAddon().setNumThreads(threads));
}

// ---------------------------------------------------------------------------------------------
// Live native handles (models, optimizers, process groups): counted so leak tests can check.
// ---------------------------------------------------------------------------------------------

let liveHandles = 0;

/** Base for JS objects that own a native resource; dispose() is idempotent. */
export abstract class NativeHandle {
  private disposedFlag = false;

  protected constructor() {
    liveHandles++;
  }

  get disposed(): boolean {
    return this.disposedFlag;
  }

  protected assertLive(what: string): void {
    if (this.disposedFlag) throw new CrpoError('ERR_CRPO_DISPOSED', `${what} was used after dispose()`);
  }

  dispose(): void {
    if (this.disposedFlag) return;
    this.disposedFlag = true;
    liveHandles--;
    this.release();
  }

  /** Frees the native resource. Called once. */
  protected abstract release(): void;
}

export function liveHandleCount(): number {
  return liveHandles;
}
