/**
 * Frames for evaluation: turns a DyBench record's `video` (docs/data-format.md) into uint8
 * [T,H,W,3] through lib/video: video files (ffmpeg), frame folders (sharp) and inline synthetic
 * specs (lib/synth: the scene, then the member's counterfactual transform), with N frames
 * sampled uniformly and each frame scaled down to a pixel budget.
 */
import * as os from 'os';
import type { DyBenchRecord } from '../data/schema';
import { VideoReader } from '../video';

export interface DecodedFrames {
  frames: Uint8Array;
  shape: [number, number, number, 3];
}

export interface FrameLoadOptions {
  /** Frames sampled uniformly from each clip (default 8). */
  frames?: number;
  /** Largest H*W per frame; larger frames are scaled down keeping the aspect (default 224*224). */
  maxPixels?: number;
  /** Decodes running at once (default: number of CPUs). */
  concurrency?: number;
}

export const FRAME_DEFAULTS = { frames: 8, maxPixels: 224 * 224 };

/** Loads the frames of one record. */
export type FrameLoader = (record: DyBenchRecord) => Promise<DecodedFrames>;

/**
 * The default loader: one VideoReader (bounded decode concurrency; no cache, since an evaluation
 * reads each clip once) with the run's frame count and pixel budget.
 */
export function defaultFrameLoader(o: FrameLoadOptions = {}): FrameLoader {
  const reader = new VideoReader({ concurrency: o.concurrency ?? Math.max(1, os.cpus().length), cacheBytes: 0 });
  const read = { frames: o.frames ?? FRAME_DEFAULTS.frames, maxPixels: o.maxPixels ?? FRAME_DEFAULTS.maxPixels };
  return async (record) => {
    const v = await reader.read(record.video, read);
    return { frames: v.data, shape: [v.shape[0], v.shape[1], v.shape[2], 3] };
  };
}
