/**
 * Rasteriser for the synthetic DyBench scenes (lib/data/scene.ts, docs/data-format.md, "Synthetic
 * scenes") and the renderer of a record's inline synthetic video: the scene, then the spec's
 * transform. Coordinates are fractions of the frame, so one scene renders at any size. The
 * counterfactual partner of a clip is this rendering passed through the video transform
 * (crpo-method.md section 1), never a second rendering.
 */
import { transformFramesSync } from '../counterfactual';
import { SyntheticVideoSpec } from '../data/schema';
import { PALETTE, parseScene, type Scene, type Shape } from '../data/scene';
import { invalidArg } from '../errors';

/** True when the point (u, v), in units of the half-size around the centre, is inside `shape`. */
function inside(shape: Shape, u: number, v: number): boolean {
  switch (shape) {
    case 'square':
      return Math.abs(u) <= 1 && Math.abs(v) <= 1;
    case 'circle':
      return u * u + v * v <= 1;
    case 'triangle': // apex up, base down; symmetric under a horizontal flip
      return v >= -1 && v <= 1 && Math.abs(u) <= (v + 1) / 2;
    case 'cross':
      return (Math.abs(u) <= 0.34 && Math.abs(v) <= 1) || (Math.abs(v) <= 0.34 && Math.abs(u) <= 1);
  }
}

/** Frames t in [0,T) where an object with `visible` is drawn. */
export function visibleFrames(visible: readonly [number, number] | undefined, T: number): number[] {
  const [start, end] = visible ?? [0, 1];
  const out: number[] = [];
  for (let t = 0; t < T; t++) if (t >= start * T && (t < end * T || (end >= 1 && t === T - 1))) out.push(t);
  return out;
}

/** Renders `scene` as uint8 [T,H,W,3] (no transform). */
export function renderScene(scene: Scene, T: number, H: number, W: number): Uint8Array {
  const frames = new Uint8Array(T * H * W * 3);
  const bg = PALETTE[scene.background];
  for (let i = 0; i < T * H * W; i++) frames.set(bg, i * 3);
  const unit = Math.min(H, W);
  for (const o of scene.objects) {
    const shown = visibleFrames(o.visible, T);
    const rgb = PALETTE[o.color];
    for (const t of shown) {
      // Linear interpolation between the keyframes over the visible frames.
      const a = shown.length > 1 ? (t - shown[0]) / (shown[shown.length - 1] - shown[0]) : 0;
      const cx = (o.from.x + a * (o.to.x - o.from.x)) * W;
      const cy = (o.from.y + a * (o.to.y - o.from.y)) * H;
      const half = ((o.from.size + a * (o.to.size - o.from.size)) * unit) / 2;
      if (half <= 0) continue;
      const x0 = Math.max(0, Math.floor(cx - half)),
        x1 = Math.min(W - 1, Math.ceil(cx + half));
      const y0 = Math.max(0, Math.floor(cy - half)),
        y1 = Math.min(H - 1, Math.ceil(cy + half));
      for (let y = y0; y <= y1; y++) {
        for (let x = x0; x <= x1; x++) {
          // Pixel centres are sampled, so the image is crisp and exactly reproducible.
          if (inside(o.shape, (x + 0.5 - cx) / half, (y + 0.5 - cy) / half)) frames.set(rgb, ((t * H + y) * W + x) * 3);
        }
      }
    }
  }
  return frames;
}

/**
 * Renders an inline synthetic spec as uint8 [T,H,W,3]: the scene, then the spec's transform
 * applied by the core addon's counterfactual op.
 */
export function renderSynthetic(spec: SyntheticVideoSpec): Uint8Array {
  const s = SyntheticVideoSpec.safeParse(spec);
  if (!s.success) {
    const issue = s.error.issues[0];
    throw invalidArg(
      `spec.${issue.path.join('.')}`,
      `a valid synthetic video spec (${issue.message})`,
      (spec as Record<string, unknown> | null)?.[String(issue.path[0])],
      'renderSynthetic',
    );
  }
  const v = s.data;
  const frames = renderScene(parseScene(v.scene, 'video.scene'), v.frames, v.height, v.width);
  if (v.transform === 'none') return frames;
  return transformFramesSync(frames, {
    shape: [1, v.frames, v.height, v.width, 3],
    transform: v.transform,
    swapAt: v.swap_at,
  }) as Uint8Array;
}
