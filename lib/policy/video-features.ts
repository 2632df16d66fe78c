/**
 * Pixel descriptors of a short clip for the built-in linear policy (lib/policy/linear.ts):
 * per frame, the pixels that differ from the background (the colour of the top-left pixel),
 * their centroid, area, bounding-box fill and mean colour. From these, discrete descriptors the
 * policy crosses with the option words: motion direction along x and y, growth, dominant colour
 * (the static shortcut cue of the synthetic DyBench), the shape of what is visible first and
 * last, and the number of occupied quadrants; plus single-frame descriptors repeated per frame. They change under the counterfactual transforms
 * exactly as the pixels do (hflip mirrors x, reverse swaps first/last and every motion).
 */
import { PALETTE as SCENE_PALETTE } from '../data/scene';

/** The scene palette's colours an object can be matched to (gray is the background). */
const PALETTE = Object.fromEntries(Object.entries(SCENE_PALETTE).filter(([name]) => name !== 'gray'));

interface FrameStats {
  area: number;
  cx: number;
  cy: number;
  fill: number;
  corners: number;
  colour: string;
  quadrants: number;
}

function frameStats(px: Uint8Array, t: number, H: number, W: number): FrameStats | null {
  const base = t * H * W * 3;
  const bg0 = px[base],
    bg1 = px[base + 1],
    bg2 = px[base + 2];
  let n = 0,
    sx = 0,
    sy = 0,
    r = 0,
    g = 0,
    b = 0;
  let x0 = W,
    x1 = -1,
    y0 = H,
    y1 = -1;
  const quad = [0, 0, 0, 0];
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const o = base + (y * W + x) * 3;
      const d = Math.abs(px[o] - bg0) + Math.abs(px[o + 1] - bg1) + Math.abs(px[o + 2] - bg2);
      if (d <= 60) continue;
      n++;
      sx += x;
      sy += y;
      r += px[o];
      g += px[o + 1];
      b += px[o + 2];
      if (x < x0) x0 = x;
      if (x > x1) x1 = x;
      if (y < y0) y0 = y;
      if (y > y1) y1 = y;
      quad[(y < H / 2 ? 0 : 2) + (x < W / 2 ? 0 : 1)]++;
    }
  }
  if (n === 0) return null;
  const inMask = (x: number, y: number): number => {
    const o = base + (y * W + x) * 3;
    return Math.abs(px[o] - bg0) + Math.abs(px[o + 1] - bg1) + Math.abs(px[o + 2] - bg2) > 60 ? 1 : 0;
  };
  let best = '',
    bestD = Infinity;
  for (const [name, c] of Object.entries(PALETTE)) {
    const d = Math.abs(r / n - c[0]) + Math.abs(g / n - c[1]) + Math.abs(b / n - c[2]);
    if (d < bestD) {
      bestD = d;
      best = name;
    }
  }
  return {
    area: n / (H * W),
    cx: sx / n / W,
    cy: sy / n / H,
    fill: n / ((x1 - x0 + 1) * (y1 - y0 + 1)),
    corners: inMask(x0, y0) + inMask(x1, y0) + inMask(x0, y1) + inMask(x1, y1),
    colour: best,
    quadrants: quad.filter((q) => q > 2).length,
  };
}

const shapeCode = (s: FrameStats): string => `${Math.min(4, Math.floor(s.fill * 5))}c${s.corners}`;

/** Discrete descriptors of a clip [T, H, W, 3]. */
export function clipDescriptors(px: Uint8Array, shape: readonly number[]): string[] {
  const [T, H, W] = shape;
  const stats: FrameStats[] = [];
  for (let t = 0; t < T; t++) {
    const s = frameStats(px, t, H, W);
    if (s) stats.push(s);
  }
  if (stats.length === 0) return ['empty'];
  const first = stats[0],
    last = stats[stats.length - 1];
  const sign = (d: number, th: number): string => (d > th ? '+' : d < -th ? '-' : '0');
  const growth = last.area / Math.max(1e-9, first.area);
  // Single-frame descriptors, once per frame in which something is visible: what any one frame
  // shows (colour, shape) weighs T times more than what only the whole clip shows (motion),
  // the "static shortcut" bias of video models that the paper describes.
  const perFrame = stats.flatMap((s) => [`f:colour:${s.colour}`, `f:shape:${shapeCode(s)}`]);
  return [
    ...perFrame,
    `mx${sign(last.cx - first.cx, 0.08)}`,
    `my${sign(last.cy - first.cy, 0.08)}`,
    `area${growth > 1.4 ? '+' : growth < 1 / 1.4 ? '-' : '0'}`,
    `colour:${first.colour}`,
    `first:${shapeCode(first)}`,
    `last:${shapeCode(last)}`,
    `count:${first.quadrants}`,
  ];
}
