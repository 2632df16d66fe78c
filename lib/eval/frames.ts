/**
 * Frames for evaluation: turns a DyBench record's `video` (docs/data-format.md) into uint8
 * [T,H,W,3]. Inline synthetic specs are rendered by lib/synth (scene, then the member's
 * counterfactual transform); video files and frame folders are decoded by lib/video with the
 * run's frame count and pixel budget.
 */
import { CrpoError } from '../errors';
import type { DyBenchRecord } from '../data/schema';
import { renderSynthetic } from '../synth';

export interface DecodedFrames {
  frames: Uint8Array;
  shape: [number, number, number, 3];
}

export interface FrameLoadOptions {
  /** Frames sampled uniformly from a video file or frame folder (default 8). */
  frames?: number;
  /** Largest H*W per frame; larger frames are resized down keeping the aspect (default 224*224). */
  maxPixels?: number;
}

export const FRAME_DEFAULTS: Required<FrameLoadOptions> = { frames: 8, maxPixels: 224 * 224 };

/** Loads the frames of one record. */
export type FrameLoader = (record: DyBenchRecord) => Promise<DecodedFrames>;

/** The default loader: synthetic specs through lib/synth, paths through lib/video. */
export function defaultFrameLoader(o: FrameLoadOptions = {}): FrameLoader {
  const opts = { ...FRAME_DEFAULTS, ...o };
  return async (record) => {
    const v = record.video;
    if (typeof v === 'object') {
      const frames = renderSynthetic(v);
      return { frames, shape: [v.frames, v.height, v.width, 3] };
    }
    return loadVideoPath(v, opts);
  };
}

async function loadVideoPath(file: string, o: Required<FrameLoadOptions>): Promise<DecodedFrames> {
  throw new CrpoError('ERR_CRPO_NOT_AVAILABLE', `cannot decode ${file}: video files and frame folders need lib/video, which this build does not have (frames ${o.frames}, max pixels ${o.maxPixels})`);
}
