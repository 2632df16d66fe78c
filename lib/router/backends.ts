/**
 * Router backends, registered by name (style rule 8): `rules` (offline, deterministic, the
 * default), `llm` (an OpenAI-compatible reasoning model, cached) and `hybrid` (rules first, the
 * LLM only where the rules are less confident than `hybridThreshold`). A backend classifies; the
 * policy table (policy.ts) then picks the transform, so every backend obeys the same policy.
 */
import { Registry } from '../registry';
import { cacheKey, type RouterCache } from './cache';
import { DEFAULT_LLM_CONFIG, LlmRouterClient, mapBounded, type LlmConfig } from './llm';
import { classifyByRules, RULES_VERSION, staticPreference } from './rules';
import type { Classification, RouterQuestion } from './types';

/** Settings of the router; every field has its default in DEFAULT_ROUTER_CONFIG. */
export interface RouterConfig {
  /** Backend name: 'rules' | 'llm' | 'hybrid' (see routerBackends.names()). */
  backend: string;
  /** Seed of the static-question choice between hflip and reverse. */
  seed: number;
  /** Hybrid: rules answers with confidence below this go to the LLM. */
  hybridThreshold: number;
  /** Answer cache (JSONL) for the LLM; null disables it. */
  cacheFile: string | null;
  /** Ask the LLM again for cached answers that were rules fallbacks after invalid replies. */
  reaskFallbacks: boolean;
  llm: LlmConfig;
}

export const DEFAULT_ROUTER_CONFIG: RouterConfig = {
  backend: 'rules',
  seed: 0,
  hybridThreshold: 0.7,
  cacheFile: '.crpo-cache/router.jsonl',
  reaskFallbacks: false,
  llm: DEFAULT_LLM_CONFIG,
};

/** One backend answer before the policy: the classification and where it came from. */
export interface BackendAnswer {
  classification: Classification;
  /** 'rules' or 'llm' (hybrid answers say which one answered). */
  backend: string;
  model: string;
  promptVersion: string;
  fallback?: string;
  /** True when the answer came from the cache. */
  cached: boolean;
  /** Requests sent for this answer in this run. */
  requests: number;
}

export interface BatchContext {
  cache?: RouterCache;
  /** Called after each answered question (cached or asked). */
  onAnswer?: (done: number, total: number) => void;
}

export interface RouterBackend {
  readonly name: string;
  /** Classifies every item; answers in input order. */
  classifyBatch(items: readonly RouterQuestion[], ctx: BatchContext): Promise<BackendAnswer[]>;
  /** Synchronous variant, only for backends that need no I/O. */
  classifySync?(item: RouterQuestion): BackendAnswer;
}

export type RouterBackendFactory = (config: RouterConfig) => RouterBackend;

export const routerBackends = new Registry<RouterBackendFactory>('router backend');

function rulesAnswer(item: RouterQuestion): BackendAnswer {
  return {
    classification: classifyByRules(item.question, item.options),
    backend: 'rules',
    model: RULES_VERSION,
    promptVersion: RULES_VERSION,
    cached: false,
    requests: 0,
  };
}

class RulesBackend implements RouterBackend {
  readonly name = 'rules';
  classifySync(item: RouterQuestion): BackendAnswer {
    return rulesAnswer(item);
  }
  async classifyBatch(items: readonly RouterQuestion[], ctx: BatchContext): Promise<BackendAnswer[]> {
    const out = items.map((it) => rulesAnswer(it));
    ctx.onAnswer?.(items.length, items.length);
    return out;
  }
}

class LlmBackend implements RouterBackend {
  readonly name = 'llm';
  private readonly client: LlmRouterClient;
  private readonly reaskFallbacks: boolean;
  constructor(config: RouterConfig) {
    this.client = new LlmRouterClient(config.llm);
    this.reaskFallbacks = config.reaskFallbacks;
  }

  async classifyBatch(items: readonly RouterQuestion[], ctx: BatchContext): Promise<BackendAnswer[]> {
    const model = this.client.config.model;
    const pv = this.client.promptVersion;
    // The same question (and options) is asked once per run, and never again once cached.
    const keys = items.map((it) => cacheKey(it.question, it.options, 'llm', model, pv));
    const firstOf = new Map<string, number>();
    keys.forEach((k, i) => firstOf.has(k) || firstOf.set(k, i));
    const answers = new Map<string, BackendAnswer>();
    const toAsk: number[] = [];
    for (const [k, i] of firstOf) {
      const hit = ctx.cache?.get(k);
      if (hit && !(hit.fallback && this.reaskFallbacks))
        answers.set(k, {
          classification: hit.classification,
          backend: 'llm',
          model,
          promptVersion: pv,
          fallback: hit.fallback,
          cached: true,
          requests: 0,
        });
      else toAsk.push(i);
    }
    let done = answers.size;
    ctx.onAnswer?.(done, firstOf.size);
    await mapBounded(toAsk, this.client.config.concurrency, async (i) => {
      const it = items[i];
      const r = await this.client.classify(it.question, it.options);
      let a: BackendAnswer;
      if (r.classification) {
        let c = r.classification;
        if (c.type === 'static') {
          // The static hflip/reverse choice follows the same text and wording rules as the rules backend.
          const pref = staticPreference(it.question, it.options);
          c = { ...c, text: c.text || pref.text, prefer: c.text || pref.text ? 'reverse' : pref.prefer };
        }
        a = { classification: c, backend: 'llm', model, promptVersion: pv, cached: false, requests: r.requests };
      } else {
        // Every reply invalid: the rules answer, flagged, so it can be found and re-asked later.
        const rules = classifyByRules(it.question, it.options);
        a = {
          classification: { ...rules, rationale: `rules fallback (${rules.rationale})` },
          backend: 'llm',
          model,
          promptVersion: pv,
          fallback: `invalid LLM reply after ${r.requests} request(s): ${r.invalid[r.invalid.length - 1]}`,
          cached: false,
          requests: r.requests,
        };
      }
      await ctx.cache?.put({
        key: keys[i],
        backend: 'llm',
        model,
        promptVersion: pv,
        classification: a.classification,
        fallback: a.fallback,
        requests: r.requests,
        at: new Date().toISOString(),
      });
      answers.set(keys[i], a);
      ctx.onAnswer?.(++done, firstOf.size);
    });
    return keys.map((k, i) => {
      const a = answers.get(k)!;
      return firstOf.get(k) === i ? a : { ...a, cached: true, requests: 0 };
    });
  }
}

class HybridBackend implements RouterBackend {
  readonly name = 'hybrid';
  private readonly llm: LlmBackend;
  constructor(private readonly config: RouterConfig) {
    this.llm = new LlmBackend(config);
  }
  async classifyBatch(items: readonly RouterQuestion[], ctx: BatchContext): Promise<BackendAnswer[]> {
    const rules = items.map((it) => rulesAnswer(it));
    const unsure = rules
      .map((r, i) => (r.classification.confidence < this.config.hybridThreshold ? i : -1))
      .filter((i) => i >= 0);
    const llm = await this.llm.classifyBatch(
      unsure.map((i) => items[i]),
      ctx,
    );
    const out = rules.map((r) => ({ ...r, backend: 'hybrid:rules' }));
    unsure.forEach((i, j) => {
      out[i] = {
        ...llm[j],
        backend: 'hybrid:llm',
        classification: {
          ...llm[j].classification,
          rationale: `rules confidence ${rules[i].classification.confidence} < ${this.config.hybridThreshold}; ${llm[j].classification.rationale}`,
        },
      };
    });
    return out;
  }
}

routerBackends.register('rules', () => new RulesBackend());
routerBackends.register('llm', (c) => new LlmBackend(c));
routerBackends.register('hybrid', (c) => new HybridBackend(c));
