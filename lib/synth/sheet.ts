/**
 * Contact sheet of synthetic DyBench pairs: one row per pair, the original's frames, a gap, then
 * the partner's frames (the same clip after its counterfactual transform), scaled up 3x with
 * nearest-neighbour so that single pixels stay visible.
 */
import sharp from 'sharp';
import type { SyntheticVideoSpec } from '../data/schema';
import { writeFileAtomic } from '../data/jsonl';
import type { SynthItem } from './index';

export async function writeContactSheet(
  file: string,
  items: readonly SynthItem[],
  scale = 3,
): Promise<{ rows: string[] }> {
  const pairs: [SynthItem, SynthItem][] = [];
  for (let k = 0; k + 1 < items.length; k += 2) pairs.push([items[k], items[k + 1]]);
  if (pairs.length === 0) return { rows: [] };
  const spec = pairs[0][0].record.video as SyntheticVideoSpec;
  const T = spec.frames,
    H = spec.height,
    W = spec.width;
  const pad = 2,
    gap = 12,
    cw = W * scale,
    ch = H * scale;
  const width = pad + 2 * T * (cw + pad) + gap,
    height = pad + pairs.length * (ch + pad);
  const composites: sharp.OverlayOptions[] = [];
  const rows: string[] = [];
  for (let r = 0; r < pairs.length; r++) {
    for (let m = 0; m < 2; m++) {
      const f = pairs[r][m].frames;
      for (let t = 0; t < T; t++) {
        const raw = Buffer.from(f.buffer, f.byteOffset + t * H * W * 3, H * W * 3);
        const png = await sharp(raw, { raw: { width: W, height: H, channels: 3 } })
          .resize(cw, ch, { kernel: 'nearest' })
          .png()
          .toBuffer();
        composites.push({ input: png, left: pad + (m * T + t) * (cw + pad) + m * gap, top: pad + r * (ch + pad) });
      }
    }
    const [a, b] = pairs[r];
    rows.push(
      `${a.record.pair_id}: ${a.record.options[a.record.answer]} | ${b.record.transform}: ${b.record.options[b.record.answer]}`,
    );
  }
  const png = await sharp({ create: { width, height, channels: 3, background: { r: 20, g: 20, b: 20 } } })
    .composite(composites)
    .png()
    .toBuffer();
  await writeFileAtomic(file, png);
  return { rows };
}
