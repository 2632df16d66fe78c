/**
 * Video IO (docs/data-format.md, "Videos"): frame folders through sharp, video files through the
 * system ffmpeg, uniform frame sampling, pixel budgets, bounded concurrency and an LRU cache.
 */
export { VideoReader, readVideo, type DecodedVideo, type ReadOptions, type ReaderOptions } from './reader';
export {
  probeVideo,
  decodeVideoFile,
  decodeAllFrames,
  encodeMp4,
  defaultFfmpegPaths,
  type VideoProbe,
  type DecodeFileOptions,
  type EncodeOptions,
  type FfmpegPaths,
} from './ffmpeg';
export { listFrameFiles, decodeImage, decodeImages, imageSize, writeFrameDir, FRAME_EXTENSIONS } from './frames-dir';
export { uniformIndices, targetSize, type SizeOptions } from './sampling';
export { LruCache, Semaphore } from './lru';
