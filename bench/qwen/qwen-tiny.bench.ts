/**
 * Qwen2.5-VL / Qwen3-VL on the golden tiny configs (../shared/golden), CPU fp32: load time,
 * forward of the image+video case, one LoRA GRPO train step (with and without gradient
 * checkpointing), greedy generation with and without the KV cache (the uncached run is the
 * reference measured in the same process), and peak RSS.
 */
import * as path from 'path';
import { QwenVLModel, type QwenInputs } from '../../lib/hf/model';
import { readSafetensors, type LoadedTensor } from '../../lib/hf/safetensors';
import type { Grid } from '../../lib/hf/rope-index';
import { torchInfo } from '../../lib/native';
import { describeMachine, fmt, machine, table, timeAsync, writeResults } from '../harness';

const ROOT = path.resolve(__dirname, '..', '..', '..', 'shared', 'golden');

function inputsOf(c: Map<string, LoadedTensor>): QwenInputs {
  const num = (t: LoadedTensor) => Array.from(t.data as ArrayLike<number | bigint>, Number);
  const grids = (k: string): Grid[] | undefined => {
    const t = c.get(k);
    if (!t) return undefined;
    const v = num(t);
    const out: Grid[] = [];
    for (let i = 0; i < v.length; i += 3) out.push([v[i], v[i + 1], v[i + 2]]);
    return out;
  };
  return {
    inputIds: [num(c.get('in.input_ids')!)],
    attentionMask: [num(c.get('in.attention_mask')!)],
    pixelValues: c.get('in.pixel_values')?.data as Float32Array,
    imageGridThw: grids('in.image_grid_thw'),
    pixelValuesVideos: c.get('in.pixel_values_videos')?.data as Float32Array,
    videoGridThw: grids('in.video_grid_thw'),
  };
}

async function main(): Promise<void> {
  const rows: (string | number)[][] = [];
  const json: Record<string, unknown> = { machine: machine() };
  torchInfo(); // load libtorch before timing model loads
  const rssStart = process.resourceUsage().maxRSS / 1024;
  for (const name of ['qwen2_5_vl', 'qwen3_vl']) {
    const dir = path.join(ROOT, name);
    const t0 = Date.now();
    const m = await QwenVLModel.load(dir);
    const loadMs = Date.now() - t0;
    const inputs = inputsOf(readSafetensors(path.join(dir, 'case_image_video.safetensors')));
    const L = inputs.inputIds[0].length;
    const fwd = await timeAsync(async () => void (await m.forward(inputs)));
    m.addLora({ rank: 8, alpha: 16, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj'] });
    const batch = {
      completionMask: Int32Array.from({ length: L }, (_, i) => (i >= L - 8 ? 1 : 0)),
      advantages: Float32Array.of(1),
      lr: 1e-4,
    };
    const step = await timeAsync(async () => void (await m.trainStep(inputs, batch)));
    m.setGradientCheckpointing(true);
    const stepCk = await timeAsync(async () => void (await m.trainStep(inputs, batch)));
    m.setGradientCheckpointing(false);
    const n = 16;
    const cached = await timeAsync(async () => void (await m.generate(inputs, { maxNewTokens: n, eosTokenId: -1 })));
    const plain = await timeAsync(
      async () => void (await m.generate(inputs, { maxNewTokens: n, eosTokenId: -1, useCache: false })),
    );
    m.dispose();
    const r = {
      loadMs,
      forwardMs: fwd.medianMs,
      trainStepMs: step.medianMs,
      trainStepCheckpointedMs: stepCk.medianMs,
      generateCachedTokPerS: (n / cached.medianMs) * 1000,
      generateUncachedTokPerS: (n / plain.medianMs) * 1000,
    };
    json[name] = r;
    rows.push([
      name,
      L,
      loadMs,
      fmt(fwd.medianMs),
      fmt(step.medianMs),
      fmt(stepCk.medianMs),
      fmt(r.generateCachedTokPerS, 0),
      fmt(r.generateUncachedTokPerS, 0),
      fmt(r.generateCachedTokPerS / r.generateUncachedTokPerS),
    ]);
  }
  const rssPeak = process.resourceUsage().maxRSS / 1024;
  json.rss = { atStartMiB: rssStart, peakMiB: rssPeak };
  const md = [
    '## Qwen-VL tiny golden configs (CPU, fp32)',
    '',
    'Reproduce: `npm run bench -- qwen` (needs ../shared/golden and the torch addon).',
    '',
    `Machine: ${describeMachine(json.machine as Record<string, unknown>)}. Sequence = the image+video golden case (batch 1);`,
    'train step = LoRA r=8 on q/k/v/o, GRPO loss, AdamW; generation = 16 greedy tokens. Medians of >= 5 runs after warm-up.',
    '',
    table(
      [
        'model',
        'L',
        'load ms',
        'forward ms',
        'train step ms',
        'train step (checkpointed) ms',
        'gen tok/s (KV cache)',
        'gen tok/s (no cache)',
        'cache speed-up',
      ],
      rows,
    ),
    '',
    `Peak RSS of the process: ${fmt(rssPeak, 0)} MiB (${fmt(rssStart, 0)} MiB with libtorch loaded, before the models; at this size the runtime dominates).`,
  ].join('\n');
  writeResults('qwen-tiny', json, md);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
