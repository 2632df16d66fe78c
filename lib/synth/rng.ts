/**
 * The seeded generator moved to lib/random.ts. This re-export is kept only for lib/synth/index.ts
 * and lib/bench/rollout.ts (edited on other branches); import from '../random' in new code.
 */
export { Rng, hash32 } from '../random';
