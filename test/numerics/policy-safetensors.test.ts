/**
 * lib/model/safetensors.ts: round trips of every dtype, lazy reads by offset, and a fuzz of
 * malformed files (random header edits, truncations, byte flips) that must all end in a
 * CrpoError ERR_CRPO_SAFETENSORS or a valid parse, never another exception.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import {
  SafetensorsFile,
  parseSafetensors,
  parseSafetensorsHeader,
  readSafetensorsHeader,
  serializeSafetensors,
  writeSafetensors,
  toFloat32,
  float32ToBf16,
  type TensorToWrite,
} from '../../lib/model/safetensors';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-st-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function sample(): TensorToWrite[] {
  return [
    { name: 'w', dtype: 'F32', shape: [2, 3], data: new Float32Array([1, -2, 3.5, 0, 1e-8, -7]) },
    { name: 'b', dtype: 'I64', shape: [2], data: new BigInt64Array([5n, -9n]) },
    { name: 'i', dtype: 'I32', shape: [3], data: new Int32Array([1, 2, -3]) },
    { name: 'h', dtype: 'BF16', shape: [2], data: float32ToBf16(new Float32Array([1.5, -0.25])) },
    { name: 'f16', dtype: 'F16', shape: [2], data: new Uint16Array([0x3c00, 0xc000]) },
    { name: 'empty', dtype: 'F32', shape: [0, 4], data: new Float32Array(0) },
  ];
}

function header(obj: unknown): Buffer {
  const json = Buffer.from(JSON.stringify(obj));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([len, json]);
}

function expectSafeError(fn: () => unknown, re: RegExp): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeDefined();
  expect((err as { code?: string }).code).toBe('ERR_CRPO_SAFETENSORS');
  expect(String((err as Error).message)).toMatch(re);
}

describe('safetensors', () => {
  test('round trip of every dtype through a file, lazily by offset', () => {
    const file = path.join(tmp, 'a.safetensors');
    writeSafetensors(file, sample(), { format: 'pt' });
    const h = readSafetensorsHeader(file);
    expect([...h.tensors.keys()]).toEqual(['w', 'b', 'i', 'h', 'f16', 'empty']);
    expect(h.metadata).toEqual({ format: 'pt' });
    expect(h.dataStart % 8).toBe(0);
    const f = SafetensorsFile.open(file);
    try {
      expect(Array.from(f.read('w', { dtype: 'F32', shape: [2, 3] }).data as Float32Array)).toEqual(
        Array.from(new Float32Array([1, -2, 3.5, 0, 1e-8, -7])),
      );
      expect(Array.from(f.read('b').data as BigInt64Array)).toEqual([5n, -9n]);
      expect(Array.from(f.read('i').data as Int32Array)).toEqual([1, 2, -3]);
      expect(Array.from(f.readFloat32('h'))).toEqual([1.5, -0.25]);
      expect(Array.from(f.readFloat32('f16'))).toEqual([1, -2]);
      expect(f.read('empty').shape).toEqual([0, 4]);
      expectSafeError(() => f.read('w', { dtype: 'BF16' }), /tensor 'w': dtype F32, expected BF16/);
      expectSafeError(() => f.read('w', { shape: [3, 2] }), /tensor 'w': shape \[2,3\], expected \[3,2\]/);
      expectSafeError(() => f.read('nope'), /no tensor named 'nope'/);
    } finally {
      f.close();
    }
    // Same bytes as the in-memory serializer, and the in-memory parser agrees.
    const buf = serializeSafetensors(sample(), { format: 'pt' });
    expect(Buffer.compare(buf, fs.readFileSync(file))).toBe(0);
    const all = parseSafetensors(buf);
    expect(toFloat32(all.tensors.get('w')!)[2]).toBe(3.5);
  });

  test('bf16 rounding is round-to-nearest-even', () => {
    // 1 + 2^-8 is exactly half way between two bf16 values: ties go to the even one (1.0).
    expect(
      Array.from(
        toFloat32({
          dtype: 'BF16',
          shape: [3],
          data: float32ToBf16(new Float32Array([1 + 2 ** -8, 1 + 3 * 2 ** -8, -3])),
        }),
      ),
    ).toEqual([1, 1 + 2 ** -6, -3]);
  });

  test('malformed headers are rejected with a clear message', () => {
    const ok = { dtype: 'F32', shape: [2], data_offsets: [0, 8] };
    const data = Buffer.alloc(16);
    expectSafeError(() => parseSafetensorsHeader(Buffer.alloc(5)), /not a safetensors file \(5 bytes/);
    const huge = Buffer.alloc(16);
    huge.writeBigUInt64LE(2n ** 62n);
    expectSafeError(() => parseSafetensorsHeader(huge), /bad header length/);
    const past = Buffer.alloc(16);
    past.writeBigUInt64LE(100n);
    expectSafeError(() => parseSafetensorsHeader(past), /runs past the end of the file/);
    const notJson = Buffer.concat([header({}).subarray(0, 8), Buffer.from('{{')]);
    notJson.writeBigUInt64LE(2n);
    expectSafeError(() => parseSafetensorsHeader(notJson), /header is not valid JSON/);
    expectSafeError(() => parseSafetensorsHeader(Buffer.concat([header([1, 2]), data])), /header is not a JSON object/);
    expectSafeError(
      () => parseSafetensorsHeader(Buffer.concat([header({ a: { ...ok, dtype: 'F8' } }), data])),
      /tensor 'a': unsupported dtype "F8"/,
    );
    expectSafeError(
      () => parseSafetensorsHeader(Buffer.concat([header({ a: { ...ok, shape: [-1] } }), data])),
      /tensor 'a': shape \[-1\]/,
    );
    expectSafeError(
      () => parseSafetensorsHeader(Buffer.concat([header({ a: { ...ok, shape: [3] } }), data])),
      /tensor 'a': 8 bytes in data_offsets but shape \[3\] of F32 needs 12/,
    );
    expectSafeError(
      () => parseSafetensorsHeader(Buffer.concat([header({ a: { ...ok, data_offsets: [8, 0] } }), data])),
      /end before they begin/,
    );
    expectSafeError(
      () => parseSafetensorsHeader(Buffer.concat([header({ a: { ...ok, data_offsets: [12, 20] } }), data])),
      /run past the data section of 16 bytes/,
    );
    expectSafeError(
      () => parseSafetensorsHeader(Buffer.concat([header({ a: ok, b: { ...ok, data_offsets: [4, 12] } }), data])),
      /tensors 'a' \[0, 8\) and 'b' \[4, 12\) overlap/,
    );
    expectSafeError(
      () => parseSafetensorsHeader(Buffer.concat([header({ a: { ...ok, extra: 1 } }), data])),
      /unknown key 'extra'/,
    );
    expectSafeError(
      () => parseSafetensorsHeader(Buffer.concat([header({ __metadata__: { a: 1 } }), data])),
      /__metadata__.a is not a string/,
    );
    expectSafeError(() => readSafetensorsHeader(path.join(tmp, 'missing.safetensors')), /cannot open/);
    // Empty tensors between two overlapping ones do not hide the overlap.
    expectSafeError(
      () =>
        parseSafetensorsHeader(
          Buffer.concat([
            header({
              a: ok,
              z: { dtype: 'F32', shape: [0], data_offsets: [4, 4] },
              b: { ...ok, data_offsets: [4, 12] },
            }),
            data,
          ]),
        ),
      /overlap/,
    );
  });

  test('fuzz: random corruptions never throw anything but ERR_CRPO_SAFETENSORS', () => {
    const base = serializeSafetensors(sample(), { format: 'pt' });
    let seed = 12345;
    const rnd = (): number => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      return seed / 2 ** 32;
    };
    let rejected = 0;
    let accepted = 0;
    for (let iter = 0; iter < 3000; iter++) {
      let buf = Buffer.from(base);
      const kind = iter % 4;
      if (kind === 0) buf = buf.subarray(0, Math.floor(rnd() * buf.length));
      else if (kind === 1) {
        const n = 1 + Math.floor(rnd() * 4);
        for (let k = 0; k < n; k++) buf[Math.floor(rnd() * Math.min(buf.length, 260))] = Math.floor(rnd() * 256);
      } else if (kind === 2) {
        // Replace one number in the header text with another.
        const len = Number(buf.readBigUInt64LE(0));
        const text = buf.subarray(8, 8 + len).toString('utf8');
        const nums = [...text.matchAll(/\d+/g)];
        const m = nums[Math.floor(rnd() * nums.length)];
        const repl = String([0, 1, 3, 7, 8, 64, 2 ** 31, 2 ** 53, 99999][Math.floor(rnd() * 9)]);
        const t2 = text.slice(0, m.index) + repl + text.slice(m.index! + m[0].length);
        buf = Buffer.concat([header(null).subarray(0, 8), Buffer.from(t2), buf.subarray(8 + len)]);
        buf.writeBigUInt64LE(BigInt(Buffer.byteLength(t2)), 0);
      } else {
        buf.writeBigUInt64LE(BigInt(Math.floor(rnd() * 2 ** 20)), 0);
      }
      try {
        const r = parseSafetensors(buf);
        for (const t of r.tensors.values()) expect(t.data.byteLength).toBeGreaterThanOrEqual(0);
        accepted++;
      } catch (e) {
        expect((e as { code?: string }).code).toBe('ERR_CRPO_SAFETENSORS');
        rejected++;
      }
    }
    expect(rejected).toBeGreaterThan(1000);
    expect(accepted).toBeGreaterThan(0);
  });
});
