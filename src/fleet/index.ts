// Public surface of the fleet (operator side): the collector that fills the store from MQTT, the
// SQLite store (or PostgreSQL, open.ts), fleet status computed from it, and the collector's HTTP side (Prometheus
// /metrics, the dashboard and its JSON API), and the broker credentials and ACL (broker-auth).
export { startCollector, SHARE_GROUP, type Collector, type CollectorOptions } from './collector.js';
export * from './fleet-store.js';
export { openFleetStore, SCHEMA_VERSION, type OpenStoreOptions } from './store.js';
export { openStore, storeKind, type StoreKind } from './open.js';
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
