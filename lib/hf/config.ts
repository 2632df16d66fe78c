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

function cfgError(file: string, msg: string): CrpoError {
  return new CrpoError('ERR_CRPO_MODEL_CONFIG', `${file}: ${msg}`, { userError: true });
}

function num(o: Json, key: string, file: string, where: string, dflt?: number): number {
  const v = o[key];
  if (v === undefined || v === null) {
    if (dflt !== undefined) return dflt;
    throw cfgError(file, `${where}${key} is missing (expected a number)`);
  }
  if (typeof v !== 'number' || !Number.isFinite(v)) throw cfgError(file, `${where}${key} must be a number but is ${JSON.stringify(v)}`);
  return v;
}

function ints(o: Json, key: string, file: string, where: string, dflt?: number[]): number[] {
  const v = o[key];
  if (v === undefined || v === null) {
    if (dflt) return dflt;
    throw cfgError(file, `${where}${key} is missing (expected an array of integers)`);
  }
  if (!Array.isArray(v) || !v.every((x) => Number.isInteger(x))) throw cfgError(file, `${where}${key} must be an array of integers but is ${JSON.stringify(v)}`);
  return v as number[];
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

/** Normalises a parsed config.json. */
export function parseQwenConfig(raw: Json, file = 'config.json'): QwenVLConfig {
  const arch = detectArch(raw, file);
  const t = (raw.text_config && typeof raw.text_config === 'object' ? raw.text_config : raw) as Json;
  // Qwen2.5-VL configs keep text fields at the top level (newer ones also in text_config).
  const tw = raw.text_config ? 'text_config.' : '';
  const v = (raw.vision_config ?? {}) as Json;
  const vw = 'vision_config.';
  const hidden = num(t, 'hidden_size', file, tw);
  const heads = num(t, 'num_attention_heads', file, tw);
  const rope = ((t.rope_scaling ?? t.rope_parameters ?? raw.rope_scaling ?? {}) as Json) || {};
  const headDim = arch === 'qwen3_vl' ? num(t, 'head_dim', file, tw, hidden / heads) : hidden / heads;
  const section = ints(rope, 'mrope_section', file, `${tw}rope_scaling.`, arch === 'qwen3_vl' ? [24, 20, 20] : undefined);
  if (section.length !== 3 || section.reduce((a, b) => a + b, 0) !== headDim / 2) {
    throw cfgError(file, `${tw}rope_scaling.mrope_section ${JSON.stringify(section)} must have 3 entries summing to head_dim / 2 = ${headDim / 2}`);
  }
  const ropeTheta = num(t, 'rope_theta', file, tw, (rope.rope_theta as number | undefined) ?? 10000);
  const text: QwenTextConfig = {
    hiddenSize: hidden,
    intermediateSize: num(t, 'intermediate_size', file, tw),
    numLayers: num(t, 'num_hidden_layers', file, tw),
    numHeads: heads,
    numKvHeads: num(t, 'num_key_value_heads', file, tw, heads),
    headDim,
    vocabSize: num(t, 'vocab_size', file, tw),
    rmsNormEps: num(t, 'rms_norm_eps', file, tw, 1e-6),
    ropeTheta,
    mropeSection: section,
    mropeInterleaved: arch === 'qwen3_vl' ? rope.mrope_interleaved !== false : false,
    attentionBias: arch === 'qwen2_5_vl' ? true : t.attention_bias === true,
    qkNorm: arch === 'qwen3_vl',
    tieWordEmbeddings: (raw.tie_word_embeddings ?? t.tie_word_embeddings) === true,
    hiddenAct: typeof t.hidden_act === 'string' ? t.hidden_act : 'silu',
  };
  if (text.numHeads % text.numKvHeads !== 0) throw cfgError(file, `${tw}num_attention_heads ${text.numHeads} is not a multiple of num_key_value_heads ${text.numKvHeads}`);
  const vision: QwenVisionConfig = {
    depth: num(v, 'depth', file, vw),
    hiddenSize: num(v, 'hidden_size', file, vw),
    intermediateSize: num(v, 'intermediate_size', file, vw),
    numHeads: num(v, 'num_heads', file, vw),
    patchSize: num(v, 'patch_size', file, vw, 14),
    temporalPatchSize: num(v, 'temporal_patch_size', file, vw, 2),
    spatialMergeSize: num(v, 'spatial_merge_size', file, vw, 2),
    inChannels: num(v, 'in_channels', file, vw, (v.in_chans as number | undefined) ?? 3),
    outHiddenSize: num(v, 'out_hidden_size', file, vw, hidden),
    hiddenAct: typeof v.hidden_act === 'string' ? v.hidden_act : arch === 'qwen3_vl' ? 'gelu_pytorch_tanh' : 'silu',
  };
  if (arch === 'qwen2_5_vl') {
    vision.windowSize = num(v, 'window_size', file, vw, 112);
    vision.fullattBlockIndexes = ints(v, 'fullatt_block_indexes', file, vw, [7, 15, 23, 31]);
    vision.tokensPerSecond = num(v, 'tokens_per_second', file, vw, 2);
  } else {
    vision.numPositionEmbeddings = num(v, 'num_position_embeddings', file, vw);
    const side = Math.round(Math.sqrt(vision.numPositionEmbeddings));
    if (side * side !== vision.numPositionEmbeddings) throw cfgError(file, `${vw}num_position_embeddings ${vision.numPositionEmbeddings} is not a square`);
    vision.deepstackVisualIndexes = ints(v, 'deepstack_visual_indexes', file, vw, []);
  }
  if (vision.outHiddenSize !== hidden) throw cfgError(file, `${vw}out_hidden_size ${vision.outHiddenSize} differs from the LM hidden_size ${hidden}`);
  const eos = raw.eos_token_id ?? t.eos_token_id;
  return {
    arch,
    text,
    vision,
    imageTokenId: num(raw, 'image_token_id', file, ''),
    videoTokenId: num(raw, 'video_token_id', file, ''),
    visionStartTokenId: num(raw, 'vision_start_token_id', file, ''),
    visionEndTokenId: num(raw, 'vision_end_token_id', file, ''),
    eosTokenId: typeof eos === 'number' ? eos : Array.isArray(eos) && typeof eos[0] === 'number' ? (eos[0] as number) : undefined,
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
