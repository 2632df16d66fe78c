/**
 * The trainer's Policy interface (lib/policy/policy.ts, crpo-method.md sections 4-6) over a
 * Hugging Face Qwen2.5-VL / Qwen3-VL model: prompts become chat text with the video placeholder
 * and processed frames; G samples per prompt share one vision encoding; log-probs under the
 * policy or the frozen reference (LoRA disabled, no second weight copy); the section-6 loss with
 * AdamW on the LoRA adapters, or on every LM weight (`finetune: 'full'`: the reference is then a
 * second copy of the initial weights); SFT towards "<answer>X</answer>"; checkpoints hold the
 * adapters (PEFT format) or the trained weights, AdamW state and the base folder's path. On several
 * processes the native step averages the ranks' gradients before clipping and AdamW (data parallel,
 * docs/distributed.md), with the AdamW state optionally sharded over them (`zero: 1`, ZeRO-1).
 * Registered as policy kind 'qwen'.
 */
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { CrpoError, invalidArg } from '../errors';
import { answerCompletion } from '../prompt';
import {
  POLICY_KINDS,
  type Completion,
  type GenerateOptions,
  type Policy,
  type PolicyPrompt,
  type TrainSequence,
  type TrainStepOptions,
  type TrainStepStats,
} from './policy';
import { QwenVLModel, type LoraOptions, type QwenDtype, type QwenInputs } from '../hf/model';
import { chatTemplateFor, type ChatTemplate } from '../hf/chat-template';
import { expandPlaceholders, frameTimestamps, processFrames, type ChatMessage } from '../hf/processor';
import { readSafetensorsHeader, writeSafetensors } from '../hf/safetensors';
import { tokenizerFor, type HfTokenizer } from '../hf/tokenizer';

export interface QwenPolicyOptions {
  /** A Hugging Face model folder, or a checkpoint folder written by QwenPolicy.save. */
  model: string;
  /** Resume a checkpoint folder exactly (adapters and AdamW state). */
  resumeFrom?: string;
  dtype?: QwenDtype;
  device?: string;
  /** LoRA settings (default r=16, alpha=32, dropout 0.05 on q/k/v/o of the LM). */
  lora?: LoraOptions;
  /**
   * 'lora' (default): train LoRA adapters, the reference is the model with them disabled. 'full':
   * train every LM weight (vision tower frozen), no adapters; the frozen reference is a second copy
   * of the initial weights (twice the weight memory), reloaded from the init folder on resume.
   */
  finetune?: 'lora' | 'full';
  /** Per-layer gradient checkpointing (default true). */
  gradientCheckpointing?: boolean;
  /** Pixel budget of each video (Qwen2.5-VL: per frame; Qwen3-VL: t*h*w); defaults of the HF processors. */
  minPixels?: number;
  maxPixels?: number;
  /** Frame rate of the prompt frames, for Qwen3-VL timestamps (default 2). */
  videoFps?: number;
  /**
   * Sequences per forward/backward in trainStep / sftStep (gradients accumulate over the
   * micro-batches, one AdamW step per call); 0 = the whole batch at once.
   */
  microBatch?: number;
  /**
   * Score and train the G sequences of a prompt with one pass over its (vision + prompt) prefix,
   * the completions attending to its keys/values (default true; exact, see QwenInputs.prefixGroups).
   * false: every row whole, the per-row path (its slow twin).
   */
  sharedPrefix?: boolean;
}

export const DEFAULT_QWEN_LORA: LoraOptions = {
  rank: 16,
  alpha: 32,
  dropout: 0.05,
  targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj'],
};

interface EncodedPrompt {
  ids: number[];
  pixels: Float32Array;
  grid: [number, number, number];
  kind: 'image' | 'video';
  /** Qwen2.5-VL: seconds per temporal patch (temporal_patch_size / fps). */
  secondPerGrid: number;
}

const POLICY_FILE = 'policy.safetensors';

/** Where the frozen reference of full fine-tuning is loaded from: a model folder, plus folded-in adapters. */
interface ReferenceSource {
  folder: string;
  /** A LoRA checkpoint folder whose adapters were merged into `folder`'s weights (init from it). */
  adapters?: string;
}

/** Loads a model as a reference source describes it (the initial policy of full fine-tuning). */
async function loadReference(src: ReferenceSource, o: QwenPolicyOptions): Promise<QwenVLModel> {
  const m = await QwenVLModel.load(src.folder, { dtype: o.dtype, device: o.device });
  if (src.adapters) {
    m.loadAdapter(src.adapters);
    m.mergeLoraSync();
  }
  return m;
}

/** The native step's settings from the trainer's options (the same on every rank of a step). */
function stepOptions(o: TrainStepOptions) {
  return {
    objective: 'grpo' as const,
    lr: o.lr,
    weightDecay: o.weightDecay,
    maxGradNorm: o.maxGradNorm,
    clipLow: o.clipLow,
    clipHigh: o.clipHigh,
    klBeta: o.beta,
    aggregation: o.aggregation,
    maxNewTokens: o.maxNewTokens,
    temperature: o.temperature,
    // data parallel (with processGroup): how gradients are reduced, and sharded AdamW state
    ...(o.overlapGrads !== undefined ? { overlapGrads: o.overlapGrads } : {}),
    ...(o.gradBucketMb !== undefined ? { gradBucketMb: o.gradBucketMb } : {}),
    ...(o.zero !== undefined ? { zero: o.zero } : {}),
  };
}

export class QwenPolicy implements Policy {
  readonly kind = 'qwen';
  /**
   * The native train step averages the ranks' gradients over `processGroup` before clipping and
   * AdamW (native/torch/qwen/qwen_train.cpp finish_step): data parallel on N processes.
   */
  readonly syncsGradients = true;
  /** `zero: 1` shards the AdamW state over the ranks (native/torch/qwen/qwen_train_dist.cpp); its save is collective. */
  readonly shardsOptimizerState = true;
  /** The last applied step ran with zero 1 on a process group: the next save gathers the moments. */
  private sharded = false;
  /** Full fine-tuning: the frozen reference (a second model), and where it was loaded from (undefined once it holds trained weights). */
  private reference?: QwenVLModel;
  private referenceSource?: ReferenceSource;
  private readonly encoded = new WeakMap<PolicyPrompt, EncodedPrompt>();
  private readonly eos: number;
  /** Vision placeholder ids (image, video, vision start): a completion ends before the first one sampled. */
  private readonly visionIds: Set<number>;
  /** Adapters changed since the last reference freeze. */
  private trained = false;
  private merges = 0;

  /** The base folder's chat template (chat_template.jinja / .json, tokenizer_config.json), else ChatML. */
  readonly chatTemplate: ChatTemplate;

  private constructor(
    readonly model: QwenVLModel,
    readonly tokenizer: HfTokenizer,
    private readonly o: QwenPolicyOptions,
    /** The HF folder the base weights came from. */
    readonly baseFolder: string,
    /** What trains: LoRA adapters or every LM weight. */
    readonly finetune: 'lora' | 'full' = 'lora',
  ) {
    this.chatTemplate = chatTemplateFor(baseFolder, model.config.arch);
    const eos = tokenizer.tokenId('<|im_end|>');
    if (eos === undefined)
      throw new CrpoError('ERR_CRPO_TOKENIZER', `${baseFolder}: the tokenizer has no <|im_end|> token`);
    this.eos = eos;
    const c = model.config;
    this.visionIds = new Set([c.imageTokenId, c.videoTokenId, c.visionStartTokenId].filter((t) => t >= 0));
  }

  static async create(o: QwenPolicyOptions): Promise<QwenPolicy> {
    const finetune = o.finetune ?? 'lora';
    if (finetune !== 'lora' && finetune !== 'full') throw invalidArg('finetune', "'lora' or 'full'", finetune);
    const ck = o.resumeFrom ?? (fs.existsSync(path.join(o.model, POLICY_FILE)) ? o.model : undefined);
    let base = o.model;
    let meta: Record<string, string> = {};
    if (ck) {
      meta = readSafetensorsHeader(path.join(ck, POLICY_FILE)).metadata;
      if (meta.kind !== 'qwen')
        throw new CrpoError('ERR_CRPO_CHECKPOINT', `${ck}: policy kind '${meta.kind}' is not 'qwen'`);
      base = meta.base_dir ? path.join(ck, meta.base_dir) : meta.base;
      if (!base || !fs.existsSync(path.join(base, 'config.json')))
        throw new CrpoError('ERR_CRPO_CHECKPOINT', `${ck}: its base model folder ${base} is not available`);
    }
    const saved = meta.finetune === 'full' ? 'full' : 'lora';
    if (o.resumeFrom && saved !== finetune)
      throw new CrpoError(
        'ERR_CRPO_CHECKPOINT',
        `${o.resumeFrom}: the run trained ${saved === 'full' ? 'every LM weight' : 'LoRA adapters'} (policy.finetune '${saved}'); ` +
          `resume it with --finetune ${saved}, not '${finetune}'`,
        { userError: true },
      );
    const model = await QwenVLModel.load(base, { dtype: o.dtype, device: o.device });
    const p = new QwenPolicy(model, tokenizerFor(base, model.config), o, base, finetune);
    try {
      if (o.resumeFrom) {
        p.merges = Number(meta.merges ?? 0);
        p.trained = meta.trained === '1';
        if (meta.base_dir) model.baseModified = true;
      }
      model.setGradientCheckpointing(o.gradientCheckpointing ?? true);
      // An init checkpoint of LoRA training holds adapters to fold in; one of full training holds its weights in base/.
      const initAdapters = ck && !o.resumeFrom && fs.existsSync(path.join(ck, 'adapter_config.json')) ? ck : undefined;
      if (finetune === 'full') {
        // the optimizer's tensors are the trainable ones: set before a resumed AdamW state is loaded
        model.setTrainable('lm');
        if (o.resumeFrom) {
          await model.loadTrainingState(o.resumeFrom).catch((e: CrpoError) => {
            if (!/no optimizer\.pt/.test(e.message)) throw e;
          });
          p.referenceSource = {
            folder: meta.reference_dir ? path.join(o.resumeFrom, meta.reference_dir) : meta.reference,
            ...(meta.reference_adapters ? { adapters: meta.reference_adapters } : {}),
          };
          if (!p.referenceSource.folder || !fs.existsSync(path.join(p.referenceSource.folder, 'config.json')))
            throw new CrpoError(
              'ERR_CRPO_CHECKPOINT',
              `${o.resumeFrom}: the folder of its frozen reference ${p.referenceSource.folder} is not available`,
            );
        } else {
          if (initAdapters) {
            model.loadAdapter(initAdapters);
            model.mergeLoraSync();
          }
          p.referenceSource = {
            folder: path.resolve(base),
            ...(initAdapters ? { adapters: path.resolve(initAdapters) } : {}),
          };
        }
        p.reference = await loadReference(p.referenceSource, o);
        // a reference stored in the resumed checkpoint is stored again (that folder may be deleted by keepLast)
        if (meta.reference_dir && o.resumeFrom) p.referenceSource = undefined;
        model.setTrainable('lm');
      } else {
        if (o.resumeFrom) {
          await model.loadTrainingState(o.resumeFrom).catch(async (e: CrpoError) => {
            // a checkpoint taken before the first optimizer step holds no optimizer.pt
            if (!/no optimizer\.pt/.test(e.message)) throw e;
          });
          if (!model.lora) model.addLora(o.lora ?? DEFAULT_QWEN_LORA);
        } else if (initAdapters) {
          // init from a checkpoint: its policy becomes the model and the frozen reference
          model.loadAdapter(initAdapters);
          model.mergeLoraSync();
        } else {
          model.addLora(o.lora ?? DEFAULT_QWEN_LORA);
        }
        model.setTrainable('lora');
      }
    } catch (e) {
      p.dispose();
      throw e;
    }
    return p;
  }

  private async encode(p: PolicyPrompt): Promise<EncodedPrompt> {
    const hit = this.encoded.get(p);
    if (hit) return hit;
    const [T, H, W] = p.frameShape;
    const cfg = this.model.config;
    const kind = T >= cfg.vision.temporalPatchSize ? 'video' : 'image';
    const vis = await processFrames(cfg, p.frames, T, H, W, kind, {
      minPixels: this.o.minPixels,
      maxPixels: this.o.maxPixels,
    });
    const fps = this.o.videoFps ?? 2;
    // the folder's chat template (chat-template.ts), ChatML when it has none
    const message: ChatMessage = { role: 'user', content: [{ type: kind }, { type: 'text', text: p.prompt }] };
    const chat = this.chatTemplate.render([message]);
    const text =
      kind === 'video'
        ? expandPlaceholders(
            cfg,
            chat,
            [],
            [
              {
                grid: vis.grid,
                timestamps: frameTimestamps(
                  Array.from({ length: T }, (_, i) => i),
                  fps,
                  cfg.vision.temporalPatchSize,
                ),
              },
            ],
          )
        : expandPlaceholders(cfg, chat, [vis.grid], []);
    const e: EncodedPrompt = {
      ids: this.tokenizer.encode(text),
      pixels: vis.pixelValues,
      grid: vis.grid,
      kind,
      secondPerGrid: cfg.vision.temporalPatchSize / fps,
    };
    this.encoded.set(p, e);
    return e;
  }

  /**
   * Rows of prompt + completion, right-padded, grouped by prompt (`order[b]` = index into seqs of
   * row b): each prompt's frames are encoded once and fill all its rows; with sharedPrefix (default)
   * each prompt's rows are one prefix group, whose prefix runs once.
   */
  private async rows(
    prompts: readonly PolicyPrompt[],
    seqs: readonly { prompt: number; tokens: number[] }[],
  ): Promise<{ inputs: QwenInputs; starts: number[]; L: number; order: number[] }> {
    const order = seqs.map((_, k) => k).sort((a, b) => seqs[a].prompt - seqs[b].prompt || a - b);
    const groups: number[] = []; // distinct prompts in row order
    const counts: number[] = [];
    for (const k of order) {
      if (groups[groups.length - 1] !== seqs[k].prompt) {
        groups.push(seqs[k].prompt);
        counts.push(0);
      }
      counts[counts.length - 1]++;
    }
    const enc = new Map<number, EncodedPrompt>();
    for (const g of groups) enc.set(g, await this.encode(prompts[g]));
    const L = Math.max(...seqs.map((s) => enc.get(s.prompt)!.ids.length + s.tokens.length));
    const inputIds: number[][] = [];
    const attentionMask: number[][] = [];
    const starts: number[] = [];
    for (const k of order) {
      const s = seqs[k];
      const e = enc.get(s.prompt)!;
      const row = [...e.ids, ...s.tokens];
      attentionMask.push([...row.map(() => 1), ...Array(L - row.length).fill(0)]);
      inputIds.push([...row, ...Array(L - row.length).fill(this.eos)]);
      starts.push(e.ids.length);
    }
    const cat = (xs: Float32Array[]) => {
      const out = new Float32Array(xs.reduce((a, x) => a + x.length, 0));
      let off = 0;
      for (const x of xs) {
        out.set(x, off);
        off += x.length;
      }
      return out;
    };
    const img = groups.map((g, i) => ({ e: enc.get(g)!, n: counts[i] })).filter((x) => x.e.kind === 'image');
    const vid = groups.map((g, i) => ({ e: enc.get(g)!, n: counts[i] })).filter((x) => x.e.kind === 'video');
    const inputs: QwenInputs = { inputIds, attentionMask };
    if (this.o.sharedPrefix ?? true)
      inputs.prefixGroups = groups.map((g, i) => ({ rows: counts[i], prefixLength: enc.get(g)!.ids.length }));
    if (img.length)
      Object.assign(inputs, {
        pixelValues: cat(img.map((x) => x.e.pixels)),
        imageGridThw: img.map((x) => x.e.grid),
        imageRepeats: img.map((x) => x.n),
      });
    if (vid.length) {
      Object.assign(inputs, {
        pixelValuesVideos: cat(vid.map((x) => x.e.pixels)),
        videoGridThw: vid.map((x) => x.e.grid),
        videoRepeats: vid.map((x) => x.n),
        secondPerGridTs: vid.map((x) => x.e.secondPerGrid),
      });
    }
    return { inputs, starts, L, order };
  }

  async generate(prompts: readonly PolicyPrompt[], o: GenerateOptions): Promise<Completion[][]> {
    if (!Number.isInteger(o.samples) || o.samples < 1) throw invalidArg('samples', 'a positive integer', o.samples);
    const out: Completion[][] = [];
    for (let i = 0; i < prompts.length; i++) {
      const e = await this.encode(prompts[i]);
      const rows = Array.from({ length: o.samples }, () => e.ids);
      const inputs: QwenInputs =
        e.kind === 'video'
          ? {
              inputIds: rows,
              pixelValuesVideos: e.pixels,
              videoGridThw: [e.grid],
              secondPerGridTs: [e.secondPerGrid],
              shareVision: true,
            }
          : { inputIds: rows, pixelValues: e.pixels, imageGridThw: [e.grid], shareVision: true };
      const r = await this.model.generate(inputs, {
        maxNewTokens: o.maxNewTokens,
        temperature: o.greedy ? 0 : o.temperature,
        seed: o.promptSeeds?.[i] ?? (Math.imul(o.seed >>> 0, 1000003) + i) >>> 0,
        eosTokenId: this.eos,
      });
      out.push(
        r.tokens.map((sampled, g) => {
          // A sampled vision placeholder (a small or untrained model can draw one) ends the
          // completion before it: scored or trained on, it would claim vision features that the
          // prompt does not have (qwen: "Video features and Video tokens do not match").
          const cut = sampled.findIndex((t) => this.visionIds.has(t));
          const tokens = cut >= 0 ? sampled.slice(0, cut) : sampled;
          const end = tokens.indexOf(this.eos);
          return {
            tokens,
            logprobs: cut >= 0 ? r.logprobs[g].slice(0, cut) : r.logprobs[g],
            text: this.tokenizer.decode(end >= 0 ? tokens.slice(0, end) : tokens, true),
          };
        }),
      );
    }
    return out;
  }

  async logprobs(
    prompts: readonly PolicyPrompt[],
    seqs: readonly { prompt: number; tokens: number[] }[],
    o: { temperature: number; reference?: boolean },
  ): Promise<number[][]> {
    if (seqs.length === 0) return [];
    const { inputs, starts, L, order } = await this.rows(prompts, seqs);
    const r =
      o.reference && this.reference
        ? await this.reference.forward(inputs, { temperature: o.temperature })
        : await this.model.forward(inputs, { lora: !o.reference, temperature: o.temperature });
    const out: number[][] = new Array(seqs.length);
    order.forEach((k, b) => {
      out[k] = Array.from(
        { length: seqs[k].tokens.length },
        (_, j) => r.tokenLogprobs.data[b * (L - 1) + starts[b] - 1 + j],
      );
    });
    return out;
  }

  async trainStep(
    prompts: readonly PolicyPrompt[],
    seqs: readonly TrainSequence[],
    o: TrainStepOptions,
  ): Promise<TrainStepStats> {
    const mb = this.o.microBatch && this.o.microBatch > 0 ? this.o.microBatch : seqs.length;
    const normTokens = seqs.reduce((a, q) => a + q.tokens.length, 0);
    const group = o.processGroup;
    const total: TrainStepStats = {
      loss: 0,
      pgLoss: 0,
      kl: 0,
      clipFraction: 0,
      gradNorm: NaN,
      entropy: 0,
      tokens: 0,
      skipped: false,
    };
    this.sharded = group !== undefined && o.zero === 1;
    if (seqs.length === 0 && group !== undefined) {
      // Nothing in this rank's shard: it still joins the step's gradient all-reduce (weight 0)
      // and applies the global update, so its replica stays equal to the others.
      const st = await this.model.syncStep({ ...stepOptions(o), processGroup: group });
      if (!st.skipped) this.trained = true;
      return { ...total, gradNorm: st.gradNorm, skipped: st.skipped };
    }
    for (let k = 0; k < seqs.length; k += mb) {
      const chunk = seqs.slice(k, k + mb);
      const apply = k + mb >= seqs.length;
      const st = await this.trainChunk(prompts, chunk, o, { normTokens, normSequences: seqs.length, apply, first: k });
      total.loss += st.loss;
      total.pgLoss += st.pgLoss;
      total.kl += st.kl;
      total.clipFraction += st.clipFraction * st.tokens;
      total.entropy += st.entropy * st.tokens;
      total.tokens += st.tokens;
      total.gradNorm = st.gradNorm;
      if (st.skipped) {
        // A non-finite loss before the last micro-batch: the other ranks are (or will be) in the
        // step's all-reduce; joining it with the bad flag makes every rank skip the step.
        if (!apply && group !== undefined) await this.model.syncStep({ ...stepOptions(o), processGroup: group });
        return {
          ...total,
          clipFraction: total.tokens ? total.clipFraction / total.tokens : 0,
          entropy: total.tokens ? total.entropy / total.tokens : 0,
          skipped: true,
          gradNorm: NaN,
        };
      }
    }
    this.trained = true;
    return {
      ...total,
      clipFraction: total.tokens ? total.clipFraction / total.tokens : 0,
      entropy: total.tokens ? total.entropy / total.tokens : 0,
    };
  }

  private async trainChunk(
    prompts: readonly PolicyPrompt[],
    seqs: readonly TrainSequence[],
    o: TrainStepOptions,
    acc: { normTokens: number; normSequences: number; apply: boolean; first: number },
  ): Promise<TrainStepStats> {
    const { inputs, starts, L, order } = await this.rows(prompts, seqs);
    const B = seqs.length;
    const completionMask = new Int32Array(B * L);
    const oldLogprobs = new Float32Array(B * (L - 1));
    const refLogprobs = o.beta > 0 ? new Float32Array(B * (L - 1)) : undefined;
    const rowSeqs = order.map((k) => seqs[k]);
    rowSeqs.forEach((s, b) => {
      for (let j = 0; j < s.tokens.length; j++) {
        completionMask[b * L + starts[b] + j] = 1;
        oldLogprobs[b * (L - 1) + starts[b] - 1 + j] = s.oldLogprobs[j];
        if (refLogprobs) {
          if (!s.refLogprobs)
            throw invalidArg('refLogprobs', 'reference log-probs for every sequence when beta > 0', undefined);
          refLogprobs[b * (L - 1) + starts[b] - 1 + j] = s.refLogprobs[j];
        }
      }
    });
    const st = await this.model.trainStep(inputs, {
      completionMask,
      advantages: Float32Array.from(rowSeqs, (s) => s.advantage),
      oldLogprobs,
      refLogprobs,
      ...stepOptions(o),
      ...(o.processGroup !== undefined ? { processGroup: o.processGroup } : {}),
      // one seed per micro-batch (k: its first sequence in the step)
      ...(o.seed !== undefined ? { seed: (o.seed + acc.first) >>> 0 } : {}),
      normTokens: acc.normTokens,
      normSequences: acc.normSequences,
      apply: acc.apply,
    });
    return {
      loss: st.loss,
      pgLoss: st.pgLoss,
      kl: st.kl,
      clipFraction: st.clipFraction,
      gradNorm: st.gradNorm,
      entropy: st.entropy,
      tokens: st.tokens,
      skipped: st.skipped,
    };
  }

  async sftStep(
    prompts: readonly PolicyPrompt[],
    answers: readonly number[],
    o: { lr: number; maxGradNorm: number },
  ): Promise<{ loss: number; gradNorm: number }> {
    const seqs = prompts.map((_, i) => ({
      prompt: i,
      tokens: [...this.tokenizer.encode(answerCompletion(answers[i])), this.eos],
    }));
    const { inputs, starts, L, order } = await this.rows(prompts, seqs);
    const completionMask = new Int32Array(seqs.length * L);
    order.forEach((k, b) => seqs[k].tokens.forEach((_, j) => (completionMask[b * L + starts[b] + j] = 1)));
    const st = await this.model.trainStep(inputs, {
      completionMask,
      objective: 'sft',
      aggregation: 'seq-mean-token-mean',
      lr: o.lr,
      maxGradNorm: o.maxGradNorm,
    });
    if (!st.skipped) this.trained = true;
    return { loss: st.loss, gradNorm: st.gradNorm };
  }

  async freezeReference(): Promise<void> {
    if (this.reference) {
      // full fine-tuning: copy the trained weights into the reference model
      if (this.trained) {
        for (const n of this.model.paramNames())
          this.reference.setParam(n, this.model.getParam(n).data as Float32Array);
        this.referenceSource = undefined; // saved with the next checkpoint
        this.trained = false;
      }
      return;
    }
    // the reference is the model with LoRA disabled: fold the trained adapters into the base
    if (this.trained) {
      this.model.mergeLoraSync();
      this.merges++;
      this.trained = false;
    }
  }

  async save(dir: string): Promise<void> {
    fs.mkdirSync(dir, { recursive: true });
    let baseDir: string | undefined;
    const meta: Record<string, string> = {};
    // exact copies: fp32 (or bf16) as the model holds them, so a resumed run's digest matches
    const dtype = this.model.dtype === 'bfloat16' ? 'BF16' : 'F32';
    if (this.finetune === 'full') {
      baseDir = 'base'; // the trained weights
      this.model.exportTo(path.join(dir, baseDir), { merged: false, dtype });
      meta.finetune = 'full';
      if (this.referenceSource) {
        meta.reference = this.referenceSource.folder;
        if (this.referenceSource.adapters) meta.reference_adapters = this.referenceSource.adapters;
      } else {
        meta.reference_dir = 'reference';
        this.reference!.exportTo(path.join(dir, meta.reference_dir), { merged: false, dtype });
      }
    } else if (this.model.baseModified) {
      baseDir = 'base';
      this.model.exportTo(path.join(dir, baseDir), { merged: false });
    }
    await this.model.saveTrainingState(dir).catch((e: Error) => {
      if (!/no optimizer state yet/.test(e.message)) throw e;
      if (this.model.lora) this.model.saveAdapter(dir);
    });
    Object.assign(meta, {
      kind: 'qwen',
      base: path.resolve(this.baseFolder),
      arch: this.model.config.arch,
      merges: String(this.merges),
      trained: this.trained ? '1' : '0',
    });
    if (baseDir) meta.base_dir = baseDir;
    writeSafetensors(path.join(dir, POLICY_FILE), [], () => new Float32Array(0), meta);
  }

  /**
   * A rank other than 0's part of a checkpoint save: with zero 1 the AdamW moments are gathered
   * from every rank (a collective; rank 0 writes them in save()); otherwise nothing.
   */
  async joinSave(): Promise<void> {
    if (!this.sharded) return;
    await this.model.joinSaveTrainingState();
  }

  weightsDigest(): string {
    const h = crypto.createHash('sha256');
    h.update(`merges:${this.merges}`);
    // LoRA: the adapters (the base is fixed between merges); full: every trained LM weight
    const names =
      this.finetune === 'full'
        ? this.model.paramNames().filter((n) => !n.startsWith('model.visual.'))
        : this.model.paramNames(true);
    for (const n of names) {
      const d = this.model.getParam(n).data;
      h.update(n);
      h.update(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
    }
    return h.digest('hex');
  }

  dispose(): void {
    this.model.dispose();
    this.reference?.dispose();
  }
}

POLICY_KINDS.register('qwen', (o) => {
  const model = o.resumeFrom ?? o.init;
  if (!model) {
    return Promise.reject(
      new CrpoError(
        'ERR_CRPO_MODEL_LOAD',
        "policy kind 'qwen' needs a model: a Hugging Face Qwen2.5-VL / Qwen3-VL folder or a qwen checkpoint as init (--model <folder>)",
        { userError: true },
      ),
    );
  }
  return QwenPolicy.create({ model, resumeFrom: o.resumeFrom, finetune: o.finetune });
});
