/**
 * Loading Qwen2.5-VL / Qwen3-VL Hugging Face model folders into the native backend and the
 * typed handle over it: forward with named intermediate outputs, objective gradients, greedy
 * generation (KV-cached or not), LoRA, and export back to an HF-loadable folder. A folder is
 * config.json plus model.safetensors or sharded model-*.safetensors with
 * model.safetensors.index.json; weights are memory-mapped by the addon and converted to the
 * requested dtype. Missing, unexpected or mis-shaped weights are refused in one message.
 */
import * as fs from 'fs';
import * as path from 'path';
import { CrpoError, invalidArg, outOfRange } from '../errors';
import {
  NativeHandle,
  callSync,
  rewrap,
  torchAddon,
  type NativeQwenForwardResult,
  type NativeQwenInputs,
  type NativeQwenSampleOptions,
  type NativeQwenTrainBatch,
  type NativeQwenTrainStats,
  type NativeTensor,
  torchCall,
} from '../native';
import { canonicalKey, expectedWeights, nativeConfig, readQwenConfig, type QwenVLConfig } from './config';
import {
  readSafetensors,
  readSafetensorsHeader,
  writeSafetensors,
  type SafeTensorInfo,
  type TensorSpec,
} from './safetensors';
import { ropeIndex, type Grid } from './rope-index';

/** float64 is for numerical checks (finite differences). */
export type QwenDtype = 'float32' | 'bfloat16' | 'float16' | 'float64';

export interface QwenLoadOptions {
  /** Compute/storage dtype of the weights (default float32). */
  dtype?: QwenDtype;
  /** 'cpu' (default) or 'cuda[:N]'. */
  device?: string;
}

export interface WeightRef extends SafeTensorInfo {
  file: string;
  /** The key as stored in the checkpoint (export writes it back the same way). */
  fileKey: string;
}

/** Resolves the weight files of a folder and checks them against the architecture. */
export function resolveWeights(folder: string, cfg: QwenVLConfig): Map<string, WeightRef> {
  const index = path.join(folder, 'model.safetensors.index.json');
  const single = path.join(folder, 'model.safetensors');
  let files: string[];
  if (fs.existsSync(index)) {
    let wm: Record<string, string>;
    try {
      wm = (JSON.parse(fs.readFileSync(index, 'utf8')) as { weight_map: Record<string, string> }).weight_map;
    } catch (e) {
      throw new CrpoError('ERR_CRPO_MODEL_LOAD', `${index}: cannot read the shard index (${(e as Error).message})`, {
        userError: true,
      });
    }
    if (!wm || typeof wm !== 'object')
      throw new CrpoError('ERR_CRPO_MODEL_LOAD', `${index}: no weight_map`, { userError: true });
    files = [...new Set(Object.values(wm))].map((f) => path.join(folder, f));
    const missingShards = files.filter((f) => !fs.existsSync(f));
    if (missingShards.length) {
      throw new CrpoError(
        'ERR_CRPO_MODEL_LOAD',
        `${folder}: shards listed in model.safetensors.index.json are missing: ${missingShards.map((f) => path.basename(f)).join(', ')}`,
        { userError: true },
      );
    }
  } else if (fs.existsSync(single)) {
    files = [single];
  } else {
    throw new CrpoError(
      'ERR_CRPO_MODEL_LOAD',
      `${folder}: no model.safetensors or model.safetensors.index.json (only safetensors checkpoints are supported)`,
      { userError: true },
    );
  }
  const expected = expectedWeights(cfg);
  const found = new Map<string, WeightRef>();
  const unexpected: string[] = [];
  const misShaped: string[] = [];
  const duplicate: string[] = [];
  for (const f of files) {
    const h = readSafetensorsHeader(f);
    for (const t of h.tensors.values()) {
      const canon = canonicalKey(t.name);
      const shape = expected.get(canon);
      if (!shape) {
        if (canon === 'lm_head.weight' && cfg.text.tieWordEmbeddings) continue; // tied copy
        unexpected.push(t.name);
        continue;
      }
      if (found.has(canon)) duplicate.push(t.name);
      if (shape.length !== t.shape.length || shape.some((s, i) => s !== t.shape[i])) {
        misShaped.push(`${t.name}: [${t.shape}] in ${path.basename(f)}, expected [${shape}]`);
      }
      if (!['F32', 'BF16', 'F16', 'F64'].includes(t.dtype))
        misShaped.push(`${t.name}: dtype ${t.dtype}, expected a float type`);
      found.set(canon, { ...t, file: f, fileKey: t.name });
    }
  }
  const missing = [...expected.keys()].filter((k) => !found.has(k));
  if (missing.length || unexpected.length || misShaped.length || duplicate.length) {
    const parts: string[] = [];
    const list = (xs: string[]) =>
      xs.length > 20 ? `${xs.slice(0, 20).join(', ')} ... (${xs.length} in all)` : xs.join(', ');
    if (missing.length) parts.push(`missing ${missing.length}: ${list(missing)}`);
    if (unexpected.length) parts.push(`unexpected ${unexpected.length}: ${list(unexpected)}`);
    if (misShaped.length) parts.push(`mis-shaped ${misShaped.length}: ${list(misShaped)}`);
    if (duplicate.length) parts.push(`stored twice: ${list(duplicate)}`);
    throw new CrpoError(
      'ERR_CRPO_MODEL_LOAD',
      `${folder}: the weights do not match ${cfg.arch} (${cfg.text.numLayers} LM layers, ${cfg.vision.depth} vision blocks); ${parts.join('; ')}. ` +
        `Expected ${expected.size} weights with transformers' names, e.g. ${[...expected.keys()].slice(0, 3).join(', ')}`,
      { userError: true },
    );
  }
  return found;
}

/** One multimodal prompt (batch rows share the vision inputs, as in transformers). */
export interface QwenInputs {
  /** (B, L) token ids. */
  inputIds: number[][];
  attentionMask?: number[][];
  /** Patch rows as the HF processor emits them, (N, C*tp*p*p) flattened. */
  pixelValues?: Float32Array;
  imageGridThw?: Grid[];
  pixelValuesVideos?: Float32Array;
  videoGridThw?: Grid[];
  /** Qwen2.5-VL: seconds per temporal grid of each video (default 1). */
  secondPerGridTs?: number[];
  /** Overrides the rope-index computation (3, B, L) axis-major. */
  positionIds?: Int32Array;
  /**
   * The images/videos belong to every row (B samples of one prompt, a GRPO group): encoded once
   * and scattered into each row. Without it, rows consume the vision inputs in order (transformers).
   */
  shareVision?: boolean;
  /**
   * Image / video i fills imageRepeats[i] / videoRepeats[i] consecutive placeholder runs (rows of
   * one prompt in a training batch): encoded once, its features repeated.
   */
  imageRepeats?: number[];
  videoRepeats?: number[];
  /**
   * Shared-prefix scoring and training: consecutive rows in groups whose first `prefixLength`
   * tokens (vision + prompt) are equal, each image/video given once per group (imageRepeats /
   * videoRepeats = the group's rows, or shareVision). Each prefix runs once and the group's
   * completions attend to its keys/values (exact; native/torch/qwen/qwen_prefix.cpp). Rows must be
   * right-padded; only completion targets are scored (forward: tokenLogprobs NaN at prefix
   * targets, objective and lossMeanCe over the completions, no logits). Absent: every row whole.
   */
  prefixGroups?: { rows: number; prefixLength: number }[];
}

export interface QwenForwardOptions {
  /** Record intermediate outputs (vision blocks, decoder layers, ...). */
  capture?: boolean;
  /** Weights (canonical or LoRA names) whose gradient of `objective` is returned. */
  grads?: string[];
  /** Use the LoRA adapters (false = the frozen reference); default: the model's setting. */
  lora?: boolean;
  /** tokenLogprobs of logits / temperature (default 1). */
  temperature?: number;
}

export interface QwenForwardResult {
  logits: NativeTensor;
  /** (B, L-1) log p(ids[t+1] | ids[..t]). */
  tokenLogprobs: NativeTensor;
  /** transformers' loss with labels = input_ids (mean next-token cross-entropy). */
  lossMeanCe: number;
  /** sum_t log_softmax(logits[t])[ids[t+1]] over attended targets. */
  objective: number;
  capture: Record<string, NativeTensor>;
  grads: Record<string, NativeTensor>;
  positionIds: Int32Array;
}

export interface LoraOptions {
  rank: number;
  alpha?: number;
  dropout?: number;
  /** Module names, e.g. ['q_proj', 'k_proj', 'v_proj', 'o_proj']. */
  targetModules: string[];
  /** Also adapt matching vision-tower linears (default false: tower frozen). */
  vision?: boolean;
  seed?: number;
}

function tensorOut(t: NativeTensor): NativeTensor {
  return { data: rewrap(t.data), shape: [...t.shape] };
}

function flatInt32(rows: number[][], what: string): Int32Array {
  const L = rows[0]?.length ?? 0;
  const out = new Int32Array(rows.length * L);
  rows.forEach((r, b) => {
    if (r.length !== L) throw invalidArg(what, `rows of equal length ${L}`, r.length);
    out.set(r, b * L);
  });
  return out;
}

/** Checks prefix groups against a batch of B rows of L tokens; (rows, prefix length) pairs. */
function prefixGroupsOf(groups: { rows: number; prefixLength: number }[], B: number, L: number): Int32Array {
  const what = 'inputs.prefixGroups';
  if (!Array.isArray(groups) || groups.length === 0) throw invalidArg(what, 'a non-empty array of groups', groups);
  const out = new Int32Array(2 * groups.length);
  let rows = 0;
  groups.forEach((g, i) => {
    if (!Number.isInteger(g?.rows) || g.rows < 1) throw invalidArg(`${what}[${i}].rows`, 'a positive integer', g?.rows);
    if (!Number.isInteger(g.prefixLength) || g.prefixLength < 1 || g.prefixLength > L)
      throw outOfRange(`${what}[${i}].prefixLength`, `an integer in [1, ${L}]`, g.prefixLength);
    out[2 * i] = g.rows;
    out[2 * i + 1] = g.prefixLength;
    rows += g.rows;
  });
  if (rows !== B) throw outOfRange(`the rows of ${what}`, `${B} (the batch's rows)`, rows);
  return out;
}

/** A loaded Qwen2.5-VL / Qwen3-VL model on the native backend. */
export class QwenVLModel extends NativeHandle {
  private constructor(
    private readonly id: number,
    readonly config: QwenVLConfig,
    readonly folder: string,
    readonly weights: Map<string, WeightRef>,
    readonly dtype: QwenDtype,
  ) {
    super();
  }

  /** Loads a model folder (config.json + safetensors). */
  static async load(folder: string, options: QwenLoadOptions = {}): Promise<QwenVLModel> {
    if (typeof folder !== 'string' || !folder) throw invalidArg('folder', 'a model folder path', folder);
    const dtype = options.dtype ?? 'float32';
    if (!['float32', 'bfloat16', 'float16', 'float64'].includes(dtype))
      throw invalidArg('dtype', "'float32', 'bfloat16', 'float16' or 'float64'", dtype);
    const device = options.device ?? 'cpu';
    if (dtype === 'float16' && !device.startsWith('cuda')) {
      throw new CrpoError(
        'ERR_CRPO_DTYPE',
        `float16 needs a CUDA device (libtorch has no fp16 matmul on CPU); use dtype 'bfloat16' or 'float32' on '${device}'`,
        { userError: true },
      );
    }
    const cfgFile = path.join(folder, 'config.json');
    if (!fs.existsSync(cfgFile))
      throw new CrpoError('ERR_CRPO_MODEL_LOAD', `${folder}: no config.json`, { userError: true });
    const cfg = readQwenConfig(cfgFile);
    const weights = resolveWeights(folder, cfg);
    const a = torchAddon();
    const tensors = [...weights.entries()].map(([name, w]) => ({
      name,
      file: w.file,
      offset: w.offset,
      nbytes: w.nbytes,
      dtype: w.dtype,
      shape: w.shape,
    }));
    const id = await torchCall(() => a.qwenLoad({ config: nativeConfig(cfg), dtype, device, tensors }));
    return new QwenVLModel(id, cfg, folder, weights, dtype);
  }

  /** Native inputs with rope position ids computed from the token ids and grids. */
  prepare(inputs: QwenInputs): NativeQwenInputs {
    const B = inputs.inputIds.length;
    if (B < 1) throw invalidArg('inputs.inputIds', 'at least one row', inputs.inputIds);
    const L = inputs.inputIds[0].length;
    const rep = <T>(xs: T[] | undefined): T[] | undefined =>
      xs && inputs.shareVision ? Array.from({ length: B }, () => xs).flat() : xs;
    const each = <T>(xs: T[] | undefined, reps: number[] | undefined): T[] | undefined => {
      if (!xs || !reps) return xs;
      if (reps.length !== xs.length || !reps.every((r) => Number.isInteger(r) && r >= 1))
        throw invalidArg('repeats', `${xs.length} positive integers (one per grid)`, reps);
      return xs.flatMap((x, i) => Array.from({ length: reps[i] }, () => x));
    };
    const positionIds =
      inputs.positionIds ??
      ropeIndex(this.config, {
        inputIds: inputs.inputIds,
        attentionMask: inputs.attentionMask,
        imageGridThw: rep(each(inputs.imageGridThw, inputs.imageRepeats)),
        videoGridThw: rep(each(inputs.videoGridThw, inputs.videoRepeats)),
        secondPerGridTs: rep(each(inputs.secondPerGridTs, inputs.videoRepeats)),
      }).positionIds;
    const n: NativeQwenInputs = {
      batch: B,
      seqLen: L,
      inputIds: flatInt32(inputs.inputIds, 'inputs.inputIds'),
      positionIds,
    };
    if (inputs.attentionMask) n.attentionMask = flatInt32(inputs.attentionMask, 'inputs.attentionMask');
    if (inputs.shareVision) n.shareVision = true;
    if (inputs.prefixGroups) n.prefixGroups = prefixGroupsOf(inputs.prefixGroups, B, L);
    if (inputs.imageRepeats) n.imageRepeats = inputs.imageRepeats;
    if (inputs.videoRepeats) n.videoRepeats = inputs.videoRepeats;
    if (inputs.pixelValues && inputs.imageGridThw) {
      n.pixelValues = inputs.pixelValues;
      n.imageGridThw = Int32Array.from(inputs.imageGridThw.flat());
    }
    if (inputs.pixelValuesVideos && inputs.videoGridThw) {
      n.pixelValuesVideos = inputs.pixelValuesVideos;
      n.videoGridThw = Int32Array.from(inputs.videoGridThw.flat());
    }
    return n;
  }

  async forward(inputs: QwenInputs, options: QwenForwardOptions = {}): Promise<QwenForwardResult> {
    this.assertLive('QwenVLModel.forward');
    const n = this.prepare(inputs);
    const a = torchAddon();
    const r: NativeQwenForwardResult = await torchCall(() => a.qwenForward(this.id, n, options));
    const map = (o: Record<string, NativeTensor>) =>
      Object.fromEntries(Object.entries(o).map(([k, v]) => [k, tensorOut(v)]));
    return {
      logits: tensorOut(r.logits),
      tokenLogprobs: tensorOut(r.tokenLogprobs),
      lossMeanCe: r.lossMeanCe,
      objective: r.objective,
      capture: map(r.capture),
      grads: map(r.grads),
      positionIds: n.positionIds,
    };
  }

  /**
   * Decodes up to maxNewTokens per row (stops at eosTokenId): greedy when temperature is 0
   * (default), else sampled with top-k / top-p from a seeded generator. Returns the new tokens
   * and their log-probs under the model (temperature 1), KV-cached unless useCache is false.
   */
  async generate(
    inputs: QwenInputs,
    options: NativeQwenSampleOptions,
  ): Promise<{ tokens: number[][]; logprobs: number[][]; stepLogits: NativeTensor[] }> {
    this.assertLive('QwenVLModel.generate');
    if (!Number.isInteger(options.maxNewTokens) || options.maxNewTokens < 1)
      throw invalidArg('maxNewTokens', 'a positive integer', options.maxNewTokens);
    const n = this.prepare(inputs);
    const a = torchAddon();
    const r = await torchCall(() =>
      a.qwenGenerate(this.id, n, {
        ...options,
        eosTokenId: options.eosTokenId ?? this.config.eosTokenId ?? -1,
        useCache: options.useCache ?? true,
      }),
    );
    return {
      tokens: r.tokens.map((row) => [...row]),
      logprobs: r.logprobs.map((row) => [...row]),
      stepLogits: r.stepLogits.map(tensorOut),
    };
  }

  /**
   * One optimizer step (AdamW) on the trainable weights: objective 'grpo' is the clipped
   * surrogate with per-sequence advantages and an optional k3 KL to reference log-probs
   * (token-mean over completion tokens); 'sft' is the mean next-token NLL on the masked tokens.
   */
  async trainStep(inputs: QwenInputs, batch: NativeQwenTrainBatch): Promise<NativeQwenTrainStats> {
    this.assertLive('QwenVLModel.trainStep');
    const n = this.prepare(inputs);
    const a = torchAddon();
    return torchCall(() => a.qwenTrainStep(this.id, n, batch));
  }

  /**
   * The applying train step of a data-parallel rank with nothing (more) to train this step: no
   * sequences in its shard, or a micro-batch whose loss was not finite (the other ranks then skip
   * the step too). It joins `batch.processGroup`'s gradient all-reduce with weight 0 and steps
   * like every rank, so all replicas stay equal.
   */
  async syncStep(
    batch: Omit<NativeQwenTrainBatch, 'completionMask' | 'processGroup'> & { processGroup: number },
  ): Promise<NativeQwenTrainStats> {
    this.assertLive('QwenVLModel.syncStep');
    const a = torchAddon();
    return torchCall(() => a.qwenSyncStep(this.id, batch));
  }

  /**
   * The gradients accumulated by `trainStep(..., { apply: false })` (summed over such calls since
   * the last applied step), copied out only for the weights named.
   */
  gradients(names: string[]): Record<string, NativeTensor> {
    this.assertLive('QwenVLModel.gradients');
    if (!Array.isArray(names)) throw invalidArg('names', 'an array of weight names', names);
    const r = callSync(() => torchAddon().qwenGrads(this.id, names));
    return Object.fromEntries(Object.entries(r).map(([k, v]) => [k, tensorOut(v)]));
  }

  /** 'lora' (adapters only; default once attached), 'lm' (all LM weights), 'all' (LM + vision). */
  setTrainable(mode: 'lora' | 'lm' | 'all'): string[] {
    this.assertLive('QwenVLModel.setTrainable');
    if (!['lora', 'lm', 'all'].includes(mode)) throw invalidArg('mode', "'lora', 'lm' or 'all'", mode);
    return callSync(() => torchAddon().qwenSetTrainable(this.id, mode));
  }

  /** Recompute decoder layers in backward instead of keeping their activations. */
  setGradientCheckpointing(enabled: boolean): void {
    this.assertLive('QwenVLModel.setGradientCheckpointing');
    callSync(() => torchAddon().qwenSetCheckpointing(this.id, enabled));
  }

  /** Attaches LoRA adapters; returns their names (`<linear>.lora_A` / `.lora_B`). */
  addLora(options: LoraOptions): string[] {
    this.assertLive('QwenVLModel.addLora');
    if (!Number.isInteger(options.rank) || options.rank < 1)
      throw invalidArg('rank', 'a positive integer', options.rank);
    if (!Array.isArray(options.targetModules) || options.targetModules.length === 0)
      throw invalidArg('targetModules', 'a non-empty array of module names', options.targetModules);
    if (options.dropout !== undefined && !(options.dropout >= 0 && options.dropout < 1))
      throw invalidArg('dropout', 'a number in [0, 1)', options.dropout);
    const names = callSync(() => torchAddon().qwenAddLora(this.id, options));
    this.lora = { alpha: 16, dropout: 0, vision: false, seed: 0, ...options };
    return names;
  }

  /** The LoRA settings attached, if any. */
  lora?: LoraOptions;

  /** PEFT key of a LoRA tensor: base_model.model.<checkpoint module name>.lora_A.weight */
  private peftKey(loraName: string): string {
    const dot = loraName.lastIndexOf('.');
    const module = loraName.slice(0, dot);
    const part = loraName.slice(dot + 1); // lora_A | lora_B
    const fileKey = this.weights.get(`${module}.weight`)?.fileKey ?? `${module}.weight`;
    return `base_model.model.${fileKey.slice(0, -'.weight'.length)}.${part}.weight`;
  }

  /**
   * Writes the adapters as a PEFT LoRA folder (adapter_config.json + adapter_model.safetensors,
   * atomically). target_modules is a regex that excludes the vision tower unless it was adapted.
   */
  saveAdapter(dir: string): void {
    this.assertLive('QwenVLModel.saveAdapter');
    if (!this.lora)
      throw new CrpoError('ERR_CRPO_NO_LORA', 'saveAdapter: no LoRA adapters are attached (addLora first)');
    fs.mkdirSync(dir, { recursive: true });
    const names = this.paramNames(true);
    const specs: TensorSpec[] = names.map((n) => ({
      name: this.peftKey(n),
      shape: this.getParam(n).shape,
      dtype: 'F32',
    }));
    const byKey = new Map(names.map((n) => [this.peftKey(n), n]));
    writeSafetensors(path.join(dir, 'adapter_model.safetensors'), specs, (k) => this.getParam(byKey.get(k)!).data);
    const l = this.lora;
    const mods = l.targetModules.map((m) => m.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|');
    const config = {
      peft_type: 'LORA',
      task_type: 'CAUSAL_LM',
      base_model_name_or_path: path.resolve(this.folder),
      r: l.rank,
      lora_alpha: l.alpha,
      lora_dropout: l.dropout,
      bias: 'none',
      target_modules: l.vision ? `.*\\.(${mods})` : `^(?!.*visual).*\\.(${mods})`,
      crpo: { targetModules: l.targetModules, vision: l.vision ?? false, seed: l.seed ?? 0 },
    };
    const file = path.join(dir, 'adapter_config.json');
    const tmp = `${file}.${process.pid}.tmp`;
    const fd = fs.openSync(tmp, 'w');
    fs.writeSync(fd, JSON.stringify(config, null, 2) + '\n');
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fs.renameSync(tmp, file);
  }

  /** Loads a folder written by saveAdapter (attaching adapters with its settings when none are). */
  loadAdapter(dir: string): void {
    this.assertLive('QwenVLModel.loadAdapter');
    const cfgFile = path.join(dir, 'adapter_config.json');
    if (!fs.existsSync(cfgFile))
      throw new CrpoError('ERR_CRPO_MODEL_LOAD', `${dir}: no adapter_config.json`, { userError: true });
    const c = JSON.parse(fs.readFileSync(cfgFile, 'utf8')) as {
      r: number;
      lora_alpha: number;
      lora_dropout: number;
      crpo?: { targetModules: string[]; vision: boolean; seed: number };
    };
    if (!c.crpo)
      throw new CrpoError(
        'ERR_CRPO_MODEL_LOAD',
        `${cfgFile}: not written by crpo (no "crpo" section with the target modules)`,
        { userError: true },
      );
    if (!this.lora)
      this.addLora({
        rank: c.r,
        alpha: c.lora_alpha,
        dropout: c.lora_dropout,
        targetModules: c.crpo.targetModules,
        vision: c.crpo.vision,
        seed: c.crpo.seed,
      });
    const tensors = readSafetensors(path.join(dir, 'adapter_model.safetensors'));
    const names = this.paramNames(true);
    const missing = names.filter((n) => !tensors.has(this.peftKey(n)));
    if (missing.length || tensors.size !== names.length) {
      throw new CrpoError(
        'ERR_CRPO_MODEL_LOAD',
        `${dir}: adapter tensors do not match the attached LoRA (${tensors.size} stored, ${names.length} expected; missing: ${missing.slice(0, 5).join(', ')})`,
        { userError: true },
      );
    }
    for (const n of names) this.setParam(n, tensors.get(this.peftKey(n))!.data as Float32Array);
  }

  /**
   * Adapters (when attached) plus AdamW state (optimizer.pt), for resuming training. Collective
   * under zero 1: the other ranks call joinSaveTrainingState at the same point.
   */
  async saveTrainingState(dir: string): Promise<void> {
    if (this.lora) this.saveAdapter(dir);
    const file = path.join(dir, 'optimizer.pt');
    const tmp = `${file}.${process.pid}.tmp`;
    const a = torchAddon();
    await torchCall(() => a.qwenSaveOptimizer(this.id, tmp));
    const fd = fs.openSync(tmp, 'r');
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fs.renameSync(tmp, file);
  }

  /** A rank other than 0's part of a zero-1 saveTrainingState: the moments are gathered, nothing is written. */
  async joinSaveTrainingState(): Promise<void> {
    this.assertLive('QwenVLModel.joinSaveTrainingState');
    const a = torchAddon();
    await torchCall(() => a.qwenSaveOptimizer(this.id, ''));
  }

  async loadTrainingState(dir: string): Promise<void> {
    // a checkpoint of full fine-tuning (no adapters attached) holds no adapter folder
    if (this.lora || fs.existsSync(path.join(dir, 'adapter_config.json'))) this.loadAdapter(dir);
    const file = path.join(dir, 'optimizer.pt');
    if (!fs.existsSync(file))
      throw new CrpoError('ERR_CRPO_MODEL_LOAD', `${dir}: no optimizer.pt`, { userError: true });
    const a = torchAddon();
    await torchCall(() => a.qwenLoadOptimizer(this.id, file));
  }

  /**
   * Folds the adapters into the base weights and restarts them (B = 0): outputs are unchanged and
   * the LoRA-disabled reference becomes the current policy. Resets the optimizer. Synchronous
   * (native qwenMergeLoraSync): it blocks the JS thread for one pass over the adapted weights.
   */
  mergeLoraSync(): void {
    this.assertLive('QwenVLModel.mergeLoraSync');
    callSync(() => torchAddon().qwenMergeLoraSync(this.id));
    this.baseModified = true;
  }

  /** @deprecated The same as mergeLoraSync (synchronous: it blocks the JS thread). */
  mergeLora(): void {
    this.mergeLoraSync();
  }

  /** True once mergeLoraSync changed the base weights (a checkpoint must then hold them). */
  baseModified = false;

  /** false: the frozen reference policy (LoRA bypassed, no second copy of the weights). */
  setLoraEnabled(enabled: boolean): void {
    this.assertLive('QwenVLModel.setLoraEnabled');
    callSync(() => torchAddon().qwenSetLoraEnabled(this.id, enabled));
  }

  paramNames(lora = false): string[] {
    this.assertLive('QwenVLModel.paramNames');
    return callSync(() => torchAddon().qwenParamNames(this.id, lora));
  }

  /** One weight, read synchronously (native qwenGetParamSync); `merged` adds the LoRA update on the JS thread. */
  getParam(name: string, merged = false): NativeTensor {
    this.assertLive('QwenVLModel.getParam');
    return tensorOut(callSync(() => torchAddon().qwenGetParamSync(this.id, name, { merged })));
  }

  setParam(name: string, value: Float32Array): void {
    this.assertLive('QwenVLModel.setParam');
    callSync(() => torchAddon().qwenSetParam(this.id, name, value));
  }

  /**
   * Writes an HF-loadable folder: config.json (and the other small files of the source folder)
   * plus model.safetensors with the checkpoint's own key names, LoRA merged into the weights.
   */
  exportTo(
    outDir: string,
    options: { dtype?: 'F32' | 'BF16'; /** LoRA merged in (default true). */ merged?: boolean } = {},
  ): void {
    this.assertLive('QwenVLModel.exportTo');
    fs.mkdirSync(outDir, { recursive: true });
    for (const f of fs.readdirSync(this.folder)) {
      if (f.endsWith('.safetensors') || f === 'model.safetensors.index.json') continue;
      const src = path.join(this.folder, f);
      if (fs.statSync(src).isFile()) fs.copyFileSync(src, path.join(outDir, f));
    }
    const specs: TensorSpec[] = [];
    const byKey = new Map<string, string>();
    for (const [canon, w] of this.weights) {
      specs.push({ name: w.fileKey, shape: w.shape, dtype: options.dtype ?? (w.dtype === 'BF16' ? 'BF16' : 'F32') });
      byKey.set(w.fileKey, canon);
    }
    writeSafetensors(
      path.join(outDir, 'model.safetensors'),
      specs,
      (key) => this.getParam(byKey.get(key)!, options.merged ?? true).data,
    );
  }

  protected release(): void {
    callSync(() => torchAddon().qwenDispose(this.id));
  }
}
