/**
 * The evaluation runner behind `crpo eval` (crpo-method.md sections 8-9): loads a DyBench JSONL,
 * asks an AnswerModel (served endpoint or local checkpoint) every video-question with bounded
 * concurrency, parses answers strictly (lib/prompt parseAnswer), appends one fsynced JSONL line
 * per sample so that a killed run resumes where it stopped (finished ids are skipped, a torn last
 * line is cut and reported, failed samples are retried), then writes the summary JSON, a Markdown
 * table and a PNG chart of Acc / P-Acc per category with bootstrap intervals.
 *
 * Output folder:
 *   run.json       resolved configuration (no API key) and the fingerprint a resume must match
 *   samples.jsonl  one line per answered sample (the last line of an id wins)
 *   summary.json   metrics, intervals, counts
 *   results.md     the Markdown table
 *   chart.svg, chart.png   Acc vs P-Acc per category
 */
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { JsonlAppender, readTextFile, splitLines, writeFileAtomic } from '../data/jsonl';
import { loadRecords } from '../data/loader';
import { CATEGORIES, type Category, type DyBenchRecord } from '../data/schema';
import { CrpoError, invalidArg, outOfRange } from '../errors';
import { displayedOptions, formatPrompt, letterOf, parseAnswer } from '../prompt';
import { defaultFrameLoader, FRAME_DEFAULTS, type FrameLoader } from './frames';
import {
  BOOTSTRAP_DEFAULTS,
  bootstrapIntervals,
  computeMetrics,
  timeBlindMetrics,
  type GroupIntervals,
  type GroupName,
  type PairedMetrics,
  type ScoredSample,
  type TimeBlindAnswer,
  type TimeBlindMetrics,
} from './metrics';
import { createModel, type AnswerModel, type AnswerRequest, type ModelSpec } from './model';
import { chartSvg, markdownReport, svgToPng } from './report';

/** Everything `crpo eval` can set; defaults in EVAL_DEFAULTS. */
export interface EvalConfig {
  /** DyBench JSONL file. */
  data: string;
  /** Output folder (created; reused to resume). */
  out: string;
  /** Model kind: 'openai' (served endpoint) or 'checkpoint' (local policy), or any registered kind. */
  kind: string;
  /** Settings passed to the model kind (model name, base URL, key, retries, ...). */
  model: ModelSpec;
  /**
   * Show "None of the above" as an extra option (crpo-method.md section 3). Undefined: as the
   * model says it was trained (a crpo server's model card), else off.
   */
  nullOption?: boolean;
  /** Instruction line of the prompt (default lib/prompt DEFAULT_INSTRUCTION). */
  instruction?: string;
  /** Batches in flight at once. */
  concurrency: number;
  /** Requests per model.answer call (1 for served endpoints; larger for a local checkpoint). */
  batchSize: number;
  /** Keep only the first N pairs (after the split/category filters). */
  limitPairs?: number;
  /** Keep only these categories. */
  categories?: Category[];
  /** Keep only records whose `split` equals this. */
  split?: string;
  /** Frames sampled from video files / frame folders. */
  frames: number;
  /** Pixel budget per frame for video files / frame folders. */
  maxPixels: number;
  /** Bootstrap resamples (0 = no intervals). */
  bootstrap: number;
  /** Bootstrap seed. */
  seed: number;
  /** Interval coverage. */
  level: number;
  /** Discard earlier results in `out` instead of resuming. */
  overwrite: boolean;
  /** Load the data leniently (skip bad records, report the count) instead of failing on them. */
  lenient: boolean;
}

export const EVAL_DEFAULTS: Omit<EvalConfig, 'data' | 'out' | 'model'> = {
  kind: 'openai',
  concurrency: 4,
  batchSize: 1,
  frames: FRAME_DEFAULTS.frames,
  maxPixels: FRAME_DEFAULTS.maxPixels,
  bootstrap: BOOTSTRAP_DEFAULTS.iterations,
  seed: BOOTSTRAP_DEFAULTS.seed,
  level: BOOTSTRAP_DEFAULTS.level,
  overwrite: false,
  lenient: false,
};

/** One line of samples.jsonl. */
export interface SampleResult {
  id: string;
  pair_id: string;
  category: Category;
  transform: string;
  /** Gold option index. */
  answer: number;
  /** Predicted option index; -1 when invalid (or failed). */
  prediction: number;
  /** Predicted letter, null when invalid. */
  prediction_letter: string | null;
  correct: boolean;
  /** True when the answer came as exactly one <answer>X</answer>. */
  format_ok: boolean;
  /** Raw response text. */
  raw: string;
  latency_ms: number;
  attempts?: number;
  /** Separate reasoning text returned by the server, when any (not parsed). */
  reasoning?: string;
  /** Present when the sample failed for good (retried on resume). */
  error?: string;
}

export interface EvalSummary {
  model: string;
  kind: string;
  data: string;
  null_option: boolean;
  n_records: number;
  n_finished: number;
  n_failed: number;
  /** Results found in samples.jsonl from an earlier run and reused. */
  n_resumed: number;
  /** Bytes of a torn last line cut from samples.jsonl on resume (0 when none). */
  torn_bytes: number;
  metrics: PairedMetrics['groups'];
  intervals: Partial<Record<GroupName, GroupIntervals>>;
  bootstrap: { iterations: number; seed: number; level: number };
  timeblind: TimeBlindMetrics | null;
  latency_ms: { mean: number; p50: number; p95: number } | null;
  elapsed_s: number;
}

export interface EvalHooks {
  /** Use this model instead of creating one from config.kind (tests, library users). */
  model?: AnswerModel;
  /** Frame loader (default: synthetic renderer / lib/video). */
  frameLoader?: FrameLoader;
  /** Progress and notices (default: stderr). */
  log?: (line: string) => void;
  /** Minimum ms between progress lines (default 2000). */
  progressEveryMs?: number;
}

export interface EvalResult {
  summary: EvalSummary;
  files: { run: string; samples: string; summary: string; markdown: string; svg: string; png: string };
}

function resolveConfig(c: Partial<EvalConfig> & Pick<EvalConfig, 'data' | 'out' | 'model'>): EvalConfig {
  const r = {
    ...EVAL_DEFAULTS,
    ...Object.fromEntries(Object.entries(c).filter(([, v]) => v !== undefined)),
  } as EvalConfig;
  if (typeof r.data !== 'string' || r.data === '') throw invalidArg('data', 'a DyBench JSONL path', r.data, 'eval');
  if (typeof r.out !== 'string' || r.out === '') throw invalidArg('out', 'an output folder', r.out, 'eval');
  if (!Number.isInteger(r.concurrency) || r.concurrency < 1 || r.concurrency > 256)
    throw outOfRange('concurrency', 'an integer in [1, 256]', r.concurrency, 'eval');
  if (!Number.isInteger(r.batchSize) || r.batchSize < 1)
    throw outOfRange('batchSize', 'a positive integer', r.batchSize, 'eval');
  if (r.limitPairs !== undefined && (!Number.isInteger(r.limitPairs) || r.limitPairs < 1))
    throw outOfRange('limitPairs', 'a positive integer', r.limitPairs, 'eval');
  if (!Number.isInteger(r.bootstrap) || r.bootstrap < 0)
    throw outOfRange('bootstrap', 'a non-negative integer', r.bootstrap, 'eval');
  for (const c2 of r.categories ?? [])
    if (!(CATEGORIES as readonly string[]).includes(c2))
      throw invalidArg('categories[]', `one of ${CATEGORIES.join(', ')}`, c2, 'eval');
  return r;
}

/** Records to evaluate: split / category filters, then the first N whole pairs. */
export function selectRecords(
  records: readonly DyBenchRecord[],
  c: Pick<EvalConfig, 'split' | 'categories' | 'limitPairs'>,
): DyBenchRecord[] {
  let out = records.filter(
    (r) => (c.split === undefined || r.split === c.split) && (!c.categories || c.categories.includes(r.category)),
  );
  if (c.limitPairs !== undefined) {
    const keep = new Set<string>();
    for (const r of out) {
      if (keep.size >= c.limitPairs) break;
      keep.add(r.pair_id);
    }
    out = out.filter((r) => keep.has(r.pair_id));
  }
  return out;
}

/** What a resumed run must share with the run that wrote the folder. */
function fingerprint(c: EvalConfig, dataSha: string, modelName: string): Record<string, unknown> {
  return {
    data_sha256: dataSha,
    kind: c.kind,
    model: modelName,
    base_url: c.model.baseURL ?? null,
    checkpoint: c.model.checkpoint ?? null,
    null_option: c.nullOption ?? false,
    instruction: c.instruction ?? null,
    frames: c.frames,
    max_pixels: c.maxPixels,
  };
}

interface ExistingResults {
  byId: Map<string, SampleResult>;
  tornBytes: number;
}

/**
 * Reads samples.jsonl of an earlier run. A torn last line (a crash mid-write: bytes after the
 * last newline) is reported and cut when the appender opens; any other unreadable line is
 * corruption and stops the run with file:line.
 */
export function readSamples(file: string): ExistingResults {
  const byId = new Map<string, SampleResult>();
  if (!fs.existsSync(file)) return { byId, tornBytes: 0 };
  const text = readTextFile(file, 'samples file');
  const cut = text.lastIndexOf('\n') + 1;
  const tornBytes = Buffer.byteLength(text.slice(cut));
  for (const { line, text: t } of splitLines(text.slice(0, cut))) {
    let v: SampleResult;
    try {
      v = JSON.parse(t) as SampleResult;
    } catch (err) {
      throw new CrpoError(
        'ERR_CRPO_BAD_DATA',
        `${file}:${line}: invalid JSON (${(err as Error).message}); the results file is damaged beyond a torn last line, rerun with --overwrite`,
      );
    }
    if (typeof v?.id !== 'string' || typeof v.prediction !== 'number')
      throw new CrpoError(
        'ERR_CRPO_BAD_DATA',
        `${file}:${line}: expected a sample result with id and prediction; rerun with --overwrite`,
      );
    byId.set(v.id, v);
  }
  return { byId, tornBytes };
}

function fmtDuration(s: number): string {
  if (!Number.isFinite(s)) return '?';
  if (s < 60) return `${Math.round(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.round((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** The scored view of a sample; failed samples count as invalid (wrong). */
function scored(r: DyBenchRecord, res: SampleResult | undefined): ScoredSample {
  return {
    id: r.id,
    pair_id: r.pair_id,
    category: r.category,
    answer: r.answer,
    prediction: res && !res.error ? res.prediction : -1,
  };
}

/**
 * TimeBlind instances: records whose meta.instance names the instance's video and question
 * (pair_id = instance id). Null when the data has none.
 */
export function timeBlindAnswers(
  records: readonly DyBenchRecord[],
  results: Map<string, SampleResult>,
): TimeBlindAnswer[] | null {
  const out: TimeBlindAnswer[] = [];
  for (const r of records) {
    const inst = (r.meta as { instance?: { video?: unknown; question?: unknown } } | undefined)?.instance;
    if (!inst || typeof inst !== 'object') continue;
    const res = results.get(r.id);
    out.push({
      instance: r.pair_id,
      video: String(inst.video),
      question: String(inst.question),
      correct: !!res && !res.error && res.correct,
    });
  }
  return out.length ? out : null;
}

/** Runs (or resumes) an evaluation and writes the output folder. */
export async function runEval(
  config: Partial<EvalConfig> & Pick<EvalConfig, 'data' | 'out' | 'model'>,
  hooks: EvalHooks = {},
): Promise<EvalResult> {
  const c = resolveConfig(config);
  const log = hooks.log ?? ((s: string) => process.stderr.write(s + '\n'));
  const t0 = Date.now();
  const files = {
    run: path.join(c.out, 'run.json'),
    samples: path.join(c.out, 'samples.jsonl'),
    summary: path.join(c.out, 'summary.json'),
    markdown: path.join(c.out, 'results.md'),
    svg: path.join(c.out, 'chart.svg'),
    png: path.join(c.out, 'chart.png'),
  };

  // Data.
  const dataText = readTextFile(c.data, 'DyBench JSONL file');
  const dataSha = crypto.createHash('sha256').update(dataText).digest('hex');
  const loaded = await loadRecords(c.data, { mode: c.lenient ? 'lenient' : 'strict' });
  if (loaded.skipped > 0)
    log(
      `eval: skipped ${loaded.skipped} bad record(s) of ${c.data} (lenient); first: ${loaded.issues[0] ? `${loaded.issues[0].file}:${loaded.issues[0].line}: ${loaded.issues[0].message}` : '-'}`,
    );
  const records = selectRecords(loaded.records, c);
  if (records.length === 0)
    throw new CrpoError(
      'ERR_CRPO_EMPTY',
      `no records to evaluate in ${c.data}${c.split || c.categories ? ' after the split/category filters' : ''}`,
    );

  // Model.
  const model = hooks.model ?? (await createModel(c.kind, c.model));
  try {
    if (c.nullOption === undefined) {
      // Not set by the user: as the model was trained, when its card says (crpo serve), else off.
      const d = (await model.promptDefaults?.()) ?? {};
      c.nullOption = d.nullOption ?? false;
      if (d.nullOption !== undefined)
        log(
          `eval: null option ${d.nullOption ? 'on' : 'off'}, as ` +
            `${d.source ?? 'the model'} says it was trained (--null-option / --no-null-option overrides)`,
        );
    }
    const nullOption: boolean = c.nullOption;
    // Resume or start.
    fs.mkdirSync(c.out, { recursive: true });
    const fp = fingerprint(c, dataSha, model.name);
    if (c.overwrite) {
      for (const f of Object.values(files)) fs.rmSync(f, { force: true });
    } else if (fs.existsSync(files.run)) {
      let prev: { fingerprint?: Record<string, unknown> };
      try {
        prev = JSON.parse(readTextFile(files.run, 'run file')) as typeof prev;
      } catch (err) {
        if ((err as { code?: string }).code?.startsWith('ERR_CRPO')) throw err;
        throw new CrpoError(
          'ERR_CRPO_RESUME_MISMATCH',
          `${files.run}: not valid JSON (${(err as Error).message}); ` +
            `the folder's run record is damaged: use another --out, or --overwrite to discard it`,
        );
      }
      const diff = Object.keys(fp).filter((k) => JSON.stringify(prev.fingerprint?.[k]) !== JSON.stringify(fp[k]));
      if (diff.length) {
        throw new CrpoError(
          'ERR_CRPO_RESUME_MISMATCH',
          `${c.out} holds a run with different settings (${diff.map((k) => `${k}: ${JSON.stringify(prev.fingerprint?.[k])} -> ${JSON.stringify(fp[k])}`).join('; ')}); use another --out, or --overwrite to discard it`,
        );
      }
    } else if (fs.existsSync(files.samples)) {
      throw new CrpoError(
        'ERR_CRPO_RESUME_MISMATCH',
        `${files.samples} exists without run.json; use another --out, or --overwrite to discard it`,
      );
    }
    const { apiKey: _key, ...modelPublic } = c.model;
    await writeFileAtomic(
      files.run,
      JSON.stringify({ config: { ...c, data: path.resolve(c.data), model: modelPublic }, fingerprint: fp }, null, 2) +
        '\n',
    );

    const existing = readSamples(files.samples);
    if (existing.tornBytes > 0)
      log(
        `eval: ${files.samples}: cut a torn last line (${existing.tornBytes} bytes) left by an interrupted run; that sample is asked again`,
      );
    const wanted = new Set(records.map((r) => r.id));
    const finished = new Set([...existing.byId.values()].filter((r) => !r.error && wanted.has(r.id)).map((r) => r.id));
    const retrying = [...existing.byId.values()].filter((r) => r.error && wanted.has(r.id)).length;
    const todo = records.filter((r) => !finished.has(r.id));
    if (finished.size > 0)
      log(
        `eval: resuming ${c.out}: ${finished.size} of ${records.length} samples already done${retrying ? `, retrying ${retrying} failed` : ''}`,
      );
    log(
      `eval: ${model.name} on ${todo.length} sample(s) of ${c.data} (concurrency ${c.concurrency}, batch ${c.batchSize})`,
    );

    // Work.
    const appender = await JsonlAppender.open(files.samples);
    const loadFrames = hooks.frameLoader ?? defaultFrameLoader({ frames: c.frames, maxPixels: c.maxPixels });
    const results = existing.byId;
    let done = 0,
      correct = 0,
      failed = 0;
    let lastLog = 0;
    const started = Date.now();
    const every = hooks.progressEveryMs ?? 2000;
    const progress = (force = false): void => {
      const now = Date.now();
      if (!force && now - lastLog < every) return;
      lastLog = now;
      const rate = done / Math.max(1e-3, (now - started) / 1000);
      log(
        `eval: ${done}/${todo.length} done, acc ${done - failed ? ((100 * correct) / (done - failed)).toFixed(1) : '-'}%, ${failed} failed, ${rate.toFixed(1)}/s, eta ${fmtDuration((todo.length - done) / rate)}`,
      );
    };

    const batches: DyBenchRecord[][] = [];
    for (let i = 0; i < todo.length; i += c.batchSize) batches.push(todo.slice(i, i + c.batchSize));
    let next = 0;
    let unreadable = 0;
    let fatal: unknown;
    const work = async (): Promise<void> => {
      while (fatal === undefined && next < batches.length) {
        const batch = batches[next++];
        const lines: SampleResult[] = [];
        const requests: AnswerRequest[] = [];
        const asked: DyBenchRecord[] = [];
        // Decodes of one batch run together (the reader bounds the total); a clip that cannot be
        // decoded fails its sample, not the run.
        const decoded = await Promise.all(
          batch.map((r) =>
            loadFrames(r).then(
              (f) => ({ r, f }),
              (err: Error) => ({ r, err }),
            ),
          ),
        );
        for (const d of decoded) {
          const r = d.r;
          if ('err' in d) {
            lines.push(failedLine(r, `frames: ${d.err?.message ?? String(d.err)}`));
            // The first few unreadable clips are said at once (the rest are in samples.jsonl).
            if (unreadable++ < 3) log(`eval: ${r.id}: cannot read its video: ${d.err?.message ?? String(d.err)}`);
            continue;
          }
          requests.push({
            id: r.id,
            frames: d.f.frames,
            frameShape: d.f.shape,
            question: r.question,
            options: r.options,
            prompt: formatPrompt(r.question, r.options, { nullOption, instruction: c.instruction }),
          });
          asked.push(r);
        }
        if (requests.length) {
          let responses;
          try {
            responses = await model.answer(requests);
          } catch (err) {
            fatal ??= err;
            return;
          }
          if (!Array.isArray(responses) || responses.length !== requests.length) {
            fatal ??= new CrpoError(
              'ERR_CRPO_EVAL_MODEL',
              `model ${model.name} returned ${Array.isArray(responses) ? responses.length : typeof responses} responses for ${requests.length} requests`,
              { userError: false },
            );
            return;
          }
          asked.forEach((r, k) => {
            const resp = responses[k];
            if (resp.error !== undefined) {
              lines.push({ ...failedLine(r, resp.error), latency_ms: resp.latencyMs, attempts: resp.attempts });
              return;
            }
            const shown = displayedOptions(r.options, nullOption).length;
            const p = parseAnswer(resp.raw, shown);
            lines.push({
              id: r.id,
              pair_id: r.pair_id,
              category: r.category,
              transform: r.transform,
              answer: r.answer,
              prediction: p.index,
              prediction_letter: p.index >= 0 ? letterOf(p.index) : null,
              correct: p.index >= 0 && p.index === r.answer,
              format_ok: p.formatOk,
              raw: resp.raw,
              latency_ms: resp.latencyMs,
              ...(resp.attempts !== undefined ? { attempts: resp.attempts } : {}),
              ...(resp.reasoning !== undefined ? { reasoning: resp.reasoning } : {}),
            });
          });
        }
        await appender.append(lines);
        for (const l of lines) {
          results.set(l.id, l);
          done++;
          if (l.error) failed++;
          else if (l.correct) correct++;
        }
        progress();
      }
    };
    // A worker that fails (a fatal model error, a failed append) stops every worker from taking
    // new batches; all of them are waited for before the file is closed.
    const worker = (): Promise<void> => work().catch((err) => void (fatal ??= err));
    try {
      await Promise.all(Array.from({ length: Math.min(c.concurrency, Math.max(1, batches.length)) }, worker));
    } finally {
      await appender.close();
    }
    if (fatal !== undefined) throw fatal;
    if (todo.length) progress(true);

    // Metrics over the whole selection (this run's and resumed results).
    const samples = records.map((r) => scored(r, results.get(r.id)));
    const metrics = computeMetrics(samples);
    const intervals =
      c.bootstrap > 0 ? bootstrapIntervals(samples, { iterations: c.bootstrap, seed: c.seed, level: c.level }) : {};
    const tb = timeBlindAnswers(records, results);
    const final = records.map((r) => results.get(r.id));
    const lat = final
      .filter((r): r is SampleResult => !!r && !r.error)
      .map((r) => r.latency_ms)
      .sort((a, b) => a - b);
    const summary: EvalSummary = {
      model: model.name,
      kind: c.kind,
      data: path.resolve(c.data),
      null_option: nullOption,
      n_records: records.length,
      n_finished: final.filter((r) => r && !r.error).length,
      n_failed: final.filter((r) => !r || r.error).length,
      n_resumed: finished.size,
      torn_bytes: existing.tornBytes,
      metrics: metrics.groups,
      intervals,
      bootstrap: { iterations: c.bootstrap, seed: c.seed, level: c.level },
      timeblind: tb ? timeBlindMetrics(tb) : null,
      latency_ms: lat.length
        ? {
            mean: lat.reduce((a, b) => a + b, 0) / lat.length,
            p50: lat[Math.floor((lat.length - 1) * 0.5)],
            p95: lat[Math.floor((lat.length - 1) * 0.95)],
          }
        : null,
      elapsed_s: (Date.now() - t0) / 1000,
    };
    const report = {
      model: model.name,
      data: c.data,
      metrics,
      intervals,
      level: c.level,
      n_failed: summary.n_failed,
      null_option: nullOption,
      timeblind: summary.timeblind,
    };
    const svg = chartSvg(report);
    await writeFileAtomic(files.summary, JSON.stringify(summary, null, 2) + '\n');
    await writeFileAtomic(files.markdown, markdownReport(report));
    await writeFileAtomic(files.svg, svg);
    await writeFileAtomic(files.png, await svgToPng(svg));
    return { summary, files };
  } finally {
    await model.close?.();
  }
}

function failedLine(r: DyBenchRecord, error: string): SampleResult {
  return {
    id: r.id,
    pair_id: r.pair_id,
    category: r.category,
    transform: r.transform,
    answer: r.answer,
    prediction: -1,
    prediction_letter: null,
    correct: false,
    format_ok: false,
    raw: '',
    latency_ms: 0,
    error,
  };
}
