/**
 * `crpo serve`: an OpenAI-compatible `/v1/chat/completions` server for a trained checkpoint, so a
 * checkpoint is evaluated through exactly the client path of any served model (lib/eval). The
 * request carries the video as image parts (base64 PNG/JPEG data URLs, frames in temporal order,
 * as lib/eval/openai-model.ts sends them) and the prompt of lib/prompt (question, lettered options,
 * instruction). Bound to 127.0.0.1 by default; optional bearer API key; limits on body size,
 * frames per request and concurrent requests; errors in OpenAI's `{"error": {...}}` shape.
 */
import * as crypto from 'crypto';
import * as http from 'http';
import type { AddressInfo } from 'net';
import * as path from 'path';
import sharp from 'sharp';
import { CrpoError } from '../errors';
import { detectModelFolder } from '../hf/model-folder';
import { POLICY_KINDS, type Policy, type PolicyPrompt } from '../rollout/policy';
import '../rollout/linear-policy';
import '../rollout/native-policy';
import '../hf/qwen-policy';

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
}

export const SERVE_DEFAULTS = { host: '127.0.0.1', port: 8000, maxBodyBytes: 32 * 1024 * 1024, maxConcurrent: 4, maxFrames: 64, maxN: 16 };

export interface RunningServer {
  url: string;
  port: number;
  modelName: string;
  close(): Promise<void>;
}

class HttpError extends Error {
  constructor(readonly status: number, message: string, readonly type = 'invalid_request_error', readonly code: string | null = null, readonly param: string | null = null) {
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
  if (!POLICY_KINDS.has(m.kind)) throw new CrpoError('ERR_CRPO_CHECKPOINT', `${where} ${dir}: policy kind '${m.kind}' (${m.what}) is not available; known: ${POLICY_KINDS.names().join(', ')}`, { userError: true });
  return POLICY_KINDS.get(m.kind)({ init: m.init, seed: 0 });
}

const DATA_URL = /^data:image\/(png|jpeg|jpg|webp);base64,([A-Za-z0-9+/=\s]+)$/;
const OPTION_LINE = /^([A-Z])\.\s+(.+)$/;

/** Splits a lib/prompt prompt into question and options (lines "A. ..." in letter order). */
export function parsePrompt(text: string): { question: string; options: string[] } {
  const lines = text.split('\n').map((l) => l.trim()).filter(Boolean);
  const first = lines.findIndex((l) => OPTION_LINE.test(l));
  if (first < 1) throw new HttpError(400, 'the prompt must hold a question followed by lettered options ("A. ...", "B. ..."), as lib/prompt formats it', 'invalid_request_error', null, 'messages');
  const options: string[] = [];
  for (let i = first; i < lines.length; i++) {
    const m = OPTION_LINE.exec(lines[i]);
    if (!m) break;
    if (m[1].charCodeAt(0) - 65 !== options.length) throw new HttpError(400, `option letters must run A, B, C, ... in order; found '${m[1]}' at position ${options.length + 1}`, 'invalid_request_error', null, 'messages');
    options.push(m[2]);
  }
  if (options.length < 2) throw new HttpError(400, 'the prompt must list at least 2 lettered options', 'invalid_request_error', null, 'messages');
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

async function decodeFrames(urls: string[]): Promise<{ frames: Uint8Array; shape: [number, number, number, 3] }> {
  let W = 0, H = 0;
  const raws: Buffer[] = [];
  for (const [i, url] of urls.entries()) {
    const m = DATA_URL.exec(url);
    if (!m) throw new HttpError(400, `image part ${i + 1}: expected a base64 data URL (data:image/png;base64,... or image/jpeg); remote URLs are not fetched`, 'invalid_request_error', null, 'messages');
    let img = sharp(Buffer.from(m[2], 'base64')).removeAlpha();
    try {
      if (i === 0) {
        const meta = await img.metadata();
        W = meta.width ?? 0; H = meta.height ?? 0;
      } else img = img.resize(W, H, { fit: 'fill' });
      raws.push(await img.raw().toBuffer());
    } catch (err) {
      throw new HttpError(400, `image part ${i + 1}: not a decodable image (${(err as Error).message})`, 'invalid_request_error', null, 'messages');
    }
  }
  const per = W * H * 3;
  const frames = new Uint8Array(per * raws.length);
  raws.forEach((r, t) => frames.set(r.subarray(0, per), t * per));
  return { frames, shape: [raws.length, H, W, 3] };
}

/** Starts the server; resolves once it listens. */
export async function startServer(o: ServeOptions): Promise<RunningServer> {
  const opt = { ...SERVE_DEFAULTS, ...Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) } as Required<ServeOptions>;
  for (const k of ['maxBodyBytes', 'maxConcurrent', 'maxFrames', 'maxN'] as const) {
    if (!Number.isInteger(opt[k]) || opt[k] < 1) throw new CrpoError('ERR_CRPO_INVALID_ARG', `serve: ${k} must be an integer >= 1, got ${opt[k]}`, { userError: true });
  }
  const policy = await loadCheckpointPolicy(o.checkpoint);
  const modelName = o.modelName ?? path.basename(path.resolve(o.checkpoint));
  let active = 0;
  // The policy runs one request at a time (torch work is serialised anyway); this chains them.
  let chain: Promise<unknown> = Promise.resolve();

  const send = (res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void => {
    if (res.headersSent) return;
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
    res.end(text);
  };
  const fail = (res: http.ServerResponse, e: HttpError, headers: Record<string, string> = {}): void =>
    send(res, e.status, { error: { message: e.message, type: e.type, param: e.param, code: e.code } }, headers);

  const readBody = (req: http.IncomingMessage): Promise<Buffer> =>
    new Promise((resolve, reject) => {
      const declared = Number(req.headers['content-length'] ?? 0);
      if (declared > opt.maxBodyBytes) return reject(new HttpError(413, `request body of ${declared} bytes exceeds the limit of ${opt.maxBodyBytes} bytes`, 'invalid_request_error', 'request_too_large'));
      const chunks: Buffer[] = [];
      let size = 0;
      req.on('data', (c: Buffer) => {
        size += c.length;
        if (size > opt.maxBodyBytes) {
          req.removeAllListeners('data');
          reject(new HttpError(413, `request body exceeds the limit of ${opt.maxBodyBytes} bytes`, 'invalid_request_error', 'request_too_large'));
          req.resume();
          return;
        }
        chunks.push(c);
      });
      req.on('end', () => resolve(Buffer.concat(chunks)));
      req.on('error', reject);
    });

  async function complete(body: ChatRequest): Promise<unknown> {
    if (body.stream === true) throw new HttpError(400, 'stream: true is not supported by crpo serve', 'invalid_request_error', null, 'stream');
    if (body.model !== undefined && body.model !== modelName) throw new HttpError(404, `model '${String(body.model)}' is not served here; this server serves '${modelName}'`, 'invalid_request_error', 'model_not_found', 'model');
    if (!Array.isArray(body.messages) || body.messages.length === 0) throw new HttpError(400, "'messages' must be a non-empty array", 'invalid_request_error', null, 'messages');
    const n = body.n === undefined ? 1 : body.n;
    if (!Number.isInteger(n) || (n as number) < 1 || (n as number) > opt.maxN) throw new HttpError(400, `'n' must be an integer in [1, ${opt.maxN}]`, 'invalid_request_error', null, 'n');
    const temperature = body.temperature === undefined || body.temperature === null ? 1 : body.temperature;
    if (typeof temperature !== 'number' || !(temperature >= 0 && temperature <= 10)) throw new HttpError(400, "'temperature' must be a number in [0, 10]", 'invalid_request_error', null, 'temperature');
    const maxTokens = body.max_completion_tokens ?? body.max_tokens ?? 16;
    if (!Number.isInteger(maxTokens) || (maxTokens as number) < 1) throw new HttpError(400, "'max_tokens' must be a positive integer", 'invalid_request_error', null, 'max_tokens');
    const seed = body.seed === undefined ? 0 : body.seed;
    if (!Number.isInteger(seed)) throw new HttpError(400, "'seed' must be an integer", 'invalid_request_error', null, 'seed');
    const images: string[] = [];
    const texts: string[] = [];
    for (const [i, m] of (body.messages as unknown[]).entries()) {
      const msg = m as { role?: unknown; content?: unknown };
      if (typeof msg !== 'object' || msg === null || typeof msg.role !== 'string') throw new HttpError(400, `messages[${i}] must be an object with a 'role'`, 'invalid_request_error', null, 'messages');
      if (msg.role !== 'user') continue;
      if (typeof msg.content === 'string') texts.push(msg.content);
      else if (Array.isArray(msg.content)) {
        for (const [j, part] of msg.content.entries()) {
          const p = part as { type?: unknown; text?: unknown; image_url?: { url?: unknown } };
          if (p?.type === 'text' && typeof p.text === 'string') texts.push(p.text);
          else if (p?.type === 'image_url' && typeof p.image_url?.url === 'string') images.push(p.image_url.url);
          else throw new HttpError(400, `messages[${i}].content[${j}]: expected a text or image_url part`, 'invalid_request_error', null, 'messages');
        }
      } else throw new HttpError(400, `messages[${i}].content must be a string or an array of parts`, 'invalid_request_error', null, 'messages');
    }
    if (images.length === 0) throw new HttpError(400, 'no video frames: send the frames as image_url parts (base64 data URLs) in temporal order', 'invalid_request_error', null, 'messages');
    if (images.length > opt.maxFrames) throw new HttpError(400, `${images.length} image parts exceed the limit of ${opt.maxFrames} frames per request`, 'invalid_request_error', null, 'messages');
    const prompt = texts[texts.length - 1] ?? '';
    const { question, options } = parsePrompt(prompt);
    const { frames, shape } = await decodeFrames(images);
    const p: PolicyPrompt = { frames, frameShape: shape, question, options, prompt };
    const out = await policy.generate([p], { samples: n as number, temperature: temperature === 0 ? 1 : temperature, greedy: temperature === 0, maxNewTokens: maxTokens as number, seed: seed as number });
    const completionTokens = out[0].reduce((a, c) => a + c.tokens.length, 0);
    return {
      id: `chatcmpl-${crypto.randomBytes(12).toString('hex')}`, object: 'chat.completion', created: Math.floor(Date.now() / 1000), model: modelName,
      choices: out[0].map((c, index) => ({ index, message: { role: 'assistant', content: c.text, refusal: null }, logprobs: null, finish_reason: 'stop' })),
      usage: { prompt_tokens: prompt.split(/\s+/).length + images.length, completion_tokens: completionTokens, total_tokens: prompt.split(/\s+/).length + images.length + completionTokens },
    };
  }

  const server = http.createServer((req, res) => {
    void (async () => {
      try {
        const url = (req.url ?? '').split('?')[0];
        if (opt.apiKey && req.headers.authorization !== `Bearer ${opt.apiKey}`) throw new HttpError(401, 'missing or wrong API key (Authorization: Bearer <key>)', 'invalid_request_error', 'invalid_api_key');
        if (req.method === 'GET' && url === '/v1/models') return send(res, 200, { object: 'list', data: [{ id: modelName, object: 'model', created: 0, owned_by: 'crpo' }] });
        if (url !== '/v1/chat/completions') throw new HttpError(404, `no route ${req.method} ${url}; this server answers POST /v1/chat/completions and GET /v1/models`, 'invalid_request_error', 'not_found');
        if (req.method !== 'POST') throw new HttpError(405, `${req.method} is not allowed on ${url}; use POST`);
        if (active >= opt.maxConcurrent) throw new HttpError(429, `too many requests in flight (limit ${opt.maxConcurrent}); retry shortly`, 'rate_limit_error', 'rate_limit_exceeded');
        active++;
        try {
          const raw = await readBody(req);
          let body: ChatRequest;
          try {
            body = JSON.parse(raw.toString('utf8')) as ChatRequest;
          } catch (err) {
            throw new HttpError(400, `request body is not valid JSON (${(err as Error).message})`);
          }
          if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new HttpError(400, 'request body must be a JSON object');
          const job = chain.then(() => complete(body));
          chain = job.catch(() => undefined);
          send(res, 200, await job);
        } finally {
          active--;
        }
      } catch (err) {
        if (err instanceof HttpError) fail(res, err, err.status === 429 ? { 'retry-after': '1' } : {});
        else fail(res, new HttpError(500, `internal error: ${(err as Error).message}`, 'server_error'));
      }
    })();
  });
  const sockets = new Set<import('net').Socket>();
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opt.port, opt.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const host = opt.host.includes(':') ? `[${opt.host}]` : opt.host;
  return {
    url: `http://${host}:${port}/v1`, port, modelName,
    close: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => { policy.dispose(); resolve(); });
    }),
  };
}
