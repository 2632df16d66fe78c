/**
 * `--model <folder>` with Hugging Face Qwen folders and the folder's own chat template: the qwen
 * policy renders prompts through the folder's template (here Qwen2.5-VL's published one, a
 * fixture, next to the golden weights) and samples exactly what the ChatML fallback of the bare
 * golden folder samples; a template that raises stops generation with its message; and
 * `crpo train --model` trains on the golden Qwen3-VL folder and on the folder with the template.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { QwenPolicy } from '../../lib/policy/qwen';
import type { PolicyPrompt } from '../../lib/policy/policy';
import { GOLDEN_ROOT, goldenSkipReason } from '../numerics/golden-qwen-helpers';
import { skipIf } from '../helpers/skip';

const ROOT = path.resolve(__dirname, '..', '..');
const FIXTURE = path.join(ROOT, 'test', 'fixtures', 'qwen2_5_vl', 'chat_template.json');
const reason = goldenSkipReason('qwen2_5_vl') ?? goldenSkipReason('qwen3_vl');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-model-flag-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** The golden Qwen2.5-VL weights and config (symlinked) plus a chat template. */
function withTemplate(name: string, templateJson: string): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir);
  for (const f of ['config.json', 'model.safetensors']) {
    fs.symlinkSync(path.join(GOLDEN_ROOT, 'qwen2_5_vl', f), path.join(dir, f));
  }
  fs.writeFileSync(path.join(dir, 'chat_template.json'), templateJson);
  return dir;
}

function prompt(): PolicyPrompt {
  const [T, H, W] = [4, 56, 56];
  const frames = new Uint8Array(T * H * W * 3);
  for (let i = 0; i < frames.length; i++) frames[i] = (i * 37 + (i >> 7)) & 255;
  const question = 'Which way does the ball roll?';
  const prompt = `${question}\nA. left\nB. right`;
  return { frames, frameShape: [T, H, W, 3], question, options: ['left', 'right'], prompt };
}

function crpo(args: string[]): { status: number | null; out: string } {
  const cli = ['-r', path.join(ROOT, 'scripts/ts-register.js'), path.join(ROOT, 'test/fixtures/eval-cli.js')];
  const r = spawnSync(process.execPath, [...cli, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 240000 });
  return { status: r.status, out: `${r.stdout}\n${r.stderr}` };
}

const common = [
  '--data',
  'synthetic',
  '--val-data',
  '',
  '--set',
  'data.frames=4',
  '--set',
  'data.pairs=4',
  '--set',
  'batchSize=2',
  '--set',
  'groupSize=2',
  '--set',
  'maxNewTokens=4',
  '--steps',
  '1',
];

const title = `--model with Qwen folders and their chat templates`;
skipIf(reason).describe(title, () => {
  test("the folder's template is used: the fallback's samples; a raising template stops generation", async () => {
    const templated = await QwenPolicy.create({ model: withTemplate('qwen25', fs.readFileSync(FIXTURE, 'utf8')) });
    const bare = await QwenPolicy.create({ model: path.join(GOLDEN_ROOT, 'qwen2_5_vl') });
    const raisingTemplate = JSON.stringify({ chat_template: "{{ raise_exception('no videos here') }}" });
    const raising = await QwenPolicy.create({ model: withTemplate('raises', raisingTemplate) });
    try {
      expect(templated.chatTemplate.source).toBe(path.join(tmp, 'qwen25', 'chat_template.json'));
      expect(bare.chatTemplate.source).toBe('built-in ChatML');
      const o = { samples: 3, temperature: 1, maxNewTokens: 6, seed: 11 };
      const a = await templated.generate([prompt()], o);
      const b = await bare.generate([prompt()], o);
      expect(a[0].map((c) => c.tokens)).toEqual(b[0].map((c) => c.tokens));
      expect(a[0].map((c) => c.logprobs)).toEqual(b[0].map((c) => c.logprobs));
      await expect(raising.generate([prompt()], o)).rejects.toMatchObject({
        code: 'ERR_CRPO_CHAT_TEMPLATE',
        message: `${path.join(tmp, 'raises', 'chat_template.json')}: rendering the chat template failed: no videos here`,
      });
    } finally {
      templated.dispose();
      bare.dispose();
      raising.dispose();
    }
  }, 120000);

  test('crpo train --model <golden Qwen3-VL folder> and --model <Qwen2.5-VL folder with its template> train', () => {
    const templated = withTemplate('cli', fs.readFileSync(FIXTURE, 'utf8'));
    const folders = [
      [path.join(GOLDEN_ROOT, 'qwen3_vl'), '64'],
      [templated, '56'],
    ];
    for (const [model, size] of folders) {
      const out = path.join(tmp, `run-${path.basename(model)}`);
      const r = crpo(['train', '--model', model, ...common, '--set', `data.size=${size}`, '--out', out]);
      expect(r.out).toContain(`policy qwen from ${model}`);
      expect(r.status).toBe(0);
      const lines = fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n');
      const metrics = lines.map((l) => JSON.parse(l) as { step: number; tokens: number });
      expect(metrics.map((m) => m.step)).toEqual([1]);
      expect(metrics[0].tokens).toBeGreaterThan(0);
    }
  }, 300000);
});
