/**
 * Video input for evaluation and training: reads a DyBench `video` reference (a video file, a
 * frames directory, or an inline synthetic spec) as uint8 [T,H,W,C=3], with N frames sampled
 * uniformly and each frame resized to a pixel budget. A VideoReader bounds how many decodes run
 * at once (ffmpeg processes and sharp jobs compete for the same cores as training) and keeps an
 * LRU cache of decoded clips bounded in bytes; concurrent reads of the same clip share one decode.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as os from 'os';
import sharp from 'sharp';
import { CrpoError, invalidArg, outOfRange } from '../errors';
import type { SyntheticVideoSpec, VideoRef } from '../data/schema';
import { renderSynthetic } from './synthetic';
import { decodeAllFrames, decodeVideoFile, defaultFfmpegPaths, probeVideo, type FfmpegPaths } from './ffmpeg';
import { decodeImages, imageSize, listFrameFiles } from './frames-dir';
import { LruCache, Semaphore } from './lru';
import { checkSizeOptions, targetSize, uniformIndices, type SizeOptions } from './sampling';

export interface ReadOptions extends SizeOptions {
  /** Frames to sample uniformly (default: every frame). */
  frames?: number;
  /** ffmpeg decoding method for video files (see decodeVideoFile); default 'select'. */
  method?: 'select' | 'all';
}

export interface DecodedVideo {
  /** uint8, shape [T,H,W,3], row-major. */
  data: Uint8Array;
  shape: [number, number, number, number];
  /** Source frame index of each output frame. */
  indices: number[];
  /** Frames in the source and their size before resizing. */
  sourceFrames: number;
  sourceWidth: number;
  sourceHeight: number;
  /** Frames per second of a video file (NaN for frame folders and synthetic clips). */
  fps: number;
  kind: 'file' | 'frames' | 'synthetic';
}

export interface ReaderOptions {
  /** Decodes running at once (default: number of CPUs, at least 1). */
  concurrency?: number;
  /** LRU cache budget in bytes (default 256 MiB; 0 disables the cache). */
  cacheBytes?: number;
  /** Images decoded at once within one frames directory (default 4). */
  imageConcurrency?: number;
  ffmpeg?: FfmpegPaths;
  /** 'auto' (default): MP4/MOV headers are read in-process, other files by ffprobe; 'ffprobe': always ffprobe. */
  probe?: 'auto' | 'ffprobe';
}

function checkRead(o: ReadOptions, op: string): void {
  if (typeof o !== 'object' || o === null) throw invalidArg('options', 'an object', o, op);
  if (o.frames !== undefined && (!Number.isInteger(o.frames) || o.frames < 1))
    throw outOfRange('frames', 'an integer >= 1', o.frames, op);
  if (o.method !== undefined && o.method !== 'select' && o.method !== 'all')
    throw invalidArg('method', "'select' or 'all'", o.method, op);
  checkSizeOptions(o, op);
}

async function resizeRaw(data: Uint8Array, T: number, H: number, W: number, w: number, h: number): Promise<Uint8Array> {
  if (w === W && h === H) return data;
  const out = new Uint8Array(T * h * w * 3);
  for (let t = 0; t < T; t++) {
    const raw = Buffer.from(data.buffer, data.byteOffset + t * H * W * 3, H * W * 3);
    const buf = await sharp(raw, { raw: { width: W, height: H, channels: 3 } })
      .resize(w, h, { fit: 'fill', kernel: 'linear' })
      .raw()
      .toBuffer();
    out.set(buf, t * h * w * 3);
  }
  return out;
}

export class VideoReader {
  readonly concurrency: number;
  private readonly gate: Semaphore;
  private readonly cache: LruCache<string, DecodedVideo>;
  private readonly inflight = new Map<string, Promise<DecodedVideo>>();
  private readonly imageConcurrency: number;
  private readonly ffmpeg: FfmpegPaths;
  private readonly probe: 'auto' | 'ffprobe';

  constructor(o: ReaderOptions = {}) {
    const c = o.concurrency ?? Math.max(1, os.cpus().length);
    if (!Number.isInteger(c) || c < 1) throw outOfRange('concurrency', 'an integer >= 1', c, 'VideoReader');
    const bytes = o.cacheBytes ?? 256 * 1024 * 1024;
    if (!Number.isInteger(bytes) || bytes < 0) throw outOfRange('cacheBytes', 'an integer >= 0', bytes, 'VideoReader');
    this.concurrency = c;
    this.gate = new Semaphore(c);
    this.cache = new LruCache(bytes, (v) => v.data.byteLength + 256);
    this.imageConcurrency = o.imageConcurrency ?? 4;
    this.ffmpeg = o.ffmpeg ?? defaultFfmpegPaths();
    this.probe = o.probe ?? 'auto';
    if (this.probe !== 'auto' && this.probe !== 'ffprobe')
      throw invalidArg('probe', "'auto' or 'ffprobe'", this.probe, 'VideoReader');
  }

  /** Peak number of decodes seen running at once. */
  get peakConcurrency(): number {
    return this.gate.peak;
  }

  get cacheStats(): { entries: number; bytes: number; hits: number; misses: number } {
    return { entries: this.cache.size, bytes: this.cache.bytes, hits: this.cache.hits, misses: this.cache.misses };
  }

  clearCache(): void {
    this.cache.clear();
  }

  /** Reads `ref` as uint8 [T,H,W,3]. The returned data is the caller's own copy. */
  async read(ref: VideoRef, options: ReadOptions = {}): Promise<DecodedVideo> {
    checkRead(options, 'VideoReader.read');
    const key = this.keyOf(ref, options);
    const cached = this.cache.get(key);
    if (cached) return copy(cached);
    let job = this.inflight.get(key);
    if (!job) {
      job = this.gate.run(() => this.decode(ref, options));
      this.inflight.set(key, job);
      job
        .then(
          (v) => this.cache.set(key, v),
          () => undefined,
        )
        .finally(() => this.inflight.delete(key));
    }
    return copy(await job);
  }

  private keyOf(ref: VideoRef, o: ReadOptions): string {
    const opts = [
      o.frames ?? 'all',
      o.width ?? '',
      o.height ?? '',
      o.maxPixels ?? '',
      o.multiple ?? '',
      o.method ?? 'select',
    ].join(',');
    if (typeof ref !== 'string') return `synthetic:${JSON.stringify(ref)}|${opts}`;
    // mtime and size in the key: an edited file is decoded again.
    let stamp = 'missing';
    try {
      const st = fs.statSync(ref);
      stamp = `${st.mtimeMs}:${st.size}`;
    } catch {
      /* decode() reports the missing path */
    }
    return `path:${ref}|${stamp}|${opts}`;
  }

  private async decode(ref: VideoRef, o: ReadOptions): Promise<DecodedVideo> {
    if (typeof ref === 'object' && ref !== null) return this.decodeSynthetic(ref, o);
    if (typeof ref !== 'string' || ref.length === 0)
      throw invalidArg('video', 'a file path, a frames directory or an inline synthetic spec', ref, 'VideoReader.read');
    let st: fs.Stats;
    try {
      st = fs.statSync(ref);
    } catch {
      throw new CrpoError('ERR_CRPO_NOT_FOUND', `video not found: ${ref}`);
    }
    return st.isDirectory() ? this.decodeDir(ref, o) : this.decodeFile(ref, o);
  }

  private async decodeFile(file: string, o: ReadOptions): Promise<DecodedVideo> {
    const p = await probeVideo(file, this.ffmpeg, this.probe);
    const { width, height } = targetSize(p.width, p.height, o);
    let indices = uniformIndices(p.frames, o.frames ?? p.frames);
    try {
      const data = await decodeVideoFile(file, { indices, width, height, method: o.method, paths: this.ffmpeg });
      return {
        data,
        shape: [indices.length, height, width, 3],
        indices,
        sourceFrames: p.frames,
        sourceWidth: p.width,
        sourceHeight: p.height,
        fps: p.fps,
        kind: 'file',
      };
    } catch (err) {
      if (!(err as { cleanDecode?: boolean }).cleanDecode) throw err;
    }
    // The container lists more frames than the decoder delivers (an edit list hides some):
    // decode them all once and sample from the frames that exist.
    const all = await decodeAllFrames(file, width, height, this.ffmpeg);
    indices = uniformIndices(all.count, o.frames ?? all.count);
    const F = width * height * 3;
    const data = new Uint8Array(indices.length * F);
    indices.forEach((src, t) => data.set(all.data.subarray(src * F, (src + 1) * F), t * F));
    return {
      data,
      shape: [indices.length, height, width, 3],
      indices,
      sourceFrames: all.count,
      sourceWidth: p.width,
      sourceHeight: p.height,
      fps: p.fps,
      kind: 'file',
    };
  }

  private async decodeDir(dir: string, o: ReadOptions): Promise<DecodedVideo> {
    const files = listFrameFiles(dir);
    const indices = uniformIndices(files.length, o.frames ?? files.length);
    const first = await imageSize(files[indices[0]]);
    // Frames of one clip share a size; one of another size (a stray file, a crop) is named, not stretched.
    for (const i of new Set(indices)) {
      const s = await imageSize(files[i]);
      if (s.width !== first.width || s.height !== first.height) {
        throw new CrpoError(
          'ERR_CRPO_VIDEO',
          `frames folder ${dir} mixes frame sizes: ` +
            `${path.basename(files[indices[0]])} is ${first.width}x${first.height}, ${path.basename(files[i])} is ` +
            `${s.width}x${s.height}; give every frame of a clip the same size`,
        );
      }
    }
    const { width, height } = targetSize(first.width, first.height, o);
    const data = await decodeImages(
      indices.map((i) => files[i]),
      width,
      height,
      this.imageConcurrency,
    );
    return {
      data,
      shape: [indices.length, height, width, 3],
      indices,
      sourceFrames: files.length,
      sourceWidth: first.width,
      sourceHeight: first.height,
      fps: NaN,
      kind: 'frames',
    };
  }

  private async decodeSynthetic(spec: SyntheticVideoSpec, o: ReadOptions): Promise<DecodedVideo> {
    const all = renderSynthetic(spec);
    const T = spec.frames,
      H = spec.height,
      W = spec.width;
    const indices = uniformIndices(T, o.frames ?? T);
    const picked = new Uint8Array(indices.length * H * W * 3);
    indices.forEach((src, t) => picked.set(all.subarray(src * H * W * 3, (src + 1) * H * W * 3), t * H * W * 3));
    const { width, height } = targetSize(W, H, o);
    const data = await resizeRaw(picked, indices.length, H, W, width, height);
    return {
      data,
      shape: [indices.length, height, width, 3],
      indices,
      sourceFrames: T,
      sourceWidth: W,
      sourceHeight: H,
      fps: NaN,
      kind: 'synthetic',
    };
  }
}

function copy(v: DecodedVideo): DecodedVideo {
  return { ...v, data: v.data.slice(), shape: [...v.shape] as DecodedVideo['shape'], indices: [...v.indices] };
}

let shared: VideoReader | undefined;

/** Reads a video with the process-wide default reader (see VideoReader). */
export function readVideo(ref: VideoRef, options: ReadOptions = {}): Promise<DecodedVideo> {
  shared ??= new VideoReader();
  return shared.read(ref, options);
}
