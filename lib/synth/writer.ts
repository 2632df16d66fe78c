/**
 * Writes a synthetic DyBench split to disk (`crpo synth`): `<out>/<split>.jsonl` plus, unless
 * frames are turned off, one PNG folder per clip under `<out>/frames/<split>/<id>/`. A record's
 * `video` is always the inline spec (the JSONL alone reproduces every pixel); with frames,
 * `meta.frames_dir` names the clip's folder (relative to the JSONL) for tools that read images.
 * Frame folders and the JSONL are written atomically; a rerun skips folders already complete.
 */
import * as fs from 'fs';
import * as path from 'path';
import { writeFileAtomic, writeJsonlAtomic } from '../data/jsonl';
import type { DyBenchRecord, SyntheticVideoSpec } from '../data/schema';
import { writeFrameDir } from '../video/frames-dir';
import { synthesizeStream, type SynthItem, type SynthOptions } from './index';
import { writeContactSheet } from './sheet';

export interface WriteSynthOptions extends SynthOptions {
  out: string;
  /** Write PNG/JPEG frame folders (default true). */
  writeFrames?: boolean;
  format?: 'png' | 'jpg';
  /** With frames: write <out>/<split>-sheet.png (first 3 pairs of each category) and its row legend (default true). */
  sheet?: boolean;
  /** Progress callback, called after each pair. */
  onProgress?: (done: number, total: number) => void;
}

export interface WriteSynthResult {
  jsonl: string;
  records: number;
  pairs: number;
  framesWritten: number;
  framesSkipped: number;
  /** Contact sheet and its legend, when written. */
  sheet?: string;
}

export async function writeSynthetic(o: WriteSynthOptions): Promise<WriteSynthResult> {
  const writeFrames = o.writeFrames ?? true;
  const format = o.format ?? 'png';
  const records: DyBenchRecord[] = [];
  let framesWritten = 0,
    framesSkipped = 0;
  const cats = o.categories?.length ?? 4;
  const total = o.pairs * cats * 2;
  // Frame folders are written 8 at a time (sharp encodes off the main thread).
  let batch: Promise<void>[] = [];
  const forSheet: SynthItem[] = [];
  for (const item of synthesizeStream(o)) {
    const r = item.record;
    if (Number(r.pair_id.slice(-5)) < 3) forSheet.push(item);
    if (writeFrames) {
      const spec = r.video as SyntheticVideoSpec;
      const rel = path.join('frames', o.split, r.id);
      const dir = path.join(o.out, rel);
      // Folders are renamed into place complete, so an existing one with T frames is done.
      const done =
        fs.existsSync(dir) && fs.readdirSync(dir).filter((n) => n.endsWith(`.${format}`)).length === spec.frames;
      if (done) framesSkipped++;
      else {
        batch.push(
          writeFrameDir(dir, item.frames, [spec.frames, spec.height, spec.width, 3], format).then(
            () => void framesWritten++,
          ),
        );
        if (batch.length >= 8) {
          await Promise.all(batch);
          batch = [];
        }
      }
      records.push({ ...r, meta: { ...(r.meta ?? {}), frames_dir: rel.split(path.sep).join('/') } });
    } else {
      records.push(r);
    }
    if (records.length % 2 === 0) o.onProgress?.(records.length, total);
  }
  await Promise.all(batch);
  const jsonl = path.join(o.out, `${o.split}.jsonl`);
  await writeJsonlAtomic(jsonl, records);
  const { out: _out, onProgress: _p, sheet: _s, ...config } = o;
  await writeFileAtomic(
    path.join(o.out, `${o.split}.config.json`),
    JSON.stringify({ ...config, writeFrames, format, records: records.length }, null, 2) + '\n',
  );
  let sheet: string | undefined;
  if ((o.sheet ?? true) && writeFrames) {
    sheet = path.join(o.out, `${o.split}-sheet.png`);
    const { rows } = await writeContactSheet(sheet, forSheet);
    await writeFileAtomic(
      path.join(o.out, `${o.split}-sheet.txt`),
      `Rows of ${path.basename(sheet)}: original frames | partner frames\n${rows.map((r, i) => `${i + 1}. ${r}`).join('\n')}\n`,
    );
  }
  return { jsonl, records: records.length, pairs: records.length / 2, framesWritten, framesSkipped, sheet };
}
