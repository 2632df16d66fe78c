/**
 * Loader for DyBench JSONL files (docs/data-format.md). Every problem is reported as
 * "file:line:field: what was expected": strict mode throws one error that lists every bad line;
 * lenient mode skips bad records (and the partners they leave alone) and reports how many.
 * Checks: JSON syntax, the record schema, inline synthetic scenes, the option count of the
 * category, answer among the options, duplicate ids, and pairs (a pair needs two members; four
 * for a TimeBlind-style instance), optionally that referenced video files exist.
 */
import * as fs from 'fs';
import * as path from 'path';
import { CrpoError, describe, invalidArg } from '../errors';
import { Scene } from './scene';
import { CATEGORY_OPTION_COUNTS } from './categories';
import { decodeUtf8, parseJsonl, readTextFile } from './jsonl';
import { DyBenchRecord, SyntheticVideoSpec, TimeBlindInstance, type Category } from './schema';

export type LoadMode = 'strict' | 'lenient';

/** Bounds on an inline synthetic clip: it is rendered in memory, whole (frames x height x width x 3 bytes). */
export const MAX_INLINE_FRAMES = 4096;
export const MAX_INLINE_SIDE = 4096;
export const MAX_INLINE_CLIP_BYTES = 256 * 2 ** 20;

export interface LoadOptions {
  /** 'strict' (default) throws on any bad record; 'lenient' skips them and reports the count. */
  mode?: LoadMode;
  /** Override the fixed option counts per category (default CATEGORY_OPTION_COUNTS). */
  optionCounts?: Partial<Record<Category, number | undefined>>;
  /** Check that every referenced video file or frames directory exists (default false). */
  checkFiles?: boolean;
  /** Rewrite relative video paths to absolute paths against `videoRoot` (default true). */
  resolvePaths?: boolean;
  /** Folder that relative video paths start from (default: the JSONL file's folder). */
  videoRoot?: string;
  /** Check pairing (default true). Turn off to load a hand-picked subset of a benchmark. */
  requirePairs?: boolean;
  /** Accept a file with no records (default false: an empty or blank file is an error naming it). */
  allowEmpty?: boolean;
}

export interface RecordIssue {
  file: string;
  /** 1-based line number. */
  line: number;
  /** Dotted field path ('' for the whole line). */
  field: string;
  message: string;
}

export interface LoadResult {
  file: string;
  records: DyBenchRecord[];
  /** Line number of each record in `records`. */
  lines: number[];
  /** Every problem found (empty in strict mode, which throws instead). */
  issues: RecordIssue[];
  /** Records skipped (lenient mode): bad ones and partners left alone by them. */
  skipped: number;
}

export function formatIssue(i: RecordIssue): string {
  return `${i.file}:${i.line}${i.field ? `:${i.field}` : ''}: ${i.message}`;
}

/** Error thrown by strict loading; `issues` holds every problem. */
export class DataError extends CrpoError {
  constructor(readonly issues: RecordIssue[], readonly file: string) {
    const lines = new Set(issues.map((i) => i.line)).size;
    super('ERR_CRPO_BAD_DATA', `${file}: ${lines} bad line${lines === 1 ? '' : 's'}:\n${issues.map((i) => '  ' + formatIssue(i)).join('\n')}`);
    this.name = 'DataError';
  }
}

type ZodIssueLike = { path: PropertyKey[]; message: string; code?: string; keys?: string[] };

function fieldOf(p: readonly PropertyKey[]): string {
  return p.map(String).join('.');
}

function zodIssues(issues: readonly ZodIssueLike[], prefix: string[] = []): { field: string; message: string }[] {
  return issues.map((i) => {
    const p = [...prefix, ...i.path.map(String)];
    if (i.code === 'unrecognized_keys' && i.keys) return { field: fieldOf([...p, i.keys.join(',')]), message: `unknown field${i.keys.length > 1 ? 's' : ''} (${i.keys.join(', ')}); expected only the fields of docs/data-format.md` };
    return { field: fieldOf(p), message: i.message };
  });
}

/** Checks one parsed JSON value; returns the record or the problems (field + message). */
export function checkRecord(value: unknown, optionCounts: Partial<Record<Category, number | undefined>> = CATEGORY_OPTION_COUNTS): { record?: DyBenchRecord; problems: { field: string; message: string }[] } {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return { problems: [{ field: '', message: `expected a JSON object (one record per line), received ${describe(value)}` }] };
  const v = value as Record<string, unknown>;
  const problems: { field: string; message: string }[] = [];
  const r = DyBenchRecord.safeParse(value);
  if (!r.success) {
    for (const i of zodIssues(r.error.issues as ZodIssueLike[])) {
      if (i.field === 'video') continue; // union failure: explained precisely below
      if (i.field === 'answer' && i.message === 'answer must index one of the options') continue; // reported below with the numbers
      problems.push(i);
    }
  }
  // `video`: a path, or an inline synthetic spec whose scene also parses.
  const video = v.video;
  if (typeof video === 'string') {
    if (video.length === 0) problems.push({ field: 'video', message: 'expected a non-empty file or directory path' });
  } else if (typeof video === 'object' && video !== null && !Array.isArray(video)) {
    const s = SyntheticVideoSpec.safeParse(video);
    if (!s.success) problems.push(...zodIssues(s.error.issues as ZodIssueLike[], ['video']));
    else {
      const sc = Scene.safeParse(s.data.scene);
      if (!sc.success) problems.push(...zodIssues(sc.error.issues as ZodIssueLike[], ['video', 'scene']));
      const bytes = s.data.frames * s.data.height * s.data.width * 3;
      if (s.data.frames > MAX_INLINE_FRAMES) problems.push({ field: 'video.frames', message: `expected at most ` +
        `${MAX_INLINE_FRAMES} frames for an inline clip, received ${s.data.frames}` });
      for (const k of ['height', 'width'] as const) {
        if (s.data[k] > MAX_INLINE_SIDE) problems.push({ field: `video.${k}`, message: `expected at most ` +
          `${MAX_INLINE_SIDE} pixels, received ${s.data[k]}` });
      }
      if (bytes > MAX_INLINE_CLIP_BYTES) {
        problems.push({ field: 'video', message: `the inline clip would take ${s.data.frames} x ${s.data.height} x ` +
          `${s.data.width} x 3 = ${(bytes / 2 ** 20).toFixed(0)} MiB to render, more than the limit of ` +
            `${MAX_INLINE_CLIP_BYTES / 2 ** 20} MiB; lower frames, height or width` });
      }
      if (s.data.transform === 'swap' && s.data.swap_at !== undefined && s.data.swap_at >= s.data.frames) {
        problems.push({ field: 'video.swap_at', message: `expected an integer in [1, ${s.data.frames - 1}], received ${s.data.swap_at}` });
      }
    }
  } else {
    problems.push({ field: 'video', message: `expected a file path, a frames directory or an inline synthetic spec, received ${describe(video)}` });
  }
  // Category rules (only meaningful once the basic types are right).
  if (Array.isArray(v.options) && typeof v.category === 'string' && v.category in optionCounts) {
    const want = optionCounts[v.category as Category];
    if (want !== undefined && v.options.length !== want) {
      problems.push({ field: 'options', message: `expected ${want} options for category ${v.category}, received ${v.options.length}` });
    }
  }
  if (Array.isArray(v.options) && Number.isInteger(v.answer) && (v.answer as number) >= v.options.length) {
    problems.push({ field: 'answer', message: `expected an index of one of the ${v.options.length} options (0-${v.options.length - 1}), received ${String(v.answer)}` });
  }
  const inst = (v.meta as { instance?: unknown } | undefined)?.instance;
  if (inst !== undefined) {
    const t = TimeBlindInstance.safeParse(inst);
    if (!t.success) problems.push({ field: 'meta.instance', message: `expected {"video": 0|1, "question": 0|1} (a TimeBlind instance cell), received ${JSON.stringify(inst).slice(0, 60)}` });
  }
  if (Array.isArray(v.options)) {
    const seen = new Map<string, number>();
    v.options.forEach((o, k) => {
      if (typeof o !== 'string') return;
      const key = o.trim().toLowerCase();
      if (seen.has(key)) problems.push({ field: `options.${k}`, message: `expected distinct options, '${o}' repeats option ${seen.get(key)}` });
      else seen.set(key, k);
    });
  }
  if (problems.length > 0) return { problems };
  return { record: r.data as DyBenchRecord, problems };
}

function videoExists(p: string): boolean {
  try {
    fs.accessSync(p, fs.constants.R_OK);
    return true;
  } catch {
    return false;
  }
}

/** Parses JSONL text already read from `file` (see loadRecords). */
export function parseRecords(text: string, file: string, options: LoadOptions = {}): LoadResult {
  const mode = options.mode ?? 'strict';
  if (mode !== 'strict' && mode !== 'lenient') throw invalidArg('mode', "'strict' or 'lenient'", mode, 'loadRecords');
  const counts = { ...CATEGORY_OPTION_COUNTS, ...(options.optionCounts ?? {}) };
  const baseDir = options.videoRoot !== undefined ? path.resolve(options.videoRoot) : path.dirname(path.resolve(file));
  const issues: RecordIssue[] = [];
  const bad = new Set<number>();
  const add = (line: number, field: string, message: string): void => {
    issues.push({ file, line, field, message });
    bad.add(line);
  };
  const parsed = parseJsonl(text, file);
  if (!options.allowEmpty && parsed.values.length + parsed.errors.length === 0) {
    throw new CrpoError('ERR_CRPO_EMPTY', `${file}: no records (the file is ` +
      `${text.length === 0 ? 'empty' : 'blank'}); expected one DyBench record per line (docs/data-format.md)`);
  }
  for (const e of parsed.errors) add(e.line, '', e.message.slice(`${file}:${e.line}: `.length));
  const good: { line: number; record: DyBenchRecord }[] = [];
  const firstLineOfId = new Map<string, number>();
  for (const { line, value } of parsed.values) {
    const { record, problems } = checkRecord(value, counts);
    for (const p of problems) add(line, p.field, p.message);
    const id = (value as { id?: unknown } | null)?.id;
    if (typeof id === 'string' && id.length > 0) {
      const first = firstLineOfId.get(id);
      if (first !== undefined) add(line, 'id', `expected a unique id, '${id}' is already used on line ${first}`);
      else firstLineOfId.set(id, line);
    }
    if (!record) continue;
    if ((options.resolvePaths ?? true) && typeof record.video === 'string' && !path.isAbsolute(record.video)) record.video = path.resolve(baseDir, record.video);
    if (options.checkFiles && typeof record.video === 'string' && !videoExists(record.video)) add(line, 'video', `expected an existing video file or frames directory, not found: ${record.video}`);
    good.push({ line, record });
  }
  // Pairing, over the records that are still good.
  let kept = good.filter((g) => !bad.has(g.line));
  if (options.requirePairs ?? true) {
    const groups = new Map<string, { line: number; record: DyBenchRecord }[]>();
    for (const g of kept) {
      const list = groups.get(g.record.pair_id) ?? [];
      list.push(g);
      groups.set(g.record.pair_id, list);
    }
    // In strict mode a pair broken by a bad partner is already reported on the partner's line.
    const allPairLines = new Map<string, number[]>();
    for (const { line, value } of parsed.values) {
      const pid = (value as { pair_id?: unknown } | null)?.pair_id;
      if (typeof pid === 'string') allPairLines.set(pid, [...(allPairLines.get(pid) ?? []), line]);
    }
    for (const [pid, members] of groups) {
      const timeblind = members.every((m) => typeof (m.record.meta as { instance?: unknown } | undefined)?.instance === 'object');
      const allLines = allPairLines.get(pid) ?? [];
      if (members.length === 1) {
        const m = members[0];
        const others = allLines.filter((l) => l !== m.line);
        add(m.line, 'pair_id', others.length > 0
          ? `pair '${pid}' loses its partner on line ${others.join(', ')} (bad record); a pair needs both members`
          : `expected a partner record with pair_id '${pid}', found none (a pair with one member)`);
      } else if (timeblind ? members.length !== 4 : members.length !== 2) {
        const want = timeblind ? 4 : 2;
        for (const m of members) add(m.line, 'pair_id', `expected ${want} records with pair_id '${pid}'${timeblind ? ' (TimeBlind instance)' : ''}, found ${members.length} (lines ${members.map((x) => x.line).join(', ')})`);
      } else if (timeblind && new Set(members.map((m) => { const i = (m.record.meta as { instance: TimeBlindInstance }).instance; return `${i.video},${i.question}`; })).size !== 4) {
        for (const m of members) add(m.line, 'meta.instance', `expected the four records of instance '${pid}' to cover video 0/1 x question 0/1 once each (lines ${members.map((x) => x.line).join(', ')})`);
      } else if (!timeblind && members[0].record.transform === members[1].record.transform && JSON.stringify(members[0].record.video) === JSON.stringify(members[1].record.video)) {
        for (const m of members) add(m.line, 'video', `expected the two members of pair '${pid}' to have different videos, both are ${JSON.stringify(m.record.video).slice(0, 80)}`);
      }
    }
    kept = kept.filter((g) => !bad.has(g.line));
  }
  issues.sort((a, b) => a.line - b.line);
  if (mode === 'strict' && issues.length > 0) throw new DataError(issues, file);
  const total = parsed.values.length + parsed.errors.length;
  return { file, records: kept.map((g) => g.record), lines: kept.map((g) => g.line), issues, skipped: total - kept.length };
}

/** Loads a DyBench JSONL file (sync). */
export function loadRecordsSync(file: string, options: LoadOptions = {}): LoadResult {
  if (typeof file !== 'string' || file.length === 0) throw invalidArg('path', 'a non-empty string', file, 'loadRecords');
  return parseRecords(readTextFile(file, 'DyBench JSONL file'), file, options);
}

/**
 * Loads a DyBench JSONL file. Strict (default): throws a DataError listing every bad line.
 * Lenient: returns the good records, every issue, and the number of records skipped.
 */
export async function loadRecords(file: string, options: LoadOptions = {}): Promise<LoadResult> {
  if (typeof file !== 'string' || file.length === 0) throw invalidArg('path', 'a non-empty string', file, 'loadRecords');
  let buf: Buffer;
  try {
    buf = await fs.promises.readFile(file);
  } catch {
    readTextFile(file, 'DyBench JSONL file'); // produces the one-line error
    throw new CrpoError('ERR_CRPO_IO', `cannot read DyBench JSONL file ${file}`);
  }
  return parseRecords(decodeUtf8(buf, file, 'DyBench JSONL file'), file, options);
}
