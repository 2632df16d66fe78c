/**
 * Per-category rules of DyBench (crpo-method.md section 8): how many options each category has
 * and which counterfactual transforms make a valid partner. Loaders, the builder and the
 * synthetic generator share these.
 */
import type { Category, RecordTransform } from './schema';

/** Option counts fixed by the benchmark; `undefined` = any count from 2 to 25. */
export const CATEGORY_OPTION_COUNTS: Readonly<Record<Category, number | undefined>> = {
  reversible_dynamics: 3,
  moving_direction: 4,
  event_sequence: 2,
  static: undefined,
  other: undefined,
};

/** Transforms that may make the partner of a record in each category. */
export const CATEGORY_TRANSFORMS: Readonly<Record<Category, readonly RecordTransform[]>> = {
  reversible_dynamics: ['reverse'],
  moving_direction: ['hflip', 'reverse', 'hflip+reverse'],
  event_sequence: ['swap'],
  static: ['hflip', 'reverse', 'hflip+reverse'],
  other: ['hflip', 'reverse', 'hflip+reverse', 'swap'],
};

/** Dynamic categories: the partner's answer is expected to differ (with documented exceptions). */
export const DYNAMIC_CATEGORIES: readonly Category[] = ['reversible_dynamics', 'moving_direction', 'event_sequence'];

/**
 * Direction words under a transform: hflip mirrors left/right (and clockwise), reverse inverts
 * every motion. Used to remap moving-direction answers.
 */
export const DIRECTION_WORDS = ['left', 'right', 'up', 'down', 'toward', 'towards', 'away', 'clockwise', 'counterclockwise', 'counter-clockwise', 'anticlockwise', 'forward', 'backward'];

export function mapDirection(word: string, transform: RecordTransform): string {
  const w = word.trim().toLowerCase();
  const hflip: Record<string, string> = { left: 'right', right: 'left', clockwise: 'counterclockwise', counterclockwise: 'clockwise', 'counter-clockwise': 'clockwise', anticlockwise: 'clockwise' };
  const reverse: Record<string, string> = {
    left: 'right', right: 'left', up: 'down', down: 'up', toward: 'away', towards: 'away', away: 'toward',
    clockwise: 'counterclockwise', counterclockwise: 'clockwise', 'counter-clockwise': 'clockwise', anticlockwise: 'clockwise',
    forward: 'backward', backward: 'forward',
  };
  let out = w;
  if (transform === 'hflip' || transform === 'hflip+reverse') out = hflip[out] ?? out;
  if (transform === 'reverse' || transform === 'hflip+reverse') out = reverse[out] ?? out;
  return out;
}
