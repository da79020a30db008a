// Public surface of calibration: per-stage latency profiles (measured here, modelled from a
// device profile, or read from a file), the threshold search against a latency target, and the
// calibrate command's whole flow with its report.
export {
  calibrate,
  collectObservations,
  renderMarkdown,
  type CalibrateOptions,
  type CalibrationReport,
  type Observations,
} from './calibrate.js';
export {
  measureLatencyProfile,
  modelLatencyProfile,
  readLatencyProfile,
  writeLatencyProfile,
  validateLatencyProfile,
  stageLatencyFrom,
  renderLatencyProfile,
  LatencyProfileSchema,
  LATENCY_PROFILE_FORMAT,
  type LatencyProfile,
  type LatencyStats,
  type MeasureOptions,
  type StageStat,
} from './latency.js';
export {
  searchThresholds,
  evaluatePolicy,
  fitTemperature,
  TargetUnreachableError,
  DEFAULT_CANDIDATES,
  type SearchData,
  type SearchTarget,
  type SearchOptions,
  type SearchResult,
  type PolicyPoint,
} from './search.js';
export { frontierSvg, type FrontierPlot } from './svg.js';
