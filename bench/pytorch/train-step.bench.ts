/**
 * One dual-branch training step of the tiny native policy (forward over original + counterfactual
 * prompts, section-6 clipped-surrogate + k3-KL loss of crpo-method.md, backward, grad-norm
 * clipping, AdamW) vs the identical model in PyTorch-Python (bench/pytorch/policy_twin.py) with
 * the same weights. First the loss and every parameter's gradient are checked equal (the native
 * gradient is read back from AdamW's first moment after one unclipped step: m1 = (1 - beta1) g),
 * then both are timed: median of >= 5 runs after warm-up, same thread count, same machine.
 * Skipped with a message when python3-torch or the native policy is absent.
 */
import * as fs from 'fs';
import * as path from 'path';
import { describeMachine, fmt, machine, table, writeResults } from '../harness';
import type { RlCompletions } from '../../lib/model/policy';
import { TWIN_TRAIN_STEP } from '../../lib/bench/vs-pytorch';
import {
  THREAD_SETTINGS,
  TwinServer,
  applyThreadEnv,
  handOver,
  hasPolicy,
  lcg,
  loadAverage,
  makeInputs,
  pairedTiming,
  pythonTorch,
  readF32,
  tinyPolicy,
  allocatorNote,
} from './policy-fixture';

applyThreadEnv();
const QUESTIONS = 4,
  G = 8,
  WIDTH = 16;
const WARMUP = 3,
  RUNS = 15;
/** Tolerances: float32 sums over up to ~10^4 terms in a different order (BLAS blocking, fused ops). */
const LOSS_RTOL = 1e-4,
  GRAD_RTOL = 2e-3,
  GRAD_ATOL = 1e-6;
const STEP = TWIN_TRAIN_STEP;
const TITLE = '### One dual-branch training step vs PyTorch-Python (`bench/pytorch/train-step.bench.ts`)';

async function main(): Promise<void> {
  const why = pythonTorch() ?? (hasPolicy() ? null : 'the torch addon has no native policy (npm run build:torch)');
  if (why) {
    writeResults('pytorch-train-step', { skipped: true, reason: why }, `${TITLE}\n\nSkipped: ${why}.`);
    return;
  }
  const policy = await tinyPolicy();
  const cfg = policy.config;
  const inputs = makeInputs(policy, QUESTIONS, G, true);
  const P = inputs.prompts.length,
    N = P * G;
  const rand = lcg(5);
  const V = policy.tokenizer.size;
  const ids = Int32Array.from({ length: N * WIDTH }, () => 6 + Math.floor(rand() * (V - 6)));
  const lengths = Int32Array.from({ length: N }, () => 4 + Math.floor(rand() * (WIDTH - 3)));
  // Old / reference log-probs near the current ones (ratios around 1, some clipped), random advantages.
  const cur = (await policy.logprobs(inputs, { ids, lengths, width: WIDTH })).logprobs;
  const comp: RlCompletions = {
    ids,
    lengths,
    width: WIDTH,
    oldLogprobs: Float32Array.from(cur, (x) => x + (rand() - 0.5) * 0.3),
    refLogprobs: Float32Array.from(cur, (x) => x + (rand() - 0.5) * 0.3),
    advantages: Float32Array.from({ length: N }, () => (rand() - 0.5) * 2),
  };

  const dir = await handOver(
    policy,
    inputs,
    { threads: THREAD_SETTINGS[THREAD_SETTINGS.length - 1], step: STEP },
    comp,
  );
  const twin = new TwinServer(dir, 'train');
  const py = (await twin.ready()) as {
    torch: string;
    threads: number;
    parameters: number;
    check: { loss: number; gradNorm: number };
    gradNames: string[];
    gradShapes: number[][];
  };

  // Native check on a copy with the same weights: one unclipped step without decay; the gradient is m1 / (1 - beta1).
  const probe = await tinyPolicy(policy.tokenizer);
  await probe.setWeights(await policy.getWeights());
  const st = await probe.trainStep(inputs, comp, { ...STEP, weightDecay: 0, maxGradNorm: 0 });
  const opt = await probe.getOptimizerState();
  probe.dispose();
  const m1 = new Map(
    opt.tensors.filter((t) => t.name.endsWith('.exp_avg')).map((t) => [t.name.slice(0, -'.exp_avg'.length), t.data]),
  );
  const pyGrads = readF32(path.join(dir, 'py_grads.bin'));
  let at = 0,
    worstRel = 0,
    worstName = '',
    maxAbs = 0,
    checked = 0;
  const failures: string[] = [];
  py.gradNames.forEach((name, k) => {
    const n = py.gradShapes[k].reduce((a, s) => a * s, 1);
    const ref = pyGrads.subarray(at, at + n);
    at += n;
    const m = m1.get(name);
    if (!m || m.length !== n) {
      failures.push(`${name}: native has ${m ? m.length : 'no'} entries, twin ${n}`);
      return;
    }
    let diff2 = 0,
      ref2 = 0;
    for (let i = 0; i < n; i++) {
      const g = m[i] / (1 - STEP.beta1);
      const d = Math.abs(g - ref[i]);
      maxAbs = Math.max(maxAbs, d);
      diff2 += d * d;
      ref2 += ref[i] * ref[i];
      checked++;
    }
    const rel = Math.sqrt(diff2) / Math.max(Math.sqrt(ref2), GRAD_ATOL);
    if (rel > worstRel) [worstRel, worstName] = [rel, name];
    if (rel > GRAD_RTOL && Math.sqrt(diff2) > GRAD_ATOL)
      failures.push(`${name}: relative L2 difference ${rel.toExponential(2)}`);
  });
  const lossRel = Math.abs(st.loss - py.check.loss) / Math.max(Math.abs(py.check.loss), 1e-8);
  const normRel = Math.abs(st.gradNorm - py.check.gradNorm) / Math.max(py.check.gradNorm, 1e-12);
  if (lossRel > LOSS_RTOL)
    failures.unshift(`loss: native ${st.loss}, PyTorch ${py.check.loss} (rel ${lossRel.toExponential(2)})`);
  if (normRel > GRAD_RTOL) failures.unshift(`grad norm: native ${st.gradNorm}, PyTorch ${py.check.gradNorm}`);
  if (failures.length) {
    twin.close();
    throw new Error(
      `native policy and the PyTorch twin disagree (first ${Math.min(8, failures.length)} of ${failures.length}):\n  ${failures.slice(0, 8).join('\n  ')}`,
    );
  }

  const load = loadAverage();
  const timings: Awaited<ReturnType<typeof pairedTiming>>[] = [];
  const wholeRows: Awaited<ReturnType<typeof pairedTiming>>[] = [];
  for (const threads of THREAD_SETTINGS) {
    timings.push(await pairedTiming(twin, () => policy.trainStep(inputs, comp, STEP), threads, WARMUP, RUNS));
    // Like for like: the native step running every (prompt + completion) row whole, as the twin does.
    wholeRows.push(
      await pairedTiming(
        twin,
        () => policy.trainStep(inputs, comp, { ...STEP, fullSequence: true }),
        threads,
        WARMUP,
        RUNS,
      ),
    );
  }
  twin.close();
  policy.dispose();
  fs.rmSync(dir, { recursive: true, force: true });
  const speedTarget = timings[timings.length - 1];
  const speedup = speedTarget.speedup;
  // The target must hold at every thread setting, by both estimates (ratio of medians, median of paired ratios).
  const worst = Math.min(...timings.map((t) => Math.min(t.speedup, t.pairedSpeedup)));
  const tokens = Array.from(lengths).reduce((a, x) => a + x, 0);
  const json = {
    machine: machine(),
    threadSettings: THREAD_SETTINGS,
    config: cfg,
    prompts: P,
    groupSize: G,
    sequences: N,
    completionWidth: WIDTH,
    completionTokens: tokens,
    parameters: py.parameters,
    step: STEP,
    check: {
      lossNative: st.loss,
      lossPyTorch: py.check.loss,
      lossRel,
      gradNormNative: st.gradNorm,
      gradNormPyTorch: py.check.gradNorm,
      worstGradRel: worstRel,
      worstGradParam: worstName,
      maxAbsGradDiff: maxAbs,
      gradEntries: checked,
      tolerances: { LOSS_RTOL, GRAD_RTOL, GRAD_ATOL },
    },
    pytorch: { version: py.torch },
    loadAverage1m: load,
    timings,
    wholeRows,
    speedup,
    worstSpeedup: worst,
    target: 1.25,
    met: worst >= 1.25,
  };
  const md = [
    TITLE,
    '',
    `Machine: ${describeMachine(json.machine)}; load average ${load.toFixed(1)} when timing started (other work on the machine); both processes run with OMP_NUM_THREADS = threads, OPENBLAS_NUM_THREADS = 1, OMP_WAIT_POLICY = PASSIVE, ${allocatorNote()}. Tiny policy (${py.parameters.toLocaleString('en-US')} parameters; 8 frames of 32x32, 16 visual tokens, LM 2 x 96), ` +
      `${QUESTIONS} questions x 2 branches (original + hflip/reverse) x G = ${G} = ${N} sequences, prompts of 20-36 text tokens, completions of <= ${WIDTH} tokens (${tokens} in all). ` +
      `One step = vision encoder + LM forward, section-6 loss (beta = 0.04), backward, grad-norm clip, AdamW. ` +
      `Timed as ${RUNS} back-to-back pairs (one PyTorch step, one native step) after ${WARMUP} warm-up pairs, at the same intra-op thread count on both sides; speed-up = PyTorch median / native median (the median of the pairs' own ratios is shown as a check; when the two disagree, load drift dominated).`,
    '',
    `Checked first (same weights, same batch): loss ${fmt(st.loss, 6)} vs ${fmt(py.check.loss, 6)} (rel diff ${lossRel.toExponential(1)}, tolerance ${LOSS_RTOL}); ` +
      `gradients of all ${checked.toLocaleString('en-US')} entries: worst per-tensor relative L2 difference ${worstRel.toExponential(1)} (${worstName}; tolerance ${GRAD_RTOL}), max abs difference ${maxAbs.toExponential(1)}.`,
    '',
    table(
      [
        'threads',
        `PyTorch ${py.torch} eager (Python twin), median ms / step`,
        'crpo native policy (lib/model Policy.trainStep, from Node), median ms / step',
        'speed-up',
        'median of paired ratios',
        'spread (max-min)/median PyTorch / native',
        'native, whole rows (fullSequence), ms / step',
        'speed-up, whole rows',
      ],
      timings.map((t, i) => [
        t.threads,
        fmt(t.pytorchMs, 1),
        fmt(t.nativeMs, 1),
        fmt(t.speedup, 2),
        fmt(t.pairedSpeedup, 2),
        `${fmt(t.pytorchSpread, 2)} / ${fmt(t.nativeSpread, 2)}`,
        fmt(wholeRows[i].nativeMs, 1),
        fmt(wholeRows[i].speedup, 2),
      ]),
    ),
    '',
    `Target >= 1.25x (at ${speedTarget.threads} threads; lowest ratio over both thread settings: ${fmt(worst, 2)}): ${json.met ? 'met' : 'not met'}. ` +
      'Where the difference comes from: the G = 8 completions of a prompt share its prefix (16 visual + 20-36 prompt tokens, longer than the completions). ' +
      'The native step runs each prefix once per prompt and lets the G completions attend to its keys and values (exact: a prefix token never attends to a completion; gradients flow back through the shared keys and values), ' +
      "while the twin, like the usual PyTorch RL loop, runs all 64 (prefix + completion) rows whole. The last two columns are the like-for-like comparison: the native step with `fullSequence: true` does the twin's exact work; " +
      'there it saves the per-op Python overhead, the copies of grouped keys/values per query head (it reads them in place), and the ~600 small ops and 60 host syncs of the per-tensor grad-norm clip + AdamW (one fused pass per tensor instead; tested against the per-tensor twin and torch::optim::AdamW in test/numerics/policy-fast-paths.test.ts), ' +
      `measured here as a whole-rows speed-up of ${wholeRows.map((w) => fmt(w.speedup, 2)).join(' / ')} (1 / 2 threads): ${Math.max(...wholeRows.map((w) => w.speedup)) < 1.15 ? 'at this size the matmuls dominate and those savings are small, so the speed-up above comes from sharing the prefix' : 'part of the speed-up above, the rest from sharing the prefix'}. ` +
      'With other jobs on the machine the 2-thread ratio is the less stable one; compare rows of the same run.',
  ].join('\n');
  writeResults('pytorch-train-step', json, md);
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
