// Fleet side of telemetry: the store, the collector that fills it, the status computed from it
// and the collector's HTTP side (Prometheus /metrics, dashboard).
export * from './collector.js';
export * from './fleet-store.js';
export * from './http.js';
export * from './metrics.js';
export * from './status.js';
export { SCHEMA_VERSION, openFleetStore, type OpenStoreOptions } from './store.js';
