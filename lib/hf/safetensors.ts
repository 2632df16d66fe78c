/**
 * Minimal safetensors reader/writer (the Hugging Face format: 8-byte little-endian header length,
 * a JSON header {name: {dtype, shape, data_offsets}}, then the raw little-endian data). Headers
 * are read alone so that large shards are never loaded into JS: the native loader memory-maps
 * them from the offsets returned here. Whole-file reads are for small files (golden cases).
 */
import * as fs from 'fs';
import * as path from 'path';
import { CrpoError } from '../errors';

export type SafeDtype = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

const DTYPE_BYTES: Record<SafeDtype, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };

export interface SafeTensorInfo {
  name: string;
  dtype: SafeDtype;
  shape: number[];
  /** Absolute byte offset of the data in the file. */
  offset: number;
  nbytes: number;
}

export interface SafeHeader {
  file: string;
  tensors: Map<string, SafeTensorInfo>;
  metadata: Record<string, string>;
}

function loadError(file: string, what: string): CrpoError {
  return new CrpoError('ERR_CRPO_MODEL_LOAD', `${file}: ${what}`, { userError: true });
}

/** Reads and checks the header of one safetensors file. */
export function readSafetensorsHeader(file: string): SafeHeader {
  const fd = fs.openSync(file, 'r');
  try {
    const size = fs.fstatSync(fd).size;
    if (size < 8) throw loadError(file, `not a safetensors file (${size} bytes)`);
    const lenBuf = Buffer.alloc(8);
    fs.readSync(fd, lenBuf, 0, 8, 0);
    const len = Number(lenBuf.readBigUInt64LE(0));
    if (len <= 0 || 8 + len > size || len > 100 * 1024 * 1024) throw loadError(file, `bad header length ${len} (file has ${size} bytes)`);
    const hb = Buffer.alloc(len);
    fs.readSync(fd, hb, 0, len, 8);
    let json: Record<string, unknown>;
    try {
      json = JSON.parse(hb.toString('utf8')) as Record<string, unknown>;
    } catch (e) {
      throw loadError(file, `header is not JSON (${(e as Error).message})`);
    }
    const dataStart = 8 + len;
    const tensors = new Map<string, SafeTensorInfo>();
    let metadata: Record<string, string> = {};
    for (const [name, v] of Object.entries(json)) {
      if (name === '__metadata__') {
        metadata = (v ?? {}) as Record<string, string>;
        continue;
      }
      const e = v as { dtype?: string; shape?: number[]; data_offsets?: number[] };
      if (!e || typeof e.dtype !== 'string' || !(e.dtype in DTYPE_BYTES)) throw loadError(file, `tensor '${name}': unsupported dtype ${String(e?.dtype)}`);
      if (!Array.isArray(e.shape) || !Array.isArray(e.data_offsets) || e.data_offsets.length !== 2) throw loadError(file, `tensor '${name}': malformed entry`);
      const [b, en] = e.data_offsets;
      const dtype = e.dtype as SafeDtype;
      const count = e.shape.reduce((a, s) => a * s, 1);
      if (en - b !== count * DTYPE_BYTES[dtype]) throw loadError(file, `tensor '${name}': ${en - b} bytes for shape [${e.shape}] ${dtype}`);
      if (dataStart + en > size) throw loadError(file, `tensor '${name}' ends at byte ${dataStart + en} but the file has ${size} (truncated?)`);
      tensors.set(name, { name, dtype, shape: e.shape.slice(), offset: dataStart + b, nbytes: en - b });
    }
    return { file, tensors, metadata };
  } finally {
    fs.closeSync(fd);
  }
}

export type TensorData = Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array;

export interface LoadedTensor {
  dtype: SafeDtype;
  shape: number[];
  data: TensorData;
}

function bf16ToF32(src: Buffer): Float32Array {
  const n = src.length / 2;
  const u = new Uint32Array(n);
  for (let i = 0; i < n; i++) u[i] = src.readUInt16LE(2 * i) << 16;
  return new Float32Array(u.buffer);
}

function f16ToF32(src: Buffer): Float32Array {
  const n = src.length / 2;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const h = src.readUInt16LE(2 * i);
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 0x1f;
    const m = h & 0x3ff;
    out[i] = e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return out;
}

/** Reads every tensor of a (small) file; F16/BF16 become Float32Array. */
export function readSafetensors(file: string): Map<string, LoadedTensor> {
  const header = readSafetensorsHeader(file);
  const buf = fs.readFileSync(file);
  const out = new Map<string, LoadedTensor>();
  for (const t of header.tensors.values()) {
    const raw = Buffer.from(buf.subarray(t.offset, t.offset + t.nbytes)); // aligned copy
    const ab = raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength);
    let data: TensorData;
    switch (t.dtype) {
      case 'F32': data = new Float32Array(ab); break;
      case 'F64': data = new Float64Array(ab); break;
      case 'I64': data = new BigInt64Array(ab); break;
      case 'I32': data = new Int32Array(ab); break;
      case 'BF16': data = bf16ToF32(raw); break;
      case 'F16': data = f16ToF32(raw); break;
      default: data = new Uint8Array(ab);
    }
    out.set(t.name, { dtype: t.dtype, shape: t.shape, data });
  }
  return out;
}

export interface TensorSpec {
  name: string;
  shape: number[];
  /** Stored dtype: F32, or BF16 (round-to-nearest-even from the F32 data). */
  dtype: 'F32' | 'BF16';
}

function f32ToBf16(src: Float32Array): Buffer {
  const u = new Uint32Array(src.buffer, src.byteOffset, src.length);
  const out = Buffer.alloc(src.length * 2);
  for (let i = 0; i < src.length; i++) {
    const x = u[i];
    const isNan = (x & 0x7fffffff) > 0x7f800000;
    const r = isNan ? 0x7fc0 : ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
    out.writeUInt16LE(r, 2 * i);
  }
  return out;
}

/**
 * Writes a safetensors file atomically (temp file + fsync + rename). The header comes from the
 * specs; tensor data is fetched one tensor at a time by `data`, so a large model is never held
 * in JS memory as a whole.
 */
export function writeSafetensors(file: string, specs: TensorSpec[], data: (name: string) => Float32Array, metadata: Record<string, string> = { format: 'pt' }): void {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const s of specs) {
    const count = s.shape.reduce((a, b) => a * b, 1);
    const nbytes = count * (s.dtype === 'F32' ? 4 : 2);
    header[s.name] = { dtype: s.dtype, shape: s.shape, data_offsets: [offset, offset + nbytes] };
    offset += nbytes;
  }
  let hjson = Buffer.from(JSON.stringify(header), 'utf8');
  const pad = (8 - (hjson.length % 8)) % 8;
  if (pad) hjson = Buffer.concat([hjson, Buffer.alloc(pad, 0x20)]);
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  const fd = fs.openSync(tmp, 'w');
  try {
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(hjson.length));
    fs.writeSync(fd, len);
    fs.writeSync(fd, hjson);
    for (const s of specs) {
      const d = data(s.name);
      const count = s.shape.reduce((a, b) => a * b, 1);
      if (d.length !== count) throw new CrpoError('ERR_CRPO_EXPORT', `${file}: tensor '${s.name}' has ${d.length} values for shape [${s.shape}]`);
      fs.writeSync(fd, s.dtype === 'F32' ? Buffer.from(d.buffer, d.byteOffset, d.byteLength) : f32ToBf16(d));
    }
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
}
