/**
 * `crpo route <in.jsonl> -o <out.jsonl> [--backend rules|llm|hybrid]`: adds a `route` object
 * (type, transform, relation, ...) to each DyBench record (crpo-method.md section 2).
 * `crpo route eval <labelled.jsonl>...`: type accuracy per type, a confusion matrix and transform
 * validity of a backend on labelled questions (data/router/), per split.
 * Flags map onto RouterConfig fields (lib/router/backends.ts); the LLM key comes from the
 * environment (CRPO_ROUTER_API_KEY or OPENAI_API_KEY), never from a flag.
 */
import * as fs from 'fs';
import * as path from 'path';
import type { Argv } from 'yargs';
import { CrpoError } from '../../errors';
import {
  formatAccuracy,
  formatCacheReport,
  loadLabelled,
  routeFile,
  routeRecords,
  routerBackends,
  scoreRoutes,
  type LabelledQuestion,
  type RouterOptions,
} from '../../router';

export function builder(y: Argv): Argv {
  return y
    .positional('input', {
      type: 'string',
      describe: "DyBench JSONL to route, or 'eval' followed by labelled JSONL files",
    })
    .positional('more', { type: 'string', array: true, describe: 'labelled JSONL files (route eval)' })
    .option('out', { alias: 'o', type: 'string', describe: 'Output JSONL (records with `route`); written atomically' })
    .option('backend', {
      type: 'string',
      default: 'rules',
      choices: routerBackends.names(),
      describe: 'Router backend',
    })
    .option('seed', { type: 'number', default: 0, describe: 'Seed of the hflip/reverse choice for static questions' })
    .option('model', { type: 'string', describe: 'LLM model name (default deepseek-reasoner)' })
    .option('base-url', {
      type: 'string',
      describe: 'OpenAI-compatible API base URL (default $OPENAI_BASE_URL or https://api.deepseek.com/v1)',
    })
    .option('concurrency', { type: 'number', describe: 'LLM requests in flight (default 4)' })
    .option('max-invalid-retries', {
      type: 'number',
      describe: 'Re-asks after an invalid JSON reply before the rules answer is used (default 2)',
    })
    .option('max-retries', { type: 'number', describe: 'Retries after 429/5xx/timeouts per request (default 6)' })
    .option('timeout', { type: 'number', describe: 'Time limit per LLM request, ms (default 120000)' })
    .option('backoff-ms', { type: 'number', describe: 'First backoff delay in ms, doubled per retry (default 1000)' })
    .option('hybrid-threshold', {
      type: 'number',
      describe: 'Hybrid: ask the LLM below this rules confidence (default 0.7)',
    })
    .option('cache', {
      type: 'string',
      describe: 'LLM answer cache, append-only JSONL (default .crpo-cache/router.jsonl); --no-cache disables it',
    })
    .option('reask-fallbacks', {
      type: 'boolean',
      default: false,
      describe: 'Ask the LLM again where the cache holds a rules fallback after invalid replies',
    })
    .option('errors', { type: 'boolean', default: false, describe: 'route eval: list the misrouted questions' })
    .option('json', { type: 'boolean', default: false, describe: 'route eval: print the results as JSON' })
    .example('$0 route data.jsonl -o routed.jsonl', 'route with the offline rules backend')
    .example(
      'OPENAI_API_KEY=... $0 route data.jsonl -o routed.jsonl --backend llm --model deepseek-reasoner',
      'route with DeepSeek-R1',
    )
    .example('$0 route eval data/router/labelled-heldout.jsonl', 'accuracy of the rules on the held-out labelled set');
}

interface RouteArgs {
  input: string;
  more?: string[];
  out?: string;
  backend: string;
  seed: number;
  model?: string;
  baseUrl?: string;
  concurrency?: number;
  maxInvalidRetries?: number;
  maxRetries?: number;
  timeout?: number;
  backoffMs?: number;
  hybridThreshold?: number;
  cache?: string | boolean;
  reaskFallbacks: boolean;
  errors: boolean;
  json: boolean;
}

function options(a: RouteArgs): RouterOptions {
  const llm: RouterOptions['llm'] = {};
  if (a.model !== undefined) llm.model = a.model;
  if (a.baseUrl !== undefined) llm.baseURL = a.baseUrl;
  if (a.concurrency !== undefined) llm.concurrency = a.concurrency;
  if (a.maxInvalidRetries !== undefined) llm.maxInvalidRetries = a.maxInvalidRetries;
  if (a.maxRetries !== undefined) llm.maxTransportRetries = a.maxRetries;
  if (a.timeout !== undefined) llm.timeoutMs = a.timeout;
  if (a.backoffMs !== undefined) llm.backoffBaseMs = a.backoffMs;
  const o: RouterOptions = { backend: a.backend, seed: a.seed, reaskFallbacks: a.reaskFallbacks ?? false, llm };
  if (a.hybridThreshold !== undefined) o.hybridThreshold = a.hybridThreshold;
  if (a.cache === false) o.cacheFile = null;
  else if (typeof a.cache === 'string') o.cacheFile = a.cache;
  return o;
}

function progress(label: string): (done: number, total: number) => void {
  let last = 0;
  return (done, total) => {
    const now = Date.now();
    if (process.stderr.isTTY && (now - last > 500 || done === total)) {
      last = now;
      process.stderr.write(`\r${label}: ${done}/${total}${done === total ? '\n' : ''}`);
    }
  };
}

async function runEval(files: string[], a: RouteArgs): Promise<void> {
  if (files.length === 0)
    throw new CrpoError(
      'ERR_CRPO_USAGE',
      'route eval needs at least one labelled JSONL file, e.g. crpo route eval data/router/labelled-heldout.jsonl',
    );
  const all: LabelledQuestion[] = files.flatMap((f) => loadLabelled(f));
  const { routes, stats } = await routeRecords(all, { ...options(a), onAnswer: progress('routing') });
  const splits = [...new Set(all.map((l) => l.split))];
  const results: Record<string, ReturnType<typeof scoreRoutes>> = {};
  for (const s of splits) {
    const idx = all.map((l, i) => (l.split === s ? i : -1)).filter((i) => i >= 0);
    results[s] = scoreRoutes(
      idx.map((i) => all[i]),
      idx.map((i) => routes[i]),
    );
  }
  if (splits.length > 1) results.all = scoreRoutes(all, routes);
  if (a.json) {
    process.stdout.write(JSON.stringify({ backend: a.backend, files, results, stats }, null, 2) + '\n');
    return;
  }
  const blocks = Object.entries(results).map(([s, r]) =>
    formatAccuracy(`${a.backend} backend, split '${s}'`, r, a.errors),
  );
  if (stats.cache) blocks.push(formatCacheReport(stats.cache));
  if (stats.fallbacks) blocks.push(`${stats.fallbacks} LLM answer(s) were invalid and replaced by the rules answer`);
  process.stdout.write(blocks.join('\n\n') + '\n');
}

export async function handler(a: RouteArgs): Promise<void> {
  if (a.input === 'eval') return runEval(a.more ?? [], a);
  if (a.more && a.more.length)
    throw new CrpoError(
      'ERR_CRPO_USAGE',
      `crpo route takes one input file, got ${1 + a.more.length} (${[a.input, ...a.more].join(', ')}); for accuracy use crpo route eval <files>`,
    );
  if (!a.out) throw new CrpoError('ERR_CRPO_USAGE', 'crpo route needs -o <out.jsonl>');
  if (fs.existsSync(a.out) && fs.statSync(a.out).isDirectory()) {
    throw new CrpoError(
      'ERR_CRPO_BAD_PATH',
      `-o ${a.out}: is a folder; name the output file, e.g. -o ` + `${path.join(a.out, 'routed.jsonl')}`,
    );
  }
  if (path.resolve(a.out) === path.resolve(a.input)) {
    throw new CrpoError(
      'ERR_CRPO_BAD_PATH',
      `-o ${a.out}: is the input file; write the routed records to another file`,
    );
  }
  for (const [flag, v, lo, hi] of [
    ['concurrency', a.concurrency, 1, 256],
    ['max-invalid-retries', a.maxInvalidRetries, 0, 100],
    ['max-retries', a.maxRetries, 0, 100],
    ['timeout', a.timeout, 1, 86_400_000],
    ['backoff-ms', a.backoffMs, 0, 3_600_000],
  ] as const) {
    if (v !== undefined && !(Number.isInteger(v) && v >= lo && v <= hi)) {
      throw new CrpoError(
        'ERR_CRPO_INVALID_ARG',
        `--${flag} ${v}: expected an integer in [${lo}, ` +
          `${hi}]${flag === 'timeout' || flag === 'backoff-ms' ? ' (ms)' : ''}`,
      );
    }
  }
  const t0 = Date.now();
  const r = await routeFile(a.input, a.out, { ...options(a), onAnswer: progress('routing') });
  const s = r.stats;
  const fmt = (m: Record<string, number>): string =>
    Object.entries(m)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ');
  const lines = [
    `routed ${s.records} record(s) -> ${r.out} in ${((Date.now() - t0) / 1000).toFixed(2)} s (backend ${r.config.backend})`,
    `  types: ${fmt(s.byType) || 'none'}`,
    `  transforms: ${fmt(s.byTransform) || 'none'}`,
  ];
  if (r.config.backend !== 'rules')
    lines.push(
      `  answers: ${fmt(s.byBackend)}; from cache ${s.cached}; LLM requests ${s.requests}; invalid-reply fallbacks ${s.fallbacks}`,
    );
  if (s.cache) lines.push(`  ${formatCacheReport(s.cache)}`);
  process.stdout.write(lines.join('\n') + '\n');
}
