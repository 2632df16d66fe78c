/**
 * The Task Router (crpo-method.md section 2): classifies each question as spatial, temporal,
 * spatiotemporal or static and picks the counterfactual transform that really tests it, adding a
 * `route` object to DyBench records. Synchronous API for the rules backend (`routeRecord`, used
 * by the trainer), an async batch API for every backend (`routeRecords`), and file routing with
 * the answer cache (`routeFile`, used by `crpo route`).
 */
import * as path from 'path';
import { writeFileAtomic } from '../data/jsonl';
import { loadRecords } from '../data/loader';
import type { DyBenchRecord } from '../data/schema';
import { CrpoError, invalidArg } from '../errors';
import {
  DEFAULT_ROUTER_CONFIG,
  routerBackends,
  type BackendAnswer,
  type RouterBackend,
  type RouterConfig,
} from './backends';
import { RouterCache, type CacheOpenReport } from './cache';
import { DEFAULT_LLM_CONFIG, type LlmConfig } from './llm';
import { applyPolicy } from './policy';
import type { Route, RouterQuestion } from './types';

export * from './types';
export { POLICY_TABLE, policyRow, applyPolicy, staticTransform } from './policy';
export { classifyByRules, staticPreference, RULES_VERSION } from './rules';
export { PROMPT_VERSION, SYSTEM_PROMPT, parseRouterReply, routerMessages } from './prompt';
export { RouterCache, cacheKey, formatCacheReport, type CacheOpenReport, type CacheEntry } from './cache';
export { LlmRouterClient, DEFAULT_LLM_CONFIG, backoffDelay, type LlmConfig } from './llm';
export {
  routerBackends,
  DEFAULT_ROUTER_CONFIG,
  type RouterConfig,
  type RouterBackend,
  type BackendAnswer,
} from './backends';
export { loadLabelled, scoreRoutes, formatAccuracy, LabelledQuestion, type RouterAccuracy } from './eval';

export type RouterOptions = Partial<Omit<RouterConfig, 'llm'>> & { llm?: Partial<LlmConfig> };

function checkQuestion(q: RouterQuestion, where: string): void {
  if (typeof q !== 'object' || q === null) throw invalidArg(where, 'a record with question and options', q, 'route');
  if (typeof q.question !== 'string' || q.question.trim() === '')
    throw invalidArg(`${where}.question`, 'a non-empty string', q.question, 'route');
  if (!Array.isArray(q.options) || q.options.length < 2 || q.options.some((o) => typeof o !== 'string'))
    throw invalidArg(`${where}.options`, 'an array of at least 2 strings', q.options, 'route');
}

/** The full config: defaults, then the environment (LLM endpoint and key), then `o`. */
export function resolveRouterConfig(o: RouterOptions = {}): RouterConfig {
  const llm: LlmConfig = {
    ...DEFAULT_LLM_CONFIG,
    baseURL: process.env.OPENAI_BASE_URL || DEFAULT_LLM_CONFIG.baseURL,
    apiKey: process.env.CRPO_ROUTER_API_KEY || process.env.OPENAI_API_KEY || '',
    ...(o.llm ?? {}),
  };
  const c: RouterConfig = { ...DEFAULT_ROUTER_CONFIG, ...o, llm };
  if (typeof c.backend !== 'string') throw invalidArg('backend', 'a backend name', c.backend, 'route');
  routerBackends.get(c.backend); // unknown name: throws and lists the known ones
  if (!Number.isInteger(c.seed)) throw invalidArg('seed', 'an integer', c.seed, 'route');
  if (typeof c.reaskFallbacks !== 'boolean') throw invalidArg('reaskFallbacks', 'a boolean', c.reaskFallbacks, 'route');
  if (typeof c.hybridThreshold !== 'number' || !(c.hybridThreshold >= 0 && c.hybridThreshold <= 1))
    throw invalidArg('hybridThreshold', 'a number in [0, 1]', c.hybridThreshold, 'route');
  for (const k of [
    'concurrency',
    'maxTransportRetries',
    'maxInvalidRetries',
    'timeoutMs',
    'backoffBaseMs',
    'backoffMaxMs',
    'maxTokens',
  ] as const) {
    const v = llm[k];
    const min = k === 'concurrency' || k === 'timeoutMs' || k === 'maxTokens' ? 1 : 0;
    if (!Number.isInteger(v) || v < min) throw invalidArg(`llm.${k}`, `an integer >= ${min}`, v, 'route');
  }
  return c;
}

function toRoute(a: BackendAnswer, q: RouterQuestion, seed: number): Route {
  const p = applyPolicy(a.classification, q.question, q.options, seed);
  const c = a.classification;
  const rationale = p.corrected ? `${c.rationale}; ${p.corrected}` : c.rationale;
  const r: Route = {
    type: c.type,
    transform: p.transform,
    relation: p.relation,
    backend: a.backend,
    model: a.model,
    promptVersion: a.promptVersion,
    rationale,
    confidence: c.confidence,
  };
  if (c.axis) r.axis = c.axis;
  if (a.fallback) r.fallback = a.fallback;
  return r;
}

let rulesBackend: RouterBackend | undefined;

/**
 * Routes one record synchronously with the rules backend (the trainer's path): returns the
 * `route` object. Other backends need I/O: use routeRecords.
 */
export function routeRecord(record: RouterQuestion, options: { backend?: 'rules'; seed?: number } = {}): Route {
  checkQuestion(record, 'record');
  const backend = options.backend ?? 'rules';
  if (backend !== 'rules')
    throw new CrpoError(
      'ERR_CRPO_SYNC_BACKEND',
      `routeRecord is synchronous and only runs the 'rules' backend, not '${String(backend)}'; use routeRecords for it`,
    );
  const seed = options.seed ?? 0;
  if (!Number.isInteger(seed)) throw invalidArg('seed', 'an integer', seed, 'routeRecord');
  rulesBackend ??= routerBackends.get('rules')(DEFAULT_ROUTER_CONFIG);
  return toRoute(rulesBackend.classifySync!(record), record, seed);
}

export interface RouteStats {
  records: number;
  /** Answers per backend that produced them (rules, llm, hybrid:rules, hybrid:llm). */
  byBackend: Record<string, number>;
  byType: Record<string, number>;
  byTransform: Record<string, number>;
  /** LLM answers taken from the cache. */
  cached: number;
  /** LLM requests sent in this run. */
  requests: number;
  /** Records whose LLM answer was invalid and replaced by the rules answer. */
  fallbacks: number;
  cache?: CacheOpenReport;
}

export interface RouteBatchOptions extends RouterOptions {
  /** An already opened cache (else `cacheFile` is opened and closed by the call). */
  cache?: RouterCache;
  onAnswer?: (done: number, total: number) => void;
}

/** Routes many records with any backend; routes in input order, plus run statistics. */
export async function routeRecords(
  records: readonly RouterQuestion[],
  options: RouteBatchOptions = {},
): Promise<{ routes: Route[]; stats: RouteStats }> {
  if (!Array.isArray(records)) throw invalidArg('records', 'an array of records', records, 'routeRecords');
  records.forEach((r, i) => checkQuestion(r, `records[${i}]`));
  const { cache: givenCache, onAnswer, ...rest } = options;
  const config = resolveRouterConfig(rest);
  const backend = routerBackends.get(config.backend)(config);
  const usesLlm = config.backend !== 'rules';
  let cache = givenCache;
  const ownCache = !cache && usesLlm && config.cacheFile !== null;
  if (ownCache) cache = await RouterCache.open(config.cacheFile!);
  try {
    const answers = await backend.classifyBatch(records, { cache, onAnswer });
    const routes = answers.map((a, i) => toRoute(a, records[i], config.seed));
    const stats: RouteStats = {
      records: records.length,
      byBackend: {},
      byType: {},
      byTransform: {},
      cached: 0,
      requests: 0,
      fallbacks: 0,
      cache: cache?.report,
    };
    answers.forEach((a, i) => {
      stats.byBackend[a.backend] = (stats.byBackend[a.backend] ?? 0) + 1;
      stats.byType[routes[i].type] = (stats.byType[routes[i].type] ?? 0) + 1;
      stats.byTransform[routes[i].transform] = (stats.byTransform[routes[i].transform] ?? 0) + 1;
      if (a.cached) stats.cached++;
      stats.requests += a.requests;
      if (a.fallback) stats.fallbacks++;
    });
    return { routes, stats };
  } finally {
    if (ownCache) await cache!.close();
  }
}

export interface RouteFileResult {
  out: string;
  stats: RouteStats;
  config: RouterConfig;
}

/**
 * Reads DyBench records from `input`, adds `route` to each (the record's own `category` and
 * `transform` are left alone; an existing `route` is replaced), and writes `out` atomically,
 * with the resolved config and statistics in `<out>.meta.json` (the API key is never written).
 */
export async function routeFile(input: string, out: string, options: RouteBatchOptions = {}): Promise<RouteFileResult> {
  if (typeof input !== 'string' || input === '') throw invalidArg('input', 'a path', input, 'routeFile');
  if (typeof out !== 'string' || out === '') throw invalidArg('out', 'a path', out, 'routeFile');
  const loaded = await loadRecords(input, { mode: 'strict', requirePairs: false, resolvePaths: false });
  const config = resolveRouterConfig(options);
  const { routes, stats } = await routeRecords(loaded.records, options);
  // Relative video paths start from the input's folder; rewritten to start from the output's, so
  // that the routed file finds the same videos wherever it is written.
  const from = path.dirname(path.resolve(input)),
    to = path.dirname(path.resolve(out));
  const moved = (v: DyBenchRecord['video']): DyBenchRecord['video'] =>
    typeof v === 'string' && !path.isAbsolute(v) && from !== to ? path.relative(to, path.resolve(from, v)) || '.' : v;
  const text =
    loaded.records
      .map((r: DyBenchRecord, i) => JSON.stringify({ ...r, video: moved(r.video), route: routes[i] }))
      .join('\n') + (loaded.records.length ? '\n' : '');
  await writeFileAtomic(out, text);
  const { apiKey: _omit, ...llmShown } = config.llm;
  void _omit;
  await writeFileAtomic(
    `${out}.meta.json`,
    JSON.stringify({ input, out, config: { ...config, llm: llmShown }, stats, at: new Date().toISOString() }, null, 2) +
      '\n',
  );
  return { out, stats, config };
}
