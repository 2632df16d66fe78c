/**
 * Naive reference for the counterfactual video transforms: an index-by-index loop that is
 * obviously correct. Tests compare the native kernels against it; the benchmark times it as the
 * "naive TS loop" baseline. Semantics as native/kernels/cpu/video_transform_kernel.h.
 */
import type { FrameArray, FrameLayout, VideoTransformName } from '../native';

export function referenceTransform(
  input: FrameArray,
  shape: readonly number[],
  layout: FrameLayout,
  transform: VideoTransformName,
  swapAt = 0,
  output?: FrameArray,
): FrameArray {
  const [B, T, d2, d3, d4] = shape;
  const out = output ?? (input instanceof Float32Array ? new Float32Array(input.length) : new Uint8Array(input.length));
  // Logical dims independent of layout.
  const H = layout === 'BTHWC' ? d2 : d3;
  const W = layout === 'BTHWC' ? d3 : d4;
  const C = layout === 'BTHWC' ? d4 : d2;
  const index = (b: number, t: number, h: number, w: number, c: number): number =>
    layout === 'BTHWC' ? (((b * T + t) * H + h) * W + w) * C + c : (((b * T + t) * C + c) * H + h) * W + w;
  const flip = transform === 'hflip' || transform === 'hflip+reverse';
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      let st = t;
      if (transform === 'reverse' || transform === 'hflip+reverse') st = T - 1 - t;
      if (transform === 'swap') {
        const tail = T - swapAt;
        st = t < tail ? t + swapAt : t - tail;
      }
      for (let h = 0; h < H; h++) {
        for (let w = 0; w < W; w++) {
          const sw = flip ? W - 1 - w : w;
          for (let c = 0; c < C; c++) out[index(b, t, h, w, c)] = input[index(b, st, h, sw, c)];
        }
      }
    }
  }
  return out;
}
