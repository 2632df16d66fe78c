/**
 * The trainer (crpo-method.md sections 2-7): config, the training loop, the supervised warm start,
 * checkpoints and the demo pipeline. See docs/training.md.
 */
export {
  train,
  validate,
  createPolicy,
  finalCheckpoint,
  dataTexts,
  type TrainHooks,
  type TrainResult,
  type ValidationResult,
} from './trainer';
export {
  resolveConfig,
  readConfigFile,
  saveResolvedConfig,
  setDotted,
  learningRate,
  TRAIN_DEFAULTS,
  FLAG_FIELDS,
  ConfigError,
  type TrainConfig,
} from './config';
export {
  loadTrainData,
  batchIndices,
  shardBatch,
  routeOf,
  SINGLE_PROCESS,
  type TrainDistContext,
  type TrainItem,
  type ValItem,
  type ItemRoute,
} from './data';
export { saveCheckpoint, listCheckpoints, readState, resumeTarget, type TrainState } from './checkpoint';
export { RunLog, Progress, writePlots, curvesSvg, truncateJsonl, type MetricLine } from './logging';
export { sftBase, type SftBaseOptions } from './base-model';
export { runDemo, demoConfig, formatDemoTable, type DemoOptions, type DemoRow } from './demo';
