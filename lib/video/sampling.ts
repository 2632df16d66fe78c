/**
 * Frame sampling and pixel budgets for video inputs (anchors.md: users set a frame count and a
 * max-pixels budget per frame, as Video-R1 does): uniform frame indices and the output size.
 */
import { invalidArg, outOfRange } from '../errors';

/**
 * `n` frame indices spread uniformly over `total` frames, each at the centre of its slice:
 * floor((i + 0.5) * total / n). Indices repeat when n > total. Sorted ascending.
 */
export function uniformIndices(total: number, n: number): number[] {
  if (!Number.isInteger(total) || total < 1) throw outOfRange('total', 'an integer >= 1', total, 'uniformIndices');
  if (!Number.isInteger(n) || n < 1) throw outOfRange('frames', 'an integer >= 1', n, 'uniformIndices');
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(Math.min(total - 1, Math.floor(((i + 0.5) * total) / n)));
  return out;
}

export interface SizeOptions {
  /** Exact output width and height (both or neither). */
  width?: number;
  height?: number;
  /** Upper bound on width*height; frames above it are scaled down keeping the aspect ratio. */
  maxPixels?: number;
  /** Scaled sizes are rounded down to a multiple of this (default 2; e.g. 28 for ViT patches x2). */
  multiple?: number;
}

export function checkSizeOptions(o: SizeOptions, op: string): void {
  for (const k of ['width', 'height', 'maxPixels', 'multiple'] as const) {
    const v = o[k];
    if (v !== undefined && (!Number.isInteger(v) || v < 1)) throw outOfRange(k, 'an integer >= 1', v, op);
  }
  if ((o.width === undefined) !== (o.height === undefined))
    throw invalidArg(
      o.width === undefined ? 'width' : 'height',
      'both width and height, or neither',
      o.width ?? o.height,
      op,
    );
}

/** Output size for a source of width w and height h. Never upscales under a budget. */
export function targetSize(w: number, h: number, o: SizeOptions = {}): { width: number; height: number } {
  if (o.width !== undefined && o.height !== undefined) return { width: o.width, height: o.height };
  if (o.maxPixels === undefined || w * h <= o.maxPixels) return { width: w, height: h };
  const m = o.multiple ?? 2;
  const s = Math.sqrt(o.maxPixels / (w * h));
  return { width: Math.max(m, Math.floor((w * s) / m) * m), height: Math.max(m, Math.floor((h * s) / m) * m) };
}
