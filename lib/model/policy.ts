/**
 * The native video-language policy as a TypeScript handle (native/torch/model; docs/model.md):
 * create -> generate (KV-cached sampling, B prompts x G samples in one batch) -> logprobs (policy
 * or a frozen reference copy) -> trainStep (the clipped-surrogate + k3-KL loss of crpo-method.md
 * section 6, grad-norm clipping, AdamW) / sftStep (teacher-forced cross-entropy) -> evalBatch
 * (greedy answers parsed with lib/prompt parseAnswer). Every call validates its arguments here,
 * then runs as one async native call on the torch queue. Counterfactual frames are made on the
 * device: each prompt names its video and a transform, so the caller passes the frames once.
 */
import { FRAME_TRANSFORMS, type FrameTransform } from '../counterfactual/transforms';
import { CrpoError, invalidArg, outOfRange } from '../errors';
import {
  NativeHandle,
  callSync,
  rewrap,
  torchAddon,
  torchChecksAddon,
  type NativePolicyBatch,
  type NativePolicyLossInputs,
  type NativePolicyLossResult,
  type NativePolicyCompletions,
  type NativePolicyStepStats,
  type NativePolicyTensor,
  type TorchAddon,
  torchCall,
} from '../native';
import { parseAnswer } from '../prompt';
import { resolvePolicyConfig, visualTokens, type PolicyConfig, type PolicyPresetName } from './config';
import {
  LOSS_AGGREGATIONS,
  withClipNames,
  type DeprecatedClipNames,
  type LossAggregation,
  type PolicyLossOptions,
} from '../algo/loss';
import { ANSWER_CLOSE_ID, EOS_ID, Tokenizer, pieces } from './tokenizer';

/**
 * The transforms the native policy applies on the device (policy_model.cpp encode_prompts_visual):
 * the whole transform vocabulary (lib/counterfactual/transforms.ts), 'none' included.
 */
export type PolicyTransform = FrameTransform;
export const POLICY_TRANSFORMS: readonly PolicyTransform[] = FRAME_TRANSFORMS;

export interface PolicyModelPrompt {
  /** Index of the clip in `frames`. */
  video: number;
  /** Prompt text (lib/prompt formatPrompt); tokenized with a leading <bos>. */
  text?: string;
  /** Or token ids directly. */
  ids?: ArrayLike<number>;
  /** Counterfactual transform applied on the device before encoding (default 'none'). */
  transform?: PolicyTransform;
  /** 'swap' only: the first frame of the second segment, in [1, frames - 1]. */
  swapAt?: number;
  /**
   * `sftStep` with `visionAuxWeight` only: what the clip shows, as class `index` of the logit group
   * [start, start + size) of the vision attribute head (config `visionAuxClasses`).
   */
  visionLabel?: VisionLabel;
}

/** A label of the vision attribute head: class `index` of the logit group [start, start + size). */
export interface VisionLabel {
  start: number;
  size: number;
  index: number;
}

export interface PolicyInputs {
  /** uint8 [V, T, H, W, 3], T/H/W as in the config. */
  frames: Uint8Array;
  numVideos: number;
  prompts: readonly PolicyModelPrompt[];
  /** Samples per prompt (G); rows are prompt-major: row = p * G + g. Default 1. */
  groupSize?: number;
}

/** N = P*G completions, right-padded to `width`. `generate` returns this shape. */
export interface Completions {
  ids: Int32Array; // (N, C)
  lengths: Int32Array; // (N)
  width: number; // C
}

export interface PolicyModelGenerateOptions {
  maxNewTokens?: number;
  /** Sampling temperature; the returned log-probs are log_softmax(logits / temperature). */
  temperature?: number;
  topP?: number;
  /** 0 = off. */
  topK?: number;
  greedy?: boolean;
  /** Stop tokens (ids or pieces); default [<eos>]. A stop token is part of the completion. */
  stop?: ReadonlyArray<number | string>;
  /** false: recompute the whole sequence each step (the slow twin of the KV cache). */
  useCache?: boolean;
  /**
   * One sampling seed per prompt (integers in [0, 2^32)): the samples of prompt p are then a
   * function of (promptSeeds[p], weights, prompt) only, whatever else is in the batch. Default:
   * draw from the policy's own generator (saved with its checkpoint).
   */
  promptSeeds?: ArrayLike<number>;
  /** @deprecated the name of promptSeeds before one name per concept; promptSeeds wins when both are given. */
  seeds?: ArrayLike<number>;
}

export interface GenerateResult extends Completions {
  /** (N, C) log-probs of the sampled tokens, 0 after the end. */
  logprobs: Float32Array;
  /** Decoded completions. */
  texts: string[];
}

export interface TrainOptions extends DeprecatedClipNames {
  lr?: number;
  beta1?: number;
  beta2?: number;
  adamEps?: number;
  weightDecay?: number;
  /** Clip the global gradient norm to this (0 = off). Default 1. */
  maxGradNorm?: number;
  /** eps_low of the clipped surrogate (default 0.2). */
  clipLow?: number;
  /** eps_high of the clipped surrogate (default 0.2). */
  clipHigh?: number;
  /** KL coefficient (k3 against refLogprobs). Default 0.04. */
  beta?: number;
  aggregation?: LossAggregation;
  /** Divisor of seq-mean-token-sum-norm (default: completion width). */
  maxNewTokens?: number;
  temperature?: number;
  /**
   * A process group's native id (lib/distributed): gradients are averaged across ranks before clipping,
   * each rank weighted by its loss's denominator (sequences; tokens for token-mean). With
   * seq-mean-token-sum-norm pass maxNewTokens, so that every rank divides by the same number.
   */
  processGroup?: number;
  /**
   * Run every (prompt + completion) row whole instead of sharing each prompt's prefix keys/values
   * across its G completions: the slow twin, same result up to float rounding.
   */
  fullSequence?: boolean;
}

export interface SftStepOptions extends Omit<
  TrainOptions,
  'clipLow' | 'clipHigh' | 'epsLow' | 'epsHigh' | 'beta' | 'aggregation'
> {
  /**
   * Weight of a language-model loss on the prompt text (next-token cross-entropy of the prompt's
   * words after <bos>). A model trained from scratch learns the prompt's structure from it, as a
   * pretrained LLM knows it: which letter labels which option (docs/model.md, "Levers"). 0 = off.
   */
  promptLmWeight?: number;
  /**
   * Weight of the vision attribute loss: the cross-entropy of the vision attribute head (config
   * `visionAuxClasses`) against each prompt's `visionLabel`, mean over the labelled prompts. A
   * direct training signal for the vision encoder, as a real model's pretrained vision tower has
   * had; the head is never read when answering (docs/model.md, "Levers, fifth round"). 0 = off.
   */
  visionAuxWeight?: number;
}

export interface RlCompletions extends Completions {
  advantages: Float32Array; // (N)
  /** (N, C) behaviour-policy log-probs; default: the current ones (ratio 1). */
  oldLogprobs?: Float32Array;
  /** (N, C) reference log-probs for the KL term; default: no KL term. */
  refLogprobs?: Float32Array;
}

export type StepStats = NativePolicyStepStats;

export interface PolicyModelEvalResult {
  /** Parsed option index per prompt (-1 invalid). */
  answers: number[];
  formatOk: boolean[];
  texts: string[];
}

export interface PolicyInfo {
  parameters: number;
  step: number;
  frozen: boolean;
  visualTokens: number;
  names: string[];
  shapes: number[][];
}

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v);

function checkProbability(name: string, v: unknown, op: string, lo: number, loOpen: boolean): void {
  if (v === undefined) return;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw invalidArg(name, 'a finite number', v, op);
  if (loOpen ? !(v > lo) : !(v >= lo)) throw outOfRange(name, `a number ${loOpen ? '>' : '>='} ${lo}`, v, op);
}

/**
 * The option slot of every token of `text` as Tokenizer.encode(text, { bos: true }) splits it:
 * tokens of a line that starts with "<letter>. " (lib/prompt formatPrompt's option lines) get
 * that letter's slot (A = 1, ...; 0 past `maxSlots`), every other token (and <bos>) 0.
 */
export function optionSlots(text: string, maxSlots: number): number[] {
  const out = [0]; // <bos>
  for (const line of text.split('\n')) {
    const m = /^\s*([A-Z])\.\s/.exec(line);
    const slot = m ? m[1].charCodeAt(0) - 64 : 0;
    for (let k = pieces(line).length; k > 0; k--) out.push(slot <= maxSlots ? slot : 0);
  }
  return out;
}

export class PolicyModel extends NativeHandle {
  private constructor(
    private readonly native: TorchAddon,
    readonly id: number,
    readonly config: PolicyConfig,
    readonly tokenizer: Tokenizer,
    readonly frozen: boolean,
  ) {
    super();
  }

  /** A freshly initialised policy (weights from config.seed). */
  static async create(
    tokenizer: Tokenizer,
    config: Partial<PolicyConfig> & { preset?: PolicyPresetName } = {},
  ): Promise<PolicyModel> {
    if (!(tokenizer instanceof Tokenizer))
      throw invalidArg('tokenizer', 'a Tokenizer', tokenizer, 'PolicyModel.create');
    const c = resolvePolicyConfig({ ...config, vocabSize: tokenizer.size }, 'PolicyModel.create');
    const native = torchAddon();
    const id = await torchCall(() => native.policyCreate({ ...c, padId: 0 }));
    return new PolicyModel(native, id, c, tokenizer, false);
  }

  /** A frozen deep copy (the reference model of the KL term): no optimizer, trainStep refuses. */
  async cloneFrozen(): Promise<PolicyModel> {
    this.assertLive('PolicyModel');
    const id = await torchCall(() => this.native.policyClone(this.id, { frozen: true }));
    return new PolicyModel(this.native, id, this.config, this.tokenizer, true);
  }

  protected release(): void {
    callSync(() => this.native.policyDispose(this.id));
  }

  info(): PolicyInfo {
    this.assertLive('PolicyModel');
    return callSync(() => this.native.policyInfo(this.id));
  }

  /** Number of visual tokens each clip becomes. */
  get visualTokens(): number {
    return visualTokens(this.config);
  }

  /** Frame bytes of one clip: T * H * W * 3. */
  get clipBytes(): number {
    return this.config.frames * this.config.imageSize * this.config.imageSize * 3;
  }

  /** Validates inputs and builds the native batch (`allowEmpty`: no videos and no prompts is valid, for trainStep). */
  batch(inputs: PolicyInputs, op: string, allowEmpty = false): NativePolicyBatch {
    this.assertLive('PolicyModel');
    if (!inputs || typeof inputs !== 'object')
      throw invalidArg('inputs', 'an object { frames, numVideos, prompts, groupSize? }', inputs, op);
    const { frames, numVideos, prompts } = inputs;
    const groupSize = inputs.groupSize ?? 1;
    const minVideos = allowEmpty ? 0 : 1;
    if (!isInt(numVideos) || numVideos < minVideos)
      throw invalidArg('inputs.numVideos', `an integer >= ${minVideos}`, numVideos, op);
    const want = numVideos * this.clipBytes;
    if (Object.prototype.toString.call(frames) !== '[object Uint8Array]') {
      throw invalidArg(
        'inputs.frames',
        `a Uint8Array [${numVideos}, ${this.config.frames}, ${this.config.imageSize}, ${this.config.imageSize}, 3]`,
        frames,
        op,
      );
    }
    if (frames.length !== want) {
      throw outOfRange(
        'inputs.frames',
        `a Uint8Array of length ${want} ([${numVideos}, ${this.config.frames}, ${this.config.imageSize}, ${this.config.imageSize}, 3])`,
        frames,
        op,
      );
    }
    if (!Array.isArray(prompts) || (prompts.length === 0 && !allowEmpty))
      throw invalidArg(
        'inputs.prompts',
        allowEmpty ? 'an array of prompts' : 'a non-empty array of prompts',
        prompts,
        op,
      );
    if (!isInt(groupSize) || groupSize < 1) throw invalidArg('inputs.groupSize', 'an integer >= 1', groupSize, op);
    const ids: number[] = [];
    const slots: number[] = [];
    const useSlots = this.config.optionSlots > 0;
    const lengths = new Int32Array(prompts.length);
    const video = new Int32Array(prompts.length);
    const transform: string[] = [];
    const swapAt = new Int32Array(prompts.length);
    const auxLabels = new Int32Array(3 * prompts.length);
    let labelled = false;
    prompts.forEach((p, i) => {
      const where = `inputs.prompts[${i}]`;
      if (!p || typeof p !== 'object') throw invalidArg(where, 'an object { video, text | ids, transform? }', p, op);
      if (!isInt(p.video) || p.video < 0 || p.video >= numVideos)
        throw outOfRange(`${where}.video`, `an integer in [0, ${numVideos - 1}]`, p.video, op);
      const t = p.transform ?? 'none';
      if (!POLICY_TRANSFORMS.includes(t))
        throw invalidArg(`${where}.transform`, `one of ${POLICY_TRANSFORMS.join(', ')}`, t, op);
      if (t === 'swap') {
        const T = this.config.frames;
        if (!isInt(p.swapAt) || p.swapAt < 1 || p.swapAt >= T)
          throw outOfRange(`${where}.swapAt`, `an integer in [1, ${T - 1}] for a 'swap' prompt`, p.swapAt, op);
        swapAt[i] = p.swapAt;
      }
      if (p.visionLabel !== undefined) {
        const l = p.visionLabel;
        const K = this.config.visionAuxClasses;
        const ints = l !== null && typeof l === 'object' && [l.start, l.size, l.index].every(isInt);
        if (!ints || l.start < 0 || l.size < 1 || l.start + l.size > K || l.index < 0 || l.index >= l.size)
          throw outOfRange(
            `${where}.visionLabel`,
            `{ start, size, index } with [start, start + size) inside the vision attribute head's ${K} logits and index < size`,
            l,
            op,
          );
        auxLabels.set([l.start, l.size, l.index], 3 * i);
        labelled = true;
      }
      let pid: ArrayLike<number>;
      let pslots: number[] | undefined;
      if (p.ids !== undefined) pid = p.ids;
      else if (typeof p.text === 'string') {
        pid = this.tokenizer.encode(p.text, { bos: true });
        if (useSlots) pslots = optionSlots(p.text, this.config.optionSlots);
      } else throw invalidArg(`${where}.text`, 'a string (or ids)', p.text, op);
      if (pid.length < 1) throw outOfRange(`${where}.ids`, 'at least one token', pid.length, op);
      for (let k = 0; k < pid.length; k++) {
        const v = pid[k];
        if (!isInt(v) || v < 0 || v >= this.tokenizer.size)
          throw outOfRange(`${where}.ids[${k}]`, `a token id in [0, ${this.tokenizer.size - 1}]`, v, op);
        ids.push(v);
      }
      // Prompts given as ids carry no line structure: slot 0 (none) for every token.
      if (useSlots)
        slots.push(...(pslots && pslots.length === pid.length ? pslots : new Array<number>(pid.length).fill(0)));
      lengths[i] = pid.length;
      video[i] = p.video;
      transform.push(t);
    });
    return {
      frames,
      numVideos,
      promptVideo: video,
      promptTransform: transform,
      ...(transform.includes('swap') ? { promptSwapAt: swapAt } : {}),
      promptIds: Int32Array.from(ids),
      promptLengths: lengths,
      groupSize,
      ...(useSlots ? { promptSlots: Int32Array.from(slots) } : {}),
      ...(labelled ? { promptAuxLabels: auxLabels } : {}),
    };
  }

  private completions(c: Completions, rows: number, op: string): NativePolicyCompletions {
    if (!c || typeof c !== 'object') throw invalidArg('completions', 'an object { ids, lengths, width }', c, op);
    if (!isInt(c.width) || c.width < 1) throw invalidArg('completions.width', 'an integer >= 1', c.width, op);
    const ids = rewrap(c.ids);
    const lengths = rewrap(c.lengths);
    if (!(ids instanceof Int32Array) || ids.length !== rows * c.width)
      throw invalidArg(
        'completions.ids',
        `an Int32Array of length ${rows * c.width} (rows ${rows} x width ${c.width})`,
        c.ids,
        op,
      );
    if (!(lengths instanceof Int32Array) || lengths.length !== rows)
      throw invalidArg('completions.lengths', `an Int32Array of length ${rows}`, c.lengths, op);
    for (let i = 0; i < rows; i++)
      if (lengths[i] < 0 || lengths[i] > c.width)
        throw outOfRange(`completions.lengths[${i}]`, `an integer in [0, ${c.width}]`, lengths[i], op);
    return { ids, lengths, width: c.width };
  }

  private stopIds(stop: PolicyModelGenerateOptions['stop'], op: string): Int32Array {
    if (stop === undefined) return Int32Array.of(EOS_ID);
    if (!Array.isArray(stop)) throw invalidArg('options.stop', 'an array of token ids or pieces', stop, op);
    return Int32Array.from(
      stop.map((s, i) => {
        if (typeof s === 'string') {
          const id = this.tokenizer.vocab.indexOf(s);
          if (id < 0) throw invalidArg(`options.stop[${i}]`, 'a piece of the vocabulary', s, op);
          return id;
        }
        if (!isInt(s) || s < 0 || s >= this.tokenizer.size)
          throw outOfRange(`options.stop[${i}]`, `a token id in [0, ${this.tokenizer.size - 1}]`, s, op);
        return s;
      }),
    );
  }

  /** Decoded text of row `r` of `c` (up to its length). */
  decodeRow(c: Completions, r: number): string {
    return this.tokenizer.decode(c.ids.subarray(r * c.width, r * c.width + c.lengths[r]));
  }

  /** Samples G completions per prompt in one KV-cached batch. */
  async generate(inputs: PolicyInputs, options: PolicyModelGenerateOptions = {}): Promise<GenerateResult> {
    const op = 'PolicyModel.generate';
    const b = this.batch(inputs, op);
    const o = options ?? {};
    const maxNewTokens = o.maxNewTokens ?? 8;
    if (!isInt(maxNewTokens) || maxNewTokens < 1)
      throw invalidArg('options.maxNewTokens', 'an integer >= 1', maxNewTokens, op);
    checkProbability('options.temperature', o.temperature, op, 0, true);
    checkProbability('options.topP', o.topP, op, 0, true);
    if (o.topP !== undefined && o.topP > 1) throw outOfRange('options.topP', 'a number in (0, 1]', o.topP, op);
    if (o.topK !== undefined && (!isInt(o.topK) || o.topK < 0))
      throw invalidArg('options.topK', 'an integer >= 0', o.topK, op);
    const stop = this.stopIds(o.stop, op);
    let seeds: Uint32Array | undefined;
    const given = o.promptSeeds ?? o.seeds;
    const name = o.promptSeeds !== undefined ? 'options.promptSeeds' : 'options.seeds';
    if (given !== undefined) {
      const P = b.promptLengths.length;
      if (given === null || typeof given !== 'object' || given.length !== P)
        throw invalidArg(name, `an array of ${P} seeds (one per prompt)`, given, op);
      seeds = new Uint32Array(P);
      for (let i = 0; i < P; i++) {
        const v = given[i];
        if (!isInt(v) || v < 0 || v > 0xffffffff) throw outOfRange(`${name}[${i}]`, 'an integer in [0, 2^32)', v, op);
        seeds[i] = v;
      }
    }
    const r = await torchCall(() =>
      this.native.policyGenerate(this.id, b, {
        maxNewTokens,
        temperature: o.temperature,
        topP: o.topP,
        topK: o.topK,
        greedy: o.greedy ?? false,
        useCache: o.useCache ?? true,
        stop,
        ...(seeds ? { promptSeeds: seeds } : {}),
      }),
    );
    const out = {
      ids: rewrap(r.tokens),
      lengths: rewrap(r.lengths),
      width: r.width,
      logprobs: rewrap(r.logprobs),
      texts: [] as string[],
    };
    for (let i = 0; i < out.lengths.length; i++) out.texts.push(this.decodeRow(out, i));
    return out;
  }

  /** Per-token log-probs (N, C) of given completions (0 beyond each length); entropy when asked. */
  async logprobs(
    inputs: PolicyInputs,
    completions: Completions,
    options: { temperature?: number; entropy?: boolean; fullSequence?: boolean } = {},
  ): Promise<{ logprobs: Float32Array; entropy?: Float32Array }> {
    const op = 'PolicyModel.logprobs';
    const b = this.batch(inputs, op);
    const c = this.completions(completions, b.promptLengths.length * b.groupSize, op);
    checkProbability('options.temperature', options.temperature, op, 0, true);
    const r = await torchCall(() =>
      this.native.policyLogprobs(this.id, b, c, {
        temperature: options.temperature,
        entropy: options.entropy ?? false,
        fullSequence: options.fullSequence ?? false,
      }),
    );
    return r.entropy ? { logprobs: rewrap(r.logprobs), entropy: rewrap(r.entropy) } : { logprobs: rewrap(r.logprobs) };
  }

  private trainOptions(o: TrainOptions, op: string): Record<string, unknown> {
    if (o === null || typeof o !== 'object') throw invalidArg('options', 'an object', o, op);
    const keys = ['lr', 'weightDecay', 'maxGradNorm', 'clipLow', 'clipHigh', 'epsLow', 'epsHigh', 'beta', 'adamEps'];
    for (const k of keys as (keyof TrainOptions)[]) checkProbability(`options.${k}`, o[k], op, 0, false);
    for (const k of ['beta1', 'beta2'] as const) {
      checkProbability(`options.${k}`, o[k], op, 0, false);
      if (o[k] !== undefined && o[k]! >= 1) throw outOfRange(`options.${k}`, 'a number in [0, 1)', o[k], op);
    }
    checkProbability('options.temperature', o.temperature, op, 0, true);
    if (o.aggregation !== undefined && !LOSS_AGGREGATIONS.includes(o.aggregation))
      throw invalidArg('options.aggregation', `one of ${LOSS_AGGREGATIONS.join(', ')}`, o.aggregation, op);
    if (o.maxNewTokens !== undefined && (!isInt(o.maxNewTokens) || o.maxNewTokens < 1))
      throw invalidArg('options.maxNewTokens', 'an integer >= 1', o.maxNewTokens, op);
    if (o.processGroup !== undefined && (!isInt(o.processGroup) || o.processGroup < 0))
      throw invalidArg('options.processGroup', 'a process group id (integer >= 0)', o.processGroup, op);
    return withClipNames(o);
  }

  /**
   * One RL update (crpo-method.md section 6): forward, loss, backward, (all-reduce), clip, AdamW.
   * A non-finite loss or gradient norm skips the update (`skipped`, `skipReason`). With
   * `processGroup`, the ranks' gradients are averaged weighted by each rank's sequences (tokens for
   * token-mean), so the update is that of the whole global batch; an empty batch (no prompts, no
   * rows) is allowed there and weighs 0. Alone, an empty batch changes nothing.
   */
  async trainStep(inputs: PolicyInputs, completions: RlCompletions, options: TrainOptions = {}): Promise<StepStats> {
    const op = 'PolicyModel.trainStep';
    if (this.frozen) throw new CrpoError('ERR_CRPO_FROZEN', `${op}: this policy is a frozen reference copy`);
    const b = this.batch(inputs, op, true);
    const rows = b.promptLengths.length * b.groupSize;
    const c = this.completions(completions, rows, op);
    const adv = rewrap(completions.advantages);
    if (!(adv instanceof Float32Array) || adv.length !== rows)
      throw invalidArg('completions.advantages', `a Float32Array of length ${rows}`, completions.advantages, op);
    c.advantages = adv;
    for (const k of ['oldLogprobs', 'refLogprobs'] as const) {
      const v = completions[k];
      if (v === undefined) continue;
      const w = rewrap(v);
      if (!(w instanceof Float32Array) || w.length !== rows * c.width)
        throw invalidArg(`completions.${k}`, `a Float32Array of length ${rows * c.width}`, v, op);
      c[k] = w;
    }
    const o = this.trainOptions(options, op);
    return torchCall(() => this.native.policyTrainStep(this.id, b, c, { ...o, mode: 'rl' }));
  }

  /**
   * One supervised step: teacher-forced cross-entropy (token mean) on target completions, plus
   * `promptLmWeight` x the next-token cross-entropy of the prompt text (reported as `klLoss`),
   * plus `visionAuxWeight` x the vision attribute loss of the prompts' `visionLabel`s (reported as
   * `visionAuxLoss`).
   */
  async sftStep(
    inputs: PolicyInputs,
    targets: Completions | readonly string[],
    options: SftStepOptions = {},
  ): Promise<StepStats> {
    const op = 'PolicyModel.sftStep';
    if (this.frozen) throw new CrpoError('ERR_CRPO_FROZEN', `${op}: this policy is a frozen reference copy`);
    const { promptLmWeight, visionAuxWeight, ...rest } = options;
    checkProbability('options.promptLmWeight', promptLmWeight, op, 0, false);
    checkProbability('options.visionAuxWeight', visionAuxWeight, op, 0, false);
    if (visionAuxWeight && this.config.visionAuxClasses === 0)
      throw invalidArg(
        'options.visionAuxWeight',
        '0 for a policy without a vision attribute head (config visionAuxClasses 0)',
        visionAuxWeight,
        op,
      );
    // With a process group a rank may hold no prompt (an uneven split): it still joins the all-reduce.
    const b = this.batch(inputs, op, options.processGroup !== undefined);
    const rows = b.promptLengths.length * b.groupSize;
    const c = Array.isArray(targets)
      ? this.encodeTargets(targets as readonly string[], rows, op)
      : this.completions(targets as Completions, rows, op);
    if (!visionAuxWeight && b.promptAuxLabels)
      throw invalidArg(
        'options.visionAuxWeight',
        'a number > 0 when prompts carry a visionLabel (the labels would be ignored)',
        visionAuxWeight ?? 0,
        op,
      );
    const o = {
      ...this.trainOptions(rest, op),
      ...(promptLmWeight !== undefined ? { promptLmWeight } : {}),
      ...(visionAuxWeight !== undefined ? { visionAuxWeight } : {}),
    };
    return torchCall(() => this.native.policyTrainStep(this.id, b, c, { ...o, mode: 'sft' }));
  }

  /** Tokenizes target texts (each followed by <eos>) into right-padded completions. */
  encodeTargets(
    targets: readonly string[],
    rows: number = targets.length,
    op = 'PolicyModel.encodeTargets',
  ): Completions {
    if (!Array.isArray(targets) || targets.length !== rows)
      throw invalidArg('targets', `an array of ${rows} strings`, targets, op);
    const enc = targets.map((t, i) => {
      if (typeof t !== 'string') throw invalidArg(`targets[${i}]`, 'a string', t, op);
      return this.tokenizer.encode(t, { eos: true });
    });
    const width = Math.max(1, ...enc.map((e) => e.length));
    const ids = new Int32Array(rows * width);
    const lengths = new Int32Array(rows);
    enc.forEach((e, i) => {
      ids.set(e, i * width);
      lengths[i] = e.length;
    });
    return { ids, lengths, width };
  }

  /**
   * Greedy answers, one per prompt (groupSize is ignored), parsed strictly with parseAnswer
   * against numOptions[p] shown options.
   */
  async evalBatch(
    inputs: PolicyInputs,
    numOptions: readonly number[],
    options: { maxNewTokens?: number } = {},
  ): Promise<PolicyModelEvalResult> {
    const op = 'PolicyModel.evalBatch';
    if (!Array.isArray(numOptions) || numOptions.length !== inputs?.prompts?.length)
      throw invalidArg('numOptions', `an array of ${inputs?.prompts?.length} integers`, numOptions, op);
    const g = await this.generate(
      { ...inputs, groupSize: 1 },
      { greedy: true, maxNewTokens: options.maxNewTokens ?? 12, stop: [EOS_ID, ANSWER_CLOSE_ID] },
    );
    const answers: number[] = [];
    const formatOk: boolean[] = [];
    g.texts.forEach((t, i) => {
      const a = parseAnswer(t, numOptions[i]);
      answers.push(a.index);
      formatOk.push(a.formatOk);
    });
    return { answers, formatOk, texts: g.texts };
  }

  /** Weights as fp32 tensors in parameter order. */
  async getWeights(): Promise<NativePolicyTensor[]> {
    this.assertLive('PolicyModel');
    const r = await torchCall(() => this.native.policyGetState(this.id, 'weights'));
    return r.tensors.map((t) => ({ name: t.name, shape: t.shape, data: rewrap(t.data) }));
  }

  /** Replaces every weight; names and shapes must match exactly. */
  async setWeights(tensors: NativePolicyTensor[]): Promise<void> {
    this.assertLive('PolicyModel');
    await torchCall(() => this.native.policySetState(this.id, 'weights', tensors));
  }

  /** AdamW moments ("<param>.exp_avg", "<param>.exp_avg_sq") and the step count. */
  async getOptimizerState(): Promise<{ tensors: NativePolicyTensor[]; step: number }> {
    this.assertLive('PolicyModel');
    const r = await torchCall(() => this.native.policyGetState(this.id, 'optimizer'));
    return { tensors: r.tensors.map((t) => ({ name: t.name, shape: t.shape, data: rewrap(t.data) })), step: r.step };
  }

  async setOptimizerState(tensors: NativePolicyTensor[], step: number): Promise<void> {
    this.assertLive('PolicyModel');
    if (!isInt(step) || step < 0) throw invalidArg('step', 'an integer >= 0', step, 'PolicyModel.setOptimizerState');
    await torchCall(() => this.native.policySetState(this.id, 'optimizer', tensors, step));
  }

  /** The sampling generator's state (bytes); restoring it replays the same samples. */
  getRngState(): Uint8Array {
    this.assertLive('PolicyModel');
    return rewrap(callSync(() => this.native.policyGetRngState(this.id)));
  }

  setRngState(state: Uint8Array): void {
    this.assertLive('PolicyModel');
    callSync(() => this.native.policySetRngState(this.id, state));
  }

  /** Optimizer steps taken. */
  get step(): number {
    return this.info().step;
  }
}

/**
 * Finite-difference gradient check of one native module in float64, or ('fast:<name>') a fast path
 * against its slow twin (tests). Runs in the test-only addon crpo_torch_checks.node.
 */
export function policyGradCheck(
  module: string,
  seed = 0,
): Promise<{ maxError: number; maxAbsGrad: number; checked: number }> {
  const native = torchChecksAddon();
  return torchCall(() => native.policyGradCheck(module, seed));
}

/** The native loss of section 6 on given log-probs (float64), with d loss / d logprobs. */
export function nativePolicyLoss(
  inputs: NativePolicyLossInputs,
  options: PolicyLossOptions = {},
): NativePolicyLossResult {
  const native = torchAddon();
  const r = callSync(() => native.policyLoss(inputs, withClipNames(options)));
  return { ...r, grad: rewrap(r.grad) };
}

/** Live native policies (models and reference copies) in the addon. */
export function livePolicies(): number {
  return callSync(() => torchAddon().policyLiveModels());
}
