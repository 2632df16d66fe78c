/**
 * Task Router LLM backend (crpo-method.md section 2) against the local OpenAI mock server:
 * reasoning text and <think> blocks around the JSON, reasoning_content ignored, malformed JSON
 * re-asked then replaced by the rules answer (flagged), 429/500/timeouts/dropped connections
 * retried with backoff, fatal 4xx, bounded concurrency, the answer cache (resume, torn line,
 * duplicates asked once) and the hybrid backend.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { startMockOpenAI, type MockReply, type MockRequest, type MockServer } from '../fixtures/openai-mock-server';
import {
  backoffDelay,
  cacheKey,
  classifyByRules,
  parseRouterReply,
  PROMPT_VERSION,
  RouterCache,
  routeRecords,
  type RouterOptions,
} from '../../lib/router';

let tmp: string;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-router-llm-'));
});
afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

const QUESTIONS = [
  { question: 'Is the lid being screwed on or off?', options: ['on', 'off'], type: 'temporal' },
  { question: 'Which way does the kite drift?', options: ['left', 'right'], type: 'spatiotemporal' },
  { question: 'Which hand holds the torch?', options: ['left', 'right'], type: 'spatial' },
  { question: 'What colour is the kite?', options: ['red', 'green'], type: 'static' },
  { question: 'What happens after the whistle?', options: ['they run', 'they stop'], type: 'temporal' },
  {
    question: 'Is the crane lifting the beam upward or lowering it?',
    options: ['upward', 'lowering'],
    type: 'spatiotemporal',
  },
];

/** The question a request asks about (from the last user message). */
function askedQuestion(req: MockRequest): string {
  const msgs = req.body.messages ?? [];
  const last = String(msgs[msgs.length - 1]?.content ?? '');
  return /^Question: (.*)$/m.exec(last)?.[1] ?? '';
}

function answerFor(q: string): string {
  const t = QUESTIONS.find((x) => x.question === q)?.type ?? 'static';
  const axis = t === 'spatiotemporal' ? (q.includes('kite') ? 'horizontal' : 'vertical') : null;
  return JSON.stringify({
    type: t,
    axis,
    transform: t === 'spatial' ? 'hflip' : 'reverse',
    text: false,
    rationale: `mock says ${t}`,
  });
}

function opts(server: MockServer, extra: RouterOptions = {}): RouterOptions {
  return {
    backend: 'llm',
    cacheFile: path.join(tmp, 'cache.jsonl'),
    ...extra,
    llm: {
      baseURL: server.url,
      apiKey: 'test',
      model: 'mock-r1',
      backoffBaseMs: 1,
      backoffMaxMs: 5,
      timeoutMs: 2000,
      concurrency: 2,
      ...(extra.llm ?? {}),
    },
  };
}

async function withServer(
  script: (req: MockRequest) => MockReply | Promise<MockReply>,
  fn: (s: MockServer) => Promise<void>,
): Promise<void> {
  const s = await startMockOpenAI(script);
  try {
    await fn(s);
  } finally {
    await s.close();
  }
}

describe('parseRouterReply', () => {
  test('finds the answer after <think> blocks and reasoning text, in code fences, with braces in strings', () => {
    const r = parseRouterReply(
      '<think>Maybe {"type": "static"}? No.</think>\nReasoning: reversal swaps it.\n```json\n{"type": "temporal", "transform": "reverse", "rationale": "a {tricky} \\"one\\""}\n```',
    );
    expect(r).toEqual({
      ok: true,
      classification: { type: 'temporal', proposedTransform: 'reverse', confidence: 1, rationale: 'a {tricky} "one"' },
    });
    expect(parseRouterReply('Let me think. {"type": "spatiotemporal", "axis": "depth"}')).toMatchObject({
      ok: true,
      classification: { type: 'spatiotemporal', axis: 'depth' },
    });
  });

  test('rejects replies without one valid answer, with the reason', () => {
    expect(parseRouterReply('')).toEqual({ ok: false, reason: 'empty reply' });
    expect(parseRouterReply('type: temporal')).toEqual({ ok: false, reason: 'no JSON object in the reply' });
    expect(parseRouterReply('{"type": "temporal",}')).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/^invalid JSON/),
    });
    expect(parseRouterReply('{"type": "dynamic"}')).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/^JSON does not match the answer schema \(type:/),
    });
    expect(parseRouterReply('{"type": "static"} or {"type": "temporal"}')).toEqual({
      ok: false,
      reason: 'ambiguous reply: 2 answers with different types',
    });
    expect(parseRouterReply('<think>{"type": "static"} unfinished thoughts')).toEqual({
      ok: false,
      reason: 'no JSON object in the reply',
    });
  });
});

describe('LLM backend', () => {
  test('reasoning around the JSON is ignored, reasoning_content is never read; the request carries the versioned prompt', async () => {
    await withServer(
      (req) => ({
        content: `<think>hmm</think>The question is about order.\n${answerFor(askedQuestion(req))}\nDone.`,
        reasoning_content: '{"type": "spatial"}',
      }),
      async (s) => {
        const { routes, stats } = await routeRecords(QUESTIONS, opts(s));
        expect(routes.map((r) => r.type)).toEqual(QUESTIONS.map((q) => q.type));
        expect(routes.map((r) => r.transform)).toEqual([
          'reverse',
          'reverse',
          'hflip',
          expect.stringMatching(/^(hflip|reverse)$/),
          'reverse',
          'reverse',
        ]);
        expect(routes[0]).toMatchObject({
          backend: 'llm',
          model: 'mock-r1',
          promptVersion: PROMPT_VERSION,
          relation: 'change',
          rationale: 'mock says temporal',
        });
        expect(stats.requests).toBe(QUESTIONS.length);
        const body = s.requests[0].body;
        expect(body.model).toBe('mock-r1');
        expect(String(body.messages?.[0].content)).toMatch(/"spatiotemporal": about the direction of a motion/);
      },
    );
  });

  test('malformed JSON is re-asked; after maxInvalidRetries the rules answer is used and flagged', async () => {
    const seen = new Map<string, number>();
    await withServer(
      (req) => {
        const q = askedQuestion(req);
        const n = (seen.get(q) ?? 0) + 1;
        seen.set(q, n);
        if (q === QUESTIONS[0].question) return { content: '{"type": "temporal", "transform": "reverse"' }; // never valid
        return n === 1 ? { content: 'Sure! type=temporal' } : { content: answerFor(q) };
      },
      async (s) => {
        const { routes, stats } = await routeRecords(QUESTIONS.slice(0, 3), opts(s, { llm: { maxInvalidRetries: 2 } }));
        expect(seen.get(QUESTIONS[0].question)).toBe(3);
        expect(seen.get(QUESTIONS[1].question)).toBe(2);
        const reasks = s.requests.filter((r) =>
          JSON.stringify(r.body).includes('previous answer was not a valid JSON'),
        );
        expect(reasks.map(askedQuestion).sort()).toEqual(
          [QUESTIONS[0].question, QUESTIONS[0].question, QUESTIONS[1].question, QUESTIONS[2].question].sort(),
        );
        const rules = classifyByRules(QUESTIONS[0].question, QUESTIONS[0].options);
        expect(routes[0].type).toBe(rules.type);
        expect(routes[0].fallback).toMatch(/^invalid LLM reply after 3 request\(s\): unbalanced JSON object/);
        expect(routes[0].rationale).toMatch(/^rules fallback/);
        expect(routes[1].fallback).toBeUndefined();
        expect(stats.fallbacks).toBe(1);
        expect(stats.requests).toBe(3 + 2 + 2);
      },
    );
  });

  test('429 (with Retry-After), 500, a timeout, a dropped connection and a non-JSON body are retried', async () => {
    const failures: MockReply[] = [
      { status: 429, headers: { 'retry-after': '0' } },
      { status: 500 },
      { content: answerFor(QUESTIONS[0].question), delayMs: 1500 }, // beyond the 300 ms timeout
      { drop: true },
      { malformed: '<html>bad gateway</html>' },
      { status: 503 },
    ];
    let i = 0;
    await withServer(
      (req) => (i < failures.length ? failures[i++] : { content: answerFor(askedQuestion(req)) }),
      async (s) => {
        const { routes, stats } = await routeRecords(
          QUESTIONS.slice(0, 2),
          opts(s, { llm: { concurrency: 1, timeoutMs: 300, maxTransportRetries: 6 } }),
        );
        expect(routes.map((r) => r.type)).toEqual(['temporal', 'spatiotemporal']);
        expect(stats.requests).toBe(2 + failures.length);
      },
    );
  });

  test('a non-transient 4xx fails at once; an endpoint that keeps failing stops the run with answers kept in the cache', async () => {
    await withServer(
      () => ({ status: 401, body: JSON.stringify({ error: { message: 'bad key' } }) }),
      async (s) => {
        await expect(routeRecords(QUESTIONS.slice(0, 1), opts(s))).rejects.toMatchObject({
          code: 'ERR_CRPO_LLM_REQUEST',
          message: expect.stringMatching(/failed with HTTP 401/),
        });
        expect(s.requests.length).toBe(1);
      },
    );
    await withServer(
      (req) =>
        askedQuestion(req) === QUESTIONS[3].question ? { status: 500 } : { content: answerFor(askedQuestion(req)) },
      async (s) => {
        await expect(
          routeRecords(QUESTIONS, opts(s, { llm: { concurrency: 1, maxTransportRetries: 2 } })),
        ).rejects.toMatchObject({
          code: 'ERR_CRPO_LLM_UNAVAILABLE',
          message: expect.stringMatching(/after 3 attempts .*HTTP 500.*rerun to resume/),
        });
        const cache = await RouterCache.open(path.join(tmp, 'cache.jsonl'));
        expect(cache.size).toBe(3); // the three questions answered before the failing one
        await cache.close();
      },
    );
  });

  test('at most `concurrency` requests are in flight', async () => {
    let inFlight = 0;
    let peak = 0;
    await withServer(
      async (req) => {
        inFlight++;
        peak = Math.max(peak, inFlight);
        await new Promise((r) => setTimeout(r, 150));
        inFlight--;
        return { content: answerFor(askedQuestion(req)) };
      },
      async (s) => {
        await routeRecords(QUESTIONS, opts(s, { llm: { concurrency: 3 } }));
        expect(peak).toBe(3);
      },
    );
  });

  test('backoff doubles per retry up to the cap, with jitter in [0.5, 1]', () => {
    const cfg = { backoffBaseMs: 100, backoffMaxMs: 1000 };
    expect([0, 1, 2, 3, 4, 5].map((a) => backoffDelay(a, cfg, () => 1))).toEqual([100, 200, 400, 800, 1000, 1000]);
    expect(backoffDelay(2, cfg, () => 0)).toBe(200);
  });
});

describe('LLM answers follow the policy', () => {
  test('a disallowed transform is replaced and said so; a static text question gets reverse', async () => {
    await withServer(
      (req) => {
        const q = askedQuestion(req);
        if (q.startsWith('Is the crane'))
          return {
            content: '{"type": "spatiotemporal", "axis": "vertical", "transform": "hflip", "rationale": "up or down"}',
          };
        return { content: '{"type": "static", "transform": "hflip", "text": false, "rationale": "reading"}' };
      },
      async (s) => {
        const items = [QUESTIONS[5], { question: 'What is written on the banner?', options: ['SALE', 'OPEN'] }];
        const { routes } = await routeRecords(items, opts(s));
        expect(routes[0]).toMatchObject({
          type: 'spatiotemporal',
          axis: 'vertical',
          transform: 'reverse',
          relation: 'change',
        });
        expect(routes[0].rationale).toMatch(/proposed hflip replaced by reverse/);
        expect(routes[1]).toMatchObject({ type: 'static', transform: 'reverse', relation: 'same' });
      },
    );
  });
});

describe('answer cache', () => {
  test('cached rules fallbacks are kept, or asked again with reaskFallbacks', async () => {
    let valid = false;
    await withServer(
      (req) => ({ content: valid ? answerFor(askedQuestion(req)) : 'no idea' }),
      async (s) => {
        const items = QUESTIONS.slice(0, 2);
        const first = await routeRecords(items, opts(s, { llm: { maxInvalidRetries: 0 } }));
        expect(first.stats.fallbacks).toBe(2);
        valid = true;
        const kept = await routeRecords(items, opts(s));
        expect(kept.stats).toMatchObject({ requests: 0, fallbacks: 2, cached: 2 });
        const reasked = await routeRecords(items, opts(s, { reaskFallbacks: true }));
        expect(reasked.stats).toMatchObject({ requests: 2, fallbacks: 0 });
        expect(reasked.routes.map((r) => r.type)).toEqual(['temporal', 'spatiotemporal']);
        const again = await routeRecords(items, opts(s));
        expect(again.stats).toMatchObject({ requests: 0, fallbacks: 0 });
      },
    );
  });

  test('a second run asks nothing; duplicates are asked once; a torn last line is cut and reported', async () => {
    await withServer(
      (req) => ({ content: answerFor(askedQuestion(req)) }),
      async (s) => {
        const dup = [...QUESTIONS, QUESTIONS[0], QUESTIONS[0]];
        const first = await routeRecords(dup, opts(s));
        expect(s.requests.length).toBe(QUESTIONS.length);
        expect(first.stats.cached).toBe(2);
        const file = path.join(tmp, 'cache.jsonl');
        fs.appendFileSync(file, '{"key": "abc", "classif');
        const second = await routeRecords(dup, opts(s));
        expect(s.requests.length).toBe(QUESTIONS.length);
        expect(second.stats.cached).toBe(dup.length);
        expect(second.routes).toEqual(first.routes);
        expect(second.stats.cache).toMatchObject({
          entries: QUESTIONS.length,
          tornBytes: Buffer.byteLength('{"key": "abc", "classif'),
          badLines: [],
        });
        expect(fs.readFileSync(file, 'utf8').endsWith('}\n')).toBe(true);
        // A changed model or prompt version is a different address: asked again.
        await routeRecords(QUESTIONS.slice(0, 1), opts(s, { llm: { model: 'mock-r2' } }));
        expect(s.requests.length).toBe(QUESTIONS.length + 1);
      },
    );
  });

  test('the key covers question, options, backend, model and prompt version', () => {
    const k = cacheKey('q', ['a', 'b'], 'llm', 'm', 'v1');
    expect(k).toMatch(/^[0-9a-f]{64}$/);
    for (const other of [
      cacheKey('q2', ['a', 'b'], 'llm', 'm', 'v1'),
      cacheKey('q', ['a', 'c'], 'llm', 'm', 'v1'),
      cacheKey('q', ['a', 'b'], 'x', 'm', 'v1'),
      cacheKey('q', ['a', 'b'], 'llm', 'm2', 'v1'),
      cacheKey('q', ['a', 'b'], 'llm', 'm', 'v2'),
    ])
      expect(other).not.toBe(k);
  });
});

describe('hybrid backend', () => {
  test('asks the LLM only where the rules are not confident', async () => {
    await withServer(
      (req) => ({ content: answerFor(askedQuestion(req)) }),
      async (s) => {
        const items = [...QUESTIONS, { question: 'Describe the clip.', options: ['a', 'b'] }];
        const conf = items.map((q) => classifyByRules(q.question, q.options).confidence);
        const { routes } = await routeRecords(items, opts(s, { backend: 'hybrid', hybridThreshold: 0.7 }));
        const asked = new Set(s.requests.map(askedQuestion));
        items.forEach((q, i) => {
          expect(asked.has(q.question)).toBe(conf[i] < 0.7);
          expect(routes[i].backend).toBe(conf[i] < 0.7 ? 'hybrid:llm' : 'hybrid:rules');
        });
        expect(asked.size).toBeGreaterThan(0);
      },
    );
  });
});
