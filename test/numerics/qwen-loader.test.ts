/**
 * Loading HF model folders (lib/hf/model.ts): sharded checkpoints with an index file give the
 * same logits as the single file; missing, unexpected and mis-shaped weights and unsupported
 * architectures are refused with one message naming them; export writes an HF folder (the
 * checkpoint's own key names) that loads back to bit-identical logits.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { QwenVLModel } from '../../lib/hf/model';
import { readSafetensors, writeSafetensors } from '../../lib/hf/safetensors';
import { liveHandleCount } from '../../lib/native';
import { GOLDEN_ROOT, caseInputs, goldenSkipReason, readCase } from './golden-qwen-helpers';
import { skipIf } from '../helpers/skip';

const MODEL = 'qwen2_5_vl';
const reason = goldenSkipReason(MODEL);
const SRC = path.join(GOLDEN_ROOT, MODEL);

function copyWith(
  dir: string,
  edit: (t: Map<string, { shape: number[]; data: Float32Array }>) => void,
  config?: (c: Record<string, unknown>) => void,
): void {
  fs.mkdirSync(dir, { recursive: true });
  const cfg = JSON.parse(fs.readFileSync(path.join(SRC, 'config.json'), 'utf8')) as Record<string, unknown>;
  if (config) config(cfg);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(cfg));
  const t = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [k, v] of readSafetensors(path.join(SRC, 'model.safetensors')))
    t.set(k, { shape: v.shape, data: v.data as Float32Array });
  edit(t);
  writeSafetensors(
    path.join(dir, 'model.safetensors'),
    [...t].map(([name, v]) => ({ name, shape: v.shape, dtype: 'F32' as const })),
    (n) => t.get(n)!.data,
  );
}

skipIf(reason).describe('Qwen model folders', () => {
  let tmp: string;
  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-qwen-'));
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  test('sharded checkpoint with index equals the single file; export round trip is bit-exact', async () => {
    const dir = path.join(tmp, 'sharded');
    fs.mkdirSync(dir);
    fs.copyFileSync(path.join(SRC, 'config.json'), path.join(dir, 'config.json'));
    const all = [...readSafetensors(path.join(SRC, 'model.safetensors'))];
    const half = Math.ceil(all.length / 2);
    const shards = [all.slice(0, half), all.slice(half)];
    const weightMap: Record<string, string> = {};
    shards.forEach((s, i) => {
      const file = `model-0000${i + 1}-of-00002.safetensors`;
      writeSafetensors(
        path.join(dir, file),
        s.map(([name, v]) => ({ name, shape: v.shape, dtype: 'F32' as const })),
        (n) => s.find(([k]) => k === n)![1].data as Float32Array,
      );
      for (const [k] of s) weightMap[k] = file;
    });
    fs.writeFileSync(
      path.join(dir, 'model.safetensors.index.json'),
      JSON.stringify({ metadata: {}, weight_map: weightMap }),
    );
    const inputs = caseInputs(readCase(MODEL, 'video'));
    const before = liveHandleCount();
    const a = await QwenVLModel.load(SRC);
    const b = await QwenVLModel.load(dir);
    const ra = await a.forward(inputs);
    const rb = await b.forward(inputs);
    expect(Array.from(rb.logits.data)).toEqual(Array.from(ra.logits.data));
    const out = path.join(tmp, 'exported');
    b.exportTo(out);
    const keys = [...readSafetensors(path.join(out, 'model.safetensors')).keys()].sort();
    expect(keys).toEqual(all.map(([k]) => k).sort()); // transformers' names as stored (visual.*, model.*)
    const c = await QwenVLModel.load(out);
    const rc = await c.forward(inputs);
    expect(Array.from(rc.logits.data)).toEqual(Array.from(ra.logits.data));
    for (const m of [a, b, c]) m.dispose();
    expect(liveHandleCount()).toBe(before);
  });

  test('missing, unexpected and mis-shaped weights are listed in one message', async () => {
    const dir = path.join(tmp, 'bad');
    copyWith(dir, (t) => {
      t.delete('model.norm.weight');
      t.set('model.extra.weight', { shape: [2], data: new Float32Array(2) });
      t.set('visual.merger.ln_q.weight', { shape: [31], data: new Float32Array(31) });
    });
    await expect(QwenVLModel.load(dir)).rejects.toMatchObject({
      code: 'ERR_CRPO_MODEL_LOAD',
      message: expect.stringMatching(
        /missing 1: model\.language_model\.norm\.weight; unexpected 1: model\.extra\.weight; mis-shaped 1: visual\.merger\.ln_q\.weight: \[31\] in model\.safetensors, expected \[32\]/,
      ),
    });
  });

  test('unsupported architectures are refused naming the supported ones', async () => {
    const dir = path.join(tmp, 'llava');
    copyWith(
      dir,
      () => undefined,
      (c) => {
        c.model_type = 'llava';
        c.architectures = ['LlavaForConditionalGeneration'];
      },
    );
    await expect(QwenVLModel.load(dir)).rejects.toMatchObject({
      code: 'ERR_CRPO_MODEL_CONFIG',
      message: expect.stringMatching(
        /unsupported architecture \(model_type "llava".*supported: model_type 'qwen2_5_vl'.*'qwen3_vl'/,
      ),
    });
  });

  test('bad inputs are refused with the place and the values, never a crash', async () => {
    const m = await QwenVLModel.load(SRC);
    const inputs = caseInputs(readCase(MODEL, 'video'));
    await expect(
      m.forward({ ...inputs, inputIds: [inputs.inputIds[0].map((x, i) => (i === 3 ? 999 : x))] }),
    ).rejects.toMatchObject({
      code: 'ERR_CRPO_TORCH',
      message: expect.stringMatching(/token ids must be in \[0, 320\) but range over \[\d+, 999\]/),
    });
    await expect(
      m.forward({ ...inputs, pixelValuesVideos: inputs.pixelValuesVideos!.subarray(0, 16 * 1176) }),
    ).rejects.toMatchObject({
      message: expect.stringMatching(
        /pixel rows of call0 must be \(32, 1176\) for the grids given but are \[16, 1176\]/,
      ),
    });
    await expect(
      m.forward({
        ...inputs,
        videoGridThw: [[2, 4, 2]],
        pixelValuesVideos: inputs.pixelValuesVideos!.subarray(0, 16 * 1176),
      }),
    ).rejects.toMatchObject({
      message: expect.stringMatching(/Video features and Video tokens do not match: tokens: 8, features 4/),
    });
    m.dispose();
    await expect(m.forward(inputs)).rejects.toMatchObject({ code: 'ERR_CRPO_DISPOSED' });
  });

  test('a folder without weights says what it looked for', async () => {
    const dir = path.join(tmp, 'empty');
    fs.mkdirSync(dir);
    fs.copyFileSync(path.join(SRC, 'config.json'), path.join(dir, 'config.json'));
    await expect(QwenVLModel.load(dir)).rejects.toMatchObject({
      code: 'ERR_CRPO_MODEL_LOAD',
      message: expect.stringMatching(/no model\.safetensors or model\.safetensors\.index\.json/),
    });
  });
});
