/**
 * Memory of a run, phase by phase, as `crpo bench plan` predicts it (lib/bench/plan.ts): the bytes
 * of libtorch CPU tensors, counted on libtorch's allocator (native/torch/tensor_bytes.cpp; the
 * CPU analogue of CUDA's max allocated: what tensors asked for, without the C library's overhead or
 * fragmentation), and the process's resident set (Linux /proc/self/status VmRSS and VmHWM; the
 * high-water mark is reset at every phase through /proc/self/clear_refs, so each phase gets its own
 * peak). Both are taken above a baseline read when the recorder starts: after the addon has loaded
 * and the runtime has warmed up (thread pools, BLAS buffers), before the model exists.
 */
import * as fs from 'fs';
import { CrpoError } from '../errors';
import { torchAddon, callSync, type TensorBytesStats } from '../native';

/** Peaks of one phase (the largest over its repetitions), bytes above the recorder's baseline. */
export interface PhaseMemory {
  name: string;
  tensorPeakBytes: number;
  /** Undefined where /proc/self is not available (not Linux) or the peak could not be reset. */
  rssPeakBytes?: number;
  /** Tensor bytes still alive when the phase ended (above the baseline). */
  tensorLiveAfterBytes: number;
}

export interface MemoryRecord {
  /** Tensor bytes alive and resident set at the baseline. */
  baseline: { tensorBytes: number; rssBytes?: number };
  phases: PhaseMemory[];
  /** The peaks over the whole recording, above the baseline. */
  tensorPeakBytes: number;
  rssPeakBytes?: number;
}

function tensorBytes(o: { install?: boolean; resetPeak?: boolean } = {}): TensorBytesStats {
  return callSync(() => torchAddon().tensorBytes(o));
}

/** VmRSS and VmHWM of this process in bytes, or undefined without /proc. */
function procMemory(): { rss: number; hwm: number } | undefined {
  let text: string;
  try {
    text = fs.readFileSync('/proc/self/status', 'utf8');
  } catch {
    return undefined;
  }
  const kib = (key: string) => {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text);
    return m ? Number(m[1]) * 1024 : NaN;
  };
  const r = { rss: kib('VmRSS'), hwm: kib('VmHWM') };
  return Number.isFinite(r.rss) && Number.isFinite(r.hwm) ? r : undefined;
}

/** Resets VmHWM to the current VmRSS (Linux >= 4.0: "5" into clear_refs); false when refused. */
function resetHighWater(): boolean {
  try {
    fs.writeFileSync('/proc/self/clear_refs', '5');
    return true;
  } catch {
    return false;
  }
}

/**
 * Records phase peaks. Create it before the model (it installs the tensor counter, which counts
 * only tensors allocated after it), call `begin(name)` / `end(name)` around each phase, then
 * `result()`. Phases may repeat (one per step); each keeps its largest peak.
 */
export class MemoryRecorder {
  private readonly base: { tensorBytes: number; rssBytes?: number };
  private readonly rssWorks: boolean;
  private readonly phases = new Map<string, PhaseMemory>();
  private open?: string;

  constructor() {
    tensorBytes({ install: true });
    // Garbage of earlier work would be collected during the recording and lower the resident set
    // below the baseline: collect it first where the process allows it (node --expose-gc).
    (globalThis as { gc?: () => void }).gc?.();
    const mem = procMemory();
    this.rssWorks = mem !== undefined && resetHighWater();
    this.base = { tensorBytes: tensorBytes({ resetPeak: true }).liveBytes, rssBytes: mem?.rss };
  }

  begin(name: string): void {
    if (this.open !== undefined)
      throw new CrpoError('ERR_CRPO_USAGE', `MemoryRecorder.begin('${name}'): phase '${this.open}' is still open`);
    this.open = name;
    tensorBytes({ resetPeak: true });
    if (this.rssWorks) resetHighWater();
  }

  end(name: string): void {
    if (this.open !== name)
      throw new CrpoError(
        'ERR_CRPO_USAGE',
        `MemoryRecorder.end('${name}'): the open phase is '${this.open ?? 'none'}'`,
      );
    this.open = undefined;
    const t = tensorBytes();
    const mem = this.rssWorks ? procMemory() : undefined;
    const p: PhaseMemory = {
      name,
      tensorPeakBytes: t.peakBytes - this.base.tensorBytes,
      tensorLiveAfterBytes: t.liveBytes - this.base.tensorBytes,
      rssPeakBytes: mem && this.base.rssBytes !== undefined ? mem.hwm - this.base.rssBytes : undefined,
    };
    const old = this.phases.get(name);
    if (!old) {
      this.phases.set(name, p);
      return;
    }
    old.tensorPeakBytes = Math.max(old.tensorPeakBytes, p.tensorPeakBytes);
    old.tensorLiveAfterBytes = Math.max(old.tensorLiveAfterBytes, p.tensorLiveAfterBytes);
    if (old.rssPeakBytes !== undefined && p.rssPeakBytes !== undefined)
      old.rssPeakBytes = Math.max(old.rssPeakBytes, p.rssPeakBytes);
  }

  result(): MemoryRecord {
    const phases = [...this.phases.values()];
    const rss = phases.map((p) => p.rssPeakBytes).filter((x): x is number => x !== undefined);
    return {
      baseline: { ...this.base },
      phases,
      tensorPeakBytes: Math.max(0, ...phases.map((p) => p.tensorPeakBytes)),
      rssPeakBytes: rss.length === phases.length && rss.length > 0 ? Math.max(...rss) : undefined,
    };
  }
}

/** What measureRolloutMemory ran and measured, with the plan of the same shape and batch. */
export interface RolloutMemoryMeasurement {
  parameters: number;
  /** The native shape that ran (the plan's model), and the longest prompt in tokens. */
  shape: import('./plan').NativeShape;
  promptTokens: number;
  record: MemoryRecord;
  plan: import('./plan').PlanResult;
}

/**
 * `crpo bench rollout`'s CRPO steps on a native policy shape with a MemoryRecorder, after a warm-up
 * run of the tiny preset in the same process (libtorch's thread pools, BLAS buffers and the JIT are
 * then in the baseline), and the plan of the same shape and batch. Run it in a fresh process.
 */
export async function measureRolloutMemory(
  run: Partial<import('./rollout').RolloutBenchConfig>,
  shape: Partial<import('../model').PolicyConfig> = {},
): Promise<RolloutMemoryMeasurement> {
  /* eslint-disable @typescript-eslint/no-require-imports */
  const { benchRollout } = require('./rollout') as typeof import('./rollout');
  const { planMemory } = require('./plan') as typeof import('./plan');
  await benchRollout({ batch: 1, groupSize: 2, maxNewTokens: 4, steps: 1, warmup: 0, frames: run.frames });
  // With node --expose-gc: the warm-up's garbage collected, and time for V8 to hand its pages back.
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc) {
    gc();
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  const recorder = new MemoryRecorder();
  const r = await benchRollout({ ...run, policy: 'native' }, { nativeShape: shape, memory: recorder });
  const { seed: _s, dtype: _d, device: _v, ...native } = r.policy.config!;
  void [_s, _d, _v];
  const plan = planMemory({
    model: { native },
    batch: r.config.batch,
    groupSize: r.config.groupSize,
    cfGroupSize: r.config.cfGroupSize,
    promptTokens: r.policy.promptTokens,
    maxNewTokens: r.config.maxNewTokens,
    dtype: 'float32',
    checkpointing: false,
  });
  return {
    parameters: r.policy.parameters,
    shape: native,
    promptTokens: r.policy.promptTokens!,
    record: recorder.result(),
    plan,
  };
}
