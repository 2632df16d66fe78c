/**
 * Hugging Face config.json of Qwen2.5-VL and Qwen3-VL checkpoints, normalised into one typed
 * config (the fields transformers' modeling code reads), and the list of weights each
 * architecture expects (transformers' key names and shapes). Unsupported architectures are
 * refused with a message that names the supported ones.
 */
import * as fs from 'fs';
import { CrpoError } from '../errors';

export type QwenArch = 'qwen2_5_vl' | 'qwen3_vl';
export const SUPPORTED_ARCHS: readonly QwenArch[] = ['qwen2_5_vl', 'qwen3_vl'];

export interface QwenTextConfig {
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  rmsNormEps: number;
  ropeTheta: number;
  /** Rotary frequencies given to the t, h, w axes (sums to headDim / 2). */
  mropeSection: number[];
  /** Qwen3-VL: t/h/w frequencies interleaved rather than in three chunks. */
  mropeInterleaved: boolean;
  attentionBias: boolean;
  /** Qwen3 LM: RMSNorm on q and k per head. */
  qkNorm: boolean;
  tieWordEmbeddings: boolean;
  hiddenAct: string;
}

export interface QwenVisionConfig {
  depth: number;
  hiddenSize: number;
  intermediateSize: number;
  numHeads: number;
  patchSize: number;
  temporalPatchSize: number;
  spatialMergeSize: number;
  inChannels: number;
  outHiddenSize: number;
  hiddenAct: string;
  /** Qwen2.5-VL: attention window in pixels, and the blocks with full attention. */
  windowSize?: number;
  fullattBlockIndexes?: number[];
  /** Qwen2.5-VL: temporal rope positions per second of video. */
  tokensPerSecond?: number;
  /** Qwen3-VL: learned position embeddings (square grid) and DeepStack source blocks. */
  numPositionEmbeddings?: number;
  deepstackVisualIndexes?: number[];
}

export interface QwenVLConfig {
  arch: QwenArch;
  text: QwenTextConfig;
  vision: QwenVisionConfig;
  imageTokenId: number;
  videoTokenId: number;
  visionStartTokenId: number;
  visionEndTokenId: number;
  eosTokenId?: number;
}

type Json = Record<string, unknown>;

/**
 * transformers' class default of every config field crpo reads, by its place in config.json
 * (`text_config.*`: for Qwen2.5-VL the text fields sit at the top level, or in `text_config` when
 * the file has one). `save_pretrained` leaves out every field equal to its class default, so a
 * folder a user saved relies on these. `null` = no class default: the field is required.
 * Qwen2.5-VL: transformers 4.49 (Qwen2_5_VLConfig / Qwen2_5_VLVisionConfig), the version behind
 * the golden files; Qwen3-VL: transformers 4.57 (Qwen3VLConfig / Qwen3VLTextConfig /
 * Qwen3VLVisionConfig). Two entries are the modeling code's, not a config class's: Qwen3-VL's
 * rotary embedding takes `mrope_section` [24, 20, 20] when rope_scaling lacks it, and always
 * interleaves the t/h/w frequencies (it never reads `mrope_interleaved`).
 */
export const QWEN_CONFIG_DEFAULTS: Record<QwenArch, Readonly<Record<string, unknown>>> = {
  qwen2_5_vl: {
    'text_config.hidden_size': 8192,
    'text_config.intermediate_size': 29568,
    'text_config.num_hidden_layers': 80,
    'text_config.num_attention_heads': 64,
    'text_config.num_key_value_heads': 8,
    'text_config.vocab_size': 152064,
    'text_config.rms_norm_eps': 1e-5,
    'text_config.rope_theta': 1000000.0,
    'text_config.rope_scaling.mrope_section': null,
    'text_config.hidden_act': 'silu',
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
  qwen3_vl: {
    'text_config.hidden_size': 4096,
    'text_config.intermediate_size': 22016,
    'text_config.num_hidden_layers': 32,
    'text_config.num_attention_heads': 32,
    'text_config.num_key_value_heads': 32,
    'text_config.head_dim': 128,
    'text_config.vocab_size': 151936,
    'text_config.rms_norm_eps': 1e-6,
    'text_config.rope_theta': 5000000.0,
    'text_config.rope_scaling.mrope_section': [24, 20, 20],
    'text_config.hidden_act': 'silu',
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

function cfgError(file: string, msg: string): CrpoError {
  return new CrpoError('ERR_CRPO_MODEL_CONFIG', `${file}: ${msg}`, { userError: true });
}

/** Which of the supported architectures a raw config describes, or a clear refusal. */
export function detectArch(raw: Json, file = 'config.json'): QwenArch {
  const mt = raw.model_type;
  const archs = Array.isArray(raw.architectures) ? (raw.architectures as string[]) : [];
  if (mt === 'qwen2_5_vl' || archs.includes('Qwen2_5_VLForConditionalGeneration')) return 'qwen2_5_vl';
  if (mt === 'qwen3_vl' || archs.includes('Qwen3VLForConditionalGeneration')) return 'qwen3_vl';
  throw cfgError(
    file,
    `unsupported architecture (model_type ${JSON.stringify(mt)}, architectures ${JSON.stringify(raw.architectures ?? null)}); ` +
      `supported: model_type 'qwen2_5_vl' (Qwen2_5_VLForConditionalGeneration) and 'qwen3_vl' (Qwen3VLForConditionalGeneration)`,
  );
}

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

function describeKind(key: string, defaults: Readonly<Record<string, unknown>>): string {
  if (/mrope_section|_indexes$/.test(key)) return 'an array of integers';
  const d = defaults[key];
  if (typeof d === 'boolean') return 'a boolean';
  if (typeof d === 'string') return 'a string';
  return 'a number';
}

/**
 * Every field of QWEN_CONFIG_DEFAULTS as the config gives it or, when it is absent, as its class
 * default; keyed like QWEN_CONFIG_DEFAULTS, values type-checked, no cross-field checks (those are
 * parseQwenConfig's). A missing field without a default, or a value of the wrong type, throws
 * ERR_CRPO_MODEL_CONFIG naming the field as it is spelled in the file.
 */
export function resolveQwenFields(raw: Json, file = 'config.json'): Record<string, unknown> {
  const arch = detectArch(raw, file);
  const defaults = QWEN_CONFIG_DEFAULTS[arch];
  const text = isObject(raw.text_config) ? raw.text_config : arch === 'qwen2_5_vl' ? raw : {};
  const textWhere = isObject(raw.text_config) ? 'text_config.' : '';
  // A missing (or null) sub-config is the whole default sub-config, as in transformers.
  const vision = isObject(raw.vision_config) ? raw.vision_config : {};
  const vw = 'vision_config.';
  // Newer files (transformers 5) keep rope_theta and mrope_section in rope_parameters.
  const rope = [text.rope_scaling, text.rope_parameters, raw.rope_scaling].find(isObject) ?? {};
  const ropeName = isObject(text.rope_parameters) && !isObject(text.rope_scaling) ? 'rope_parameters' : 'rope_scaling';
  const out: Record<string, unknown> = {};
  for (const [key, dflt] of Object.entries(defaults)) {
    let holder: Json;
    let name: string;
    let where: string;
    const after = (prefix: string) => key.slice(prefix.length);
    if (key.startsWith('text_config.rope_scaling.')) {
      [holder, name, where] = [rope, after('text_config.rope_scaling.'), `${textWhere}${ropeName}.`];
    } else if (key.startsWith('text_config.')) [holder, name, where] = [text, after('text_config.'), textWhere];
    else if (key.startsWith('vision_config.')) [holder, name, where] = [vision, after('vision_config.'), vw];
    else [holder, name, where] = [raw, key, ''];
    let v = holder[name];
    if (name === 'rope_theta' && v === undefined) v = rope.rope_theta;
    // Qwen3-VL keeps tie_word_embeddings at the top level and in text_config.
    if (key === 'tie_word_embeddings' && v === undefined) v = text.tie_word_embeddings;
    // transformers: num_key_value_heads None means num_attention_heads.
    if (name === 'num_key_value_heads' && v === null) v = out['text_config.num_attention_heads'];
    const kind = describeKind(key, defaults);
    if (v === undefined || v === null) {
      if (dflt === null) throw cfgError(file, `${where}${name} is missing and has no default (expected ${kind})`);
      out[key] = Array.isArray(dflt) ? [...dflt] : dflt;
      continue;
    }
    const ok =
      kind === 'a number'
        ? typeof v === 'number' && Number.isFinite(v)
        : kind === 'an array of integers'
          ? Array.isArray(v) && v.every((x) => Number.isInteger(x))
          : kind === 'a boolean'
            ? typeof v === 'boolean'
            : typeof v === 'string';
    if (!ok) throw cfgError(file, `${where}${name} must be ${kind} but is ${JSON.stringify(v)}`);
    out[key] = v;
  }
  return out;
}

/** Normalises a parsed config.json (missing fields take transformers' class defaults, QWEN_CONFIG_DEFAULTS). */
export function parseQwenConfig(raw: Json, file = 'config.json'): QwenVLConfig {
  const arch = detectArch(raw, file);
  const f = resolveQwenFields(raw, file);
  const tw = isObject(raw.text_config) ? 'text_config.' : '';
  const vw = 'vision_config.';
  const n = (k: string) => f[k] as number;
  const hidden = n('text_config.hidden_size');
  const heads = n('text_config.num_attention_heads');
  // Qwen2.5-VL's attention has no head_dim field: hidden_size // num_attention_heads.
  if (arch === 'qwen2_5_vl' && hidden % heads !== 0) {
    throw cfgError(file, `${tw}hidden_size ${hidden} is not a multiple of num_attention_heads ${heads}`);
  }
  const headDim = arch === 'qwen3_vl' ? n('text_config.head_dim') : hidden / heads;
  const section = f['text_config.rope_scaling.mrope_section'] as number[];
  if (section.length !== 3 || section.reduce((a, b) => a + b, 0) !== headDim / 2) {
    throw cfgError(
      file,
      `${tw}rope_scaling.mrope_section ${JSON.stringify(section)} must have 3 entries summing to head_dim / 2 = ${headDim / 2}`,
    );
  }
  const text: QwenTextConfig = {
    hiddenSize: hidden,
    intermediateSize: n('text_config.intermediate_size'),
    numLayers: n('text_config.num_hidden_layers'),
    numHeads: heads,
    numKvHeads: n('text_config.num_key_value_heads'),
    headDim,
    vocabSize: n('text_config.vocab_size'),
    rmsNormEps: n('text_config.rms_norm_eps'),
    ropeTheta: n('text_config.rope_theta'),
    mropeSection: section,
    // Qwen3-VL's rotary embedding always interleaves (transformers 4.57 never reads mrope_interleaved).
    mropeInterleaved: arch === 'qwen3_vl',
    // Qwen2.5-VL's q/k/v projections always have a bias.
    attentionBias: arch === 'qwen2_5_vl' ? true : (f['text_config.attention_bias'] as boolean),
    qkNorm: arch === 'qwen3_vl',
    tieWordEmbeddings: f.tie_word_embeddings as boolean,
    hiddenAct: f['text_config.hidden_act'] as string,
  };
  if (text.numHeads % text.numKvHeads !== 0)
    throw cfgError(
      file,
      `${tw}num_attention_heads ${text.numHeads} is not a multiple of num_key_value_heads ${text.numKvHeads}`,
    );
  // in_channels only: transformers ignores the `in_chans` of older files (always 3 in them).
  const vision: QwenVisionConfig = {
    depth: n('vision_config.depth'),
    hiddenSize: n('vision_config.hidden_size'),
    intermediateSize: n('vision_config.intermediate_size'),
    numHeads: n('vision_config.num_heads'),
    patchSize: n('vision_config.patch_size'),
    temporalPatchSize: n('vision_config.temporal_patch_size'),
    spatialMergeSize: n('vision_config.spatial_merge_size'),
    inChannels: n('vision_config.in_channels'),
    outHiddenSize: n('vision_config.out_hidden_size'),
    hiddenAct: f['vision_config.hidden_act'] as string,
  };
  if (arch === 'qwen2_5_vl') {
    vision.windowSize = n('vision_config.window_size');
    vision.fullattBlockIndexes = f['vision_config.fullatt_block_indexes'] as number[];
    vision.tokensPerSecond = n('vision_config.tokens_per_second');
  } else {
    vision.numPositionEmbeddings = n('vision_config.num_position_embeddings');
    const side = Math.round(Math.sqrt(vision.numPositionEmbeddings));
    if (side * side !== vision.numPositionEmbeddings)
      throw cfgError(file, `${vw}num_position_embeddings ${vision.numPositionEmbeddings} is not a square`);
    vision.deepstackVisualIndexes = f['vision_config.deepstack_visual_indexes'] as number[];
  }
  if (vision.outHiddenSize !== hidden) {
    const given = (isObject(raw.vision_config) ? raw.vision_config : {}).out_hidden_size !== undefined;
    const note = given ? '' : ' (its class default, the file omits it)';
    const what = `${vw}out_hidden_size ${vision.outHiddenSize}${note}`;
    throw cfgError(file, `${what} differs from the LM hidden_size ${hidden}`);
  }
  const t = (isObject(raw.text_config) ? raw.text_config : raw) as Json;
  const eos = raw.eos_token_id ?? t.eos_token_id;
  return {
    arch,
    text,
    vision,
    imageTokenId: n('image_token_id'),
    videoTokenId: n('video_token_id'),
    visionStartTokenId: n('vision_start_token_id'),
    visionEndTokenId: n('vision_end_token_id'),
    eosTokenId:
      typeof eos === 'number' ? eos : Array.isArray(eos) && typeof eos[0] === 'number' ? (eos[0] as number) : undefined,
  };
}

export function readQwenConfig(file: string): QwenVLConfig {
  let raw: Json;
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8')) as Json;
  } catch (e) {
    throw cfgError(file, `cannot read config (${(e as Error).message})`);
  }
  return parseQwenConfig(raw, file);
}

/** Every weight an architecture expects: canonical transformers name -> shape. */
export function expectedWeights(c: QwenVLConfig): Map<string, number[]> {
  const w = new Map<string, number[]>();
  const v = c.vision;
  const t = c.text;
  const V = 'model.visual.';
  const hv = v.hiddenSize;
  const mu = v.spatialMergeSize * v.spatialMergeSize;
  w.set(`${V}patch_embed.proj.weight`, [hv, v.inChannels, v.temporalPatchSize, v.patchSize, v.patchSize]);
  const q3 = c.arch === 'qwen3_vl';
  if (q3) {
    w.set(`${V}patch_embed.proj.bias`, [hv]);
    w.set(`${V}pos_embed.weight`, [v.numPositionEmbeddings ?? 0, hv]);
  }
  for (let i = 0; i < v.depth; i++) {
    const B = `${V}blocks.${i}.`;
    for (const n of ['norm1', 'norm2']) {
      w.set(`${B}${n}.weight`, [hv]);
      if (q3) w.set(`${B}${n}.bias`, [hv]);
    }
    w.set(`${B}attn.qkv.weight`, [3 * hv, hv]);
    w.set(`${B}attn.qkv.bias`, [3 * hv]);
    w.set(`${B}attn.proj.weight`, [hv, hv]);
    w.set(`${B}attn.proj.bias`, [hv]);
    if (q3) {
      w.set(`${B}mlp.linear_fc1.weight`, [v.intermediateSize, hv]);
      w.set(`${B}mlp.linear_fc1.bias`, [v.intermediateSize]);
      w.set(`${B}mlp.linear_fc2.weight`, [hv, v.intermediateSize]);
      w.set(`${B}mlp.linear_fc2.bias`, [hv]);
    } else {
      for (const n of ['gate_proj', 'up_proj']) {
        w.set(`${B}mlp.${n}.weight`, [v.intermediateSize, hv]);
        w.set(`${B}mlp.${n}.bias`, [v.intermediateSize]);
      }
      w.set(`${B}mlp.down_proj.weight`, [hv, v.intermediateSize]);
      w.set(`${B}mlp.down_proj.bias`, [hv]);
    }
  }
  const merger = (P: string, normDim: number) => {
    w.set(`${P}norm.weight`, [normDim]);
    w.set(`${P}norm.bias`, [normDim]);
    w.set(`${P}linear_fc1.weight`, [hv * mu, hv * mu]);
    w.set(`${P}linear_fc1.bias`, [hv * mu]);
    w.set(`${P}linear_fc2.weight`, [v.outHiddenSize, hv * mu]);
    w.set(`${P}linear_fc2.bias`, [v.outHiddenSize]);
  };
  if (q3) {
    merger(`${V}merger.`, hv);
    (v.deepstackVisualIndexes ?? []).forEach((_, j) => merger(`${V}deepstack_merger_list.${j}.`, hv * mu));
  } else {
    w.set(`${V}merger.ln_q.weight`, [hv]);
    w.set(`${V}merger.mlp.0.weight`, [hv * mu, hv * mu]);
    w.set(`${V}merger.mlp.0.bias`, [hv * mu]);
    w.set(`${V}merger.mlp.2.weight`, [v.outHiddenSize, hv * mu]);
    w.set(`${V}merger.mlp.2.bias`, [v.outHiddenSize]);
  }
  const T = 'model.language_model.';
  const H = t.hiddenSize;
  w.set(`${T}embed_tokens.weight`, [t.vocabSize, H]);
  for (let i = 0; i < t.numLayers; i++) {
    const L = `${T}layers.${i}.`;
    w.set(`${L}input_layernorm.weight`, [H]);
    w.set(`${L}post_attention_layernorm.weight`, [H]);
    const qd = t.numHeads * t.headDim;
    const kd = t.numKvHeads * t.headDim;
    w.set(`${L}self_attn.q_proj.weight`, [qd, H]);
    w.set(`${L}self_attn.k_proj.weight`, [kd, H]);
    w.set(`${L}self_attn.v_proj.weight`, [kd, H]);
    if (t.attentionBias) {
      w.set(`${L}self_attn.q_proj.bias`, [qd]);
      w.set(`${L}self_attn.k_proj.bias`, [kd]);
      w.set(`${L}self_attn.v_proj.bias`, [kd]);
    }
    w.set(`${L}self_attn.o_proj.weight`, [H, qd]);
    if (t.qkNorm) {
      w.set(`${L}self_attn.q_norm.weight`, [t.headDim]);
      w.set(`${L}self_attn.k_norm.weight`, [t.headDim]);
    }
    w.set(`${L}mlp.gate_proj.weight`, [t.intermediateSize, H]);
    w.set(`${L}mlp.up_proj.weight`, [t.intermediateSize, H]);
    w.set(`${L}mlp.down_proj.weight`, [H, t.intermediateSize]);
  }
  w.set(`${T}norm.weight`, [H]);
  if (!t.tieWordEmbeddings) w.set('lm_head.weight', [t.vocabSize, H]);
  return w;
}

/**
 * Maps a checkpoint key to the canonical name: Qwen2.5-VL checkpoints saved before
 * transformers 4.52 use `visual.*` and `model.*` for the tower and the LM.
 */
export function canonicalKey(key: string): string {
  if (key.startsWith('visual.')) return `model.${key}`;
  if (key.startsWith('model.') && !key.startsWith('model.visual.') && !key.startsWith('model.language_model.')) {
    return `model.language_model.${key.slice('model.'.length)}`;
  }
  return key;
}

/** Config object handed to the native loader. */
export function nativeConfig(c: QwenVLConfig): Record<string, unknown> {
  return { arch: c.arch, text: c.text, vision: c.vision, imageTokenId: c.imageTokenId, videoTokenId: c.videoTokenId };
}
