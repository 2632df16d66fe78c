/**
 * Rope index (lib/hf/rope-index.ts) on hand-computed cases: text-only, Qwen2.5-VL's truncating
 * seconds-per-grid cast (transformers since 2025-04: 0.5 s per grid gives a temporal step of 0),
 * padding, and Qwen3-VL's per-frame video grids. The golden tests check transformers' own ids.
 */
import { parseQwenConfig, type QwenVLConfig } from '../../lib/hf/config';
import { ropeIndex } from '../../lib/hf/rope-index';

function cfg(arch: 'qwen2_5_vl' | 'qwen3_vl'): QwenVLConfig {
  const base = {
    model_type: arch,
    image_token_id: 300,
    video_token_id: 301,
    vision_start_token_id: 302,
    vision_end_token_id: 303,
    vision_config: {
      depth: 1,
      hidden_size: 8,
      intermediate_size: 16,
      num_heads: 2,
      patch_size: 14,
      spatial_merge_size: 2,
      out_hidden_size: 16,
      tokens_per_second: 2,
      num_position_embeddings: 16,
    },
  };
  const text = {
    hidden_size: 16,
    intermediate_size: 32,
    num_hidden_layers: 1,
    num_attention_heads: 2,
    num_key_value_heads: 1,
    vocab_size: 320,
    head_dim: 8,
    rope_scaling: { mrope_section: [2, 1, 1], mrope_interleaved: true },
  };
  return parseQwenConfig(arch === 'qwen3_vl' ? { ...base, text_config: text } : { ...base, ...text });
}

const axis = (pos: Int32Array, a: number, L: number, b = 0, B = 1) =>
  Array.from(pos.subarray((a * B + b) * L, (a * B + b + 1) * L));

describe('rope index', () => {
  test('text only: 0..L-1 on all axes, delta 0', () => {
    const r = ropeIndex(cfg('qwen2_5_vl'), { inputIds: [[5, 6, 7]] });
    for (let a = 0; a < 3; a++) expect(axis(r.positionIds, a, 3)).toEqual([0, 1, 2]);
    expect(r.deltas).toEqual([0]);
  });

  // one video of grid (3, 4, 4): 3 temporal groups of 2x2 merged tokens = 12 video tokens
  const video = [1, 302, ...Array(12).fill(301), 303, 9];
  test('Qwen2.5-VL: 1 s per grid steps t by tokens_per_second (2)', () => {
    const r = ropeIndex(cfg('qwen2_5_vl'), { inputIds: [video], videoGridThw: [[3, 4, 4]], secondPerGridTs: [1.0] });
    const L = video.length;
    expect(axis(r.positionIds, 0, L)).toEqual([0, 1, 2, 2, 2, 2, 4, 4, 4, 4, 6, 6, 6, 6, 7, 8]);
    expect(axis(r.positionIds, 1, L)).toEqual([0, 1, 2, 2, 3, 3, 2, 2, 3, 3, 2, 2, 3, 3, 7, 8]);
    expect(axis(r.positionIds, 2, L)).toEqual([0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 7, 8]);
    expect(r.deltas).toEqual([9 - L]);
  });

  test('Qwen2.5-VL: 0.5 s per grid truncates to 0 (temporal step 0), 2.5 s to 2 (step 4)', () => {
    const half = ropeIndex(cfg('qwen2_5_vl'), { inputIds: [video], videoGridThw: [[3, 4, 4]], secondPerGridTs: [0.5] });
    expect(axis(half.positionIds, 0, video.length).slice(2, 14)).toEqual(Array(12).fill(2));
    const two = ropeIndex(cfg('qwen2_5_vl'), { inputIds: [video], videoGridThw: [[3, 4, 4]], secondPerGridTs: [2.5] });
    expect(axis(two.positionIds, 0, video.length).slice(2, 14)).toEqual([2, 2, 2, 2, 6, 6, 6, 6, 10, 10, 10, 10]);
  });

  test('left padding: padded positions hold 1, the rest start at 0', () => {
    const ids = [0, 0, 1, 302, 301, 301, 301, 301, 303];
    const mask = [0, 0, 1, 1, 1, 1, 1, 1, 1];
    const r = ropeIndex(cfg('qwen2_5_vl'), { inputIds: [ids], attentionMask: [mask], videoGridThw: [[1, 4, 4]] });
    expect(axis(r.positionIds, 0, 9)).toEqual([1, 1, 0, 1, 2, 2, 2, 2, 4]);
    expect(axis(r.positionIds, 1, 9)).toEqual([1, 1, 0, 1, 2, 2, 3, 3, 4]);
    expect(r.deltas).toEqual([5 - 9]);
  });

  test('Qwen3-VL: each frame is its own grid with t index 0, timestamps are text', () => {
    // <t0> <vs> v v v v <ve> <t1> <vs> v v v v <ve>
    const ids = [7, 302, 301, 301, 301, 301, 303, 8, 302, 301, 301, 301, 301, 303];
    const r = ropeIndex(cfg('qwen3_vl'), { inputIds: [ids], videoGridThw: [[2, 4, 4]] });
    expect(axis(r.positionIds, 0, 14)).toEqual([0, 1, 2, 2, 2, 2, 4, 5, 6, 7, 7, 7, 7, 9]);
    expect(axis(r.positionIds, 1, 14)).toEqual([0, 1, 2, 2, 3, 3, 4, 5, 6, 7, 7, 8, 8, 9]);
    expect(axis(r.positionIds, 2, 14)).toEqual([0, 1, 2, 3, 2, 3, 4, 5, 6, 7, 8, 7, 8, 9]);
  });
});
