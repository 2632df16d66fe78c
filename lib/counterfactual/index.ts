/**
 * Counterfactual video ops (crpo-method.md section 1): horizontal flip, temporal reversal, both,
 * and segment swap, on batched frames ([B,T,H,W,C] or [B,T,C,H,W], uint8 or float32). The input
 * is read in place (zero copy); the output is new or caller-provided. Runs on the core addon by
 * default, or on the torch addon (CPU or CUDA) with `backend: 'torch'`.
 *
 * The input and a caller-provided output must not be changed or detached until the promise settles.
 */
import { invalidArg, outOfRange } from '../errors';
import { ops, type AddonName, type FrameArray, type FrameLayout, type VideoTransformName } from '../native';

import { VIDEO_TRANSFORMS } from './transforms';

export { referenceTransform } from './reference';
export { VIDEO_TRANSFORMS, FRAME_TRANSFORMS, isVideoTransform, type FrameTransform } from './transforms';
export const FRAME_LAYOUTS: readonly FrameLayout[] = ['BTHWC', 'BTCHW'];

export interface TransformOptions {
  /** Five dims in `layout` order. */
  shape: readonly number[];
  /** Default 'BTHWC'. */
  layout?: FrameLayout;
  transform: VideoTransformName;
  /** For 'swap': first frame of the second segment (default T/2 rounded down). */
  swapAt?: number;
  /** Write here instead of allocating (same type and length as the input). */
  output?: FrameArray;
  /** 'core' (default) or 'torch'. */
  backend?: AddonName;
  /** Torch backend only: 'cpu' (default) or 'cuda[:N]'. */
  device?: string;
}

interface Checked {
  shape: number[];
  layout: FrameLayout;
  transform: VideoTransformName;
  swapAt?: number;
  output?: FrameArray;
  device?: string;
  backend: AddonName;
}

function check(input: unknown, o: TransformOptions, op: string): Checked {
  if (!(
    ArrayBuffer.isView(input) &&
    (Object.prototype.toString.call(input) === '[object Uint8Array]' ||
      Object.prototype.toString.call(input) === '[object Float32Array]')
  )) {
    throw invalidArg('input', 'a Uint8Array or Float32Array', input, op);
  }
  if (typeof o !== 'object' || o === null) throw invalidArg('options', 'an object', o, op);
  const layout = o.layout ?? 'BTHWC';
  if (!FRAME_LAYOUTS.includes(layout)) throw invalidArg('layout', `one of ${FRAME_LAYOUTS.join(', ')}`, layout, op);
  if (!VIDEO_TRANSFORMS.includes(o.transform)) {
    throw invalidArg('transform', `one of ${VIDEO_TRANSFORMS.join(', ')}`, o.transform, op);
  }
  if (!Array.isArray(o.shape) || o.shape.length !== 5) throw invalidArg('shape', 'an array of 5 integers', o.shape, op);
  o.shape.forEach((d, i) => {
    if (!Number.isInteger(d)) throw invalidArg(`shape[${i}]`, 'an integer', d, op);
    if (d < 0) throw outOfRange(`shape[${i}]`, 'an integer >= 0', d, op);
  });
  const n = o.shape.reduce((a, b) => a * b, 1);
  const length = (input as FrameArray).length;
  if (n !== length)
    throw outOfRange('shape', `dimensions whose product equals input length ${length}`, `[${o.shape.join(',')}]`, op);
  let swapAt = o.swapAt;
  if (o.transform === 'swap') {
    const T = o.shape[1];
    if (T < 2) throw outOfRange('shape[1]', "at least 2 frames for 'swap'", T, op);
    swapAt ??= Math.floor(T / 2);
    if (!Number.isInteger(swapAt)) throw invalidArg('swapAt', 'an integer', swapAt, op);
    if (swapAt < 1 || swapAt > T - 1) throw outOfRange('swapAt', `an integer in [1, ${T - 1}]`, swapAt, op);
  }
  if (o.output !== undefined) {
    const same = Object.prototype.toString.call(o.output) === Object.prototype.toString.call(input);
    if (!same) throw invalidArg('output', `a ${(input as FrameArray).constructor.name} like input`, o.output, op);
    if (o.output.length !== length) throw outOfRange('output', `length ${length}`, `length ${o.output.length}`, op);
  }
  const backend = o.backend ?? 'core';
  if (backend !== 'core' && backend !== 'torch') throw invalidArg('backend', "'core' or 'torch'", backend, op);
  if (o.device !== undefined && backend !== 'torch')
    throw invalidArg('device', "no device unless backend is 'torch'", o.device, op);
  return { shape: [...o.shape], layout, transform: o.transform, swapAt, output: o.output, device: o.device, backend };
}

/** Applies a counterfactual transform off the JS thread. */
export function transformFrames(input: FrameArray, options: TransformOptions): Promise<FrameArray> {
  let c: Checked;
  try {
    c = check(input, options, 'transformFrames');
  } catch (err) {
    return Promise.reject(err);
  }
  const { backend, ...rest } = c;
  return ops(backend).videoTransform(input, rest);
}

/** Synchronous variant, for small clips (blocks the event loop while it runs). */
export function transformFramesSync(input: FrameArray, options: TransformOptions): FrameArray {
  const c = check(input, options, 'transformFramesSync');
  const { backend, ...rest } = c;
  return ops(backend).videoTransformSync(input, rest);
}
