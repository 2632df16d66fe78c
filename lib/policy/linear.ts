/**
 * The built-in `linear` policy: a small log-linear video-question answerer implemented in
 * TypeScript (float64), used when the native libtorch policy is not built and as the policy of
 * `crpo demo` and the trainer's tests. It answers in the shared format (lib/prompt): a first token
 * chooses the style (`<answer>X</answer>`, a bare letter, or an unparseable reply), a second token
 * the option. Option scores are sums of hashed weights over (question, clip descriptor, option
 * word) features (lib/policy/video-features.ts), so it can learn both the motion that answers a
 * dynamic question and the colour shortcut the synthetic train split plants. Its RL step is the
 * section-6 loss of crpo-method.md through the TS reference (lib/algo/loss.ts) with exact
 * gradients, then gradient-norm clipping and AdamW: every result is deterministic and bitwise
 * reproducible on any machine. In a multi-process run (lib/distributed) the step averages its float64
 * gradient over the ranks of the c10d group before clipping, as DDP and the native policy do.
 */
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { CrpoError } from '../errors';
import { LETTERS } from '../prompt';
import { Rng, hash32 } from '../random';
import { parseSafetensors, writeSafetensors } from '../model/safetensors';
import { policyLoss } from '../algo/loss';
import { processGroupById } from '../distributed/process-group';
import { clipDescriptors } from './video-features';
import {
  POLICY_KINDS,
  checkPromptSeeds,
  type Completion,
  type GenerateOptions,
  type Policy,
  type PolicyPrompt,
  type TrainSequence,
  type TrainStepOptions,
  type TrainStepStats,
} from './policy';

/** Hashed feature table size. */
const DIM = 1 << 15;
/** Style tokens: 0 = tagged answer, 1 = bare letter, 2 = unparseable reply. Option k is token 3+k. */
const STYLES = 3;
const P = DIM + STYLES;
const JUNK_TEXT = 'I cannot tell from the video.';

const words = (s: string): string[] =>
  s
    .toLowerCase()
    .split(/[^a-z0-9]+/)
    .filter((w) => w && w !== 'the' && w !== 'it');

/** Clip descriptors, cached per frames buffer (the trainer reuses the buffers of its items). */
const descriptorCache = new WeakMap<Uint8Array, string[]>();

/** Feature indices of each shown option of a prompt (cached per prompt object). */
function optionFeatures(p: PolicyPrompt, cache: WeakMap<PolicyPrompt, number[][]>): number[][] {
  const hit = cache.get(p);
  if (hit) return hit;
  const q = hash32(p.question.trim().toLowerCase());
  let clip = descriptorCache.get(p.frames);
  if (!clip) {
    clip = clipDescriptors(p.frames, p.frameShape);
    descriptorCache.set(p.frames, clip);
  }
  const desc = ['bias', ...clip];
  const feats = p.options.map((opt) => {
    const idx: number[] = [];
    for (const w of words(opt)) for (const d of desc) idx.push(hash32(`${q}|${d}|${w}`) % DIM);
    return idx;
  });
  cache.set(p, feats);
  return feats;
}

function logSoftmax(x: number[]): number[] {
  let m = -Infinity;
  for (const v of x) if (v > m) m = v;
  let s = 0;
  for (const v of x) s += Math.exp(v - m);
  const lse = m + Math.log(s);
  return x.map((v) => v - lse);
}

function sample(logp: number[], r: number): number {
  let acc = 0;
  for (let i = 0; i < logp.length; i++) {
    acc += Math.exp(logp[i]);
    if (r < acc) return i;
  }
  return logp.length - 1;
}

const argmax = (x: number[]): number => x.reduce((best, v, i) => (v > x[best] ? i : best), 0);

/**
 * Data parallel (lib/distributed): replaces this rank's gradient `grad` (P,) by the gradient of the loss
 * over the whole global batch. Each rank's loss is a mean over its own `weight` units (sequences,
 * or tokens for 'token-mean'), so the global gradient is sum_r weight_r * grad_r / sum_r weight_r:
 * exact also when ranks hold different numbers of sequences (zero-variance groups dropped). One
 * all-reduce of (P+1,) float64. Every rank must reach it, also one whose loss is not finite: the
 * NaN then spreads to every rank and all of them skip the update together. Returns the total weight.
 */
async function averageAcrossRanks(processGroup: number, grad: Float64Array, weight: number): Promise<number> {
  const buf = new Float64Array(P + 1);
  for (let i = 0; i < P; i++) buf[i] = grad[i] * weight;
  buf[P] = weight;
  await processGroupById(processGroup).allReduce(buf, 'sum');
  const total = buf[P];
  for (let i = 0; i < P; i++) grad[i] = total > 0 ? buf[i] / total : 0;
  return total;
}

export class LinearPolicy implements Policy {
  readonly kind = 'linear';
  /** trainStep all-reduces its float64 gradient over `processGroup` (averageAcrossRanks). */
  readonly syncsGradients = true;
  /** (P,) weights: DIM hashed option weights, then STYLES style biases. */
  private w: Float64Array = new Float64Array(P);
  private ref: Float64Array = new Float64Array(P);
  private m: Float64Array = new Float64Array(P);
  private v: Float64Array = new Float64Array(P);
  private t = 0;
  private cache = new WeakMap<PolicyPrompt, number[][]>();
  private disposed = false;

  private logits(
    p: PolicyPrompt,
    w: Float64Array,
    temperature: number,
  ): { style: number[]; option: number[]; feats: number[][] } {
    const feats = optionFeatures(p, this.cache);
    const style = [w[DIM] / temperature, w[DIM + 1] / temperature, w[DIM + 2] / temperature];
    const option = feats.map((idx) => {
      let s = 0;
      for (const i of idx) s += w[i];
      return s / temperature;
    });
    return { style: logSoftmax(style), option: logSoftmax(option), feats };
  }

  private check(): void {
    if (this.disposed) throw new CrpoError('ERR_CRPO_DISPOSED', 'linear policy was used after dispose()');
  }

  async generate(prompts: readonly PolicyPrompt[], o: GenerateOptions): Promise<Completion[][]> {
    this.check();
    // One stream for the whole call, or one per prompt (its samples then depend on its seed only).
    const seeds = checkPromptSeeds(prompts.length, o, 'LinearPolicy.generate');
    const shared = seeds ? undefined : new Rng(o.seed >>> 0);
    return prompts.map((p, i) => {
      const rng = shared ?? new Rng(seeds![i]);
      const { style, option } = this.logits(p, this.w, o.temperature);
      const out: Completion[] = [];
      for (let s = 0; s < o.samples; s++) {
        const st = o.greedy ? argmax(style) : sample(style, rng.next());
        if (st === 2 || o.maxNewTokens < 2) {
          out.push({ tokens: [2], logprobs: [style[2]], text: JUNK_TEXT });
          continue;
        }
        const k = o.greedy ? argmax(option) : sample(option, rng.next());
        out.push({
          tokens: [st, STYLES + k],
          logprobs: [style[st], option[k]],
          text: st === 0 ? `<answer>${LETTERS[k]}</answer>` : LETTERS[k],
        });
      }
      return out;
    });
  }

  private seqLogprobs(p: PolicyPrompt, tokens: number[], w: Float64Array, temperature: number): number[] {
    const { style, option } = this.logits(p, w, temperature);
    return tokens.map((tok, i) => (i === 0 ? style[tok] : option[tok - STYLES]));
  }

  async logprobs(
    prompts: readonly PolicyPrompt[],
    seqs: readonly { prompt: number; tokens: number[] }[],
    o: { temperature: number; reference?: boolean },
  ): Promise<number[][]> {
    this.check();
    return seqs.map((s) =>
      this.seqLogprobs(prompts[s.prompt], s.tokens, o.reference ? this.ref : this.w, o.temperature),
    );
  }

  /** Adds d(sum_t c_t * logp_t)/dw to `grad`; returns the summed entropy of the positions visited. */
  private backprop(p: PolicyPrompt, tokens: number[], coef: number[], temperature: number, grad: Float64Array): number {
    const { style, option, feats } = this.logits(p, this.w, temperature);
    let entropy = 0;
    // d logp(style = s) / d b_j = ([j == s] - p_j) / temperature
    const st = tokens[0];
    for (let j = 0; j < STYLES; j++) {
      const pj = Math.exp(style[j]);
      grad[DIM + j] += (coef[0] * ((j === st ? 1 : 0) - pj)) / temperature;
      entropy -= pj > 0 ? pj * style[j] : 0;
    }
    if (tokens.length > 1) {
      const k = tokens[1] - STYLES;
      // d logp(option = k) / d w_f = (count_f(k) - sum_j p_j count_f(j)) / temperature
      for (let j = 0; j < feats.length; j++) {
        const pj = Math.exp(option[j]);
        const c = (coef[1] * ((j === k ? 1 : 0) - pj)) / temperature;
        if (c !== 0) for (const f of feats[j]) grad[f] += c;
        entropy -= pj > 0 ? pj * option[j] : 0;
      }
    }
    return entropy;
  }

  /** Gradient-norm clipping and one AdamW step; returns the norm before clipping, or NaN (no update) when not finite. */
  private apply(grad: Float64Array, lr: number, maxGradNorm: number, weightDecay: number): number {
    let sq = 0;
    for (let i = 0; i < P; i++) sq += grad[i] * grad[i];
    const norm = Math.sqrt(sq);
    if (!Number.isFinite(norm)) return norm;
    const scale = maxGradNorm > 0 && norm > maxGradNorm ? maxGradNorm / (norm + 1e-6) : 1;
    const b1 = 0.9,
      b2 = 0.999,
      eps = 1e-8;
    this.t++;
    const c1 = 1 - Math.pow(b1, this.t),
      c2 = 1 - Math.pow(b2, this.t);
    for (let i = 0; i < P; i++) {
      const g = grad[i] * scale;
      if (g === 0 && this.m[i] === 0 && this.v[i] === 0 && this.w[i] === 0) continue; // untouched hashed slot
      this.m[i] = b1 * this.m[i] + (1 - b1) * g;
      this.v[i] = b2 * this.v[i] + (1 - b2) * g * g;
      this.w[i] -= lr * (this.m[i] / c1 / (Math.sqrt(this.v[i] / c2) + eps) + weightDecay * this.w[i]);
    }
    return norm;
  }

  /** The section-6 loss of `seqs` at the current weights and its exact gradient (P,) with respect to them. */
  lossAndGradient(
    prompts: readonly PolicyPrompt[],
    seqs: readonly TrainSequence[],
    o: TrainStepOptions,
  ): { r: ReturnType<typeof policyLoss>; grad: Float64Array; entropy: number } {
    const current = seqs.map((s) => this.seqLogprobs(prompts[s.prompt], s.tokens, this.w, o.temperature));
    const r = policyLoss(
      seqs.map((s, i) => ({
        advantage: s.advantage,
        logp: current[i],
        oldLogp: s.oldLogprobs,
        refLogp: s.refLogprobs,
      })),
      o,
    );
    const grad = new Float64Array(P);
    let entropy = 0;
    seqs.forEach((s, i) => {
      entropy += this.backprop(prompts[s.prompt], s.tokens, r.grads[i], o.temperature, grad);
    });
    return { r, grad, entropy };
  }

  /** The weight vector (a view: tests perturb it for finite differences). */
  get weights(): Float64Array {
    return this.w;
  }

  async trainStep(
    prompts: readonly PolicyPrompt[],
    seqs: readonly TrainSequence[],
    o: TrainStepOptions,
  ): Promise<TrainStepStats> {
    this.check();
    const { r, grad, entropy } = this.lossAndGradient(prompts, seqs, o);
    const stats = {
      loss: r.loss,
      pgLoss: r.pgLoss,
      kl: r.kl,
      clipFraction: r.clipFraction,
      entropy: r.tokens ? entropy / r.tokens : 0,
      tokens: r.tokens,
    };
    const weight = o.aggregation === 'token-mean' ? r.tokens : seqs.length;
    const total = o.processGroup !== undefined ? await averageAcrossRanks(o.processGroup, grad, weight) : weight;
    if (!Number.isFinite(r.loss)) return { ...stats, gradNorm: NaN, skipped: true };
    // No sequence (or token) on any rank: nothing to learn from, no optimiser step (as the native policy).
    if (total === 0) return { ...stats, gradNorm: 0, skipped: false };
    const norm = this.apply(grad, o.lr, o.maxGradNorm, o.weightDecay);
    return { ...stats, gradNorm: norm, skipped: !Number.isFinite(norm) };
  }

  async sftStep(
    prompts: readonly PolicyPrompt[],
    answers: readonly number[],
    o: { lr: number; maxGradNorm: number },
  ): Promise<{ loss: number; gradNorm: number }> {
    this.check();
    const grad = new Float64Array(P);
    let loss = 0;
    const n = Math.max(1, prompts.length);
    prompts.forEach((p, i) => {
      const tokens = [0, STYLES + answers[i]];
      const lp = this.seqLogprobs(p, tokens, this.w, 1);
      loss -= (lp[0] + lp[1]) / n;
      this.backprop(p, tokens, [-1 / n, -1 / n], 1, grad);
    });
    const gradNorm = this.apply(grad, o.lr, o.maxGradNorm, 0);
    return { loss, gradNorm };
  }

  async freezeReference(): Promise<void> {
    this.ref = Float64Array.from(this.w);
  }

  /** Replaces the weights (and the reference) by those of `other`'s checkpoint folder; optimiser reset unless `full`. */
  load(dir: string, full: boolean): void {
    const file = path.join(dir, 'policy.safetensors');
    if (!fs.existsSync(file))
      throw new CrpoError('ERR_CRPO_CHECKPOINT', `${file}: no policy weights in this checkpoint folder`);
    const { header, tensors } = parseSafetensors(fs.readFileSync(file), file);
    if (header.metadata?.kind !== 'linear')
      throw new CrpoError('ERR_CRPO_CHECKPOINT', `${file}: policy kind '${header.metadata?.kind}' is not 'linear'`);
    const get = (name: string): Float64Array => {
      const t = tensors.get(name);
      if (!t || t.dtype !== 'F64' || t.data.length !== P)
        throw new CrpoError('ERR_CRPO_CHECKPOINT', `${file}: tensor '${name}' missing or not F64 [${P}]`);
      return Float64Array.from(t.data as Float64Array);
    };
    this.w = get('weights');
    this.ref = tensors.has('reference') ? get('reference') : Float64Array.from(this.w);
    if (full) {
      this.m = get('adam.m');
      this.v = get('adam.v');
      this.t = Number(header.metadata?.adam_step ?? 0);
    } else {
      this.m = new Float64Array(P);
      this.v = new Float64Array(P);
      this.t = 0;
      this.ref = Float64Array.from(this.w);
    }
  }

  async save(dir: string): Promise<void> {
    this.check();
    fs.mkdirSync(dir, { recursive: true });
    writeSafetensors(
      path.join(dir, 'policy.safetensors'),
      [
        { name: 'weights', dtype: 'F64', shape: [P], data: this.w },
        { name: 'reference', dtype: 'F64', shape: [P], data: this.ref },
        { name: 'adam.m', dtype: 'F64', shape: [P], data: this.m },
        { name: 'adam.v', dtype: 'F64', shape: [P], data: this.v },
      ],
      { kind: 'linear', adam_step: String(this.t), dim: String(DIM) },
    );
  }

  weightsDigest(): string {
    return crypto
      .createHash('sha256')
      .update(new Uint8Array(this.w.buffer, this.w.byteOffset, this.w.byteLength))
      .digest('hex');
  }

  dispose(): void {
    this.disposed = true;
  }
}

/** A linear policy: zero weights (uniform answers), or the weights of checkpoint folder `init`. */
export async function createLinearPolicy(o: { init?: string; resumeFrom?: string }): Promise<LinearPolicy> {
  const p = new LinearPolicy();
  if (o.resumeFrom) p.load(o.resumeFrom, true);
  else if (o.init) p.load(o.init, false);
  return p;
}

POLICY_KINDS.register('linear', (o) => createLinearPolicy({ init: o.init, resumeFrom: o.resumeFrom }));
