/**
 * The `native` policy kind: the trainer's Policy interface over the libtorch video-language policy
 * (lib/model/policy.ts, native/torch/model; docs/model.md). Every call is one batched async native
 * step on the torch queue: generate (B prompts x G samples, KV-cached), log-probs under the policy
 * or its frozen reference copy, the section-6 train step (crpo-method.md) and the supervised step.
 * Sampling is a function of the per-prompt seeds (GenerateOptions.promptSeeds, or seeds derived
 * from `seed`), so a prompt samples the same completions alone or in any batch, on any rank. The
 * clips cross once per step: each call packs one clip per distinct frames array, the last packing
 * is reused while the calls name the same arrays, and a prompt's counterfactual is a transform name
 * (PolicyPrompt.transform) applied on the device. In
 * a multi-process run the train step's gradient is averaged over the ranks weighted by each rank's
 * sequences (tokens for token-mean); a rank left with no sequences still takes part, with weight 0.
 * State (weights, AdamW, sampling RNG) lives in the policy's own checkpoint format; a training
 * checkpoint holds `policy/` and `reference/` folders. lib/model is loaded lazily, so the
 * trainer works without the torch addon when this kind is not used.
 */
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { CrpoError } from '../errors';
import { answerCompletion } from '../prompt';
import { hash32 } from '../random';
import {
  POLICY_KINDS,
  checkPromptSeeds,
  type Completion,
  type GenerateOptions,
  type Policy,
  type PolicyFactoryOptions,
  type PolicyPrompt,
  type TrainSequence,
  type TrainStepOptions,
  type TrainStepStats,
} from './policy';
import type * as ModelPolicy from '../model/policy';

type ModelModule = typeof import('../model/policy') &
  typeof import('../model/checkpoint') &
  typeof import('../model/tokenizer');

function model(): ModelModule {
  /* eslint-disable @typescript-eslint/no-require-imports */
  return {
    ...require('../model/policy'),
    ...require('../model/checkpoint'),
    ...require('../model/tokenizer'),
  } as ModelModule;
}

/** A checkpoint folder of the native policy format (policy.json). */
export const isNativeCheckpoint = (dir: string): boolean => fs.existsSync(path.join(dir, 'policy.json'));

export class NativePolicy implements Policy {
  readonly kind = 'native';
  /** The native train step all-reduces gradients over `processGroup` (policy_model.cpp). */
  readonly syncsGradients = true;
  /** PolicyPrompt.transform runs on the device (policy_model.cpp encode_prompts_visual). */
  readonly deviceTransforms = true;
  /** The weights' digest, or undefined after a step changed them (computed again when asked). */
  private digest: string | undefined;
  /** The last packed clips and the frames arrays they came from (see clips()). */
  private packed: { sources: Uint8Array[]; frames: Uint8Array } | undefined;

  constructor(
    private policy: ModelPolicy.PolicyModel,
    private ref: ModelPolicy.PolicyModel | undefined,
  ) {}

  /** The lib/model policy handle underneath (weights, info). */
  get model(): ModelPolicy.PolicyModel {
    return this.policy;
  }

  /**
   * The native batch: one clip per distinct `frames` array of `prompts` (in order of first use) and
   * one prompt row per entry of `rows` (default: one per prompt), each naming its clip and its
   * transform (applied on the device). An empty `rows` gives the empty batch (no clips, no rows) of
   * a rank with nothing to train on in a multi-process step.
   */
  private inputs(
    prompts: readonly PolicyPrompt[],
    rows: readonly { prompt: number }[] | undefined,
    groupSize: number,
  ): ModelPolicy.PolicyInputs {
    if (rows && rows.length === 0) return { frames: new Uint8Array(0), numVideos: 0, prompts: [], groupSize };
    const { frames, video } = this.clips(prompts);
    const row = (i: number): ModelPolicy.PolicyModelPrompt => {
      const p = prompts[i];
      const t = p.transform ?? 'none';
      return {
        video: video[i],
        text: p.prompt,
        ...(t !== 'none' ? { transform: t } : {}),
        ...(t === 'swap' ? { swapAt: p.swapAt } : {}),
      };
    };
    const list = rows ? rows.map((r) => row(r.prompt)) : prompts.map((_, i) => row(i));
    return { frames, numVideos: frames.length / this.policy.clipBytes, prompts: list, groupSize };
  }

  /**
   * The clips of `prompts` packed into one buffer (`video[i]`: prompt i's clip), one per distinct
   * `frames` array. The last packing is kept: the calls of one training step (both generates, the
   * reference log-probs, every update epoch) name the same clips, so a step packs them once.
   */
  private clips(prompts: readonly PolicyPrompt[]): { frames: Uint8Array; video: number[] } {
    const c = this.policy.config;
    const sources: Uint8Array[] = [];
    const index = new Map<Uint8Array, number>();
    const video = prompts.map((p) => {
      let v = index.get(p.frames);
      if (v === undefined) {
        const [T, H, W] = p.frameShape;
        if (T !== c.frames || H !== c.imageSize || W !== c.imageSize) {
          throw new CrpoError(
            'ERR_CRPO_FRAMES',
            `native policy expects clips of ${c.frames} frames of ${c.imageSize}x${c.imageSize}, got [${p.frameShape.join(', ')}] (set data.frames / data.size to match the policy)`,
            { userError: true },
          );
        }
        v = sources.length;
        index.set(p.frames, v);
        sources.push(p.frames);
      }
      return v;
    });
    const last = this.packed;
    if (last && last.sources.length === sources.length && last.sources.every((f, i) => f === sources[i]))
      return { frames: last.frames, video };
    const clip = this.policy.clipBytes;
    const frames = new Uint8Array(clip * sources.length);
    sources.forEach((f, i) => frames.set(f, i * clip));
    this.packed = { sources, frames };
    return { frames, video };
  }

  private static pad(
    seqs: readonly { tokens: number[] }[],
    extra: readonly (readonly number[] | undefined)[][] = [],
  ): { ids: Int32Array; lengths: Int32Array; width: number; floats: Float32Array[] } {
    const width = Math.max(1, ...seqs.map((s) => s.tokens.length));
    const ids = new Int32Array(seqs.length * width),
      lengths = new Int32Array(seqs.length);
    const floats = extra.map(() => new Float32Array(seqs.length * width));
    seqs.forEach((s, n) => {
      lengths[n] = s.tokens.length;
      s.tokens.forEach((t, j) => {
        ids[n * width + j] = t;
      });
      extra.forEach((col, k) =>
        col[n]?.forEach((v, j) => {
          floats[k][n * width + j] = v;
        }),
      );
    });
    return { ids, lengths, width, floats };
  }

  async generate(prompts: readonly PolicyPrompt[], o: GenerateOptions): Promise<Completion[][]> {
    if (prompts.length === 0) return [];
    // Each row draws its uniforms from a counter-based stream of (its prompt's seed, sample, token)
    // (native/torch/model sample_uniform): without promptSeeds, prompt i's seed is derived from
    // (seed, i), so sampling is a function of the seed and not of the policy's generator state.
    const seeds =
      checkPromptSeeds(prompts.length, o, 'NativePolicy.generate') ??
      prompts.map((_, i) => hash32(`${o.seed >>> 0}|prompt|${i}`));
    const r = await this.policy.generate(this.inputs(prompts, undefined, o.samples), {
      maxNewTokens: o.maxNewTokens,
      temperature: o.temperature,
      greedy: o.greedy ?? false,
      promptSeeds: seeds,
    });
    return prompts.map((_, p) =>
      Array.from({ length: o.samples }, (__, g) => {
        const row = p * o.samples + g,
          len = r.lengths[row],
          off = row * r.width;
        return {
          tokens: Array.from(r.ids.subarray(off, off + len)),
          logprobs: Array.from(r.logprobs.subarray(off, off + len)),
          text: r.texts[row],
        };
      }),
    );
  }

  async logprobs(
    prompts: readonly PolicyPrompt[],
    seqs: readonly { prompt: number; tokens: number[] }[],
    o: { temperature: number; reference?: boolean },
  ): Promise<number[][]> {
    if (seqs.length === 0) return [];
    const target = o.reference ? this.ref : this.policy;
    if (!target)
      throw new CrpoError('ERR_CRPO_NO_REFERENCE', 'native policy: no frozen reference (call freezeReference first)');
    const p = NativePolicy.pad(seqs);
    const r = await target.logprobs(
      this.inputs(prompts, seqs, 1),
      { ids: p.ids, lengths: p.lengths, width: p.width },
      { temperature: o.temperature },
    );
    return seqs.map((s, n) => Array.from(r.logprobs.subarray(n * p.width, n * p.width + s.tokens.length)));
  }

  async trainStep(
    prompts: readonly PolicyPrompt[],
    seqs: readonly TrainSequence[],
    o: TrainStepOptions,
  ): Promise<TrainStepStats> {
    const withRef = o.beta > 0;
    const p = NativePolicy.pad(seqs, [seqs.map((s) => s.oldLogprobs), seqs.map((s) => s.refLogprobs)]);
    const s = await this.policy.trainStep(
      this.inputs(prompts, seqs, 1),
      {
        ids: p.ids,
        lengths: p.lengths,
        width: p.width,
        advantages: Float32Array.from(seqs, (q) => q.advantage),
        oldLogprobs: p.floats[0],
        ...(withRef ? { refLogprobs: p.floats[1] } : {}),
      },
      {
        lr: o.lr,
        maxGradNorm: o.maxGradNorm,
        weightDecay: o.weightDecay,
        clipLow: o.clipLow,
        clipHigh: o.clipHigh,
        beta: o.beta,
        aggregation: o.aggregation,
        maxNewTokens: o.maxNewTokens,
        temperature: o.temperature,
        ...(o.processGroup !== undefined ? { processGroup: o.processGroup } : {}),
      },
    );
    this.digest = undefined;
    return {
      loss: s.loss,
      pgLoss: s.pgLoss,
      kl: s.meanKl,
      clipFraction: s.clipFrac,
      gradNorm: s.gradNorm,
      entropy: s.entropy,
      tokens: s.tokens,
      skipped: s.skipped,
    };
  }

  async sftStep(
    prompts: readonly PolicyPrompt[],
    answers: readonly number[],
    o: { lr: number; maxGradNorm: number },
  ): Promise<{ loss: number; gradNorm: number }> {
    const s = await this.policy.sftStep(
      this.inputs(prompts, undefined, 1),
      answers.map((a) => answerCompletion(a)),
      { lr: o.lr, maxGradNorm: o.maxGradNorm },
    );
    this.digest = undefined;
    return { loss: s.loss, gradNorm: s.gradNorm };
  }

  async freezeReference(): Promise<void> {
    this.ref?.dispose();
    this.ref = await this.policy.cloneFrozen();
  }

  async save(dir: string): Promise<void> {
    const m = model();
    fs.mkdirSync(dir, { recursive: true });
    await m.saveCheckpoint(this.policy, path.join(dir, 'policy'));
    if (this.ref) await m.saveCheckpoint(this.ref, path.join(dir, 'reference'));
  }

  /** Reads every weight back and hashes it (what weightsDigest() does when a step changed them). */
  async refreshDigest(): Promise<string> {
    const h = crypto.createHash('sha256');
    for (const t of await this.policy.getWeights())
      h.update(t.name).update(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    this.digest = h.digest('hex');
    return this.digest;
  }

  /** Lazy: the weights are read back only when the digest is asked for after they changed. */
  async weightsDigest(): Promise<string> {
    return this.digest ?? this.refreshDigest();
  }

  dispose(): void {
    this.packed = undefined;
    this.policy.dispose();
    this.ref?.dispose();
  }
}

/** A native policy: full training state (`resumeFrom/policy`, `resumeFrom/reference`), base weights (`init`), or fresh from a preset. */
export async function createNativePolicy(o: Omit<PolicyFactoryOptions, 'finetune'>): Promise<NativePolicy> {
  const m = model();
  let p: NativePolicy;
  if (o.resumeFrom) {
    const { policy } = await m.loadCheckpoint(path.join(o.resumeFrom, 'policy'));
    const ref = fs.existsSync(path.join(o.resumeFrom, 'reference'))
      ? (await m.loadCheckpoint(path.join(o.resumeFrom, 'reference'), { frozen: true })).policy
      : undefined;
    p = new NativePolicy(policy, ref);
  } else if (o.init) {
    const dir = isNativeCheckpoint(o.init)
      ? o.init
      : [path.join(o.init, 'policy'), path.join(o.init, 'checkpoint')].find(isNativeCheckpoint);
    if (!dir)
      throw new CrpoError(
        'ERR_CRPO_CHECKPOINT',
        `${o.init}: not a native policy checkpoint (no policy.json here, in policy/ or in checkpoint/)`,
        { userError: true },
      );
    const { policy } = await m.loadCheckpoint(dir, { optimizer: false });
    p = new NativePolicy(policy, undefined);
  } else {
    if (!o.texts || o.texts.length === 0)
      throw new CrpoError(
        'ERR_CRPO_INVALID_ARG',
        'a fresh native policy needs the prompt texts of the data for its vocabulary',
        { userError: false },
      );
    const tokenizer = m.Tokenizer.build(o.texts);
    const policy = await m.PolicyModel.create(tokenizer, {
      preset: (o.preset ?? 'tiny') as 'tiny' | 'small',
      seed: o.seed,
      ...(o.frames ? { frames: o.frames } : {}),
      ...(o.size ? { imageSize: o.size } : {}),
    });
    p = new NativePolicy(policy, undefined);
  }
  return p;
}

POLICY_KINDS.register('native', (o) => createNativePolicy(o));
