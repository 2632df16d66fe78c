/**
 * Slow, obviously correct TypeScript version of the CRR rewards and GRPO advantages
 * (crpo-method.md section 5). The fused native kernel (native/kernels/cpu/crr_kernel.cpp) is
 * tested against it and benchmarked next to it. Everything is computed in float64.
 */
import type { AdvantageNorm, NativeCrrInputs, NativeCrrOutputs, NativeGrpoInputs, NativeGrpoOutputs } from '../native';

/** GRPO normalisation of one group; all-equal rewards give zeros. Returns [advantages, flat]. */
export function normaliseGroup(rewards: readonly number[], norm: AdvantageNorm, eps: number): [number[], boolean] {
  const n = rewards.length;
  if (rewards.every((r) => r === rewards[0])) return [rewards.map(() => 0), true];
  const mean = rewards.reduce((a, b) => a + b, 0) / n;
  if (norm === 'none') return [rewards.map((r) => r - mean), false];
  const variance = rewards.reduce((a, r) => a + (r - mean) * (r - mean), 0) / (n - 1);
  const sd = Math.sqrt(variance);
  return [rewards.map((r) => (r - mean) / (sd + eps)), false];
}

const isValid = (a: number, k: number): boolean => a >= 0 && a < k;

export function referenceCrr(inp: NativeCrrInputs): NativeCrrOutputs {
  const B = inp.groups,
    G = inp.origSize,
    H = inp.cfSize;
  const w = { accuracy: 1, format: 1, crr: 1, behave: 1, ...(inp.weights ?? {}) };
  const norm = inp.norm ?? 'per-branch';
  const eps = inp.eps ?? 1e-6;
  const out: NativeCrrOutputs = {
    origReward: new Float32Array(B * G),
    cfReward: new Float32Array(B * H),
    origAdvantage: new Float32Array(B * G),
    cfAdvantage: new Float32Array(B * H),
    correct: new Float32Array(B * G),
    expected: new Float32Array(B * H),
    pOrig: new Float32Array(B),
    pCf: new Float32Array(B),
    origFlat: new Uint8Array(B),
    cfFlat: new Uint8Array(B),
  };
  for (let b = 0; b < B; b++) {
    const y = inp.truth[b],
      k = inp.numOptions[b];
    const change = inp.relation[b] !== 0;
    const yCf = inp.cfLabel ? inp.cfLabel[b] : -1;
    const correct: number[] = [],
      expected: number[] = [];
    for (let i = 0; i < G; i++) {
      const a = inp.origAnswers[b * G + i];
      correct.push(isValid(a, k) && a === y ? 1 : 0);
    }
    for (let j = 0; j < H; j++) {
      const c = inp.cfAnswers[b * H + j];
      let ok: boolean;
      if (!change) ok = isValid(c, k) && c === y;
      else if (yCf >= 0) ok = isValid(c, k) && c === yCf;
      else ok = isValid(c, k) && c !== y;
      expected.push(ok ? 1 : 0);
    }
    const pO = correct.reduce((a, x) => a + x, 0) / G;
    const pC = expected.reduce((a, x) => a + x, 0) / H;
    const r = correct.map(
      (c, i) => w.accuracy * c + w.format * (inp.origFormat ? inp.origFormat[b * G + i] : 0) + w.crr * c * pC,
    );
    const s = expected.map(
      (e, j) => w.behave * e + w.format * (inp.cfFormat ? inp.cfFormat[b * H + j] : 0) + w.crr * e * pO,
    );
    let aO: number[], aC: number[], flatO: boolean, flatC: boolean;
    if (norm === 'joint') {
      const [adv, flat] = normaliseGroup([...r, ...s], norm, eps);
      aO = adv.slice(0, G);
      aC = adv.slice(G);
      flatO = flatC = flat;
    } else {
      [aO, flatO] = normaliseGroup(r, norm, eps);
      [aC, flatC] = normaliseGroup(s, norm, eps);
    }
    for (let i = 0; i < G; i++) {
      out.origReward[b * G + i] = r[i];
      out.origAdvantage[b * G + i] = aO[i];
      out.correct[b * G + i] = correct[i];
    }
    for (let j = 0; j < H; j++) {
      out.cfReward[b * H + j] = s[j];
      out.cfAdvantage[b * H + j] = aC[j];
      out.expected[b * H + j] = expected[j];
    }
    out.pOrig[b] = pO;
    out.pCf[b] = pC;
    out.origFlat[b] = flatO ? 1 : 0;
    out.cfFlat[b] = flatC ? 1 : 0;
  }
  return out;
}

export function referenceGrpo(inp: NativeGrpoInputs): NativeGrpoOutputs {
  const B = inp.groups,
    G = inp.groupSize;
  const wA = inp.wAccuracy ?? 1,
    wF = inp.wFormat ?? 1;
  const out: NativeGrpoOutputs = {
    reward: new Float32Array(B * G),
    advantage: new Float32Array(B * G),
    correct: new Float32Array(B * G),
    flat: new Uint8Array(B),
  };
  for (let b = 0; b < B; b++) {
    const r: number[] = [];
    for (let i = 0; i < G; i++) {
      const a = inp.answers[b * G + i];
      const c = isValid(a, inp.numOptions[b]) && a === inp.truth[b] ? 1 : 0;
      out.correct[b * G + i] = c;
      r.push(wA * c + wF * (inp.format ? inp.format[b * G + i] : 0));
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
