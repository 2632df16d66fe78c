/**
 * T-GRPO (Video-R1) and ArrowRL (Xue et al., arXiv 2506.03340) rewards and group advantages
 * (crpo-method.md section 7) through the fused native kernel
 * (native/kernels/cpu/baseline_rewards_kernel.cpp), with slow float64 TypeScript twins that the
 * kernel is tested against.
 */
import { invalidArg, outOfRange } from '../errors';
import {
  callSync,
  coreAddon,
  rewrap,
  type NativeArrowInputs,
  type NativeArrowOutputs,
  type NativeTgrpoInputs,
  type NativeTgrpoOutputs,
} from '../native';
import { normaliseGroup } from './reference';
import { ADVANTAGE_NORMS } from './index';

function checkCommon(
  inp: { groups: number; groupSize: number; norm?: string; eps?: number },
  extra: [string, number][],
  op: string,
): void {
  if (typeof inp !== 'object' || inp === null) throw invalidArg('inputs', 'an object', inp, op);
  for (const [k, v, min] of [
    ['groups', inp.groups, 0],
    ['groupSize', inp.groupSize, 1],
    ...extra.map(([k, v]) => [k, v, 1] as const),
  ] as const) {
    if (!Number.isInteger(v)) throw invalidArg(k, 'an integer', v, op);
    if (v < min) throw outOfRange(k, `an integer >= ${min}`, v, op);
  }
  if (inp.norm !== undefined && !(ADVANTAGE_NORMS as readonly string[]).includes(inp.norm))
    throw invalidArg('norm', `one of ${ADVANTAGE_NORMS.join(', ')}`, inp.norm, op);
  if (inp.eps !== undefined && !(Number.isFinite(inp.eps) && inp.eps >= 0))
    throw outOfRange('eps', 'a finite number >= 0', inp.eps, op);
}

function rewrapAll<T extends object>(o: T): T {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) out[k] = ArrayBuffer.isView(v) ? rewrap(v as Float32Array) : v;
  return out as T;
}

/** T-GRPO rewards and advantages of B groups in one native pass. */
export function tgrpoAdvantages(inp: NativeTgrpoInputs): NativeTgrpoOutputs {
  checkCommon(inp, [['shuffledSize', inp?.shuffledSize]], 'tgrpoAdvantages');
  return rewrapAll(callSync(() => coreAddon().tgrpoAdvantagesSync(inp)));
}

/** ArrowRL rewards and advantages of B groups in one native pass. */
export function arrowAdvantages(inp: NativeArrowInputs): NativeArrowOutputs {
  checkCommon(inp, [['reverseSize', inp?.reverseSize]], 'arrowAdvantages');
  return rewrapAll(callSync(() => coreAddon().arrowAdvantagesSync(inp)));
}

const isValid = (a: number, k: number): boolean => a >= 0 && a < k;

/** Slow twin of tgrpoAdvantages (float64). */
export function referenceTgrpo(inp: NativeTgrpoInputs): NativeTgrpoOutputs {
  const B = inp.groups,
    G = inp.groupSize,
    S = inp.shuffledSize;
  const wA = inp.wAccuracy ?? 1,
    wF = inp.wFormat ?? 1,
    bonus = inp.bonus ?? 0.3,
    mu = inp.mu ?? 0.8;
  const out: NativeTgrpoOutputs = {
    reward: new Float32Array(B * G),
    advantage: new Float32Array(B * G),
    correct: new Float32Array(B * G),
    pOrdered: new Float32Array(B),
    pShuffled: new Float32Array(B),
    bonusOn: new Uint8Array(B),
    flat: new Uint8Array(B),
  };
  for (let b = 0; b < B; b++) {
    const y = inp.truth[b],
      k = inp.numOptions[b];
    const correct: number[] = Array.from({ length: G }, (_, i) =>
      isValid(inp.answers[b * G + i], k) && inp.answers[b * G + i] === y ? 1 : 0,
    );
    let q = 0;
    for (let j = 0; j < S; j++)
      q += isValid(inp.shuffledAnswers[b * S + j], k) && inp.shuffledAnswers[b * S + j] === y ? 1 : 0;
    const p = correct.reduce((a: number, c: number) => a + c, 0) / G;
    q /= S;
    const on = p >= mu * q;
    const r = correct.map((c, i) => wA * c + wF * (inp.format ? inp.format[b * G + i] : 0) + (on ? bonus * c : 0));
    const [adv, flat] = normaliseGroup(r, inp.norm ?? 'per-branch', inp.eps ?? 1e-6);
    for (let i = 0; i < G; i++) {
      out.reward[b * G + i] = r[i];
      out.advantage[b * G + i] = adv[i];
      out.correct[b * G + i] = correct[i];
    }
    out.pOrdered[b] = p;
    out.pShuffled[b] = q;
    out.bonusOn[b] = on ? 1 : 0;
    out.flat[b] = flat ? 1 : 0;
  }
  return out;
}

/** Slow twin of arrowAdvantages (float64). */
export function referenceArrow(inp: NativeArrowInputs): NativeArrowOutputs {
  const B = inp.groups,
    G = inp.groupSize,
    H = inp.reverseSize;
  const wA = inp.wAccuracy ?? 1,
    wF = inp.wFormat ?? 1,
    wR = inp.wReverse ?? 0.5;
  const out: NativeArrowOutputs = {
    reward: new Float32Array(B * G),
    advantage: new Float32Array(B * G),
    correct: new Float32Array(B * G),
    differ: new Float32Array(B * G),
    flat: new Uint8Array(B),
  };
  for (let b = 0; b < B; b++) {
    const y = inp.truth[b],
      k = inp.numOptions[b];
    const r: number[] = [];
    for (let i = 0; i < G; i++) {
      const a = inp.answers[b * G + i];
      const c = isValid(a, k) && a === y ? 1 : 0;
      let d = 0;
      if (isValid(a, k)) {
        for (let j = 0; j < H; j++) {
          const x = inp.reverseAnswers[b * H + j];
          d += isValid(x, k) && x !== a ? 1 : 0;
        }
        d /= H;
      }
      out.correct[b * G + i] = c;
      out.differ[b * G + i] = d;
      r.push(wA * c + wF * (inp.format ? inp.format[b * G + i] : 0) + wR * d);
    }
    const [adv, flat] = normaliseGroup(r, inp.norm ?? 'per-branch', inp.eps ?? 1e-6);
    for (let i = 0; i < G; i++) {
      out.reward[b * G + i] = r[i];
      out.advantage[b * G + i] = adv[i];
    }
    out.flat[b] = flat ? 1 : 0;
  }
  return out;
}
