/**
 * Config fidelity (lib/hf/config.ts): every config.json field crpo reads takes transformers' class
 * default when the file omits it, as folders written by `save_pretrained` (which leaves out fields
 * equal to their default) rely on. The defaults below are written down from transformers' source:
 *   Qwen2.5-VL: transformers 4.49.0.dev0 (commit 7ec35bc3bdc1), configuration_qwen2_5_vl.py,
 *               Qwen2_5_VLConfig and Qwen2_5_VLVisionConfig (the version behind the golden files);
 *   Qwen3-VL:   transformers 4.57.0.dev0 (commit 750dd2a401b8), configuration_qwen3_vl.py,
 *               Qwen3VLConfig, Qwen3VLTextConfig and Qwen3VLVisionConfig; mrope_section [24, 20, 20]
 *               is the default of Qwen3VLTextRotaryEmbedding (modeling_qwen3_vl.py).
 * `null` = no default in transformers (the field is required). Each field is omitted in turn from a
 * complete config whose values all differ from the defaults. Then the rope positions of the golden
 * Qwen2.5-VL video with `tokens_per_second` omitted follow the golden data's rule at the default (4).
 */
import * as fs from 'fs';
import * as path from 'path';
import { parseQwenConfig, resolveQwenFields, type QwenVLConfig } from '../../lib/hf/config';
import { ropeIndex } from '../../lib/hf/rope-index';
import { readSafetensors } from '../../lib/hf/safetensors';
import { skipIf } from '../helpers/skip';

type Json = Record<string, unknown>;

const TRANSFORMERS_DEFAULTS: Record<'qwen2_5_vl' | 'qwen3_vl', Record<string, unknown>> = {
  // transformers 4.49.0.dev0
  qwen2_5_vl: {
    'text_config.vocab_size': 152064,
    'text_config.hidden_size': 8192,
    'text_config.intermediate_size': 29568,
    'text_config.num_hidden_layers': 80,
    'text_config.num_attention_heads': 64,
    'text_config.num_key_value_heads': 8,
    'text_config.hidden_act': 'silu',
    'text_config.rms_norm_eps': 1e-5,
    'text_config.rope_theta': 1e6,
    'text_config.rope_scaling.mrope_section': null,
    tie_word_embeddings: false,
    image_token_id: null,
    video_token_id: null,
    vision_start_token_id: null,
    vision_end_token_id: null,
    'vision_config.depth': 32,
    'vision_config.hidden_size': 3584,
    'vision_config.hidden_act': 'silu',
    'vision_config.intermediate_size': 3420,
    'vision_config.num_heads': 16,
    'vision_config.in_channels': 3,
    'vision_config.patch_size': 14,
    'vision_config.spatial_merge_size': 2,
    'vision_config.temporal_patch_size': 2,
    'vision_config.tokens_per_second': 4,
    'vision_config.window_size': 112,
    'vision_config.out_hidden_size': 3584,
    'vision_config.fullatt_block_indexes': [7, 15, 23, 31],
  },
  // transformers 4.57.0.dev0
  qwen3_vl: {
    'text_config.vocab_size': 151936,
    'text_config.hidden_size': 4096,
    'text_config.intermediate_size': 22016,
    'text_config.num_hidden_layers': 32,
    'text_config.num_attention_heads': 32,
    'text_config.num_key_value_heads': 32,
    'text_config.head_dim': 128,
    'text_config.hidden_act': 'silu',
    'text_config.rms_norm_eps': 1e-6,
    'text_config.rope_theta': 5e6,
    'text_config.rope_scaling.mrope_section': [24, 20, 20],
    'text_config.attention_bias': false,
    tie_word_embeddings: false,
    image_token_id: 151655,
    video_token_id: 151656,
    vision_start_token_id: 151652,
    vision_end_token_id: 151653,
    'vision_config.depth': 27,
    'vision_config.hidden_size': 1152,
    'vision_config.hidden_act': 'gelu_pytorch_tanh',
    'vision_config.intermediate_size': 4304,
    'vision_config.num_heads': 16,
    'vision_config.in_channels': 3,
    'vision_config.patch_size': 16,
    'vision_config.spatial_merge_size': 2,
    'vision_config.temporal_patch_size': 2,
    'vision_config.out_hidden_size': 3584,
    'vision_config.num_position_embeddings': 2304,
    'vision_config.deepstack_visual_indexes': [8, 16, 24],
  },
};

/** Complete configs, every value different from its default (so that omitting it shows). */
const TOKENS = { image_token_id: 300, video_token_id: 301, vision_start_token_id: 302, vision_end_token_id: 303 };
const Q25: Json = {
  model_type: 'qwen2_5_vl',
  ...TOKENS,
  vocab_size: 320,
  hidden_size: 64,
  intermediate_size: 128,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  hidden_act: 'gelu',
  rms_norm_eps: 1e-6,
  rope_theta: 10000,
  rope_scaling: { type: 'mrope', mrope_section: [2, 3, 3] },
  tie_word_embeddings: true,
  vision_config: {
    depth: 2,
    hidden_size: 32,
    hidden_act: 'gelu',
    intermediate_size: 64,
    num_heads: 2,
    in_channels: 1,
    patch_size: 16,
    spatial_merge_size: 4,
    temporal_patch_size: 3,
    tokens_per_second: 2,
    window_size: 56,
    out_hidden_size: 64,
    fullatt_block_indexes: [1],
  },
};
const Q3: Json = {
  model_type: 'qwen3_vl',
  ...TOKENS,
  tie_word_embeddings: true,
  text_config: {
    vocab_size: 320,
    hidden_size: 64,
    intermediate_size: 128,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    head_dim: 16,
    hidden_act: 'gelu',
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    rope_scaling: { rope_type: 'default', mrope_section: [4, 2, 2], mrope_interleaved: true },
    attention_bias: true,
  },
  vision_config: {
    depth: 2,
    hidden_size: 32,
    hidden_act: 'silu',
    intermediate_size: 64,
    num_heads: 2,
    in_channels: 1,
    patch_size: 14,
    spatial_merge_size: 4,
    temporal_patch_size: 3,
    out_hidden_size: 64,
    num_position_embeddings: 36,
    deepstack_visual_indexes: [0],
  },
};
const BASE = { qwen2_5_vl: Q25, qwen3_vl: Q3 };

/** Where a field lives in a file: Qwen2.5-VL keeps its text fields at the top level. */
function location(arch: 'qwen2_5_vl' | 'qwen3_vl', key: string): string[] {
  const parts = key.split('.');
  return arch === 'qwen2_5_vl' && parts[0] === 'text_config' ? parts.slice(1) : parts;
}

function without(arch: 'qwen2_5_vl' | 'qwen3_vl', key: string): Json {
  const c = JSON.parse(JSON.stringify(BASE[arch])) as Json;
  const loc = location(arch, key);
  let o = c;
  for (const p of loc.slice(0, -1)) o = o[p] as Json;
  delete o[loc[loc.length - 1]];
  return c;
}

/** The normalised field each config key becomes (parseQwenConfig's output). */
const NORMALISED: Record<string, (c: QwenVLConfig) => unknown> = {
  'text_config.vocab_size': (c) => c.text.vocabSize,
  'text_config.hidden_size': (c) => c.text.hiddenSize,
  'text_config.intermediate_size': (c) => c.text.intermediateSize,
  'text_config.num_hidden_layers': (c) => c.text.numLayers,
  'text_config.num_attention_heads': (c) => c.text.numHeads,
  'text_config.num_key_value_heads': (c) => c.text.numKvHeads,
  'text_config.head_dim': (c) => c.text.headDim,
  'text_config.hidden_act': (c) => c.text.hiddenAct,
  'text_config.rms_norm_eps': (c) => c.text.rmsNormEps,
  'text_config.rope_theta': (c) => c.text.ropeTheta,
  'text_config.rope_scaling.mrope_section': (c) => c.text.mropeSection,
  'text_config.attention_bias': (c) => c.text.attentionBias,
  tie_word_embeddings: (c) => c.text.tieWordEmbeddings,
  image_token_id: (c) => c.imageTokenId,
  video_token_id: (c) => c.videoTokenId,
  vision_start_token_id: (c) => c.visionStartTokenId,
  vision_end_token_id: (c) => c.visionEndTokenId,
  'vision_config.depth': (c) => c.vision.depth,
  'vision_config.hidden_size': (c) => c.vision.hiddenSize,
  'vision_config.hidden_act': (c) => c.vision.hiddenAct,
  'vision_config.intermediate_size': (c) => c.vision.intermediateSize,
  'vision_config.num_heads': (c) => c.vision.numHeads,
  'vision_config.in_channels': (c) => c.vision.inChannels,
  'vision_config.patch_size': (c) => c.vision.patchSize,
  'vision_config.spatial_merge_size': (c) => c.vision.spatialMergeSize,
  'vision_config.temporal_patch_size': (c) => c.vision.temporalPatchSize,
  'vision_config.tokens_per_second': (c) => c.vision.tokensPerSecond,
  'vision_config.window_size': (c) => c.vision.windowSize,
  'vision_config.out_hidden_size': (c) => c.vision.outHiddenSize,
  'vision_config.fullatt_block_indexes': (c) => c.vision.fullattBlockIndexes,
  'vision_config.num_position_embeddings': (c) => c.vision.numPositionEmbeddings,
  'vision_config.deepstack_visual_indexes': (c) => c.vision.deepstackVisualIndexes,
};

/**
 * Omissions whose default contradicts the rest of the small base config: parseQwenConfig names the
 * contradiction (transformers would fail at load time on mismatched weight shapes instead).
 */
const MROPE = 'rope_scaling.mrope_section';
const OMITTED_OUT =
  'vision_config.out_hidden_size 3584 (its class default, the file omits it) differs from the LM hidden_size 64';
const CONFLICTS: Record<string, Record<string, string>> = {
  qwen2_5_vl: {
    'text_config.hidden_size': 'rope_scaling.mrope_section [2,3,3] must have 3 entries summing to head_dim / 2 = 1024',
    // 64 heads of a 64-wide LM give head_dim 1: the mrope sections (sum 8) no longer fit
    'text_config.num_attention_heads': `${MROPE} [2,3,3] must have 3 entries summing to head_dim / 2 = 0.5`,
    'text_config.num_key_value_heads': 'num_attention_heads 4 is not a multiple of num_key_value_heads 8',
    'vision_config.out_hidden_size': OMITTED_OUT,
  },
  qwen3_vl: {
    'text_config.hidden_size': 'vision_config.out_hidden_size 64 differs from the LM hidden_size 4096',
    'text_config.num_key_value_heads': 'num_attention_heads 4 is not a multiple of num_key_value_heads 32',
    'text_config.head_dim': 'rope_scaling.mrope_section [4,2,2] must have 3 entries summing to head_dim / 2 = 64',
    'text_config.rope_scaling.mrope_section': `${MROPE} [24,20,20] must have 3 entries summing to head_dim / 2 = 8`,
    'vision_config.out_hidden_size': OMITTED_OUT,
  },
};

for (const arch of ['qwen2_5_vl', 'qwen3_vl'] as const) {
  const table = TRANSFORMERS_DEFAULTS[arch];
  describe(`${arch} config defaults (transformers ${arch === 'qwen2_5_vl' ? '4.49' : '4.57'})`, () => {
    test('crpo reads exactly the fields of the table; the base config sets every one to a non-default value', () => {
      expect(Object.keys(resolveQwenFields(BASE[arch])).sort()).toEqual(Object.keys(table).sort());
      const full = resolveQwenFields(BASE[arch]);
      for (const [k, d] of Object.entries(table)) expect({ k, v: full[k] }).not.toEqual({ k, v: d });
    });

    for (const [key, dflt] of Object.entries(table)) {
      test(`${key} omitted -> ${JSON.stringify(dflt)}`, () => {
        const cfg = without(arch, key);
        if (dflt === null) {
          const name = location(arch, key).join('.');
          expect(() => resolveQwenFields(cfg)).toThrow(`config.json: ${name} is missing and has no default`);
          const coded = expect.objectContaining({ code: 'ERR_CRPO_MODEL_CONFIG' }) as unknown as Error;
          expect(() => parseQwenConfig(cfg)).toThrow(coded);
          return;
        }
        expect(resolveQwenFields(cfg)[key]).toEqual(dflt);
        const conflict = CONFLICTS[arch][key];
        if (conflict) expect(() => parseQwenConfig(cfg)).toThrow(conflict);
        else expect(NORMALISED[key](parseQwenConfig(cfg))).toEqual(dflt);
      });
    }

    test('a missing vision_config is the whole default vision config', () => {
      const c = JSON.parse(JSON.stringify(BASE[arch])) as Json;
      delete c.vision_config;
      const f = resolveQwenFields(c);
      for (const [k, d] of Object.entries(table)) {
        if (k.startsWith('vision_config.')) expect({ k, v: f[k] }).toEqual({ k, v: d });
      }
    });
  });
}

describe('config edge cases', () => {
  test('num_key_value_heads null means num_attention_heads (both archs)', () => {
    const a = JSON.parse(JSON.stringify(Q25)) as Json;
    a.num_key_value_heads = null;
    expect(parseQwenConfig(a).text.numKvHeads).toBe(4);
    const b = JSON.parse(JSON.stringify(Q3)) as Json;
    (b.text_config as Json).num_key_value_heads = null;
    expect(parseQwenConfig(b).text.numKvHeads).toBe(4);
  });

  test('Qwen3-VL: a missing text_config is the default text config; mrope is always interleaved', () => {
    const c = JSON.parse(JSON.stringify(Q3)) as Json;
    delete c.text_config;
    const f = resolveQwenFields(c);
    for (const [k, d] of Object.entries(TRANSFORMERS_DEFAULTS.qwen3_vl)) {
      if (k.startsWith('text_config.')) expect({ k, v: f[k] }).toEqual({ k, v: d });
    }
    const off = JSON.parse(JSON.stringify(Q3)) as Json;
    ((off.text_config as Json).rope_scaling as Json).mrope_interleaved = false;
    expect(parseQwenConfig(off).text.mropeInterleaved).toBe(true);
  });

  test('Qwen2.5-VL: in_chans (older files) is ignored as transformers does; wrong types name the field', () => {
    const c = JSON.parse(JSON.stringify(Q25)) as Json;
    delete (c.vision_config as Json).in_channels;
    (c.vision_config as Json).in_chans = 1;
    expect(parseQwenConfig(c).vision.inChannels).toBe(3);
    const bad = JSON.parse(JSON.stringify(Q25)) as Json;
    (bad.vision_config as Json).tokens_per_second = '2';
    const notNumber = 'x/config.json: vision_config.tokens_per_second must be a number but is "2"';
    expect(() => parseQwenConfig(bad, 'x/config.json')).toThrow(notNumber);
    const act = JSON.parse(JSON.stringify(Q3)) as Json;
    (act.text_config as Json).hidden_act = 7;
    expect(() => parseQwenConfig(act)).toThrow('config.json: text_config.hidden_act must be a string but is 7');
  });
});

// ---- rope positions of the golden video with tokens_per_second omitted -------------------------

const GOLDEN = path.resolve(__dirname, '..', '..', '..', 'shared', 'golden', 'qwen2_5_vl');
const goldenMissing = fs.existsSync(path.join(GOLDEN, 'case_video.safetensors'))
  ? undefined
  : `golden folder ${GOLDEN} is absent`;

/**
 * The golden data's rule for one unpadded row (transformers' Qwen2.5-VL get_rope_index, written
 * out for this test): text advances all three axes by one; a vision run of grid (t, h, w) merged by
 * m puts token (ti, hi, wi) at (o + ti * step, o + hi, o + wi) with o the position after the text
 * before it and step = trunc(second_per_grid) * tokens_per_second for a video (1 for an image);
 * the text after it continues from the run's largest position + 1.
 */
function ruleRow(ids: number[], c: QwenVLConfig, grids: Array<{ thw: number[]; step: number }>): number[][] {
  const out: number[][] = [[], [], []];
  let next = 0;
  let g = 0;
  for (let i = 0; i < ids.length;) {
    if (ids[i] !== c.imageTokenId && ids[i] !== c.videoTokenId) {
      for (const a of out) a.push(next);
      next++;
      i++;
      continue;
    }
    const { thw, step } = grids[g++];
    const m = c.vision.spatialMergeSize;
    const [T, H, W] = [thw[0], thw[1] / m, thw[2] / m];
    let max = -1;
    for (let ti = 0; ti < T; ti++) {
      for (let hi = 0; hi < H; hi++) {
        for (let wi = 0; wi < W; wi++) {
          const p = [next + ti * step, next + hi, next + wi];
          p.forEach((v, a) => out[a].push(v));
          max = Math.max(max, ...p);
          i++;
        }
      }
    }
    next = max + 1;
  }
  return out;
}

const ropeTitle = `tokens_per_second omitted: rope positions of the golden video`;
skipIf(goldenMissing).describe(ropeTitle, () => {
  for (const name of ['video', 'image_video']) {
    test(`case ${name}: the rule gives the golden ids at tokens_per_second 2; crpo follows it at the default 4`, () => {
      const raw = JSON.parse(fs.readFileSync(path.join(GOLDEN, 'config.json'), 'utf8')) as Json;
      const given = parseQwenConfig(raw);
      expect(given.vision.tokensPerSecond).toBe(2);
      delete (raw.vision_config as Json).tokens_per_second;
      const omitted = parseQwenConfig(raw);
      expect(omitted.vision.tokensPerSecond).toBe(4);

      const c = readSafetensors(path.join(GOLDEN, `case_${name}.safetensors`));
      const ids = Array.from(c.get('in.input_ids')!.data as BigInt64Array, Number);
      expect(Array.from(c.get('in.attention_mask')!.data as BigInt64Array, Number).every((x) => x === 1)).toBe(true);
      const grid = (k: string) => {
        const t = c.get(k);
        if (!t) return [];
        const v = Array.from(t.data as BigInt64Array, Number);
        return Array.from({ length: v.length / 3 }, (_, i) => v.slice(3 * i, 3 * i + 3) as [number, number, number]);
      };
      const images = grid('in.image_grid_thw');
      const videos = grid('in.video_grid_thw');
      const seconds = Array.from(c.get('in.second_per_grid_ts')!.data as Float32Array);
      const golden = Array.from(c.get('rope.position_ids')!.data as BigInt64Array, Number);
      const L = ids.length;
      // vision runs in token order: in these cases images come before videos
      const runs = (tps: number) => [
        ...images.map((thw) => ({ thw, step: 1 })),
        ...videos.map((thw, i) => ({ thw, step: Math.trunc(seconds[i]) * tps })),
      ];
      expect(ruleRow(ids, given, runs(2)).flat()).toEqual(golden);

      const imageGridThw = images.length ? images : undefined;
      const inputs = { inputIds: [ids], imageGridThw, videoGridThw: videos, secondPerGridTs: seconds };
      expect(Array.from(ropeIndex(given, inputs).positionIds)).toEqual(golden);
      const expected = ruleRow(ids, omitted, runs(4));
      const got = ropeIndex(omitted, inputs);
      expect(Array.from(got.positionIds)).toEqual(expected.flat());
      expect(got.deltas).toEqual([Math.max(...expected.flat()) + 1 - L]);
      // the temporal axis really differs from the golden one (the video spans more than one grid)
      expect(expected[0]).not.toEqual(golden.slice(0, L));
    });
  }
});
