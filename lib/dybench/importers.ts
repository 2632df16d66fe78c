/**
 * Importers into the DyBench JSONL format (docs/data-format.md, "Importing"):
 * - the released DyBench JSON configs (event_sequence, moving_direction, reversible_dynamics;
 *   crpo-method.md section 8). Their field names are not known here, so every field goes through
 *   a mapping: common names are detected, `--field name=path` overrides (dotted paths allowed),
 *   and the mapping used is returned and printed. Pairs come from a pair id field, from a partner
 *   video field in the same entry, or from consecutive entries.
 * - TimeBlind-style instances (section 9): 2 videos x 2 questions, four records per instance
 *   sharing pair_id, each with meta.instance = {video, question}.
 * Every problem is reported as file:entry:field; strict mode throws one error listing them all.
 */
import * as path from 'path';
import { CATEGORY_TRANSFORMS, DYNAMIC_CATEGORIES } from '../data/categories';
import { parseJsonl, readTextFile } from '../data/jsonl';
import { DataError, checkRecord, type LoadMode, type RecordIssue } from '../data/loader';
import { FRAME_TRANSFORMS } from '../counterfactual/transforms';
import { CATEGORIES, type Category, type DyBenchRecord, type RecordTransform } from '../data/schema';
import { invalidArg } from '../errors';
import { deriveAnswer, resolveAnswer } from './answers';

export const DYBENCH_FIELDS = [
  'id',
  'pair_id',
  'video',
  'partner_video',
  'question',
  'options',
  'answer',
  'partner_answer',
  'category',
  'transform',
  'partner_transform',
  'swap_at',
  'source',
] as const;
export type DyBenchField = (typeof DYBENCH_FIELDS)[number];

/** Names tried, in order, for each field when no --field mapping is given. */
export const DYBENCH_FIELD_CANDIDATES: Record<DyBenchField, string[]> = {
  id: ['id', 'qid', 'question_id', 'uid', 'sample_id', 'idx', 'index'],
  pair_id: ['pair_id', 'pair', 'pairid', 'group_id', 'group', 'pair_idx'],
  video: [
    'video',
    'video_path',
    'video_file',
    'video_name',
    'videopath',
    'path',
    'clip',
    'file',
    'video_id',
    'original_video',
    'video_orig',
  ],
  partner_video: [
    'partner_video',
    'counterfactual_video',
    'cf_video',
    'video_cf',
    'reversed_video',
    'video_reversed',
    'video_reverse',
    'flipped_video',
    'video_flip',
    'swapped_video',
    'video_swap',
    'video_aug',
    'aug_video',
  ],
  question: ['question', 'query', 'q', 'prompt', 'text'],
  options: ['options', 'choices', 'candidates', 'candidate', 'answers', 'option_list'],
  answer: ['answer', 'ans', 'gt', 'ground_truth', 'label', 'correct_answer', 'solution', 'answer_idx', 'gt_answer'],
  partner_answer: [
    'partner_answer',
    'counterfactual_answer',
    'cf_answer',
    'answer_cf',
    'reversed_answer',
    'answer_reversed',
    'answer_reverse',
    'flipped_answer',
    'answer_flip',
    'swapped_answer',
    'answer_swap',
    'answer_aug',
  ],
  category: ['category', 'task', 'task_type', 'type', 'config'],
  transform: ['transform', 'augmentation', 'aug', 'counterfactual', 'cf_type'],
  partner_transform: ['partner_transform', 'cf_transform'],
  swap_at: ['swap_at', 'boundary', 'split_frame'],
  source: ['source', 'dataset', 'origin', 'data_source'],
};

/** Reads a dotted path ('meta.q', 'videos.0') from an entry. */
export function getPath(obj: unknown, p: string): unknown {
  let cur: unknown = obj;
  for (const k of p.split('.')) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string, unknown>)[k];
  }
  return cur;
}

/** Parses --field name=path flags into a map; unknown names list the known ones. */
export function parseFieldFlags(
  flags: readonly string[] | undefined,
  known: readonly string[],
): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of flags ?? []) {
    const m = /^([a-z_]+)=(.+)$/.exec(f.trim());
    if (!m) throw invalidArg('--field', "'name=path' (e.g. question=query)", f, 'import');
    if (!known.includes(m[1])) throw invalidArg('--field', `a field name among ${known.join(', ')}`, m[1], 'import');
    out[m[1]] = m[2];
  }
  return out;
}

/** Entries of a .json file (an array, or an object holding one under `listKey` or its only array) or a .jsonl file. */
export function readEntries(file: string, listKey?: string): { line: number; loc: string; value: unknown }[] {
  const text = readTextFile(file, 'input file');
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    if (text.trimStart().startsWith('[') || listKey)
      throw new DataError([{ file, line: 1, field: '', message: `invalid JSON (${(err as Error).message})` }], file);
    return fromJsonl(text, file); // not one JSON document: JSON Lines
  }
  let list: unknown = data;
  if (!Array.isArray(data)) {
    if (typeof data !== 'object' || data === null)
      throw new DataError(
        [{ file, line: 1, field: '', message: 'expected an array of entries, an object holding one, or JSON Lines' }],
        file,
      );
    const obj = data as Record<string, unknown>;
    const arrays = Object.entries(obj).filter(
      ([, v]) => Array.isArray(v) && (v as unknown[]).every((e) => typeof e === 'object' && e !== null),
    );
    if (listKey) list = getPath(data, listKey);
    else if (arrays.length === 1 && Object.keys(obj).length <= 3) list = arrays[0][1];
    else if (Object.values(obj).every((v) => typeof v === 'object' && v !== null && !Array.isArray(v))) {
      // An object keyed by id: {"id1": {...}, "id2": {...}}.
      list = Object.entries(obj).map(([k, v]) => ({ id: k, ...(v as object) }));
    } else list = [data]; // a one-line JSONL file
    if (!Array.isArray(list))
      throw new DataError(
        [{ file, line: 1, field: listKey ?? '', message: `expected an array of entries at '${listKey}'` }],
        file,
      );
  }
  return (list as unknown[]).map((value, i) => ({ line: i + 1, loc: `[${i}]`, value }));
}

function fromJsonl(text: string, file: string): { line: number; loc: string; value: unknown }[] {
  const { values, errors } = parseJsonl(text, file);
  if (errors.length)
    throw new DataError(
      errors.map((e) => ({ file, line: e.line, field: '', message: e.message.slice(`${file}:${e.line}: `.length) })),
      file,
    );
  return values.map((v) => ({ line: v.line, loc: String(v.line), value: v.value }));
}

/** Options given as an array, an object keyed by letter/number, or text lines "A. x" / "(A) x". */
export function normaliseOptions(v: unknown): string[] | undefined {
  if (Array.isArray(v))
    return v.map((o) => (typeof o === 'string' ? o.replace(/^\s*\(?[A-Z]\)?[.:)]\s+/, '').trim() : String(o)));
  if (v && typeof v === 'object') {
    const entries = Object.entries(v as Record<string, unknown>).sort(([a], [b]) =>
      a.localeCompare(b, 'en', { numeric: true }),
    );
    return entries.map(([, o]) => String(o).trim());
  }
  if (typeof v === 'string') {
    const lines = v
      .split(/\n|(?=\s\(?[A-Z][.)]\s)/)
      .map((l) => l.trim())
      .filter(Boolean);
    const opts = lines.map((l) => /^\(?[A-Z]\)?[.:)]\s*(.+)$/.exec(l)?.[1]).filter((x): x is string => !!x);
    return opts.length >= 2 ? opts : undefined;
  }
  return undefined;
}

/** Splits "Question?\nA. x\nB. y" into the question and its options, when options are inline. */
function splitInlineOptions(q: string): { question: string; options?: string[] } {
  const lines = q.split('\n');
  const first = lines.findIndex((l) => /^\s*\(?A\)?[.:)]\s+/.test(l));
  if (first <= 0) return { question: q };
  const options = normaliseOptions(lines.slice(first).join('\n'));
  return options ? { question: lines.slice(0, first).join('\n').trim(), options } : { question: q };
}

const DEFAULT_PARTNER: Partial<Record<Category, RecordTransform>> = {
  reversible_dynamics: 'reverse',
  event_sequence: 'swap',
  static: 'reverse',
};

export interface ImportDyBenchOptions {
  input: string;
  /** Category of every entry (default: a category field, else the config name in the file name). */
  category?: Category;
  /** Field mapping: DyBench field -> dotted path in an entry. */
  fields?: Partial<Record<DyBenchField, string>>;
  /** Where the entry list is in a JSON object. */
  listKey?: string;
  /** Prefix for relative video paths (default: the input file's folder). */
  videoRoot?: string;
  /** Numeric answers count from 0 (default) or 1. */
  answerBase?: 0 | 1;
  /** How to find pairs (default 'auto': partner_video, else pair_id, else error). */
  pairBy?: 'auto' | 'field' | 'partner' | 'consecutive';
  /** Transform of the partner member when the data does not say (default per category). */
  partnerTransform?: RecordTransform;
  /** `source` of every record (default: a source field, else 'dybench'). */
  source?: string;
  mode?: LoadMode;
}

export interface ImportResult {
  records: DyBenchRecord[];
  /** Field -> path actually used (undefined: not found). */
  mapping: Record<string, string | undefined>;
  issues: RecordIssue[];
  skipped: number;
}

function resolveMapping(
  sample: unknown[],
  fields: Partial<Record<string, string>>,
  candidates: Record<string, string[]>,
): Record<string, string | undefined> {
  const mapping: Record<string, string | undefined> = {};
  const used = new Set<string>();
  for (const f of Object.keys(candidates)) {
    if (fields[f]) {
      mapping[f] = fields[f];
      used.add(fields[f]!);
    }
  }
  for (const f of Object.keys(candidates)) {
    if (fields[f]) continue;
    mapping[f] = candidates[f].find((c) => !used.has(c) && sample.some((e) => getPath(e, c) !== undefined));
    if (mapping[f]) used.add(mapping[f]!);
  }
  return Object.fromEntries(Object.keys(candidates).map((f) => [f, mapping[f]]));
}

function categoryFromName(file: string): Category | undefined {
  const base = path.basename(file).toLowerCase();
  return (['event_sequence', 'moving_direction', 'reversible_dynamics'] as Category[]).find(
    (c) => base.includes(c) || base.includes(c.replace('_', '-')),
  );
}

function finish(
  records: { rec: DyBenchRecord; line: number }[],
  issues: RecordIssue[],
  file: string,
  total: number,
  mapping: Record<string, string | undefined>,
  mode: LoadMode,
  groupSize: (pid: string) => number,
): ImportResult {
  const bad = new Set(issues.map((i) => i.line));
  const ids = new Map<string, number>();
  for (const r of records) {
    const first = ids.get(r.rec.id);
    if (first !== undefined && first !== r.line) {
      issues.push({
        file,
        line: r.line,
        field: 'id',
        message: `expected a unique id, '${r.rec.id}' is already used by entry ${first}`,
      });
      bad.add(r.line);
    } else ids.set(r.rec.id, r.line);
  }
  const groups = new Map<string, { rec: DyBenchRecord; line: number }[]>();
  for (const r of records) if (!bad.has(r.line)) groups.set(r.rec.pair_id, [...(groups.get(r.rec.pair_id) ?? []), r]);
  for (const [pid, members] of groups) {
    const want = groupSize(pid);
    if (members.length !== want) {
      for (const m of members)
        issues.push({
          file,
          line: m.line,
          field: 'pair_id',
          message: `expected ${want} records in pair '${pid}', found ${members.length}`,
        });
      members.forEach((m) => bad.add(m.line));
    }
  }
  issues.sort((a, b) => a.line - b.line);
  if (mode === 'strict' && issues.length) throw new DataError(issues, file);
  const kept = records.filter((r) => !bad.has(r.line)).map((r) => r.rec);
  const keptEntries = new Set(records.filter((r) => !bad.has(r.line)).map((r) => r.line)).size;
  return { records: kept, mapping, issues, skipped: total - keptEntries };
}

/** Imports a released DyBench config (JSON or JSONL) with a field mapping. */
export function importDyBench(o: ImportDyBenchOptions): ImportResult {
  if (typeof o?.input !== 'string') throw invalidArg('input', 'a file path', o?.input, 'importDyBench');
  const file = o.input;
  const entries = readEntries(file, o.listKey);
  const mapping = resolveMapping(
    entries.slice(0, 50).map((e) => e.value),
    o.fields ?? {},
    DYBENCH_FIELD_CANDIDATES,
  );
  const pairBy = o.pairBy ?? 'auto';
  const mode = o.mode ?? 'strict';
  const root = o.videoRoot ?? path.dirname(path.resolve(file));
  const issues: RecordIssue[] = [];
  const out: { rec: DyBenchRecord; line: number }[] = [];
  const usePartner = pairBy === 'partner' || (pairBy === 'auto' && !!mapping.partner_video);
  const useField = pairBy === 'field' || (pairBy === 'auto' && !usePartner && !!mapping.pair_id);
  if (!usePartner && !useField && pairBy !== 'consecutive') {
    throw new DataError(
      [
        {
          file,
          line: 1,
          field: 'pair_id',
          message: `cannot tell the pairs: no pair id or partner video field found (tried ${DYBENCH_FIELD_CANDIDATES.pair_id.join(', ')} and ${DYBENCH_FIELD_CANDIDATES.partner_video.join(', ')}); map one with --field pair_id=<path> or --field partner_video=<path>, or pass --pair-by consecutive`,
        },
      ],
      file,
    );
  }
  if (usePartner && !mapping.partner_video)
    throw new DataError(
      [
        {
          file,
          line: 1,
          field: 'partner_video',
          message: 'expected a partner video field; map it with --field partner_video=<path>',
        },
      ],
      file,
    );
  if (useField && !mapping.pair_id)
    throw new DataError(
      [{ file, line: 1, field: 'pair_id', message: 'expected a pair id field; map it with --field pair_id=<path>' }],
      file,
    );
  const seenInPair = new Map<string, number>();
  entries.forEach(({ line, value }, k) => {
    const add = (field: string, message: string): void => void issues.push({ file, line, field, message });
    const get = (f: DyBenchField): unknown => (mapping[f] ? getPath(value, mapping[f]!) : undefined);
    if (typeof value !== 'object' || value === null) return add('', 'expected a JSON object');
    const rawQuestion = get('question');
    if (typeof rawQuestion !== 'string' || !rawQuestion.trim())
      return add(
        mapping.question ?? 'question',
        `expected the question text${mapping.question ? '' : ` (no field found; tried ${DYBENCH_FIELD_CANDIDATES.question.join(', ')}; map it with --field question=<path>)`}`,
      );
    let { question, options } = splitInlineOptions(rawQuestion);
    const mapped = normaliseOptions(get('options'));
    if (mapped) options = mapped;
    if (!options)
      return add(
        mapping.options ?? 'options',
        `expected options as an array, an object keyed by letter, or "A. ..." lines${mapping.options ? '' : ` (no field found; tried ${DYBENCH_FIELD_CANDIDATES.options.join(', ')})`}`,
      );
    const catRaw = o.category ?? (get('category') as string | undefined) ?? categoryFromName(file);
    const category =
      typeof catRaw === 'string'
        ? (CATEGORIES.find((c) => c === catRaw.toLowerCase().replace(/[ -]/g, '_')) as Category | undefined)
        : undefined;
    if (!category)
      return add(
        mapping.category ?? 'category',
        `expected a category (${CATEGORIES.join(', ')}), received ${catRaw === undefined ? 'none (pass --category or name the file after the config)' : `'${String(catRaw)}'`}`,
      );
    const ans = resolveAnswer(get('answer'), options, o.answerBase ?? 0);
    if ('error' in ans) return add(mapping.answer ?? 'answer', ans.error);
    const videoRaw = get('video');
    if (typeof videoRaw !== 'string' || !videoRaw)
      return add(
        mapping.video ?? 'video',
        `expected a video path${mapping.video ? '' : ` (no field found; tried ${DYBENCH_FIELD_CANDIDATES.video.join(', ')})`}`,
      );
    const video = (p: string): string => (path.isAbsolute(p) ? p : path.join(root, p));
    const idRaw = get('id');
    const id =
      idRaw !== undefined && idRaw !== null && String(idRaw)
        ? String(idRaw)
        : `${category}-${String(k).padStart(5, '0')}`;
    const source = o.source ?? (typeof get('source') === 'string' ? (get('source') as string) : 'dybench');
    const meta = { import: { file: path.basename(file), entry: line } };
    const defaultPartner = (): RecordTransform | undefined => {
      if (o.partnerTransform) return o.partnerTransform;
      if (DEFAULT_PARTNER[category]) return DEFAULT_PARTNER[category];
      if (category === 'moving_direction') return /\b(left|right)\b/i.test(options![ans.index]) ? 'hflip' : 'reverse';
      return undefined;
    };
    const asTransform = (v: unknown, field: string): RecordTransform | undefined | null => {
      if (v === undefined || v === null || v === '') return undefined;
      const t = String(v)
        .toLowerCase()
        .replace(/^(original|orig|forward|source)$/, 'none')
        .replace(/^(reversed|backward|rev)$/, 'reverse')
        .replace(/^(flip|flipped|horizontal_flip|mirror)$/, 'hflip')
        .replace(/^(swapped)$/, 'swap');
      if ((FRAME_TRANSFORMS as readonly string[]).includes(t)) return t as RecordTransform;
      add(field, `expected a transform (${FRAME_TRANSFORMS.join(', ')}), received '${String(v)}'`);
      return null;
    };
    const base = { question, options, category, source };
    const check = (rec: DyBenchRecord): boolean => {
      const { problems } = checkRecord(rec);
      for (const p of problems) add(p.field, p.message);
      return problems.length === 0;
    };
    if (usePartner) {
      const pv = get('partner_video');
      if (typeof pv !== 'string' || !pv) return add(mapping.partner_video!, 'expected the partner video path');
      const t =
        asTransform(get('partner_transform'), mapping.partner_transform ?? 'partner_transform') ?? defaultPartner();
      if (t === null) return;
      if (!t || t === 'none')
        return add('partner_transform', 'expected the partner transform; pass --partner-transform');
      let pa: number | undefined;
      const paRaw = get('partner_answer');
      if (paRaw !== undefined) {
        const r = resolveAnswer(paRaw, options, o.answerBase ?? 0);
        if ('error' in r) return add(mapping.partner_answer!, r.error);
        pa = r.index;
      } else pa = deriveAnswer(category, options, ans.index, t);
      if (pa === undefined)
        return add(
          'partner_answer',
          `cannot derive the partner's answer under ${t}; map it with --field partner_answer=<path>`,
        );
      if (DYNAMIC_CATEGORIES.includes(category) && pa === ans.index)
        return add(
          'partner_answer',
          `the partner keeps the answer '${options[pa]}' under ${t}; a ${category} pair needs a changed answer`,
        );
      const swapAt = get('swap_at');
      const a: DyBenchRecord = {
        id,
        pair_id: id,
        video: video(videoRaw),
        answer: ans.index,
        transform: 'none',
        ...base,
        meta,
      };
      const b: DyBenchRecord = {
        id: `${id}-${t.replace('+', '_')}`,
        pair_id: id,
        video: video(pv),
        answer: pa,
        transform: t,
        ...base,
        meta: { ...meta, ...(typeof swapAt === 'number' ? { swap_at: swapAt } : {}) },
      };
      if (check(a) && check(b)) out.push({ rec: a, line }, { rec: b, line });
      return;
    }
    const pairId = useField
      ? String(get('pair_id') ?? '')
      : `${category}-pair-${String(Math.floor(k / 2)).padStart(5, '0')}`;
    if (!pairId) return add(mapping.pair_id!, 'expected a pair id');
    const nth = seenInPair.get(pairId) ?? 0;
    seenInPair.set(pairId, nth + 1);
    const tGiven = asTransform(get('transform'), mapping.transform ?? 'transform');
    if (tGiven === null) return;
    // Without a transform field, the first member of a pair is taken as the original.
    const transform = tGiven ?? (nth === 0 ? 'none' : (defaultPartner() ?? 'none'));
    if (transform !== 'none' && !CATEGORY_TRANSFORMS[category].includes(transform))
      return add(
        'transform',
        `expected one of ${CATEGORY_TRANSFORMS[category].join(', ')} for ${category}, received '${transform}'`,
      );
    const rec: DyBenchRecord = {
      id: idRaw !== undefined ? id : `${pairId}-${nth}`,
      pair_id: pairId,
      video: video(videoRaw),
      answer: ans.index,
      transform,
      ...base,
      meta,
    };
    if (check(rec)) out.push({ rec, line });
  });
  return finish(out, issues, file, entries.length, mapping, mode, () => 2);
}

export const TIMEBLIND_FIELDS = ['id', 'videos', 'questions', 'options', 'answers', 'category', 'source'] as const;
export type TimeBlindField = (typeof TIMEBLIND_FIELDS)[number];

export const TIMEBLIND_FIELD_CANDIDATES: Record<TimeBlindField, string[]> = {
  id: ['id', 'instance_id', 'uid', 'idx'],
  videos: ['videos', 'video_paths', 'video_pair', 'video'],
  questions: ['questions', 'question_pair', 'question'],
  options: ['options', 'choices', 'candidates'],
  answers: ['answers', 'labels', 'answer', 'gt'],
  category: ['category', 'task', 'type'],
  source: ['source', 'dataset'],
};

export interface ImportTimeBlindOptions {
  input: string;
  /** Field -> path; `videos`, `questions` and `answers` may name several paths separated by commas. */
  fields?: Partial<Record<TimeBlindField, string>>;
  listKey?: string;
  videoRoot?: string;
  answerBase?: 0 | 1;
  /** Category of every record (default 'other'). */
  category?: Category;
  source?: string;
  mode?: LoadMode;
}

/**
 * Imports TimeBlind-style instances: each entry has two videos, two questions (strings or
 * objects with their own `options`/`question`), options (shared, or one list per question;
 * default yes/no), and answers as a 2x2 array [video][question], a flat array of four
 * (v0q0, v0q1, v1q0, v1q1), or four comma-separated fields.
 */
export function importTimeBlind(o: ImportTimeBlindOptions): ImportResult {
  if (typeof o?.input !== 'string') throw invalidArg('input', 'a file path', o?.input, 'importTimeBlind');
  const file = o.input;
  const entries = readEntries(file, o.listKey);
  const mapping = resolveMapping(
    entries.slice(0, 50).map((e) => e.value),
    o.fields ?? {},
    TIMEBLIND_FIELD_CANDIDATES,
  );
  const root = o.videoRoot ?? path.dirname(path.resolve(file));
  const issues: RecordIssue[] = [];
  const out: { rec: DyBenchRecord; line: number }[] = [];
  const many = (value: unknown, f: TimeBlindField): unknown[] | undefined => {
    const m = mapping[f];
    if (!m) return undefined;
    if (m.includes(',')) return m.split(',').map((p) => getPath(value, p.trim()));
    const v = getPath(value, m);
    return Array.isArray(v) ? v : undefined;
  };
  entries.forEach(({ line, value }, k) => {
    const add = (field: string, message: string): void => void issues.push({ file, line, field, message });
    if (typeof value !== 'object' || value === null) return add('', 'expected a JSON object');
    const videos = many(value, 'videos');
    if (!videos || videos.length !== 2 || videos.some((v) => typeof v !== 'string' || !v))
      return add(
        mapping.videos ?? 'videos',
        `expected two video paths (an array, or --field videos=<path1>,<path2>), received ${videos ? `${videos.length} value(s)` : 'none'}`,
      );
    const qs = many(value, 'questions');
    if (!qs || qs.length !== 2)
      return add(
        mapping.questions ?? 'questions',
        `expected two questions (an array, or --field questions=<path1>,<path2>), received ${qs ? qs.length : 'none'}`,
      );
    const optsRaw = mapping.options ? getPath(value, mapping.options) : undefined;
    const questions: { text: string; options: string[] }[] = [];
    for (let j = 0; j < 2; j++) {
      const q = qs[j];
      const text = typeof q === 'string' ? q : (getPath(q, 'question') ?? getPath(q, 'text'));
      if (typeof text !== 'string' || !text.trim()) return add(`questions.${j}`, 'expected the question text');
      const split = splitInlineOptions(text);
      const own =
        typeof q === 'object' && q !== null
          ? normaliseOptions(getPath(q, 'options') ?? getPath(q, 'choices'))
          : undefined;
      const shared =
        Array.isArray(optsRaw) && optsRaw.length === 2 && optsRaw.every(Array.isArray)
          ? normaliseOptions(optsRaw[j])
          : normaliseOptions(optsRaw);
      questions.push({ text: split.question, options: own ?? shared ?? split.options ?? ['yes', 'no'] });
    }
    let answers = many(value, 'answers');
    if (answers && answers.length === 2 && answers.every(Array.isArray)) answers = (answers as unknown[][]).flat();
    if (!answers || answers.length !== 4)
      return add(
        mapping.answers ?? 'answers',
        `expected four answers ([[v0q0, v0q1], [v1q0, v1q1]], a flat array of four, or four comma-separated fields), received ${answers ? answers.length : 'none'}`,
      );
    const idRaw = mapping.id ? getPath(value, mapping.id) : undefined;
    const inst =
      idRaw !== undefined && idRaw !== null && String(idRaw)
        ? String(idRaw)
        : `timeblind-${String(k).padStart(5, '0')}`;
    const category = o.category ?? 'other';
    const source =
      o.source ??
      (mapping.source && typeof getPath(value, mapping.source) === 'string'
        ? (getPath(value, mapping.source) as string)
        : 'timeblind');
    for (let v = 0; v < 2; v++) {
      for (let j = 0; j < 2; j++) {
        const r = resolveAnswer(answers[v * 2 + j], questions[j].options, o.answerBase ?? 0);
        if ('error' in r) {
          add(`answers.${v * 2 + j}`, r.error);
          continue;
        }
        const p = videos[v] as string;
        const rec: DyBenchRecord = {
          id: `${inst}-v${v}-q${j}`,
          pair_id: inst,
          video: path.isAbsolute(p) ? p : path.join(root, p),
          question: questions[j].text,
          options: questions[j].options,
          answer: r.index,
          category,
          transform: 'none',
          source,
          meta: { instance: { video: v, question: j }, import: { file: path.basename(file), entry: line } },
        };
        const { problems } = checkRecord(rec);
        for (const pr of problems) add(pr.field, pr.message);
        if (!problems.length) out.push({ rec, line });
      }
    }
  });
  return finish(out, issues, file, entries.length, mapping, o.mode ?? 'strict', () => 4);
}
