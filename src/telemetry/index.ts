// Public surface of telemetry: the device session (DeviceTelemetry, and startDeviceTelemetry for
// a loaded bundle), energy meters, the telemetry wire format (payload schemas and topics), the
// persistent outbox, the MQTT publisher and the metric windows (design step 6).
export * from './energy/index.js';
export * from './payloads.js';
export * from './outbox.js';
export * from './mqtt/index.js';
export * from './window.js';
export { DeviceTelemetry, DEFAULT_FLEET, DEFAULT_DRAIN_MS, describeSummary, type DeviceTelemetryOptions, type TelemetrySummary, type TlsFiles } from './device.js';
export { startDeviceTelemetry, type StartTelemetryOptions } from './session.js';
