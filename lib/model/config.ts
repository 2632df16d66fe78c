/**
 * Configuration of the native video-language policy (native/torch/model): one typed object with
 * every default in a preset, validated here with the standard messages before it reaches native
 * code. Presets: `tiny` (8 frames of 32x32, ~0.4 M parameters: trains in minutes on 2 CPU cores)
 * and `small` (16 frames of 64x64, ~6 M parameters). fp32 on CPU; `bfloat16` only on CUDA.
 */
import { invalidArg, outOfRange } from '../errors';

export interface PolicyConfig {
  /** Vocabulary size (set from the tokenizer). */
  vocabSize: number;
  /** Frames per clip (T); input clips must have exactly this many. */
  frames: number;
  /** Frame height = width in pixels. */
  imageSize: number;
  /** Square patch side in pixels. */
  patchSize: number;
  /** Frames per tubelet: a vision token covers temporalPatch consecutive frames (Qwen2.5-VL: 2). */
  temporalPatch: number;
  /** The projector merges mergeSize x mergeSize neighbouring patches into one LM token. */
  mergeSize: number;
  /** Vision encoder width, depth, heads and MLP hidden size. */
  visionDim: number;
  visionLayers: number;
  visionHeads: number;
  visionMlp: number;
  /**
   * Convolutional stem (0 = off): a 3x3 convolution to this many channels + GELU on every frame
   * before the tubelets are cut, so a patch embeds local edges and corners instead of raw pixels.
   */
  visionStem: number;
  /**
   * A second 3x3 convolution, stride 2, to this many channels + GELU after the stem (0 = off; needs
   * `visionStem` > 0 and an even `patchSize`): the tubelets are cut from the half-resolution feature
   * map, so the patch grid, the visual tokens and everything after them stay the same.
   */
  visionStemDown: number;
  /** Vision attention over all tubelets of a clip (true) or within each tubelet (false); one batched pass either way. */
  visionClipAttention: boolean;
  /** Decoder width, depth, query heads, key/value heads (grouped), SwiGLU hidden size. */
  lmDim: number;
  lmLayers: number;
  lmHeads: number;
  lmKvHeads: number;
  lmMlp: number;
  /** Longest sequence (visual tokens + prompt + completion). */
  maxSeqLen: number;
  /** Rotary base. */
  ropeTheta: number;
  normEps: number;
  /** Std of the N(0, std) weight init. */
  initStd: number;
  /**
   * Std of the vision position tables' init. Patch embeddings have std ~0.8 on the synthetic
   * clips: at 0.02 a position is ~2.5% of a token and moving direction stays at chance (docs/model.md).
   */
  posInitStd: number;
  /**
   * How the vision position tables start: 'random' (N(0, posInitStd)) or 'sincos' (sine-cosine
   * features of row and column, half the width each, and of the frame group; scaled to posInitStd),
   * so horizontal and vertical position are separate directions from the first step.
   */
  posInit: 'random' | 'sincos';
  /**
   * Option-slot embeddings (0 = off, else the most option lines, <= 26): every token of option
   * line k of a prompt ("B. blue" is line 2) gets a learned vector of its slot added, as segment
   * embeddings mark parts of an input. The decoder still has to match the options against the
   * video; it no longer has to learn first which letter each word belongs to (docs/model.md).
   */
  optionSlots: number;
  /**
   * Vision attribute head (0 = off): a linear layer from the vision encoder's mean token to this
   * many logits, trained only by `sftStep`'s vision attribute loss (`visionAuxWeight`) and never
   * read when answering: a direct training signal for the vision encoder, as a real model's vision
   * tower has had from its pretraining (docs/model.md, "Levers, fifth round").
   */
  visionAuxClasses: number;
  /** Seed of the weight init and of sampling (the policy's own generator). */
  seed: number;
  /** 'float32' (CPU/CUDA) or 'bfloat16' (CUDA only). 'float64' exists for gradient checks. */
  dtype: 'float32' | 'bfloat16' | 'float64';
  /** 'cpu' or 'cuda[:N]'. */
  device: string;
}

export type PolicyPresetName = 'tiny' | 'small';

type Shape = Omit<PolicyConfig, 'vocabSize' | 'seed' | 'dtype' | 'device'>;

export const POLICY_PRESETS: Readonly<Record<PolicyPresetName, Shape>> = {
  tiny: {
    frames: 8,
    imageSize: 32,
    patchSize: 8,
    temporalPatch: 2,
    mergeSize: 2,
    visionDim: 64,
    visionLayers: 2,
    visionHeads: 4,
    visionMlp: 128,
    visionStem: 0,
    visionStemDown: 0,
    visionClipAttention: true,
    lmDim: 96,
    lmLayers: 2,
    lmHeads: 4,
    lmKvHeads: 2,
    lmMlp: 256,
    maxSeqLen: 160,
    ropeTheta: 10000,
    normEps: 1e-6,
    initStd: 0.08,
    posInitStd: 0.5,
    posInit: 'random',
    optionSlots: 0,
    visionAuxClasses: 0,
  },
  small: {
    frames: 16,
    imageSize: 64,
    patchSize: 8,
    temporalPatch: 2,
    mergeSize: 2,
    visionDim: 192,
    visionLayers: 4,
    visionHeads: 6,
    visionMlp: 512,
    visionStem: 0,
    visionStemDown: 0,
    visionClipAttention: true,
    lmDim: 256,
    lmLayers: 4,
    lmHeads: 8,
    lmKvHeads: 2,
    lmMlp: 704,
    maxSeqLen: 512,
    ropeTheta: 10000,
    normEps: 1e-6,
    initStd: 0.02,
    posInitStd: 0.5,
    posInit: 'random',
    optionSlots: 0,
    visionAuxClasses: 0,
  },
};

const INT_FIELDS = [
  'vocabSize',
  'frames',
  'imageSize',
  'patchSize',
  'temporalPatch',
  'mergeSize',
  'visionDim',
  'visionLayers',
  'visionHeads',
  'visionMlp',
  'lmDim',
  'lmLayers',
  'lmHeads',
  'lmKvHeads',
  'lmMlp',
  'maxSeqLen',
] as const;

/** Visual tokens per clip: (frames / temporalPatch) * (imageSize / patchSize)^2 / mergeSize^2. */
export function visualTokens(
  c: Pick<PolicyConfig, 'frames' | 'temporalPatch' | 'imageSize' | 'patchSize' | 'mergeSize'>,
): number {
  const g = c.imageSize / c.patchSize;
  return ((c.frames / c.temporalPatch) * g * g) / (c.mergeSize * c.mergeSize);
}

/**
 * A complete, checked config: the preset (default tiny), then `overrides`. Throws the standard
 * "Expected X for name but received v" errors naming the field.
 */
export function resolvePolicyConfig(
  overrides: Partial<PolicyConfig> & { preset?: PolicyPresetName },
  op = 'policy config',
): PolicyConfig {
  if (overrides === null || typeof overrides !== 'object') throw invalidArg('config', 'an object', overrides, op);
  const preset = overrides.preset ?? 'tiny';
  if (!(preset in POLICY_PRESETS))
    throw invalidArg('config.preset', `one of ${Object.keys(POLICY_PRESETS).join(', ')}`, preset, op);
  const { preset: _p, ...rest } = overrides;
  void _p;
  const known = new Set<string>([...Object.keys(POLICY_PRESETS.tiny), 'vocabSize', 'seed', 'dtype', 'device']);
  for (const k of Object.keys(rest))
    if (!known.has(k)) throw invalidArg(`config.${k}`, `a known field (${[...known].join(', ')})`, k, op);
  const c = { ...POLICY_PRESETS[preset], seed: 0, dtype: 'float32', device: 'cpu', ...rest } as PolicyConfig;
  for (const f of INT_FIELDS) {
    const v = c[f];
    if (typeof v !== 'number' || !Number.isInteger(v)) throw invalidArg(`config.${f}`, 'an integer', v, op);
    if (v < 1) throw outOfRange(`config.${f}`, 'an integer >= 1', v, op);
  }
  const intIn = (f: 'visionStem' | 'visionStemDown' | 'optionSlots' | 'visionAuxClasses', hi: number, off: string) => {
    if (!Number.isInteger(c[f]) || c[f] < 0 || c[f] > hi)
      throw outOfRange(`config.${f}`, `an integer in [0, ${hi}] (0 = ${off})`, c[f], op);
  };
  intIn('visionStem', 256, 'no stem');
  intIn('visionStemDown', 256, 'no downsampling convolution');
  intIn('optionSlots', 26, 'no option-slot embeddings');
  intIn('visionAuxClasses', 4096, 'no vision attribute head');
  if (c.visionStemDown > 0 && c.visionStem === 0)
    throw invalidArg('config.visionStemDown', '0 when visionStem is 0 (it follows the stem)', c.visionStemDown, op);
  if (c.visionStemDown > 0 && c.patchSize % 2 !== 0)
    throw invalidArg('config.patchSize', 'an even size when visionStemDown > 0', c.patchSize, op);
  if (c.posInit !== 'random' && c.posInit !== 'sincos')
    throw invalidArg('config.posInit', "'random' or 'sincos'", c.posInit, op);
  if (c.posInit === 'sincos' && c.visionDim % 4 !== 0)
    throw invalidArg('config.visionDim', "a multiple of 4 with posInit 'sincos'", c.visionDim, op);
  if (c.vocabSize < 6) throw outOfRange('config.vocabSize', 'an integer >= 6 (the special tokens)', c.vocabSize, op);
  if (!Number.isSafeInteger(c.seed) || c.seed < 0)
    throw invalidArg('config.seed', 'a non-negative integer', c.seed, op);
  if (typeof c.visionClipAttention !== 'boolean')
    throw invalidArg('config.visionClipAttention', 'a boolean', c.visionClipAttention, op);
  for (const f of ['ropeTheta', 'normEps', 'initStd', 'posInitStd'] as const) {
    if (typeof c[f] !== 'number' || !(c[f] > 0) || !Number.isFinite(c[f]))
      throw invalidArg(`config.${f}`, 'a finite number > 0', c[f], op);
  }
  if (!['float32', 'bfloat16', 'float64'].includes(c.dtype))
    throw invalidArg('config.dtype', "'float32' or 'bfloat16'", c.dtype, op);
  if (typeof c.device !== 'string' || !/^(cpu|cuda(:\d+)?)$/.test(c.device))
    throw invalidArg('config.device', "'cpu' or 'cuda[:N]'", c.device, op);
  if (c.dtype === 'bfloat16' && !c.device.startsWith('cuda'))
    throw outOfRange('config.dtype', "'float32' on CPU ('bfloat16' needs CUDA)", c.dtype, op);
  if (c.frames % c.temporalPatch)
    throw outOfRange('config.frames', `a multiple of temporalPatch (${c.temporalPatch})`, c.frames, op);
  if (c.imageSize % (c.patchSize * c.mergeSize))
    throw outOfRange(
      'config.imageSize',
      `a multiple of patchSize*mergeSize (${c.patchSize * c.mergeSize})`,
      c.imageSize,
      op,
    );
  if (c.visionDim % c.visionHeads)
    throw outOfRange('config.visionDim', `a multiple of visionHeads (${c.visionHeads})`, c.visionDim, op);
  if (c.lmDim % c.lmHeads) throw outOfRange('config.lmDim', `a multiple of lmHeads (${c.lmHeads})`, c.lmDim, op);
  if ((c.lmDim / c.lmHeads) % 2)
    throw outOfRange('config.lmDim', 'lmDim / lmHeads even (rotary positions)', c.lmDim, op);
  if (c.lmHeads % c.lmKvHeads)
    throw outOfRange('config.lmKvHeads', `a divisor of lmHeads (${c.lmHeads})`, c.lmKvHeads, op);
  if (c.maxSeqLen <= visualTokens(c))
    throw outOfRange('config.maxSeqLen', `more than the ${visualTokens(c)} visual tokens`, c.maxSeqLen, op);
  return c;
}
