/**
 * `crpo hf init` (lib/hf/init.ts): the published shapes read back through crpo's config parser
 * with the published parameter counts (Qwen2.5-VL-3B 3.75 B, 7B 8.29 B; Qwen3-VL-2B 2.13 B,
 * 4B 4.44 B, 8B 8.77 B, as on their model cards); transformers-style initialisation; and, at the
 * tiny size, a folder that the loader, the real tokenizer and `crpo train --model` take as they
 * take a downloaded checkpoint (both architectures, F32 and BF16).
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { expectedWeights, parseQwenConfig, readQwenConfig } from '../../lib/hf/config';
import { fillNormal, INIT_SIZES, initConfig, initKind, initQwenFolder } from '../../lib/hf/init';
import { QwenVLModel } from '../../lib/hf/model';
import { readSafetensors } from '../../lib/hf/safetensors';
import { tokenizerFor } from '../../lib/hf/tokenizer';
import { hasAddon } from '../../lib/native';
import { skipIf } from '../helpers/skip';

const ROOT = path.resolve(__dirname, '..', '..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-hf-init-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function crpo(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const cli = ['-r', path.join(ROOT, 'scripts/ts-register.js'), path.join(ROOT, 'test/fixtures/eval-cli.js')];
  const r = spawnSync(process.execPath, [...cli, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 280000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const count = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

describe('published shapes', () => {
  const published: Record<string, number> = {
    'qwen2_5_vl 3b': 3.75e9,
    'qwen2_5_vl 7b': 8.29e9,
    'qwen3_vl 2b': 2.13e9,
    'qwen3_vl 4b': 4.44e9,
    'qwen3_vl 8b': 8.77e9,
  };
  for (const [key, params] of Object.entries(published)) {
    test(`${key}: the written config parses back to ${(params / 1e9).toFixed(2)} B parameters`, () => {
      const [arch, size] = key.split(' ') as ['qwen2_5_vl' | 'qwen3_vl', string];
      const cfg = parseQwenConfig(initConfig(arch, INIT_SIZES[arch][size], 'bfloat16'));
      let n = 0;
      for (const s of expectedWeights(cfg).values()) n += count(s);
      expect(Math.abs(n - params) / params).toBeLessThan(0.005);
      expect(cfg.imageTokenId).toBe(151655);
      expect(cfg.videoTokenId).toBe(151656);
    });
  }

  test('initialisation as transformers: norm weights 1, biases 0, the rest N(0, 0.02), seeded', () => {
    expect(initKind('model.language_model.layers.3.input_layernorm.weight')).toBe('ones');
    expect(initKind('model.language_model.layers.3.self_attn.q_norm.weight')).toBe('ones');
    expect(initKind('model.visual.merger.ln_q.weight')).toBe('ones');
    expect(initKind('model.visual.blocks.0.norm2.weight')).toBe('ones');
    expect(initKind('model.visual.blocks.0.attn.qkv.bias')).toBe('zeros');
    expect(initKind('model.visual.pos_embed.weight')).toBe('normal');
    expect(initKind('model.language_model.embed_tokens.weight')).toBe('normal');
    const a = new Float32Array(200001);
    fillNormal(a, 7, 0.02);
    const mean = a.reduce((s, v) => s + v, 0) / a.length;
    const std = Math.sqrt(a.reduce((s, v) => s + (v - mean) ** 2, 0) / a.length);
    expect(Math.abs(mean)).toBeLessThan(2e-4);
    expect(Math.abs(std - 0.02)).toBeLessThan(2e-4);
    const b = new Float32Array(200001);
    fillNormal(b, 7, 0.02);
    const same = (x: Float32Array, y: Float32Array) => Buffer.from(x.buffer).equals(Buffer.from(y.buffer));
    expect(same(a, b)).toBe(true);
    fillNormal(b, 8, 0.02);
    expect(same(a, b)).toBe(false);
  });

  test('bad options are refused naming the value', () => {
    const x = path.join(tmp, 'x');
    expect(() => initQwenFolder({ arch: 'qwen3_vl', size: '3b', dtype: 'bfloat16', out: x })).toThrow(
      "unknown size '3b' for qwen3_vl; known: tiny, 2b, 4b, 8b",
    );
    expect(() => initQwenFolder({ arch: 'qwen2_5_vl', size: 'tiny', dtype: 'float16' as 'float32', out: x })).toThrow(
      "Expected 'float32' or 'bfloat16' for dtype but received 'float16' of type string",
    );
    const full = path.join(tmp, 'full');
    fs.mkdirSync(full);
    fs.writeFileSync(path.join(full, 'keep.txt'), 'x');
    expect(() => initQwenFolder({ arch: 'qwen2_5_vl', size: 'tiny', dtype: 'float32', out: full })).toThrow(
      `--out ${full}: exists and is not an empty folder; choose a new folder`,
    );
    const r = crpo(['hf', 'init', '--arch', 'qwen9', '--size', 'tiny', '--out', path.join(tmp, 'y')]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/Invalid values:\n\s+Argument: arch, Given: "qwen9", Choices: "qwen2_5_vl", "qwen3_vl"/);
  }, 60000);
});

const torchSkip = hasAddon('torch') ? undefined : 'the torch addon is not built (npm run build:torch)';
const title = `tiny folders from crpo hf init`;
skipIf(torchSkip).describe(title, () => {
  for (const [arch, dtype] of [
    ['qwen2_5_vl', 'float32'],
    ['qwen3_vl', 'bfloat16'],
  ] as const) {
    test(`${arch} ${dtype}: files, weights, tokenizer, loader`, async () => {
      const out = path.join(tmp, `${arch}-${dtype}`);
      const r = crpo(['hf', 'init', '--arch', arch, '--size', 'tiny', '--dtype', dtype, '--seed', '3', '--out', out]);
      expect(r.stderr).toContain(`${arch} tiny: 0.010 B parameters`);
      expect(r.status).toBe(0);
      const files = ['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json'];
      files.push('tokenizer_config.json');
      expect(fs.readdirSync(out).sort()).toEqual(files);
      const cfg = readQwenConfig(path.join(out, 'config.json'));
      const file = readSafetensors(path.join(out, 'model.safetensors'));
      const want = expectedWeights(cfg);
      expect([...file.keys()].sort()).toEqual([...want.keys()].sort());
      for (const [name, t] of file) {
        const stored = dtype === 'float32' ? 'F32' : 'BF16';
        expect({ name, dtype: t.dtype, shape: t.shape }).toEqual({ name, dtype: stored, shape: want.get(name) });
        const d = t.data as Float32Array;
        const kind = initKind(name);
        const constant = kind === 'ones' ? 1 : 0;
        if (kind !== 'normal') expect({ name, all: d.every((v) => v === constant) }).toEqual({ name, all: true });
      }
      const emb = file.get('model.language_model.embed_tokens.weight')!.data as Float32Array;
      const std = Math.sqrt(emb.reduce((s, v) => s + v * v, 0) / emb.length);
      expect(Math.abs(std - 0.02)).toBeLessThan(1e-3);

      // the real Qwen vocabulary, with the vision tokens at the config's ids
      const tok = tokenizerFor(out, cfg);
      expect(tok.source).toBe(path.join(out, 'tokenizer.json'));
      expect(tok.tokenId('<|video_pad|>')).toBe(cfg.videoTokenId);
      expect(tok.tokenId('<|vision_start|>')).toBe(cfg.visionStartTokenId);
      expect(tok.tokenId('<|im_end|>')).toBe(151645);

      const m = await QwenVLModel.load(out);
      try {
        const w = m.getParam('model.language_model.norm.weight').data;
        expect(Array.from(w).every((v) => v === 1)).toBe(true);
        const ids = tok.encode('<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n');
        const greedy3 = { maxNewTokens: 3, temperature: 0, seed: 0, eosTokenId: 151645 };
        const g = await m.generate({ inputIds: [ids] }, greedy3);
        expect(g.tokens[0].length).toBeGreaterThan(0);
        expect(g.tokens[0].every((t) => t >= 0 && t < cfg.text.vocabSize)).toBe(true);
      } finally {
        m.dispose();
      }
    }, 120000);
  }

  test('crpo train --model <init folder> trains one step', () => {
    const model = path.join(tmp, 'qwen2_5_vl-float32');
    if (!fs.existsSync(model)) throw new Error(`${model} was not written by the test above`);
    const out = path.join(tmp, 'run');
    const r = crpo([
      'train',
      '--model',
      model,
      '--data',
      'synthetic',
      '--val-data',
      '',
      '--set',
      'data.frames=4',
      '--set',
      'data.size=56',
      '--set',
      'data.pairs=4',
      '--set',
      'batchSize=1',
      '--set',
      'groupSize=2',
      '--set',
      'maxNewTokens=2',
      '--steps',
      '1',
      '--out',
      out,
    ]);
    expect(r.stderr).toContain(`policy qwen from ${model}`);
    expect(r.status).toBe(0);
    const text = fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim();
    const lines = text.split('\n').map((l) => JSON.parse(l) as { step: number; tokens: number; entropy: number });
    expect(lines.map((l) => l.step)).toEqual([1]);
    expect(lines[0].tokens).toBeGreaterThan(0);
    // a random model over the real vocabulary: entropy near log(151936) = 11.93
    expect(lines[0].entropy).toBeGreaterThan(11);
  }, 300000);
});
