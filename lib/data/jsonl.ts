/**
 * JSONL and file-writing helpers shared by the data, evaluation and training code: atomic whole-
 * file writes (temp file + fsync + rename + directory fsync, so a crash leaves the old file or the
 * new one, never half of one) and durable appends (each batch of lines is fsynced before the call
 * returns; a torn last line left by a crash is cut off when the file is reopened, so a resumed run
 * sees only whole records).
 */
import * as fs from 'fs';
import * as path from 'path';
import { CrpoError } from '../errors';

function tempName(target: string): string {
  return path.join(path.dirname(target), `.${path.basename(target)}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 10)}`);
}

function fsyncDir(dir: string): void {
  try {
    const fd = fs.openSync(dir, 'r');
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    /* some filesystems refuse to fsync a directory; the rename is still atomic */
  }
}

/** Writes `data` to `file` atomically (sync). Creates the parent directory. */
export function writeFileAtomicSync(file: string, data: string | Uint8Array): void {
  writeFileAtomicSyncWith(file, (fd) => fs.writeFileSync(fd, data));
}

/**
 * Same, with the content written by `write` into the open temporary file (for content made piece
 * by piece, e.g. one tensor at a time); an error leaves `file` as it was and no temporary file.
 */
export function writeFileAtomicSyncWith(file: string, write: (fd: number) => void): void {
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  const tmp = tempName(path.resolve(file));
  const fd = fs.openSync(tmp, 'w');
  try {
    write(fd);
    fs.fsyncSync(fd);
  } catch (err) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  fs.closeSync(fd);
  try {
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  fsyncDir(path.dirname(path.resolve(file)));
}

/** Writes `data` to `file` atomically. Creates the parent directory. */
export async function writeFileAtomic(file: string, data: string | Uint8Array): Promise<void> {
  const abs = path.resolve(file);
  await fs.promises.mkdir(path.dirname(abs), { recursive: true });
  const tmp = tempName(abs);
  const h = await fs.promises.open(tmp, 'w');
  try {
    await h.writeFile(data);
    await h.sync();
  } catch (err) {
    await h.close();
    await fs.promises.rm(tmp, { force: true });
    throw err;
  }
  await h.close();
  try {
    await fs.promises.rename(tmp, abs);
  } catch (err) {
    await fs.promises.rm(tmp, { force: true });
    throw err;
  }
  fsyncDir(path.dirname(abs));
}

/** One JSON value per line, each line ending in '\n'. */
export function toJsonl(values: Iterable<unknown>): string {
  let out = '';
  for (const v of values) out += JSON.stringify(v) + '\n';
  return out;
}

/** Writes the values as JSONL atomically. */
export function writeJsonlAtomic(file: string, values: Iterable<unknown>): Promise<void> {
  return writeFileAtomic(file, toJsonl(values));
}

export function writeJsonlAtomicSync(file: string, values: Iterable<unknown>): void {
  writeFileAtomicSync(file, toJsonl(values));
}

/**
 * Cuts a torn last line (bytes after the last '\n', left by a crash in the middle of a write)
 * and returns how many bytes were removed. A missing file is fine (0).
 */
export function repairJsonlTail(file: string): number {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r+');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw err;
  }
  try {
    const size = fs.fstatSync(fd).size;
    if (size === 0) return 0;
    // Scan backwards in blocks for the last newline.
    const block = Buffer.alloc(64 * 1024);
    let end = size;
    while (end > 0) {
      const start = Math.max(0, end - block.length);
      const n = fs.readSync(fd, block, 0, end - start, start);
      const idx = block.subarray(0, n).lastIndexOf(0x0a);
      if (idx >= 0) {
        const keep = start + idx + 1;
        if (keep === size) return 0;
        fs.ftruncateSync(fd, keep);
        fs.fsyncSync(fd);
        return size - keep;
      }
      end = start;
    }
    fs.ftruncateSync(fd, 0);
    fs.fsyncSync(fd);
    return size;
  } finally {
    fs.closeSync(fd);
  }
}

/** Appends values as JSONL lines and fsyncs before returning (sync). */
export function appendJsonlSync(file: string, values: unknown | unknown[], options: { repairTail?: boolean } = {}): void {
  const list = Array.isArray(values) ? values : [values];
  if (list.length === 0) return;
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  if (options.repairTail ?? true) repairJsonlTail(file);
  const fd = fs.openSync(file, 'a');
  try {
    fs.writeSync(fd, toJsonl(list));
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * A durable JSONL appender that keeps the file open: `append` writes whole lines and fsyncs;
 * concurrent calls are serialised in call order. Opening cuts a torn last line first.
 */
export class JsonlAppender {
  private chain: Promise<void> = Promise.resolve();
  private closed = false;

  private constructor(readonly file: string, private readonly handle: fs.promises.FileHandle, readonly repairedBytes: number) {}

  static async open(file: string): Promise<JsonlAppender> {
    await fs.promises.mkdir(path.dirname(path.resolve(file)), { recursive: true });
    const repaired = repairJsonlTail(file);
    const h = await fs.promises.open(file, 'a');
    return new JsonlAppender(file, h, repaired);
  }

  /** Appends one value or an array of values (one line each) and fsyncs. */
  append(values: unknown | unknown[]): Promise<void> {
    if (this.closed) return Promise.reject(new CrpoError('ERR_CRPO_DISPOSED', `JsonlAppender for ${this.file} is closed`, { userError: false }));
    const list = Array.isArray(values) ? values : [values];
    const text = toJsonl(list);
    const next = this.chain.then(async () => {
      if (text.length === 0) return;
      await this.handle.write(text);
      await this.handle.sync();
    });
    this.chain = next.catch(() => undefined);
    return next;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.chain;
    await this.handle.close();
  }
}

export interface JsonlLine {
  /** 1-based line number in the file. */
  line: number;
  text: string;
}

/** Non-blank lines with their 1-based numbers. */
export function splitLines(text: string): JsonlLine[] {
  const out: JsonlLine[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const t = lines[i].endsWith('\r') ? lines[i].slice(0, -1) : lines[i];
    if (t.trim().length > 0) out.push({ line: i + 1, text: t });
  }
  return out;
}

/** Reads a text file with a one-line error when it is missing or unreadable. */
export function readTextFile(file: string, what = 'file'): string {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new CrpoError('ERR_CRPO_NOT_FOUND', `${what} not found: ${file}`);
    if (code === 'EISDIR') throw new CrpoError('ERR_CRPO_BAD_PATH', `${what} is a directory, expected a file: ${file}`);
    throw new CrpoError('ERR_CRPO_IO', `cannot read ${what} ${file}: ${(err as Error).message}`, { cause: err });
  }
  return decodeUtf8(buf, file, what);
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** Offset of the first byte that starts an invalid UTF-8 sequence (buf.length when none). */
function firstInvalidUtf8(b: Uint8Array): number {
  let i = 0;
  while (i < b.length) {
    const c = b[i];
    const n = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    if (n === 0 || i + n > b.length) return i;
    for (let k = 1; k < n; k++) if ((b[i + k] & 0xc0) !== 0x80) return i;
    // Overlong 3/4-byte forms, UTF-16 surrogates and code points beyond U+10FFFF.
    if ((c === 0xe0 && b[i + 1] < 0xa0) || (c === 0xed && b[i + 1] >= 0xa0) || (c === 0xf0 && b[i + 1] < 0x90) || (c === 0xf4 && b[i + 1] >= 0x90)) return i;
    i += n;
  }
  return b.length;
}

/**
 * Decodes UTF-8 strictly: bytes that are not UTF-8 (a Latin-1 or UTF-16 file) are an error naming
 * the file, line and byte, instead of silently becoming U+FFFD. A byte-order mark is dropped.
 */
export function decodeUtf8(buf: Uint8Array, file: string, what = 'file'): string {
  let text: string;
  try {
    text = strictUtf8.decode(buf);
  } catch {
    const lo = firstInvalidUtf8(buf);
    let line = 1;
    for (let i = 0; i < lo; i++) if (buf[i] === 0x0a) line++;
    const at = Math.min(lo, buf.length - 1);
    throw new CrpoError('ERR_CRPO_ENCODING', `${file}:${line}: ${what} is not valid UTF-8 (byte ` +
      `0x${buf[at].toString(16).padStart(2, '0')} at offset ${at}); save it as UTF-8`);
  }
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text; // a UTF-8 byte-order mark is not data
}

/**
 * Parses JSONL: every line must be one JSON value. Returns the values with line numbers, and
 * one message per unparseable line ("file:line: invalid JSON (...)").
 */
export function parseJsonl(text: string, file: string): { values: { line: number; value: unknown }[]; errors: { line: number; message: string }[] } {
  const values: { line: number; value: unknown }[] = [];
  const errors: { line: number; message: string }[] = [];
  for (const { line, text: t } of splitLines(text)) {
    try {
      values.push({ line, value: JSON.parse(t) });
    } catch (err) {
      errors.push({ line, message: `${file}:${line}: invalid JSON (${(err as Error).message})` });
    }
  }
  return { values, errors };
}
