/**
 * Supervised warm start of a policy (the "base model" that RL post-training starts from):
 * teacher-forced canonical answers `<answer>X</answer>` on the original members of the train
 * split, seeded order, a fixed number of steps, then a checkpoint folder usable as `policy.init`.
 * On the synthetic DyBench with the shortcut knob on, a short warm start leans on the colour cue,
 * as real base models lean on static cues (crpo-method.md section 1).
 */
import * as fs from 'fs';
import { displayedOptions, formatPrompt } from '../prompt';
import { POLICY_KINDS } from '../policy/policy';
import '../policy/linear';
import '../policy/native';
import '../policy/qwen';
import { dataTexts } from './trainer';
import type { TrainConfig } from './config';
import { batchIndices, loadTrainData } from './data';
import { writeTrainingPrompt } from '../policy/checkpoint-folder';

export interface SftBaseOptions {
  steps: number;
  batchSize: number;
  lr: number;
  /** Show the null option in the prompts (as the RL run will). */
  nullOption: boolean;
  /** Checkpoint folder to write. */
  out: string;
  log?(message: string): void;
}

/** Trains a fresh policy of `c.policy.kind` on `c.data.train` and saves it to `o.out`. */
export async function sftBase(c: TrainConfig, o: SftBaseOptions): Promise<{ dir: string; finalLoss: number }> {
  const { train, val } = await loadTrainData(c);
  const policy = await POLICY_KINDS.get(c.policy.kind)({
    seed: c.seed,
    preset: c.policy.preset,
    frames: c.data.frames,
    size: c.data.size,
    texts: dataTexts([...train, ...val].map((x) => x.record)),
  });
  try {
    const prompts = train.map((it) => ({
      frames: it.frames,
      frameShape: it.shape,
      question: it.record.question,
      options: displayedOptions(it.record.options, o.nullOption),
      prompt: formatPrompt(it.record.question, it.record.options, { nullOption: o.nullOption }),
    }));
    let loss = NaN;
    for (let s = 0; s < o.steps; s++) {
      const idx = batchIndices(prompts.length, o.batchSize, c.seed + 7919, s);
      const r = await policy.sftStep(
        idx.map((i) => prompts[i]),
        idx.map((i) => train[i].record.answer),
        { lr: o.lr, maxGradNorm: 1 },
      );
      loss = r.loss;
      if (o.log && ((s + 1) % Math.max(1, Math.floor(o.steps / 5)) === 0 || s + 1 === o.steps))
        o.log(`sft step ${s + 1}/${o.steps}: loss ${loss.toFixed(4)}`);
    }
    fs.mkdirSync(o.out, { recursive: true });
    await policy.save(o.out);
    writeTrainingPrompt(o.out, { nullOption: o.nullOption }); // read by crpo serve's model card and crpo eval
    return { dir: o.out, finalLoss: loss };
  } finally {
    policy.dispose();
  }
}
