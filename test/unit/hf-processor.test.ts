/**
 * The Qwen-VL processor in TypeScript (lib/hf/processor.ts) against values computed with the
 * transformers functions transcribed in Python (smart_resize with round-half-to-even, numpy
 * linspace().round() frame indices, f"{t:.1f}" timestamps), patchify against a generic
 * reshape/transpose (the numpy formulation the HF processors use), and the chat format through
 * Qwen3's real tokenizer.
 */
import { parseQwenConfig } from '../../lib/hf/config';
import {
  expandPlaceholders,
  formatFixed1,
  frameTimestamps,
  patchify,
  processFrames,
  renderChat,
  roundHalfEven,
  sampleFrameIndices,
  smartResize,
  smartResizeVideo,
} from '../../lib/hf/processor';
import { qwen3Tokenizer } from '../../lib/hf/tokenizer';

const vision = {
  depth: 1,
  hidden_size: 8,
  intermediate_size: 16,
  num_heads: 2,
  spatial_merge_size: 2,
  out_hidden_size: 16,
  temporal_patch_size: 2,
};
const tokens = {
  image_token_id: 151655,
  video_token_id: 151656,
  vision_start_token_id: 151652,
  vision_end_token_id: 151653,
};
const text = {
  hidden_size: 16,
  intermediate_size: 32,
  num_hidden_layers: 1,
  num_attention_heads: 2,
  num_key_value_heads: 1,
  vocab_size: 151936,
};
const q25 = parseQwenConfig({
  model_type: 'qwen2_5_vl',
  ...tokens,
  ...text,
  rope_scaling: { mrope_section: [2, 1, 1] },
  vision_config: { ...vision, patch_size: 14 },
});
const q3 = parseQwenConfig({
  model_type: 'qwen3_vl',
  ...tokens,
  text_config: { ...text, head_dim: 8, rope_scaling: { mrope_section: [2, 1, 1], mrope_interleaved: true } },
  vision_config: { ...vision, patch_size: 16, num_position_embeddings: 16 },
});

/** numpy: x.reshape(shape).transpose(perm).reshape(-1), element by element. */
function reshapeTranspose(x: Float32Array, shape: number[], perm: number[]): Float32Array {
  const n = shape.length;
  const strides = shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1));
  const outShape = perm.map((p) => shape[p]);
  const out = new Float32Array(x.length);
  const idx = new Array(n).fill(0);
  for (let o = 0; o < x.length; o++) {
    let src = 0;
    for (let k = 0; k < n; k++) src += idx[k] * strides[perm[k]];
    out[o] = x[src];
    for (let k = n - 1; k >= 0; k--) {
      if (++idx[k] < outShape[k]) break;
      idx[k] = 0;
    }
  }
  return out;
}

describe('Qwen-VL processor', () => {
  test('round half to even and Python one-decimal formatting', () => {
    expect([0.5, 1.5, 2.5, 3.5, 2.4, 2.6].map(roundHalfEven)).toEqual([0, 2, 2, 4, 2, 3]);
    expect([0.25, 0.75, 1.25, 2.35, 0.05, 3].map(formatFixed1)).toEqual(['0.2', '0.8', '1.2', '2.4', '0.1', '3.0']);
  });

  test('smart_resize equals transformers (values from the Python function)', () => {
    const img = { factor: 28, minPixels: 56 * 56, maxPixels: 28 * 28 * 1280 };
    expect(smartResize(1080, 1920, img)).toEqual([728, 1316]);
    expect(smartResize(70, 70, img)).toEqual([56, 56]); // 2.5 rounds to 2, not 3
    expect(smartResize(70, 98, img)).toEqual([56, 112]);
    expect(smartResize(20, 30, img)).toEqual([56, 84]);
    expect(smartResize(224, 224, img)).toEqual([224, 224]);
    const vid = { factor: 32, temporalFactor: 2, minPixels: 128 * 32 * 32, maxPixels: 32 * 32 * 768 };
    expect(smartResizeVideo(16, 480, 640, vid)).toEqual([192, 256]);
    expect(smartResizeVideo(4, 64, 64, vid)).toEqual([192, 192]);
    expect(smartResizeVideo(8, 360, 640, { ...vid, minPixels: 4096, maxPixels: 25165824 })).toEqual([352, 640]);
  });

  test('frame sampling and Qwen3-VL timestamps', () => {
    expect(sampleFrameIndices('qwen3_vl', 100, 25, { fps: 2 })).toEqual([0, 14, 28, 42, 57, 71, 85, 99]);
    expect(sampleFrameIndices('qwen3_vl', 10, 1, { numFrames: 4 })).toEqual([0, 3, 6, 9]);
    expect(sampleFrameIndices('qwen2_5_vl', 100, 25, { fps: 2 })).toEqual([0, 14, 28, 42, 57, 71, 85, 99]);
    expect(sampleFrameIndices('qwen2_5_vl', 100, 25, { fps: 2, maxFrames: 5 })).toHaveLength(4); // floored to a multiple of 2
    expect(frameTimestamps([0, 1, 2, 3, 4], 2)).toEqual([0.25, 1.25, 2]);
  });

  test('patchify equals the HF reshape/transpose, with the last frame repeated to fill a temporal patch', () => {
    const [T, C, H, W, p, tp, m] = [3, 3, 8, 12, 2, 2, 2];
    const frames = Float32Array.from({ length: T * C * H * W }, (_, i) => i);
    const { rows, grid } = patchify(frames, T, C, H, W, { patchSize: p, temporalPatchSize: tp, mergeSize: m });
    expect(grid).toEqual([2, 4, 6]);
    const padded = new Float32Array(4 * C * H * W);
    padded.set(frames);
    padded.set(frames.subarray(2 * C * H * W), 3 * C * H * W);
    const ref = reshapeTranspose(padded, [2, tp, C, H / p / m, m, p, W / p / m, m, p], [0, 3, 6, 4, 7, 2, 1, 5, 8]);
    expect(Array.from(rows)).toEqual(Array.from(ref));
  });

  test('processFrames: normalised patch rows with the model grid (no resize needed)', async () => {
    const [T, H, W] = [2, 56, 84];
    const frames = Uint8Array.from({ length: T * H * W * 3 }, (_, i) => (i * 7) % 256);
    const r = await processFrames(q25, frames, T, H, W, 'video', { minPixels: 56 * 56 });
    expect(r.grid).toEqual([1, 4, 6]);
    expect(r.pixelValues.length).toBe(24 * 3 * 2 * 14 * 14);
    // row 0, column 0: frame 0, channel 0, pixel (0, 0), CLIP-normalised
    expect(r.pixelValues[0]).toBeCloseTo((frames[0] / 255 - 0.48145466) / 0.26862954, 5);
    const q = await processFrames(
      q3,
      Uint8Array.from({ length: 4 * 64 * 64 * 3 }, () => 255),
      4,
      64,
      64,
      'video',
      { minPixels: 4096, maxPixels: 4 * 64 * 64 },
    );
    expect(q.grid).toEqual([2, 4, 4]);
    expect(q.pixelValues.every((x) => Math.abs(x - 1) < 1e-6)).toBe(true);
  });

  test('chat template and placeholder expansion through the real Qwen3 tokenizer', () => {
    const tok = qwen3Tokenizer();
    const msgs = [
      {
        role: 'user' as const,
        content: [{ type: 'video' as const }, { type: 'text' as const, text: 'What happens?' }],
      },
    ];
    const t25 = renderChat('qwen2_5_vl', msgs);
    expect(t25).toBe(
      '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>What happens?<|im_end|>\n<|im_start|>assistant\n',
    );
    const ids25 = tok.encode(expandPlaceholders(q25, t25, [], [{ grid: [2, 4, 6] }]));
    expect(ids25.filter((x) => x === q25.videoTokenId)).toHaveLength(12);
    const t3 = renderChat('qwen3_vl', msgs);
    expect(t3.startsWith('<|im_start|>user\n')).toBe(true);
    const e3 = expandPlaceholders(q3, t3, [], [{ grid: [2, 4, 4], timestamps: [0.25, 1.25] }]);
    expect(e3).toContain(
      '<0.2 seconds><|vision_start|><|video_pad|><|video_pad|><|video_pad|><|video_pad|><|vision_end|><1.2 seconds><|vision_start|>',
    );
    const ids3 = tok.encode(e3);
    expect(ids3.filter((x) => x === q3.videoTokenId)).toHaveLength(8);
    expect(ids3.filter((x) => x === q3.visionStartTokenId)).toHaveLength(2);
    expect(tok.tokenId('<|im_end|>')).toBe(151645);
    expect(tok.decode(ids3)).toBe(e3);
  });
});
