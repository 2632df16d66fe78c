/**
 * Rollout generation of the tiny native policy (KV-cached sampling, nanoGPT-style tokens/s) vs
 * the same model's KV-cached sampling loop in PyTorch-Python (bench/pytorch/policy_twin.py), with
 * the same weights, B x G = 64 sequences. Checked first: greedy decoding gives the same tokens
 * and log-probs on both sides; then temperature-1 sampling is timed (no stop token, so both
 * produce exactly 64 x maxNewTokens tokens): median of >= 5 runs after warm-up, same threads.
 * Skipped with a message when python3-torch or the native policy is absent.
 */
import * as fs from 'fs';
import * as path from 'path';
import { describeMachine, fmt, machine, table, writeResults } from '../harness';
import {
  THREAD_SETTINGS,
  TwinServer,
  applyThreadEnv,
  handOver,
  hasPolicy,
  loadAverage,
  makeInputs,
  pairedTiming,
  pythonTorch,
  readF32,
  readI32,
  tinyPolicy,
  allocatorNote,
} from './policy-fixture';

applyThreadEnv();
const PROMPTS = 8,
  G = 8,
  MAX_NEW = 32;
const WARMUP = 3,
  RUNS = 15;
const LOGP_ATOL = 1e-4;
const TITLE = '### Rollout generation vs PyTorch-Python (`bench/pytorch/generate.bench.ts`)';

async function main(): Promise<void> {
  const why = pythonTorch() ?? (hasPolicy() ? null : 'the torch addon has no native policy (npm run build:torch)');
  if (why) {
    writeResults('pytorch-generate', { skipped: true, reason: why }, `${TITLE}\n\nSkipped: ${why}.`);
    return;
  }
  const policy = await tinyPolicy();
  const cfg = policy.config;
  const inputs = makeInputs(policy, PROMPTS, G, false, 23);
  const N = PROMPTS * G;
  const dir = await handOver(policy, inputs, {
    threads: THREAD_SETTINGS[THREAD_SETTINGS.length - 1],
    maxNewTokens: MAX_NEW,
    temperature: 1.0,
  });
  const twin = new TwinServer(dir, 'generate');
  const py = (await twin.ready()) as { torch: string; threads: number; parameters: number };

  // Greedy decoding: same tokens; log-probs equal up to float32 reordering.
  const greedy = await policy.generate(inputs, { maxNewTokens: MAX_NEW, greedy: true, stop: [] });
  const pyTok = readI32(path.join(dir, 'py_greedy_tokens.bin')),
    pyLp = readF32(path.join(dir, 'py_greedy_logprobs.bin'));
  let firstDiverge = -1,
    sameTokens = 0,
    maxLp = 0;
  for (let r = 0; r < N; r++) {
    for (let s = 0; s < MAX_NEW; s++) {
      const i = r * MAX_NEW + s;
      if (greedy.ids[i] !== pyTok[i]) {
        if (firstDiverge < 0) firstDiverge = i;
        break; // after a divergence the two sequences condition on different tokens
      }
      sameTokens++;
      maxLp = Math.max(maxLp, Math.abs(greedy.logprobs[i] - pyLp[i]));
    }
  }
  const total = N * MAX_NEW;
  if (sameTokens !== total || maxLp > LOGP_ATOL) {
    twin.close();
    throw new Error(
      `native and PyTorch greedy decoding disagree: ${sameTokens}/${total} tokens equal` +
        (firstDiverge >= 0
          ? ` (first difference at sequence ${Math.floor(firstDiverge / MAX_NEW)}, step ${firstDiverge % MAX_NEW})`
          : '') +
        `, max log-prob difference ${maxLp.toExponential(2)} (tolerance ${LOGP_ATOL})`,
    );
  }

  const load = loadAverage();
  const timings = [];
  for (const threads of THREAD_SETTINGS)
    timings.push(
      await pairedTiming(
        twin,
        () => policy.generate(inputs, { maxNewTokens: MAX_NEW, temperature: 1.0, stop: [] }),
        threads,
        WARMUP,
        RUNS,
      ),
    );
  twin.close();
  policy.dispose();
  fs.rmSync(dir, { recursive: true, force: true });
  const tps = (ms: number): number => (N * MAX_NEW) / (ms / 1000);
  const speedTarget = timings[timings.length - 1];
  const speedup = speedTarget.speedup;
  // The target must hold at every thread setting, by both estimates (ratio of medians, median of paired ratios).
  const worst = Math.min(...timings.map((t) => Math.min(t.speedup, t.pairedSpeedup)));
  const json = {
    machine: machine(),
    threadSettings: THREAD_SETTINGS,
    config: cfg,
    prompts: PROMPTS,
    groupSize: G,
    sequences: N,
    maxNewTokens: MAX_NEW,
    parameters: py.parameters,
    check: { greedyTokensEqual: sameTokens, greedyTokens: total, maxLogprobDiff: maxLp, tolerance: LOGP_ATOL },
    pytorch: { version: py.torch },
    loadAverage1m: load,
    timings: timings.map((t) => ({
      ...t,
      pytorchTokensPerSecond: tps(t.pytorchMs),
      nativeTokensPerSecond: tps(t.nativeMs),
    })),
    speedup,
    worstSpeedup: worst,
    target: 1.5,
    met: worst >= 1.5,
  };
  const md = [
    TITLE,
    '',
    `Machine: ${describeMachine(json.machine)}; load average ${load.toFixed(1)} when timing started (other work on the machine); both processes run with OMP_NUM_THREADS = threads, OPENBLAS_NUM_THREADS = 1, OMP_WAIT_POLICY = PASSIVE, ${allocatorNote()}. Tiny policy (${py.parameters.toLocaleString('en-US')} parameters), ` +
      `${PROMPTS} prompts x G = ${G} = ${N} sequences, ${MAX_NEW} new tokens each (no stop token), temperature 1; one call = vision encoder + prefill once per prompt + ${MAX_NEW} cached decode steps. ` +
      `Timed as ${RUNS} back-to-back pairs (one PyTorch call, one native call) after ${WARMUP} warm-up pairs, same intra-op thread count on both sides; speed-up = PyTorch median / native median (the median of the pairs' own ratios is shown as a check; when the two disagree, load drift dominated).`,
    '',
    `Checked first: greedy decoding gives the same ${total.toLocaleString('en-US')} tokens on both sides, log-probs within ${maxLp.toExponential(1)} (tolerance ${LOGP_ATOL}).`,
    '',
    table(
      [
        'threads',
        `PyTorch ${py.torch} (Python KV-cached loop): ms / call`,
        'tokens/s',
        'crpo native (lib/model Policy.generate, from Node; includes decoding to text): ms / call',
        'tokens/s',
        'speed-up',
        'median of paired ratios',
        'spread PyTorch / native',
      ],
      timings.map((t) => [
        t.threads,
        fmt(t.pytorchMs, 1),
        fmt(tps(t.pytorchMs), 0),
        fmt(t.nativeMs, 1),
        fmt(tps(t.nativeMs), 0),
        fmt(t.speedup, 2),
        fmt(t.pairedSpeedup, 2),
        `${fmt(t.pytorchSpread, 2)} / ${fmt(t.nativeSpread, 2)}`,
      ]),
    ),
    '',
    `Target >= 1.5x (at ${speedTarget.threads} threads; lowest ratio over both thread settings: ${fmt(worst, 2)}): ${json.met ? 'met' : 'not met'}. ` +
      'Where the difference comes from: both loops do the same work (prefill once per prompt, the cache copied to the G rows, one token per row and step, written into a preallocated cache). ' +
      "In a decode step the twin's attention is two batched matmuls of one query row against the cache, which ATen on CPU runs as one small GEMM call per (row, head): 4 x 256 calls per step, most of the step. " +
      'The native step computes that attention in one pass over the cache (a C++ loop per (row, kv head), both query heads of the group at once, vectorised; tested against the matmul formulation in test/numerics/policy-fast-paths.test.ts), reads grouped keys/values in place instead of repeating them per query head, ' +
      'and samples each row by inverting its CDF at one uniform draw (torch.multinomial draws one exponential per vocabulary entry). Everything else calls the same ATen kernels of the same libtorch, without the per-op Python overhead. ' +
      'The native time includes decoding the 64 completions to text in JS. With other jobs on the machine, ratios move between runs; compare both thread settings.',
  ].join('\n');
  writeResults('pytorch-generate', json, md);
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
