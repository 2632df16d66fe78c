/**
 * The policy interface the trainer drives (crpo-method.md sections 4-6): sample G completions
 * per prompt, score completions' per-token log-probs under the policy or its frozen reference,
 * take one optimiser step on the section-6 loss given per-sequence advantages and old / reference
 * log-probs, take one supervised step, and save / load its full state (weights, optimiser,
 * reference) for bitwise resume. Policy kinds are registered by name.
 */
import { invalidArg, outOfRange } from '../errors';
import { Registry } from '../registry';
import type { LossSettings } from '../algo/loss';
import { displayedOptions, formatPrompt } from '../prompt';
import type { FrameTransform } from '../counterfactual/transforms';

/** One prompt: frames plus the question with the options actually shown (null option included when on). */
export interface PolicyPrompt {
  /** uint8 RGB [T, H, W, 3]; not changed once given to a policy (a policy may keep it packed between calls). */
  frames: Uint8Array;
  frameShape: [number, number, number, 3];
  question: string;
  /** Options shown, in letter order (the null option last when appended). */
  options: string[];
  /** The full formatted prompt text (lib/prompt formatPrompt). */
  prompt: string;
  /**
   * The clip is `frames` after this transform (default 'none': `frames` as they are). Only for a
   * kind with `deviceTransforms`, which applies it where its tensors live: the trainer then gives
   * both branches of a prompt the same `frames` array, so the clip crosses into native code once.
   */
  transform?: FrameTransform;
  /** transform 'swap': the first frame of the second segment. */
  swapAt?: number;
}

/**
 * The prompt of a record's question and options over its clip: the one prompt builder of the
 * trainer, `crpo reproduce` and the supervised warm start.
 */
export function recordPrompt(
  record: { question: string; options: string[] },
  frames: Uint8Array,
  frameShape: [number, number, number, 3],
  nullOption: boolean,
): PolicyPrompt {
  return {
    frames,
    frameShape,
    question: record.question,
    options: displayedOptions(record.options, nullOption),
    prompt: formatPrompt(record.question, record.options, { nullOption }),
  };
}

/** A sampled completion: its tokens, their log-probs at sampling time, and the decoded text. */
export interface Completion {
  tokens: number[];
  logprobs: number[];
  text: string;
}

export interface GenerateOptions {
  /** Completions per prompt. */
  samples: number;
  temperature: number;
  maxNewTokens: number;
  /** Sampling seed: the same seed, prompts and weights give the same completions. */
  seed: number;
  /**
   * One seed per prompt (integers in [0, 2^32)); when given, `seed` is not used and the samples
   * of prompts[i] are a function of (promptSeeds[i], the prompt, the weights) only: the same
   * whether the prompt is generated alone or inside any batch. The trainer derives them from
   * (run seed, step, branch, the prompt's global position in the step's batch), so N processes
   * sample what one process samples.
   */
  promptSeeds?: readonly number[];
  /** Argmax decoding (evaluation). */
  greedy?: boolean;
}

/** `o.promptSeeds` checked against the prompts (one integer in [0, 2^32) each), or undefined when not given. */
export function checkPromptSeeds(
  prompts: number,
  o: Pick<GenerateOptions, 'promptSeeds'>,
  where: string,
): readonly number[] | undefined {
  const s = o.promptSeeds;
  if (s === undefined) return undefined;
  if (!Array.isArray(s) || s.length !== prompts)
    throw invalidArg('promptSeeds', `an array of ${prompts} seeds (one per prompt)`, s, where);
  s.forEach((v, i) => {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff)
      throw outOfRange(`promptSeeds[${i}]`, 'an integer in [0, 2^32)', v, where);
  });
  return s;
}

/** One sequence of the update batch. */
export interface TrainSequence {
  /** Index into the prompts array of the batch. */
  prompt: number;
  tokens: number[];
  advantage: number;
  /** (T,) log-probs at rollout time (the behaviour policy). */
  oldLogprobs: number[];
  /** (T,) log-probs under the frozen reference (needed when beta > 0). */
  refLogprobs?: number[];
}

export interface TrainStepOptions extends LossSettings {
  /** Native process group whose ranks average gradients before clipping (multi-process runs). */
  processGroup?: number;
  /** With processGroup: all-reduce gradients overlapped with backward (default) or after it (false: the slow twin). */
  overlapGrads?: boolean;
  /** Bucket size of the overlapped gradient all-reduce, MiB (default 25). */
  gradBucketMb?: number;
  /** 1: ZeRO-1 sharded AdamW state across processGroup's ranks (the Qwen policy; full fine-tuning). */
  zero?: 0 | 1;
  /** Seeds the step's own randomness (LoRA dropout), so that a resumed run repeats it; unseeded when absent. */
  seed?: number;
  lr: number;
  maxGradNorm: number;
  weightDecay: number;
  temperature: number;
}

export interface TrainStepStats {
  loss: number;
  /** The clipped-surrogate part of the loss (the metrics line's pg_loss). */
  pgLoss: number;
  kl: number;
  clipFraction: number;
  /** Gradient norm before clipping (non-finite when the step was skipped). */
  gradNorm: number;
  /** Mean per-token entropy of the policy on the trained sequences. */
  entropy: number;
  tokens: number;
  /** The update was not applied because the loss or the gradient was not finite. */
  skipped: boolean;
}

export interface Policy {
  readonly kind: string;
  /**
   * True when trainStep averages the gradients of all ranks of `o.processGroup` before the update
   * (data parallel). The trainer refuses to run a kind without it on more than one process: each
   * rank would train its own replica on its own shard (lib/train/trainer.ts).
   */
  readonly syncsGradients?: boolean;
  /**
   * True when trainStep honours `zero: 1` (AdamW state sharded over the ranks of `o.processGroup`).
   * Saving is then collective: rank 0 calls save(dir), every other rank joinSave() at the same point.
   */
  readonly shardsOptimizerState?: boolean;
  /**
   * True when the kind applies PolicyPrompt.transform itself (on its device). A kind without it
   * gets the transformed frames (the trainer makes them in JS) and no transform.
   */
  readonly deviceTransforms?: boolean;
  /** A rank other than 0's part of a collective save (see shardsOptimizerState); writes nothing. */
  joinSave?(): Promise<void>;
  generate(prompts: readonly PolicyPrompt[], o: GenerateOptions): Promise<Completion[][]>;
  /** Per-token log-probs of given completions (`reference`: under the frozen reference weights). */
  logprobs(
    prompts: readonly PolicyPrompt[],
    seqs: readonly { prompt: number; tokens: number[] }[],
    o: { temperature: number; reference?: boolean },
  ): Promise<number[][]>;
  trainStep(
    prompts: readonly PolicyPrompt[],
    seqs: readonly TrainSequence[],
    o: TrainStepOptions,
  ): Promise<TrainStepStats>;
  /** One supervised step towards the canonical answer `<answer>X</answer>` of each prompt. */
  sftStep(
    prompts: readonly PolicyPrompt[],
    answers: readonly number[],
    o: { lr: number; maxGradNorm: number },
  ): Promise<{ loss: number; gradNorm: number }>;
  /** Copies the current weights into the frozen reference. */
  freezeReference(): Promise<void>;
  /** Writes the full state (weights, optimiser, reference) into `dir` (files are written atomically). */
  save(dir: string): Promise<void>;
  /**
   * A digest of the weights (hex), for bitwise comparisons (as of the last completed call). A kind
   * whose weights live in native code reads them back only when asked, and returns a Promise.
   */
  weightsDigest(): string | Promise<string>;
  dispose(): void;
}

/**
 * Creates a policy: from the full state of a training checkpoint (`resumeFrom`), from the weights
 * of a checkpoint folder (`init`, fresh optimiser, reference = those weights), or fresh; `texts`
 * (every prompt and answer of the data) lets a policy with a vocabulary build it.
 */
export interface PolicyFactoryOptions {
  init?: string;
  resumeFrom?: string;
  seed: number;
  preset?: string;
  texts?: readonly string[];
  frames?: number;
  size?: number;
  /** What a kind with adapters trains: 'lora' (default) or 'full' (TrainConfig policy.finetune). */
  finetune?: 'lora' | 'full';
}

export type PolicyFactory = (o: PolicyFactoryOptions) => Promise<Policy>;

/** Policy kinds by name: 'linear' (lib/policy/linear.ts), 'native' when the torch policy is built. */
export const POLICY_KINDS = new Registry<PolicyFactory>('policy kind');
