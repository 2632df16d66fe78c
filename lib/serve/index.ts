/**
 * `crpo serve`: an OpenAI-compatible `/v1/chat/completions` server for a trained checkpoint, so a
 * checkpoint is evaluated through exactly the client path of any served model (lib/eval). The
 * request carries the video as image parts (base64 PNG/JPEG data URLs, frames in temporal order,
 * as lib/eval/openai-model.ts sends them) and the prompt of lib/prompt (question, lettered options,
 * instruction). Bound to 127.0.0.1 by default; optional bearer API key; limits on body size,
 * frames per request and concurrent requests; errors in OpenAI's `{"error": {...}}` shape.
 *
 * What a client sends is fitted to the model, as a VLM processor does, and said in the reply's
 * `crpo.adjusted` field and the request's log line: a native policy gets its training shape (the
 * frames sampled uniformly, each resized to its square size), and `max_tokens` beyond what fits in
 * the model's context (maxSeqLen minus the prompt) is clamped. The model card (`GET /v1/models`)
 * carries `crpo`: the policy kind, the clip shape, the context length and whether the checkpoint
 * was trained with the null option (lib/policy/checkpoint-folder.ts trainingPromptOf), which `crpo eval`
 * follows unless told otherwise. One log line per request: time, method, path, status, ms.
 */
import * as crypto from 'crypto';
import * as http from 'http';
import type { AddressInfo } from 'net';
import * as path from 'path';
import sharp from 'sharp';
import { CrpoError, isUserError } from '../errors';
import { detectModelFolder } from '../hf/model-folder';
import { POLICY_KINDS, type Policy, type PolicyPrompt } from '../policy/policy';
import '../policy/linear';
import { NativePolicy } from '../policy/native';
import '../policy/qwen';
import { assertFiniteWeights, trainingPromptOf } from '../policy/checkpoint-folder';
import { uniformIndices } from '../video/sampling';

export interface ServeOptions {
  /** Checkpoint folder (with policy.safetensors) or a run folder (its newest checkpoint is served). */
  checkpoint: string;
  /** Interface to bind (default 127.0.0.1: local only). */
  host?: string;
  /** Port (0 = any free port). */
  port?: number;
  /** When set, requests need `Authorization: Bearer <apiKey>`. */
  apiKey?: string;
  /** Model id reported and accepted (default: the name of the folder given, run or checkpoint). */
  modelName?: string;
  /** Largest request body, bytes (default 32 MiB). */
  maxBodyBytes?: number;
  /** Requests answered at once; more get 429 with Retry-After (default 4). */
  maxConcurrent?: number;
  /** Largest number of image parts per request (default 64). */
  maxFrames?: number;
  /** Largest completions per request (`n`, default 16). */
  maxN?: number;
  /** Largest max_tokens for policies without a context limit of their own; larger requests are clamped (default 4096). */
  maxTokens?: number;
  /** One line per request (time, method, path, status, ms, what was adjusted or the error); default: none. */
  log?: (line: string) => void;
}

export const SERVE_DEFAULTS = {
  host: '127.0.0.1',
  port: 8000,
  maxBodyBytes: 32 * 1024 * 1024,
  maxConcurrent: 4,
  maxFrames: 64,
  maxN: 16,
  maxTokens: 4096,
};

/** Largest decoded image accepted, pixels (a decompression bomb stops here). */
const MAX_IMAGE_PIXELS = 4096 * 4096;
/** Largest decoded frames of one request, bytes (policies that take any clip shape). */
const MAX_DECODED_BYTES = 512 * 1024 * 1024;

/** What `GET /v1/models` says about the model beyond OpenAI's fields (the `crpo` object). */
export interface ModelCard {
  /** Policy kind: 'linear', 'native' or 'qwen'. */
  kind: string;
  /** Whether the checkpoint was trained with the null option shown; null when its folder does not say. */
  null_option: boolean | null;
  /** The file that says so, or null. */
  null_option_source: string | null;
  /** Clip shape the policy was trained on (frames are sampled and resized to it), or null when any shape is taken. */
  frames: number | null;
  image_size: number | null;
  /** Context length (visual + prompt + completion tokens), or null when the policy has none of its own. */
  max_seq_len: number | null;
}

export interface RunningServer {
  url: string;
  port: number;
  modelName: string;
  card: ModelCard;
  close(): Promise<void>;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type = 'invalid_request_error',
    readonly code: string | null = null,
    readonly param: string | null = null,
  ) {
    super(message);
  }
}

/**
 * Loads the policy a folder holds (lib/hf/model-folder detects which): a linear, native or qwen
 * checkpoint, the newest checkpoint of a run folder, or a base Hugging Face Qwen2.5-VL / Qwen3-VL
 * folder (served as the qwen policy without adapters). `where` names the argument in errors.
 */
export async function loadCheckpointPolicy(dir: string, where = 'crpo serve'): Promise<Policy> {
  const m = detectModelFolder(dir, where);
  if (!POLICY_KINDS.has(m.kind))
    throw new CrpoError(
      'ERR_CRPO_CHECKPOINT',
      `${where} ${dir}: policy kind '${m.kind}' (${m.what}) is not available; known: ${POLICY_KINDS.names().join(', ')}`,
      { userError: true },
    );
  // A checkpoint with NaN / infinite weights answers nothing useful: refused with the tensor named.
  assertFiniteWeights(m.init, where);
  return POLICY_KINDS.get(m.kind)({ init: m.init, seed: 0 });
}

/** The model card of a loaded policy (`dir`: the folder given to the server). */
export function modelCard(dir: string, policy: Policy): ModelCard {
  let init = dir;
  try {
    init = detectModelFolder(dir).init;
  } catch {
    /* the policy is loaded already; the folder itself is looked at */
  }
  const prompt = trainingPromptOf(init);
  const native = policy instanceof NativePolicy ? policy.model.config : undefined;
  return {
    kind: policy.kind,
    null_option: prompt ? prompt.nullOption : null,
    null_option_source: prompt ? prompt.source : null,
    frames: native ? native.frames : null,
    image_size: native ? native.imageSize : null,
    max_seq_len: native ? native.maxSeqLen : null,
  };
}

const DATA_URL = /^data:image\/(png|jpeg|jpg|webp);base64,([A-Za-z0-9+/=\s]+)$/;
const OPTION_LINE = /^([A-Z])\.\s+(.+)$/;

/** Splits a lib/prompt prompt into question and options (lines "A. ..." in letter order). */
export function parsePrompt(text: string): { question: string; options: string[] } {
  const lines = text
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  const first = lines.findIndex((l) => OPTION_LINE.test(l));
  if (first < 1)
    throw new HttpError(
      400,
      'the prompt must hold a question followed by lettered options ("A. ...", "B. ..."), as lib/prompt formats it',
      'invalid_request_error',
      null,
      'messages',
    );
  const options: string[] = [];
  for (let i = first; i < lines.length; i++) {
    const m = OPTION_LINE.exec(lines[i]);
    if (!m) break;
    if (m[1].charCodeAt(0) - 65 !== options.length)
      throw new HttpError(
        400,
        `option letters must run A, B, C, ... in order; found '${m[1]}' at position ${options.length + 1}`,
        'invalid_request_error',
        null,
        'messages',
      );
    options.push(m[2]);
  }
  if (options.length < 2)
    throw new HttpError(
      400,
      'the prompt must list at least 2 lettered options',
      'invalid_request_error',
      null,
      'messages',
    );
  return { question: lines.slice(0, first).join(' '), options };
}

interface ChatRequest {
  model?: unknown;
  messages?: unknown;
  n?: unknown;
  temperature?: unknown;
  max_tokens?: unknown;
  max_completion_tokens?: unknown;
  seed?: unknown;
  stream?: unknown;
}

/**
 * Decodes the image parts into uint8 [T, H, W, 3]. With `target` (a policy trained on one clip
 * shape), T frames are picked uniformly from those sent (repeated when fewer were sent) and each
 * is resized to the target's square size; otherwise every frame is kept at the first frame's size.
 * `notes` receives what was changed, in words.
 */
async function decodeFrames(
  urls: string[],
  target: { frames: number; size: number } | undefined,
  notes: string[],
): Promise<{ frames: Uint8Array; shape: [number, number, number, 3] }> {
  const pick = target ? uniformIndices(urls.length, target.frames) : urls.map((_, i) => i);
  const decoded = new Map<number, { raw: Buffer; w: number; h: number }>();
  let W = target?.size ?? 0,
    H = target?.size ?? 0;
  const sizes = new Set<string>();
  let bytes = 0;
  for (const i of pick) {
    if (decoded.has(i)) continue;
    const m = DATA_URL.exec(urls[i]);
    if (!m)
      throw new HttpError(
        400,
        `image part ${i + 1}: expected a base64 data URL (data:image/png;base64,... or image/jpeg); remote URLs are not fetched`,
        'invalid_request_error',
        null,
        'messages',
      );
    try {
      let img = sharp(Buffer.from(m[2], 'base64'), { limitInputPixels: MAX_IMAGE_PIXELS }).removeAlpha();
      const meta = await img.metadata();
      const w = meta.width ?? 0,
        h = meta.height ?? 0;
      sizes.add(`${w}x${h}`);
      if (!target && decoded.size === 0) {
        W = w;
        H = h;
      }
      if (w !== W || h !== H) img = img.resize(W, H, { fit: 'fill', kernel: 'linear' });
      bytes += W * H * 3;
      if (bytes > MAX_DECODED_BYTES) {
        throw new HttpError(
          400,
          `the decoded frames exceed ${MAX_DECODED_BYTES >> 20} MiB; send fewer or smaller ` + `frames`,
          'invalid_request_error',
          null,
          'messages',
        );
      }
      decoded.set(i, { raw: await img.raw().toBuffer(), w, h });
    } catch (err) {
      if (err instanceof HttpError) throw err;
      const msg = (err as Error).message;
      if (/pixel limit/i.test(msg)) {
        throw new HttpError(
          400,
          `image part ${i + 1}: larger than ${MAX_IMAGE_PIXELS} pixels; scale the frames down`,
          'invalid_request_error',
          null,
          'messages',
        );
      }
      throw new HttpError(
        400,
        `image part ${i + 1}: not a decodable image (${msg})`,
        'invalid_request_error',
        null,
        'messages',
      );
    }
  }
  if (target && pick.length !== urls.length) {
    notes.push(
      urls.length > pick.length
        ? `sampled ${pick.length} of ${urls.length} frames uniformly`
        : `repeated frames: ${urls.length} sent, the model takes ${pick.length}`,
    );
  }
  const resized = [...sizes].filter((s) => s !== `${W}x${H}`);
  if (resized.length) notes.push(`resized ${resized.join(', ')} to ${W}x${H}`);
  const per = W * H * 3;
  const frames = new Uint8Array(per * pick.length);
  pick.forEach((i, t) => frames.set(decoded.get(i)!.raw.subarray(0, per), t * per));
  return { frames, shape: [pick.length, H, W, 3] };
}

/** Starts the server; resolves once it listens. */
export async function startServer(o: ServeOptions): Promise<RunningServer> {
  const opt = {
    ...SERVE_DEFAULTS,
    ...Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)),
  } as Required<ServeOptions>;
  for (const k of ['maxBodyBytes', 'maxConcurrent', 'maxFrames', 'maxN', 'maxTokens'] as const) {
    if (!Number.isInteger(opt[k]) || opt[k] < 1)
      throw new CrpoError('ERR_CRPO_INVALID_ARG', `serve: ${k} must be an integer >= 1, got ${opt[k]}`, {
        userError: true,
      });
  }
  if (!Number.isInteger(opt.port) || opt.port < 0 || opt.port > 65535) {
    throw new CrpoError(
      'ERR_CRPO_INVALID_ARG',
      `--port ${opt.port}: expected an integer in [0, 65535] (0 picks a ` + `free port)`,
      { userError: true },
    );
  }
  if (typeof opt.host !== 'string' || opt.host.trim() === '') {
    throw new CrpoError(
      'ERR_CRPO_INVALID_ARG',
      `--host ${JSON.stringify(opt.host)}: expected an interface address ` + `such as 127.0.0.1`,
      { userError: true },
    );
  }
  const log = o.log ?? (() => undefined);
  const policy = await loadCheckpointPolicy(o.checkpoint);
  const card = modelCard(o.checkpoint, policy);
  const native = policy instanceof NativePolicy ? policy.model : undefined;
  const target = native ? { frames: native.config.frames, size: native.config.imageSize } : undefined;
  const modelName = o.modelName ?? path.basename(path.resolve(o.checkpoint));
  let active = 0;
  // The policy runs one request at a time (torch work is serialised anyway); this chains them.
  let chain: Promise<unknown> = Promise.resolve();

  const send = (
    res: http.ServerResponse,
    status: number,
    body: unknown,
    headers: Record<string, string> = {},
  ): void => {
    if (res.headersSent) return;
    const text = JSON.stringify(body);
    res.writeHead(status, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(text),
      ...headers,
    });
    res.end(text);
  };
  const fail = (res: http.ServerResponse, e: HttpError, headers: Record<string, string> = {}): void =>
    send(res, e.status, { error: { message: e.message, type: e.type, param: e.param, code: e.code } }, headers);

  const readBody = (req: http.IncomingMessage): Promise<Buffer> =>
    new Promise((resolve, reject) => {
      const declared = Number(req.headers['content-length'] ?? 0);
      if (declared > opt.maxBodyBytes)
        return reject(
          new HttpError(
            413,
            `request body of ${declared} bytes exceeds the limit of ${opt.maxBodyBytes} bytes`,
            'invalid_request_error',
            'request_too_large',
          ),
        );
      const chunks: Buffer[] = [];
      let size = 0;
      req.on('data', (c: Buffer) => {
        size += c.length;
        if (size > opt.maxBodyBytes) {
          req.removeAllListeners('data');
          reject(
            new HttpError(
              413,
              `request body exceeds the limit of ${opt.maxBodyBytes} bytes`,
              'invalid_request_error',
              'request_too_large',
            ),
          );
          req.resume();
          return;
        }
        chunks.push(c);
      });
      req.on('end', () => resolve(Buffer.concat(chunks)));
      req.on('error', reject);
    });

  /**
   * The completion budget that fits: the native policy's context holds the visual tokens, the
   * prompt and the completion (maxSeqLen); other policies are capped at opt.maxTokens.
   */
  function tokenBudget(requested: number, prompt: string, notes: string[]): number {
    let room = opt.maxTokens,
      why = `the server's limit of ${opt.maxTokens}`;
    if (native) {
      const c = native.config;
      const visual = ((c.frames / c.temporalPatch) * (c.imageSize / c.patchSize) ** 2) / (c.mergeSize * c.mergeSize);
      const text = native.tokenizer.encode(prompt, { bos: true }).length;
      room = c.maxSeqLen - visual - text;
      if (room < 1) {
        throw new HttpError(
          400,
          `the prompt takes ${visual + text} tokens (${visual} visual + ${text} text) of the ` +
            `model's context of ${c.maxSeqLen} (maxSeqLen); shorten the question or options`,
          'invalid_request_error',
          'context_length_exceeded',
          'messages',
        );
      }
      why = `the model's context: maxSeqLen ${c.maxSeqLen} - ${visual + text} prompt tokens`;
    }
    if (requested <= room) return requested;
    notes.push(`max_tokens ${requested} clamped to ${room} (${why})`);
    return room;
  }

  async function complete(body: ChatRequest, notes: string[]): Promise<unknown> {
    if (body.stream === true)
      throw new HttpError(400, 'stream: true is not supported by crpo serve', 'invalid_request_error', null, 'stream');
    if (body.model !== undefined && body.model !== modelName)
      throw new HttpError(
        404,
        `model '${String(body.model)}' is not served here; this server serves '${modelName}'`,
        'invalid_request_error',
        'model_not_found',
        'model',
      );
    if (!Array.isArray(body.messages) || body.messages.length === 0)
      throw new HttpError(400, "'messages' must be a non-empty array", 'invalid_request_error', null, 'messages');
    const n = body.n === undefined ? 1 : body.n;
    if (!Number.isInteger(n) || (n as number) < 1 || (n as number) > opt.maxN)
      throw new HttpError(400, `'n' must be an integer in [1, ${opt.maxN}]`, 'invalid_request_error', null, 'n');
    const temperature = body.temperature === undefined || body.temperature === null ? 1 : body.temperature;
    if (typeof temperature !== 'number' || !(temperature >= 0 && temperature <= 10))
      throw new HttpError(
        400,
        "'temperature' must be a number in [0, 10]",
        'invalid_request_error',
        null,
        'temperature',
      );
    const maxTokens = body.max_completion_tokens ?? body.max_tokens ?? 16;
    if (!Number.isInteger(maxTokens) || (maxTokens as number) < 1) {
      throw new HttpError(
        400,
        `'max_tokens' must be a positive integer, got ${JSON.stringify(maxTokens)}`,
        'invalid_request_error',
        null,
        'max_tokens',
      );
    }
    const seed = body.seed === undefined ? 0 : body.seed;
    if (!Number.isInteger(seed))
      throw new HttpError(400, "'seed' must be an integer", 'invalid_request_error', null, 'seed');
    const images: string[] = [];
    const texts: string[] = [];
    for (const [i, m] of (body.messages as unknown[]).entries()) {
      const msg = m as { role?: unknown; content?: unknown };
      if (typeof msg !== 'object' || msg === null || typeof msg.role !== 'string')
        throw new HttpError(
          400,
          `messages[${i}] must be an object with a 'role'`,
          'invalid_request_error',
          null,
          'messages',
        );
      if (msg.role !== 'user') continue;
      if (typeof msg.content === 'string') texts.push(msg.content);
      else if (Array.isArray(msg.content)) {
        for (const [j, part] of msg.content.entries()) {
          const p = part as { type?: unknown; text?: unknown; image_url?: { url?: unknown } };
          if (p?.type === 'text' && typeof p.text === 'string') texts.push(p.text);
          else if (p?.type === 'image_url' && typeof p.image_url?.url === 'string') images.push(p.image_url.url);
          else
            throw new HttpError(
              400,
              `messages[${i}].content[${j}]: expected a text or image_url part`,
              'invalid_request_error',
              null,
              'messages',
            );
        }
      } else
        throw new HttpError(
          400,
          `messages[${i}].content must be a string or an array of parts`,
          'invalid_request_error',
          null,
          'messages',
        );
    }
    if (images.length === 0)
      throw new HttpError(
        400,
        'no video frames: send the frames as image_url parts (base64 data URLs) in temporal order',
        'invalid_request_error',
        null,
        'messages',
      );
    if (images.length > opt.maxFrames)
      throw new HttpError(
        400,
        `${images.length} image parts exceed the limit of ${opt.maxFrames} frames per request`,
        'invalid_request_error',
        null,
        'messages',
      );
    const prompt = texts[texts.length - 1] ?? '';
    const { question, options } = parsePrompt(prompt);
    const budget = tokenBudget(maxTokens as number, prompt, notes);
    const { frames, shape } = await decodeFrames(images, target, notes);
    const p: PolicyPrompt = { frames, frameShape: shape, question, options, prompt };
    let out;
    try {
      out = await policy.generate([p], {
        samples: n as number,
        temperature: temperature === 0 ? 1 : temperature,
        greedy: temperature === 0,
        maxNewTokens: budget,
        seed: (seed as number) >>> 0,
      });
    } catch (err) {
      // A policy's own check on what the request asked for (a shape, a length) is the client's to fix.
      if (isUserError(err)) throw new HttpError(400, (err as Error).message, 'invalid_request_error');
      throw err;
    }
    const completionTokens = out[0].reduce((a, c) => a + c.tokens.length, 0);
    return {
      id: `chatcmpl-${crypto.randomBytes(12).toString('hex')}`,
      object: 'chat.completion',
      created: Math.floor(Date.now() / 1000),
      model: modelName,
      choices: out[0].map((c, index) => ({
        index,
        message: { role: 'assistant', content: c.text, refusal: null },
        logprobs: null,
        finish_reason: c.tokens.length >= budget ? 'length' : 'stop',
      })),
      usage: {
        prompt_tokens: prompt.split(/\s+/).length + images.length,
        completion_tokens: completionTokens,
        total_tokens: prompt.split(/\s+/).length + images.length + completionTokens,
      },
      // What the server changed to fit the request to the model (empty when nothing).
      crpo: { adjusted: notes, frames: shape.slice(0, 3), max_tokens: budget },
    };
  }

  const modelEntry = { id: modelName, object: 'model', created: 0, owned_by: 'crpo', crpo: card };
  const server = http.createServer((req, res) => {
    const t0 = Date.now();
    const notes: string[] = [];
    let error = '';
    res.on('close', () => {
      const status = res.writableFinished
        ? String(res.statusCode)
        : `${res.headersSent ? res.statusCode : '-'} ` + `(client closed)`;
      const tail = error ? `: ${error}` : notes.length ? `; ${notes.join('; ')}` : '';
      log(
        `${new Date(t0).toISOString()} ${req.method} ${(req.url ?? '').slice(0, 200)} ${status} ` +
          `${Date.now() - t0} ms${tail}`,
      );
    });
    void (async () => {
      try {
        const url = (req.url ?? '').split('?')[0];
        if (opt.apiKey && req.headers.authorization !== `Bearer ${opt.apiKey}`)
          throw new HttpError(
            401,
            'missing or wrong API key (Authorization: Bearer <key>)',
            'invalid_request_error',
            'invalid_api_key',
          );
        if (req.method === 'GET' && url === '/v1/models') return send(res, 200, { object: 'list', data: [modelEntry] });
        if (req.method === 'GET' && url.startsWith('/v1/models/')) {
          if (decodeURIComponent(url.slice('/v1/models/'.length)) === modelName) return send(res, 200, modelEntry);
          throw new HttpError(
            404,
            `model '${url.slice('/v1/models/'.length)}' is not served here; this server ` + `serves '${modelName}'`,
            'invalid_request_error',
            'model_not_found',
            'model',
          );
        }
        if (url !== '/v1/chat/completions')
          throw new HttpError(
            404,
            `no route ${req.method} ${url}; this server answers POST /v1/chat/completions and GET /v1/models`,
            'invalid_request_error',
            'not_found',
          );
        if (req.method !== 'POST') throw new HttpError(405, `${req.method} is not allowed on ${url}; use POST`);
        if (active >= opt.maxConcurrent)
          throw new HttpError(
            429,
            `too many requests in flight (limit ${opt.maxConcurrent}); retry shortly`,
            'rate_limit_error',
            'rate_limit_exceeded',
          );
        active++;
        try {
          const raw = await readBody(req);
          let body: ChatRequest;
          try {
            body = JSON.parse(raw.toString('utf8')) as ChatRequest;
          } catch (err) {
            throw new HttpError(400, `request body is not valid JSON (${(err as Error).message})`);
          }
          if (typeof body !== 'object' || body === null || Array.isArray(body))
            throw new HttpError(400, 'request body must be a JSON object');
          const job = chain.then(() => complete(body, notes));
          chain = job.catch(() => undefined);
          send(res, 200, await job);
        } finally {
          active--;
        }
      } catch (err) {
        const e =
          err instanceof HttpError
            ? err
            : new HttpError(500, `internal error: ` + `${(err as Error)?.message ?? String(err)}`, 'server_error');
        error = e.message;
        fail(res, e, e.status === 429 ? { 'retry-after': '1' } : {});
      }
    })();
  });
  const sockets = new Set<import('net').Socket>();
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  // A malformed request line or headers: answered 400 by Node; logged here.
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    log(`${new Date().toISOString()} - - 400 0 ms: malformed HTTP request (${err.code ?? err.message})`);
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
    else socket.destroy();
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(opt.port, opt.host, () => resolve());
    });
  } catch (err) {
    policy.dispose();
    throw listenError(err as NodeJS.ErrnoException, opt.host, opt.port);
  }
  const port = (server.address() as AddressInfo).port;
  const host = opt.host.includes(':') ? `[${opt.host}]` : opt.host;
  return {
    url: `http://${host}:${port}/v1`,
    port,
    modelName,
    card,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => {
          policy.dispose();
          resolve();
        });
      }),
  };
}

/** A failed listen as one user error naming --host / --port and the fix. */
function listenError(err: NodeJS.ErrnoException, host: string, port: number): CrpoError {
  const at = `${host}:${port}`;
  switch (err.code) {
    case 'EADDRINUSE':
      return new CrpoError(
        'ERR_CRPO_SERVE_LISTEN',
        `--port ${port}: ${at} is already in use (another server?); ` +
          `stop it or pick another --port (0 picks a free one)`,
        { cause: err },
      );
    case 'EACCES':
      return new CrpoError(
        'ERR_CRPO_SERVE_LISTEN',
        `--port ${port}: not allowed to listen on ${at} (ports below ` + `1024 need privileges); pick a port >= 1024`,
        { cause: err },
      );
    case 'EADDRNOTAVAIL':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'EINVAL':
      return new CrpoError(
        'ERR_CRPO_SERVE_LISTEN',
        `--host ${host}: not an address of this machine (${err.code}); ` +
          `use 127.0.0.1 (local only) or 0.0.0.0 (all interfaces)`,
        { cause: err },
      );
    default:
      return new CrpoError('ERR_CRPO_SERVE_LISTEN', `could not listen on ${at}: ${err.message}`, { cause: err });
  }
}
