/**
 * An AnswerModel over any OpenAI-compatible chat-completions endpoint (vLLM, SGLang, OpenAI,
 * Gemini's OpenAI layer, ...) through the official `openai` client. The frames go as base64 JPEG
 * image parts, in temporal order, before the prompt text: the server sees separate images, so a
 * model that uses video position encodings gets none (docs/evaluation.md says so). Retries are
 * our own (the client's are switched off) so that they are explicit and tested: exponential
 * backoff with jitter on 408/409/429/5xx, connection errors, timeouts and unreadable bodies,
 * honouring Retry-After; 401/403/404 stop the run; other 4xx fail the sample.
 */
import OpenAI from 'openai';
import sharp from 'sharp';
import { CrpoError, invalidArg, outOfRange } from '../errors';
import {
  MODEL_KINDS,
  type AnswerModel,
  type AnswerRequest,
  type AnswerResponse,
  type ModelSpec,
  type PromptDefaults,
} from './model';
import { seededRandom } from '../random';

export interface OpenAIModelOptions {
  /** Served model id (the `model` field of the request). */
  model: string;
  /** Base URL ending in /v1, e.g. http://localhost:8000/v1. */
  baseURL: string;
  /** API key; servers without auth accept any string (default 'EMPTY'). */
  apiKey?: string;
  /** Per-attempt timeout, ms (default 120000). */
  timeoutMs?: number;
  /** Retries after the first attempt (default 5). */
  maxRetries?: number;
  /** First backoff delay, ms; doubles each retry (default 1000). */
  backoffBaseMs?: number;
  /** Largest backoff delay, ms (default 30000); a Retry-After up to 60 s is honoured beyond it. */
  backoffMaxMs?: number;
  /** max_tokens of the completion (default 1024: room for reasoning before the answer tag). */
  maxTokens?: number;
  /** Sampling temperature (default 0: greedy). */
  temperature?: number;
  /** JPEG quality of the frames (default 90). */
  jpegQuality?: number;
  /** image_url detail hint ('low' | 'high' | 'auto'; default: not sent). */
  imageDetail?: 'low' | 'high' | 'auto';
  /** Optional system message. */
  systemPrompt?: string;
  /** Seed of the backoff jitter (default 0). */
  seed?: number;
}

export const OPENAI_MODEL_DEFAULTS = {
  apiKey: 'EMPTY',
  timeoutMs: 120_000,
  maxRetries: 5,
  backoffBaseMs: 1000,
  backoffMaxMs: 30_000,
  maxTokens: 1024,
  temperature: 0,
  jpegQuality: 90,
  seed: 0,
} as const;

const RETRY_AFTER_CAP_MS = 60_000;

/** Encodes [T,H,W,3] uint8 frames as base64 JPEGs (one per frame, in order). */
export async function encodeFramesJpeg(frames: Uint8Array, shape: readonly number[], quality = 90): Promise<string[]> {
  if (
    !(frames instanceof Uint8Array) &&
    !(ArrayBuffer.isView(frames) && (frames as { BYTES_PER_ELEMENT?: number }).BYTES_PER_ELEMENT === 1)
  ) {
    throw invalidArg('frames', 'a Uint8Array', frames, 'encodeFramesJpeg');
  }
  if (
    !Array.isArray(shape) ||
    shape.length !== 4 ||
    shape[3] !== 3 ||
    !shape.every((d) => Number.isInteger(d) && d > 0)
  ) {
    throw invalidArg('frameShape', 'a shape [T, H, W, 3] of positive integers', shape, 'encodeFramesJpeg');
  }
  const [T, H, W] = shape;
  if (frames.length !== T * H * W * 3)
    throw outOfRange(
      'frames.length',
      `T*H*W*3 = ${T * H * W * 3} for shape [${shape.join(', ')}]`,
      frames.length,
      'encodeFramesJpeg',
    );
  const per = H * W * 3;
  const out: string[] = [];
  for (let t = 0; t < T; t++) {
    const view = Buffer.from(frames.buffer, frames.byteOffset + t * per, per);
    const jpg = await sharp(view, { raw: { width: W, height: H, channels: 3 } })
      .jpeg({ quality })
      .toBuffer();
    out.push(jpg.toString('base64'));
  }
  return out;
}

/** The chat messages for one request: frames as image parts, then the prompt. */
export async function buildMessages(
  req: AnswerRequest,
  o: Pick<OpenAIModelOptions, 'jpegQuality' | 'imageDetail' | 'systemPrompt'> = {},
): Promise<OpenAI.Chat.Completions.ChatCompletionMessageParam[]> {
  const images = await encodeFramesJpeg(req.frames, req.frameShape, o.jpegQuality ?? OPENAI_MODEL_DEFAULTS.jpegQuality);
  const T = req.frameShape[0];
  const content: OpenAI.Chat.Completions.ChatCompletionContentPart[] = [
    { type: 'text', text: `The video, as ${T} frames in temporal order:` },
    ...images.map((b64): OpenAI.Chat.Completions.ChatCompletionContentPartImage => ({
      type: 'image_url',
      image_url: { url: `data:image/jpeg;base64,${b64}`, ...(o.imageDetail ? { detail: o.imageDetail } : {}) },
    })),
    { type: 'text', text: req.prompt },
  ];
  const messages: OpenAI.Chat.Completions.ChatCompletionMessageParam[] = [];
  if (o.systemPrompt) messages.push({ role: 'system', content: o.systemPrompt });
  messages.push({ role: 'user', content });
  return messages;
}

/** How a failed attempt is handled. */
export type FailureClass = 'retry' | 'fail-sample' | 'fatal';

interface ClassifiedError {
  kind: FailureClass;
  message: string;
  /** Server-requested delay, ms. */
  retryAfterMs?: number;
}

function header(headers: unknown, name: string): string | null {
  if (headers && typeof (headers as Headers).get === 'function') return (headers as Headers).get(name);
  return null;
}

/** Sorts an error thrown by the client (or by our own body checks) into retry / fail-sample / fatal. */
export function classifyError(err: unknown): ClassifiedError {
  const e = err as { status?: unknown; name?: string; message?: string; headers?: unknown };
  const msg = e?.message ?? String(err);
  if (err instanceof MalformedResponseError) return { kind: 'retry', message: msg };
  if (typeof e?.status === 'number') {
    const status = e.status;
    let retryAfterMs: number | undefined;
    const ms = header(e.headers, 'retry-after-ms');
    const s = header(e.headers, 'retry-after');
    if (ms && Number.isFinite(Number(ms))) retryAfterMs = Number(ms);
    else if (s && Number.isFinite(Number(s))) retryAfterMs = Number(s) * 1000;
    if (status === 408 || status === 409 || status === 429 || status >= 500)
      return { kind: 'retry', message: `HTTP ${status}: ${msg}`, retryAfterMs };
    if (status === 401 || status === 403 || status === 404) return { kind: 'fatal', message: `HTTP ${status}: ${msg}` };
    return { kind: 'fail-sample', message: `HTTP ${status}: ${msg}` };
  }
  // No status: connection errors, timeouts, and bodies the client could not read as JSON.
  if (
    err instanceof OpenAI.APIConnectionError ||
    e?.name === 'APIConnectionError' ||
    e?.name === 'APIConnectionTimeoutError'
  ) {
    return {
      kind: 'retry',
      message: `${e.name === 'APIConnectionTimeoutError' || /timed? ?out/i.test(msg) ? 'timeout' : 'connection error'}: ${msg}`,
    };
  }
  if (err instanceof SyntaxError || e?.name === 'SyntaxError')
    return { kind: 'retry', message: `malformed response body: ${msg}` };
  if (err instanceof OpenAI.APIUserAbortError) return { kind: 'fatal', message: msg };
  return { kind: 'fail-sample', message: msg };
}

/** A 200 response whose body is not a chat completion with a text message. */
export class MalformedResponseError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MalformedResponseError';
  }
}

/** The text of the first choice, or a MalformedResponseError. */
export function completionText(body: unknown): string {
  const b = body as { choices?: { message?: { content?: unknown } }[] } | null;
  if (!b || typeof b !== 'object' || !Array.isArray(b.choices) || b.choices.length === 0) {
    throw new MalformedResponseError(`malformed response body: no choices (${JSON.stringify(body)?.slice(0, 120)})`);
  }
  const content = b.choices[0]?.message?.content;
  if (typeof content === 'string') return content;
  if (content === null || content === undefined) return ''; // an empty answer: parsed as invalid, not retried
  if (Array.isArray(content))
    return content
      .map((p) =>
        typeof p === 'object' && p && typeof (p as { text?: unknown }).text === 'string'
          ? (p as { text: string }).text
          : '',
      )
      .join('');
  throw new MalformedResponseError(`malformed response body: message.content is ${typeof content}`);
}

/** Separate reasoning text some servers return (`reasoning_content`: vLLM, DeepSeek; `reasoning`: others). */
export function reasoningText(body: unknown): string | undefined {
  const m = (body as { choices?: { message?: { reasoning_content?: unknown; reasoning?: unknown } }[] } | null)
    ?.choices?.[0]?.message;
  const r = m?.reasoning_content ?? m?.reasoning;
  return typeof r === 'string' ? r : undefined;
}

/** Backoff before retry `n` (1-based): base * 2^(n-1), capped, with jitter in [0.5, 1]. */
export function backoffDelay(
  n: number,
  baseMs: number,
  maxMs: number,
  rand: () => number,
  retryAfterMs?: number,
): number {
  const exp = Math.min(maxMs, baseMs * 2 ** (n - 1));
  const jittered = exp * (0.5 + 0.5 * rand());
  return retryAfterMs !== undefined ? Math.max(jittered, Math.min(retryAfterMs, RETRY_AFTER_CAP_MS)) : jittered;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class OpenAIAnswerModel implements AnswerModel {
  readonly name: string;
  private readonly client: OpenAI;
  private readonly o: Required<Omit<OpenAIModelOptions, 'imageDetail' | 'systemPrompt'>> &
    Pick<OpenAIModelOptions, 'imageDetail' | 'systemPrompt'>;
  private readonly rand: () => number;
  /** Set by a fatal error: every later request fails fast with it. */
  private fatal?: CrpoError;

  constructor(options: OpenAIModelOptions) {
    if (typeof options?.model !== 'string' || options.model === '')
      throw invalidArg(
        'model',
        'a served model name (--model or CRPO_EVAL_MODEL)',
        options?.model,
        'OpenAIAnswerModel',
      );
    if (typeof options.baseURL !== 'string' || !/^https?:\/\//.test(options.baseURL)) {
      throw invalidArg(
        'baseURL',
        'an http(s) URL such as http://localhost:8000/v1 (--base-url, CRPO_EVAL_BASE_URL or OPENAI_BASE_URL)',
        options.baseURL,
        'OpenAIAnswerModel',
      );
    }
    const o = {
      ...OPENAI_MODEL_DEFAULTS,
      ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)),
    } as OpenAIAnswerModel['o'];
    for (const k of ['timeoutMs', 'backoffBaseMs', 'backoffMaxMs', 'maxTokens'] as const) {
      if (!(Number.isFinite(o[k]) && o[k] > 0)) throw outOfRange(k, 'a positive number', o[k], 'OpenAIAnswerModel');
    }
    if (!Number.isInteger(o.maxRetries) || o.maxRetries < 0)
      throw outOfRange('maxRetries', 'a non-negative integer', o.maxRetries, 'OpenAIAnswerModel');
    if (!(o.jpegQuality >= 1 && o.jpegQuality <= 100))
      throw outOfRange('jpegQuality', 'an integer in [1, 100]', o.jpegQuality, 'OpenAIAnswerModel');
    this.o = o;
    this.name = o.model;
    this.rand = seededJitter(o.seed);
    this.client = new OpenAI({ baseURL: o.baseURL, apiKey: o.apiKey, timeout: o.timeoutMs, maxRetries: 0 });
  }

  async answer(requests: AnswerRequest[]): Promise<AnswerResponse[]> {
    return Promise.all(requests.map((r) => this.answerOne(r)));
  }

  private async answerOne(req: AnswerRequest): Promise<AnswerResponse> {
    const messages = await buildMessages(req, this.o);
    const start = Date.now();
    let last = '';
    let attempts = 0;
    for (let attempt = 1; attempt <= this.o.maxRetries + 1; attempt++) {
      if (this.fatal) throw this.fatal;
      attempts = attempt;
      try {
        const body = await this.client.chat.completions.create({
          model: this.o.model,
          messages,
          max_tokens: this.o.maxTokens,
          temperature: this.o.temperature,
        });
        const reasoning = reasoningText(body);
        return {
          raw: completionText(body),
          latencyMs: Date.now() - start,
          attempts: attempt,
          ...(reasoning !== undefined ? { reasoning } : {}),
        };
      } catch (err) {
        const c = classifyError(err);
        last = c.message;
        if (c.kind === 'fatal') {
          this.fatal ??= new CrpoError(
            'ERR_CRPO_EVAL_ENDPOINT',
            `the endpoint ${this.o.baseURL} refused the request for model '${this.o.model}': ${c.message}`,
            { op: 'eval', cause: err },
          );
          throw this.fatal;
        }
        if (c.kind === 'fail-sample' || attempt > this.o.maxRetries) break;
        await sleep(backoffDelay(attempt, this.o.backoffBaseMs, this.o.backoffMaxMs, this.rand, c.retryAfterMs));
      }
    }
    return { raw: '', latencyMs: Date.now() - start, error: last, attempts };
  }

  /**
   * The null option the served model was trained with, when its model card says (`crpo serve`
   * puts `crpo.null_option` in GET /v1/models); other servers say nothing, and a card that cannot
   * be read is no error (the evaluation itself reports an unreachable endpoint).
   */
  async promptDefaults(): Promise<PromptDefaults> {
    try {
      const list = await this.client.models.list({ timeout: Math.min(this.o.timeoutMs, 10_000) });
      const entry = list.data.find((m) => m.id === this.o.model) as { crpo?: { null_option?: unknown } } | undefined;
      const n = entry?.crpo?.null_option;
      return typeof n === 'boolean'
        ? { nullOption: n, source: `the model card of '${this.o.model}' at ` + `${this.o.baseURL}/models` }
        : {};
    } catch {
      return {};
    }
  }

  async close(): Promise<void> {
    /* the client holds no resources beyond keep-alive sockets, which close on their own */
  }
}

/** Retry jitter: mulberry32 on a stream of its own (the salt keeps it apart from bootstrap draws). */
function seededJitter(seed: number): () => number {
  return seededRandom(((seed >>> 0) ^ 0x5bd1e995) >>> 0);
}

MODEL_KINDS.register('openai', (spec: ModelSpec) => new OpenAIAnswerModel(spec as unknown as OpenAIModelOptions));
