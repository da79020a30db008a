// Fleet side of telemetry: the store, the collector that fills it and the status computed from it.
export * from './collector.js';
export * from './fleet-store.js';
export * from './status.js';
export { SCHEMA_VERSION, openFleetStore, type OpenStoreOptions } from './store.js';
