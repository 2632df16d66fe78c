/**
 * DyBench construction (crpo-method.md sections 8-9): the builder that makes counterfactual
 * partners of annotated clips, and importers for released DyBench configs and TimeBlind instances.
 */
export { buildDyBench, planBuild, Annotation, type BuildOptions, type BuildResult } from './builder';
export {
  importDyBench,
  importTimeBlind,
  readEntries,
  parseFieldFlags,
  normaliseOptions,
  getPath,
  DYBENCH_FIELDS,
  DYBENCH_FIELD_CANDIDATES,
  TIMEBLIND_FIELDS,
  TIMEBLIND_FIELD_CANDIDATES,
  type ImportDyBenchOptions,
  type ImportTimeBlindOptions,
  type ImportResult,
} from './importers';
export { resolveAnswer, deriveAnswer } from './answers';
