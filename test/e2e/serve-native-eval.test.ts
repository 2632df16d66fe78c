/**
 * Serve -> eval of a native checkpoint with eval's defaults (issue 16): a tiny native policy made
 * by sftBase is served by `startServer` and asked through the official `openai` client. Clips of
 * another frame count and size are sampled and resized to the training shape and the reply says
 * so; max_tokens beyond the context (eval's default 1024, 10^12) is clamped, never a 500; a prompt
 * longer than the context is a 400 naming maxSeqLen; the model card carries the null option the
 * checkpoint was trained with and `runEval` follows it; `--kind checkpoint` honours the client
 * settings; one log line per request, errors included; a checkpoint with a NaN weight is refused.
 * Skipped, with the reason, when the torch addon carries no native policy.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import OpenAI from 'openai';
import sharp from 'sharp';
import { resolveConfig } from '../../lib/train/config';
import { sftBase } from '../../lib/train/base-model';
import { loadCheckpointPolicy, startServer, type RunningServer } from '../../lib/serve';
import '../../lib/serve/checkpoint-model';
import { runEval } from '../../lib/eval/runner';
import { formatPrompt } from '../../lib/prompt';
import { writeSynthetic } from '../../lib/synth/writer';
import { itWithNativePolicy, nativePolicyMissing } from '../helpers/native-policy';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-serve-native-'));
const ckpt = path.join(tmp, 'native-base');
const logLines: string[] = [];
let server: RunningServer | undefined;
const itNative = itWithNativePolicy('serve -> eval of a native checkpoint');

beforeAll(async () => {
  if (nativePolicyMissing()) return;
  const cfg = resolveConfig({
    overrides: { policy: { kind: 'native', init: '', preset: 'tiny' }, data: { pairs: 4, val: '' } },
  });
  await sftBase(cfg, { steps: 4, batchSize: 8, lr: 0.01, nullOption: true, out: ckpt });
  server = await startServer({ checkpoint: ckpt, port: 0, log: (l) => logLines.push(l) });
}, 120_000);
afterAll(async () => {
  await server?.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

const client = () => new OpenAI({ baseURL: server!.url, apiKey: 'none', maxRetries: 0 });

/** T frames of W x H as PNG image parts (a gradient moving with t). */
async function clip(T: number, W: number, H: number): Promise<OpenAI.Chat.Completions.ChatCompletionContentPart[]> {
  const parts: OpenAI.Chat.Completions.ChatCompletionContentPart[] = [];
  for (let t = 0; t < T; t++) {
    const px = Buffer.alloc(W * H * 3);
    for (let i = 0; i < W * H; i++) px[i * 3] = (i + t * 7) & 255;
    const png = await sharp(px, { raw: { width: W, height: H, channels: 3 } })
      .png()
      .toBuffer();
    parts.push({ type: 'image_url', image_url: { url: `data:image/png;base64,${png.toString('base64')}` } });
  }
  return parts;
}

const PROMPT = formatPrompt('In which direction does the object move?', ['left', 'right', 'up', 'down'], {
  nullOption: true,
});

type Reply = OpenAI.Chat.Completions.ChatCompletion & {
  crpo?: { adjusted: string[]; frames: number[]; max_tokens: number };
};

describe('crpo serve with a native checkpoint', () => {
  itNative('the model card names the training shape, the context and the null option', async () => {
    const list = await client().models.list();
    expect(list.data).toHaveLength(1);
    expect((list.data[0] as unknown as { crpo: unknown }).crpo).toEqual({
      kind: 'native',
      null_option: true,
      null_option_source: path.join(ckpt, 'prompt.json'),
      frames: 8,
      image_size: 32,
      max_seq_len: 160,
    });
    const one = await client().models.retrieve('native-base');
    expect(one.id).toBe('native-base');
  });

  itNative(
    'samples and resizes clips of other frame counts and sizes, and clamps max_tokens to the context',
    async () => {
      const ask = async (parts: OpenAI.Chat.Completions.ChatCompletionContentPart[], maxTokens: number) =>
        (await client().chat.completions.create({
          model: 'native-base',
          temperature: 0,
          max_tokens: maxTokens,
          messages: [{ role: 'user', content: [...parts, { type: 'text', text: PROMPT }] }],
        })) as Reply;
      const long = await ask(await clip(16, 48, 40), 1024);
      expect(long.choices).toHaveLength(1);
      expect(long.crpo!.frames).toEqual([8, 32, 32]);
      expect(long.crpo!.adjusted).toEqual([
        expect.stringMatching(
          /^max_tokens 1024 clamped to \d+ \(the model's context: maxSeqLen 160 - \d+ prompt tokens\)$/,
        ),
        'sampled 8 of 16 frames uniformly',
        'resized 48x40 to 32x32',
      ]);
      const short = await ask(await clip(3, 32, 32), 10 ** 12);
      expect(short.crpo!.frames).toEqual([8, 32, 32]);
      expect(short.crpo!.adjusted).toEqual([
        expect.stringMatching(/^max_tokens 1000000000000 clamped to/),
        'repeated frames: 3 sent, the model takes 8',
      ]);
      const exact = await ask(await clip(8, 32, 32), 4);
      expect(exact.crpo!.adjusted).toEqual([]);
      expect(exact.crpo!.max_tokens).toBe(4);
    },
  );

  itNative(
    'a prompt longer than the context is a 400 naming maxSeqLen; the server still answers after it',
    async () => {
      const question = Array.from({ length: 200 }, () => 'object').join(' ') + '?';
      const text = formatPrompt(question, ['left', 'right'], { nullOption: false });
      await expect(
        client().chat.completions.create({
          model: 'native-base',
          messages: [{ role: 'user', content: [...(await clip(8, 32, 32)), { type: 'text', text }] }],
        }),
      ).rejects.toMatchObject({
        status: 400,
        message: expect.stringMatching(/of the model's context of 160 \(maxSeqLen\); shorten the question or options/),
      });
      const ok = await client().chat.completions.create({
        model: 'native-base',
        max_tokens: 3,
        messages: [{ role: 'user', content: [...(await clip(8, 32, 32)), { type: 'text', text: PROMPT }] }],
      });
      expect(ok.choices).toHaveLength(1);
    },
  );

  itNative('logs one line per request with its status and time, errors included', () => {
    const chat = logLines.filter((l) => l.includes('/v1/chat/completions'));
    expect(chat.length).toBeGreaterThanOrEqual(5);
    for (const l of logLines) expect(l).toMatch(/^\d{4}-\d\d-\d\dT\S+ (GET|POST) \/v1\/\S+ \d{3} \d+ ms/);
    expect(chat.some((l) => / 400 \d+ ms: the prompt takes \d+ tokens/.test(l))).toBe(true);
    expect(chat.some((l) => / 200 \d+ ms; max_tokens 1024 clamped/.test(l))).toBe(true);
  });

  itNative(
    "runEval with eval's defaults against the server: no failures, the null option from the model card",
    async () => {
      const data = path.join(tmp, 'data');
      // Frames of another count and size than the policy's (16 frames of 48x48 vs 8 of 32x32).
      await writeSynthetic({
        out: data,
        split: 'test',
        pairs: 1,
        seed: 5,
        frames: 16,
        size: 48,
        writeFrames: true,
        sheet: false,
        categories: ['moving_direction', 'static'],
      });
      const notes: string[] = [];
      const { summary } = await runEval(
        {
          data: path.join(data, 'test.jsonl'),
          out: path.join(tmp, 'eval-openai'),
          kind: 'openai',
          bootstrap: 0,
          model: { model: 'native-base', baseURL: server!.url },
        },
        { log: (l) => notes.push(l) },
      );
      expect(summary.n_failed).toBe(0);
      expect(summary.n_finished).toBe(4);
      expect(summary.null_option).toBe(true);
      expect(notes[0]).toMatch(/^eval: null option on, as the model card of 'native-base' at .* says it was trained/);
      // An explicit setting wins over the card.
      const off = await runEval(
        {
          data: path.join(data, 'test.jsonl'),
          out: path.join(tmp, 'eval-off'),
          kind: 'openai',
          bootstrap: 0,
          nullOption: false,
          model: { model: 'native-base', baseURL: server!.url },
        },
        { log: () => undefined },
      );
      expect(off.summary.null_option).toBe(false);

      // --kind checkpoint: the same defaults work, and the client settings are honoured (max_tokens 1
      // leaves every answer unfinished: invalid).
      const ck = await runEval(
        {
          data: path.join(data, 'test.jsonl'),
          out: path.join(tmp, 'eval-ckpt'),
          kind: 'checkpoint',
          bootstrap: 0,
          model: { checkpoint: ckpt, maxTokens: 1024 },
        },
        { log: () => undefined },
      );
      expect(ck.summary.n_failed).toBe(0);
      expect(ck.summary.null_option).toBe(true);
      const one = await runEval(
        {
          data: path.join(data, 'test.jsonl'),
          out: path.join(tmp, 'eval-ckpt-1'),
          kind: 'checkpoint',
          bootstrap: 0,
          model: { checkpoint: ckpt, maxTokens: 1 },
        },
        { log: () => undefined },
      );
      const lines = fs
        .readFileSync(path.join(tmp, 'eval-ckpt-1', 'samples.jsonl'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { format_ok: boolean; raw: string });
      expect(one.summary.n_failed).toBe(0);
      expect(lines.every((l) => !l.format_ok)).toBe(true);
    },
  );

  itNative('a checkpoint with a NaN weight is refused, naming the tensor', async () => {
    const bad = path.join(tmp, 'nan-ckpt');
    fs.cpSync(ckpt, bad, { recursive: true });
    const file = path.join(bad, 'policy', 'model.safetensors');
    const buf = fs.readFileSync(file);
    const headerLen = Number(buf.readBigUInt64LE(0));
    buf.writeFloatLE(NaN, 8 + headerLen); // the first weight of the first tensor
    fs.writeFileSync(file, buf);
    await expect(loadCheckpointPolicy(bad)).rejects.toMatchObject({
      code: 'ERR_CRPO_CHECKPOINT',
      message: expect.stringMatching(/tensor '.+' holds a non-finite weight \(NaN at index 0\)/),
    });
  });
});
