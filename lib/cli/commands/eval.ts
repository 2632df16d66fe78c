/**
 * `crpo eval <data>`: evaluates a served OpenAI-compatible model (or a local checkpoint) on a
 * DyBench JSONL and writes per-sample JSONL, summary JSON, a Markdown table and a PNG chart of
 * Acc / P-Acc per category (lib/eval/runner.ts; docs/evaluation.md). Rerunning the same command
 * resumes. `crpo eval --correlate <run dirs..>` prints Pearson r between two metrics across runs.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { Argv } from 'yargs';
import { readTextFile } from '../../data/jsonl';
import { CATEGORIES, type Category } from '../../data/schema';
import { CrpoError } from '../../errors';
import { correlateRuns, type PairedMetrics } from '../../eval/metrics';
import { detectModelFolder } from '../../hf/model-folder';
import { runEval, type EvalSummary } from '../../eval/runner';

export function builder(y: Argv): Argv {
  return y
    .usage(
      'crpo eval <data> --base-url URL --model NAME [--out DIR]\n\n' +
        'Evaluates a model on a DyBench JSONL (e.g. from `crpo synth`). Rerun the same command to resume.\n' +
        'Environment: CRPO_EVAL_BASE_URL / OPENAI_BASE_URL, CRPO_EVAL_API_KEY / OPENAI_API_KEY, CRPO_EVAL_MODEL.',
    )
    .positional('data', { type: 'string', describe: 'DyBench JSONL file' })
    .option('out', { type: 'string', describe: 'Output folder (default runs/eval/<model>-<data name>)' })
    .option('kind', {
      type: 'string',
      default: 'openai',
      describe: "Model kind: 'openai' (served endpoint) or 'checkpoint' (local policy)",
    })
    .option('model', {
      type: 'string',
      describe:
        'Served model name (env CRPO_EVAL_MODEL); with --kind checkpoint, a model folder (checkpoint or run folder) instead of --checkpoint',
    })
    .option('base-url', {
      type: 'string',
      describe: 'OpenAI-compatible base URL, e.g. http://localhost:8000/v1 (env CRPO_EVAL_BASE_URL, OPENAI_BASE_URL)',
    })
    .option('api-key', { type: 'string', describe: 'API key (env CRPO_EVAL_API_KEY, OPENAI_API_KEY; default EMPTY)' })
    .option('checkpoint', { type: 'string', describe: 'Checkpoint path for --kind checkpoint' })
    .option('null-option', {
      type: 'boolean',
      describe:
        'Add "None of the above" as an extra option (default: as ' +
        'the model card of a crpo server says the checkpoint was trained, else off; --no-null-option: off)',
    })
    .option('concurrency', { type: 'number', default: 4, describe: 'Requests in flight' })
    .option('batch-size', { type: 'number', default: 1, describe: 'Requests per model call (local checkpoints)' })
    .option('limit', { type: 'number', describe: 'Evaluate only the first N pairs' })
    .option('category', {
      type: 'array',
      string: true,
      choices: [...CATEGORIES],
      describe: 'Keep only these categories',
    })
    .option('split', { type: 'string', describe: 'Keep only records of this split' })
    .option('frames', {
      type: 'number',
      default: 8,
      describe: 'Frames sampled per clip from video files / frame ' + 'folders (a count)',
    })
    .option('max-pixels', {
      type: 'number',
      default: 224 * 224,
      describe: 'Pixel budget per frame (width x height, ' + 'pixels)',
    })
    .option('timeout', { type: 'number', default: 120, describe: 'Time limit per request attempt, seconds' })
    .option('retries', {
      type: 'number',
      default: 5,
      describe: 'Retries on 429/5xx/timeouts/unreadable replies (a ' + 'count)',
    })
    .option('backoff', {
      type: 'number',
      default: 1000,
      describe: 'First retry delay, ms (doubles each retry, ' + 'jittered)',
    })
    .option('max-tokens', {
      type: 'number',
      default: 1024,
      describe: 'max_tokens per completion, tokens (crpo serve ' + 'clamps it to what fits in the model)',
    })
    .option('temperature', { type: 'number', default: 0, describe: 'Sampling temperature (0: greedy)' })
    .option('jpeg-quality', { type: 'number', default: 90, describe: 'JPEG quality of the frames sent, 1-100' })
    .option('image-detail', { type: 'string', choices: ['low', 'high', 'auto'], describe: 'image_url detail hint' })
    .option('bootstrap', {
      type: 'number',
      default: 1000,
      describe: 'Bootstrap resamples for the 95% intervals (0: none)',
    })
    .option('seed', { type: 'number', default: 0, describe: 'Bootstrap seed' })
    .option('lenient', {
      type: 'boolean',
      default: false,
      describe: 'Skip bad records (and report them) instead of failing',
    })
    .option('overwrite', {
      type: 'boolean',
      default: false,
      describe: 'Discard earlier results in --out instead of resuming',
    })
    .option('quiet', { type: 'boolean', default: false, describe: 'No progress lines' })
    .option('correlate', {
      type: 'array',
      string: true,
      describe: 'Run folders: print Pearson r between --x and --y across them',
    })
    .option('x', {
      type: 'string',
      default: 'dynamic.acc',
      describe: 'With --correlate: first metric (<group>.<metric>)',
    })
    .option('y', { type: 'string', default: 'dynamic.sensitivity', describe: 'With --correlate: second metric' });
}

interface Args {
  data?: string;
  out?: string;
  kind: string;
  model?: string;
  baseUrl?: string;
  apiKey?: string;
  checkpoint?: string;
  nullOption?: boolean;
  concurrency: number;
  batchSize: number;
  limit?: number;
  category?: string[];
  split?: string;
  frames: number;
  maxPixels: number;
  timeout: number;
  retries: number;
  backoff: number;
  maxTokens: number;
  temperature: number;
  jpegQuality: number;
  imageDetail?: 'low' | 'high' | 'auto';
  bootstrap: number;
  seed: number;
  lenient: boolean;
  overwrite: boolean;
  quiet: boolean;
  correlate?: string[];
  x: string;
  y: string;
}

const env = (...names: string[]): string | undefined =>
  names.map((n) => process.env[n]).find((v) => v !== undefined && v !== '');

function correlate(a: Args): void {
  const dirs = a.correlate!;
  const runs: PairedMetrics[] = dirs.map((d) => ({
    groups: (JSON.parse(readTextFile(path.join(d, 'summary.json'), 'eval summary')) as EvalSummary).metrics,
  }));
  const { r, xs, ys } = correlateRuns(runs, a.x, a.y);
  dirs.forEach((d, i) => process.stdout.write(`${d}\t${a.x}=${xs[i].toFixed(4)}\t${a.y}=${ys[i].toFixed(4)}\n`));
  process.stdout.write(`Pearson r(${a.x}, ${a.y}) over ${dirs.length} runs = ${r.toFixed(4)}\n`);
}

/** Numeric flags checked before any work, each error naming the flag, its unit and the range. */
function checkFlags(a: Args): void {
  const bad = (flag: string, want: string, got: unknown): CrpoError =>
    new CrpoError('ERR_CRPO_USAGE', `--${flag} ${String(got)}: expected ${want}`);
  const int = (flag: string, v: number | undefined, lo: number, hi: number, unit = ''): void => {
    if (v !== undefined && !(Number.isInteger(v) && v >= lo && v <= hi)) {
      throw bad(flag, `an integer in [${lo}, ${hi}]${unit}`, v);
    }
  };
  int('frames', a.frames, 1, 4096, ' (frames per clip)');
  int('max-pixels', a.maxPixels, 64, 8192 * 8192, ' (pixels per frame)');
  int('retries', a.retries, 0, 100);
  int('max-tokens', a.maxTokens, 1, 1 << 20, ' (tokens)');
  int('concurrency', a.concurrency, 1, 256);
  int('batch-size', a.batchSize, 1, 4096);
  int('jpeg-quality', a.jpegQuality, 1, 100);
  int('bootstrap', a.bootstrap, 0, 1_000_000);
  int('limit', a.limit, 1, Number.MAX_SAFE_INTEGER, ' (pairs)');
  if (!(Number.isFinite(a.timeout) && a.timeout > 0 && a.timeout <= 86400)) {
    throw bad('timeout', 'a number of seconds in (0, 86400]', a.timeout);
  }
  if (!(Number.isFinite(a.backoff) && a.backoff >= 0 && a.backoff <= 3_600_000)) {
    throw bad('backoff', 'a number of ms in [0, 3600000]', a.backoff);
  }
  if (!(Number.isFinite(a.temperature) && a.temperature >= 0 && a.temperature <= 10)) {
    throw bad('temperature', 'a number in [0, 10]', a.temperature);
  }
  if (!['openai', 'checkpoint'].includes(a.kind)) {
    throw bad('kind', "'openai' (a served endpoint) or 'checkpoint' (a local folder)", a.kind);
  }
  // Frames held at once: decoded clips of the batches in flight, plus their encoded copies (x2).
  const clip = a.frames * a.maxPixels * 3;
  const held = clip * a.concurrency * a.batchSize * 2;
  const budget = os.totalmem() / 2;
  if (held > budget) {
    const gb = (b: number) => `${(b / 1e9).toFixed(1)} GB`;
    throw new CrpoError(
      'ERR_CRPO_TOO_LARGE',
      `--frames ${a.frames} x --max-pixels ${a.maxPixels} x 3 bytes = ` +
        `${gb(clip)} per clip; with --concurrency ${a.concurrency} x --batch-size ${a.batchSize} in flight that is ` +
        `${gb(held)}, more than half of this machine's memory (${gb(os.totalmem())}); lower --frames, --max-pixels ` +
        `or --concurrency`,
    );
  }
}

export async function handler(a: Args): Promise<void> {
  if (a.correlate && a.correlate.length) return correlate(a);
  if (!a.data)
    throw new CrpoError(
      'ERR_CRPO_USAGE',
      'name the DyBench JSONL to evaluate: crpo eval <data> --base-url URL --model NAME',
    );
  checkFlags(a);
  if (a.kind === 'checkpoint' && !a.checkpoint && a.model !== undefined && fs.existsSync(a.model)) {
    // --kind checkpoint --model <folder>: the folder is the checkpoint (detected: linear / native /
    // qwen checkpoint, a run folder or a Hugging Face Qwen folder); the reported model name is the folder's.
    detectModelFolder(a.model);
    a.checkpoint = a.model;
    a.model = undefined;
  } else if (a.kind === 'checkpoint' && a.checkpoint) detectModelFolder(a.checkpoint, '--checkpoint');
  const model = a.model ?? env('CRPO_EVAL_MODEL');
  const baseURL = a.baseUrl ?? env('CRPO_EVAL_BASE_URL', 'OPENAI_BASE_URL');
  const apiKey = a.apiKey ?? env('CRPO_EVAL_API_KEY', 'OPENAI_API_KEY');
  if (a.kind === 'openai') {
    if (!baseURL)
      throw new CrpoError(
        'ERR_CRPO_USAGE',
        'no endpoint: pass --base-url (e.g. http://localhost:8000/v1) or set CRPO_EVAL_BASE_URL or OPENAI_BASE_URL',
      );
    if (!model)
      throw new CrpoError('ERR_CRPO_USAGE', 'no model name: pass --model (the served model id) or set CRPO_EVAL_MODEL');
  }
  // The checkpoint kind registers itself when its module loads (it pulls in the server and the model).
  if (a.kind === 'checkpoint') await import('../../serve/checkpoint-model');
  const name = (model ?? (a.checkpoint ? path.basename(a.checkpoint) : a.kind)).replace(/[^A-Za-z0-9._-]+/g, '_');
  const out = a.out ?? path.join('runs', 'eval', `${name}-${path.basename(a.data).replace(/\.jsonl$/i, '')}`);
  if (fs.existsSync(out) && !fs.statSync(out).isDirectory()) {
    throw new CrpoError(
      'ERR_CRPO_BAD_PATH',
      `--out ${out}: is a file; --out names the folder that gets samples.jsonl, summary.json and results.md`,
    );
  }
  const { summary, files } = await runEval(
    {
      data: a.data,
      out,
      kind: a.kind,
      model: {
        model,
        baseURL,
        apiKey,
        checkpoint: a.checkpoint,
        timeoutMs: a.timeout * 1000,
        maxRetries: a.retries,
        backoffBaseMs: a.backoff,
        maxTokens: a.maxTokens,
        temperature: a.temperature,
        jpegQuality: a.jpegQuality,
        imageDetail: a.imageDetail,
      },
      nullOption: a.nullOption,
      concurrency: a.concurrency,
      batchSize: a.batchSize,
      limitPairs: a.limit,
      categories: a.category as Category[] | undefined,
      split: a.split,
      frames: a.frames,
      maxPixels: a.maxPixels,
      bootstrap: a.bootstrap,
      seed: a.seed,
      lenient: a.lenient,
      overwrite: a.overwrite,
    },
    { log: a.quiet ? () => undefined : undefined },
  );
  process.stdout.write(readTextFile(files.markdown, 'report'));
  process.stdout.write(`\nWrote ${files.samples}, ${files.summary}, ${files.markdown}, ${files.png}\n`);
  if (summary.n_failed > 0) {
    throw new CrpoError(
      'ERR_CRPO_EVAL_INCOMPLETE',
      `${summary.n_failed} of ${summary.n_records} samples failed ` +
        `(counted as wrong above; each line's 'error' in ${files.samples} says why: a clip that could not be read, or ` +
        `a request that failed after --retries ${a.retries}); fix the cause and rerun the same command to retry them`,
    );
  }
}
