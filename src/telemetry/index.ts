// Public surface of telemetry: energy meters, the telemetry wire format (payload schemas and
// topics), the persistent outbox, the MQTT publisher and the metric windows (design step 6). The
// device session (device.ts) is imported directly: it pulls in onnxruntime and the compiler.
export * from './energy/index.js';
export * from './payloads.js';
export * from './outbox.js';
export * from './mqtt/index.js';
export * from './window.js';
