/**
 * Frame directories: a folder of JPEG/PNG images, one per frame, ordered by natural sort of the
 * file names (frame_2 before frame_10). Decoded and resized with sharp; written as PNG or JPEG.
 */
import * as fs from 'fs';
import * as path from 'path';
import sharp from 'sharp';
import { CrpoError } from '../errors';

export const FRAME_EXTENSIONS = ['.png', '.jpg', '.jpeg'];

const collator = new Intl.Collator('en', { numeric: true, sensitivity: 'base' });

/** Image files of a frames directory in frame order. */
export function listFrameFiles(dir: string): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new CrpoError('ERR_CRPO_NOT_FOUND', `frames directory not found: ${dir}`);
    if (code === 'ENOTDIR')
      throw new CrpoError('ERR_CRPO_BAD_PATH', `expected a frames directory, found a file: ${dir}`);
    throw new CrpoError('ERR_CRPO_IO', `cannot read frames directory ${dir}: ${(err as Error).message}`);
  }
  const files = names
    .filter((n) => FRAME_EXTENSIONS.includes(path.extname(n).toLowerCase()) && !n.startsWith('.'))
    .sort(collator.compare);
  if (files.length === 0)
    throw new CrpoError(
      'ERR_CRPO_VIDEO_CORRUPT',
      `frames directory has no ${FRAME_EXTENSIONS.join('/')} images: ${dir}`,
    );
  return files.map((n) => path.join(dir, n));
}

/** Width and height of one image, with a clear error for an unreadable one. */
export async function imageSize(file: string): Promise<{ width: number; height: number }> {
  try {
    const m = await sharp(file).metadata();
    if (!m.width || !m.height) throw new Error('no size in the header');
    return { width: m.width, height: m.height };
  } catch (err) {
    throw new CrpoError(
      'ERR_CRPO_IMAGE_CORRUPT',
      `cannot read image ${file} (corrupt or not an image): ${(err as Error).message}`,
    );
  }
}

/** One image as uint8 [H,W,3] at exactly width x height (stretched if the aspect differs). */
export async function decodeImage(file: string, width: number, height: number): Promise<Uint8Array> {
  try {
    const { data, info } = await sharp(file)
      .removeAlpha()
      .toColourspace('srgb')
      .resize(width, height, { fit: 'fill', kernel: 'linear' })
      .raw()
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3 || data.length !== width * height * 3)
      throw new Error(`decoded ${info.width}x${info.height}x${info.channels}, expected ${width}x${height}x3`);
    return new Uint8Array(data.buffer, data.byteOffset, data.length);
  } catch (err) {
    throw new CrpoError(
      'ERR_CRPO_IMAGE_CORRUPT',
      `cannot decode frame ${file} (corrupt or truncated image): ${(err as Error).message}`,
    );
  }
}

/** Decodes `files` into one uint8 [T,H,W,3] array, `concurrency` images at a time. */
export async function decodeImages(
  files: readonly string[],
  width: number,
  height: number,
  concurrency = 4,
): Promise<Uint8Array> {
  const frameBytes = width * height * 3;
  const out = new Uint8Array(files.length * frameBytes);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < files.length) {
      const t = next++;
      out.set(await decodeImage(files[t], width, height), t * frameBytes);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, files.length) }, worker));
  return out;
}

/**
 * Writes uint8 [T,H,W,3] as frame_000.png ... into `dir`. The frames go to a temporary sibling
 * folder that is renamed into place at the end, so a crash never leaves a half-written `dir`.
 * Returns the file paths.
 */
export async function writeFrameDir(
  dir: string,
  frames: Uint8Array,
  shape: readonly [number, number, number, number],
  format: 'png' | 'jpg' = 'png',
): Promise<string[]> {
  const [T, H, W] = shape;
  const frameBytes = H * W * 3;
  if (frames.length !== T * frameBytes)
    throw new CrpoError(
      'ERR_CRPO_OUT_OF_RANGE',
      `Expected ${T * frameBytes} bytes for frames of shape [${shape.join(',')}] but received ${frames.length}`,
    );
  const abs = path.resolve(dir);
  fs.mkdirSync(path.dirname(abs), { recursive: true });
  const tmp = path.join(
    path.dirname(abs),
    `.${path.basename(abs)}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 8)}`,
  );
  fs.mkdirSync(tmp);
  const names: string[] = [];
  const digits = Math.max(3, String(T - 1).length);
  try {
    for (let t = 0; t < T; t++) {
      const raw = Buffer.from(frames.buffer, frames.byteOffset + t * frameBytes, frameBytes);
      const img = sharp(raw, { raw: { width: W, height: H, channels: 3 } });
      const buf = format === 'png' ? await img.png().toBuffer() : await img.jpeg({ quality: 92 }).toBuffer();
      const name = `frame_${String(t).padStart(digits, '0')}.${format}`;
      fs.writeFileSync(path.join(tmp, name), buf);
      names.push(name);
    }
    fs.rmSync(abs, { recursive: true, force: true });
    fs.renameSync(tmp, abs);
  } catch (err) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
  return names.map((n) => path.join(abs, n));
}
