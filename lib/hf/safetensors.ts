/**
 * The Hugging Face side of safetensors: whole-file reads of small files (golden cases, LoRA
 * adapters) with F16/BF16 widened to Float32Array, and a streaming writer that fetches one tensor
 * at a time (a large model is never held in JS as a whole). Parsing and validation are those of
 * the one reader, lib/model/safetensors.ts (headers read alone, so the native loader memory-maps
 * large shards from the offsets it returns); this module only adapts its results.
 */
import * as fs from 'fs';
import * as path from 'path';
import { CrpoError } from '../errors';
import { float32ToBf16, parseSafetensors, toFloat32, type SafeDtype, type SafeTensorEntry } from '../model/safetensors';

export { readSafetensorsHeader, type SafeDtype, type SafeHeader } from '../model/safetensors';
/** One tensor of a header: dtype, shape, absolute byte offset and size in the file. */
export type SafeTensorInfo = SafeTensorEntry;

export type TensorData = Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array;

export interface LoadedTensor {
  dtype: SafeDtype;
  shape: number[];
  data: TensorData;
}

/** Reads every tensor of a (small) file; F16/BF16 become Float32Array (exactly). */
export function readSafetensors(file: string): Map<string, LoadedTensor> {
  const { tensors } = parseSafetensors(fs.readFileSync(file), file);
  const out = new Map<string, LoadedTensor>();
  for (const [name, t] of tensors) {
    let data: TensorData;
    switch (t.dtype) {
      case 'F16':
      case 'BF16': data = toFloat32(t); break;
      case 'F32':
      case 'F64':
      case 'I64':
      case 'I32':
      case 'U8': data = t.data as TensorData; break;
      default: data = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    }
    out.set(name, { dtype: t.dtype, shape: t.shape, data });
  }
  return out;
}

export interface TensorSpec {
  name: string;
  shape: number[];
  /** Stored dtype: F32, or BF16 (round-to-nearest-even from the F32 data). */
  dtype: 'F32' | 'BF16';
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
      const bytes = s.dtype === 'F32' ? d : float32ToBf16(d);
      fs.writeSync(fd, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
    }
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
}
