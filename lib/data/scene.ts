/**
 * The synthetic scene format (docs/data-format.md, "Synthetic scenes"): flat shapes on a plain
 * background, each moving/growing linearly between two keyframes while it is visible, with
 * coordinates as fractions of the frame. The schema and the palette are part of the format: a
 * record's inline synthetic video holds a scene, which the loader validates here and
 * lib/video/synthetic.ts renders.
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
