/**
 * Memory estimates for training and sampling a Qwen-VL model with this backend: parameter
 * counts from the architecture's weight list (config.ts), weights / LoRA / optimizer bytes, the
 * activations of one sequence (eager attention: scores are heads x L^2 per layer), logits, and
 * the KV cache of a rollout group. Used by docs/real-models.md; formulas are in the comments.
 */
import { expectedWeights, parseQwenConfig, type QwenVLConfig } from './config';

export interface BudgetScenario {
  /** Frames per video and pixels per frame after resizing (e.g. 16 and 128*28*28). */
  frames: number;
  framePixels: number;
  /** Text tokens of the prompt and of one completion. */
  promptTokens: number;
  completionTokens: number;
  /** Sequences per prompt: G per branch x 2 branches (original + counterfactual). */
  sequences: number;
  loraRank: number;
  /** Bytes per weight / activation element (2 for bf16). */
  bytes: number;
}

export const DEFAULT_SCENARIO: BudgetScenario = {
  frames: 16,
  framePixels: 128 * 28 * 28,
  promptTokens: 120,
  completionTokens: 256,
  sequences: 16,
  loraRank: 16,
  bytes: 2,
};

export interface BudgetEstimate {
  params: number;
  visionParams: number;
  visualTokens: number;
  visionPatches: number;
  seqLen: number;
  weightsGiB: number;
  loraParams: number;
  /** LoRA params with fp32 master, grad and two AdamW moments (16 B each). */
  loraStateGiB: number;
  /** Full fine-tuning instead: fp32 master + grad + AdamW moments (16 B/param) on top of the weights. */
  fullFinetuneStateGiB: number;
  /** One sequence, all decoder activations kept (no checkpointing), incl. eager attention scores. */
  activationsPerSeqGiB: number;
  /** One sequence with per-layer gradient checkpointing (layer inputs + one layer recomputed). */
  activationsPerSeqCheckpointedGiB: number;
  /** fp32 logits, log-softmax and its gradient over the whole sequence (L x V x 4 B x 3). */
  logitsPerSeqGiB: number;
  /** Vision tower forward (no grad, encoded once per group): largest block activations. */
  visionPeakGiB: number;
  /** KV cache of all sequences of one prompt at full length. */
  kvCacheGroupGiB: number;
  /** Tokens of the (vision + prompt) prefix, Lp = L - completion. */
  prefixLen: number;
}

/**
 * The update of the shared-prefix path (the qwen policy's default, native/torch/qwen/qwen_prefix.cpp)
 * for `rows` completions of one prompt in one forward/backward: the prefix (Lp tokens) runs once
 * and each completion (C tokens) attends to its keys/values; only completion tokens are scored.
 * Per layer: the prefix's tensors Lp x per-token + its eager scores heads x Lp^2; per row the
 * completion's C x per-token, its scores heads x C x (Lp + C), and the keys/values expanded to the
 * query heads for that row (2 x heads x head_dim x (Lp + C)). Checkpointed: every layer's input
 * ((Lp + rows x C) x hidden) + one layer. Logits: rows x C x vocab x 4 B x 3 (fp32 logits,
 * log-softmax, gradient). Bytes.
 */
export function sharedPrefixUpdate(
  cfg: QwenVLConfig,
  s: BudgetScenario,
  rows: number,
): { activations: number; checkpointed: number; logits: number } {
  const t = cfg.text;
  const H = t.hiddenSize;
  const qd = t.numHeads * t.headDim;
  const kd = t.numKvHeads * t.headDim;
  const Lp = estimateBudget(cfg, s).prefixLen;
  const C = s.completionTokens;
  const perTok = (4 * H + 2 * (qd + 2 * kd) + qd + 4 * t.intermediateSize) * s.bytes;
  const score = 4 + s.bytes;
  const prefix = Lp * perTok + t.numHeads * Lp * Lp * score;
  const row = C * perTok + t.numHeads * C * (Lp + C) * score + 2 * qd * (Lp + C) * s.bytes;
  const layer = prefix + rows * row;
  return {
    activations: t.numLayers * layer,
    checkpointed: t.numLayers * (Lp + rows * C) * H * s.bytes + layer,
    logits: rows * C * t.vocabSize * 4 * 3,
  };
}

const GiB = 2 ** 30;

export function estimateBudget(cfg: QwenVLConfig, s: BudgetScenario = DEFAULT_SCENARIO): BudgetEstimate {
  const w = expectedWeights(cfg);
  let params = 0;
  let visionParams = 0;
  for (const [name, shape] of w) {
    const n = shape.reduce((a, b) => a * b, 1);
    params += n;
    if (name.startsWith('model.visual.')) visionParams += n;
  }
  const t = cfg.text;
  const v = cfg.vision;
  const mergePx = (v.patchSize * v.spatialMergeSize) ** 2;
  const groupsT = Math.ceil(s.frames / v.temporalPatchSize);
  const tokensPerFrame = Math.floor(s.framePixels / mergePx);
  const visualTokens = groupsT * tokensPerFrame;
  const visionPatches = visualTokens * v.spatialMergeSize ** 2;
  // Qwen3-VL adds ~6 timestamp/marker tokens per temporal patch
  const extra = cfg.arch === 'qwen3_vl' ? groupsT * 6 : 2;
  const L = s.promptTokens + visualTokens + extra + s.completionTokens;
  const H = t.hiddenSize;
  const I = t.intermediateSize;
  const qd = t.numHeads * t.headDim;
  const kd = t.numKvHeads * t.headDim;
  // LoRA on q,k,v,o,gate,up,down of every LM layer: r * (in + out) each
  const loraParams = t.numLayers * s.loraRank * (H + qd + 2 * (H + kd) + (qd + H) + 2 * (H + I) + (I + H));
  // Per token per layer, tensors autograd keeps (bf16): norms/inputs ~4H, q/k/v/rotated ~2(qd+2kd),
  // attention output qd, MLP gate/up/act/product 4I; plus eager scores+probs heads*L (fp32 scores, dtype probs).
  const perTokLayer = (4 * H + 2 * (qd + 2 * kd) + qd + 4 * I) * s.bytes;
  const scores = t.numHeads * L * L * (4 + s.bytes);
  const actLayer = L * perTokLayer + scores;
  const activations = t.numLayers * actLayer;
  const checkpointed = t.numLayers * L * H * s.bytes + actLayer;
  const logits = L * t.vocabSize * 4 * 3;
  // vision: one block's activations over all patches (no grad) + full-attention scores of one frame
  const hv = v.hiddenSize;
  const patchesPerFrame = tokensPerFrame * v.spatialMergeSize ** 2;
  const visionPeak =
    visionPatches * (6 * hv + 3 * v.intermediateSize) * s.bytes + v.numHeads * patchesPerFrame ** 2 * (4 + s.bytes);
  const kv = s.sequences * L * t.numLayers * 2 * kd * s.bytes;
  return {
    params,
    visionParams,
    visualTokens,
    visionPatches,
    seqLen: L,
    weightsGiB: (params * s.bytes) / GiB,
    loraParams,
    loraStateGiB: (loraParams * 16) / GiB,
    fullFinetuneStateGiB: (params * 16) / GiB,
    activationsPerSeqGiB: activations / GiB,
    activationsPerSeqCheckpointedGiB: checkpointed / GiB,
    logitsPerSeqGiB: logits / GiB,
    visionPeakGiB: visionPeak / GiB,
    kvCacheGroupGiB: kv / GiB,
    prefixLen: L - s.completionTokens,
  };
}

/** Published configs (config.json of the Hugging Face repositories), for the budget table. */
export const PUBLISHED_CONFIGS: Record<string, QwenVLConfig> = {
  'Qwen2.5-VL-7B': parseQwenConfig({
    model_type: 'qwen2_5_vl',
    hidden_size: 3584,
    intermediate_size: 18944,
    num_attention_heads: 28,
    num_hidden_layers: 28,
    num_key_value_heads: 4,
    vocab_size: 152064,
    rope_theta: 1000000,
    rope_scaling: { type: 'mrope', mrope_section: [16, 24, 24] },
    tie_word_embeddings: false,
    image_token_id: 151655,
    video_token_id: 151656,
    vision_start_token_id: 151652,
    vision_end_token_id: 151653,
    vision_config: {
      depth: 32,
      hidden_size: 1280,
      intermediate_size: 3420,
      num_heads: 16,
      out_hidden_size: 3584,
      patch_size: 14,
      window_size: 112,
      fullatt_block_indexes: [7, 15, 23, 31],
      spatial_merge_size: 2,
      temporal_patch_size: 2,
      tokens_per_second: 2,
      hidden_act: 'silu',
    },
  }),
  'Qwen3-VL-4B': parseQwenConfig({
    model_type: 'qwen3_vl',
    image_token_id: 151655,
    video_token_id: 151656,
    vision_start_token_id: 151652,
    vision_end_token_id: 151653,
    tie_word_embeddings: true,
    text_config: {
      hidden_size: 2560,
      intermediate_size: 9728,
      num_attention_heads: 32,
      num_hidden_layers: 36,
      num_key_value_heads: 8,
      head_dim: 128,
      vocab_size: 151936,
      rope_theta: 5000000,
      rope_scaling: { mrope_interleaved: true, mrope_section: [24, 20, 20] },
    },
    vision_config: {
      depth: 24,
      hidden_size: 1024,
      intermediate_size: 4096,
      num_heads: 16,
      out_hidden_size: 2560,
      patch_size: 16,
      num_position_embeddings: 2304,
      deepstack_visual_indexes: [5, 11, 17],
      spatial_merge_size: 2,
      temporal_patch_size: 2,
    },
  }),
  'Qwen3-VL-8B': parseQwenConfig({
    model_type: 'qwen3_vl',
    image_token_id: 151655,
    video_token_id: 151656,
    vision_start_token_id: 151652,
    vision_end_token_id: 151653,
    tie_word_embeddings: false,
    text_config: {
      hidden_size: 4096,
      intermediate_size: 12288,
      num_attention_heads: 32,
      num_hidden_layers: 36,
      num_key_value_heads: 8,
      head_dim: 128,
      vocab_size: 151936,
      rope_theta: 5000000,
      rope_scaling: { mrope_interleaved: true, mrope_section: [24, 20, 20] },
    },
    vision_config: {
      depth: 27,
      hidden_size: 1152,
      intermediate_size: 4304,
      num_heads: 16,
      out_hidden_size: 4096,
      patch_size: 16,
      num_position_embeddings: 2304,
      deepstack_visual_indexes: [8, 16, 24],
      spatial_merge_size: 2,
      temporal_patch_size: 2,
    },
  }),
};
