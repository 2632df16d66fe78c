/**
 * DyBench builder (`crpo dybench build`; crpo-method.md section 8): from a user's clips and
 * annotations, makes each clip's counterfactual partner (reverse for reversible dynamics, hflip
 * and/or reverse for moving direction, a swap of two segments at an annotated boundary for event
 * sequence, hflip or reverse for static questions), writes both members through the same
 * pipeline (mp4 via ffmpeg/libx264, or PNG frame folders, which are exact), and the paired JSONL.
 * A transform that would not change a dynamic answer (or would change a static one) is refused.
 * All annotation problems are listed at once as file:line:field; finished pairs are skipped on a rerun.
 */
import * as fs from 'fs';
import * as path from 'path';
import { z } from 'zod';
import { VIDEO_TRANSFORMS, transformFramesSync } from '../counterfactual';
import { CATEGORY_OPTION_COUNTS, CATEGORY_TRANSFORMS, DYNAMIC_CATEGORIES } from '../data/categories';
import { writeJsonlAtomic, parseJsonl, readTextFile } from '../data/jsonl';
import { DataError, parseRecords, type RecordIssue } from '../data/loader';
import { CATEGORIES, type Category, type DyBenchRecord, type RecordTransform } from '../data/schema';
import { CrpoError, invalidArg, outOfRange } from '../errors';
import { encodeMp4 } from '../video/ffmpeg';
import { writeFrameDir } from '../video/frames-dir';
import { Semaphore } from '../video/lru';
import { VideoReader } from '../video/reader';
import { deriveAnswer, resolveAnswer } from './answers';

type PartnerTransform = (typeof VIDEO_TRANSFORMS)[number];
const AnswerValue = z.union([z.number().int().nonnegative(), z.string().min(1)]);

/** One annotated clip (docs/data-format.md, "Building DyBench from your clips"). */
export const Annotation = z
  .object({
    /** Record id of the original (default: the clip's file name without extension). */
    id: z.string().min(1).optional(),
    /** Video file or frames directory, relative to the annotation file. */
    clip: z.string().min(1),
    question: z.string().min(1),
    options: z.array(z.string().min(1)).min(2).max(25),
    /** Right option of the original clip: 0-based index, letter, or option text. */
    answer: AnswerValue,
    category: z.enum(CATEGORIES),
    /** Transform that makes the partner (default per category; see BuildOptions). */
    transform: z.enum(VIDEO_TRANSFORMS).optional(),
    /** Answer under each transform; derived from the option texts when omitted and clear. */
    answers: z.partialRecord(z.enum(VIDEO_TRANSFORMS), AnswerValue).optional(),
    /** Event sequence: first frame of the second segment (source frame index) ... */
    swap_at: z.number().int().positive().optional(),
    /** ... or the boundary in seconds. */
    swap_at_seconds: z.number().positive().optional(),
    source: z.string().min(1).optional(),
    meta: z.record(z.string(), z.unknown()).optional(),
  })
  .strict();
export type Annotation = z.infer<typeof Annotation>;

export interface BuildOptions {
  /** Annotation file: JSONL (one annotation per line) or a JSON array. */
  annotations: string;
  /** Output folder (videos/ or frames/, and the JSONL). */
  out: string;
  /** Output JSONL (default <out>/dybench.jsonl). */
  jsonl?: string;
  /** 'mp4' (libx264, default) or 'frames' (PNG folders, lossless: members differ exactly by the transform). */
  format?: 'mp4' | 'frames';
  /** Moving direction default: 'auto' = hflip for left/right answers, reverse otherwise. */
  movingTransform?: 'auto' | 'hflip' | 'reverse' | 'hflip+reverse';
  /** Static questions default (reverse keeps text readable). */
  staticTransform?: 'reverse' | 'hflip';
  /** Sample this many frames uniformly (default: every frame). */
  frames?: number;
  /** Pixel budget per frame (default: keep the size). */
  maxPixels?: number;
  /** libx264 CRF for mp4 output (default 18). */
  crf?: number;
  /** Frame rate for frame-folder clips (no rate of their own; default 8). */
  fps?: number;
  /** Clips processed at once (default 2). */
  concurrency?: number;
  reader?: VideoReader;
  onProgress?: (done: number, total: number, id: string) => void;
}

export interface BuildResult {
  jsonl: string;
  pairs: number;
  built: number;
  skipped: number;
}

interface Plan {
  line: number;
  id: string;
  clip: string;
  annotation: Annotation;
  answer: number;
  transform: PartnerTransform;
  partnerAnswer: number;
}

const slug = (t: string): string => t.replace('+', '_');

function readAnnotations(file: string): { loc: string; line: number; value: unknown }[] {
  const text = readTextFile(file, 'annotation file');
  const trimmed = text.trimStart();
  if (trimmed.startsWith('[')) {
    let arr: unknown;
    try {
      arr = JSON.parse(text);
    } catch (err) {
      throw new DataError([{ file, line: 1, field: '', message: `invalid JSON (${(err as Error).message})` }], file);
    }
    return (arr as unknown[]).map((value, i) => ({ loc: `[${i}]`, line: i + 1, value }));
  }
  const { values, errors } = parseJsonl(text, file);
  if (errors.length)
    throw new DataError(
      errors.map((e) => ({ file, line: e.line, field: '', message: e.message.slice(`${file}:${e.line}: `.length) })),
      file,
    );
  return values.map((v) => ({ loc: String(v.line), line: v.line, value: v.value }));
}

/** Default partner transform of an annotation without one. */
function defaultTransform(category: Category, answerText: string, o: BuildOptions): PartnerTransform {
  switch (category) {
    case 'reversible_dynamics':
      return 'reverse';
    case 'event_sequence':
      return 'swap';
    case 'moving_direction': {
      const m = o.movingTransform ?? 'auto';
      if (m !== 'auto') return m;
      return /\b(left|right)\b/i.test(answerText) ? 'hflip' : 'reverse';
    }
    default:
      return o.staticTransform ?? 'reverse';
  }
}

/** Validates every annotation and decides each partner; throws one DataError listing all problems. */
export function planBuild(o: BuildOptions): Plan[] {
  const file = o.annotations;
  const baseDir = path.dirname(path.resolve(file));
  const issues: RecordIssue[] = [];
  const plans: Plan[] = [];
  const seen = new Map<string, number>();
  for (const { line, value } of readAnnotations(file)) {
    const add = (field: string, message: string): void => void issues.push({ file, line, field, message });
    const r = Annotation.safeParse(value);
    if (!r.success) {
      for (const i of r.error.issues) {
        const keys = (i as { keys?: string[] }).keys;
        add(
          [...i.path.map(String), ...(keys ? [keys.join(',')] : [])].join('.'),
          keys ? `unknown field (${keys.join(', ')})` : i.message,
        );
      }
      continue;
    }
    const a = r.data;
    const clip = path.resolve(baseDir, a.clip);
    const id = a.id ?? path.basename(a.clip).replace(/\.[^.]+$/, '');
    if (seen.has(id)) add('id', `expected a unique id, '${id}' is already used on line ${seen.get(id)}`);
    else seen.set(id, line);
    const want = CATEGORY_OPTION_COUNTS[a.category];
    if (want !== undefined && a.options.length !== want)
      add('options', `expected ${want} options for category ${a.category}, received ${a.options.length}`);
    const ans = resolveAnswer(a.answer, a.options);
    if ('error' in ans) {
      add('answer', ans.error);
      continue;
    }
    const transform = a.transform ?? defaultTransform(a.category, a.options[ans.index], o);
    if (!CATEGORY_TRANSFORMS[a.category].includes(transform)) {
      add(
        'transform',
        `expected one of ${CATEGORY_TRANSFORMS[a.category].join(', ')} for category ${a.category}, received '${transform}'`,
      );
      continue;
    }
    if (transform === 'swap' && a.swap_at === undefined && a.swap_at_seconds === undefined)
      add('swap_at', 'expected the segment boundary (swap_at frame index or swap_at_seconds) for a segment swap');
    let partner: number | undefined;
    const given = a.answers?.[transform];
    if (given !== undefined) {
      const g = resolveAnswer(given, a.options);
      if ('error' in g) {
        add(`answers.${transform}`, g.error);
        continue;
      }
      partner = g.index;
    } else {
      partner = deriveAnswer(a.category, a.options, ans.index, transform);
    }
    if (partner === undefined) {
      add(
        `answers.${transform}`,
        `cannot derive the answer under ${transform} from the options; give it, e.g. "answers": {"${transform}": "<option>"}`,
      );
      continue;
    }
    if (DYNAMIC_CATEGORIES.includes(a.category) && partner === ans.index) {
      add(
        'transform',
        `${transform} would not change the answer ('${a.options[ans.index]}' stays '${a.options[partner]}'); a ${a.category} pair needs a transform that changes it${a.category === 'moving_direction' ? ' (up/down and toward/away change only under reverse)' : ''}`,
      );
      continue;
    }
    if (a.category === 'static' && partner !== ans.index) {
      add(
        `answers.${transform}`,
        `a static question keeps its answer under ${transform}, but the answer changes to '${a.options[partner]}'; use category other or a dynamic category`,
      );
      continue;
    }
    plans.push({ line, id, clip, annotation: a, answer: ans.index, transform, partnerAnswer: partner });
  }
  if (issues.length)
    throw new DataError(
      issues.sort((x, y) => x.line - y.line),
      file,
    );
  return plans;
}

function outputsOf(p: Plan, o: BuildOptions): { original: string; partner: string } {
  if ((o.format ?? 'mp4') === 'frames')
    return { original: path.join('frames', p.id), partner: path.join('frames', `${p.id}.${slug(p.transform)}`) };
  return {
    original: path.join('videos', `${p.id}.mp4`),
    partner: path.join('videos', `${p.id}.${slug(p.transform)}.mp4`),
  };
}

async function buildOne(p: Plan, o: BuildOptions, reader: VideoReader): Promise<{ swapAt?: number; built: boolean }> {
  const outs = outputsOf(p, o);
  const origAbs = path.join(o.out, outs.original),
    partAbs = path.join(o.out, outs.partner);
  const metaFile = `${partAbs}.json`;
  // Both outputs are renamed into place complete; the small sidecar is written last.
  if (fs.existsSync(origAbs) && fs.existsSync(partAbs) && fs.existsSync(metaFile)) {
    const m = JSON.parse(fs.readFileSync(metaFile, 'utf8')) as { swapAt?: number };
    return { swapAt: m.swapAt, built: false };
  }
  const v = await reader.read(p.clip, { frames: o.frames, maxPixels: o.maxPixels });
  const [T, H, W] = v.shape;
  let swapAt: number | undefined;
  if (p.transform === 'swap') {
    const a = p.annotation;
    const srcFps = Number.isFinite(v.fps) ? v.fps : (o.fps ?? 8);
    const boundary = a.swap_at ?? Math.round((a.swap_at_seconds as number) * srcFps);
    // The boundary in the sampled frames: how many sampled frames lie before it.
    swapAt = v.indices.filter((i) => i < boundary).length;
    if (swapAt < 1 || swapAt > T - 1) {
      throw new CrpoError(
        'ERR_CRPO_BAD_DATA',
        `${o.annotations}:${p.line}:swap_at: expected a boundary inside the clip (source frame in [1, ${v.sourceFrames - 1}] leaving frames on both sides), received source frame ${boundary} (${T} frames sampled)`,
      );
    }
  }
  const partner = transformFramesSync(v.data, { shape: [1, T, H, W, 3], transform: p.transform, swapAt }) as Uint8Array;
  if ((o.format ?? 'mp4') === 'frames') {
    await writeFrameDir(origAbs, v.data, [T, H, W, 3], 'png');
    await writeFrameDir(partAbs, partner, [T, H, W, 3], 'png');
  } else {
    // Keep the clip's duration when frames are subsampled.
    const fps = Number.isFinite(v.fps) ? (v.fps * T) / v.sourceFrames : (o.fps ?? 8);
    await encodeMp4(origAbs, v.data, [T, H, W, 3], { fps, crf: o.crf });
    await encodeMp4(partAbs, partner, [T, H, W, 3], { fps, crf: o.crf });
  }
  fs.writeFileSync(metaFile, JSON.stringify({ swapAt, frames: T, height: H, width: W }) + '\n');
  return { swapAt, built: true };
}

/** Builds the paired benchmark; see the file comment. */
export async function buildDyBench(o: BuildOptions): Promise<BuildResult> {
  if (typeof o?.annotations !== 'string') throw invalidArg('annotations', 'a path', o?.annotations, 'buildDyBench');
  if (typeof o.out !== 'string' || !o.out) throw invalidArg('out', 'an output folder', o.out, 'buildDyBench');
  if (o.format !== undefined && o.format !== 'mp4' && o.format !== 'frames')
    throw invalidArg('format', "'mp4' or 'frames'", o.format, 'buildDyBench');
  const conc = o.concurrency ?? 2;
  if (!Number.isInteger(conc) || conc < 1) throw outOfRange('concurrency', 'an integer >= 1', conc, 'buildDyBench');
  const plans = planBuild(o);
  const reader = o.reader ?? new VideoReader({ concurrency: conc, cacheBytes: 0 });
  const gate = new Semaphore(conc);
  let done = 0,
    built = 0;
  const results = await Promise.all(
    plans.map((p) =>
      gate.run(async () => {
        let r;
        try {
          r = await buildOne(p, o, reader);
        } catch (err) {
          const e = err as Error & { code?: string };
          if (e.message?.startsWith(`${o.annotations}:`)) throw err;
          throw new CrpoError(e.code ?? 'ERR_CRPO_BUILD', `${o.annotations}:${p.line}:clip: ${e.message}`, {
            cause: err,
          });
        }
        if (r.built) built++;
        o.onProgress?.(++done, plans.length, p.id);
        return r;
      }),
    ),
  );
  const records: DyBenchRecord[] = [];
  plans.forEach((p, k) => {
    const outs = outputsOf(p, o);
    const a = p.annotation;
    const common = {
      pair_id: p.id,
      question: a.question,
      options: a.options,
      category: a.category,
      source: a.source ?? 'user',
    };
    const swap = results[k].swapAt !== undefined ? { swap_at: results[k].swapAt } : {};
    records.push({
      id: p.id,
      ...common,
      video: outs.original.split(path.sep).join('/'),
      answer: p.answer,
      transform: 'none',
      meta: { ...(a.meta ?? {}), clip: a.clip },
    });
    records.push({
      id: `${p.id}-${slug(p.transform)}`,
      ...common,
      video: outs.partner.split(path.sep).join('/'),
      answer: p.partnerAnswer,
      transform: p.transform as RecordTransform,
      meta: { ...(a.meta ?? {}), clip: a.clip, ...swap },
    });
  });
  const jsonl = o.jsonl ?? path.join(o.out, 'dybench.jsonl');
  // The output must load strictly (paths relative to the JSONL's folder).
  const rel = records.map((r) => ({
    ...r,
    video: path
      .relative(path.dirname(path.resolve(jsonl)), path.resolve(o.out, r.video as string))
      .split(path.sep)
      .join('/'),
  }));
  parseRecords(rel.map((r) => JSON.stringify(r)).join('\n'), jsonl, { mode: 'strict' });
  await writeJsonlAtomic(jsonl, rel);
  return { jsonl, pairs: plans.length, built, skipped: plans.length - built };
}
