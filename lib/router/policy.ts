/**
 * The router's policy table (crpo-method.md section 2, docs/router.md): which transforms are
 * allowed for each question type and motion axis, which one is the default, and the seeded
 * choice for static questions. The rule it enforces: a dynamic question is never paired with a
 * transform that would leave its answer unchanged; a static question gets hflip or reverse
 * (reverse when it asks about text, which hflip mirrors).
 */
import { invalidArg } from '../errors';
import type { Classification, MotionAxis, RouteRelation, RouteTransform, RouteType } from './types';

export interface PolicyRow {
  type: RouteType;
  axis?: MotionAxis;
  relation: RouteRelation;
  /** Transforms that change the answer (dynamic) or keep it (static). */
  allowed: readonly RouteTransform[];
  /** The transform chosen when the backend proposes none (static: seeded, see staticTransform). */
  preferred: RouteTransform;
  why: string;
}

/**
 * The table. Reasoning per row: hflip mirrors the width axis (left<->right, clockwise<->counter-
 * clockwise) and nothing else; reverse negates every velocity and swaps every order, so it flips
 * up/down, toward/away, left/right motion and clockwise rotation; hflip+reverse undoes the
 * left/right and rotation change (the two flips cancel) but keeps the vertical/depth/order change.
 */
export const POLICY_TABLE: readonly PolicyRow[] = [
  {
    type: 'spatial',
    relation: 'change',
    allowed: ['hflip', 'hflip+reverse'],
    preferred: 'hflip',
    why: 'left/right layout mirrors under hflip; reverse keeps a still layout',
  },
  {
    type: 'temporal',
    relation: 'change',
    allowed: ['reverse', 'hflip+reverse'],
    preferred: 'reverse',
    why: 'order and reversible actions swap under reverse; hflip keeps them',
  },
  {
    type: 'spatiotemporal',
    axis: 'horizontal',
    relation: 'change',
    allowed: ['reverse', 'hflip'],
    preferred: 'reverse',
    why: 'left/right motion flips under reverse and under hflip (not under both)',
  },
  {
    type: 'spatiotemporal',
    axis: 'rotation',
    relation: 'change',
    allowed: ['reverse', 'hflip'],
    preferred: 'reverse',
    why: 'rotation sense flips under reverse and under hflip (not under both)',
  },
  {
    type: 'spatiotemporal',
    axis: 'vertical',
    relation: 'change',
    allowed: ['reverse', 'hflip+reverse'],
    preferred: 'reverse',
    why: 'up/down motion flips under reverse only; never hflip',
  },
  {
    type: 'spatiotemporal',
    axis: 'depth',
    relation: 'change',
    allowed: ['reverse', 'hflip+reverse'],
    preferred: 'reverse',
    why: 'toward/away motion flips under reverse only; never hflip',
  },
  {
    type: 'spatiotemporal',
    axis: 'turn',
    relation: 'change',
    allowed: ['hflip'],
    preferred: 'hflip',
    why: 'a left turn mirrors into a right turn; a reversed turn is a vehicle backing up, not a clean opposite turn',
  },
  {
    type: 'spatiotemporal',
    axis: 'mixed',
    relation: 'change',
    allowed: ['reverse'],
    preferred: 'reverse',
    why: 'options on several axes: only reverse changes every one of them',
  },
  {
    type: 'static',
    relation: 'same',
    allowed: ['hflip', 'reverse'],
    preferred: 'hflip',
    why: 'colour, count, object, place and activity survive both; text is mirrored by hflip, so reverse for reading',
  },
];

/** The policy row for a type (and axis, for spatiotemporal; a missing axis counts as mixed). */
export function policyRow(type: RouteType, axis?: MotionAxis): PolicyRow {
  if (type === 'spatiotemporal') {
    const a = axis ?? 'mixed';
    const row = POLICY_TABLE.find((r) => r.type === type && r.axis === a);
    if (!row)
      throw invalidArg(
        'axis',
        `one of ${POLICY_TABLE.filter((r) => r.axis)
          .map((r) => r.axis)
          .join(', ')}`,
        axis,
        'policyRow',
      );
    return row;
  }
  const row = POLICY_TABLE.find((r) => r.type === type);
  if (!row) throw invalidArg('type', "'spatial', 'temporal', 'spatiotemporal' or 'static'", type, 'policyRow');
  return row;
}

/** FNV-1a 32-bit over a string: a stable, dependency-free hash for seeded choices. */
export function fnv1a(text: string, seed = 0): number {
  let h = (0x811c9dc5 ^ (seed >>> 0)) >>> 0;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/**
 * The seeded static choice: reverse for text questions, otherwise hflip or reverse from a hash
 * of (seed, question, options), so the same question always gets the same transform for a seed.
 */
export function staticTransform(
  question: string,
  options: readonly string[],
  seed: number,
  text: boolean,
): RouteTransform {
  if (text) return 'reverse';
  return fnv1a(question + '\u0000' + options.join('\u0001'), seed) & 1 ? 'reverse' : 'hflip';
}

export interface PolicyDecision {
  transform: RouteTransform;
  relation: RouteRelation;
  /** Set when the backend's proposed transform was not allowed and was replaced. */
  corrected?: string;
}

/** Applies the policy to a classification: keeps an allowed proposal, otherwise the default. */
export function applyPolicy(
  c: Classification,
  question: string,
  options: readonly string[],
  seed: number,
): PolicyDecision {
  const row = policyRow(c.type, c.axis);
  if (c.type === 'static') {
    if (c.text) {
      const corrected =
        c.proposedTransform && c.proposedTransform !== 'reverse'
          ? `proposed ${c.proposedTransform} replaced by reverse (text is mirrored by hflip)`
          : undefined;
      return { transform: 'reverse', relation: 'same', corrected };
    }
    if (c.prefer) return { transform: c.prefer, relation: 'same' };
    // The seeded choice decides, so the static split is balanced whatever the backend proposes.
    return { transform: staticTransform(question, options, seed, false), relation: 'same' };
  }
  if (c.proposedTransform && row.allowed.includes(c.proposedTransform))
    return { transform: c.proposedTransform, relation: row.relation };
  const corrected = c.proposedTransform
    ? `proposed ${c.proposedTransform} replaced by ${row.preferred} (${row.why})`
    : undefined;
  return { transform: row.preferred, relation: row.relation, corrected };
}
