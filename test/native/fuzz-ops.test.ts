/**
 * 10,000 calls of each op per addon with random valid and invalid arguments: every call either
 * returns or throws a coded error (never a crash), and resident memory grows by < 50 MB.
 */
import { ops, type AddonName } from '../../lib/native';
import { rng, randInt } from '../helpers/random';
import { addonMissing, skipIf } from '../helpers/skip';

const CALLS = 10_000;

function randomTransformArgs(r: () => number): [unknown, Record<string, unknown>] {
  const dims = Array.from({ length: 5 }, () => randInt(r, 0, 4));
  const n = dims.reduce((a, b) => a * b, 1);
  const valid = r() < 0.5;
  const kinds = [
    () => new Uint8Array(n),
    () => new Float32Array(n),
    () => new Int32Array(n),
    () => [1, 2],
    () => 'x',
    () => null,
  ];
  const input = valid ? kinds[randInt(r, 0, 1)]() : kinds[randInt(r, 0, kinds.length - 1)]();
  const shape = valid
    ? dims
    : r() < 0.5
      ? [...dims.slice(0, 4), dims[4] + 1]
      : r() < 0.5
        ? dims.slice(0, 3)
        : [-1, 2, 2, 2, 2];
  const transforms = ['hflip', 'reverse', 'hflip+reverse', 'swap', 'bogus', 3];
  const opts: Record<string, unknown> = {
    shape,
    layout: r() < 0.9 ? (r() < 0.5 ? 'BTHWC' : 'BTCHW') : 'NCHW',
    transform: transforms[randInt(r, 0, valid ? 3 : 5)],
    swapAt: randInt(r, -1, 4),
  };
  if (r() < 0.2) opts.output = r() < 0.5 ? new Uint8Array(n) : new Float32Array(n + 1);
  return [input, opts];
}

function randomCrrArgs(r: () => number): Record<string, unknown> {
  const B = randInt(r, 0, 5),
    G = randInt(r, 1, 4),
    H = randInt(r, 1, 4);
  const bad = r() < 0.3;
  const len = (n: number) => (bad && r() < 0.3 ? n + 1 : n);
  return {
    groups: bad && r() < 0.2 ? -1 : B,
    origSize: G,
    cfSize: H,
    origAnswers: Int32Array.from({ length: len(B * G) }, () => randInt(r, -2, 5)),
    cfAnswers:
      bad && r() < 0.2 ? new Float32Array(B * H) : Int32Array.from({ length: len(B * H) }, () => randInt(r, -2, 5)),
    truth: Int32Array.from({ length: B }, () => randInt(r, 0, 3)),
    relation: Int32Array.from({ length: len(B) }, () => randInt(r, 0, 1)),
    numOptions: Int32Array.from({ length: B }, () => randInt(r, 0, 5)),
    norm: bad && r() < 0.2 ? 'x' : 'per-branch',
    eps: bad && r() < 0.1 ? Number.NaN : 1e-6,
  };
}

describe.each(['core', 'torch'] as AddonName[])('fuzzing the %s addon', (addon) => {
  const run = skipIf(addonMissing(addon)).it;
  run(`survives ${CALLS} random calls of each op with bounded memory`, () => {
    const o = ops(addon);
    const r = rng(addon === 'core' ? 99 : 98);
    const codes = new Set<string>();
    let ok = 0;
    const attempt = (fn: () => unknown) => {
      try {
        fn();
        ok++;
      } catch (e) {
        const code = (e as { code?: string }).code;
        if (!code || !code.startsWith('ERR_CRPO_')) throw e;
        codes.add(code);
      }
    };
    const warm = () => {
      for (let i = 0; i < 500; i++) {
        const [input, opts] = randomTransformArgs(r);
        attempt(() => o.videoTransformSync(input as never, opts as never));
        attempt(() => o.crrAdvantagesSync(randomCrrArgs(r) as never));
      }
    };
    warm();
    const before = process.memoryUsage().rss;
    for (let i = 0; i < CALLS; i++) {
      const [input, opts] = randomTransformArgs(r);
      attempt(() => o.videoTransformSync(input as never, opts as never));
      attempt(() => o.crrAdvantagesSync(randomCrrArgs(r) as never));
      attempt(() =>
        o.grpoAdvantagesSync({
          groups: randInt(r, 0, 3),
          groupSize: 2,
          answers: new Int32Array(randInt(r, 0, 6)),
          truth: new Int32Array(3),
          numOptions: new Int32Array(3),
        } as never),
      );
    }
    const growthMB = (process.memoryUsage().rss - before) / 2 ** 20;
    expect(ok).toBeGreaterThan(CALLS / 10); // a good share of the calls were valid and ran
    expect([...codes].sort()).toEqual(expect.arrayContaining(['ERR_CRPO_INVALID_ARG', 'ERR_CRPO_OUT_OF_RANGE']));
    expect(growthMB).toBeLessThan(50);
  });
});
