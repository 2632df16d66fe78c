/**
 * What the native-policy tests share: whether the policy can run here (the torch addon built with
 * native/torch/model), the three prompts their tokenizer is built from, and deterministic clips.
 */
import { hasAddon, torchAddon } from '../../lib/native';
import { formatPrompt } from '../../lib/prompt';
import { resolveConfig, type TrainConfig } from '../../lib/train/config';
import { skipIf, type SkipAware } from './skip';

/** Why the native policy cannot run here, or undefined when it can. */
export function nativePolicyMissing(): string | undefined {
  if (!hasAddon('torch')) return 'the torch addon is not built (npm run build:torch)';
  if (typeof (torchAddon() as unknown as { policyCreate?: unknown }).policyCreate !== 'function')
    return 'the torch addon was built without native/torch/model (rebuild)';
  return undefined;
}

/** `it` when the native policy can run, else `it` that skips with the reason in the test's name (helpers/skip.ts). */
export function itWithNativePolicy(_suite?: string): SkipAware['it'] {
  return skipIf(nativePolicyMissing()).it;
}

/** One question per option count the tests use (4 with the null option, 2, 3). */
export const TINY_QUESTIONS = [
  formatPrompt('In which direction does the object move?', ['left', 'right', 'up', 'down'], { nullOption: true }),
  formatPrompt('Which shape appears first?', ['circle', 'square']),
  formatPrompt('What colour is the object?', ['red', 'green', 'blue']),
];

/** n clips of 8 frames of 32x32 RGB, pseudo-random bytes fixed by `seed`. */
export function tinyClips(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n * 8 * 32 * 32 * 3);
  let s = seed;
  for (let i = 0; i < out.length; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    out[i] = s >>> 24;
  }
  return out;
}

/**
 * The config of a short quiet CRPO run of a fresh tiny native policy on synthetic data into `out`
 * (no validation, dumps, plots or progress), with `overrides` on top.
 */
export function tinyNativeTrainConfig(out: string, overrides: Record<string, unknown>): TrainConfig {
  return resolveConfig({
    overrides: {
      algo: 'crpo',
      out,
      resume: 'never',
      valEvery: 0,
      dumpEvery: 0,
      plots: false,
      progress: false,
      policy: { kind: 'native', init: '', preset: 'tiny' },
      ...overrides,
    },
  });
}
