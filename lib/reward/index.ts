/**
 * CRR rewards and group advantages (crpo-method.md section 5) through the fused native kernel,
 * with a friendly per-group input format for the trainer and a TS reference twin.
 */
import { invalidArg, outOfRange } from '../errors';
import {
  ops,
  type AddonName,
  type AdvantageNorm,
  type CrrOutputBuffers,
  type NativeCrrInputs,
  type NativeCrrOutputs,
  type NativeGrpoInputs,
  type NativeGrpoOutputs,
} from '../native';

export { referenceCrr, referenceGrpo, normaliseGroup } from './reference';

export const ADVANTAGE_NORMS: readonly AdvantageNorm[] = ['per-branch', 'joint', 'none'];

/** Rollout answer: option index, or -1 when it could not be parsed. */
export interface BranchRollout {
  answer: number;
  /** 1 when the response followed the required format, else 0. */
  format: number;
}

/** One prompt group: G rollouts on the original video, G' on the counterfactual one. */
export interface CrrGroup {
  truth: number;
  relation: 'change' | 'same';
  /** Known answer on the counterfactual video (-1 / undefined = unknown). */
  cfLabel?: number;
  /** Options shown, including the null option when it is appended. */
  numOptions: number;
  orig: BranchRollout[];
  cf: BranchRollout[];
}

export interface CrrSettings {
  weights?: { accuracy?: number; format?: number; crr?: number; behave?: number };
  norm?: AdvantageNorm;
  eps?: number;
  backend?: AddonName;
  device?: string;
}

/** Packs per-group objects into the flat (B, G) arrays the kernel reads. All groups need equal G and G'. */
export function packCrrGroups(groups: readonly CrrGroup[], settings: CrrSettings = {}): NativeCrrInputs {
  const B = groups.length;
  const G = B > 0 ? groups[0].orig.length : 1;
  const H = B > 0 ? groups[0].cf.length : 1;
  const inp: NativeCrrInputs = {
    groups: B,
    origSize: G,
    cfSize: H,
    origAnswers: new Int32Array(B * G),
    cfAnswers: new Int32Array(B * H),
    truth: new Int32Array(B),
    relation: new Int32Array(B),
    cfLabel: new Int32Array(B),
    numOptions: new Int32Array(B),
    origFormat: new Float32Array(B * G),
    cfFormat: new Float32Array(B * H),
    weights: settings.weights,
    norm: settings.norm,
    eps: settings.eps,
  };
  groups.forEach((g, b) => {
    if (g.orig.length !== G)
      throw outOfRange(`groups[${b}].orig`, `${G} rollouts like group 0`, g.orig.length, 'packCrrGroups');
    if (g.cf.length !== H)
      throw outOfRange(`groups[${b}].cf`, `${H} rollouts like group 0`, g.cf.length, 'packCrrGroups');
    if (g.relation !== 'change' && g.relation !== 'same')
      throw invalidArg(`groups[${b}].relation`, "'change' or 'same'", g.relation, 'packCrrGroups');
    inp.truth[b] = g.truth;
    inp.relation[b] = g.relation === 'change' ? 1 : 0;
    inp.cfLabel![b] = g.cfLabel ?? -1;
    inp.numOptions[b] = g.numOptions;
    g.orig.forEach((r, i) => {
      inp.origAnswers[b * G + i] = r.answer;
      inp.origFormat![b * G + i] = r.format;
    });
    g.cf.forEach((r, j) => {
      inp.cfAnswers[b * H + j] = r.answer;
      inp.cfFormat![b * H + j] = r.format;
    });
  });
  return inp;
}

function checkInputs(inp: NativeCrrInputs, op: string): void {
  if (typeof inp !== 'object' || inp === null) throw invalidArg('inputs', 'an object', inp, op);
  for (const [k, min] of [
    ['groups', 0],
    ['origSize', 1],
    ['cfSize', 1],
  ] as const) {
    const v = inp[k];
    if (!Number.isInteger(v)) throw invalidArg(k, 'an integer', v, op);
    if (v < min) throw outOfRange(k, `an integer >= ${min}`, v, op);
  }
  if (inp.norm !== undefined && !ADVANTAGE_NORMS.includes(inp.norm))
    throw invalidArg('norm', `one of ${ADVANTAGE_NORMS.join(', ')}`, inp.norm, op);
  if (inp.eps !== undefined && !(Number.isFinite(inp.eps) && inp.eps >= 0))
    throw outOfRange('eps', 'a finite number >= 0', inp.eps, op);
}

/** Rewards and advantages of B groups in one native pass, on the JS thread (~0.1 ms per 1,000 groups). */
export function crrAdvantagesSync(inp: NativeCrrInputs, backend: AddonName = 'core'): NativeCrrOutputs {
  checkInputs(inp, 'crrAdvantagesSync');
  return ops(backend).crrAdvantagesSync(inp);
}

/** @deprecated crrAdvantagesSync (the addon's `crrAdvantages` returns a Promise; this does not). */
export const crrAdvantages = crrAdvantagesSync;

/**
 * Same into caller-owned arrays (from allocCrrOutputs, reused across steps): no allocation per
 * call. Optional arrays left out of `out` are not computed into.
 */
export function crrAdvantagesInto<T extends CrrOutputBuffers>(
  inp: NativeCrrInputs,
  out: T,
  backend: AddonName = 'core',
): T {
  checkInputs(inp, 'crrAdvantagesInto');
  if (typeof out !== 'object' || out === null)
    throw invalidArg('out', 'an object of Float32Arrays', out, 'crrAdvantagesInto');
  ops(backend).crrAdvantagesSync({ ...inp, out });
  return out;
}

/** Every output array of crrAdvantagesSync for B groups of G and G' rollouts, views of one buffer. */
export function allocCrrOutputs(groups: number, origSize: number, cfSize: number): NativeCrrOutputs {
  const BG = groups * origSize,
    BH = groups * cfSize;
  const buf = new ArrayBuffer((3 * BG + 3 * BH + 2 * groups) * 4 + 2 * groups);
  let at = 0;
  const f32 = (n: number) => {
    const a = new Float32Array(buf, at, n);
    at += 4 * n;
    return a;
  };
  const u8 = (n: number) => {
    const a = new Uint8Array(buf, at, n);
    at += n;
    return a;
  };
  return {
    origReward: f32(BG),
    cfReward: f32(BH),
    origAdvantage: f32(BG),
    cfAdvantage: f32(BH),
    correct: f32(BG),
    expected: f32(BH),
    pOrig: f32(groups),
    pCf: f32(groups),
    origFlat: u8(groups),
    cfFlat: u8(groups),
  };
}

/** Same, off the JS thread (for very large batches or CUDA). */
export function crrAdvantagesAsync(inp: NativeCrrInputs, backend: AddonName = 'core'): Promise<NativeCrrOutputs> {
  try {
    checkInputs(inp, 'crrAdvantagesAsync');
  } catch (err) {
    return Promise.reject(err);
  }
  return ops(backend).crrAdvantages(inp);
}

/** Plain GRPO over one branch (correctness + format), on the JS thread. */
export function grpoAdvantagesSync(inp: NativeGrpoInputs, backend: AddonName = 'core'): NativeGrpoOutputs {
  if (typeof inp !== 'object' || inp === null) throw invalidArg('inputs', 'an object', inp, 'grpoAdvantagesSync');
  return ops(backend).grpoAdvantagesSync(inp);
}

/** @deprecated grpoAdvantagesSync (the core addon's `grpoAdvantages` returns a Promise; this does not). */
export const grpoAdvantages = grpoAdvantagesSync;
