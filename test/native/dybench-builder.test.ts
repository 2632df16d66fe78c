/**
 * `crpo dybench build` end to end on small clips made here (mp4 through ffmpeg, PNG folders
 * through sharp): partners are the original passed through the transform (exact for frame
 * folders, checked against the naive reference), answers are remapped, the JSONL loads
 * strictly, bad annotations are all listed at once, a transform that keeps a dynamic answer is
 * refused, and a rerun skips finished pairs.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { main } from '../../lib/cli/main';
import { referenceTransform } from '../../lib/counterfactual';
import { loadRecords } from '../../lib/data/loader';
import { buildDyBench, planBuild } from '../../lib/dybench/builder';
import { renderScene, type Scene } from '../../lib/synth';
import { VideoReader, encodeMp4, writeFrameDir } from '../../lib/video';
import { spawnSync } from 'child_process';
import { skipIf } from '../helpers/skip';

// These tests need the system ffmpeg (scripts/setup.sh installs it); without it they are skipped, and say why.
const HAVE_FFMPEG = spawnSync('ffmpeg', ['-version']).status === 0 && spawnSync('ffprobe', ['-version']).status === 0;
skipIf(!HAVE_FFMPEG && 'ffmpeg/ffprobe not found on PATH; apt-get install ffmpeg').describe('dybench builder', () => {
  const T = 12,
    H = 48,
    W = 64;
  const scene = (objects: Scene['objects']): Scene => ({ version: 1, background: 'gray', objects });
  const sq = (
    x0: number,
    y0: number,
    x1: number,
    y1: number,
    s0 = 0.3,
    s1 = s0,
    visible?: [number, number],
  ): Scene['objects'][number] => ({
    shape: 'square',
    color: 'red',
    from: { x: x0, y: y0, size: s0 },
    to: { x: x1, y: y1, size: s1 },
    ...(visible ? { visible } : {}),
  });

  /** Centroid x of non-background pixels in frame t. */
  function cx(d: Uint8Array, t: number, h: number, w: number): number {
    let s = 0,
      n = 0;
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++) {
        const p = ((t * h + y) * w + x) * 3;
        if (d[p] > 150 && d[p + 1] < 110) {
          s += x;
          n++;
        }
      }
    return s / n;
  }

  let dir: string;
  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-build-'));
    const clips = path.join(dir, 'clips');
    await encodeMp4(
      path.join(clips, 'right.mp4'),
      renderScene(scene([sq(0.2, 0.5, 0.8, 0.5)]), T, H, W),
      [T, H, W, 3],
      { fps: 12 },
    );
    await writeFrameDir(path.join(clips, 'up'), renderScene(scene([sq(0.5, 0.8, 0.5, 0.2)]), T, H, W), [T, H, W, 3]);
    await writeFrameDir(path.join(clips, 'grow'), renderScene(scene([sq(0.5, 0.5, 0.5, 0.5, 0.1, 0.7)]), T, H, W), [
      T,
      H,
      W,
      3,
    ]);
    const events = scene([
      sq(0.3, 0.5, 0.3, 0.5, 0.4, 0.4, [0, 5 / 12]),
      { ...sq(0.7, 0.5, 0.7, 0.5, 0.4, 0.4, [5 / 12, 1]), shape: 'circle', color: 'blue' },
    ]);
    await encodeMp4(path.join(clips, 'events.mp4'), renderScene(events, T, H, W), [T, H, W, 3], { fps: 12 });
    await writeFrameDir(path.join(clips, 'still'), renderScene(scene([sq(0.4, 0.5, 0.6, 0.5)]), T, H, W), [T, H, W, 3]);
    const ann = [
      {
        clip: 'clips/right.mp4',
        question: 'Which way does the square move?',
        options: ['left', 'right', 'up', 'down'],
        answer: 'right',
        category: 'moving_direction',
      },
      {
        clip: 'clips/up',
        question: 'Which way does the square move?',
        options: ['left', 'right', 'up', 'down'],
        answer: 'C',
        category: 'moving_direction',
      },
      {
        clip: 'clips/grow',
        question: 'What happens to the square?',
        options: ['It grows', 'It shrinks', 'It stays the same size'],
        answer: 0,
        category: 'reversible_dynamics',
      },
      {
        clip: 'clips/events.mp4',
        id: 'ev1',
        question: 'Which appears first?',
        options: ['the circle', 'the square'],
        answer: 'the square',
        category: 'event_sequence',
        swap_at_seconds: 5 / 12,
      },
      {
        clip: 'clips/still',
        question: 'What colour is the square?',
        options: ['red', 'green', 'blue', 'yellow'],
        answer: 'red',
        category: 'static',
        transform: 'hflip',
      },
    ];
    fs.writeFileSync(path.join(dir, 'ann.jsonl'), ann.map((a) => JSON.stringify(a)).join('\n') + '\n');
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  describe('dybench build', () => {
    test('frame folders: partners are exactly the transformed originals, answers remapped', async () => {
      const out = path.join(dir, 'out-frames');
      const r = await buildDyBench({ annotations: path.join(dir, 'ann.jsonl'), out, format: 'frames' });
      expect(r).toMatchObject({ pairs: 5, built: 5, skipped: 0 });
      const recs = (await loadRecords(r.jsonl, { checkFiles: true })).records;
      expect(recs.map((x) => `${x.id}:${x.transform}:${x.options[x.answer]}`)).toEqual([
        'right:none:right',
        'right-hflip:hflip:left',
        'up:none:up',
        'up-reverse:reverse:down',
        'grow:none:It grows',
        'grow-reverse:reverse:It shrinks',
        'ev1:none:the square',
        'ev1-swap:swap:the circle',
        'still:none:red',
        'still-hflip:hflip:red',
      ]);
      expect(recs[7].meta).toMatchObject({ swap_at: 5, clip: 'clips/events.mp4' });
      const reader = new VideoReader({ cacheBytes: 0 });
      for (let k = 0; k < recs.length; k += 2) {
        const a = await reader.read(recs[k].video),
          b = await reader.read(recs[k + 1].video);
        const swapAt = (recs[k + 1].meta as { swap_at?: number }).swap_at ?? 0;
        const want = referenceTransform(
          a.data,
          [1, ...a.shape],
          'BTHWC',
          recs[k + 1].transform as 'hflip',
          swapAt,
        ) as Uint8Array;
        expect(Buffer.compare(Buffer.from(b.data), Buffer.from(want))).toBe(0);
      }
      // The source mp4's square moved right; its hflip partner moves left.
      const right = await reader.read(recs[1].video);
      expect(cx(right.data, T - 1, H, W)).toBeLessThan(cx(right.data, 0, H, W) - 20);
    });

    test('mp4 output through the CLI, sampling 6 frames; a rerun skips finished pairs', async () => {
      const out = path.join(dir, 'out-mp4');
      const write = jest.spyOn(process.stdout, 'write').mockImplementation(() => true);
      process.exitCode = undefined;
      await main(['dybench', 'build', '--annotations', path.join(dir, 'ann.jsonl'), '--out', out, '--frames', '6']);
      expect(process.exitCode).toBeUndefined();
      expect(String(write.mock.calls.at(-1)?.[0])).toContain('5 pairs (5 built, 0 already present)');
      await main(['dybench', 'build', '--annotations', path.join(dir, 'ann.jsonl'), '--out', out, '--frames', '6']);
      expect(String(write.mock.calls.at(-1)?.[0])).toContain('5 pairs (0 built, 5 already present)');
      write.mockRestore();
      const recs = (await loadRecords(path.join(out, 'dybench.jsonl'), { checkFiles: true })).records;
      expect(recs).toHaveLength(10);
      const reader = new VideoReader({ cacheBytes: 0 });
      const a = await reader.read(recs[0].video),
        b = await reader.read(recs[1].video);
      expect(a.shape).toEqual([6, H, W, 3]);
      expect(cx(a.data, 5, H, W)).toBeGreaterThan(cx(a.data, 0, H, W) + 15);
      expect(cx(b.data, 5, H, W)).toBeLessThan(cx(b.data, 0, H, W) - 15);
      // Lossy, but the partner is the transformed original up to compression noise.
      const want = referenceTransform(a.data, [1, ...a.shape], 'BTHWC', 'hflip') as Uint8Array;
      let diff = 0;
      for (let i = 0; i < want.length; i++) diff += Math.abs(want[i] - b.data[i]);
      expect(diff / want.length).toBeLessThan(4);
      // Event boundary at 5/12 s in a 12 fps clip: source frame 5; of the 6 sampled frames (1,3,5,7,9,11) two lie before it.
      expect(recs[7].meta).toMatchObject({ swap_at: 2 });
    });

    test('every bad annotation is listed at once; refused transforms say why', () => {
      const bad = [
        {
          clip: 'clips/up',
          question: 'Which way?',
          options: ['left', 'right', 'up', 'down'],
          answer: 'up',
          category: 'moving_direction',
          transform: 'hflip',
        },
        {
          clip: 'clips/grow',
          question: 'What happens?',
          options: ['A thing', 'Another thing', 'Nothing'],
          answer: 0,
          category: 'reversible_dynamics',
        },
        {
          clip: 'clips/still',
          question: 'Where is it?',
          options: ['left', 'right'],
          answer: 'left',
          category: 'static',
          transform: 'hflip',
          answers: { hflip: 'right' },
        },
        { clip: 'clips/events.mp4', question: 'First?', options: ['a', 'b'], answer: 'a', category: 'event_sequence' },
        {
          clip: 'clips/right.mp4',
          question: 'Which way?',
          options: ['left', 'right', 'up'],
          answer: 'right',
          category: 'moving_direction',
        },
        {
          clip: 'clips/right.mp4',
          question: 'Which way?',
          options: ['left', 'right', 'up', 'down'],
          answer: 'east',
          category: 'moving_direction',
        },
        {
          clip: 'clips/grow',
          question: 'q',
          options: ['x', 'y', 'z'],
          answer: 0,
          category: 'reversible_dynamics',
          transform: 'hflip',
          colour: 'red',
        },
      ];
      const f = path.join(dir, 'bad.jsonl');
      fs.writeFileSync(f, bad.map((a) => JSON.stringify(a)).join('\n') + '\n');
      let msg = '';
      try {
        planBuild({ annotations: f, out: path.join(dir, 'x') });
      } catch (e) {
        msg = (e as Error).message;
      }
      expect(msg).toContain(
        `${f}:1:transform: hflip would not change the answer ('up' stays 'up'); a moving_direction pair needs a transform that changes it (up/down and toward/away change only under reverse)`,
      );
      expect(msg).toContain(
        `${f}:2:answers.reverse: cannot derive the answer under reverse from the options; give it, e.g. "answers": {"reverse": "<option>"}`,
      );
      expect(msg).toContain(
        `${f}:3:answers.hflip: a static question keeps its answer under hflip, but the answer changes to 'right'`,
      );
      expect(msg).toContain(
        `${f}:4:swap_at: expected the segment boundary (swap_at frame index or swap_at_seconds) for a segment swap`,
      );
      expect(msg).toContain(`${f}:5:options: expected 4 options for category moving_direction, received 3`);
      expect(msg).toContain(
        `${f}:6:answer: expected an option text, a letter or an index, 'east' is none of the 4 options`,
      );
      expect(msg).toContain(`${f}:7:colour: unknown field (colour)`);
      expect(msg.split('\n')[0]).toBe(`${f}: 7 bad lines:`);
    });

    test('annotations as a JSON array plan the same pairs as JSONL', () => {
      const lines = fs
        .readFileSync(path.join(dir, 'ann.jsonl'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
      fs.writeFileSync(path.join(dir, 'ann.json'), JSON.stringify(lines, null, 2));
      const a = planBuild({ annotations: path.join(dir, 'ann.jsonl'), out: 'x' }).map((p) => [
        p.id,
        p.transform,
        p.answer,
        p.partnerAnswer,
      ]);
      const b = planBuild({ annotations: path.join(dir, 'ann.json'), out: 'x' }).map((p) => [
        p.id,
        p.transform,
        p.answer,
        p.partnerAnswer,
      ]);
      expect(b).toEqual(a);
      expect(a).toEqual([
        ['right', 'hflip', 1, 0],
        ['up', 'reverse', 2, 3],
        ['grow', 'reverse', 0, 1],
        ['ev1', 'swap', 1, 0],
        ['still', 'hflip', 0, 0],
      ]);
    });

    test('a missing clip names the annotation line', async () => {
      const f = path.join(dir, 'missing.jsonl');
      fs.writeFileSync(
        f,
        JSON.stringify({
          clip: 'clips/nope.mp4',
          question: 'q',
          options: ['left', 'right', 'up', 'down'],
          answer: 'left',
          category: 'moving_direction',
        }) + '\n',
      );
      await expect(buildDyBench({ annotations: f, out: path.join(dir, 'y') })).rejects.toThrow(
        `${f}:1:clip: video not found: ${path.join(dir, 'clips/nope.mp4')}`,
      );
      await expect(
        buildDyBench({ annotations: path.join(dir, 'none.jsonl'), out: path.join(dir, 'y') }),
      ).rejects.toThrow(`annotation file not found: ${path.join(dir, 'none.jsonl')}`);
    });
  });
});
