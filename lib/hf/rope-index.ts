/**
 * 3D rotary position ids (t, h, w) of Qwen2.5-VL and Qwen3-VL prompts: a port of transformers'
 * `get_rope_index` of each model. Text tokens advance all three axes together; each image or
 * video placeholder run gets (t, h, w) grid coordinates of its merged patches, offset by the
 * text before it. Qwen2.5-VL's temporal step is trunc(second_per_grid) * tokens_per_second
 * (transformers since 2025-04 casts seconds per grid to an integer, so 0.5 s gives 0); Qwen3-VL
 * splits each video into one grid per frame (timestamps are text tokens) with t index 0.
 */
import type { QwenVLConfig } from './config';

export type Grid = [number, number, number];

export interface RopeIndexInputs {
  /** (B, L) token ids, one array per row. */
  inputIds: ArrayLike<number>[];
  /** (B, L) 1 = token, 0 = padding; default all ones. */
  attentionMask?: ArrayLike<number>[];
  imageGridThw?: Grid[];
  videoGridThw?: Grid[];
  /** Qwen2.5-VL: seconds per temporal grid of each video (default 1.0). */
  secondPerGridTs?: number[];
}

export interface RopeIndex {
  /** (3, B, L) flattened, axis-major. */
  positionIds: Int32Array;
  /** (B,) max position + 1 - L: added to the cache length for generated tokens. */
  deltas: number[];
  batch: number;
  seqLen: number;
}

/** Exact port of Qwen2_5_VLModel.get_rope_index / Qwen3VLModel.get_rope_index. */
export function ropeIndex(cfg: QwenVLConfig, inp: RopeIndexInputs): RopeIndex {
  const B = inp.inputIds.length;
  const L = B > 0 ? inp.inputIds[0].length : 0;
  const pos = new Int32Array(3 * B * L);
  const deltas: number[] = [];
  const merge = cfg.vision.spatialMergeSize;
  let videoGrids = inp.videoGridThw;
  if (cfg.arch === 'qwen3_vl' && videoGrids) {
    // timestamps separate frames: one grid (1, h, w) per frame
    videoGrids = videoGrids.flatMap((g) => Array.from({ length: g[0] }, () => [1, g[1], g[2]] as Grid));
  }
  const hasVision = (inp.imageGridThw && inp.imageGridThw.length > 0) || (videoGrids && videoGrids.length > 0);
  if (!hasVision) {
    for (let b = 0; b < B; b++) {
      const m = inp.attentionMask?.[b];
      let c = 0;
      let max = -Infinity;
      for (let i = 0; i < L; i++) {
        let p: number;
        if (m) {
          c += m[i] ? 1 : 0;
          p = m[i] ? c - 1 : 1;
        } else p = i;
        for (let a = 0; a < 3; a++) pos[(a * B + b) * L + i] = p;
        max = Math.max(max, p);
      }
      deltas.push(m ? max + 1 - L : 0);
    }
    return { positionIds: pos, deltas, batch: B, seqLen: L };
  }
  pos.fill(1);
  let imageIndex = 0;
  let videoIndex = 0;
  for (let b = 0; b < B; b++) {
    const row = inp.inputIds[b];
    const m = inp.attentionMask?.[b];
    const keep: number[] = [];
    for (let i = 0; i < L; i++) if (!m || m[i] === 1) keep.push(i);
    const tokens = keep.map((i) => row[i]);
    let imageNums = 0;
    let videoNums = 0;
    for (let i = 0; i < tokens.length; i++) {
      if (tokens[i] === cfg.visionStartTokenId && i + 1 < tokens.length) {
        if (tokens[i + 1] === cfg.imageTokenId) imageNums++;
        if (tokens[i + 1] === cfg.videoTokenId) videoNums++;
      }
    }
    const cols: number[][] = [[], [], []];
    let st = 0;
    let remainImages = imageNums;
    let remainVideos = videoNums;
    // llm_pos_ids_list[-1].max() + 1 starts each block: the max of the last non-empty block
    let blockMax = -1;
    for (let k = 0; k < imageNums + videoNums; k++) {
      const edImage = remainImages > 0 ? indexFrom(tokens, cfg.imageTokenId, st) : tokens.length + 1;
      const edVideo = remainVideos > 0 ? indexFrom(tokens, cfg.videoTokenId, st) : tokens.length + 1;
      let t: number, h: number, w: number, sec: number, ed: number;
      if (edImage < edVideo) {
        const g = inp.imageGridThw![imageIndex];
        if (!g)
          throw new Error(`rope index: more image placeholders than image grids (${inp.imageGridThw?.length ?? 0})`);
        [t, h, w] = g;
        sec = 0;
        imageIndex++;
        remainImages--;
        ed = edImage;
      } else {
        const g = videoGrids![videoIndex];
        if (!g) throw new Error(`rope index: more video placeholders than video grids (${videoGrids?.length ?? 0})`);
        [t, h, w] = g;
        sec = inp.secondPerGridTs?.[videoIndex] ?? 1.0;
        videoIndex++;
        remainVideos--;
        ed = edVideo;
      }
      const gt = t;
      const gh = Math.floor(h / merge);
      const gw = Math.floor(w / merge);
      const textLen = ed - st;
      const stIdx = blockMax + 1;
      for (let i = 0; i < textLen; i++) for (let a = 0; a < 3; a++) cols[a].push(stIdx + i);
      const base = textLen + stIdx;
      let mx = -Infinity;
      const step = cfg.arch === 'qwen2_5_vl' ? Math.trunc(sec) * (cfg.vision.tokensPerSecond ?? 2) : 0;
      for (let ti = 0; ti < gt; ti++) {
        const tv = cfg.arch === 'qwen2_5_vl' ? Math.trunc(ti * step) : ti;
        for (let hi = 0; hi < gh; hi++) {
          for (let wi = 0; wi < gw; wi++) {
            cols[0].push(tv + base);
            cols[1].push(hi + base);
            cols[2].push(wi + base);
            mx = Math.max(mx, tv + base, hi + base, wi + base);
          }
        }
      }
      blockMax = mx;
      st = ed + gt * gh * gw;
    }
    if (st < tokens.length) {
      const stIdx = blockMax + 1;
      const textLen = tokens.length - st;
      for (let i = 0; i < textLen; i++) for (let a = 0; a < 3; a++) cols[a].push(stIdx + i);
    }
    let max = -Infinity;
    for (let a = 0; a < 3; a++) {
      for (let j = 0; j < keep.length; j++) {
        const v = cols[a][j];
        pos[(a * B + b) * L + keep[j]] = v;
        if (v > max) max = v;
      }
    }
    deltas.push(max + 1 - L);
  }
  return { positionIds: pos, deltas, batch: B, seqLen: L };
}

function indexFrom(tokens: number[], value: number, start: number): number {
  const i = tokens.indexOf(value, start);
  if (i < 0) throw new Error(`rope index: token ${value} not found after position ${start}`);
  return i;
}
