/**
 * The Hugging Face side of safetensors: whole-file reads of small files (golden cases, LoRA
 * adapters) with F16/BF16 widened to Float32Array, and a writer of Float32 data as F32 or BF16.
 * Parsing, validation and writing are those of lib/model/safetensors.ts (headers read alone, so
 * the native loader memory-maps large shards from the offsets it returns); this module only
 * adapts them.
 */
import * as fs from 'fs';
import {
  float32ToBf16,
  parseSafetensors,
  toFloat32,
  writeSafetensorsStreaming,
  type SafeDtype,
  type SafeTensorEntry,
} from '../model/safetensors';

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
      case 'BF16':
        data = toFloat32(t);
        break;
      case 'F32':
      case 'F64':
      case 'I64':
      case 'I32':
      case 'U8':
        data = t.data as TensorData;
        break;
      default:
        data = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
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
 * Writes a safetensors file atomically; tensor data is fetched one tensor at a time by `data`
 * (Float32 values, stored as F32 or rounded to BF16), so a large model is never held in JS memory
 * as a whole.
 */
export function writeSafetensors(
  file: string,
  specs: TensorSpec[],
  data: (name: string) => Float32Array,
  metadata: Record<string, string> = { format: 'pt' },
): void {
  const bf16 = new Set(specs.filter((s) => s.dtype === 'BF16').map((s) => s.name));
  writeSafetensorsStreaming(file, specs, (name) => (bf16.has(name) ? float32ToBf16(data(name)) : data(name)), metadata);
}
