/**
 * The DyBench data format (docs/data-format.md): JSONL, one record per video-question. Records
 * of one pair share `pair_id`; each member says which `transform` made it from the original.
 */
import { z } from 'zod';
import { FRAME_TRANSFORMS, type FrameTransform } from '../counterfactual/transforms';

export const CATEGORIES = ['reversible_dynamics', 'moving_direction', 'event_sequence', 'static', 'other'] as const;
export type Category = (typeof CATEGORIES)[number];

/** A record's `transform`: the one transform vocabulary (lib/counterfactual/transforms.ts). */
export type RecordTransform = FrameTransform;
/** @deprecated FRAME_TRANSFORMS of lib/counterfactual (the same list); kept for lib/index.ts. */
export const RECORD_TRANSFORMS = FRAME_TRANSFORMS;

/** An inline procedural video (the synthetic DyBench): rendered on demand, no files needed. */
export const SyntheticVideoSpec = z
  .object({
    kind: z.literal('synthetic'),
    /** Generator scene parameters; the schema is lib/data/scene.ts. */
    scene: z.record(z.string(), z.unknown()),
    frames: z.number().int().positive(),
    height: z.number().int().positive(),
    width: z.number().int().positive(),
    /** Transform applied to the rendered clip. */
    transform: z.enum(FRAME_TRANSFORMS).default('none'),
    swap_at: z.number().int().positive().optional(),
  })
  .strict();
export type SyntheticVideoSpec = z.infer<typeof SyntheticVideoSpec>;

/** `video`: a video file path, a frames directory path, or an inline synthetic spec. */
export const VideoRef = z.union([z.string().min(1), SyntheticVideoSpec]);
export type VideoRef = z.infer<typeof VideoRef>;

export const DyBenchRecord = z
  .object({
    id: z.string().min(1),
    pair_id: z.string().min(1),
    video: VideoRef,
    question: z.string().min(1),
    options: z.array(z.string().min(1)).min(2).max(25),
    /** Index of the right option (0-based). */
    answer: z.number().int().nonnegative(),
    category: z.enum(CATEGORIES),
    transform: z.enum(FRAME_TRANSFORMS),
    source: z.string().min(1),
    /** Optional extra fields (e.g. `route`, `split`, importer provenance). */
    route: z.unknown().optional(),
    split: z.string().optional(),
    meta: z.record(z.string(), z.unknown()).optional(),
  })
  .strict()
  .refine((r) => r.answer < r.options.length, { message: 'answer must index one of the options', path: ['answer'] });
export type DyBenchRecord = z.infer<typeof DyBenchRecord>;

/**
 * `meta.instance` of a TimeBlind-style record: which of the instance's two videos and two
 * questions it is. The four records of an instance share `pair_id` (docs/data-format.md).
 */
export const TimeBlindInstance = z.object({ video: z.union([z.literal(0), z.literal(1)]), question: z.union([z.literal(0), z.literal(1)]) }).strict();
export type TimeBlindInstance = z.infer<typeof TimeBlindInstance>;
