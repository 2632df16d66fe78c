/**
 * The fused CRR / GRPO group-advantage kernel (crpo-method.md section 5): core kernel, torch
 * kernel and the TS reference agree on random inputs (1e-6 relative), and hand-computed cases
 * cover every branch of the formula.
 */
import { hasAddon, type NativeCrrInputs, type NativeCrrOutputs } from '../../lib/native';
import {
  allocCrrOutputs,
  crrAdvantagesSync,
  crrAdvantagesAsync,
  crrAdvantagesInto,
  grpoAdvantagesSync,
  packCrrGroups,
  referenceCrr,
  referenceGrpo,
  type CrrGroup,
} from '../../lib/reward';
import { rng, randInt } from '../helpers/random';

function maxRelDiff(a: ArrayLike<number>, b: ArrayLike<number>): { max: number; at: number } {
  let max = 0,
    at = -1;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]) / Math.max(1, Math.abs(b[i]));
    if (d > max) {
      max = d;
      at = i;
    }
  }
  return { max, at };
}

function expectClose(got: NativeCrrOutputs, want: NativeCrrOutputs, label: string): void {
  for (const key of Object.keys(want) as (keyof NativeCrrOutputs)[]) {
    const { max, at } = maxRelDiff(got[key], want[key]);
    if (max > 1e-6)
      throw new Error(`${label}: ${key} differs by ${max} (relative) at ${at}: ${got[key][at]} vs ${want[key][at]}`);
    expect(got[key].length).toBe(want[key].length);
  }
}

function randomInputs(seed: number, B: number, G: number, H: number): NativeCrrInputs {
  const r = rng(seed);
  const numOptions = Int32Array.from({ length: B }, () => randInt(r, 2, 6));
  const answer = (b: number) => (r() < 0.1 ? -1 : r() < 0.05 ? numOptions[b] + 1 : randInt(r, 0, numOptions[b] - 1));
  const modes = ['per-branch', 'joint', 'none'] as const;
  return {
    groups: B,
    origSize: G,
    cfSize: H,
    origAnswers: Int32Array.from({ length: B * G }, (_, i) => answer(Math.floor(i / G))),
    cfAnswers: Int32Array.from({ length: B * H }, (_, i) => answer(Math.floor(i / H))),
    truth: Int32Array.from({ length: B }, (_, b) => randInt(r, 0, numOptions[b] - 1)),
    relation: Int32Array.from({ length: B }, () => (r() < 0.6 ? 1 : 0)),
    cfLabel: Int32Array.from({ length: B }, (_, b) => (r() < 0.3 ? randInt(r, 0, numOptions[b] - 1) : -1)),
    numOptions,
    origFormat: Float32Array.from({ length: B * G }, () => (r() < 0.8 ? 1 : 0)),
    cfFormat: Float32Array.from({ length: B * H }, () => (r() < 0.8 ? 1 : 0)),
    weights: { accuracy: 0.5 + r(), format: r(), crr: 0.5 + r(), behave: 0.5 + r() },
    norm: modes[seed % 3],
    eps: 1e-6,
  };
}

describe('CRR kernel vs the TS reference', () => {
  it.each([1, 2, 3, 4, 5, 6])('agrees on random groups (seed %i)', async (seed) => {
    const inp = randomInputs(seed, 200, 1 + (seed % 8) + 1, 1 + ((seed * 3) % 8) + 1);
    const want = referenceCrr(inp);
    expectClose(crrAdvantagesSync(inp, 'core'), want, 'core');
    expectClose(await crrAdvantagesAsync(inp, 'core'), want, 'core async');
    if (hasAddon('torch')) {
      expectClose(crrAdvantagesSync(inp, 'torch'), want, 'torch');
      expectClose(await crrAdvantagesAsync(inp, 'torch'), want, 'torch async');
    }
  });

  // G = G' = 8 takes the vectorised path (crr_groups_8x8); its twins are the scalar loop (every
  // other size, above) and the TS reference. Every norm, fractional formats, and many flat groups.
  it.each([0, 1, 2])("the G = G' = 8 fast path agrees (norm mode %i)", (mode) => {
    for (const seed of [11, 12, 13]) {
      const inp = randomInputs(seed, 300, 8, 8);
      inp.norm = (['per-branch', 'joint', 'none'] as const)[mode];
      const r = rng(seed + 100);
      if (seed === 12) inp.origFormat = Float32Array.from(inp.origFormat!, () => r()); // fractional format scores
      if (seed === 13) {
        inp.eps = 0;
        inp.cfFormat = undefined;
      } // eps 0 and an absent optional input
      for (let b = 0; b < 300; b += 5) {
        // every 5th group all-equal in both branches: flat in every mode
        inp.origAnswers.fill(-1, b * 8, b * 8 + 8);
        inp.cfAnswers.fill(-1, b * 8, b * 8 + 8);
        inp.origFormat!.fill(inp.cfFormat ? 1 : 0, b * 8, b * 8 + 8); // an absent cfFormat counts as 0
        inp.cfFormat?.fill(1, b * 8, b * 8 + 8);
      }
      const want = referenceCrr(inp);
      const got = crrAdvantagesSync(inp, 'core');
      expectClose(got, want, `core 8x8 seed ${seed}`);
      if (hasAddon('torch')) expectClose(crrAdvantagesSync(inp, 'torch'), want, `torch 8x8 seed ${seed}`);
      expect(got.origFlat[0]).toBe(1);
      expect(got.cfFlat[5]).toBe(1);
      expect(Array.from(got.origAdvantage.subarray(0, 8))).toEqual(new Array(8).fill(0));
    }
  });

  it('agrees for GRPO over one branch', () => {
    const r = rng(11);
    const B = 100,
      G = 8;
    const inp = {
      groups: B,
      groupSize: G,
      answers: Int32Array.from({ length: B * G }, () => randInt(r, -1, 4)),
      truth: Int32Array.from({ length: B }, () => randInt(r, 0, 3)),
      numOptions: Int32Array.from({ length: B }, () => 4),
      format: Float32Array.from({ length: B * G }, () => (r() < 0.5 ? 1 : 0)),
      norm: 'per-branch' as const,
    };
    const want = referenceGrpo(inp);
    const got = grpoAdvantagesSync(inp);
    for (const k of ['reward', 'advantage', 'correct', 'flat'] as const)
      expect(maxRelDiff(got[k], want[k]).max).toBeLessThan(1e-6);
  });
});

const roll = (answers: number[], format = 1) => answers.map((answer) => ({ answer, format }));

describe('CRR hand-computed cases', () => {
  it('change relation, unknown label: any valid different answer (incl. the null option) is expected', () => {
    // 4 options + null option = 5 shown; y = 1.
    const g: CrrGroup = {
      truth: 1,
      relation: 'change',
      numOptions: 5,
      orig: roll([1, 1, 0, -1]),
      cf: roll([1, 4, 2, 7]),
    };
    const out = crrAdvantagesSync(packCrrGroups([g]));
    // correct = [1,1,0,0] -> p_o = 0.5; expected = [0 (same), 1 (null option), 1, 0 (7 is invalid)] -> p_c = 0.5
    expect(Array.from(out.correct)).toEqual([1, 1, 0, 0]);
    expect(Array.from(out.expected)).toEqual([0, 1, 1, 0]);
    expect(out.pOrig[0]).toBeCloseTo(0.5, 7);
    expect(out.pCf[0]).toBeCloseTo(0.5, 7);
    // r_i = correct + format + correct * p_c = [2.5, 2.5, 1, 1]; s_j = expected + format + expected * p_o = [1, 2.5, 2.5, 1]
    expect(Array.from(out.origReward)).toEqual([2.5, 2.5, 1, 1]);
    expect(Array.from(out.cfReward)).toEqual([1, 2.5, 2.5, 1]);
    // mean 1.75, sample std sqrt(4 * 0.5625 / 3) = 0.8660254; A = +-0.75 / (0.8660254 + 1e-6)
    const a = 0.75 / (Math.sqrt(0.75) + 1e-6);
    Array.from(out.origAdvantage).forEach((x, i) => expect(x).toBeCloseTo([a, a, -a, -a][i], 6));
    Array.from(out.cfAdvantage).forEach((x, i) => expect(x).toBeCloseTo([-a, a, a, -a][i], 6));
  });

  it('same relation: the counterfactual answer must equal the ground truth', () => {
    const g: CrrGroup = { truth: 2, relation: 'same', numOptions: 4, orig: roll([2, 2]), cf: roll([2, 3]) };
    const out = crrAdvantagesSync(packCrrGroups([g]));
    expect(Array.from(out.expected)).toEqual([1, 0]);
    // orig rewards both 1 + 1 + 1 * 0.5 -> all equal -> advantages 0, flagged flat
    expect(Array.from(out.origReward)).toEqual([2.5, 2.5]);
    expect(Array.from(out.origAdvantage)).toEqual([0, 0]);
    expect(out.origFlat[0]).toBe(1);
    expect(out.cfFlat[0]).toBe(0);
  });

  it('labelled mode: a known counterfactual label must be hit exactly', () => {
    const g: CrrGroup = {
      truth: 0,
      relation: 'change',
      cfLabel: 1,
      numOptions: 4,
      orig: roll([0, 0]),
      cf: roll([1, 2, 3]),
    };
    const out = crrAdvantagesSync(packCrrGroups([g]));
    expect(Array.from(out.expected)).toEqual([1, 0, 0]);
  });

  it('invalid answers are never correct and never count as a change', () => {
    const g: CrrGroup = { truth: 0, relation: 'change', numOptions: 3, orig: roll([-1, 3]), cf: roll([-1, 3, 99]) };
    const out = crrAdvantagesSync(packCrrGroups([g]));
    expect(Array.from(out.correct)).toEqual([0, 0]);
    expect(Array.from(out.expected)).toEqual([0, 0, 0]);
  });

  it('joint normalisation uses one mean and std over both branches; none only centres', () => {
    const g: CrrGroup = { truth: 0, relation: 'change', numOptions: 3, orig: roll([0, 1], 0), cf: roll([1, 0], 0) };
    // correct [1,0] p_o = .5; expected [1,0] p_c = .5; r = [1.5, 0], s = [1.5, 0]
    const joint = crrAdvantagesSync(packCrrGroups([g], { norm: 'joint' }));
    const sd = Math.sqrt((4 * 0.75 * 0.75) / 3);
    expect(joint.origAdvantage[0]).toBeCloseTo(0.75 / (sd + 1e-6), 6);
    expect(joint.cfAdvantage[1]).toBeCloseTo(-0.75 / (sd + 1e-6), 6);
    const none = crrAdvantagesSync(packCrrGroups([g], { norm: 'none' }));
    expect(Array.from(none.origAdvantage)).toEqual([0.75, -0.75]);
  });

  it('weights scale each component', () => {
    const g: CrrGroup = { truth: 0, relation: 'change', numOptions: 3, orig: roll([0, 1]), cf: roll([1, 1]) };
    const out = crrAdvantagesSync(packCrrGroups([g], { weights: { accuracy: 2, format: 0.5, crr: 3, behave: 4 } }));
    // p_o = .5, p_c = 1; r = [2 + .5 + 3*1, .5] ; s = [4 + .5 + 3*.5] x2
    expect(Array.from(out.origReward)).toEqual([5.5, 0.5]);
    expect(Array.from(out.cfReward)).toEqual([6, 6]);
  });
});

describe('CRR argument checks', () => {
  it('rejects wrong lengths, types and modes with the parameter named', () => {
    const inp = packCrrGroups([{ truth: 0, relation: 'same', numOptions: 2, orig: roll([0, 1]), cf: roll([0, 1]) }]);
    expect(() => crrAdvantagesSync({ ...inp, truth: new Int32Array(2) })).toThrow(
      /expected an Int32Array of length 1 for truth but received length 2/,
    );
    expect(() => crrAdvantagesSync({ ...inp, cfAnswers: new Float32Array(2) as never })).toThrow(
      /Int32Array for cfAnswers but received Float32Array\(2\)/,
    );
    expect(() => crrAdvantagesSync({ ...inp, norm: 'batch' as never })).toThrow(
      "Expected one of per-branch, joint, none for norm but received 'batch' of type string",
    );
    expect(() => crrAdvantagesSync({ ...inp, origSize: 0 })).toThrow(
      'Expected an integer >= 1 for origSize but received 0 of type number',
    );
    expect(() =>
      packCrrGroups([
        { truth: 0, relation: 'same', numOptions: 2, orig: roll([0]), cf: roll([0]) },
        { truth: 0, relation: 'same', numOptions: 2, orig: roll([0, 1]), cf: roll([0]) },
      ]),
    ).toThrow('Expected 1 rollouts like group 0 for groups[1].orig but received 2 of type number');
  });
});

describe('CRR into caller-owned outputs', () => {
  const backends = (['core', 'torch'] as const).filter(hasAddon);

  it.each(backends)(
    '%s: equals the allocating call, reuses the arrays, and skips absent optional ones',
    async (backend) => {
      const inp = randomInputs(7, 64, 8, 8);
      const want = crrAdvantagesSync(inp, backend);
      const out = allocCrrOutputs(64, 8, 8);
      out.origAdvantage.fill(99);
      expect(crrAdvantagesInto(inp, out, backend)).toBe(out);
      expectClose(out, want, `${backend} into`);
      // Reused on the next call with other inputs: every value is rewritten.
      const inp2 = randomInputs(8, 64, 8, 8);
      crrAdvantagesInto(inp2, out, backend);
      expectClose(out, crrAdvantagesSync(inp2, backend), `${backend} into, reused`);
      // Only the four required arrays: the rest stay untouched.
      const minimal = {
        origReward: new Float32Array(512),
        cfReward: new Float32Array(512),
        origAdvantage: new Float32Array(512),
        cfAdvantage: new Float32Array(512),
      };
      crrAdvantagesInto(inp, minimal, backend);
      for (const k of Object.keys(minimal) as (keyof typeof minimal)[])
        expect(Array.from(minimal[k])).toEqual(Array.from(want[k]));
      // The async path with out resolves to the same object.
      const out2 = allocCrrOutputs(64, 8, 8);
      expect(await crrAdvantagesAsync({ ...inp, out: out2 }, backend)).toBe(out2);
      expectClose(out2, want, `${backend} async into`);
    },
  );

  it('names the wrong out array, and refuses outputs that overlap the inputs or each other', () => {
    const inp = randomInputs(9, 4, 8, 8);
    const out = allocCrrOutputs(4, 8, 8);
    expect(() => crrAdvantagesInto(inp, { ...out, cfAdvantage: new Float32Array(31) })).toThrow(
      /expected an Float32Array of length 32 for out\.cfAdvantage but received length 31/,
    );
    expect(() => crrAdvantagesInto(inp, { ...out, pOrig: new Int32Array(4) as never })).toThrow(
      /Float32Array for out\.pOrig but received Int32Array\(4\)/,
    );
    expect(() => crrAdvantagesInto(inp, { ...out, origReward: undefined as never })).toThrow(
      /for out\.origReward but received undefined/,
    );
    expect(() => crrAdvantagesInto(inp, null as never)).toThrow(/an object of Float32Arrays for out/);
    const aliased = new Float32Array(inp.origFormat!.buffer, inp.origFormat!.byteOffset, 32);
    expect(() => crrAdvantagesInto(inp, { ...out, origReward: aliased })).toThrow(/not to overlap the inputs/);
    expect(() => crrAdvantagesInto(inp, { ...out, cfReward: out.origReward })).toThrow(
      /not to share memory with each other/,
    );
  });
});
