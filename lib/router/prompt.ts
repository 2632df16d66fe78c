/**
 * The LLM router prompt (crpo-method.md section 2: a text-only reasoning model classifies each
 * question and picks the transform), versioned by PROMPT_VERSION, and the strict parser of its
 * JSON answer. The parser ignores reasoning: `<think>...</think>` blocks (also an unclosed one),
 * text around the JSON, code fences; `reasoning_content` is never read. It accepts exactly one
 * kind of answer: a JSON object with a valid `type` (and, when given, a valid `transform`, `axis`,
 * `text`); anything else is invalid and the caller asks again.
 */
import { z } from 'zod';
import { LETTERS } from '../prompt';
import { MOTION_AXES, ROUTE_TRANSFORMS, ROUTE_TYPES, type Classification } from './types';

/** Change whenever the text below changes: it is part of the cache key. */
export const PROMPT_VERSION = 'router-prompt-v1';

export const SYSTEM_PROMPT = `You route video question-answering items for counterfactual training. You see only the question text and its options, never the video.
Two counterfactual videos can be made from any clip: "hflip" (mirror left and right) and "reverse" (play backwards); "hflip+reverse" applies both.
Classify the question into exactly one type:
- "spatial": about left/right layout in a scene without motion: which hand or foot, what is on the left, which side, which way something faces or points. hflip changes the answer.
- "temporal": about time order or an action whose time reversal is a different action: before/after/first/last/next, the order of steps, opening vs closing, putting in vs taking out, folding vs unfolding, filling vs emptying, speeding up vs slowing down, a state change (off to on), playing forward or backward. reverse changes the answer.
- "spatiotemporal": about the direction of a motion: moving left/right, up/down, toward/away from the camera, clockwise vs counterclockwise, camera pan/tilt/zoom, turning left/right. Give its "axis": "horizontal" (left/right motion), "vertical" (up/down), "depth" (toward/away, zoom), "rotation" (clockwise), "turn" (a walker or vehicle turning left/right), or "mixed" (options on several axes).
- "static": anything whose answer survives both mirroring and playing backwards: colour, count, object, place, activity, text, absolute speed, why, what someone does while something else happens. Mention of motion inside a description ("the car that enters") does not make a question dynamic: what is asked decides.
Pick "transform": spatial -> "hflip"; temporal -> "reverse"; spatiotemporal -> "reverse", except a turn -> "hflip" (never hflip for up/down or toward/away; never hflip+reverse for left/right or clockwise, the two flips cancel); static -> "hflip" or "reverse", "reverse" when the question is about reading text (hflip mirrors text).
Set "text": true when the question asks to read text, numbers or signs in the video.
Answer with one JSON object and nothing else: {"type": "...", "axis": "..." or null, "transform": "...", "text": true|false, "rationale": "one short sentence"}`;

/** Few-shot examples (taken from the dev part of the labelled set, never from the held-out part). */
export const FEW_SHOT: readonly { question: string; options: string[]; answer: Record<string, unknown> }[] = [
  {
    question: 'Which hand is the boy using to brush his teeth?',
    options: ['his left hand', 'his right hand'],
    answer: {
      type: 'spatial',
      axis: null,
      transform: 'hflip',
      text: false,
      rationale: 'Left/right hand of a still pose; mirroring swaps it.',
    },
  },
  {
    question: 'Is the person opening or closing the laptop?',
    options: ['opening the laptop', 'closing the laptop'],
    answer: {
      type: 'temporal',
      axis: null,
      transform: 'reverse',
      text: false,
      rationale: 'Opening played backwards is closing.',
    },
  },
  {
    question: 'Which way does the object move?',
    options: ['up', 'down', 'left', 'right'],
    answer: {
      type: 'spatiotemporal',
      axis: 'mixed',
      transform: 'reverse',
      text: false,
      rationale: 'Motion direction on two axes; only reversal changes all of them.',
    },
  },
  {
    question: 'Does the car turn left or right at the corner?',
    options: ['turns left', 'turns right', 'goes straight'],
    answer: {
      type: 'spatiotemporal',
      axis: 'turn',
      transform: 'hflip',
      text: false,
      rationale: 'A mirrored left turn is a right turn.',
    },
  },
  {
    question: 'What is the color of the car driving to the left?',
    options: ['silver', 'red', 'blue', 'black'],
    answer: {
      type: 'static',
      axis: null,
      transform: 'reverse',
      text: false,
      rationale: 'Asks for a colour; the motion only identifies the car.',
    },
  },
  {
    question: 'What does the logo on the shirt say?',
    options: ['NIKE', 'ADIDAS', 'PUMA', 'FILA'],
    answer: {
      type: 'static',
      axis: null,
      transform: 'reverse',
      text: true,
      rationale: 'Reading text; hflip would mirror it.',
    },
  },
];

/** The user message for one question: the question and its lettered options. */
export function questionMessage(question: string, options: readonly string[]): string {
  return `Question: ${question.trim()}\nOptions:\n${options.map((o, i) => `${LETTERS[i] ?? String(i + 1)}. ${o}`).join('\n')}\nReturn only the JSON object.`;
}

export interface RouterMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

/** The full message list: system, few-shot pairs, then the question (and, on a retry, the correction). */
export function routerMessages(question: string, options: readonly string[], retryNote?: string): RouterMessage[] {
  const msgs: RouterMessage[] = [{ role: 'system', content: SYSTEM_PROMPT }];
  for (const ex of FEW_SHOT) {
    msgs.push({ role: 'user', content: questionMessage(ex.question, ex.options) });
    msgs.push({ role: 'assistant', content: JSON.stringify(ex.answer) });
  }
  msgs.push({ role: 'user', content: questionMessage(question, options) + (retryNote ? `\n${retryNote}` : '') });
  return msgs;
}

export const RETRY_NOTE =
  'Your previous answer was not a valid JSON object of the required form. Reply with exactly one JSON object: {"type": ..., "axis": ..., "transform": ..., "text": ..., "rationale": ...}.';

const LlmAnswer = z
  .object({
    type: z.enum(ROUTE_TYPES),
    axis: z.enum(MOTION_AXES).nullable().optional(),
    transform: z.enum(ROUTE_TRANSFORMS).nullable().optional(),
    text: z.boolean().nullable().optional(),
    rationale: z.string().optional(),
  })
  .passthrough();

export type ParseResult = { ok: true; classification: Classification } | { ok: false; reason: string };

/** Removes `<think>...</think>` blocks; an unclosed `<think>` hides everything after it. */
export function stripThinking(text: string): string {
  let out = text.replace(/<think(?:ing)?>[\s\S]*?<\/think(?:ing)?>/gi, ' ');
  const open = out.search(/<think(?:ing)?>/i);
  if (open >= 0) out = out.slice(0, open);
  return out;
}

/** Every balanced top-level `{...}` span in `text`, honouring JSON strings and escapes. */
export function jsonObjectSpans(text: string): string[] {
  const spans: string[] = [];
  let depth = 0;
  let start = -1;
  let inString = false;
  let escaped = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (inString) {
      if (escaped) escaped = false;
      else if (ch === '\\') escaped = true;
      else if (ch === '"') inString = false;
      continue;
    }
    if (ch === '"' && depth > 0) inString = true;
    else if (ch === '{') {
      if (depth === 0) start = i;
      depth++;
    } else if (ch === '}' && depth > 0) {
      depth--;
      if (depth === 0) spans.push(text.slice(start, i + 1));
    }
  }
  return spans;
}

/**
 * Parses the model's reply. Reasoning is stripped first; of the JSON objects left, the last one
 * that is a valid answer wins (models often restate a draft before the final answer). Several
 * valid answers that disagree on the type are invalid: the reply is ambiguous.
 */
export function parseRouterReply(content: unknown): ParseResult {
  if (typeof content !== 'string' || content.trim() === '') return { ok: false, reason: 'empty reply' };
  const visible = stripThinking(content);
  const spans = jsonObjectSpans(visible);
  if (spans.length === 0)
    return {
      ok: false,
      reason: visible.includes('{')
        ? 'unbalanced JSON object in the reply (truncated?)'
        : 'no JSON object in the reply',
    };
  const valid: z.infer<typeof LlmAnswer>[] = [];
  let lastProblem = '';
  for (const s of spans) {
    let v: unknown;
    try {
      v = JSON.parse(s);
    } catch (err) {
      lastProblem = `invalid JSON (${(err as Error).message})`;
      continue;
    }
    const r = LlmAnswer.safeParse(v);
    if (r.success) valid.push(r.data);
    else
      lastProblem = `JSON does not match the answer schema (${r.error.issues.map((i) => `${i.path.join('.') || 'value'}: ${i.message}`).join('; ')})`;
  }
  if (valid.length === 0) return { ok: false, reason: lastProblem };
  if (new Set(valid.map((v) => v.type)).size > 1)
    return { ok: false, reason: `ambiguous reply: ${valid.length} answers with different types` };
  const a = valid[valid.length - 1];
  const c: Classification = { type: a.type, confidence: 1, rationale: (a.rationale ?? '').slice(0, 300) };
  if (a.type === 'spatiotemporal') c.axis = a.axis ?? 'mixed';
  if (a.transform) c.proposedTransform = a.transform;
  if (a.type === 'static' && a.text === true) c.text = true;
  return { ok: true, classification: c };
}
