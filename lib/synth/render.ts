/**
 * Rasteriser for the synthetic DyBench scenes (docs/data-format.md, "Synthetic scenes"): flat
 * shapes on a plain background, each moving/growing linearly between two keyframes while it is
 * visible. Coordinates are fractions of the frame, so one scene renders at any size. The
 * counterfactual partner of a clip is this rendering passed through the video transform
 * (crpo-method.md section 1), never a second rendering.
 */
import { z } from 'zod';
import { CrpoError } from '../errors';

/** Scene format version; bump when the rasteriser or palette changes pixels. */
export const SCENE_VERSION = 1;

/** Named colours (RGB). Part of the format: changing one changes every rendered clip. */
export const PALETTE = {
  red: [230, 40, 40],
  green: [40, 200, 60],
  blue: [50, 90, 240],
  yellow: [240, 220, 40],
  magenta: [220, 50, 220],
  cyan: [40, 220, 230],
  white: [245, 245, 245],
  gray: [60, 60, 60],
} as const satisfies Record<string, readonly [number, number, number]>;
export type ColourName = keyof typeof PALETTE;
export const COLOUR_NAMES = Object.keys(PALETTE) as ColourName[];
/** Colours objects may have (the background colours are excluded). */
export const OBJECT_COLOURS: readonly ColourName[] = ['red', 'green', 'blue', 'yellow', 'magenta', 'cyan'];

export const SHAPES = ['square', 'circle', 'triangle', 'cross'] as const;
export type Shape = (typeof SHAPES)[number];

const Keyframe = z
  .object({
    /** Centre, fractions of width / height. */
    x: z.number().min(-1).max(2),
    y: z.number().min(-1).max(2),
    /** Side / diameter, fraction of min(height, width). */
    size: z.number().min(0).max(2),
  })
  .strict();

export const SceneObject = z
  .object({
    shape: z.enum(SHAPES),
    color: z.enum(COLOUR_NAMES as [ColourName, ...ColourName[]]),
    from: Keyframe,
    to: Keyframe,
    /** Visible while start*T <= t < end*T (fractions of the clip); default the whole clip. */
    visible: z.tuple([z.number().min(0).max(1), z.number().min(0).max(1)]).optional(),
  })
  .strict();
export type SceneObject = z.infer<typeof SceneObject>;

export const Scene = z
  .object({
    version: z.literal(SCENE_VERSION),
    background: z.enum(COLOUR_NAMES as [ColourName, ...ColourName[]]),
    objects: z.array(SceneObject).max(64),
  })
  .strict();
export type Scene = z.infer<typeof Scene>;

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

/** Parses an untrusted scene object with a message naming the bad field. */
export function parseScene(scene: unknown, where = 'scene'): Scene {
  const r = Scene.safeParse(scene);
  if (!r.success) {
    const issue = r.error.issues[0];
    const field = [where, ...issue.path.map(String)].join('.');
    throw new CrpoError('ERR_CRPO_BAD_SCENE', `Invalid synthetic scene at ${field}: ${issue.message}`);
  }
  return r.data;
}
