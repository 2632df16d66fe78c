/**
 * Random-initialised Qwen2.5-VL folders for the benchmarks (bench/qwen): the 25 M shape of issue 18
 * (LM 4 x 512, vision 4 x 256) and a larger one (LM 8 x 768, vision 4 x 384), with small
 * vocabularies (special tokens at the top) so that the LM body, not the vocabulary projection, is
 * the work; and the rows of one prompt (text, a 2-frame video, text) with G completions.
 */
import * as fs from 'fs';
import * as path from 'path';
import { expectedWeights, parseQwenConfig } from '../../lib/hf/config';
import { fillNormal, initConfig, initKind } from '../../lib/hf/init';
import type { QwenInputs } from '../../lib/hf/model';
import { writeSafetensors } from '../../lib/hf/safetensors';

export interface Size {
  name: string;
  lm: { hidden: number; intermediate: number; layers: number; heads: number; kvHeads: number; vocab: number };
  vision: { depth: number; hidden: number; intermediate: number; heads: number };
  /** Merged visual tokens (a 2-frame video of grid (2, h, w): h * w / 2 tokens), prompt text, completion. */
  grid: [number, number, number];
  text: number;
  completion: number;
}

export const SIZES: Size[] = [
  {
    name: '25m',
    lm: { hidden: 512, intermediate: 1376, layers: 4, heads: 8, kvHeads: 2, vocab: 8192 },
    vision: { depth: 4, hidden: 256, intermediate: 1024, heads: 4 },
    grid: [2, 16, 8], // 64 visual tokens
    text: 64,
    completion: 32,
  },
  {
    name: '86m',
    lm: { hidden: 768, intermediate: 2048, layers: 8, heads: 12, kvHeads: 4, vocab: 16384 },
    vision: { depth: 4, hidden: 384, intermediate: 1024, heads: 6 },
    grid: [2, 24, 16], // 192 visual tokens
    text: 64,
    completion: 64,
  },
];

/** Completions per prompt in the speed benchmark. */
export const G = 8;
// special tokens at the top of the small vocabulary
const tokensOf = (vocab: number) => ({
  visionStart: vocab - 6,
  visionEnd: vocab - 5,
  visionPad: vocab - 4,
  image: vocab - 3,
  video: vocab - 2,
  eos: vocab - 1,
});

/** A random-initialised Qwen2.5-VL folder of this size (transformers' init: N(0, 0.02), norms 1, biases 0). */
export function writeRandomFolder(s: Size, dir: string): number {
  const t = tokensOf(s.lm.vocab);
  const raw = initConfig(
    'qwen2_5_vl',
    {
      ...s.lm,
      tie: false,
      mropeSection: [8, 12, 12].map((x) => (x * s.lm.hidden) / s.lm.heads / 64),
      vision: { ...s.vision, fullatt: [s.vision.depth - 1], windowSize: 112 },
    },
    'float32',
  );
  Object.assign(raw, {
    bos_token_id: t.eos,
    eos_token_id: t.eos,
    vision_start_token_id: t.visionStart,
    vision_end_token_id: t.visionEnd,
    vision_token_id: t.visionPad,
    image_token_id: t.image,
    video_token_id: t.video,
  });
  const cfg = parseQwenConfig(raw, `bench ${s.name}`);
  const weights = expectedWeights(cfg);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(raw, null, 2) + '\n');
  const specs = [...weights].map(([name, shape]) => ({ name, shape, dtype: 'F32' as const }));
  let seed = 1;
  writeSafetensors(path.join(dir, 'model.safetensors'), specs, (name) => {
    const out = new Float32Array(weights.get(name)!.reduce((a, b) => a * b, 1));
    const kind = initKind(name);
    if (kind === 'ones') out.fill(1);
    else if (kind === 'normal') fillNormal(out, seed++, 0.02);
    return out;
  });
  return specs.reduce((a, x) => a + x.shape.reduce((p, q) => p * q, 1), 0);
}

/** G rows of one prompt: [text/2, <vision_start>, video x N, <vision_end>, text/2] + a completion each. */
export function groupRows(s: Size, G: number, seed: number): { inputs: QwenInputs; prefix: number; L: number } {
  const t = tokensOf(s.lm.vocab);
  let r = seed >>> 0;
  const tok = () => (r = (Math.imul(r, 1103515245) + 12345) >>> 0) % (s.lm.vocab - 8);
  const [gt, gh, gw] = s.grid;
  const nvis = (gt * gh * gw) / 4;
  const half = Array.from({ length: s.text / 2 }, tok);
  const prompt = [...half, t.visionStart, ...Array(nvis).fill(t.video), t.visionEnd, ...half];
  const inputIds = Array.from({ length: G }, () => [...prompt, ...Array.from({ length: s.completion }, tok)]);
  const patchDim = 3 * 2 * 14 * 14;
  const pixels = new Float32Array(gt * gh * gw * patchDim);
  fillNormal(pixels, seed, 1);
  return {
    inputs: {
      inputIds,
      attentionMask: inputIds.map((x) => x.map(() => 1)),
      pixelValuesVideos: pixels,
      videoGridThw: [s.grid],
      videoRepeats: [G],
      secondPerGridTs: [1],
    },
    prefix: prompt.length,
    L: prompt.length + s.completion,
  };
}
