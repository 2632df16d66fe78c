/**
 * Strict safetensors reader and writer (the Hugging Face format: an 8-byte little-endian header
 * length N, N bytes of JSON `{name: {dtype, shape, data_offsets: [begin, end]}, __metadata__?}`,
 * then the raw little-endian tensor bytes, offsets relative to the end of the header). The reader
 * validates everything before touching data: header length and JSON, entry keys, dtypes, shapes,
 * byte counts, offsets inside the data section and no two tensors overlapping; every problem is a
 * CrpoError `ERR_CRPO_SAFETENSORS` naming the file and the tensor, never a crash. Headers are read
 * alone and tensors lazily by offset, so multi-GB Hugging Face shards never need to fit in memory.
 */
import * as fs from 'fs';
import { CrpoError } from '../errors';
import { writeFileAtomicSync, writeFileAtomicSyncWith } from '../data/jsonl';

export type SafeDtype = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

export const SAFE_DTYPE_BYTES: Readonly<Record<SafeDtype, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

/** Headers larger than this are refused (the format's own reference limit is 100 MB). */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;

export interface SafeTensorEntry {
  name: string;
  dtype: SafeDtype;
  shape: number[];
  /** Absolute byte offset of the data in the file. */
  offset: number;
  nbytes: number;
}

export interface SafeHeader {
  /** File name (or '<buffer>') for messages. */
  source: string;
  /** In file order of the header JSON. */
  tensors: Map<string, SafeTensorEntry>;
  metadata: Record<string, string>;
  /** Absolute offset of the data section (8 + header length). */
  dataStart: number;
  /** Total size of the file or buffer. */
  totalBytes: number;
}

/** Typed view of a tensor's elements. F16/BF16 come as raw Uint16 bits (see toFloat32). */
export type SafeData =
  Float64Array | Float32Array | Uint16Array | BigInt64Array | Int32Array | Int16Array | Int8Array | Uint8Array;

export interface SafeTensor {
  dtype: SafeDtype;
  shape: number[];
  data: SafeData;
}

export function safetensorsError(source: string, what: string): CrpoError {
  return new CrpoError('ERR_CRPO_SAFETENSORS', `${source}: ${what}`, { userError: true });
}

function isNonNegInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/**
 * Validates a header. `json` is the header text, `dataStart` = 8 + its length, `totalBytes` the
 * file size. Throws ERR_CRPO_SAFETENSORS on the first problem.
 */
export function parseHeaderJson(source: string, json: string, dataStart: number, totalBytes: number): SafeHeader {
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch (e) {
    throw safetensorsError(source, `header is not valid JSON (${(e as Error).message})`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed))
    throw safetensorsError(source, 'header is not a JSON object');
  const dataBytes = totalBytes - dataStart;
  const tensors = new Map<string, SafeTensorEntry>();
  let metadata: Record<string, string> = {};
  const ranges: { name: string; b: number; e: number }[] = [];
  for (const [name, v] of Object.entries(parsed as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (v === null || typeof v !== 'object' || Array.isArray(v))
        throw safetensorsError(source, '__metadata__ is not an object of strings');
      for (const [k, mv] of Object.entries(v as Record<string, unknown>)) {
        if (typeof mv !== 'string') throw safetensorsError(source, `__metadata__.${k} is not a string`);
      }
      metadata = { ...(v as Record<string, string>) };
      continue;
    }
    if (name.length === 0) throw safetensorsError(source, 'a tensor has an empty name');
    if (v === null || typeof v !== 'object' || Array.isArray(v))
      throw safetensorsError(source, `tensor '${name}': entry is not an object`);
    const e = v as Record<string, unknown>;
    for (const k of Object.keys(e)) {
      if (k !== 'dtype' && k !== 'shape' && k !== 'data_offsets')
        throw safetensorsError(source, `tensor '${name}': unknown key '${k}'`);
    }
    if (typeof e.dtype !== 'string' || !(e.dtype in SAFE_DTYPE_BYTES)) {
      throw safetensorsError(
        source,
        `tensor '${name}': unsupported dtype ${JSON.stringify(e.dtype)} (known: ${Object.keys(SAFE_DTYPE_BYTES).join(', ')})`,
      );
    }
    const dtype = e.dtype as SafeDtype;
    if (!Array.isArray(e.shape) || !e.shape.every(isNonNegInt))
      throw safetensorsError(
        source,
        `tensor '${name}': shape ${JSON.stringify(e.shape)} is not a list of non-negative integers`,
      );
    const shape = e.shape as number[];
    let count = 1;
    for (const s of shape) {
      count *= s;
      if (!Number.isSafeInteger(count))
        throw safetensorsError(source, `tensor '${name}': shape ${JSON.stringify(shape)} is too large`);
    }
    const off = e.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !off.every(isNonNegInt)) {
      throw safetensorsError(
        source,
        `tensor '${name}': data_offsets ${JSON.stringify(off)} is not [begin, end] of non-negative integers`,
      );
    }
    const [b, en] = off as number[];
    if (en < b) throw safetensorsError(source, `tensor '${name}': data_offsets [${b}, ${en}] end before they begin`);
    const want = count * SAFE_DTYPE_BYTES[dtype];
    if (en - b !== want)
      throw safetensorsError(
        source,
        `tensor '${name}': ${en - b} bytes in data_offsets but shape [${shape}] of ${dtype} needs ${want}`,
      );
    if (en > dataBytes)
      throw safetensorsError(
        source,
        `tensor '${name}': data_offsets [${b}, ${en}] run past the data section of ${dataBytes} bytes (truncated file?)`,
      );
    ranges.push({ name, b, e: en });
    tensors.set(name, { name, dtype, shape: shape.slice(), offset: dataStart + b, nbytes: en - b });
  }
  // Empty tensors occupy no bytes and cannot overlap anything.
  const nonEmpty = ranges.filter((r) => r.e > r.b).sort((x, y) => x.b - y.b || x.e - y.e);
  for (let i = 1; i < nonEmpty.length; i++) {
    const p = nonEmpty[i - 1];
    const c = nonEmpty[i];
    if (c.b < p.e)
      throw safetensorsError(source, `tensors '${p.name}' [${p.b}, ${p.e}) and '${c.name}' [${c.b}, ${c.e}) overlap`);
  }
  return { source, tensors, metadata, dataStart, totalBytes };
}

function headerLength(source: string, lenBuf: Buffer, totalBytes: number): number {
  if (totalBytes < 8) throw safetensorsError(source, `not a safetensors file (${totalBytes} bytes, need at least 8)`);
  const big = lenBuf.readBigUInt64LE(0);
  if (big < 2n || big > BigInt(MAX_HEADER_BYTES))
    throw safetensorsError(source, `bad header length ${big} (must be 2..${MAX_HEADER_BYTES})`);
  const len = Number(big);
  if (8 + len > totalBytes)
    throw safetensorsError(source, `header length ${len} runs past the end of the file (${totalBytes} bytes)`);
  return len;
}

/** Reads and validates only the header of a file (the data is not read). */
export function readSafetensorsHeader(file: string): SafeHeader {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    throw safetensorsError(file, `cannot open (${(e as Error).message})`);
  }
  try {
    const size = fs.fstatSync(fd).size;
    const lenBuf = Buffer.alloc(8);
    if (size >= 8) fs.readSync(fd, lenBuf, 0, 8, 0);
    const len = headerLength(file, lenBuf, size);
    const hb = Buffer.alloc(len);
    fs.readSync(fd, hb, 0, len, 8);
    return parseHeaderJson(file, hb.toString('utf8'), 8 + len, size);
  } finally {
    fs.closeSync(fd);
  }
}

/** Validates the header of an in-memory safetensors buffer. */
export function parseSafetensorsHeader(buf: Uint8Array, source = '<buffer>'): SafeHeader {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  const lenBuf = b.length >= 8 ? b.subarray(0, 8) : Buffer.alloc(8);
  const len = headerLength(source, lenBuf, b.length);
  return parseHeaderJson(source, b.subarray(8, 8 + len).toString('utf8'), 8 + len, b.length);
}

/** Copies raw little-endian bytes into a fresh, aligned typed array of the dtype. */
function viewOf(dtype: SafeDtype, bytes: Uint8Array): SafeData {
  const copy = new Uint8Array(bytes.byteLength);
  copy.set(bytes);
  const ab = copy.buffer;
  switch (dtype) {
    case 'F64':
      return new Float64Array(ab);
    case 'F32':
      return new Float32Array(ab);
    case 'F16':
    case 'BF16':
      return new Uint16Array(ab);
    case 'I64':
      return new BigInt64Array(ab);
    case 'I32':
      return new Int32Array(ab);
    case 'I16':
      return new Int16Array(ab);
    case 'I8':
      return new Int8Array(ab);
    case 'U8':
    case 'BOOL':
      return copy;
  }
}

export interface ExpectTensor {
  dtype?: SafeDtype;
  shape?: readonly number[];
}

function checkExpect(source: string, e: SafeTensorEntry, expect?: ExpectTensor): void {
  if (!expect) return;
  if (expect.dtype && expect.dtype !== e.dtype)
    throw safetensorsError(source, `tensor '${e.name}': dtype ${e.dtype}, expected ${expect.dtype}`);
  if (expect.shape && (expect.shape.length !== e.shape.length || expect.shape.some((s, i) => s !== e.shape[i]))) {
    throw safetensorsError(source, `tensor '${e.name}': shape [${e.shape}], expected [${expect.shape}]`);
  }
}

/**
 * An open safetensors file: the validated header plus lazy reads by offset. Close it when done.
 */
export class SafetensorsFile {
  readonly header: SafeHeader;
  private fd: number | undefined;

  private constructor(
    readonly file: string,
    fd: number,
    header: SafeHeader,
  ) {
    this.fd = fd;
    this.header = header;
  }

  static open(file: string): SafetensorsFile {
    const header = readSafetensorsHeader(file);
    return new SafetensorsFile(file, fs.openSync(file, 'r'), header);
  }

  names(): string[] {
    return [...this.header.tensors.keys()];
  }

  entry(name: string): SafeTensorEntry {
    const e = this.header.tensors.get(name);
    if (!e) throw safetensorsError(this.file, `no tensor named '${name}'`);
    return e;
  }

  /** Raw bytes of one tensor. */
  readBytes(name: string, expect?: ExpectTensor): Uint8Array {
    if (this.fd === undefined) throw safetensorsError(this.file, 'file is closed');
    const e = this.entry(name);
    checkExpect(this.file, e, expect);
    const out = Buffer.alloc(e.nbytes);
    let done = 0;
    while (done < e.nbytes) {
      const n = fs.readSync(this.fd, out, done, e.nbytes - done, e.offset + done);
      if (n <= 0) throw safetensorsError(this.file, `tensor '${name}': file shrank while reading`);
      done += n;
    }
    return out;
  }

  read(name: string, expect?: ExpectTensor): SafeTensor {
    const e = this.entry(name);
    return { dtype: e.dtype, shape: e.shape.slice(), data: viewOf(e.dtype, this.readBytes(name, expect)) };
  }

  /** A floating tensor (F32/F16/BF16/F64) as Float32Array. */
  readFloat32(name: string, expect?: { shape?: readonly number[] }): Float32Array {
    return toFloat32(this.read(name, expect));
  }

  close(): void {
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
  }
}

/** All tensors of an in-memory safetensors buffer. */
export function parseSafetensors(
  buf: Uint8Array,
  source = '<buffer>',
): { header: SafeHeader; tensors: Map<string, SafeTensor> } {
  const header = parseSafetensorsHeader(buf, source);
  const tensors = new Map<string, SafeTensor>();
  for (const e of header.tensors.values()) {
    tensors.set(e.name, {
      dtype: e.dtype,
      shape: e.shape.slice(),
      data: viewOf(e.dtype, buf.subarray(e.offset, e.offset + e.nbytes)),
    });
  }
  return { header, tensors };
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** Converts a floating tensor to Float32Array (BF16 exactly; F16 exactly; F64 rounded). */
export function toFloat32(t: SafeTensor): Float32Array {
  switch (t.dtype) {
    case 'F32':
      return t.data as Float32Array;
    case 'F64':
      return Float32Array.from(t.data as Float64Array);
    case 'BF16': {
      const src = t.data as Uint16Array;
      const out = new Float32Array(src.length);
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < src.length; i++) bits[i] = src[i] << 16;
      return out;
    }
    case 'F16': {
      const src = t.data as Uint16Array;
      const out = new Float32Array(src.length);
      for (let i = 0; i < src.length; i++) out[i] = halfToFloat(src[i]);
      return out;
    }
    default:
      throw new CrpoError('ERR_CRPO_SAFETENSORS', `cannot convert a ${t.dtype} tensor to float32`);
  }
}

/** Rounds fp32 to bf16 bits (round to nearest even), for writing BF16 tensors. */
export function float32ToBf16(x: Float32Array): Uint16Array {
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) {
    f32Scratch[0] = x[i];
    const u = u32Scratch[0];
    if ((u & 0x7f800000) === 0x7f800000 && u & 0x7fffff) out[i] = (u >>> 16) | 0x40;
    else out[i] = (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
  }
  return out;
}

export interface TensorToWrite {
  name: string;
  dtype: SafeDtype;
  shape: readonly number[];
  data: ArrayBufferView;
}

/** What the header records of one tensor. */
export type TensorLayout = Pick<TensorToWrite, 'name' | 'dtype' | 'shape'>;

/**
 * The 8-byte length and the header JSON (padded with spaces to a multiple of 8) for tensors laid
 * out in the given order; checks names and dtypes. Returns each tensor's byte size too.
 */
export function safetensorsHeader(
  tensors: readonly TensorLayout[],
  metadata?: Record<string, string>,
): { prefix: Buffer; sizes: number[] } {
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length) header.__metadata__ = metadata;
  let off = 0;
  const seen = new Set<string>();
  const sizes: number[] = [];
  for (const t of tensors) {
    if (!t.name || t.name === '__metadata__')
      throw new CrpoError('ERR_CRPO_SAFETENSORS', `invalid tensor name '${t.name}'`);
    if (seen.has(t.name)) throw new CrpoError('ERR_CRPO_SAFETENSORS', `duplicate tensor name '${t.name}'`);
    seen.add(t.name);
    if (!(t.dtype in SAFE_DTYPE_BYTES))
      throw new CrpoError('ERR_CRPO_SAFETENSORS', `tensor '${t.name}': unsupported dtype ${t.dtype}`);
    const size = t.shape.reduce((a, s) => a * s, 1) * SAFE_DTYPE_BYTES[t.dtype];
    header[t.name] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [off, off + size] };
    sizes.push(size);
    off += size;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((Buffer.byteLength(json) + 8) % 8)) % 8);
  const hb = Buffer.from(json, 'utf8');
  const prefix = Buffer.alloc(8 + hb.length);
  prefix.writeBigUInt64LE(BigInt(hb.length), 0);
  hb.copy(prefix, 8);
  return { prefix, sizes };
}

function checkSize(t: TensorLayout, data: ArrayBufferView, want: number): void {
  if (data.byteLength !== want)
    throw new CrpoError(
      'ERR_CRPO_SAFETENSORS',
      `tensor '${t.name}': ${data.byteLength} bytes of data for shape [${t.shape}] of ${t.dtype} (need ${want})`,
    );
}

/** Serialises tensors (in the given order) into one safetensors buffer; header padded to 8 bytes. */
export function serializeSafetensors(tensors: readonly TensorToWrite[], metadata?: Record<string, string>): Buffer {
  const { prefix, sizes } = safetensorsHeader(tensors, metadata);
  tensors.forEach((t, i) => checkSize(t, t.data, sizes[i]));
  const out = Buffer.alloc(prefix.length + sizes.reduce((a, s) => a + s, 0));
  prefix.copy(out, 0);
  let p = prefix.length;
  for (const t of tensors) {
    out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), p);
    p += t.data.byteLength;
  }
  return out;
}

/**
 * Writes a safetensors file atomically, fetching each tensor's data only when its turn comes
 * (`data(name)`), so that a large model is never held in memory as a whole.
 */
export function writeSafetensorsStreaming(
  file: string,
  tensors: readonly TensorLayout[],
  data: (name: string) => ArrayBufferView,
  metadata?: Record<string, string>,
): void {
  const { prefix, sizes } = safetensorsHeader(tensors, metadata);
  writeFileAtomicSyncWith(file, (fd) => {
    fs.writeFileSync(fd, prefix);
    tensors.forEach((t, i) => {
      const d = data(t.name);
      checkSize(t, d, sizes[i]);
      fs.writeFileSync(fd, new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
    });
  });
}

/** Writes a safetensors file atomically (temp file, fsync, rename, fsync of the folder). */
export function writeSafetensors(
  file: string,
  tensors: readonly TensorToWrite[],
  metadata?: Record<string, string>,
): void {
  writeFileAtomicSync(file, serializeSafetensors(tensors, metadata));
}
