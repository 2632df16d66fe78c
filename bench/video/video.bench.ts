/**
 * Video decoding throughput (lib/video): 8 uniformly sampled frames from a 224x224 H.264 mp4
 * (64 frames, 16 fps) and from a 64-frame PNG folder, one clip at a time and with the reader's
 * bounded concurrency; next to the decode-everything twin (ffmpeg scales and pipes all 64 frames,
 * JS keeps 8) measured in the same run, and a cache hit. Medians of >= 5 runs after warm-up.
 */
import { execFile, execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { VideoReader, decodeVideoFile, probeVideo, uniformIndices, writeFrameDir } from '../../lib/video';
import { describeMachine, fmt, machine, table, timeAsync, writeResults } from '../harness';

const S = 224,
  T = 64,
  N = 8,
  CLIPS = 8;

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-bench-video-'));
  try {
    const mp4 = path.join(dir, 'clip.mp4');
    execFileSync('ffmpeg', [
      '-v',
      'error',
      '-f',
      'lavfi',
      '-i',
      `testsrc2=size=${S}x${S}:rate=16:duration=${T / 16}`,
      '-c:v',
      'libx264',
      '-preset',
      'veryfast',
      '-crf',
      '20',
      '-pix_fmt',
      'yuv420p',
      '-movflags',
      '+faststart',
      mp4,
    ]);
    const mp4s = Array.from({ length: CLIPS }, (_, i) => {
      const f = path.join(dir, `clip${i}.mp4`);
      fs.copyFileSync(mp4, f);
      return f;
    });
    // PNG folder with the same content as the mp4.
    const all = await new VideoReader({ cacheBytes: 0 }).read(mp4);
    const pngDir = path.join(dir, 'png');
    await writeFrameDir(pngDir, all.data, [T, S, S, 3], 'png');
    const jpgDir = path.join(dir, 'jpg');
    await writeFrameDir(jpgDir, all.data, [T, S, S, 3], 'jpg');
    const pngDirs = Array.from({ length: CLIPS }, (_, i) => {
      const d = path.join(dir, `png${i}`);
      fs.cpSync(pngDir, d, { recursive: true });
      return d;
    });

    const rows: (string | number)[][] = [];
    const results: Record<string, { medianMs: number; framesPerS: number }> = {};
    const add = (name: string, ms: number, frames: number, note: string): void => {
      const fps = (frames * 1000) / ms;
      results[name] = { medianMs: ms, framesPerS: fps };
      rows.push([name, fmt(ms), frames ? fmt(fps, 0) : '-', note]);
    };
    const cold = new VideoReader({ cacheBytes: 0, concurrency: 1 });
    const probe = await probeVideo(mp4);
    const idx = uniformIndices(probe.frames, N);

    let t = await timeAsync(
      () =>
        new Promise<void>((resolve, reject) =>
          execFile('ffmpeg', ['-version'], (err) => (err ? reject(err) : resolve())),
        ),
    );
    const spawnMs = t.medianMs;
    add('process start: `ffmpeg -version`', t.medianMs, 0, 'the floor of any ffmpeg call');
    t = await timeAsync(async () => void (await probeVideo(mp4, undefined, 'ffprobe')));
    const ffprobeMs = t.medianMs;
    add('mp4 probe: ffprobe (packet count)', t.medianMs, 0, 'the twin; used for non-MP4 files');
    t = await timeAsync(async () => void (await probeVideo(mp4)), { runs: 20 });
    add(
      'mp4 probe: MP4 header read in-process',
      t.medianMs,
      0,
      `${fmt(ffprobeMs / t.medianMs, 0)}x faster than ffprobe`,
    );
    t = await timeAsync(
      async () => void (await decodeVideoFile(mp4, { indices: idx, width: S, height: S, method: 'all' })),
    );
    const allMs = t.medianMs;
    add("mp4: decode twin 'all' (64 frames piped, 8 kept)", t.medianMs, N, 'reference, no probe');
    t = await timeAsync(
      async () => void (await decodeVideoFile(mp4, { indices: idx, width: S, height: S, method: 'select' })),
    );
    add("mp4: decode 'select' (8 frames piped)", t.medianMs, N, `${fmt(allMs / t.medianMs)}x the twin, no probe`);
    t = await timeAsync(async () => void (await cold.read(mp4, { frames: N })));
    add(
      'mp4: VideoReader.read, 1 clip at a time',
      t.medianMs,
      N,
      `probe + select decode; ${fmt(t.medianMs / spawnMs, 1)}x a bare process start`,
    );
    const par = new VideoReader({ cacheBytes: 0, concurrency: 2 });
    t = await timeAsync(async () => void (await Promise.all(mp4s.map((f) => par.read(f, { frames: N })))), { runs: 5 });
    add(`mp4: VideoReader.read, ${CLIPS} clips, concurrency 2`, t.medianMs / CLIPS, N, 'per clip');
    t = await timeAsync(async () => void (await cold.read(mp4, { frames: N, maxPixels: 112 * 112 })));
    add('mp4: 8 frames resized to 112x112', t.medianMs, N, 'scaled inside ffmpeg');

    t = await timeAsync(async () => void (await cold.read(pngDir, { frames: N })));
    add('PNG folder: VideoReader.read, 1 clip at a time', t.medianMs, N, 'sharp, 4 images in flight');
    t = await timeAsync(async () => void (await Promise.all(pngDirs.map((d) => par.read(d, { frames: N })))), {
      runs: 5,
    });
    add(`PNG folder: ${CLIPS} clips, concurrency 2`, t.medianMs / CLIPS, N, 'per clip');
    t = await timeAsync(async () => void (await cold.read(jpgDir, { frames: N })));
    add('JPEG folder: VideoReader.read, 1 clip at a time', t.medianMs, N, 'quality 92');

    const warm = new VideoReader({ cacheBytes: 64 * 2 ** 20 });
    await warm.read(mp4, { frames: N });
    t = await timeAsync(async () => void (await warm.read(mp4, { frames: N })), { runs: 20 });
    add('LRU cache hit (copy of 1.2 MB)', t.medianMs, N, `${warm.cacheStats.hits} hits`);

    const m = { ...machine(), loadAverage: os.loadavg().map((x) => Math.round(x * 10) / 10) };
    const md = [
      '### Video decoding (`bench/video`)',
      '',
      `Machine: ${describeMachine(m)}; load average ${m.loadAverage.join(', ')} (2 cores). ffmpeg ${execFileSync('ffmpeg', ['-version']).toString().split(' ')[2]}, sharp ${require('sharp/package.json').version}.`,
      '',
      `Clip: ${S}x${S} H.264 mp4 (testsrc2, ${T} frames at 16 fps, yuv420p) and the same ${T} frames as a PNG / JPEG folder; ${N} frames sampled uniformly, uint8 [${N},${S},${S},3] out. Median ms per clip; frames/s = ${N} / time.`,
      '',
      table(['case', 'median ms', 'frames/s', 'note'], rows),
      '',
      "An mp4 read is one ffmpeg process (the MP4 header is read in-process; other containers add an ffprobe process); its start-up is a large part of the time for a short clip, so reading several clips at once (the reader's concurrency) helps. Frame folders need no process. The machine was shared with other jobs while this ran (see the load average): compare rows of the same run, not absolute times across runs. Reproduce: `npm run bench -- video`.",
    ].join('\n');
    writeResults('video', { machine: m, clip: { size: S, frames: T, sampled: N }, results }, md);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(String(err?.stack ?? err) + '\n');
  process.exit(1);
});
