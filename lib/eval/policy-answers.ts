/**
 * The one evaluation routine of a training policy on held-out clips: greedy answers, parsed
 * against the options shown, as scored samples for the paired metrics. The trainer's validation
 * and `crpo reproduce`'s held-out table both go through it.
 */
import type { DyBenchRecord } from '../data/schema';
import { recordPrompt, type Policy } from '../policy/policy';
import { parseAnswer } from '../prompt';
import type { ScoredSample } from './metrics';

/** A held-out clip: its record and uint8 RGB frames [T, H, W, 3]. */
export interface HeldOutClip {
  record: DyBenchRecord;
  frames: Uint8Array;
  shape: [number, number, number, 3];
}

/** Greedy answers of `policy` on `clips` (one per clip), parsed into option indices (null = invalid). */
export async function greedySamples(
  policy: Policy,
  clips: readonly HeldOutClip[],
  nullOption: boolean,
  maxNewTokens: number,
): Promise<ScoredSample[]> {
  const prompts = clips.map((c) => recordPrompt(c.record, c.frames, c.shape, nullOption));
  const out = await policy.generate(prompts, { samples: 1, temperature: 1, maxNewTokens, seed: 0, greedy: true });
  return clips.map((c, i) => ({
    id: c.record.id,
    pair_id: c.record.pair_id,
    category: c.record.category,
    answer: c.record.answer,
    prediction: parseAnswer(out[i][0].text, prompts[i].options.length).index,
  }));
}
