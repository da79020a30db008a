// edgeexit as a library, device side: the bundle format, the runtime (load a bundle, classify),
// telemetry and the device agent. Importing it loads no compiler, calibration, fleet, SQLite or
// MQTT-broker module, so a device program stays small; those live under their own subpaths:
// 'edgeexit/compiler', 'edgeexit/calibration' and 'edgeexit/fleet' (package.json "exports").
export * from './bundle/index.js';
export * from './runtime/index.js';
export * from './telemetry/index.js';
export * from './agent/index.js';
