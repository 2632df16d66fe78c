/**
 * Video files through the system ffmpeg (native-notes.md: ffmpeg 5.1 with libx264; npm ffmpeg
 * wrappers do not work offline). Probing uses ffprobe (packet count, so a truncated file reports
 * the frames it really has); decoding spawns ffmpeg and reads rawvideo rgb24 frames over a pipe;
 * encoding pipes raw frames into libx264. Every failure is one CrpoError naming the file.
 */
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { CrpoError } from '../errors';
import { readMp4Header } from './mp4-header';

export interface FfmpegPaths {
  ffmpeg: string;
  ffprobe: string;
}

/** ffmpeg/ffprobe from CRPO_FFMPEG / CRPO_FFPROBE, else from PATH. */
export function defaultFfmpegPaths(): FfmpegPaths {
  const ffmpeg = process.env.CRPO_FFMPEG || 'ffmpeg';
  const ffprobe =
    process.env.CRPO_FFPROBE ||
    (process.env.CRPO_FFMPEG ? path.join(path.dirname(process.env.CRPO_FFMPEG), 'ffprobe') : 'ffprobe');
  return { ffmpeg, ffprobe };
}

function missing(bin: string): CrpoError {
  return new CrpoError(
    'ERR_CRPO_FFMPEG_MISSING',
    `${bin} not found; video files need the system ffmpeg (Debian/Ubuntu: apt-get install ffmpeg), or set CRPO_FFMPEG / CRPO_FFPROBE to the binaries`,
  );
}

interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
}

/**
 * Spawns `bin args`, streams stdout to `onStdout`, optionally writes `stdin`, and resolves
 * with the exit status and the tail of stderr. A missing binary rejects with ERR_CRPO_FFMPEG_MISSING.
 */
function run(bin: string, args: string[], onStdout: (chunk: Buffer) => void, stdin?: Uint8Array): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    let child;
    try {
      child = spawn(bin, args, { stdio: [stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'] });
    } catch (err) {
      reject((err as NodeJS.ErrnoException).code === 'ENOENT' ? missing(bin) : err);
      return;
    }
    let stderr = '';
    let failed = false;
    child.on('error', (err: NodeJS.ErrnoException) => {
      failed = true;
      reject(
        err.code === 'ENOENT' || err.code === 'EACCES'
          ? missing(bin)
          : new CrpoError('ERR_CRPO_FFMPEG', `cannot run ${bin}: ${err.message}`, { cause: err }),
      );
    });
    child.stdout!.on('data', onStdout);
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (stderr.length > 16384) stderr = stderr.slice(-8192);
    });
    if (stdin && child.stdin) {
      child.stdin.on('error', () => undefined); // EPIPE when ffmpeg exits early: reported by the exit code
      child.stdin.end(Buffer.from(stdin.buffer, stdin.byteOffset, stdin.byteLength));
    }
    child.on('close', (code, signal) => {
      if (!failed) resolve({ code, signal, stderr });
    });
  });
}

function tail(stderr: string): string {
  const lines = stderr
    .trim()
    .split('\n')
    .filter((l) => l.trim().length > 0);
  return lines.slice(-4).join(' | ') || '(no message)';
}

function checkReadable(file: string): void {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch {
    throw new CrpoError('ERR_CRPO_NOT_FOUND', `video file not found: ${file}`);
  }
  if (!st.isFile())
    throw new CrpoError(
      'ERR_CRPO_BAD_PATH',
      `expected a video file, found a ${st.isDirectory() ? 'directory' : 'special file'}: ${file}`,
    );
  if (st.size === 0) throw new CrpoError('ERR_CRPO_VIDEO_CORRUPT', `video file is empty: ${file}`);
}

export interface VideoProbe {
  width: number;
  height: number;
  /** Frames actually present (packets counted, not the header's claim). */
  frames: number;
  /** Frames per second (avg_frame_rate), NaN when unknown. */
  fps: number;
  codec: string;
}

/**
 * Reads size, frame count and rate of the first video stream. `method` 'auto' (default) reads an
 * MP4/MOV header in-process when it can and runs ffprobe otherwise; 'ffprobe' always runs it.
 */
export async function probeVideo(
  file: string,
  paths: FfmpegPaths = defaultFfmpegPaths(),
  method: 'auto' | 'ffprobe' = 'auto',
): Promise<VideoProbe> {
  checkReadable(file);
  if (method === 'auto') {
    const h = readMp4Header(file);
    if (h?.truncated)
      throw new CrpoError(
        'ERR_CRPO_VIDEO_TRUNCATED',
        `video ${file} is truncated: its data ends before the ${h.frames} frames its header lists`,
      );
    if (h) return { width: h.width, height: h.height, frames: h.frames, fps: h.fps, codec: h.codec };
  }
  const chunks: Buffer[] = [];
  const args = [
    '-v',
    'error',
    '-count_packets',
    '-select_streams',
    'v:0',
    '-show_entries',
    'stream=width,height,nb_frames,nb_read_packets,avg_frame_rate,r_frame_rate,codec_name',
    '-of',
    'json',
    file,
  ];
  const r = await run(paths.ffprobe, args, (c) => chunks.push(c));
  if (r.code !== 0)
    throw new CrpoError(
      'ERR_CRPO_VIDEO_CORRUPT',
      `cannot read video ${file} (corrupt, truncated or not a video): ${tail(r.stderr)}`,
    );
  let info: {
    streams?: {
      width?: number;
      height?: number;
      nb_frames?: string;
      nb_read_packets?: string;
      avg_frame_rate?: string;
      r_frame_rate?: string;
      codec_name?: string;
    }[];
  };
  try {
    info = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new CrpoError('ERR_CRPO_FFMPEG', `ffprobe printed unreadable output for ${file}`, { userError: false });
  }
  const s = info.streams?.[0];
  if (!s || !s.width || !s.height) throw new CrpoError('ERR_CRPO_VIDEO_CORRUPT', `no video stream in ${file}`);
  const frames = Number(s.nb_read_packets ?? 0);
  if (!(frames > 0))
    throw new CrpoError('ERR_CRPO_VIDEO_CORRUPT', `video ${file} has no frames (truncated or corrupt)`);
  // The container header's frame count (when it has one) against the packets really present.
  const claimed = Number(s.nb_frames);
  if (Number.isFinite(claimed) && claimed > frames) {
    throw new CrpoError(
      'ERR_CRPO_VIDEO_TRUNCATED',
      `video ${file} is truncated: its header lists ${claimed} frames, the file holds ${frames}`,
    );
  }
  const rate = (q?: string): number => {
    if (!q) return NaN;
    const [a, b] = q.split('/').map(Number);
    return b ? a / b : NaN;
  };
  const fps = rate(s.avg_frame_rate) || rate(s.r_frame_rate);
  return { width: s.width, height: s.height, frames, fps, codec: s.codec_name ?? 'unknown' };
}

export interface DecodeFileOptions {
  /** Source frame indices to return, ascending, may repeat. */
  indices: number[];
  width: number;
  height: number;
  /**
   * 'select' (default): ffmpeg's select filter keeps only the wanted frames before scaling.
   * 'all': every frame is scaled and sent, JS keeps the wanted ones (the slow, obviously correct twin).
   */
  method?: 'select' | 'all';
  paths?: FfmpegPaths;
}

/**
 * Decodes the frames at `indices` as uint8 [T,H,W,3]. A file that yields fewer frames than
 * asked for is reported as truncated or corrupt with ffmpeg's own message.
 */
export async function decodeVideoFile(file: string, o: DecodeFileOptions): Promise<Uint8Array> {
  checkReadable(file);
  const paths = o.paths ?? defaultFfmpegPaths();
  const unique = [...new Set(o.indices)].sort((a, b) => a - b);
  const last = unique[unique.length - 1];
  const frameBytes = o.width * o.height * 3;
  const method = o.method ?? 'select';
  const scale = `scale=${o.width}:${o.height}:flags=bilinear`;
  // The select filter runs before scaling, so unwanted frames are decoded but never scaled or piped.
  const vf = method === 'select' ? `select='${unique.map((i) => `eq(n,${i})`).join('+')}',${scale}` : scale;
  const args = [
    '-nostdin',
    '-v',
    'error',
    '-noautorotate',
    '-i',
    file,
    '-an',
    '-sn',
    '-vf',
    vf,
    '-fps_mode',
    'passthrough',
    '-frames:v',
    String(method === 'select' ? unique.length : last + 1),
    '-f',
    'rawvideo',
    '-pix_fmt',
    'rgb24',
    'pipe:1',
  ];
  // Frames arrive in order; bytes of wanted frames are copied straight into their slot.
  const slotOfSource = new Map(unique.map((idx, slot) => [idx, slot]));
  const slotOf = (streamFrame: number): number =>
    method === 'select' ? (streamFrame < unique.length ? streamFrame : -1) : (slotOfSource.get(streamFrame) ?? -1);
  const kept = new Uint8Array(unique.length * frameBytes);
  let keptFrames = 0;
  let streamFrame = 0; // frames ffmpeg has sent so far
  let inFrame = 0; // bytes of the current frame received
  const onChunk = (chunk: Buffer): void => {
    let off = 0;
    while (off < chunk.length) {
      const n = Math.min(frameBytes - inFrame, chunk.length - off);
      const slot = slotOf(streamFrame);
      if (slot >= 0) kept.set(chunk.subarray(off, off + n), slot * frameBytes + inFrame);
      inFrame += n;
      off += n;
      if (inFrame === frameBytes) {
        if (slot >= 0) keptFrames++;
        streamFrame++;
        inFrame = 0;
      }
    }
  };
  const r = await run(paths.ffmpeg, args, onChunk);
  if (r.code !== 0)
    throw new CrpoError(
      'ERR_CRPO_VIDEO_CORRUPT',
      `cannot decode video ${file} (corrupt or truncated): ${tail(r.stderr)}`,
    );
  if (keptFrames < unique.length) {
    const err = new CrpoError(
      'ERR_CRPO_VIDEO_TRUNCATED',
      `video ${file} is truncated or corrupt: frame ${unique[keptFrames]} was asked for, the decoder produced ${keptFrames} of ${unique.length} wanted frames${r.stderr.trim() ? ` (${tail(r.stderr)})` : ''}`,
    );
    // A clean decode that yields fewer frames than the container lists is not damage: an edit list
    // (e.g. a stream-copied cut) hides leading samples. Callers may then count the real frames.
    (err as CrpoError & { cleanDecode?: boolean }).cleanDecode = r.stderr.trim() === '';
    throw err;
  }
  // Expand repeats (n > total) into the requested order.
  const out = new Uint8Array(o.indices.length * frameBytes);
  o.indices.forEach((idx, t) => {
    const slot = slotOfSource.get(idx)!;
    out.set(kept.subarray(slot * frameBytes, (slot + 1) * frameBytes), t * frameBytes);
  });
  return out;
}

/**
 * Decodes every frame at width x height: uint8 [count,H,W,3]. Used when the container's frame
 * count is not what the decoder delivers (edit lists), to sample from the frames that exist.
 */
export async function decodeAllFrames(
  file: string,
  width: number,
  height: number,
  paths: FfmpegPaths = defaultFfmpegPaths(),
): Promise<{ data: Uint8Array; count: number }> {
  checkReadable(file);
  const chunks: Buffer[] = [];
  const args = [
    '-nostdin',
    '-v',
    'error',
    '-noautorotate',
    '-i',
    file,
    '-an',
    '-sn',
    '-vf',
    `scale=${width}:${height}:flags=bilinear`,
    '-fps_mode',
    'passthrough',
    '-f',
    'rawvideo',
    '-pix_fmt',
    'rgb24',
    'pipe:1',
  ];
  const r = await run(paths.ffmpeg, args, (c) => chunks.push(c));
  if (r.code !== 0)
    throw new CrpoError(
      'ERR_CRPO_VIDEO_CORRUPT',
      `cannot decode video ${file} (corrupt or truncated): ${tail(r.stderr)}`,
    );
  const all = Buffer.concat(chunks);
  const frameBytes = width * height * 3;
  const count = Math.floor(all.length / frameBytes);
  if (count < 1) throw new CrpoError('ERR_CRPO_VIDEO_CORRUPT', `video ${file} has no decodable frames`);
  return { data: new Uint8Array(all.buffer, all.byteOffset, count * frameBytes), count };
}

export interface EncodeOptions {
  fps?: number;
  /** libx264 constant rate factor (default 18; 0 = lossless). */
  crf?: number;
  paths?: FfmpegPaths;
}

/**
 * Encodes uint8 [T,H,W,3] frames as an H.264 mp4 (libx264) written atomically (temp + rename).
 * Even sizes use yuv420p (plays everywhere); odd sizes use yuv444p.
 */
export async function encodeMp4(
  file: string,
  frames: Uint8Array,
  shape: readonly [number, number, number, number],
  o: EncodeOptions = {},
): Promise<void> {
  const [T, H, W, C] = shape;
  if (C !== 3 || frames.length !== T * H * W * 3)
    throw new CrpoError(
      'ERR_CRPO_OUT_OF_RANGE',
      `Expected frames of shape [T,H,W,3] with ${T * H * W * 3} bytes for encodeMp4 but received ${frames.length} bytes for shape [${shape.join(',')}]`,
    );
  const paths = o.paths ?? defaultFfmpegPaths();
  const abs = path.resolve(file);
  fs.mkdirSync(path.dirname(abs), { recursive: true });
  const tmp = path.join(
    path.dirname(abs),
    `.${path.basename(abs)}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 8)}.mp4`,
  );
  const pix = H % 2 === 0 && W % 2 === 0 ? 'yuv420p' : 'yuv444p';
  const args = [
    '-nostdin',
    '-v',
    'error',
    '-y',
    '-f',
    'rawvideo',
    '-pix_fmt',
    'rgb24',
    '-s',
    `${W}x${H}`,
    '-r',
    String(o.fps ?? 8),
    '-i',
    'pipe:0',
    '-c:v',
    'libx264',
    '-preset',
    'veryfast',
    '-crf',
    String(o.crf ?? 18),
    '-pix_fmt',
    pix,
    '-movflags',
    '+faststart',
    '-f',
    'mp4',
    tmp,
  ];
  try {
    const r = await run(paths.ffmpeg, args, () => undefined, frames);
    if (r.code !== 0) throw new CrpoError('ERR_CRPO_FFMPEG', `ffmpeg could not encode ${file}: ${tail(r.stderr)}`);
    const fd = fs.openSync(tmp, 'r+');
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fs.renameSync(tmp, abs);
  } finally {
    fs.rmSync(tmp, { force: true });
  }
}
