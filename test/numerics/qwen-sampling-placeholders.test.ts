/**
 * Sampling never emits a vision placeholder token (native/torch/qwen generate): a completion holding
 * <|image_pad|> or <|video_pad|> would be read as one more visual position when the sequence is
 * scored again, and the forward would refuse it ("Video features and Video tokens do not match").
 * The golden Qwen3-VL model has 320 tokens and random weights, so 64 rollouts of 16 tokens would
 * draw a placeholder about 6 times if they could (`crpo bench rollout --policy qwen` at its defaults
 * did, and failed); here they are sampled, then scored again.
 */
import * as path from 'path';
import { QwenPolicy } from '../../lib/policy/qwen';
import { GOLDEN_ROOT, goldenSkipReason } from './golden-qwen-helpers';
import { skipIf } from '../helpers/skip';

const MODEL = 'qwen3_vl';

skipIf(goldenSkipReason(MODEL)).describe('Qwen policy sampling', () => {
  test('64 rollouts at temperature 1 hold no vision placeholder and score again', async () => {
    const p = await QwenPolicy.create({
      model: path.join(GOLDEN_ROOT, MODEL),
      lora: { rank: 2, targetModules: ['q_proj'] },
    });
    try {
      const [T, H, W] = [4, 64, 64];
      const prompt = {
        frames: Uint8Array.from({ length: T * H * W * 3 }, (_, i) => (i * 7) % 251),
        frameShape: [T, H, W, 3] as [number, number, number, 3],
        question: 'Is it moving?',
        options: ['yes', 'no'],
        prompt: 'Is it moving?\nA. yes\nB. no\nAnswer with the option letter inside <answer></answer>.',
      };
      const gen = await p.generate([prompt], { samples: 64, temperature: 1, maxNewTokens: 16, seed: 3 });
      const tokens = gen[0].flatMap((c) => c.tokens);
      const { imageTokenId, videoTokenId } = p.model.config;
      expect(tokens.length).toBeGreaterThan(500);
      expect(tokens.filter((t) => t === imageTokenId || t === videoTokenId)).toEqual([]);
      const seqs = gen[0].map((c) => ({ prompt: 0, tokens: c.tokens }));
      const scored = await p.logprobs([prompt], seqs, { temperature: 1 });
      expect(scored.map((r) => r.length)).toEqual(seqs.map((s) => s.tokens.length));
    } finally {
      p.dispose();
    }
  }, 120_000);
});
