/**
 * The base models RL starts from, made by supervised training: `shortcutBase`, the native policy
 * in two `runSft` phases (it sees and reads, then leans on the colour cue: the paper's starting
 * point), for `crpo demo` and `crpo reproduce`; `sftBase`, the warm start of any policy kind on a
 * train split's canonical answers.
 */
import * as fs from 'fs';
import * as path from 'path';
import type { PolicyPresetName } from '../model/config';
import { POLICY_KINDS, recordPrompt } from '../policy/policy';
import { writeTrainingPrompt } from '../policy/checkpoint-folder';
import { SYNTH_DEFAULTS } from '../synth';
import type { TrainConfig } from './config';
import { batchIndices, loadTrainData } from './data';
import {
  CAPABILITY_BASE,
  HALF_STATIC,
  SFT_DEFAULTS,
  STATIC_ATTRIBUTES,
  runSft,
  type SftProgress,
  type SftReport,
} from './sft';
import { dataTexts } from './trainer';
import '../policy/linear';
import '../policy/native';
import '../policy/qwen';

/** Settings of the two-phase base model (shortcutBase). */
export interface ShortcutBaseOptions {
  /** Phase 1: steps on fresh clips of every category, both pair members, colour independent of the answer. */
  capabilitySteps: number;
  /** Phase 2: steps on fresh originals whose object colour names the dynamic answer (shortcutP 1). */
  shortcutSteps: number;
  batchSize: number;
  /** Peak learning rate of phase 1. */
  lr: number;
  /** Peak learning rate of phase 2 (default: half of `lr`). */
  shortcutLr?: number;
  /** Prompt language-model loss weight (both phases). */
  promptLm: number;
  seed: number;
  preset?: PolicyPresetName;
  /** Test pairs per category of each phase's report. */
  testPairs?: number;
  /**
   * The training stream of both phases. 'capability' (default): `crpo sft`'s third-round recipe
   * (SFT_DEFAULTS' target, reading and attribute questions; CAPABILITY_BASE's model and two thirds
   * static clips), so the base reads colour, shape and count; phase 2 keeps the static clips and
   * their attribute questions beside the shortcut dynamic clips. 'letter': the letter alone
   * (`<answer>B</answer>`), no auxiliary questions, no stem, every category alike: the earlier base.
   * 'starting-point': phase 1 is `crpo sft` with every default (the fifth round's recipe), phase 2
   * trains originals whose dynamic answers are the option their colour names, whatever they show
   * (SftOptions.dynamicAnswers 'colour'), so the base answers dynamic questions by colour against
   * the motion it can see (docs/model.md, "The demo's base").
   */
  recipe?: 'capability' | 'letter' | 'starting-point';
  log?(message: string): void;
}

/**
 * The base model RL starts from, made as the paper's starting point: a model that sees and reads
 * (phase 1), then learns to answer dynamic questions by a static cue, the object's colour
 * (phase 2), as pretrained video LLMs lean on static cues. Writes `dir/capability/` (phase 1) and
 * `dir/checkpoint/` (the base); returns both reports.
 */
export async function shortcutBase(
  dir: string,
  o: ShortcutBaseOptions,
): Promise<{ capability: SftReport; base: SftReport }> {
  let last = -Infinity;
  const progress =
    (phase: string) =>
    (q: SftProgress): void => {
      if (!o.log || (q.elapsed - last < 15 && q.step !== q.steps)) return;
      last = q.elapsed;
      o.log(
        `${phase}: step ${q.step}/${q.steps} loss ${q.loss.toFixed(3)} (${q.elapsed.toFixed(0)} s, ETA ${q.eta.toFixed(0)} s)`,
      );
    };
  const recipe = o.recipe ?? 'capability';
  const common = {
    batchSize: o.batchSize,
    promptLm: o.promptLm,
    seed: o.seed,
    preset: o.preset ?? SFT_DEFAULTS.preset,
    testPairs: o.testPairs ?? 10,
    maxSeconds: 0,
    saveEvery: 0,
    nullOption: true,
  };
  const capDir = path.join(dir, 'capability');
  if (recipe === 'starting-point') {
    // crpo sft's recipe (every default), then dynamic clips answered by their colour whatever they
    // show (static clips keep their true answers, the vision attribute loss is off).
    const capability = await runSft({
      ...common,
      out: capDir,
      steps: o.capabilitySteps,
      lr: o.lr,
      onProgress: progress('phase 1, crpo sft on fresh clips, colour independent of the answer'),
    });
    last = -Infinity;
    const base = await runSft({
      ...common,
      out: dir,
      init: capDir,
      steps: o.shortcutSteps,
      lr: o.shortcutLr ?? o.lr / 2,
      members: 'original',
      colour: 'independent',
      dynamicAnswers: 'colour',
      visionAux: 0,
      // Half the clips static: their true answers keep the static skills while the dynamic ones
      // learn the colour.
      categories: HALF_STATIC,
      onProgress: progress('phase 2, originals, dynamic clips answered by their colour'),
    });
    return { capability, base };
  }
  const capabilityRecipe = recipe === 'capability';
  const stream = {
    visionAux: CAPABILITY_BASE.visionAux,
    ...(capabilityRecipe
      ? {
          target: SFT_DEFAULTS.target,
          reading: SFT_DEFAULTS.reading,
          attributeQuestions: SFT_DEFAULTS.attributeQuestions,
          attributeClips: SFT_DEFAULTS.attributeClips,
          staticAttributes: SFT_DEFAULTS.staticAttributes,
          model: CAPABILITY_BASE.model,
        }
      : {
          target: 'letter' as const,
          reading: 0,
          attributeQuestions: 0,
          staticAttributes: STATIC_ATTRIBUTES,
          model: { ...CAPABILITY_BASE.model, visionStem: 0 },
        }),
  };
  const capability = await runSft({
    ...common,
    ...stream,
    out: capDir,
    steps: o.capabilitySteps,
    lr: o.lr,
    members: 'both',
    colour: 'independent',
    categories: capabilityRecipe ? CAPABILITY_BASE.categories : SYNTH_DEFAULTS.categories,
    onProgress: progress('phase 1, fresh clips, colour independent of the answer'),
  });
  last = -Infinity;
  const base = await runSft({
    ...common,
    ...stream,
    out: dir,
    init: capDir,
    steps: o.shortcutSteps,
    lr: o.shortcutLr ?? o.lr / 2,
    members: 'original',
    colour: 'shortcut',
    shortcutP: 1,
    categories: SYNTH_DEFAULTS.categories,
    onProgress: progress('phase 2, originals, colour names the dynamic answer'),
  });
  return { capability, base };
}

/*
 * The supervised warm start of any policy kind (the "base model" that RL post-training starts from):
 * teacher-forced canonical answers `<answer>X</answer>` on the original members of the train
 * split, seeded order, a fixed number of steps, then a checkpoint folder usable as `policy.init`.
 * On the synthetic DyBench with the shortcut knob on, a short warm start leans on the colour cue,
 * as real base models lean on static cues (crpo-method.md section 1).
 */
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
    const prompts = train.map((it) => recordPrompt(it.record, it.frames, it.shape, o.nullOption));
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
