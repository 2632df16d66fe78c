/**
 * Paired evaluation (crpo-method.md sections 8-9): metrics (Acc, P-Acc, sensitivity, invariance,
 * TimeBlind, bootstrap intervals, Pearson r), the AnswerModel interface with its registry of model
 * kinds, the OpenAI-compatible endpoint model, and the resumable runner behind `crpo eval`.
 */
export {
  computeMetrics,
  pairSamples,
  bootstrapIntervals,
  bootstrapDistributions,
  timeBlindMetrics,
  pearson,
  correlateRuns,
  metricAt,
  quantile,
  INTERVAL_METRICS,
  BOOTSTRAP_DEFAULTS,
  type ScoredSample,
  type GroupMetrics,
  type GroupName,
  type PairedMetrics,
  type PairKind,
  type BootstrapOptions,
  type Interval,
  type GroupIntervals,
  type IntervalMetric,
  type TimeBlindAnswer,
  type TimeBlindMetrics,
} from './metrics';
export {
  MODEL_KINDS,
  createModel,
  setCheckpointFactory,
  type AnswerModel,
  type AnswerRequest,
  type AnswerResponse,
  type ModelSpec,
  type ModelFactory,
} from './model';
export {
  defaultFrameLoader,
  FRAME_DEFAULTS,
  type FrameLoader,
  type FrameLoadOptions,
  type DecodedFrames,
} from './frames';
export {
  runEval,
  selectRecords,
  readSamples,
  EVAL_DEFAULTS,
  type EvalConfig,
  type EvalHooks,
  type EvalResult,
  type EvalSummary,
  type SampleResult,
} from './runner';
export { markdownReport, chartSvg, svgToPng, type ReportInput } from './report';
