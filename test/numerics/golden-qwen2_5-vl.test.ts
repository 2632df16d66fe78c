/**
 * Qwen2.5-VL against transformers' own outputs on the tiny golden config (../shared/golden):
 * rope index, vision tower with window attention, merged embeddings, decoder, logits, losses,
 * gradients, and KV-cached vs uncached greedy decoding.
 */
import { goldenSuite } from './golden-qwen-helpers';

goldenSuite('qwen2_5_vl');
