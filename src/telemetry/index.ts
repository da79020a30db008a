// Public surface of telemetry: energy meters, the telemetry wire format (payload schemas and
// topics), the persistent outbox and the MQTT publisher (design step 6).
export * from './energy/index.js';
export * from './payloads.js';
export * from './outbox.js';
export * from './mqtt/index.js';
