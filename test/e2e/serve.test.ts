/**
 * `crpo serve` (lib/serve) with the official `openai` client: answers equal the policy's own greedy
 * answers, `n` samples, the API key, the model id, oversize / malformed / frameless / option-less
 * requests, the concurrency limit, and the `checkpoint` model kind of `crpo eval` going through
 * the same client path.
 */
import * as fs from 'fs';
import * as http from 'http';
import * as os from 'os';
import * as path from 'path';
import OpenAI from 'openai';
import sharp from 'sharp';
import { resolveConfig } from '../../lib/train/config';
import { sftBase } from '../../lib/train/base-model';
import { loadCheckpointPolicy, startServer, type RunningServer } from '../../lib/serve';
import { createModel } from '../../lib/eval/model';
import '../../lib/serve/checkpoint-model';
import { displayedOptions, formatPrompt, parseAnswer } from '../../lib/prompt';
import { synthesize } from '../../lib/synth';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-serve-'));
const ckpt = path.join(tmp, 'base');
let server: RunningServer;
const items = synthesize({ split: 'test', pairs: 2, seed: 3 });

async function pngParts(frames: Uint8Array): Promise<OpenAI.Chat.Completions.ChatCompletionContentPart[]> {
  const per = 32 * 32 * 3;
  const parts: OpenAI.Chat.Completions.ChatCompletionContentPart[] = [];
  for (let t = 0; t < 8; t++) {
    const png = await sharp(Buffer.from(frames.buffer, frames.byteOffset + t * per, per), {
      raw: { width: 32, height: 32, channels: 3 },
    })
      .png()
      .toBuffer();
    parts.push({ type: 'image_url', image_url: { url: `data:image/png;base64,${png.toString('base64')}` } });
  }
  return parts;
}

async function messagesFor(i: number, prompt?: string): Promise<OpenAI.Chat.Completions.ChatCompletionMessageParam[]> {
  const r = items[i].record;
  return [
    {
      role: 'user',
      content: [
        { type: 'text', text: 'The video, as 8 frames in temporal order:' },
        ...(await pngParts(items[i].frames)),
        { type: 'text', text: prompt ?? formatPrompt(r.question, r.options, { nullOption: true }) },
      ],
    },
  ];
}

beforeAll(async () => {
  await sftBase(resolveConfig({ overrides: { data: { pairs: 6, val: '' } } }), {
    steps: 10,
    batchSize: 8,
    lr: 0.05,
    nullOption: true,
    out: ckpt,
  });
  server = await startServer({ checkpoint: ckpt, port: 0, apiKey: 'k1', maxBodyBytes: 64 * 1024, maxConcurrent: 1 });
});
afterAll(async () => {
  await server.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

const client = () => new OpenAI({ baseURL: server.url, apiKey: 'k1', maxRetries: 0 });

describe('crpo serve', () => {
  it('binds 127.0.0.1 and lists the model', async () => {
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/v1$/);
    const models = await client().models.list();
    expect(models.data.map((m) => m.id)).toEqual(['base']);
  });

  it('answers like the policy itself (greedy) and returns n samples', async () => {
    const policy = await loadCheckpointPolicy(ckpt);
    try {
      for (const i of [0, 3, 5]) {
        const r = items[i].record;
        const options = displayedOptions(r.options, true);
        const direct = await policy.generate(
          [{ frames: items[i].frames, frameShape: [8, 32, 32, 3], question: r.question, options, prompt: '' }],
          { samples: 1, temperature: 1, maxNewTokens: 16, seed: 0, greedy: true },
        );
        const res = await client().chat.completions.create({
          model: 'base',
          messages: await messagesFor(i),
          temperature: 0,
        });
        expect(res.choices[0].message.content).toBe(direct[0][0].text);
        expect(parseAnswer(res.choices[0].message.content ?? '', options.length).index).toBeGreaterThanOrEqual(0);
      }
      const many = await client().chat.completions.create({
        model: 'base',
        messages: await messagesFor(1),
        n: 4,
        temperature: 1,
        seed: 7,
      });
      expect(many.choices).toHaveLength(4);
      expect(many.usage?.completion_tokens).toBeGreaterThan(0);
    } finally {
      policy.dispose();
    }
  });

  it('rejects a wrong API key (401) and an unknown model (404)', async () => {
    const bad = new OpenAI({ baseURL: server.url, apiKey: 'nope', maxRetries: 0 });
    await expect(bad.chat.completions.create({ model: 'base', messages: await messagesFor(0) })).rejects.toMatchObject({
      status: 401,
    });
    await expect(
      client().chat.completions.create({ model: 'gpt-4o', messages: await messagesFor(0) }),
    ).rejects.toMatchObject({
      status: 404,
      message: expect.stringMatching(/model 'gpt-4o' is not served here; this server serves 'base'/),
    });
  });

  it('rejects oversize, frameless and option-less requests with a clear 4xx', async () => {
    const big = await messagesFor(0);
    const parts = big[0].content as OpenAI.Chat.Completions.ChatCompletionContentPart[];
    for (let k = 0; k < 6; k++)
      parts.push(
        ...(parts.slice(1, 9).map((p) => ({
          ...p,
          image_url: {
            url: (p as OpenAI.Chat.Completions.ChatCompletionContentPartImage).image_url.url + ' '.repeat(2000),
          },
        })) as OpenAI.Chat.Completions.ChatCompletionContentPart[]),
      );
    await expect(client().chat.completions.create({ model: 'base', messages: big })).rejects.toMatchObject({
      status: 413,
      message: expect.stringMatching(/exceeds the limit of 65536 bytes/),
    });
    await expect(
      client().chat.completions.create({
        model: 'base',
        messages: [{ role: 'user', content: 'Which way? A. left B. right' }],
      }),
    ).rejects.toMatchObject({ status: 400, message: expect.stringMatching(/no video frames/) });
    await expect(
      client().chat.completions.create({ model: 'base', messages: await messagesFor(0, 'What happens?') }),
    ).rejects.toMatchObject({ status: 400, message: expect.stringMatching(/lettered options/) });
    await expect(
      client().chat.completions.create({ model: 'base', messages: await messagesFor(0), stream: false, n: 99 }),
    ).rejects.toMatchObject({ status: 400, message: expect.stringMatching(/'n' must be an integer in \[1, 16\]/) });
  });

  it('rejects malformed JSON and a broken image', async () => {
    const post = (body: string) =>
      fetch(`${server.url}/chat/completions`, {
        method: 'POST',
        headers: { authorization: 'Bearer k1', 'content-type': 'application/json' },
        body,
      });
    const r = await post('{"model": "base", "messages": [');
    expect(r.status).toBe(400);
    expect(((await r.json()) as { error: { message: string } }).error.message).toMatch(
      /request body is not valid JSON/,
    );
    const r2 = await post(
      JSON.stringify({
        messages: [
          {
            role: 'user',
            content: [
              { type: 'image_url', image_url: { url: 'data:image/png;base64,AAAA' } },
              { type: 'text', text: 'Q?\nA. x\nB. y' },
            ],
          },
        ],
      }),
    );
    expect(r2.status).toBe(400);
    expect(((await r2.json()) as { error: { message: string } }).error.message).toMatch(
      /image part 1: not a decodable image/,
    );
  });

  it('answers 429 beyond the concurrency limit', async () => {
    const url = new URL(`${server.url}/chat/completions`);
    // Request 1 sends its headers and half a body, then waits: it holds the only slot.
    const slow = http.request({
      host: url.hostname,
      port: url.port,
      path: url.pathname,
      method: 'POST',
      headers: { authorization: 'Bearer k1', 'content-type': 'application/json', 'content-length': '1000' },
    });
    slow.write('{"messages": ');
    slow.on('error', () => undefined);
    await new Promise((r) => setTimeout(r, 100));
    const second = client().chat.completions.create({ model: 'base', messages: await messagesFor(0) });
    await expect(second).rejects.toMatchObject({ status: 429 });
    slow.destroy();
  });

  it("the 'checkpoint' model kind of crpo eval answers through the same client path", async () => {
    const model = await createModel('checkpoint', { checkpoint: ckpt });
    try {
      const r = items[2].record;
      const out = await model.answer([
        {
          id: r.id,
          frames: items[2].frames,
          frameShape: [8, 32, 32, 3],
          question: r.question,
          options: r.options,
          prompt: formatPrompt(r.question, r.options, { nullOption: true }),
        },
      ]);
      expect(out[0].error).toBeUndefined();
      expect(parseAnswer(out[0].raw, r.options.length + 1).index).toBeGreaterThanOrEqual(0);
    } finally {
      await model.close?.();
    }
  });
});
