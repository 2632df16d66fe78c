/**
 * The counterfactual video ops of both addons against the naive TS reference, on random shapes
 * (odd widths, T = 1, both layouts, uint8 and float32), sync and async, new and caller-provided
 * outputs; and the argument checks at the TS boundary and in native code.
 */
import { ops, type AddonName, type FrameArray, type FrameLayout } from '../../lib/native';
import { referenceTransform, transformFrames, transformFramesSync, VIDEO_TRANSFORMS } from '../../lib/counterfactual';
import { rng, randInt } from '../helpers/random';
import { addonMissing, skipIf } from '../helpers/skip';

const addons: AddonName[] = ['core', 'torch'];

function firstMismatch(a: FrameArray, b: FrameArray): string {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return `first mismatch at ${i}: ${a[i]} vs ${b[i]}`;
  return a.length === b.length ? 'equal' : `lengths ${a.length} vs ${b.length}`;
}

describe.each(addons)('video transforms on the %s addon', (addon) => {
  const maybe = skipIf(addonMissing(addon)).it;

  maybe('match the reference on 60 random shapes, both layouts and dtypes', async () => {
    const r = rng(addon === 'core' ? 1 : 2);
    for (let k = 0; k < 60; k++) {
      const B = randInt(r, 1, 3),
        T = k % 7 === 0 ? 1 : randInt(r, 1, 6),
        H = randInt(r, 1, 9),
        W = randInt(r, 1, 37),
        C = randInt(r, 1, 4);
      const layout: FrameLayout = k % 2 ? 'BTHWC' : 'BTCHW';
      const shape = layout === 'BTHWC' ? [B, T, H, W, C] : [B, T, C, H, W];
      const n = B * T * H * W * C;
      const input: FrameArray =
        k % 3 === 0
          ? Float32Array.from({ length: n }, () => r() * 2 - 1)
          : Uint8Array.from({ length: n }, () => randInt(r, 0, 255));
      for (const transform of VIDEO_TRANSFORMS) {
        if (transform === 'swap' && T < 2) continue;
        const swapAt = transform === 'swap' ? randInt(r, 1, T - 1) : undefined;
        const expected = referenceTransform(input, shape, layout, transform, swapAt ?? 0);
        const got = transformFramesSync(input, { shape, layout, transform, swapAt, backend: addon });
        expect(firstMismatch(got, expected)).toBe('equal');
        const output = input instanceof Float32Array ? new Float32Array(n) : new Uint8Array(n);
        const gotAsync = await transformFrames(input, { shape, layout, transform, swapAt, output, backend: addon });
        expect(gotAsync).toBe(output);
        expect(firstMismatch(output, expected)).toBe('equal');
      }
    }
  });

  maybe('flips RGB rows wide enough for the vector path (W = 16..80)', () => {
    const r = rng(7);
    for (const W of [15, 16, 17, 31, 32, 33, 47, 48, 49, 80]) {
      const shape = [1, 2, 3, W, 3];
      const input = Uint8Array.from({ length: 2 * 3 * W * 3 }, () => randInt(r, 0, 255));
      const got = transformFramesSync(input, { shape, transform: 'hflip', backend: addon });
      expect(firstMismatch(got, referenceTransform(input, shape, 'BTHWC', 'hflip'))).toBe('equal');
    }
  });

  maybe('flips outputs large enough for streaming stores, aligned and unaligned rows', () => {
    for (const W of [1008, 1001]) {
      const shape = [1, 3, 1000, W, 3];
      const n = 3 * 1000 * W * 3;
      const input = new Uint8Array(n);
      for (let i = 0; i < n; i++) input[i] = (i * 2654435761) >>> 24;
      const got = transformFramesSync(input, { shape, transform: 'hflip', backend: addon });
      expect(firstMismatch(got, referenceTransform(input, shape, 'BTHWC', 'hflip'))).toBe('equal');
    }
  });

  maybe('returns typed arrays of this realm', () => {
    const out = transformFramesSync(new Uint8Array(6), { shape: [1, 1, 1, 2, 3], transform: 'hflip', backend: addon });
    expect(out).toBeInstanceOf(Uint8Array);
  });

  maybe('rejects bad arguments in native code with a code and the value received', () => {
    const raw = ops(addon);
    const input = new Uint8Array(12);
    const call = (o: object) => () => raw.videoTransformSync(input, o as never);
    expect(call({ shape: [1, 1, 1, 2, 3], transform: 'hflip' })).toThrow(
      /expected dimensions whose product equals input length 12 for shape but received \[1,1,1,2,3\]/,
    );
    expect(call({ shape: [1, 1, 1, 4, 3], transform: 'spin' })).toThrow(/transform but received 'spin'/);
    expect(call({ shape: [1, 1, 1, 4, -3], transform: 'hflip' })).toThrow(/shape\[4\] but received -3/);
    expect(call({ shape: [1, 2, 1, 2, 3], transform: 'swap', swapAt: 2 })).toThrow(/swapAt but received 2/);
    expect(call({ shape: [1, 1, 1, 4, 3], transform: 'hflip', output: new Float32Array(12) })).toThrow(
      /output but received Float32Array\(12\)/,
    );
    expect(call({ shape: [1, 1, 1, 4, 3], transform: 'hflip', output: input })).toThrow(/not to overlap/);
    try {
      raw.videoTransformSync(new Int16Array(4) as never, {
        shape: [1, 1, 1, 4, 1],
        layout: 'BTHWC',
        transform: 'hflip',
      });
      throw new Error('no error');
    } catch (e) {
      expect((e as { code: string }).code).toBe('ERR_CRPO_INVALID_ARG');
      expect((e as Error).name).toBe('CrpoTypeError');
    }
  });

  maybe('rejects a detached buffer', () => {
    const input = new Uint8Array(12);
    structuredClone(input.buffer, { transfer: [input.buffer] });
    expect(() =>
      ops(addon).videoTransformSync(input, { shape: [0, 1, 1, 4, 3], layout: 'BTHWC', transform: 'hflip' }),
    ).toThrow(/detached/);
  });

  maybe('rejects asynchronously with a coded error', async () => {
    await expect(
      ops(addon).videoTransform(new Uint8Array(3), { shape: [1, 1, 1, 1, 2], layout: 'BTHWC', transform: 'hflip' }),
    ).rejects.toMatchObject({
      code: 'ERR_CRPO_OUT_OF_RANGE',
    });
  });
});

describe('TS boundary checks', () => {
  it('names the parameter and the value received', () => {
    const input = new Uint8Array(6);
    expect(() => transformFramesSync(input, { shape: [1, 1, 1, 2], transform: 'hflip' })).toThrow(
      'Expected an array of 5 integers for shape but received an array of length 4',
    );
    expect(() => transformFramesSync(input, { shape: [1, 1, 1, 2, 3], transform: 'rotate' as never })).toThrow(
      "Expected one of hflip, reverse, hflip+reverse, swap for transform but received 'rotate' of type string",
    );
    expect(() => transformFramesSync([1, 2] as never, { shape: [1, 1, 1, 1, 2], transform: 'hflip' })).toThrow(
      'Expected a Uint8Array or Float32Array for input but received an array of length 2',
    );
    expect(() => transformFramesSync(input, { shape: [1, 1, 1, 2.5, 3], transform: 'hflip' })).toThrow(
      'Expected an integer for shape[3] but received 2.5 of type number',
    );
    expect(() => transformFramesSync(input, { shape: [1, 1, 1, 2, 3], transform: 'swap' })).toThrow(
      "Expected at least 2 frames for 'swap' for shape[1] but received 1 of type number",
    );
  });

  it('rejects with a promise, not a throw, for the async API', async () => {
    await expect(
      transformFrames(new Uint8Array(6), { shape: [1, 1, 1, 2, 2], transform: 'hflip' }),
    ).rejects.toMatchObject({
      code: 'ERR_CRPO_OUT_OF_RANGE',
    });
  });
});
