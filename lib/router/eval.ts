/**
 * Accuracy of the Task Router on a labelled set (crpo-method.md section 2; the paper reports 94%
 * router accuracy): type accuracy per type, a confusion matrix, and transform validity, the
 * share of dynamic questions whose chosen transform really changes the answer (and, for static
 * questions, the share whose transform keeps it). Labelled file format (data/router/): JSONL with
 * id, split, style, question, options, type and changedBy (transforms that change the answer
 * whatever the video shows; empty for static questions).
 */
import { z } from 'zod';
import { readTextFile } from '../data/jsonl';
import { CrpoError } from '../errors';
import { ROUTE_TRANSFORMS, ROUTE_TYPES, type Route, type RouteType } from './types';

export const LabelledQuestion = z
  .object({
    id: z.string().min(1),
    split: z.string().min(1),
    style: z.string().min(1),
    question: z.string().min(1),
    options: z.array(z.string().min(1)).min(2),
    type: z.enum(ROUTE_TYPES),
    changedBy: z.array(z.enum(ROUTE_TRANSFORMS)),
  })
  .strict()
  .refine((r) => (r.type === 'static') === (r.changedBy.length === 0), {
    message: 'changedBy must be empty exactly for static questions',
    path: ['changedBy'],
  });
export type LabelledQuestion = z.infer<typeof LabelledQuestion>;

/** Reads a labelled JSONL file; every bad line is reported as file:line:field: message. */
export function loadLabelled(file: string): LabelledQuestion[] {
  const text = readTextFile(file, 'labelled file');
  if (text.trim() === '') {
    throw new CrpoError(
      'ERR_CRPO_EMPTY',
      `${file}: no labelled questions (the file is ` +
        `${text.length ? 'blank' : 'empty'}); expected one JSON object per line`,
    );
  }
  const out: LabelledQuestion[] = [];
  const problems: string[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (lines[i].trim() === '') continue;
    let value: unknown;
    try {
      value = JSON.parse(lines[i]);
    } catch (err) {
      problems.push(`${file}:${i + 1}: invalid JSON (${(err as Error).message})`);
      continue;
    }
    const r = LabelledQuestion.safeParse(value);
    if (!r.success)
      for (const iss of r.error.issues) problems.push(`${file}:${i + 1}:${iss.path.join('.')}: ${iss.message}`);
    else out.push(r.data);
  }
  if (problems.length)
    throw new CrpoError('ERR_CRPO_BAD_DATA', `${file}: ${problems.length} problem(s):\n  ${problems.join('\n  ')}`);
  return out;
}

export interface RouterAccuracy {
  n: number;
  typeAccuracy: number;
  perType: Record<RouteType, { n: number; correct: number; accuracy: number }>;
  /** confusion[truth][predicted] */
  confusion: Record<RouteType, Record<RouteType, number>>;
  /** Dynamic (truth) questions whose chosen transform is in changedBy. */
  transformValidity: { n: number; valid: number; share: number };
  /** Static (truth) questions whose chosen transform keeps the answer (relation 'same', any of hflip/reverse). */
  staticInvariance: { n: number; valid: number; share: number };
  errors: {
    id: string;
    question: string;
    truth: RouteType;
    predicted: RouteType;
    transform: string;
    changedBy: string[];
  }[];
}

/** Scores routes against labels (same order). */
export function scoreRoutes(
  labels: readonly LabelledQuestion[],
  routes: readonly Pick<Route, 'type' | 'transform'>[],
): RouterAccuracy {
  if (labels.length !== routes.length)
    throw new CrpoError('ERR_CRPO_OUT_OF_RANGE', `scoreRoutes: ${labels.length} labels but ${routes.length} routes`, {
      userError: false,
    });
  const zero = (): Record<RouteType, number> => ({ spatial: 0, temporal: 0, spatiotemporal: 0, static: 0 });
  const confusion = { spatial: zero(), temporal: zero(), spatiotemporal: zero(), static: zero() };
  const perType = Object.fromEntries(
    ROUTE_TYPES.map((t) => [t, { n: 0, correct: 0, accuracy: 0 }]),
  ) as RouterAccuracy['perType'];
  let correct = 0;
  const tv = { n: 0, valid: 0, share: 0 };
  const si = { n: 0, valid: 0, share: 0 };
  const errors: RouterAccuracy['errors'] = [];
  labels.forEach((l, i) => {
    const r = routes[i];
    confusion[l.type][r.type]++;
    perType[l.type].n++;
    if (r.type === l.type) {
      correct++;
      perType[l.type].correct++;
    }
    if (l.type === 'static') {
      si.n++;
      if (r.transform !== 'hflip+reverse') si.valid++;
    } else {
      tv.n++;
      if (l.changedBy.includes(r.transform)) tv.valid++;
    }
    if (r.type !== l.type || (l.type !== 'static' && !l.changedBy.includes(r.transform))) {
      errors.push({
        id: l.id,
        question: l.question,
        truth: l.type,
        predicted: r.type,
        transform: r.transform,
        changedBy: l.changedBy,
      });
    }
  });
  for (const t of ROUTE_TYPES) perType[t].accuracy = perType[t].n ? perType[t].correct / perType[t].n : 0;
  tv.share = tv.n ? tv.valid / tv.n : 0;
  si.share = si.n ? si.valid / si.n : 0;
  return {
    n: labels.length,
    typeAccuracy: labels.length ? correct / labels.length : 0,
    perType,
    confusion,
    transformValidity: tv,
    staticInvariance: si,
    errors,
  };
}

const pct = (x: number): string => `${(100 * x).toFixed(1)}%`;

/** A plain-text report: accuracy per type, confusion matrix, transform validity. */
export function formatAccuracy(title: string, a: RouterAccuracy, showErrors = true): string {
  const lines = [`${title}: ${a.n} questions`, `  type accuracy       ${pct(a.typeAccuracy)}`];
  for (const t of ROUTE_TYPES)
    lines.push(
      `    ${t.padEnd(16)} ${pct(a.perType[t].accuracy).padStart(6)}  (${a.perType[t].correct}/${a.perType[t].n})`,
    );
  lines.push(
    `  transform validity  ${pct(a.transformValidity.share)}  (${a.transformValidity.valid}/${a.transformValidity.n} dynamic questions whose transform changes the answer)`,
  );
  lines.push(
    `  static invariance   ${pct(a.staticInvariance.share)}  (${a.staticInvariance.valid}/${a.staticInvariance.n} static questions given hflip or reverse)`,
  );
  lines.push('  confusion (rows: truth, columns: predicted)');
  const head = ['', ...ROUTE_TYPES.map((t) => t.slice(0, 8))];
  lines.push('    ' + head.map((h, i) => (i === 0 ? h.padEnd(16) : h.padStart(9))).join(''));
  for (const t of ROUTE_TYPES)
    lines.push('    ' + t.padEnd(16) + ROUTE_TYPES.map((p) => String(a.confusion[t][p]).padStart(9)).join(''));
  if (showErrors && a.errors.length) {
    lines.push('  errors');
    for (const er of a.errors)
      lines.push(
        `    ${er.id}: ${er.truth} -> ${er.predicted} (${er.transform}; changed by ${er.changedBy.join('|') || 'none'}): ${er.question}`,
      );
  }
  return lines.join('\n');
}
