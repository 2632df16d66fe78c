/**
 * Qwen3-VL against transformers' own outputs on the tiny golden config (../shared/golden):
 * rope index with per-frame video grids, vision tower with interpolated position embeddings and
 * DeepStack features, merged embeddings, decoder with q/k norms and interleaved mrope, logits,
 * losses, gradients, and KV-cached vs uncached greedy decoding.
 */
import { goldenSuite } from './golden-qwen-helpers';

goldenSuite('qwen3_vl');
