/**
 * The LLM backend of the Task Router (crpo-method.md section 2: the paper routes with a text-only
 * reasoning model, DeepSeek-R1). Talks to any OpenAI-compatible chat endpoint (DeepSeek's API, a
 * local vLLM or Ollama server) through the official `openai` client, with its own retry policy:
 * exponential backoff with jitter on 429, 5xx, timeouts and dropped connections (honouring
 * Retry-After), an immediate error on other 4xx (a wrong key or model is not transient), and up to
 * `maxInvalidRetries` re-asks when the reply holds no valid JSON answer.
 */
import OpenAI from 'openai';
import { CrpoError } from '../errors';
import { parseRouterReply, PROMPT_VERSION, RETRY_NOTE, routerMessages } from './prompt';
import type { Classification } from './types';

/** Settings of the LLM backend; every field has its default in DEFAULT_LLM_CONFIG. */
export interface LlmConfig {
  /** Base URL of the OpenAI-compatible API, e.g. https://api.deepseek.com/v1 or http://127.0.0.1:8000/v1. Env OPENAI_BASE_URL. */
  baseURL: string;
  /** API key; env CRPO_ROUTER_API_KEY, then OPENAI_API_KEY; local servers accept any string. Never written to disk. */
  apiKey: string;
  /** Model name sent with each request. */
  model: string;
  /** Requests in flight at once. */
  concurrency: number;
  /** Re-asks after a reply without a valid JSON answer, before the rules answer is used (flagged). */
  maxInvalidRetries: number;
  /** Retries of one request after 429, 5xx, a timeout or a dropped connection; then the run stops. */
  maxTransportRetries: number;
  /** Per-request timeout in ms (reasoning models are slow: default 120 s). */
  timeoutMs: number;
  /** First backoff delay in ms; doubles each retry, with jitter in [0.5, 1]. */
  backoffBaseMs: number;
  /** Upper bound of one backoff delay (and of an honoured Retry-After) in ms. */
  backoffMaxMs: number;
  /** Sampling temperature (0: as deterministic as the server allows). */
  temperature: number;
  /** Max completion tokens; reasoning models need room for their reasoning. */
  maxTokens: number;
}

export const DEFAULT_LLM_CONFIG: LlmConfig = {
  baseURL: 'https://api.deepseek.com/v1',
  apiKey: '',
  model: 'deepseek-reasoner',
  concurrency: 4,
  maxInvalidRetries: 2,
  maxTransportRetries: 6,
  timeoutMs: 120_000,
  backoffBaseMs: 1000,
  backoffMaxMs: 60_000,
  temperature: 0,
  maxTokens: 4096,
};

export interface LlmAnswer {
  /** Undefined when every reply was invalid (the caller uses the rules answer and flags it). */
  classification?: Classification;
  /** Requests spent (transport retries and re-asks included). */
  requests: number;
  /** Why each invalid reply was rejected. */
  invalid: string[];
}

type Sleep = (ms: number) => Promise<void>;
const realSleep: Sleep = (ms) => new Promise((r) => setTimeout(r, ms));

interface ErrorLike {
  status?: number;
  headers?: { get?: (k: string) => string | null } | Record<string, string>;
  name?: string;
  message?: string;
}

/** 'retry' for transient failures (429, 5xx, timeouts, connection trouble), 'fatal' otherwise. */
export function classifyTransportError(err: unknown): 'retry' | 'fatal' {
  const e = err as ErrorLike;
  if (typeof e?.status === 'number') return e.status === 429 || e.status === 408 || e.status >= 500 ? 'retry' : 'fatal';
  if (err instanceof OpenAI.APIConnectionError) return 'retry';
  // A 200 with a body that is not JSON, or a reset socket, surfaces as a plain error: transient.
  return 'retry';
}

function retryAfterMs(err: unknown): number | undefined {
  const h = (err as ErrorLike)?.headers;
  if (!h) return undefined;
  const raw =
    typeof (h as { get?: unknown }).get === 'function'
      ? (h as { get: (k: string) => string | null }).get('retry-after')
      : (h as Record<string, string>)['retry-after'];
  if (!raw) return undefined;
  const s = Number(raw);
  if (Number.isFinite(s) && s >= 0) return s * 1000;
  const t = Date.parse(raw);
  return Number.isFinite(t) ? Math.max(0, t - Date.now()) : undefined;
}

/** The delay before retry `attempt` (0-based): base * 2^attempt, capped, times a jitter in [0.5, 1]. */
export function backoffDelay(
  attempt: number,
  cfg: Pick<LlmConfig, 'backoffBaseMs' | 'backoffMaxMs'>,
  random: () => number = Math.random,
): number {
  const d = Math.min(cfg.backoffMaxMs, cfg.backoffBaseMs * 2 ** attempt);
  return Math.round(d * (0.5 + 0.5 * random()));
}

export class LlmRouterClient {
  readonly promptVersion = PROMPT_VERSION;
  private readonly client: OpenAI;

  constructor(
    readonly config: LlmConfig,
    private readonly sleep: Sleep = realSleep,
  ) {
    // The client's own retries are off: this class owns the policy (and counts the requests).
    this.client = new OpenAI({
      baseURL: config.baseURL,
      apiKey: config.apiKey || 'none',
      maxRetries: 0,
      timeout: config.timeoutMs,
    });
  }

  /** One chat completion with transport retries; returns the reply text (content only). */
  private async complete(
    question: string,
    options: readonly string[],
    retryNote: string | undefined,
    count: { n: number },
  ): Promise<string> {
    let attempt = 0;
    for (;;) {
      count.n++;
      try {
        const res = await this.client.chat.completions.create({
          model: this.config.model,
          messages: routerMessages(question, options, retryNote),
          temperature: this.config.temperature,
          max_tokens: this.config.maxTokens,
        });
        // reasoning_content (DeepSeek, vLLM reasoning parsers) is deliberately not read.
        const content = res?.choices?.[0]?.message?.content;
        return typeof content === 'string' ? content : '';
      } catch (err) {
        const kind = classifyTransportError(err);
        const e = err as ErrorLike;
        const what = typeof e?.status === 'number' ? `HTTP ${e.status}` : (e?.name ?? 'error');
        if (kind === 'fatal') {
          throw new CrpoError(
            'ERR_CRPO_LLM_REQUEST',
            `LLM router request to ${this.config.baseURL} (model ${this.config.model}) failed with ${what}: ${e?.message ?? String(err)}`,
            { cause: err },
          );
        }
        if (attempt >= this.config.maxTransportRetries) {
          throw new CrpoError(
            'ERR_CRPO_LLM_UNAVAILABLE',
            `LLM router endpoint ${this.config.baseURL} still failing after ${attempt + 1} attempts (last: ${what}: ${e?.message ?? String(err)}); answers so far are cached, rerun to resume`,
            { cause: err },
          );
        }
        const wait = Math.min(
          this.config.backoffMaxMs,
          Math.max(backoffDelay(attempt, this.config), retryAfterMs(err) ?? 0),
        );
        attempt++;
        await this.sleep(wait);
      }
    }
  }

  /** Asks for one question; re-asks on invalid replies up to maxInvalidRetries times. */
  async classify(question: string, options: readonly string[]): Promise<LlmAnswer> {
    const count = { n: 0 };
    const invalid: string[] = [];
    for (let ask = 0; ask <= this.config.maxInvalidRetries; ask++) {
      const reply = await this.complete(question, options, ask === 0 ? undefined : RETRY_NOTE, count);
      const parsed = parseRouterReply(reply);
      if (parsed.ok) return { classification: parsed.classification, requests: count.n, invalid };
      invalid.push(parsed.reason);
    }
    return { requests: count.n, invalid };
  }
}

/**
 * Runs `fn` over `items` with at most `limit` in flight. The first error stops new work; the
 * ones in flight finish (their results are kept by their own side effects, e.g. the cache), then
 * the error is thrown.
 */
export async function mapBounded<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  let failed: { err: unknown } | undefined;
  const worker = async (): Promise<void> => {
    while (!failed && next < items.length) {
      const i = next++;
      try {
        out[i] = await fn(items[i], i);
      } catch (err) {
        if (!failed) failed = { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  if (failed) throw failed.err;
  return out;
}
