/**
 * The one transform vocabulary (crpo-method.md section 1): the counterfactual video transforms,
 * and 'none' for a clip as it was recorded. Records (`transform`, lib/data/schema.ts), routes,
 * the trainer's second branch and the policies' device transforms all speak it. No imports but
 * types, so the record format can use it without loading an addon.
 */
import type { VideoTransformName } from '../native-types';

/** The counterfactual video transforms, in the order every list and error message shows them. */
export const VIDEO_TRANSFORMS = [
  'hflip',
  'reverse',
  'hflip+reverse',
  'swap',
] as const satisfies readonly VideoTransformName[];

/** A clip's transform: a counterfactual video transform or 'none'. */
export type FrameTransform = 'none' | VideoTransformName;

/** 'none', then VIDEO_TRANSFORMS. */
export const FRAME_TRANSFORMS = ['none', ...VIDEO_TRANSFORMS] as const satisfies readonly FrameTransform[];

/** True when `x` names a counterfactual video transform (not 'none'). */
export function isVideoTransform(x: unknown): x is VideoTransformName {
  return (VIDEO_TRANSFORMS as readonly unknown[]).includes(x);
}
