/**
 * The counterfactual demo: renders a small clip (a red square moving right while a blue bar grows),
 * applies every counterfactual transform on each available addon, checks each result against the
 * naive reference, and writes the frames as PNG plus one contact sheet (rows = transforms).
 */
import * as fs from 'fs';
import * as path from 'path';
import sharp from 'sharp';
import { CrpoError } from '../errors';
import { hasAddon, type AddonName } from '../native';
import { referenceTransform } from './reference';
import { VIDEO_TRANSFORMS, transformFrames } from './index';

/** A [1,T,H,W,3] uint8 clip with motion to the right, growth, and a static green corner. */
export function renderDemoClip(T = 8, H = 64, W = 64): Uint8Array {
  const clip = new Uint8Array(T * H * W * 3).fill(235);
  for (let t = 0; t < T; t++) {
    const base = t * H * W * 3;
    const set = (y: number, x: number, rgb: [number, number, number]): void => {
      if (x < 0 || y < 0 || x >= W || y >= H) return;
      clip.set(rgb, base + (y * W + x) * 3);
    };
    const size = Math.max(4, Math.round(H / 6));
    const x0 = Math.round(((W - size) * t) / Math.max(1, T - 1));
    for (let y = Math.round(H / 3); y < Math.round(H / 3) + size; y++)
      for (let x = x0; x < x0 + size; x++) set(y, x, [220, 40, 40]);
    const bar = Math.round(((W - 8) * (t + 1)) / T);
    for (let y = H - 10; y < H - 4; y++) for (let x = 4; x < 4 + bar; x++) set(y, x, [40, 70, 220]);
    for (let y = 2; y < 8; y++) for (let x = 2; x < 8; x++) set(y, x, [40, 170, 60]);
  }
  return clip;
}

export interface DemoResult {
  outDir: string;
  sheet: string;
  checks: { addon: AddonName; transform: string; matchesReference: boolean }[];
}

export async function runCounterfactualDemo(
  outDir: string,
  log: (s: string) => void = () => undefined,
): Promise<DemoResult> {
  const T = 8,
    H = 64,
    W = 64;
  const clip = renderDemoClip(T, H, W);
  const shape = [1, T, H, W, 3];
  fs.mkdirSync(outDir, { recursive: true });
  const addons: AddonName[] = (['core', 'torch'] as AddonName[]).filter(hasAddon);
  if (addons.length === 0)
    throw new CrpoError('ERR_CRPO_ADDON_MISSING', 'no native addon could be loaded; run `crpo doctor` for the fix');
  const rows: { name: string; frames: Uint8Array }[] = [{ name: 'original', frames: clip }];
  const checks: DemoResult['checks'] = [];
  for (const transform of VIDEO_TRANSFORMS) {
    const swapAt = transform === 'swap' ? T / 2 : undefined;
    const expected = referenceTransform(clip, shape, 'BTHWC', transform, swapAt ?? 0) as Uint8Array;
    let first: Uint8Array | undefined;
    for (const addon of addons) {
      const out = (await transformFrames(clip, { shape, transform, swapAt, backend: addon })) as Uint8Array;
      const ok =
        Buffer.compare(Buffer.from(out.buffer, out.byteOffset, out.byteLength), Buffer.from(expected.buffer)) === 0;
      checks.push({ addon, transform, matchesReference: ok });
      log(
        `  ${transform.padEnd(14)} ${addon.padEnd(6)} ${ok ? 'matches the reference' : 'DIFFERS from the reference'}`,
      );
      first ??= out;
    }
    rows.push({ name: transform, frames: first! });
  }
  const frameBytes = H * W * 3;
  const pad = 2;
  const composites: sharp.OverlayOptions[] = [];
  for (let r = 0; r < rows.length; r++) {
    const dir = path.join(outDir, rows[r].name.replace('+', '_'));
    fs.mkdirSync(dir, { recursive: true });
    for (let t = 0; t < T; t++) {
      const raw = Buffer.from(rows[r].frames.buffer, rows[r].frames.byteOffset + t * frameBytes, frameBytes);
      const png = await sharp(raw, { raw: { width: W, height: H, channels: 3 } })
        .png()
        .toBuffer();
      fs.writeFileSync(path.join(dir, `frame_${String(t).padStart(3, '0')}.png`), png);
      composites.push({ input: png, left: pad + t * (W + pad), top: pad + r * (H + pad) });
    }
  }
  const sheet = path.join(outDir, 'contact-sheet.png');
  await sharp({
    create: {
      width: pad + T * (W + pad),
      height: pad + rows.length * (H + pad),
      channels: 3,
      background: { r: 30, g: 30, b: 30 },
    },
  })
    .composite(composites)
    .png()
    .toFile(sheet);
  return { outDir, sheet, checks };
}
