// Public surface of the fleet (operator side): the collector that fills the store from MQTT, the
// SQLite store (or PostgreSQL, open.ts), fleet status computed from it, and the collector's HTTP side (Prometheus
// /metrics, the dashboard and its JSON API), and the broker credentials and ACL (broker-auth).
export { startCollector, SHARE_GROUP, type Collector, type CollectorOptions } from './collector.js';
export * from './fleet-store.js';
export { openFleetStore, SCHEMA_VERSION, type OpenStoreOptions } from './store.js';
export { openStore, storeKind, type StoreKind } from './open.js';
export { seqStep, WRAP_DISTANCE, type SeqPosition } from './seq.js';
export { fleetStatus, LATEST_WINDOWS, type DeviceStatus, type FleetStatus } from './status.js';
export {
  startFleetHttp,
  parseHttpListen,
  DEFAULT_HTTP,
  type HttpListen,
  type FleetHttpOptions,
  type FleetHttpServer,
  type FleetApi,
  type FleetApiDevice,
  type WindowsApi,
} from './http.js';
export { renderMetrics, escapeLabelValue, METRICS_CONTENT_TYPE } from './metrics.js';
export {
  BROKER_FILES,
  DEFAULT_BROKER_DIR,
  DEFAULT_BROKER_LISTEN,
  collectorPrincipal,
  operatorPrincipal,
  enrol,
  mosquittoPasswordHash,
  newPassword,
  parseDeviceRef,
  passwordFileUsers,
  renderAcl,
  renderMosquittoConf,
  revoke,
  usernameOf,
  verifyMosquittoPassword,
  writeBrokerConfig,
  type BrokerConfigOptions,
  type EnrolResult,
  type Principal,
} from './broker-auth.js';
export { startFileServer, type FileServer, type FileServerOptions, type FileServerStats } from './file-server.js';
export { stageBundleFiles, publishJobs, readJobs, cancelJob, jobFinished, type StagedBundle, type FlashTarget, type DeviceJob } from './jobs.js';
export { JobStates, MAX_JOB_DEVICES, type DeviceJobState } from './job-states.js';
export { rolloutsApi, summarizeRollout, MAX_ROLLOUTS_LIMIT, type RolloutsApi, type RolloutSummary, type RolloutClassSummary, type RolloutStepSummary } from './rollouts-api.js';
export { tableApi, DEFAULT_TABLE_LIMIT, MAX_TABLE_LIMIT, TABLE_SORT_KEYS, type TableApi, type TableQuery, type TableSortKey, type ClassAggregate } from './http.js';
export { classDrift, driftFrom, baselineFromReport, classOf, DEFAULT_DRIFT_BOUNDS, type ClassDrift, type BaselineInput } from './drift.js';
export { fleetLatencyProfile, parseFleetSource, FLEET_LATENCY_DEFAULTS, type FleetLatencyOptions } from './fleet-latency.js';
export { recordSimulatedFleet, loadSimClasses, parseClassCounts, parseFault, applyFault, type SimClass, type SimFault, type RecordSimulatedOptions } from './simulate.js';
export {
  DEFAULT_SPEC,
  advanceRollout,
  cohortStats,
  evaluateGates,
  gatesDue,
  isPermanent,
  newRollout,
  parseCanary,
  parseDuration,
  parseGate,
  parsePercent,
  parseWaves,
  planRollout,
  type BundleInfo,
  type ClassPlan,
  type CohortStats,
  type FleetDevice,
  type Gate,
  type GateResult,
  type RolloutRecord,
  type RolloutSpec,
} from './rollout-plan.js';
export { RolloutDriver, createRollout, fleetDevices, planFromStore, FINAL_ROLLOUT_STATES, type RolloutDriverOptions, type CreateRolloutOptions } from './rollout.js';
export { SimJobDevice, type SimJobDeviceOptions, type SimJobFaults } from './simulate-jobs.js';
