/**
 * End-to-end smoke of a Qwen-VL folder at its real size (issue 18: the Qwen2.5-VL-3B shape in bf16
 * on a 24 GB CPU machine): load the weights in their stored dtype, generate greedy tokens for one
 * short video, attach LoRA and take one GRPO step on the prompt + those tokens, with wall times and
 * the process's resident memory after each phase. Run it in a process of its own, so that the peak
 * RSS is the smoke's alone:
 *
 *   node -r ./scripts/ts-register.js lib/hf/smoke.ts <folder> [--frames 4] [--side 112] [--tokens 8] [--rank 16]
 *
 * prints one JSON line (QwenSmokeResult). test/e2e/hf-3b-smoke.test.ts runs it on a `crpo hf init`
 * folder of the 3B shape.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { invalidArg } from '../errors';
import { readQwenConfig } from './config';
import { QwenVLModel, resolveWeights, type QwenDtype } from './model';
import { expandPlaceholders, processFrames, renderChat } from './processor';
import { tokenizerFor } from './tokenizer';

export interface QwenSmokeOptions {
  folder: string;
  /** Video frames (T) and their side in pixels (square; the per-frame pixel budget is side^2, no resize). */
  frames?: number;
  side?: number;
  /** Greedy tokens to generate. */
  tokens?: number;
  /** LoRA rank on q/k/v/o of the LM (alpha = 2 x rank, no dropout). */
  rank?: number;
}

export interface QwenSmokeResult {
  /** The dtype the weights are stored in and loaded as. */
  dtype: QwenDtype;
  parameters: number;
  /** Bytes of the weights as stored (= as loaded: no conversion). */
  weightBytes: number;
  promptTokens: number;
  visualTokens: number;
  generated: number[];
  loss: number;
  gradNorm: number;
  /** max |B| of one adapter after the step (B starts at zero, so > 0 means the adapters trained). */
  adapterChange: number;
  /** Wall seconds of each phase. */
  seconds: { load: number; generate: number; step: number };
  /**
   * MiB: RSS before loading and after each phase, and the process's peak (VmHWM) after each phase,
   * counted from the start of loading (reset through /proc/self/clear_refs where allowed).
   */
  rssMiB: { start: number; load: number; generate: number; step: number };
  peakMiB: { load: number; generate: number; step: number };
  /** 1-minute load average of the machine at the start and the end. */
  loadAverage: [number, number];
}

/** VmRSS and VmHWM of this process in MiB. */
export function processRss(): { rss: number; peak: number } {
  const s = fs.readFileSync('/proc/self/status', 'utf8');
  const kib = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(s)?.[1] ?? NaN);
  return { rss: kib('VmRSS') / 1024, peak: kib('VmHWM') / 1024 };
}

/** Restarts the kernel's count of this process's peak RSS (VmHWM) from its current RSS; false if refused. */
export function resetPeakRss(): boolean {
  try {
    fs.writeFileSync('/proc/self/clear_refs', '5');
    return true;
  } catch {
    return false;
  }
}

const BYTES: Record<string, number> = { F32: 4, BF16: 2, F16: 2, F64: 8 };
const DTYPE: Record<string, QwenDtype> = { F32: 'float32', BF16: 'bfloat16', F16: 'float16', F64: 'float64' };

export async function runQwenSmoke(o: QwenSmokeOptions): Promise<QwenSmokeResult> {
  const frames = o.frames ?? 4;
  const side = o.side ?? 112;
  const tokens = o.tokens ?? 8;
  const rank = o.rank ?? 16;
  for (const [k, v] of Object.entries({ frames, side, tokens, rank }))
    if (!Number.isInteger(v) || v < 1) throw invalidArg(k, 'a positive integer', v, 'qwen smoke');
  const load0 = os.loadavg()[0];
  const cfg = readQwenConfig(path.join(o.folder, 'config.json'));
  const weights = [...resolveWeights(o.folder, cfg).values()];
  const stored = new Set(weights.map((w) => w.dtype));
  if (stored.size !== 1) throw invalidArg('folder', 'weights of one dtype', [...stored].join(', '), 'qwen smoke');
  const dtype = DTYPE[weights[0].dtype];
  const parameters = weights.reduce((a, w) => a + w.nbytes / BYTES[w.dtype], 0);
  const weightBytes = weights.reduce((a, w) => a + w.nbytes, 0);
  // the peak of loading alone: what the process reached before (module loading) does not count
  resetPeakRss();
  const start = processRss().rss;

  let t = performance.now();
  const lap = () => {
    const now = performance.now();
    const s = (now - t) / 1000;
    t = now;
    return s;
  };
  const m = await QwenVLModel.load(o.folder, { dtype });
  try {
    const load = lap();
    const afterLoad = processRss();

    // a synthetic video (a moving gradient), processed as the HF processor would
    const px = new Uint8Array(frames * side * side * 3);
    for (let f = 0; f < frames; f++)
      for (let i = 0; i < side * side; i++)
        for (let c = 0; c < 3; c++) px[(f * side * side + i) * 3 + c] = (i + 17 * f + 85 * c) % 256;
    const budget = { minPixels: side * side, maxPixels: side * side };
    const v = await processFrames(cfg, px, frames, side, side, 'video', budget);
    const chat = renderChat(cfg.arch, [
      { role: 'user', content: [{ type: 'video' }, { type: 'text', text: 'What happens in this video?' }] },
    ]);
    const ids = tokenizerFor(o.folder, cfg).encode(expandPlaceholders(cfg, chat, [], [{ grid: v.grid }]));
    const vision = { pixelValuesVideos: v.pixelValues, videoGridThw: [v.grid] };
    const g = await m.generate(
      { inputIds: [ids], ...vision },
      { maxNewTokens: tokens, temperature: 0, eosTokenId: -1 },
    );
    const generate = lap();
    const afterGenerate = processRss();

    const names = m.addLora({
      rank,
      alpha: 2 * rank,
      dropout: 0,
      targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj'],
    });
    const probe = names.find((n) => n.endsWith('.lora_B'))!;
    const row = [...ids, ...g.tokens[0]];
    const completionMask = Int32Array.from(row, (_, i) => (i >= ids.length ? 1 : 0));
    lap();
    const st = await m.trainStep(
      { inputIds: [row], ...vision },
      { completionMask, objective: 'grpo', advantages: Float32Array.of(1), lr: 1e-3 },
    );
    const step = lap();
    const afterStep = processRss();
    const b = m.getParam(probe).data;
    let adapterChange = 0;
    for (const x of b) adapterChange = Math.max(adapterChange, Math.abs(x));
    const merge = cfg.vision.spatialMergeSize ** 2;
    return {
      dtype,
      parameters,
      weightBytes,
      promptTokens: ids.length,
      visualTokens: (v.grid[0] * v.grid[1] * v.grid[2]) / merge,
      generated: g.tokens[0],
      loss: st.loss,
      gradNorm: st.gradNorm,
      adapterChange,
      seconds: { load, generate, step },
      rssMiB: { start, load: afterLoad.rss, generate: afterGenerate.rss, step: afterStep.rss },
      peakMiB: { load: afterLoad.peak, generate: afterGenerate.peak, step: afterStep.peak },
      loadAverage: [load0, os.loadavg()[0]],
    };
  } finally {
    m.dispose();
  }
}

if (require.main === module) {
  const [folder, ...rest] = process.argv.slice(2);
  const opt = (k: string) => {
    const i = rest.indexOf(`--${k}`);
    return i >= 0 ? Number(rest[i + 1]) : undefined;
  };
  runQwenSmoke({ folder, frames: opt('frames'), side: opt('side'), tokens: opt('tokens'), rank: opt('rank') }).then(
    (r) => process.stdout.write(JSON.stringify(r) + '\n'),
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
