/**
 * The golden Qwen3-VL config through the project's commands, CPU: `crpo train` with policy kind
 * 'qwen' (a few LoRA CRPO steps, checkpoints; resume is tested in qwen-policy.test.ts), `crpo serve` of the checkpoint answered
 * through the official `openai` client, and `crpo eval` against the served endpoint. The 'qwen'
 * kind is registered by lib/policy, as for any user of the CLI.
 */
import { spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import OpenAI from 'openai';
import sharp from 'sharp';
import { GOLDEN_ROOT, goldenSkipReason } from '../numerics/golden-qwen-helpers';
import { skipIf } from '../helpers/skip';

const ROOT = path.resolve(__dirname, '..', '..');
const MODEL = path.join(GOLDEN_ROOT, 'qwen3_vl');
const reason = goldenSkipReason('qwen3_vl');
const CLI = ['-r', './scripts/ts-register.js', '-e', "require('./lib/cli/main.ts').main(process.argv.slice(1))"];

function crpo(args: string[]): { status: number | null; out: string } {
  const r = spawnSync(process.execPath, [...CLI, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 240000 });
  return { status: r.status, out: `${r.stdout}\n${r.stderr}` };
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** One chat completion with 4 image parts, retried while the server is still starting. */
async function askUntilUp(port: number, model: string): Promise<OpenAI.Chat.Completions.ChatCompletion | undefined> {
  const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: 'none', maxRetries: 0 });
  const png = await sharp({ create: { width: 64, height: 64, channels: 3, background: { r: 200, g: 30, b: 30 } } })
    .png()
    .toBuffer();
  const url = `data:image/png;base64,${png.toString('base64')}`;
  let answer: OpenAI.Chat.Completions.ChatCompletion | undefined;
  for (let i = 0; i < 60 && !answer; i++) {
    try {
      answer = await client.chat.completions.create({
        model,
        max_tokens: 4,
        messages: [
          {
            role: 'user',
            content: [
              ...Array.from({ length: 4 }, () => ({ type: 'image_url' as const, image_url: { url } })),
              {
                type: 'text',
                text: 'Is the ball moving?\nA. yes\nB. no\nAnswer with the option letter inside <answer></answer>.',
              },
            ],
          },
        ],
      });
    } catch (e) {
      if (!/ECONNREFUSED|Connection error/i.test(String((e as Error).message))) throw e;
      await new Promise((res) => setTimeout(res, 1000));
    }
  }
  return answer;
}

skipIf(reason).describe('crpo train / serve / eval with a Qwen3-VL folder', () => {
  test('train a few LoRA steps, serve through the openai client, evaluate', async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-qwen-cli-'));
    const run = path.join(tmp, 'run');
    const common = [
      'train',
      '--policy',
      'qwen',
      '--init',
      MODEL,
      '--data',
      'synthetic',
      '--val-data',
      '',
      '--set',
      'data.frames=4',
      '--set',
      'data.size=64',
      '--set',
      'data.pairs=4',
      '--set',
      'batchSize=2',
      '--set',
      'groupSize=2',
      '--set',
      'maxNewTokens=4',
      '--set',
      'saveEvery=1',
      '--out',
      run,
    ];
    let server: ReturnType<typeof spawn> | undefined;
    try {
      const t = crpo([...common, '--set', 'steps=2']);
      expect(t.out).toMatch(/policy qwen from/);
      expect(t.status).toBe(0);
      expect(fs.readdirSync(path.join(run, 'checkpoints'))).toEqual(['step-000001', 'step-000002']);
      const metrics = fs
        .readFileSync(path.join(run, 'metrics.jsonl'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { step: number; entropy: number });
      expect(metrics.map((m) => m.step)).toEqual([1, 2]);
      expect(metrics.every((m) => m.entropy > 0)).toBe(true);

      const port = await freePort();
      server = spawn(
        process.execPath,
        [...CLI, 'serve', run, '--host', '127.0.0.1', '--port', String(port), '--model-name', 'qwen-tiny'],
        { cwd: ROOT, stdio: 'pipe' },
      );
      const answer = await askUntilUp(port, 'qwen-tiny');
      expect(answer?.choices[0].message.role).toBe('assistant');
      expect(typeof answer?.choices[0].message.content).toBe('string');

      const synth = spawnSync(
        process.execPath,
        [
          ...CLI,
          'synth',
          '--out',
          path.join(tmp, 'synth'),
          '--split',
          'test',
          '--pairs',
          '1',
          '--num-frames',
          '4',
          '--size',
          '64',
          '--no-frames',
        ],
        { cwd: ROOT, encoding: 'utf8' },
      );
      expect(synth.status).toBe(0);
      const ev = crpo([
        'eval',
        path.join(tmp, 'synth', 'test.jsonl'),
        '--base-url',
        `http://127.0.0.1:${port}/v1`,
        '--model',
        'qwen-tiny',
        '--frames',
        '4',
        '--max-pixels',
        '4096',
        '--limit',
        '2',
        '--out',
        path.join(tmp, 'eval'),
      ]);
      expect(ev.status).toBe(0);
      const samples = fs
        .readFileSync(path.join(tmp, 'eval', 'samples.jsonl'), 'utf8')
        .trim()
        .split('\n');
      expect(samples.length).toBe(4);
    } finally {
      server?.kill();
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  }, 300000);

  test('crpo serve of the base Hugging Face folder answers (no checkpoint needed)', async () => {
    const port = await freePort();
    const server = spawn(process.execPath, [...CLI, 'serve', MODEL, '--host', '127.0.0.1', '--port', String(port)], {
      cwd: ROOT,
      stdio: 'pipe',
    });
    let out = '';
    server.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
    });
    try {
      const answer = await askUntilUp(port, 'qwen3_vl');
      expect(answer?.model).toBe('qwen3_vl');
      expect(answer?.choices[0].message.role).toBe('assistant');
      expect(typeof answer?.choices[0].message.content).toBe('string');
      expect(out).toContain('loading Hugging Face qwen3_vl folder');
    } finally {
      server.kill();
    }
  }, 180000);
});
