/**
 * The Qwen2.5-VL / Qwen3-VL vision processors and chat format in TypeScript: frame sampling (fps
 * or frame count, min/max frames), resizing to a pixel budget rounded as transformers'
 * `smart_resize` does (Python's round-half-to-even), rescale + normalise, and patchifying into
 * the rows the HF image/video processors emit ((t, h/m, w/m, m, m) row order, (C, tp, p, p)
 * columns); placeholder expansion (Qwen3-VL: one `<t seconds>` + vision block per temporal
 * patch) and the ChatML chat template of both models for text/image/video messages.
 * Resampling uses sharp's bicubic kernel: sizes and patch layout are exact, resized pixel values
 * are close to but not bit-identical with PIL/torchvision bicubic.
 */
import sharp from 'sharp';
import { invalidArg, outOfRange } from '../errors';
import type { QwenVLConfig } from './config';

/** Python 3's round(): halves go to the even neighbour. */
export function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

export interface PixelBudget {
  /** patch_size * merge_size (28 for Qwen2.5-VL, 32 for Qwen3-VL). */
  factor: number;
  minPixels: number;
  maxPixels: number;
}

/** transformers' Qwen2-VL image `smart_resize` (per frame): (height, width) multiples of factor. */
export function smartResize(height: number, width: number, b: PixelBudget): [number, number] {
  if (Math.max(height, width) / Math.min(height, width) > 200)
    throw outOfRange('aspect ratio', 'at most 200', `${height}x${width}`);
  let h = roundHalfEven(height / b.factor) * b.factor;
  let w = roundHalfEven(width / b.factor) * b.factor;
  if (h * w > b.maxPixels) {
    const beta = Math.sqrt((height * width) / b.maxPixels);
    h = Math.max(b.factor, Math.floor(height / beta / b.factor) * b.factor);
    w = Math.max(b.factor, Math.floor(width / beta / b.factor) * b.factor);
  } else if (h * w < b.minPixels) {
    const beta = Math.sqrt(b.minPixels / (height * width));
    h = Math.ceil((height * beta) / b.factor) * b.factor;
    w = Math.ceil((width * beta) / b.factor) * b.factor;
  }
  return [h, w];
}

/** transformers' Qwen3-VL video `smart_resize`: the budget covers t * h * w. */
export function smartResizeVideo(
  numFrames: number,
  height: number,
  width: number,
  b: PixelBudget & { temporalFactor: number },
): [number, number] {
  if (numFrames < b.temporalFactor)
    throw outOfRange('numFrames', `at least temporal_patch_size ${b.temporalFactor}`, numFrames);
  if (height < b.factor || width < b.factor)
    throw outOfRange('frame size', `at least ${b.factor}x${b.factor}`, `${height}x${width}`);
  if (Math.max(height, width) / Math.min(height, width) > 200)
    throw outOfRange('aspect ratio', 'at most 200', `${height}x${width}`);
  let h = roundHalfEven(height / b.factor) * b.factor;
  let w = roundHalfEven(width / b.factor) * b.factor;
  const t = roundHalfEven(numFrames / b.temporalFactor) * b.temporalFactor;
  if (t * h * w > b.maxPixels) {
    const beta = Math.sqrt((numFrames * height * width) / b.maxPixels);
    h = Math.max(b.factor, Math.floor(height / beta / b.factor) * b.factor);
    w = Math.max(b.factor, Math.floor(width / beta / b.factor) * b.factor);
  } else if (t * h * w < b.minPixels) {
    const beta = Math.sqrt(b.minPixels / (numFrames * height * width));
    h = Math.ceil((height * beta) / b.factor) * b.factor;
    w = Math.ceil((width * beta) / b.factor) * b.factor;
  }
  return [h, w];
}

export interface FrameSampling {
  /** Target frames per second (default 2). Exclusive with numFrames. */
  fps?: number;
  numFrames?: number;
  minFrames?: number;
  maxFrames?: number;
}

/** numpy.linspace(0, total-1, n).round() (half to even). */
function linspaceRound(total: number, n: number): number[] {
  if (n === 1) return [0];
  const step = (total - 1) / (n - 1);
  return Array.from({ length: n }, (_, i) => roundHalfEven(i === n - 1 ? total - 1 : i * step));
}

/**
 * Frame indices to decode. Qwen3-VL: Qwen3VLVideoProcessor.sample_frames
 * (n = int(total / video_fps * fps), clamped to [min, max] and total). Qwen2.5-VL: the
 * qwen-vl-utils rule (n = total / video_fps * fps clamped, floored to a multiple of 2).
 */
export function sampleFrameIndices(
  arch: QwenVLConfig['arch'],
  totalFrames: number,
  videoFps: number,
  s: FrameSampling = {},
): number[] {
  if (!Number.isInteger(totalFrames) || totalFrames < 1)
    throw invalidArg('totalFrames', 'a positive integer', totalFrames);
  if (s.fps !== undefined && s.numFrames !== undefined) throw invalidArg('sampling', 'fps or numFrames, not both', s);
  const minF = s.minFrames ?? 4;
  const maxF = s.maxFrames ?? 768;
  let n: number;
  if (arch === 'qwen3_vl') {
    if (s.numFrames !== undefined) n = s.numFrames;
    else n = Math.min(Math.min(Math.max(Math.trunc((totalFrames / videoFps) * (s.fps ?? 2)), minF), maxF), totalFrames);
  } else {
    const factor = 2;
    if (s.numFrames !== undefined) n = roundHalfEven(s.numFrames / factor) * factor;
    else {
      const lo = Math.ceil(minF / factor) * factor;
      const hi = Math.floor(Math.min(maxF, totalFrames) / factor) * factor;
      const raw = Math.min(Math.min(Math.max((totalFrames / videoFps) * (s.fps ?? 2), lo), hi), totalFrames);
      n = Math.floor(raw / factor) * factor;
    }
  }
  if (n < 1 || n > totalFrames) throw outOfRange('frame count', `1..${totalFrames} frames`, n);
  return linspaceRound(totalFrames, n);
}

/** Python's f"{x:.1f}": exact binary ties (0.25, 0.75, ...) round half to even, unlike toFixed. */
export function formatFixed1(x: number): string {
  const exact = Math.abs(x).toFixed(60);
  const [, frac] = exact.split('.');
  if (/^50*$/.test(frac.slice(1)) && Number(frac[0]) % 2 === 0) {
    const truncated = exact.slice(0, exact.indexOf('.') + 2);
    return (x < 0 ? '-' : '') + truncated;
  }
  return x.toFixed(1);
}

/** Qwen3-VL: mean timestamp (seconds) of each temporal patch of the sampled frames. */
export function frameTimestamps(indices: number[], videoFps: number, mergeSize = 2): number[] {
  const idx = indices.slice();
  while (idx.length % mergeSize !== 0) idx.push(idx[idx.length - 1]);
  const ts = idx.map((i) => i / videoFps);
  const out: number[] = [];
  for (let i = 0; i < ts.length; i += mergeSize) out.push((ts[i] + ts[i + mergeSize - 1]) / 2);
  return out;
}

export interface PatchLayout {
  patchSize: number;
  temporalPatchSize: number;
  mergeSize: number;
}

/**
 * Rows of patches as the HF processors emit them. frames: normalised (T, C, H, W) float32.
 * T is padded with copies of the last frame to a multiple of the temporal patch. Returns rows
 * (grid_t*grid_h*grid_w, C*tp*p*p) ordered (t, h/m, w/m, m, m); columns ordered (C, tp, py, px).
 */
export function patchify(
  frames: Float32Array,
  T: number,
  C: number,
  H: number,
  W: number,
  l: PatchLayout,
): { rows: Float32Array; grid: [number, number, number] } {
  const { patchSize: p, temporalPatchSize: tp, mergeSize: m } = l;
  if (frames.length !== T * C * H * W) throw invalidArg('frames', `${T * C * H * W} values (T*C*H*W)`, frames.length);
  if (H % (p * m) !== 0 || W % (p * m) !== 0) throw invalidArg('frame size', `multiples of ${p * m}`, `${H}x${W}`);
  const gt = Math.ceil(T / tp);
  const gh = H / p;
  const gw = W / p;
  const cols = C * tp * p * p;
  const rows = new Float32Array(gt * gh * gw * cols);
  let r = 0;
  for (let t = 0; t < gt; t++)
    for (let bh = 0; bh < gh / m; bh++)
      for (let bw = 0; bw < gw / m; bw++)
        for (let mh = 0; mh < m; mh++)
          for (let mw = 0; mw < m; mw++) {
            let o = r * cols;
            for (let c = 0; c < C; c++)
              for (let ti = 0; ti < tp; ti++) {
                const f = Math.min(t * tp + ti, T - 1); // padding repeats the last frame
                for (let py = 0; py < p; py++) {
                  const y = (bh * m + mh) * p + py;
                  const base = ((f * C + c) * H + y) * W + (bw * m + mw) * p;
                  for (let px = 0; px < p; px++) rows[o++] = frames[base + px];
                }
              }
            r++;
          }
  return { rows, grid: [gt, gh, gw] };
}

export interface VisionProcessOptions {
  /** Per-frame pixel budget (Qwen2.5-VL) or whole-video budget t*h*w (Qwen3-VL videos). */
  minPixels?: number;
  maxPixels?: number;
  /** Normalisation; defaults: OpenAI CLIP (Qwen2.5-VL), 0.5/0.5 (Qwen3-VL). */
  mean?: [number, number, number];
  std?: [number, number, number];
}

export interface ProcessedVision {
  pixelValues: Float32Array;
  grid: [number, number, number];
  resized: [number, number];
}

const CLIP_MEAN: [number, number, number] = [0.48145466, 0.4578275, 0.40821073];
const CLIP_STD: [number, number, number] = [0.26862954, 0.26130258, 0.27577711];

/** Default pixel budgets of the HF processors (images per frame; Qwen3-VL videos over t*h*w). */
export function defaultBudget(cfg: QwenVLConfig, kind: 'image' | 'video'): { minPixels: number; maxPixels: number } {
  if (cfg.arch === 'qwen3_vl')
    return kind === 'video'
      ? { minPixels: 128 * 32 * 32, maxPixels: 32 * 32 * 768 }
      : { minPixels: 65536, maxPixels: 16777216 };
  return kind === 'video'
    ? { minPixels: 128 * 28 * 28, maxPixels: 768 * 28 * 28 }
    : { minPixels: 56 * 56, maxPixels: 28 * 28 * 1280 };
}

/**
 * Resizes, normalises and patchifies RGB frames (T, H, W, 3) uint8, as one image (T = 1) or one
 * video, for the model's vision tower.
 */
export async function processFrames(
  cfg: QwenVLConfig,
  frames: Uint8Array,
  T: number,
  H: number,
  W: number,
  kind: 'image' | 'video',
  o: VisionProcessOptions = {},
): Promise<ProcessedVision> {
  if (frames.length !== T * H * W * 3) throw invalidArg('frames', `${T * H * W * 3} bytes (T*H*W*3)`, frames.length);
  const v = cfg.vision;
  const factor = v.patchSize * v.spatialMergeSize;
  const budget = {
    ...defaultBudget(cfg, kind),
    ...(o.minPixels !== undefined ? { minPixels: o.minPixels } : {}),
    ...(o.maxPixels !== undefined ? { maxPixels: o.maxPixels } : {}),
  };
  const [rh, rw] =
    cfg.arch === 'qwen3_vl' && kind === 'video'
      ? smartResizeVideo(T, H, W, { factor, temporalFactor: v.temporalPatchSize, ...budget })
      : smartResize(H, W, { factor, ...budget });
  const mean = o.mean ?? (cfg.arch === 'qwen3_vl' ? [0.5, 0.5, 0.5] : CLIP_MEAN);
  const std = o.std ?? (cfg.arch === 'qwen3_vl' ? [0.5, 0.5, 0.5] : CLIP_STD);
  const chw = new Float32Array(T * 3 * rh * rw);
  for (let t = 0; t < T; t++) {
    const src = Buffer.from(frames.buffer, frames.byteOffset + t * H * W * 3, H * W * 3);
    const px =
      rh === H && rw === W
        ? src
        : await sharp(src, { raw: { width: W, height: H, channels: 3 } })
            .resize(rw, rh, { kernel: 'cubic', fit: 'fill' })
            .raw()
            .toBuffer();
    for (let c = 0; c < 3; c++) {
      const scale = 1 / 255 / std[c];
      const shift = mean[c] / std[c];
      const off = (t * 3 + c) * rh * rw;
      for (let i = 0; i < rh * rw; i++) chw[off + i] = px[i * 3 + c] * scale - shift;
    }
  }
  const { rows, grid } = patchify(chw, T, 3, rh, rw, {
    patchSize: v.patchSize,
    temporalPatchSize: v.temporalPatchSize,
    mergeSize: v.spatialMergeSize,
  });
  return { pixelValues: rows, grid, resized: [rh, rw] };
}

export const QWEN_SPECIAL = {
  imStart: '<|im_start|>',
  imEnd: '<|im_end|>',
  visionStart: '<|vision_start|>',
  visionEnd: '<|vision_end|>',
  imagePad: '<|image_pad|>',
  videoPad: '<|video_pad|>',
} as const;

export type ChatPart = { type: 'text'; text: string } | { type: 'image' } | { type: 'video' };
export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string | ChatPart[];
}

/**
 * The chat template of the Qwen-VL checkpoints for text/image/video messages (no tools):
 * ChatML, Qwen2.5-VL adding the default system prompt when none is given.
 */
export function renderChat(arch: QwenVLConfig['arch'], messages: ChatMessage[], addGenerationPrompt = true): string {
  const S = QWEN_SPECIAL;
  let out = '';
  if (arch === 'qwen2_5_vl' && messages.length > 0 && messages[0].role !== 'system') {
    out += `${S.imStart}system\nYou are a helpful assistant.${S.imEnd}\n`;
  }
  for (const m of messages) {
    out += `${S.imStart}${m.role}\n`;
    if (typeof m.content === 'string') out += m.content;
    else {
      for (const part of m.content) {
        if (part.type === 'image') out += `${S.visionStart}${S.imagePad}${S.visionEnd}`;
        else if (part.type === 'video') out += `${S.visionStart}${S.videoPad}${S.visionEnd}`;
        else out += part.text;
      }
    }
    out += `${S.imEnd}\n`;
  }
  if (addGenerationPrompt) out += `${S.imStart}assistant\n`;
  return out;
}

/**
 * Expands each image/video placeholder to its token count (grid t*h*w / merge^2), as the HF
 * processors do; Qwen3-VL videos become `<{t:.1f} seconds><|vision_start|>pads<|vision_end|>`
 * per temporal patch (timestamps from frameTimestamps).
 */
export function expandPlaceholders(
  cfg: QwenVLConfig,
  text: string,
  images: Array<[number, number, number]> = [],
  videos: Array<{ grid: [number, number, number]; timestamps?: number[] }> = [],
): string {
  const S = QWEN_SPECIAL;
  const mu = cfg.vision.spatialMergeSize ** 2;
  let i = 0;
  let out = text.split(S.imagePad).reduce((acc, piece, k) => {
    if (k === 0) return piece;
    const g = images[i++];
    if (!g) throw invalidArg('images', `a grid for image placeholder ${i}`, images.length);
    return acc + S.imagePad.repeat((g[0] * g[1] * g[2]) / mu) + piece;
  }, '');
  if (i !== images.length) throw invalidArg('images', `${i} grids (one per placeholder)`, images.length);
  let j = 0;
  const block = `${S.visionStart}${S.videoPad}${S.visionEnd}`;
  if (cfg.arch === 'qwen3_vl') {
    out = out.split(block).reduce((acc, piece, k) => {
      if (k === 0) return piece;
      const v = videos[j++];
      if (!v) throw invalidArg('videos', `a grid for video placeholder ${j}`, videos.length);
      const per = (v.grid[1] * v.grid[2]) / mu;
      let s = '';
      for (let t = 0; t < v.grid[0]; t++) {
        const ts = v.timestamps?.[t] ?? t;
        s += `<${formatFixed1(ts)} seconds>${S.visionStart}${S.videoPad.repeat(per)}${S.visionEnd}`;
      }
      return acc + s + piece;
    }, '');
  } else {
    out = out.split(S.videoPad).reduce((acc, piece, k) => {
      if (k === 0) return piece;
      const v = videos[j++];
      if (!v) throw invalidArg('videos', `a grid for video placeholder ${j}`, videos.length);
      return acc + S.videoPad.repeat((v.grid[0] * v.grid[1] * v.grid[2]) / mu) + piece;
    }, '');
  }
  if (j !== videos.length) throw invalidArg('videos', `${j} grids (one per placeholder)`, videos.length);
  return out;
}
