/**
 * Types of the Task Router (crpo-method.md section 2): the question types, the counterfactual
 * transforms, the `route` object added to each DyBench record, and the backend interface.
 */
import { z } from 'zod';

export const ROUTE_TYPES = ['spatial', 'temporal', 'spatiotemporal', 'static'] as const;
export type RouteType = (typeof ROUTE_TYPES)[number];

export const ROUTE_TRANSFORMS = ['hflip', 'reverse', 'hflip+reverse'] as const;
export type RouteTransform = (typeof ROUTE_TRANSFORMS)[number];

export const ROUTE_RELATIONS = ['change', 'same'] as const;
export type RouteRelation = (typeof ROUTE_RELATIONS)[number];

/**
 * Which spatial axis a motion question is about. It decides which transforms change the answer:
 * horizontal and rotation change under hflip and under reverse; vertical and depth only under
 * reverse; a turn (left/right turn of a walker or vehicle) only under hflip; mixed = several axes
 * among the options, where only reverse changes every one of them.
 */
export const MOTION_AXES = ['horizontal', 'vertical', 'depth', 'rotation', 'turn', 'mixed'] as const;
export type MotionAxis = (typeof MOTION_AXES)[number];

/** The `route` object the router adds to a DyBench record. */
export const Route = z
  .object({
    type: z.enum(ROUTE_TYPES),
    transform: z.enum(ROUTE_TRANSFORMS),
    relation: z.enum(ROUTE_RELATIONS),
    /** Backend that produced the type: 'rules' or 'llm' (hybrid records say which one answered). */
    backend: z.string().min(1),
    /** Model name for the LLM backend; 'rules-<version>' for the rules backend. */
    model: z.string().min(1),
    /** Version of the prompt (LLM) or of the rule set (rules). */
    promptVersion: z.string().min(1),
    rationale: z.string(),
    /** Confidence in [0, 1] of the type decision (the LLM's self-report is not used: 1 when it answered validly). */
    confidence: z.number().min(0).max(1).optional(),
    /** Motion axis for spatiotemporal questions. */
    axis: z.enum(MOTION_AXES).optional(),
    /** Set when the LLM answer was unusable and the rules answer was used instead. */
    fallback: z.string().optional(),
  })
  .strict();
export type Route = z.infer<typeof Route>;

/** What a backend decides about one question before the policy picks the transform. */
export interface Classification {
  type: RouteType;
  /** Motion axis (spatiotemporal questions). */
  axis?: MotionAxis;
  /** True when the question asks about text in the video (static: prefer reverse over hflip). */
  text?: boolean;
  /**
   * Static questions only: the transform that keeps the question's own wording true, when one of
   * them would not (a question naming "the car on the left" prefers reverse; one naming "the car
   * that moves up" prefers hflip). Text questions always prefer reverse.
   */
  prefer?: 'hflip' | 'reverse';
  /** Transform the backend proposes; the policy keeps it only when it is allowed for the type. */
  proposedTransform?: RouteTransform;
  confidence: number;
  rationale: string;
}

/** The part of a record the router reads. */
export interface RouterQuestion {
  id?: string;
  question: string;
  options: readonly string[];
}
