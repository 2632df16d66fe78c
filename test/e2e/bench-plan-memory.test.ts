/**
 * `crpo bench plan`'s native formulas (lib/bench/plan.ts) against memory measured on the CPU:
 * `crpo bench rollout`'s CRPO steps on two native configurations (lib/bench/memory.ts
 * measureRolloutMemory), one where the update's activations dominate (the tiny preset at B 4,
 * G = G' = 4) and one where weights, reference and optimizer state weigh as much as the activations
 * (an 11.6 M LM of 4 x 512 at B 2, G = G' = 4). Checked: the peak bytes of libtorch CPU tensors
 * above the baseline (taken after a warm-up run, before the model exists), counted on libtorch's
 * allocator (native/torch/tensor_bytes.cpp): exact and the same in every run, so the plan's tensor
 * terms must be within 15% of it. Printed, not checked: the process's peak resident set above the
 * same baseline (VmHWM, glibc set to hand freed blocks back to the OS). It follows the tensors plus
 * JS memory, and moves by tens of MiB between runs with V8's heap and when it collects the JS
 * copies of the weight read-back, even below the baseline at the tiny size (docs/benchmarks.md).
 * Not a timing test: one thread, one measured step per configuration, one process.
 */
import { spawnSync } from 'child_process';
import * as path from 'path';
import { hasAddon } from '../../lib/native';
import type { RolloutMemoryMeasurement } from '../../lib/bench/memory';
import { skipIf } from '../helpers/skip';

const root = path.resolve(__dirname, '../..');
const register = path.join(root, 'scripts/ts-register.js');
const MiB = 2 ** 20;

/**
 * One intra-op thread (the same work on a shared machine, no per-thread BLAS buffers), and glibc
 * handing freed blocks of 64 KiB and more back to the OS, so that the printed resident set follows
 * live memory (CRPO_MALLOC=default: the addon leaves these settings alone).
 */
const MEASURE_ENV = {
  OMP_NUM_THREADS: '1',
  OPENBLAS_NUM_THREADS: '1',
  CRPO_NUM_THREADS: '1',
  CRPO_MALLOC: 'default',
  MALLOC_ARENA_MAX: '1',
  MALLOC_MMAP_THRESHOLD_: String(64 << 10),
  MALLOC_TRIM_THRESHOLD_: String(128 << 10),
};

interface Case {
  name: string;
  run: Record<string, number>;
  shape: Record<string, number>;
}

const CASES: Case[] = [
  { name: "tiny preset, B 4, G = G' = 4", run: { batch: 4, groupSize: 4, maxNewTokens: 16 }, shape: {} },
  {
    name: "LM 4 x 512 (11.6 M), B 2, G = G' = 4",
    run: { batch: 2, groupSize: 4, maxNewTokens: 16 },
    shape: { lmDim: 512, lmLayers: 4, lmHeads: 8, lmKvHeads: 2, lmMlp: 1408 },
  },
];

/** One fresh process runs every case in turn (the tensor count starts again at each recorder). */
function measureAll(cases: readonly Case[]): RolloutMemoryMeasurement[] {
  const code = `
    const { measureRolloutMemory } = require(${JSON.stringify(path.join(root, 'lib/bench/memory.ts'))});
    (async () => {
      const out = [];
      for (const c of ${JSON.stringify(cases)})
        out.push(await measureRolloutMemory({ ...c.run, steps: 1, warmup: 0 }, c.shape));
      process.stdout.write(JSON.stringify(out));
    })().catch((e) => { console.error(e); process.exit(1); });`;
  const r = spawnSync(process.execPath, ['--expose-gc', '-r', register, '-e', code], {
    cwd: root,
    env: { ...process.env, ...MEASURE_ENV },
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`measurement failed (${r.status}): ${r.stderr.slice(-2000)}`);
  return JSON.parse(r.stdout) as RolloutMemoryMeasurement[];
}

const reason = hasAddon('torch') ? undefined : 'the torch addon is not built (npm run build:torch)';
const inRange = (ratio: number) => ratio >= 0.85 && ratio <= 1.15;
const mib = (bytes: number | undefined) => (bytes === undefined ? NaN : +(bytes / MiB).toFixed(1));

skipIf(reason).describe('bench plan vs measured memory (native policy, CPU)', () => {
  it('predicts the peak tensor bytes of two native configurations within 15%', () => {
    const measured = measureAll(CASES);
    const rows = CASES.map((c, i) => {
      const m = measured[i];
      const rec = m.record,
        plan = m.plan;
      const tensorRatio = +(plan.tensorPeakBytes / rec.tensorPeakBytes).toFixed(3);
      const rssRatio = +(plan.peakBytes / (rec.rssPeakBytes ?? NaN)).toFixed(3);
      return {
        case: c.name,
        params: m.parameters,
        tensorMiB: { measured: mib(rec.tensorPeakBytes), predicted: mib(plan.tensorPeakBytes), ratio: tensorRatio },
        rssMiB: { measured: mib(rec.rssPeakBytes), predicted: mib(plan.peakBytes), ratio: rssRatio },
        phasesMiB: Object.fromEntries(rec.phases.map((p) => [p.name, [mib(p.tensorPeakBytes), mib(p.rssPeakBytes)]])),
        planMiB: Object.fromEntries(plan.terms.map((t) => [t.name, mib(t.bytes)])),
        ok: inRange(tensorRatio),
      };
    });
    // The figures, for the record (phasesMiB: [tensor peak, resident-set peak] per phase).
    process.stderr.write(`bench plan vs measured memory:\n${JSON.stringify(rows, null, 1)}\n`);
    expect(rows[0].params).toBeLessThan(1e6);
    expect(rows[1].params).toBeGreaterThan(1e7);
    for (const r of rows) {
      const { case: name, tensorMiB, ok } = r;
      expect({ name, tensorMiB, ok }).toEqual({ name, tensorMiB, ok: true });
    }
  }, 180_000);
});
