/**
 * The OpenAI-compatible AnswerModel (lib/eval/openai-model.ts) against the local mock server:
 * request shape (frames as JPEG image parts, lettered prompt with the null option), retries with
 * backoff on 429 / 500 / timeouts / malformed bodies / dropped connections, no retry on other 4xx,
 * a fatal stop on 401, and strict parsing of replies with reasoning around the answer.
 */
import sharp from 'sharp';
import { createModel, MODEL_KINDS, type AnswerRequest } from '../../lib/eval/model';
import {
  backoffDelay,
  classifyError,
  completionText,
  encodeFramesJpeg,
  OpenAIAnswerModel,
} from '../../lib/eval/openai-model';
import { formatPrompt, parseAnswer } from '../../lib/prompt';
import { startMockOpenAI, type MockReply, type MockServer } from '../fixtures/openai-mock-server';

const T = 3,
  H = 16,
  W = 20;

function request(id = 'r1', nullOption = true): AnswerRequest {
  const frames = new Uint8Array(T * H * W * 3);
  for (let t = 0; t < T; t++) frames.fill(40 + 80 * t, t * H * W * 3, (t + 1) * H * W * 3); // one grey level per frame
  const options = ['left', 'right', 'up', 'down'];
  return {
    id,
    frames,
    frameShape: [T, H, W, 3],
    question: 'Which way does it move?',
    options,
    prompt: formatPrompt('Which way does it move?', options, { nullOption }),
  };
}

let server: MockServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

async function modelWith(
  replies: MockReply[] | ((i: number) => MockReply),
  extra: Partial<ConstructorParameters<typeof OpenAIAnswerModel>[0]> = {},
): Promise<OpenAIAnswerModel> {
  server = await startMockOpenAI((req) =>
    typeof replies === 'function' ? replies(req.index) : replies[Math.min(req.index, replies.length - 1)],
  );
  return new OpenAIAnswerModel({
    model: 'mock-vl',
    baseURL: server.url,
    apiKey: 'sk-test',
    backoffBaseMs: 5,
    backoffMaxMs: 40,
    timeoutMs: 2000,
    maxRetries: 3,
    ...extra,
  });
}

test('sends the frames as JPEG image parts in order, then the prompt with lettered options and the null option', async () => {
  const m = await modelWith([{ content: '<answer>B</answer>' }]);
  const [resp] = await m.answer([request()]);
  expect(resp).toMatchObject({ raw: '<answer>B</answer>', attempts: 1 });
  expect(resp.error).toBeUndefined();
  const req = server!.requests[0];
  expect(req.body.model).toBe('mock-vl');
  expect(req.body.temperature).toBe(0);
  expect(req.headers.authorization).toBe('Bearer sk-test');
  const content = req.body.messages![0].content as { type: string; text?: string; image_url?: { url: string } }[];
  expect(content.map((p) => p.type)).toEqual(['text', 'image_url', 'image_url', 'image_url', 'text']);
  expect(content[4].text).toBe(
    'Which way does it move?\nA. left\nB. right\nC. up\nD. down\nE. None of the above\nAnswer with the option letter inside <answer></answer>.',
  );
  // Each image decodes to the frame that was sent (JPEG: within a few grey levels).
  for (let t = 0; t < T; t++) {
    const url = content[1 + t].image_url!.url;
    expect(url.startsWith('data:image/jpeg;base64,')).toBe(true);
    const { data, info } = await sharp(Buffer.from(url.slice('data:image/jpeg;base64,'.length), 'base64'))
      .raw()
      .toBuffer({ resolveWithObject: true });
    expect([info.width, info.height]).toEqual([W, H]);
    expect(Math.abs(data[0] - (40 + 80 * t))).toBeLessThanOrEqual(3);
  }
});

test.each([
  ['429 with Retry-After', { status: 429, headers: { 'retry-after-ms': '30' } } as MockReply],
  ['500', { status: 500 } as MockReply],
  ['503', { status: 503 } as MockReply],
  ['a malformed JSON body', { malformed: '{"choices": [' } as MockReply],
  ['a body without choices', { malformed: '{"object": "chat.completion"}' } as MockReply],
  ['a dropped connection', { drop: true } as MockReply],
])('retries after %s, then answers', async (_name, failure) => {
  const m = await modelWith([
    failure,
    failure,
    { content: 'Let me look at the frames. It moves to the right.\n<answer>B</answer>' },
  ]);
  const t0 = Date.now();
  const [resp] = await m.answer([request()]);
  expect(resp.error).toBeUndefined();
  expect(resp.attempts).toBe(3);
  expect(server!.requests).toHaveLength(3);
  expect(parseAnswer(resp.raw, 5)).toEqual({ index: 1, formatOk: true });
  if ('headers' in failure) expect(Date.now() - t0).toBeGreaterThanOrEqual(60); // two Retry-After waits of 30 ms
});

test('retries a timed-out attempt', async () => {
  const m = await modelWith([{ content: '<answer>A</answer>', delayMs: 1500 }, { content: '<answer>C</answer>' }], {
    timeoutMs: 300,
  });
  const [resp] = await m.answer([request()]);
  expect(resp).toMatchObject({ raw: '<answer>C</answer>', attempts: 2 });
  expect(resp.latencyMs).toBeGreaterThanOrEqual(300);
});

test('gives up after maxRetries and reports the last error on the sample', async () => {
  const m = await modelWith([{ status: 500 }], { maxRetries: 2 });
  const [resp] = await m.answer([request()]);
  expect(server!.requests).toHaveLength(3);
  expect(resp.raw).toBe('');
  expect(resp.attempts).toBe(3);
  expect(resp.error).toMatch(/^HTTP 500: /);
});

test('a 400 fails the sample at once; a 401 stops the run with one clear error', async () => {
  const m = await modelWith([{ status: 400 }]);
  const [resp] = await m.answer([request()]);
  expect(server!.requests).toHaveLength(1);
  expect(resp.error).toMatch(/^HTTP 400: /);
  await server!.close();
  const m2 = await modelWith([{ status: 401 }]);
  await expect(m2.answer([request('a'), request('b')])).rejects.toMatchObject({
    code: 'ERR_CRPO_EVAL_ENDPOINT',
    message: expect.stringMatching(/refused the request for model 'mock-vl': HTTP 401: /),
  });
});

test('answers a batch concurrently, one response per request in order', async () => {
  // The server holds every reply until all 4 requests have arrived: only a client that sends them
  // together gets its replies before the fallback release (which keeps a sequential client from hanging).
  let arrived = 0,
    inFlight = 0,
    maxInFlight = 0;
  let releaseAll!: () => void;
  const allArrived = new Promise<void>((resolve) => (releaseAll = resolve));
  server = await startMockOpenAI(async (req) => {
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    if (++arrived === 4) releaseAll();
    await Promise.race([allArrived, new Promise((r) => setTimeout(r, 1000))]);
    inFlight--;
    const parts = req.body.messages![0].content as { type: string; text?: string }[];
    const k = Number(/^question (\d)$/.exec(parts[parts.length - 1].text ?? '')?.[1]);
    return { content: `<answer>${'ABCD'[k]}</answer>` };
  });
  const m = new OpenAIAnswerModel({
    model: 'mock-vl',
    baseURL: server.url,
    apiKey: 'sk-test',
    backoffBaseMs: 5,
    backoffMaxMs: 40,
    timeoutMs: 5000,
    maxRetries: 0,
  });
  const out = await m.answer([0, 1, 2, 3].map((i) => ({ ...request(`r${i}`), prompt: `question ${i}` })));
  expect(maxInFlight).toBe(4); // all four were in flight together
  expect(out.map((o) => o.raw)).toEqual(['A', 'B', 'C', 'D'].map((x) => `<answer>${x}</answer>`)); // in request order
  expect(out.map((o) => [o.error, o.attempts])).toEqual(new Array(4).fill([undefined, 1]));
});

test('strict parsing of what the endpoint said: reasoning around one tag is fine, a substring is not', () => {
  expect(parseAnswer('The object goes right, so <answer>B</answer>.', 5).index).toBe(1);
  expect(parseAnswer('The answer is B because it moves right', 5).index).toBe(-1);
  expect(parseAnswer('<answer>A</answer> or <answer>B</answer>', 5).index).toBe(-1);
  expect(parseAnswer('<answer>F</answer>', 5).index).toBe(-1);
});

test('completionText and classifyError', () => {
  expect(completionText({ choices: [{ message: { content: 'x' } }] })).toBe('x');
  expect(completionText({ choices: [{ message: { content: null } }] })).toBe('');
  expect(
    completionText({
      choices: [
        {
          message: {
            content: [
              { type: 'text', text: 'a' },
              { type: 'text', text: 'b' },
            ],
          },
        },
      ],
    }),
  ).toBe('ab');
  expect(() => completionText({ choices: [] })).toThrow(/malformed response body: no choices/);
  expect(classifyError({ status: 429, message: 'slow down', headers: new Headers({ 'retry-after': '2' }) })).toEqual({
    kind: 'retry',
    message: 'HTTP 429: slow down',
    retryAfterMs: 2000,
  });
  expect(classifyError({ status: 502, message: 'bad gateway' }).kind).toBe('retry');
  expect(classifyError({ status: 404, message: 'no such model' }).kind).toBe('fatal');
  expect(classifyError({ status: 422, message: 'too long' }).kind).toBe('fail-sample');
  expect(classifyError(new SyntaxError('Unexpected end of JSON input')).kind).toBe('retry');
});

test('backoff doubles from the base, is capped, jittered in [0.5, 1], and honours Retry-After', () => {
  const one = (): number => 1; // no jitter
  expect([1, 2, 3, 4, 5].map((n) => backoffDelay(n, 100, 500, one))).toEqual([100, 200, 400, 500, 500]);
  expect(backoffDelay(3, 100, 500, () => 0)).toBe(200);
  expect(backoffDelay(1, 100, 500, one, 2000)).toBe(2000);
  expect(backoffDelay(1, 100, 500, one, 10 * 60_000)).toBe(60_000); // a silly Retry-After is capped at 60 s
});

test('frames are validated before anything is sent', async () => {
  await expect(encodeFramesJpeg(new Uint8Array(10), [1, 2, 2, 3])).rejects.toThrow(
    'Expected T*H*W*3 = 12 for shape [1, 2, 2, 3] for frames.length but received 10 of type number',
  );
  await expect(encodeFramesJpeg(new Uint8Array(12), [1, 2, 2, 4])).rejects.toThrow(
    /Expected a shape \[T, H, W, 3\] of positive integers for frameShape/,
  );
});

test('model kinds: openai is created by name; checkpoint says it is not available yet; unknown kinds list the known ones', async () => {
  const m = await createModel('openai', { model: 'x', baseURL: 'http://127.0.0.1:9/v1' });
  expect(m.name).toBe('x');
  await expect(createModel('checkpoint', { checkpoint: 'runs/ckpt-100' })).rejects.toMatchObject({
    code: 'ERR_CRPO_NOT_AVAILABLE',
    message: expect.stringContaining("model kind 'checkpoint' is not available yet"),
  });
  await expect(createModel('nope', {})).rejects.toThrow("Unknown model kind 'nope'; known: checkpoint, openai");
  expect(MODEL_KINDS.names()).toEqual(['checkpoint', 'openai']);
  expect(() => new OpenAIAnswerModel({ model: 'x', baseURL: 'localhost:8000' })).toThrow(
    /Expected an http\(s\) URL such as http:\/\/localhost:8000\/v1/,
  );
});
