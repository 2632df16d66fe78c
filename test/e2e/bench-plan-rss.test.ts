/**
 * `crpo bench plan`'s formulas against memory actually used: the native policy at two sizes (11.6 M
 * and 45.6 M parameters) runs `crpo bench rollout`'s CRPO steps in a fresh process under the
 * training malloc settings (lib/cli/relaunch.ts), and the plan of the same shape and batch must
 * predict its peak RSS within 15%. At these sizes the resident terms dominate; the activation term
 * is not what this checks. The runtime itself (Node, libtorch, BLAS buffers, thread
 * stacks: ~50 MiB over the process's start, which the plan does not count) is taken out by
 * measuring the same steps on the tiny preset and subtracting both peaks and both predictions.
 */
import { spawnSync } from 'child_process';
import * as path from 'path';
import { hasAddon } from '../../lib/native';
import { TRAINING_MALLOC_ENV } from '../../lib/cli/relaunch';
import { skipIf } from '../helpers/skip';

const root = path.resolve(__dirname, '../..');
const register = path.join(root, 'scripts/ts-register.js');
// Two train steps: the peak includes two weight read-backs of the step digest (see lib/bench/plan.ts).
// One prompt, G = G' = 2: weights, reference, gradients, optimizer state and the digest copies dominate
// (the activation term is not validated by this test; docs/real-models.md gives a measured case).
const RUN = { batch: 1, groupSize: 2, maxNewTokens: 8, steps: 1, warmup: 1 };

interface Measured {
  params: number;
  measuredMiB: number;
  predictedMiB: number;
  /** The previous step's weight read-back, alive or not depending on V8's collection (plan term 'digestPrevious'). */
  gcMiB: number;
}

/** One fresh process: bench rollout steps on a native shape, then the plan of that shape. */
function measure(shape: Record<string, number>): Measured {
  const code = `
    const { benchRollout } = require(${JSON.stringify(path.join(root, 'lib/bench/rollout.ts'))});
    const { planMemory } = require(${JSON.stringify(path.join(root, 'lib/bench/plan.ts'))});
    (async () => {
      const run = ${JSON.stringify(RUN)};
      const r = await benchRollout(run, { nativeShape: ${JSON.stringify(shape)} });
      const { seed, dtype, device, ...native } = r.policy.config;
      const plan = planMemory({
        model: { native }, batch: run.batch, groupSize: run.groupSize, promptTokens: r.policy.promptTokens,
        maxNewTokens: run.maxNewTokens, dtype: 'float32', checkpointing: false,
      });
      const measuredMiB = r.peakRssMiB - r.baseRssMiB, predictedMiB = plan.peakBytes / 2 ** 20;
      const gcMiB = plan.terms.find((t) => t.name === 'digestPrevious').bytes / 2 ** 20;
      process.stdout.write(JSON.stringify({ params: r.policy.parameters, measuredMiB, predictedMiB, gcMiB }));
    })().catch((e) => { console.error(e); process.exit(1); });`;
  const r = spawnSync(process.execPath, ['-r', register, '-e', code], {
    cwd: root,
    env: { ...process.env, ...TRAINING_MALLOC_ENV },
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`measurement failed (${r.status}): ${r.stderr.slice(-2000)}`);
  return JSON.parse(r.stdout) as Measured;
}

// Peak RSS of these runs moved between 203 and 328 MiB for the same 11.6 M shape across runs on
// the shared 2-core machine (V8's collection of the weight read-backs, the allocator), so the
// check is opt-in: CRPO_MEMORY_TESTS=1 npx jest test/e2e/bench-plan-rss.test.ts on a quiet machine.
const reason = !hasAddon('torch')
  ? 'the torch addon is not built (npm run build:torch)'
  : process.env.CRPO_MEMORY_TESTS !== '1'
    ? 'peak-RSS checks are opt-in (CRPO_MEMORY_TESTS=1): their measurements are not stable on a shared machine'
    : undefined;
skipIf(reason).describe(`bench plan vs measured peak RSS`, () => {
  it('predicts the memory of two native policy sizes within 15%', () => {
    const runtime = measure({});
    expect(runtime.params).toBeLessThan(1e6);
    const shapes = [
      { lmDim: 512, lmLayers: 4, lmHeads: 8, lmKvHeads: 2, lmMlp: 1408 },
      { lmDim: 1024, lmLayers: 4, lmHeads: 8, lmKvHeads: 2, lmMlp: 2816 },
    ];
    const rows = shapes.map((s) => {
      const m = measure(s);
      const measured = m.measuredMiB - runtime.measuredMiB,
        predicted = m.predictedMiB - runtime.predictedMiB;
      // Within 15% of the plan's peak, or of the peak plus the one copy whose lifetime is up to V8's GC.
      const ratio = predicted / measured,
        ratioWithGc = (predicted + m.gcMiB) / measured;
      const ok = (ratio > 0.85 && ratio < 1.15) || (ratioWithGc > 0.85 && ratioWithGc < 1.15);
      const mib = { measured: Math.round(measured), predicted: Math.round(predicted) };
      return { params: m.params, ...mib, ratio, ratioWithGc, ok };
    });
    process.stderr.write(`plan vs measured (MiB above the tiny preset's run): ${JSON.stringify(rows)}\n`);
    expect(rows[0].params).toBeGreaterThan(1e7);
    expect(rows[1].params).toBeGreaterThan(4e7);
    for (const r of rows) expect(r).toEqual({ ...r, ok: true });
  });
});
