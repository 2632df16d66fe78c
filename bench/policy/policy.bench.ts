/**
 * Native policy throughput on the tiny preset (native/torch/model): forward+backward samples/s of
 * the SFT step and the RL train step, forward-only log-probs, and KV-cached generation tokens/s
 * for B x G = 64 sequences against the uncached slow twin measured in the same run; peak RSS.
 * `node -r ./scripts/ts-register.js bench/policy/policy.bench.ts` (or `npm run bench -- policy`).
 */
import { describeMachine, fmt, machine, table, timeAsync, writeResults } from '../harness';
import { formatPrompt } from '../../lib/prompt';
import { PolicyModel, Tokenizer, type PolicyInputs } from '../../lib/model';
import { synthesize } from '../../lib/synth';
import { torchInfo } from '../../lib/native';
import * as os from 'os';

async function main(): Promise<void> {
  const items = synthesize({ split: 'train', pairs: 16, seed: 3, frames: 8, size: 32 });
  const prompts = items.map((it) => formatPrompt(it.record.question, it.record.options, { nullOption: true }));
  const tok = Tokenizer.build(prompts);
  const policy = await PolicyModel.create(tok, { preset: 'tiny', seed: 1 });
  const clip = policy.clipBytes;
  const inputsFor = (n: number, group: number, transform = false): PolicyInputs => {
    const frames = new Uint8Array(n * clip);
    for (let i = 0; i < n; i++) frames.set(items[i].frames, i * clip);
    return {
      frames,
      numVideos: n,
      groupSize: group,
      prompts: Array.from({ length: n }, (_, i) => ({
        video: i,
        text: prompts[i],
        transform: transform && i % 2 ? ('hflip' as const) : ('none' as const),
      })),
    };
  };
  const rows: (string | number)[][] = [];
  const json: Record<string, unknown> = {
    machine: machine(),
    torch: torchInfo().torchVersion,
    threads: torchInfo().intraOpThreads,
    parameters: policy.info().parameters,
  };

  // SFT step: batch 32 clips, teacher-forced <answer>X</answer><eos>.
  const sftIn = inputsFor(32, 1);
  const targets = items.slice(0, 32).map((it) => `<answer>${'ABCDE'[it.record.answer]}</answer>`);
  const sft = await timeAsync(async () => void (await policy.sftStep(sftIn, targets, { lr: 1e-4 })), {
    warmup: 2,
    runs: 7,
  });
  rows.push([
    'SFT step (fwd+bwd+AdamW), 32 clips',
    fmt(sft.medianMs, 1),
    `${fmt((32 * 1000) / sft.medianMs, 1)} samples/s`,
    '-',
  ]);

  // RL: 8 prompts (half hflip on the device) x G = 8 = 64 sequences of 16 new tokens.
  const rlIn = inputsFor(8, 8, true);
  const maxNew = 16;
  const g = await policy.generate(rlIn, { maxNewTokens: maxNew, stop: [] });
  const lpT = await timeAsync(async () => void (await policy.logprobs(rlIn, g)), { warmup: 2, runs: 7 });
  const adv = Float32Array.from({ length: 64 }, (_, i) => (i % 3) - 1);
  const old = (await policy.logprobs(rlIn, g)).logprobs;
  const rl = await timeAsync(
    async () =>
      void (await policy.trainStep(rlIn, { ...g, advantages: adv, oldLogprobs: old, refLogprobs: old }, { lr: 1e-6 })),
    { warmup: 2, runs: 7 },
  );
  rows.push([
    'log-probs (forward), 64 seqs x 16 tokens',
    fmt(lpT.medianMs, 1),
    `${fmt((64 * 1000) / lpT.medianMs, 1)} samples/s`,
    '-',
  ]);
  rows.push([
    'RL train step (fwd+bwd+AdamW), 64 seqs x 16 tokens',
    fmt(rl.medianMs, 1),
    `${fmt((64 * 1000) / rl.medianMs, 1)} samples/s`,
    '-',
  ]);

  const genTokens = 64 * maxNew;
  const uncached = await timeAsync(
    async () => void (await policy.generate(rlIn, { maxNewTokens: maxNew, stop: [], useCache: false })),
    { warmup: 1, runs: 5 },
  );
  const cached = await timeAsync(async () => void (await policy.generate(rlIn, { maxNewTokens: maxNew, stop: [] })), {
    warmup: 2,
    runs: 7,
  });
  rows.push([
    'generate, uncached (slow twin), 64 seqs x 16 tokens',
    fmt(uncached.medianMs, 1),
    `${fmt((genTokens * 1000) / uncached.medianMs, 0)} tokens/s`,
    '1.0',
  ]);
  rows.push([
    'generate, KV cache, 64 seqs x 16 tokens',
    fmt(cached.medianMs, 1),
    `${fmt((genTokens * 1000) / cached.medianMs, 0)} tokens/s`,
    fmt(uncached.medianMs / cached.medianMs, 2),
  ]);
  const rssMiB = process.resourceUsage().maxRSS / 1024;
  const load = os.loadavg()[0];
  policy.dispose();

  Object.assign(json, {
    sftStepMs: sft.medianMs,
    sftSamplesPerS: (32 * 1000) / sft.medianMs,
    logprobsMs: lpT.medianMs,
    rlStepMs: rl.medianMs,
    rlSamplesPerS: (64 * 1000) / rl.medianMs,
    generateCachedMs: cached.medianMs,
    generateUncachedMs: uncached.medianMs,
    generateTokensPerS: (genTokens * 1000) / cached.medianMs,
    cacheSpeedup: uncached.medianMs / cached.medianMs,
    peakRssMiB: rssMiB,
    loadAverage1m: load,
  });
  const md = [
    '### Native policy, tiny preset (`bench/policy`)',
    '',
    `Machine: ${describeMachine(json.machine as Record<string, unknown>)}. libtorch ${json.torch}, ${json.threads} intra-op threads, fp32 CPU; ${json.parameters} parameters; clips of 8 frames x 32x32. Median of >= 5 timed runs after warm-up. 1-minute load average at the end: ${fmt(load, 1)} (the machine was shared with other jobs when this ran; an idle machine is faster).`,
    '',
    table(['call', 'median ms', 'throughput', 'x uncached'], rows),
    '',
    `Peak RSS of the benchmark process: ${fmt(rssMiB, 0)} MiB (Node + libtorch + model + all of the above).`,
  ].join('\n');
  writeResults('policy', json, md);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
