/**
 * Video IO against the system ffmpeg and sharp: probing, uniform sampling, pixel budgets, the
 * select-filter decode against the decode-everything twin, frame folders, the LRU cache and the
 * concurrency bound, and clear errors for missing ffmpeg, missing files, truncated or corrupt
 * mp4 files, corrupt PNG frames and empty folders.
 */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { synthesizeRecords, renderSynthetic } from '../../lib/synth';
import type { SyntheticVideoSpec } from '../../lib/data/schema';
import { VideoReader, decodeAllFrames, decodeVideoFile, encodeMp4, probeVideo, writeFrameDir } from '../../lib/video';
import { spawnSync } from 'child_process';
import { skipIf } from '../helpers/skip';

/** Frame t: flat grey level 16 + 12 t with a white square whose x position encodes t too. */
function markedClip(T: number, H: number, W: number): Uint8Array {
  const out = new Uint8Array(T * H * W * 3);
  for (let t = 0; t < T; t++) {
    out.fill(16 + 12 * t, t * H * W * 3, (t + 1) * H * W * 3);
    const x0 = Math.floor((t * (W - 32)) / Math.max(1, T - 1));
    for (let y = 8; y < 40; y++)
      for (let x = x0; x < x0 + 32; x++) out.fill(255, ((t * H + y) * W + x) * 3, ((t * H + y) * W + x) * 3 + 3);
  }
  return out;
}

/** Mean of the bottom half of frame t (below the square): recovers the grey level. */
function level(data: Uint8Array, t: number, H: number, W: number): number {
  let s = 0,
    n = 0;
  for (let y = Math.floor(H / 2); y < H; y++)
    for (let x = 0; x < W; x++) {
      s += data[((t * H + y) * W + x) * 3];
      n++;
    }
  return s / n;
}

// These tests need the system ffmpeg (scripts/setup.sh installs it); without it they are skipped, and say why.
const HAVE_FFMPEG = spawnSync('ffmpeg', ['-version']).status === 0 && spawnSync('ffprobe', ['-version']).status === 0;
skipIf(!HAVE_FFMPEG && 'ffmpeg/ffprobe not found on PATH; apt-get install ffmpeg').describe('video IO', () => {
  let dir: string;
  const T = 16,
    S = 224;
  let mp4: string;
  let frames: string;
  let clip: Uint8Array;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-video-'));
    clip = markedClip(T, S, S);
    mp4 = path.join(dir, 'clip.mp4');
    await encodeMp4(mp4, clip, [T, S, S, 3], { fps: 8 });
    frames = path.join(dir, 'frames');
    await writeFrameDir(frames, clip, [T, S, S, 3], 'png');
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  describe('video files through ffmpeg', () => {
    test('probe reports size, the real frame count and fps', async () => {
      expect(await probeVideo(mp4)).toEqual({ width: S, height: S, frames: T, fps: 8, codec: 'h264' });
    });

    test('the in-process MP4 header reader agrees with ffprobe; other containers fall back to ffprobe', async () => {
      const files: string[] = [mp4];
      const odd = path.join(dir, 'odd.mp4');
      await encodeMp4(odd, markedClip(5, 33, 47), [5, 33, 47, 3], { fps: 30 });
      files.push(odd);
      const bframes = path.join(dir, 'testsrc.mp4');
      execFileSync('ffmpeg', [
        '-v',
        'error',
        '-y',
        '-f',
        'lavfi',
        '-i',
        'testsrc2=size=96x64:rate=25:duration=1.2',
        '-c:v',
        'libx264',
        '-bf',
        '3',
        '-pix_fmt',
        'yuv420p',
        bframes,
      ]);
      files.push(bframes);
      const late = path.join(dir, 'moov-last.mp4');
      execFileSync('ffmpeg', ['-v', 'error', '-y', '-i', mp4, '-c', 'copy', late]);
      files.push(late);
      const mkv = path.join(dir, 'clip.mkv');
      execFileSync('ffmpeg', ['-v', 'error', '-y', '-i', mp4, '-c', 'copy', mkv]);
      files.push(mkv);
      for (const f of files) {
        const fast = await probeVideo(f);
        const slow = await probeVideo(f, undefined, 'ffprobe');
        expect({ f, ...fast, fps: Math.round(fast.fps * 1000) / 1000 }).toEqual({
          f,
          ...slow,
          fps: Math.round(slow.fps * 1000) / 1000,
        });
      }
      expect((await probeVideo(bframes)).frames).toBe(30);
    });

    test('uniform sampling picks the centre frame of each slice, in order', async () => {
      const r = new VideoReader({ cacheBytes: 0 });
      const v = await r.read(mp4, { frames: 4 });
      expect(v.indices).toEqual([2, 6, 10, 14]);
      expect(v.shape).toEqual([4, S, S, 3]);
      v.indices.forEach((src, t) => expect(Math.abs(level(v.data, t, S, S) - (16 + 12 * src))).toBeLessThan(3));
    });

    test("the select filter gives the same bytes as decoding every frame ('all' twin)", async () => {
      for (const indices of [[0, 5, 9, 15], [3, 3, 4], [15]]) {
        const a = await decodeVideoFile(mp4, { indices, width: 64, height: 48, method: 'select' });
        const b = await decodeVideoFile(mp4, { indices, width: 64, height: 48, method: 'all' });
        expect(Buffer.compare(Buffer.from(a), Buffer.from(b))).toBe(0);
        expect(a.length).toBe(indices.length * 64 * 48 * 3);
      }
    });

    test('a pixel budget scales down keeping the aspect ratio; exact sizes are honoured', async () => {
      const r = new VideoReader({ cacheBytes: 0 });
      expect((await r.read(mp4, { frames: 2, maxPixels: 112 * 112 })).shape).toEqual([2, 112, 112, 3]);
      expect((await r.read(mp4, { frames: 2, maxPixels: 100 * 100, multiple: 28 })).shape).toEqual([2, 84, 84, 3]);
      expect((await r.read(mp4, { frames: 2, width: 40, height: 30 })).shape).toEqual([2, 30, 40, 3]);
      expect((await r.read(mp4, { frames: 2, maxPixels: 10 ** 6 })).shape).toEqual([2, S, S, 3]);
    });

    test('more frames than the clip has repeat frames', async () => {
      const v = await new VideoReader({ cacheBytes: 0 }).read(mp4, { frames: 20, width: 32, height: 32 });
      expect(v.indices.length).toBe(20);
      expect(new Set(v.indices).size).toBe(T);
    });

    test('errors: missing file, missing ffmpeg, a text file, truncated mp4 (moov first and moov last)', async () => {
      const r = new VideoReader({ cacheBytes: 0 });
      await expect(r.read(path.join(dir, 'none.mp4'))).rejects.toThrow(
        `video not found: ${path.join(dir, 'none.mp4')}`,
      );
      const noFfmpeg = new VideoReader({ ffmpeg: { ffmpeg: '/nonexistent/ffmpeg', ffprobe: '/nonexistent/ffprobe' } });
      await expect(noFfmpeg.read(mp4)).rejects.toMatchObject({
        code: 'ERR_CRPO_FFMPEG_MISSING',
        message: expect.stringContaining('apt-get install ffmpeg'),
      });
      await expect(
        decodeVideoFile(mp4, {
          indices: [0],
          width: 8,
          height: 8,
          paths: { ffmpeg: '/nonexistent/ffmpeg', ffprobe: 'x' },
        }),
      ).rejects.toMatchObject({ code: 'ERR_CRPO_FFMPEG_MISSING' });
      const text = path.join(dir, 'notes.mp4');
      fs.writeFileSync(text, 'this is not a video\n');
      await expect(r.read(text)).rejects.toMatchObject({
        code: 'ERR_CRPO_VIDEO_CORRUPT',
        message: expect.stringContaining(text),
      });
      fs.writeFileSync(path.join(dir, 'empty.mp4'), '');
      await expect(r.read(path.join(dir, 'empty.mp4'))).rejects.toThrow(/video file is empty/);

      // moov first (faststart): the header survives, the tail of the frame data is gone.
      const bytes = fs.readFileSync(mp4);
      const cut = path.join(dir, 'cut.mp4');
      fs.writeFileSync(cut, bytes.subarray(0, Math.floor(bytes.length * 0.6)));
      const err = await r.read(cut, { frames: 16 }).then(
        () => undefined,
        (e: unknown) => e as { code: string; message: string },
      );
      expect(err).toBeDefined();
      expect(err!.code).toBe('ERR_CRPO_VIDEO_TRUNCATED');
      expect(err!.message).toBe(`video ${cut} is truncated: its data ends before the ${T} frames its header lists`);
      // The ffprobe twin finds it too, by counting the packets really present.
      const viaFfprobe = new VideoReader({ cacheBytes: 0, probe: 'ffprobe' });
      await expect(viaFfprobe.read(cut, { frames: 16 })).rejects.toMatchObject({
        code: 'ERR_CRPO_VIDEO_TRUNCATED',
        message: expect.stringMatching(
          new RegExp(`video ${cut} is truncated: its header lists ${T} frames, the file holds \\d+`),
        ),
      });

      // moov last: nothing can be read.
      const late = path.join(dir, 'late.mp4');
      execFileSync('ffmpeg', ['-v', 'error', '-y', '-i', mp4, '-c', 'copy', '-movflags', '-faststart', late]);
      const lb = fs.readFileSync(late);
      fs.writeFileSync(late, lb.subarray(0, Math.floor(lb.length * 0.8)));
      await expect(r.read(late)).rejects.toMatchObject({
        code: 'ERR_CRPO_VIDEO_CORRUPT',
        message: expect.stringContaining('corrupt, truncated or not a video'),
      });
    });

    test('a stream-copied cut (edit list hides leading samples) samples from the frames that really decode', async () => {
      const g = path.join(dir, 'gop.mp4');
      execFileSync('ffmpeg', [
        '-v',
        'error',
        '-y',
        '-f',
        'lavfi',
        '-i',
        'testsrc2=size=96x64:rate=10:duration=4',
        '-c:v',
        'libx264',
        '-g',
        '20',
        '-pix_fmt',
        'yuv420p',
        g,
      ]);
      const cut = path.join(dir, 'gop-cut.mp4');
      execFileSync('ffmpeg', ['-v', 'error', '-y', '-ss', '0.55', '-i', g, '-c', 'copy', cut]);
      const p = await probeVideo(cut);
      const all = await decodeAllFrames(cut, 96, 64);
      expect(all.count).toBeLessThan(p.frames); // the container lists more samples than decode
      const v = await new VideoReader({ cacheBytes: 0 }).read(cut, { frames: 8 });
      expect(v.sourceFrames).toBe(all.count);
      const F = 96 * 64 * 3;
      v.indices.forEach((src, t) =>
        expect(
          Buffer.compare(
            Buffer.from(v.data.subarray(t * F, (t + 1) * F)),
            Buffer.from(all.data.subarray(src * F, (src + 1) * F)),
          ),
        ).toBe(0),
      );
    });

    test('asking the decoder for a frame beyond the end is reported as truncated', async () => {
      await expect(decodeVideoFile(mp4, { indices: [2, 40], width: 16, height: 16 })).rejects.toMatchObject({
        code: 'ERR_CRPO_VIDEO_TRUNCATED',
        message: expect.stringContaining('frame 40 was asked for'),
      });
    });
  });

  describe('frame folders through sharp', () => {
    test('PNG frames read back bit-exact, sampled uniformly, in natural order', async () => {
      const v = await new VideoReader({ cacheBytes: 0 }).read(frames, { frames: 8 });
      expect(v.kind).toBe('frames');
      expect(v.indices).toEqual([1, 3, 5, 7, 9, 11, 13, 15]);
      const F = S * S * 3;
      v.indices.forEach((src, t) =>
        expect(
          Buffer.compare(
            Buffer.from(v.data.subarray(t * F, (t + 1) * F)),
            Buffer.from(clip.subarray(src * F, (src + 1) * F)),
          ),
        ).toBe(0),
      );
      // Natural sort: frame_2 before frame_10 when names are not zero-padded.
      const nat = path.join(dir, 'natural');
      fs.mkdirSync(nat);
      for (const t of [0, 1, 2, 10])
        fs.copyFileSync(path.join(frames, `frame_${String(t).padStart(3, '0')}.png`), path.join(nat, `f${t}.png`));
      const n = await new VideoReader({ cacheBytes: 0 }).read(nat, { width: 32, height: 32 });
      expect([0, 1, 2, 3].map((t) => Math.round(level(n.data, t, 32, 32)))).toEqual([16, 28, 40, 136]);
    });

    test('JPEG frames and grey/alpha PNGs decode to 3 channels', async () => {
      const jdir = path.join(dir, 'jpg');
      await writeFrameDir(jdir, clip.subarray(0, 2 * S * S * 3), [2, S, S, 3], 'jpg');
      const j = await new VideoReader({ cacheBytes: 0 }).read(jdir, { maxPixels: 56 * 56 });
      expect(j.shape).toEqual([2, 56, 56, 3]);
      const g = path.join(dir, 'grey');
      fs.mkdirSync(g);
      const sharp = (await import('sharp')).default;
      await sharp({ create: { width: 10, height: 6, channels: 4, background: { r: 10, g: 200, b: 30, alpha: 0.5 } } })
        .png()
        .toFile(path.join(g, 'a.png'));
      await sharp(Buffer.alloc(60, 99), { raw: { width: 10, height: 6, channels: 1 } })
        .png()
        .toFile(path.join(g, 'b.png'));
      const v = await new VideoReader({ cacheBytes: 0 }).read(g);
      expect(v.shape).toEqual([2, 6, 10, 3]);
      expect(Array.from(v.data.subarray(60 * 3, 60 * 3 + 3))).toEqual([99, 99, 99]);
    });

    test('errors: a corrupt PNG names the file; an empty folder; a missing folder', async () => {
      const bad = path.join(dir, 'bad');
      await writeFrameDir(bad, clip.subarray(0, 3 * S * S * 3), [3, S, S, 3]);
      const victim = path.join(bad, 'frame_001.png');
      const png = fs.readFileSync(victim);
      fs.writeFileSync(victim, png.subarray(0, 100)); // truncated PNG
      await expect(new VideoReader().read(bad)).rejects.toMatchObject({
        code: 'ERR_CRPO_IMAGE_CORRUPT',
        message: expect.stringContaining(victim),
      });
      fs.writeFileSync(victim, Buffer.from('garbage, not a png at all'));
      await expect(new VideoReader().read(bad)).rejects.toMatchObject({
        code: 'ERR_CRPO_IMAGE_CORRUPT',
        message: expect.stringContaining(victim),
      });
      const empty = path.join(dir, 'empty');
      fs.mkdirSync(empty);
      fs.writeFileSync(path.join(empty, 'readme.txt'), 'x');
      await expect(new VideoReader().read(empty)).rejects.toThrow(
        `frames directory has no .png/.jpg/.jpeg images: ${empty}`,
      );
      await expect(new VideoReader().read(path.join(dir, 'no-such-folder'))).rejects.toThrow(
        `video not found: ${path.join(dir, 'no-such-folder')}`,
      );
    });
  });

  describe('VideoReader', () => {
    test('cache: a second read is a hit, returns an independent copy, and concurrent reads share one decode', async () => {
      const r = new VideoReader({ cacheBytes: 64 * 1024 * 1024 });
      const [a, b] = await Promise.all([r.read(mp4, { frames: 3 }), r.read(mp4, { frames: 3 })]);
      expect(r.cacheStats.entries).toBe(1);
      a.data.fill(0);
      const c = await r.read(mp4, { frames: 3 });
      expect(r.cacheStats.hits).toBe(1);
      expect(Buffer.compare(Buffer.from(b.data), Buffer.from(c.data))).toBe(0);
      expect(c.data.some((x) => x !== 0)).toBe(true);
      await r.read(mp4, { frames: 2 }); // different options: a different entry
      expect(r.cacheStats.entries).toBe(2);
    });

    test('no more decodes run at once than the concurrency bound', async () => {
      const copies = [0, 1, 2, 3, 4, 5].map((i) => {
        const f = path.join(dir, `copy${i}.mp4`);
        fs.copyFileSync(mp4, f);
        return f;
      });
      const r = new VideoReader({ concurrency: 2, cacheBytes: 0 });
      const out = await Promise.all(copies.map((f) => r.read(f, { frames: 8 })));
      expect(out.every((v) => v.shape[0] === 8)).toBe(true);
      expect(r.peakConcurrency).toBe(2);
    });

    test('inline synthetic specs read as rendered, with sampling and resizing', async () => {
      const rec = synthesizeRecords({ split: 'test', pairs: 1, seed: 5, categories: ['moving_direction'] })[1];
      const spec = rec.video as SyntheticVideoSpec;
      const v = await new VideoReader().read(spec);
      expect(Buffer.compare(Buffer.from(v.data), Buffer.from(renderSynthetic(spec)))).toBe(0);
      const small = await new VideoReader().read(spec, { frames: 4, width: 16, height: 16 });
      expect(small.shape).toEqual([4, 16, 16, 3]);
      expect(small.indices).toEqual([1, 3, 5, 7]);
    });

    test('bad options get the standard message', async () => {
      await expect(new VideoReader().read(mp4, { frames: 0 })).rejects.toThrow(
        'Expected an integer >= 1 for frames but received 0 of type number',
      );
      await expect(new VideoReader().read(mp4, { width: 10 })).rejects.toThrow(
        'Expected both width and height, or neither for height but received 10 of type number',
      );
      expect(() => new VideoReader({ concurrency: 0 })).toThrow(
        'Expected an integer >= 1 for concurrency but received 0 of type number',
      );
    });
  });
});
