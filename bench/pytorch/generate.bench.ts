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
import { describeMachine, fmt, machine, table, timeAsync, writeResults } from '../harness';
import { TINY, THREADS, handOver, hasPolicy, makeBatch, native, policyRaw, pythonTorch, readF32, readI32, runTwin } from './policy-fixture';

process.env.OPENBLAS_NUM_THREADS ??= String(THREADS);
process.env.OMP_NUM_THREADS ??= String(THREADS);

const PROMPTS = 8, G = 8, MAX_NEW = 32;
const WARMUP = 2, RUNS = 7;
const LOGP_ATOL = 1e-4;
const TITLE = '### Rollout generation vs PyTorch-Python (`bench/pytorch/generate.bench.ts`)';

async function main(): Promise<void> {
  const why = pythonTorch() ?? (hasPolicy() ? null : 'the torch addon has no native policy (npm run build:torch)');
  if (why) {
    writeResults('pytorch-generate', { skipped: true, reason: why }, `${TITLE}\n\nSkipped: ${why}.`);
    return;
  }
  const raw = policyRaw();
  const cfg = TINY;
  const id = await native(() => raw.policyCreate(cfg));
  const b = makeBatch(cfg, PROMPTS, G, false, 23);
  const N = PROMPTS * G;
  const dir = await handOver(raw, id, cfg, b, { threads: THREADS, warmup: WARMUP, runs: RUNS, maxNewTokens: MAX_NEW, temperature: 1.0 });
  const py = runTwin(dir, 'generate') as { torch: string; threads: number; parameters: number; medianMs: number; minMs: number };

  // Greedy decoding: same tokens; log-probs equal up to float32 reordering.
  const greedy = await native(() => raw.policyGenerate(id, b, { maxNewTokens: MAX_NEW, greedy: true }));
  const pyTok = readI32(path.join(dir, 'py_greedy_tokens.bin')), pyLp = readF32(path.join(dir, 'py_greedy_logprobs.bin'));
  let firstDiverge = -1, sameTokens = 0, maxLp = 0;
  for (let r = 0; r < N; r++) {
    for (let s = 0; s < MAX_NEW; s++) {
      const i = r * MAX_NEW + s;
      if (greedy.tokens[i] !== pyTok[i]) {
        if (firstDiverge < 0) firstDiverge = i;
        break; // after a divergence the two sequences condition on different tokens
      }
      sameTokens++;
      maxLp = Math.max(maxLp, Math.abs(greedy.logprobs[i] - pyLp[i]));
    }
  }
  const total = N * MAX_NEW;
  if (sameTokens !== total || maxLp > LOGP_ATOL) {
    throw new Error(`native and PyTorch greedy decoding disagree: ${sameTokens}/${total} tokens equal` +
      (firstDiverge >= 0 ? ` (first difference at sequence ${Math.floor(firstDiverge / MAX_NEW)}, step ${firstDiverge % MAX_NEW})` : '') +
      `, max log-prob difference ${maxLp.toExponential(2)} (tolerance ${LOGP_ATOL})`);
  }

  const t = await timeAsync(async () => {
    await native(() => raw.policyGenerate(id, b, { maxNewTokens: MAX_NEW, temperature: 1.0 }));
  }, { warmup: WARMUP, runs: RUNS });
  raw.policyDispose(id);
  fs.rmSync(dir, { recursive: true, force: true });
  const nativeTps = (N * MAX_NEW) / (t.medianMs / 1000), pyTps = (N * MAX_NEW) / (py.medianMs / 1000);
  const speedup = nativeTps / pyTps;
  const json = {
    machine: machine(), threads: THREADS, config: cfg, prompts: PROMPTS, groupSize: G, sequences: N, maxNewTokens: MAX_NEW, parameters: py.parameters,
    check: { greedyTokensEqual: sameTokens, greedyTokens: total, maxLogprobDiff: maxLp, tolerance: LOGP_ATOL },
    pytorch: { version: py.torch, threads: py.threads, medianMs: py.medianMs, minMs: py.minMs, tokensPerSecond: pyTps, runs: RUNS },
    native: { medianMs: t.medianMs, minMs: t.minMs, tokensPerSecond: nativeTps, runs: t.runs },
    speedup, target: 1.5, met: speedup >= 1.5,
  };
  const md = [
    TITLE,
    '',
    `Machine: ${describeMachine(json.machine)}; ${THREADS} intra-op threads on both sides. Tiny policy (${py.parameters.toLocaleString('en-US')} parameters), ` +
      `${PROMPTS} prompts x G = ${G} = ${N} sequences, ${MAX_NEW} new tokens each (no stop token), temperature 1; one call = vision encoder + prefill once per prompt + ${MAX_NEW} cached decode steps. ` +
      `Median of ${RUNS} runs after ${WARMUP} warm-up.`,
    '',
    `Checked first: greedy decoding gives the same ${total.toLocaleString('en-US')} tokens on both sides, log-probs within ${maxLp.toExponential(1)} (tolerance ${LOGP_ATOL}).`,
    '',
    table(['implementation', 'median ms / call', 'tokens/s', 'speed-up'], [
      [`PyTorch ${py.torch} eager (Python, KV-cached loop)`, fmt(py.medianMs, 1), fmt(pyTps, 0), '1.00'],
      ['crpo native policy (from Node)', fmt(t.medianMs, 1), fmt(nativeTps, 0), fmt(speedup, 2)],
    ]),
    '',
    `Target >= 1.5x: ${json.met ? 'met' : 'not met'}.`,
  ].join('\n');
  writeResults('pytorch-generate', json, md);
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
